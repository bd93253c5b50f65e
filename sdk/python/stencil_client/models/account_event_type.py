from enum import StrEnum


class AccountEventType(StrEnum):
    BUDGET_THRESHOLD = "budget.threshold"

    def __str__(self) -> str:
        return str(self.value)
