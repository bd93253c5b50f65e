"""Helpers shared by the tests that follow jobs through a live app."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

TERMINAL = ("succeeded", "failed", "cancelled")


def finished(job: dict[str, Any]) -> bool:
    """True once a job is in a terminal state."""
    return job["status"] in TERMINAL


def wait_for(
    client: TestClient,
    headers: dict[str, str],
    job_id: str,
    pred: Callable[[dict[str, Any]], bool] = finished,
    timeout: float = 120,
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until `pred` holds; fail with the last state on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if pred(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last state {job}")
        time.sleep(0.1)
