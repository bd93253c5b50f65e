from enum import StrEnum


class Txt2ImgV1Style(StrEnum):
    NONE = "none"
    POKEMON = "pokemon"

    def __str__(self) -> str:
        return str(self.value)
