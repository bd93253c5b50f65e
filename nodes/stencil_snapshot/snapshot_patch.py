"""Keep ComfyUI off the GPU until a Modal memory snapshot has been restored.

A CPU memory snapshot is taken while the container has no usable GPU. ComfyUI asks for its
torch device while `comfy.model_management` is being imported (it sizes VRAM at import time),
which either crashes there or initialises CUDA with zero devices, a state torch caches for the
life of the process. This module installs an import hook that rewrites one line of
`get_torch_device` as ComfyUI imports it: while the gate is deferred the function answers the
CPU without touching `torch.cuda` at all; after `DeviceGate.enable()` it runs ComfyUI's own
code again. Nothing on disk is edited, so the ComfyUI tree stays pristine.

This file imports nothing from ComfyUI, so tests can load it on its own.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Mapping, Sequence
from types import CodeType, ModuleType
from typing import Any

TARGET_MODULE = "comfy.model_management"
TARGET_FUNCTION = "get_torch_device"
# The CUDA branch of get_torch_device, identical in spring-2024 and current ComfyUI.
MARKER = "return torch.device(torch.cuda.current_device())"
GATE_NAME = "_stencil_snapshot_gate"
REPLACEMENT = f"return {GATE_NAME}.cuda_device(torch)"
# Set to "1" in ComfyUI's environment to start with the device deferred.
DEFER_ENV = "STENCIL_SNAPSHOT_DEFER_DEVICE"


class PatchError(Exception):
    """The ComfyUI source does not have the shape the patch expects."""


class DeviceGate:
    """Whether ComfyUI may use the CUDA device yet; shared by the patched module and routes.

    The patched line covers the import of `comfy.model_management`. After the import, a
    deferred gate also sets the module's `cpu_state` to CPU, because other functions there
    (dtype choice, free memory) go to `torch.cuda` whenever the state says GPU: deferred,
    ComfyUI behaves as with `--cpu`, so a warm-up prompt can run before the snapshot.
    """

    def __init__(self, deferred: bool) -> None:
        self.deferred = deferred
        self.patched = False
        self.module: ModuleType | None = None
        self._swapped = False

    def cuda_device(self, torch: Any) -> Any:
        """The device the patched `get_torch_device` returns on its CUDA branch."""
        if self.deferred:
            return torch.device("cpu")
        return torch.device(torch.cuda.current_device())

    def attach(self, module: ModuleType) -> None:
        """Take the imported module, to switch its `cpu_state` with the gate."""
        self.module = module
        self.patched = True
        self._apply()

    def enable(self) -> None:
        """Let ComfyUI use CUDA from now on."""
        self.deferred = False
        self._apply()

    def defer(self) -> None:
        """Answer the CPU again (used when enabling the device failed)."""
        self.deferred = True
        self._apply()

    def _apply(self) -> None:
        states = getattr(self.module, "CPUState", None)
        if self.module is None or states is None:
            return
        if self.deferred and self.module.cpu_state == states.GPU:
            self.module.cpu_state = states.CPU
            self._swapped = True
        elif not self.deferred and self._swapped:
            self.module.cpu_state = states.GPU
            self._swapped = False


def patch_source(source: str) -> str:
    """Rewrite the CUDA line inside `get_torch_device`; PatchError unless it is there once."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise PatchError(f"{TARGET_MODULE} does not parse: {e}") from None
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == TARGET_FUNCTION]
    if len(fns) != 1 or fns[0].end_lineno is None:
        raise PatchError(f"{TARGET_MODULE} has {len(fns)} top-level {TARGET_FUNCTION}()")
    lines = source.splitlines(keepends=True)
    start, end = fns[0].lineno - 1, fns[0].end_lineno
    body = "".join(lines[start:end])
    count = body.count(MARKER)
    if count != 1:
        raise PatchError(f"{TARGET_FUNCTION}() contains {MARKER!r} {count} times, expected once")
    return "".join(lines[:start]) + body.replace(MARKER, REPLACEMENT) + "".join(lines[end:])


class _PatchingLoader(importlib.machinery.SourceFileLoader):
    """Loads the target module from patched source, never from a cached .pyc."""

    def __init__(self, fullname: str, path: str, gate: DeviceGate) -> None:
        super().__init__(fullname, path)
        self.gate = gate

    def get_code(self, fullname: str) -> CodeType:
        source = self.get_source(fullname)
        if source is None:
            raise PatchError(f"no source for {fullname}")
        return compile(patch_source(source), self.path, "exec", dont_inherit=True)

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__[GATE_NAME] = self.gate
        super().exec_module(module)
        self.gate.attach(module)


class _GateFinder(importlib.abc.MetaPathFinder):
    """Hands the target module to the patching loader; every other import passes through."""

    def __init__(self, gate: DeviceGate) -> None:
        self.gate = gate

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        if not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None
        spec.loader = _PatchingLoader(fullname, spec.origin, self.gate)
        return spec


def installed_gate() -> DeviceGate | None:
    """The gate of an already installed hook, if any."""
    for finder in sys.meta_path:
        if isinstance(finder, _GateFinder):
            return finder.gate
    return None


def install(environ: Mapping[str, str] | None = None) -> DeviceGate:
    """Install the import hook (once); the gate starts deferred when DEFER_ENV is "1"."""
    existing = installed_gate()
    if existing is not None:
        return existing
    if TARGET_MODULE in sys.modules:
        raise PatchError(f"{TARGET_MODULE} was imported before the snapshot hook")
    env = os.environ if environ is None else environ
    gate = DeviceGate(deferred=env.get(DEFER_ENV) == "1")
    sys.meta_path.insert(0, _GateFinder(gate))
    return gate


def uninstall() -> None:
    """Remove the hook (tests)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _GateFinder)]
