from enum import StrEnum


class UsageGroupBy(StrEnum):
    DAY = "day"
    GPU_CLASS = "gpu_class"
    TEMPLATE = "template"
    TENANT = "tenant"

    def __str__(self) -> str:
        return str(self.value)
