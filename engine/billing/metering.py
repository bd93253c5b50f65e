"""Metering: what one ComfyUI prompt cost in container time, split back to its jobs.

Every figure comes from `time.monotonic()` stamps taken by the worker that held the engine
(never from API or database timestamps, which another clock wrote). `docs/costs.md` defines
each one. A prompt may one day carry several jobs (micro-batching); `split_batch` is the one
place its seconds are divided among them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Figures split among the jobs of a batch in proportion to their weights.
SPLIT_FIGURES = (
    "cold_start_seconds",
    "engine_start_seconds",
    "model_load_seconds",
    "input_upload_seconds",
    "execution_seconds",
    "upload_seconds",
    "billable_seconds",
)


def is_model_loader(class_type: str) -> bool:
    """Node types whose work is loading weights (what a warm engine has cached)."""
    return "Loader" in class_type


@dataclass
class PromptMeter:
    """Monotonic stamps for one ComfyUI prompt, taken by the worker running it."""

    graph: Mapping[str, Any]
    t0: float = field(default_factory=time.monotonic)
    # Container start or snapshot restore that happened before the worker span and that this
    # prompt is the first to use (Modal); zero locally, where the engine starts with the API.
    container_boot_seconds: float = 0.0
    engine_start_seconds: float = 0.0
    input_upload_seconds: float = 0.0
    submitted_at: float | None = None
    exec_started: float | None = None
    exec_finished: float | None = None
    upload_seconds: float = 0.0
    model_load_seconds: float = 0.0
    ended: float | None = None
    _node: str | None = None
    _node_at: float = 0.0

    def on_event(self, ev: Any) -> None:
        """Feed a ComfyUI progress event: stamps execution start/end and loader node time."""
        kind, at = getattr(ev, "type", None), float(getattr(ev, "at", 0.0) or time.monotonic())
        if kind == "execution_start":
            self.exec_started = self.exec_started or at
        elif kind == "executing" or kind == "execution_success":
            self._close_node(at)
            node = getattr(ev, "node", None) if kind == "executing" else None
            if node is None:
                self.exec_finished = self.exec_finished or at
            else:
                self._node, self._node_at = str(node), at

    def _close_node(self, at: float) -> None:
        if self._node is None:
            return
        spec = self.graph.get(self._node)
        class_type = spec.get("class_type", "") if isinstance(spec, Mapping) else ""
        if is_model_loader(str(class_type)):
            self.model_load_seconds += max(at - self._node_at, 0.0)
        self._node = None

    def ran(self, started: float, finished: float) -> None:
        """The client's own stamps of the prompt's start and end (authoritative when given)."""
        self.exec_started, self.exec_finished = started, finished

    def figures(self) -> dict[str, Any]:
        """The prompt's metered seconds (see docs/costs.md); closes the meter."""
        end = self.ended = self.ended or time.monotonic()
        self._close_node(self.exec_finished or end)
        worker = max(end - self.t0, 0.0)
        execution = 0.0
        engine_queue = 0.0
        if self.exec_started is not None:
            execution = max((self.exec_finished or end) - self.exec_started, 0.0)
            if self.submitted_at is not None:
                # Waiting in ComfyUI's queue behind another prompt is not holding the GPU.
                engine_queue = max(self.exec_started - self.submitted_at, 0.0)
        cold = self.container_boot_seconds + self.engine_start_seconds + self.model_load_seconds
        return {
            "worker_seconds": worker,
            "engine_queue_seconds": engine_queue,
            "container_boot_seconds": self.container_boot_seconds,
            "engine_start_seconds": self.engine_start_seconds,
            "model_load_seconds": self.model_load_seconds,
            "cold_start": cold > 0,
            "cold_start_seconds": cold,
            "input_upload_seconds": self.input_upload_seconds,
            "execution_seconds": execution,
            "upload_seconds": self.upload_seconds,
            "billable_seconds": self.container_boot_seconds + max(worker - engine_queue, 0.0),
        }


def split_batch(figures: Mapping[str, Any], weights: Sequence[float]) -> list[dict[str, Any]]:
    """Divide a prompt's seconds among the jobs it carried, in proportion to `weights`.

    Today every prompt carries one job (weights `[1]`), so this returns the figures as they
    are. With micro-batching, the batch's billable seconds are shared by its jobs here and
    nowhere else; the parts add up to the whole.
    """
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    total = float(sum(weights))
    shares = [w / total for w in weights]
    out: list[dict[str, Any]] = []
    for i, share in enumerate(shares):
        part = dict(figures)
        for key in SPLIT_FIGURES:
            whole = float(figures.get(key, 0.0))
            if i == len(shares) - 1:
                # The last job takes the remainder so the parts sum to the whole exactly.
                part[key] = whole - sum(float(p[key]) for p in out)
            else:
                part[key] = whole * share
        part["batch_size"] = len(shares)
        out.append(part)
    return out
