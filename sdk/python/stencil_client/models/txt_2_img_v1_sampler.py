from enum import StrEnum


class Txt2ImgV1Sampler(StrEnum):
    DDIM = "ddim"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_2M_SDE = "dpmpp_2m_sde"
    EULER = "euler"
    EULER_ANCESTRAL = "euler_ancestral"
    HEUN = "heun"
    UNI_PC = "uni_pc"

    def __str__(self) -> str:
        return str(self.value)
