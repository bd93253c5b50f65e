"""ComfyUI runs this before it imports `comfy.model_management`: install the device gate.

ComfyUI loads this file by path under an odd module name, so the patch module is loaded by
path as well and registered under one fixed name; the gate itself lives in the patched
module's globals, where the extension's routes find it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

_NAME = "stencil_snapshot_patch"


def _load_patch_module() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).with_name("snapshot_patch.py")
    )
    if spec is None or spec.loader is None:
        raise ImportError("cannot load snapshot_patch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


_gate = _load_patch_module().install()
logging.info("[stencil] snapshot device gate installed (deferred=%s)", _gate.deferred)
