from enum import StrEnum


class Txt2ImgV1Scheduler(StrEnum):
    DDIM_UNIFORM = "ddim_uniform"
    EXPONENTIAL = "exponential"
    KARRAS = "karras"
    NORMAL = "normal"
    SGM_UNIFORM = "sgm_uniform"
    SIMPLE = "simple"

    def __str__(self) -> str:
        return str(self.value)
