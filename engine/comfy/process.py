"""Supervise a ComfyUI server running as a child process."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx
import yaml

from engine.comfy.errors import ComfyStartError

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A Popen preexec_fn making the child get SIGKILL when this process dies (Linux).

    A `kill -9` of the API process runs no cleanup, and ComfyUI runs in its own session, so
    without this it would live on as an orphan holding the GPU and its port.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child must not dlopen after fork
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


# Sub-folders of models_dir mapped into ComfyUI's model search paths.
MODEL_FOLDERS: tuple[str, ...] = ("checkpoints", "vae", "loras", "upscale_models", "embeddings")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cli_flags(comfyui_path: Path) -> set[str]:
    """Long options this ComfyUI's comfy/cli_args.py declares."""
    try:
        text = (Path(comfyui_path) / "comfy" / "cli_args.py").read_text()
    except OSError:
        return set()
    return set(re.findall(r"add_argument\(\s*[\"'](--[a-z0-9][a-z0-9_-]*)", text))


class ComfyProcess:
    """One ComfyUI server subprocess: start, health-check, restart, stop.

    It uses ``subprocess.Popen`` rather than asyncio subprocesses on purpose: an asyncio child is
    tied to the event loop that spawned it, while a supervisor object (a test session fixture, a
    service singleton) outlives individual ``asyncio.run`` calls.
    """

    def __init__(
        self,
        comfyui_path: Path,
        *,
        python: str = sys.executable,
        host: str = "127.0.0.1",
        port: int | None = None,
        cpu: bool = True,
        models_dir: Path | None = None,
        input_dir: Path | None = None,
        output_dir: Path | None = None,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
        custom_nodes: Sequence[Path] = (),
    ) -> None:
        self.comfyui_path = Path(comfyui_path).absolute()
        # Folders of custom node packages loaded beside ComfyUI's own custom_nodes/.
        self.custom_nodes = [Path(p).absolute() for p in custom_nodes]
        self.python = python
        self.host = host
        self._port = port
        self.cpu = cpu
        self.models_dir = Path(models_dir).absolute() if models_dir else None
        self.input_dir = Path(input_dir).absolute() if input_dir else None
        self.output_dir = Path(output_dir).absolute() if output_dir else None
        self.extra_args = list(extra_args or [])
        self._runtime: Path | None = None
        self._log_path = Path(log_path).absolute() if log_path else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._restarts = 0
        self._wanted = False  # False after stop(): the supervisor must not resurrect it
        self._restarting = False

    # ------------------------------------------------------------------ properties

    @property
    def runtime_dir(self) -> Path:
        """Private scratch folder (generated yaml, default log); removed by close()."""
        if self._runtime is None:
            self._runtime = Path(tempfile.mkdtemp(prefix="stencil-comfy-"))
        return self._runtime

    @property
    def input_folder(self) -> Path:
        """Where this server reads its inputs (`--input-directory`, or ComfyUI's default beside
        its code): on this machine, so its own client can write them there."""
        return self.input_dir or self.comfyui_path / "input"

    @property
    def output_folder(self) -> Path:
        """Where this server writes its outputs (`--output-directory`, or ComfyUI's default
        beside its code): on this machine, so its own client can read them from disk."""
        return self.output_dir or self.comfyui_path / "output"

    @property
    def log_path(self) -> Path:
        """Where ComfyUI's stdout/stderr go."""
        return self._log_path or self.runtime_dir / "comfyui.log"

    @property
    def port(self) -> int:
        """The listening port (chosen on first use when none was given)."""
        if self._port is None:
            self._port = free_port(self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1")
        return self._port

    @property
    def base_url(self) -> str:
        """http://host:port of the server (loopback when listening on all interfaces)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def restarts(self) -> int:
        """How many times ensure_running/supervise restarted the server."""
        return self._restarts

    @property
    def pid(self) -> int | None:
        """PID of the running server, None when not running."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """The child process exists and has not exited (says nothing about responsiveness)."""
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ command line

    def _write_model_paths(self) -> Path | None:
        """Generate the extra_model_paths yaml: models_dir sub-folders, custom node folders."""
        if self.models_dir is None and not self.custom_nodes:
            return None
        mapping: dict[str, str] = {}
        if self.models_dir is not None:
            mapping["base_path"] = str(self.models_dir)
            for folder in MODEL_FOLDERS:
                (self.models_dir / folder).mkdir(parents=True, exist_ok=True)
                mapping[folder] = folder
        if self.custom_nodes:
            # Absolute paths: ComfyUI joins them to base_path, which leaves them as they are.
            mapping["custom_nodes"] = "\n".join(str(p) for p in self.custom_nodes)
        path = self.runtime_dir / "extra_model_paths.yaml"
        path.write_text(yaml.safe_dump({"stencil": mapping}, sort_keys=False))
        return path

    def command(self) -> list[str]:
        """The argv used to launch ComfyUI."""
        flags = cli_flags(self.comfyui_path)
        cmd = [self.python, "main.py", "--listen", self.host, "--port", str(self.port)]
        if self.cpu:
            cmd.append("--cpu")
        if "--disable-auto-launch" in flags:
            cmd.append("--disable-auto-launch")
        if "--temp-directory" in flags:
            # ComfyUI wipes its temp folder on start-up; a private one keeps two servers on the
            # same tree (service + tests) from deleting each other's previews.
            cmd += ["--temp-directory", str(self.runtime_dir)]
        paths = self._write_model_paths()
        if paths is not None:
            cmd += ["--extra-model-paths-config", str(paths)]
        for flag, folder in (
            ("--input-directory", self.input_dir),
            ("--output-directory", self.output_dir),
        ):
            if folder is None:
                continue
            if flag in flags:
                folder.mkdir(parents=True, exist_ok=True)
                cmd += [flag, str(folder)]
            else:
                logger.warning("this ComfyUI has no %s; using its default folder", flag)
        return cmd + self.extra_args

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Launch ComfyUI (no-op if it is already running); does not wait for readiness."""
        self._wanted = True
        if self.running:
            return
        self._reap()
        cmd = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # the log tail must be current when we report a crash
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== stencil: starting {' '.join(cmd)}\n".encode())
            log.flush()
            # own session: terminate/kill reach anything ComfyUI spawned, and a Ctrl-C meant
            # for the service does not hit ComfyUI first. PDEATHSIG: it dies with us, even on
            # kill -9. (It fires when the spawning *thread* exits: we spawn from the event
            # loop's thread, which outlives the process's use of ComfyUI.)
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.comfyui_path,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        logger.info("started ComfyUI pid %s on %s", self._proc.pid, self.base_url)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the ComfyUI log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(fh.tell() - 64 * 1024, 0))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def _ping(self, timeout: float) -> bool:
        """True when /system_stats answers 200 within `timeout`."""
        try:
            async with httpx.AsyncClient(timeout=timeout) as http:
                resp = await http.get(f"{self.base_url}/system_stats")
            return resp.status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, timeout: float = 60) -> None:
        """Wait until ComfyUI answers; ComfyStartError (with log tail) if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self._proc
            if proc is None:
                raise ComfyStartError("ComfyUI was not started")
            rc = proc.poll()
            if rc is not None:
                raise ComfyStartError(
                    f"ComfyUI exited with code {rc} before it was ready",
                    log_tail=self.log_tail(),
                    returncode=rc,
                )
            if await self._ping(timeout=2.0):
                return
            if time.monotonic() >= deadline:
                raise ComfyStartError(
                    f"ComfyUI did not answer on {self.base_url} within {timeout:g}s",
                    log_tail=self.log_tail(),
                )
            await asyncio.sleep(0.2)

    async def is_alive(self, timeout: float = 5.0) -> bool:
        """The process is running and answers /system_stats within `timeout`."""
        return self.running and await self._ping(timeout)

    async def restart(self, *, ready_timeout: float = 120) -> None:
        """Stop (if needed), start and wait until ready; counts in `restarts`."""
        self._restarting = True
        try:
            await self._terminate(grace=10.0)
            await self.start()
            self._restarts += 1
            await self.wait_ready(ready_timeout)
        finally:
            self._restarting = False

    async def ensure_running(self, *, ready_timeout: float = 120) -> None:
        """Restart ComfyUI if it died or stopped answering; start it if never started."""
        if self._proc is None:
            await self.start()
            await self.wait_ready(ready_timeout)
            return
        if self.running and await self._ping(timeout=10.0):
            return
        why = "exited" if not self.running else "is unresponsive"
        logger.warning("ComfyUI (pid %s) %s; restarting", self._proc.pid, why)
        await self.restart(ready_timeout=ready_timeout)

    async def supervise(
        self, interval: float = 2.0, *, max_failures: int = 3, ping_timeout: float = 10.0
    ) -> None:
        """Loop forever (run it as a task): restart ComfyUI when dead or unresponsive."""
        failures = 0
        while True:
            await asyncio.sleep(interval)
            if not self._wanted or self._restarting:
                failures = 0
                continue
            try:
                if not self.running:
                    rc = self._proc.returncode if self._proc else None
                    logger.warning("ComfyUI exited (code %s); restarting", rc)
                    failures = 0
                    await self.restart()
                    continue
                if await self._ping(ping_timeout):
                    failures = 0
                    continue
                # A busy server can miss one ping (model loading holds the GIL); only a streak
                # of misses means it hangs.
                failures += 1
                if failures >= max_failures:
                    logger.warning("ComfyUI missed %d health checks; restarting", failures)
                    failures = 0
                    await self.restart()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("ComfyUI restart failed; will retry")

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; reaps the child, removes scratch files."""
        await self._terminate(grace)
        self._cleanup_runtime()

    async def _terminate(self, grace: float) -> None:
        """Stop the child without touching the runtime folder (restart keeps the default log)."""
        self._wanted = False
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                logger.warning("ComfyUI pid %s ignored SIGTERM; killing", proc.pid)
                self._signal(proc, signal.SIGKILL)
                deadline = time.monotonic() + 5.0
                while proc.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
        self._reap()

    def stop_sync(self, grace: float = 10.0) -> None:
        """Blocking stop for atexit hooks and finalizers outside an event loop."""
        self._wanted = False
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
        self._reap()

    def close(self) -> None:
        """Blocking stop() for finalizers: stop the server, remove the scratch folder."""
        self.stop_sync()
        self._cleanup_runtime()

    def _cleanup_runtime(self) -> None:
        """Remove the scratch folder; it is recreated by the next start()."""
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the child's process group (its own session), only while the child lives."""
        if proc.poll() is not None:
            return  # exited and reaped: its pid may already belong to someone else
        try:
            os.killpg(proc.pid, sig)  # start_new_session=True makes pgid == pid
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        """Collect the exit status so no zombie is left behind."""
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.error("ComfyUI pid %s did not die after SIGKILL", proc.pid)

    async def __aenter__(self) -> ComfyProcess:
        await self.start()
        await self.wait_ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
