from enum import StrEnum


class UpscaleV1Method(StrEnum):
    AREA = "area"
    BICUBIC = "bicubic"
    BILINEAR = "bilinear"
    LANCZOS = "lanczos"
    NEAREST_EXACT = "nearest-exact"

    def __str__(self) -> str:
        return str(self.value)
