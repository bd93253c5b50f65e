"""Exceptions raised while installing, supervising and talking to ComfyUI."""

from __future__ import annotations

from typing import Any, TypedDict


class NodeErrorItem(TypedDict):
    """One validation problem on one node, in ComfyUI's own shape."""

    type: str
    message: str
    details: str
    extra_info: dict[str, Any]


class NodeError(TypedDict):
    """All validation problems of one node."""

    class_type: str
    errors: list[NodeErrorItem]


class ComfyError(Exception):
    """Base class of every ComfyUI-related failure."""


class ComfyUnavailable(ComfyError):
    """ComfyUI could not be reached, or failed in a way unrelated to the submitted graph."""


class ComfyStartError(ComfyUnavailable):
    """The ComfyUI subprocess exited or never became ready."""

    def __init__(self, message: str, *, log_tail: str = "", returncode: int | None = None) -> None:
        self.log_tail = log_tail
        self.returncode = returncode
        full = message if not log_tail else f"{message}\n--- ComfyUI log tail ---\n{log_tail}"
        super().__init__(full)


class ComfyInstallError(ComfyError):
    """Installing ComfyUI or its requirements failed."""


class ComfyValidationError(ComfyError):
    """ComfyUI refused the graph (unknown node type, bad input, missing model...)."""

    def __init__(
        self,
        message: str,
        node_errors: dict[str, NodeError] | None = None,
        *,
        error_type: str | None = None,
    ) -> None:
        self.message = message
        self.node_errors: dict[str, NodeError] = dict(node_errors or {})
        self.error_type = error_type
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        for node_id, err in self.node_errors.items():
            for item in err["errors"]:
                detail = f": {item['details']}" if item.get("details") else ""
                parts.append(f"node {node_id} ({err['class_type']}): {item['message']}{detail}")
        return "; ".join(parts)


class ComfyExecutionError(ComfyError):
    """A node raised while the prompt was executing."""

    def __init__(
        self,
        node_id: str | None,
        node_type: str | None,
        exception_type: str,
        message: str,
        *,
        prompt_id: str | None = None,
        traceback: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.message = message
        self.prompt_id = prompt_id
        self.traceback = list(traceback or [])
        super().__init__(f"node {node_id} ({node_type}) raised {exception_type}: {message}")


class ComfyInterrupted(ComfyError):
    """The prompt was interrupted (by us or by someone else) before it finished."""

    def __init__(
        self, prompt_id: str | None, *, node_id: str | None = None, reason: str = "interrupted"
    ) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.reason = reason
        where = f" at node {node_id}" if node_id else ""
        super().__init__(f"prompt {prompt_id} {reason}{where}")


class ComfyTimeout(ComfyError):
    """The prompt (or a wait) did not finish in time; the prompt was cancelled in ComfyUI."""

    def __init__(self, prompt_id: str | None, timeout: float, *, what: str = "prompt") -> None:
        self.prompt_id = prompt_id
        self.timeout = timeout
        subject = f"{what} {prompt_id}" if prompt_id else what
        super().__init__(f"{subject} did not finish within {timeout:g}s")
