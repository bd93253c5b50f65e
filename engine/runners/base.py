"""What every runner offers the API: wake or dispatch a job, cancel it, report readiness."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Runner(ABC):
    """A place jobs run: the local worker pool or Modal GPU classes."""

    name: str

    @abstractmethod
    async def start(self) -> None:
        """Begin taking jobs."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop taking jobs."""

    @abstractmethod
    async def submitted(self, job_id: str, gpu_class: str) -> str | None:
        """A job was stored as queued; return a call id to store on it, if any."""

    @abstractmethod
    async def cancel(self, job_id: str, call_id: str | None, wait_s: float = 15.0) -> None:
        """Stop a running job wherever it runs."""

    @abstractmethod
    async def ready(self) -> dict[str, Any]:
        """Facts for /ready; raise when the engine cannot take work."""
