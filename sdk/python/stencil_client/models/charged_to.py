from enum import StrEnum


class ChargedTo(StrEnum):
    PLATFORM = "platform"
    TENANT = "tenant"

    def __str__(self) -> str:
        return str(self.value)
