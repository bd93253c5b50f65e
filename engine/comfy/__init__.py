"""ComfyUI integration: install it, supervise its process, and talk to its API."""

from engine.comfy.client import (
    ComfyClient,
    NodeProgress,
    OutputRef,
    ProgressEvent,
    QueueState,
    RunResult,
    combo_options,
)
from engine.comfy.errors import (
    ComfyError,
    ComfyExecutionError,
    ComfyInstallError,
    ComfyInterrupted,
    ComfyStartError,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    NodeError,
    NodeErrorItem,
)
from engine.comfy.install import comfyui_version, install_comfyui, is_comfyui_dir
from engine.comfy.process import ComfyProcess

__all__ = [
    "ComfyClient",
    "ComfyError",
    "ComfyExecutionError",
    "ComfyInstallError",
    "ComfyInterrupted",
    "ComfyProcess",
    "ComfyStartError",
    "ComfyTimeout",
    "ComfyUnavailable",
    "ComfyValidationError",
    "NodeError",
    "NodeErrorItem",
    "NodeProgress",
    "OutputRef",
    "ProgressEvent",
    "QueueState",
    "RunResult",
    "combo_options",
    "comfyui_version",
    "install_comfyui",
    "is_comfyui_dir",
]
