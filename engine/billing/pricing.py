"""Money: the one place a price is applied to metered seconds. Decimal throughout.

`docs/costs.md` defines every figure. Seconds are rounded to the millisecond when metered; the
product of seconds and rate is rounded once, to the micro-dollar, and stored as an integer
number of micro-dollars so sums are exact on every database.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from engine.catalog.catalog import Catalog, GpuClass

MILLI = Decimal("0.001")
MICRO = Decimal("0.000001")
_MICROS_PER_USD = Decimal(1_000_000)


@dataclass(frozen=True)
class Rate:
    """The price of one billable second of a GPU class, with the parts it is made of."""

    gpu_class: str
    gpu_type: str
    usd_per_second: Decimal  # GPU + CPU + memory, per second of container time
    gpu_usd_per_second: Decimal
    cpu_usd_per_second: Decimal
    memory_usd_per_second: Decimal

    def snapshot(self) -> dict[str, Any]:
        """The rate as stored on a job and a ledger row (strings: exact, JSON-safe)."""
        return {
            "usd_per_second": str(self.usd_per_second),
            "gpu_usd_per_second": str(self.gpu_usd_per_second),
            "cpu_usd_per_second": str(self.cpu_usd_per_second),
            "memory_usd_per_second": str(self.memory_usd_per_second),
        }


def rate_of(gpu_class: str, cls: GpuClass, gpu_type: str | None = None) -> Rate:
    """The per-second rate of a GPU class: GPU price plus reserved CPU and memory."""
    cpu = cls.cpu_usd_per_core_second * cls.cpu_cores
    mem = cls.memory_usd_per_gib_second * cls.memory_gib
    return Rate(
        gpu_class=gpu_class,
        # A fallback GPU is billed at its class's price; the type says where the job ran.
        gpu_type=gpu_type or cls.gpu,
        usd_per_second=cls.usd_per_second + cpu + mem,
        gpu_usd_per_second=cls.usd_per_second,
        cpu_usd_per_second=cpu,
        memory_usd_per_second=mem,
    )


def rate_for(catalog: Catalog, gpu_class: str, gpu_type: str | None = None) -> Rate:
    """The current rate of a catalog GPU class."""
    return rate_of(gpu_class, catalog.gpu_classes[gpu_class], gpu_type)


def seconds(value: float | Decimal) -> Decimal:
    """Metered seconds as the Decimal that is priced: whole milliseconds."""
    return Decimal(str(value)).quantize(MILLI, rounding=ROUND_HALF_UP)


def price(billable_seconds: Decimal, rate: Rate) -> Decimal:
    """USD for billable seconds at a rate, rounded once to the micro-dollar."""
    return (billable_seconds * rate.usd_per_second).quantize(MICRO, rounding=ROUND_HALF_UP)


def to_micros(usd: Decimal) -> int:
    """USD as whole micro-dollars (what the ledger stores)."""
    return int((usd * _MICROS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def from_micros(micros: int) -> Decimal:
    """Micro-dollars back to USD, six decimal places."""
    return (Decimal(micros) / _MICROS_PER_USD).quantize(MICRO)


def usd_str(micros: int) -> str:
    """Micro-dollars as the decimal string the API shows (`"0.000444"`)."""
    return str(from_micros(micros))
