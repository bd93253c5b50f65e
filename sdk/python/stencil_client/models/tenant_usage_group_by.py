from enum import StrEnum


class TenantUsageGroupBy(StrEnum):
    DAY = "day"
    GPU_CLASS = "gpu_class"
    TEMPLATE = "template"

    def __str__(self) -> str:
        return str(self.value)
