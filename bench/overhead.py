"""Stencil's overhead over raw ComfyUI: the same small txt2img graph both ways, interleaved.

    .venv/bin/python bench/overhead.py [--jobs 20] [--follow sse|wait|poll] [--steps 2] [--stages]
                                       [--in-process]

Starts one Stencil API process on the embedded default (uvicorn on loopback, SQLite, local
storage, the local runner with the ComfyUI it starts on the CPU, on the synthetic checkpoint),
as a process of its own, as a deployed one is (`--in-process`: on a thread of the benchmark's
own process, whose client then takes turns with the server on one interpreter lock). The raw
client talks to that same ComfyUI. Each round:

- raw: the graph the API would render, sent straight to ComfyUI by a client that keeps its
  websocket (POST /prompt, websocket until done, GET /view of the output);
- Stencil: POST /v1/txt2img, follow the job until it is terminal (its event stream, read to
  its end, which follows the terminal event; a `?wait=` long poll; or polling every 50 ms),
  then GET the output URL.

Rounds interleave, each side going first in every other round, so background load and a
warmer engine favour neither; seeds vary, since ComfyUI caches an identical graph.
Prints p50 and p95 of raw, Stencil, and the per-round difference; and that difference outside
ComfyUI's own execution (each side less the execution time its ComfyUI client measured, the
same measure on both: from the prompt's start to its end), which takes out the tens of
milliseconds by which one CPU execution differs from the next (it also takes out any slowing
of the execution by the API's own work on the same cores). `--stages` also times the
server's own steps (database calls by function, ComfyUI calls, storage writes, the submit)
with wrappers installed around them (in the API's process), and prints each one's calls per
job and p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from engine.catalog.params import resolve_params, validate_params  # noqa: E402
from engine.comfy import ComfyClient  # noqa: E402
from engine.tenants.keys import create_key  # noqa: E402
from tests.helpers import serve  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled")


class Stages:
    """Server-side time per step, measured by wrapping the engine's own calls (`--stages`).

    In process (`--in-process`), only calls made off the main thread count: the API is served
    on its own thread, and the raw client's ComfyUI calls run on the main one.
    """

    def __init__(self, off_main_only: bool) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.off_main_only = off_main_only

    def _note(self, label: str, t0: float) -> None:
        if not self.off_main_only or threading.current_thread() is not threading.main_thread():
            self.samples[label].append(time.perf_counter() - t0)

    def wrap(self, owner: Any, name: str, label: str, by_fn: bool = False) -> None:
        orig: Callable[..., Any] = getattr(owner, name)
        note = self._note

        async def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await orig(*args, **kw)
            finally:
                fn = args[1] if by_fn and len(args) > 1 else None
                note(f"{label} {getattr(fn, '__name__', '')}".strip(), t0)

        setattr(owner, name, timed)

    def install(self) -> None:
        import api.routes.jobs
        from engine.db.database import Database
        from engine.intake.storage import LocalStorage

        for name in ("run", "read", "fetch", "write", "one"):
            self.wrap(Database, name, f"db.{name}", by_fn=True)
        for name in ("submit", "run", "view"):
            self.wrap(ComfyClient, name, f"comfy.{name}")
        self.wrap(api.routes.jobs, "submit", "POST handler: submit")
        put = LocalStorage.put
        note = self._note

        def timed_put(*args: Any, **kw: Any) -> None:
            t0 = time.perf_counter()
            try:
                put(*args, **kw)
            finally:
                note("storage.put", t0)

        LocalStorage.put = timed_put  # type: ignore[method-assign]

    def report(self, jobs: int) -> None:
        print("  server-side steps (calls per job, p50 per call):")
        for label, xs in sorted(self.samples.items(), key=lambda kv: -statistics.median(kv[1])):
            print(f"    {label:<34} {len(xs) / jobs:5.1f} x {statistics.median(xs) * 1000:8.2f} ms")


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--follow", choices=["sse", "wait", "poll"], default="sse")
    ap.add_argument("--stages", action="store_true", help="time the server's own steps")
    ap.add_argument("--in-process", action="store_true", help="serve the API on a thread here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the API process
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve_api(a)
        return
    stages = Stages(off_main_only=True) if a.stages and a.in_process else None
    if stages is not None:
        stages.install()
    with tempfile.TemporaryDirectory() as tmp:
        run(a, Path(tmp) / "home")
        if stages is not None:
            stages.report(a.jobs + 2)


def bench_settings(home: Path) -> Settings:
    """The embedded default (SQLite, local storage, the local runner starting its own ComfyUI
    on the CPU), on the synthetic checkpoint, with limits out of the way."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        home=home,
        comfyui_path=ROOT / ".stencil" / "comfyui",
        models_dir=ROOT / ".stencil" / "models",
        catalog=ROOT / "catalog.yaml",
        active_job_quota=1000,
        rate_limit_write="100000/minute",
        rate_limit_read="100000/minute",
        trusted_hosts="127.0.0.1",
        webhook_dispatch=False,
    )


def serve_api(a: argparse.Namespace) -> None:
    """The API process: serve on a free port until SIGTERM; its port, its ComfyUI's URL and a
    key go to stdout, and the steps' timings (`--stages`) after it stops."""
    import uvicorn

    stages = Stages(off_main_only=False) if a.stages else None
    if stages is not None:
        stages.install()
    app = create_app(bench_settings(a.home))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))

    def announce() -> None:
        while not server.started:
            time.sleep(0.05)
        with app.state.services.db.session() as s:  # migrated by the app's startup
            token, _ = create_key(s, "bench")
        comfy = app.state.services.comfy_process.base_url
        ready = {"port": sock.getsockname()[1], "token": token, "comfy": comfy}
        print(json.dumps(ready), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    # uvicorn raises the SIGTERM it caught again once it has stopped, to the handler it found:
    # let that one return, so the steps' timings are printed.
    signal.signal(signal.SIGTERM, lambda *_: None)
    # As `stencil serve` runs it (uvicorn.run): uvicorn's own event loop (uvloop where it is
    # installed) and its own handling of SIGTERM.
    server.run(sockets=[sock])
    if stages is not None:
        stages.report(a.jobs + 2)


@contextmanager
def api_process(a: argparse.Namespace, home: Path) -> Iterator[tuple[str, str, str]]:
    """The API's base URL, a key, and the URL of the ComfyUI it started: served by a process
    of its own, or on a thread here."""
    if a.in_process:
        app = create_app(bench_settings(home))
        with serve(app) as base:
            with app.state.services.db.session() as s:
                token, _ = create_key(s, "bench")
            yield base, token, app.state.services.comfy_process.base_url
        return
    cmd = [sys.executable, __file__, "--serve", "--home", str(home), "--jobs", str(a.jobs)]
    child = subprocess.Popen(
        [*cmd, *(["--stages"] if a.stages else [])],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    try:
        first = child.stdout.readline()
        if not first:
            raise SystemExit("the API process did not start")
        ready = json.loads(first)
        yield f"http://127.0.0.1:{ready['port']}", ready["token"], ready["comfy"]
    finally:
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
        sys.stdout.write(out)


async def follow_job(c: httpx.AsyncClient, job: dict[str, Any], h: dict[str, str], how: str) -> Any:
    """The job once terminal, followed as a client would."""
    url = f"/v1/jobs/{job['id']}"
    if how == "wait":
        while job["status"] not in TERMINAL:
            job = (await c.get(f"{url}?wait=60", headers=h)).json()
        return job
    if how == "poll":
        while job["status"] not in TERMINAL:
            await asyncio.sleep(0.05)
            job = (await c.get(url, headers=h)).json()
        return job
    # Read to the stream's end, which comes right after the terminal event: the connection is
    # then whole and is kept for the download (one closed mid-response is not).
    last = None
    async with c.stream("GET", f"{url}/events", headers=h) as r:
        name = None
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name in (f"job.{s}" for s in TERMINAL):
                last = json.loads(line.split(":", 1)[1])["job"]
    if last is None:
        raise AssertionError("the stream ended before the job did")
    return last


def run(a: argparse.Namespace, home: Path) -> None:
    """Interleaved rounds: one raw prompt, then one API job with the same params."""
    # This process renders the raw client's graphs with the API's own catalog and renderer.
    services = create_app(bench_settings(home), start_engine=False).state.services
    t = services.catalog.get("txt2img")
    model = services.request_models[(t.name, t.major)]
    raw: list[float] = []
    walls: list[float] = []
    outside: list[float] = []
    with api_process(a, home) as (base, token, url):
        h = {"Authorization": f"Bearer {token}"}

        async def rounds() -> None:
            async with ComfyClient(url) as comfy, httpx.AsyncClient(base_url=base) as c:
                for i in range(a.jobs + 2):  # rounds 0 and 1 warm both paths
                    body = {
                        "prompt": "a lighthouse",
                        "width": a.size,
                        "height": a.size,
                        "steps": a.steps,
                        "seed": 1000 + 2 * i,
                    }
                    params = resolve_params(
                        t, validate_params(model, {**body, "seed": 1001 + 2 * i})
                    )
                    graph = services.graphs.render(t, params).graph

                    async def raw_round(graph: dict[str, Any] = graph) -> tuple[float, float]:
                        t0 = time.perf_counter()
                        result = await comfy.run(graph, timeout=300)
                        for ref in result.outputs:
                            await comfy.view(ref)
                        return time.perf_counter() - t0, result.execution_seconds

                    async def stencil_round(body: dict[str, Any] = body) -> tuple[float, float]:
                        t0 = time.perf_counter()
                        job = (await c.post("/v1/txt2img", json=body, headers=h)).json()
                        job = await follow_job(c, job, h, a.follow)
                        assert job["status"] == "succeeded", job
                        for o in job["outputs"]:
                            r = await c.get(o["url"])
                            assert r.status_code == 200
                        # The same measure as the raw client's: ComfyUI's own execution.
                        return time.perf_counter() - t0, job["metering"]["execution_seconds"]

                    # Alternate which goes first, so neither always meets a warmer engine.
                    if i % 2:
                        raw_s, wall_s = await raw_round(), await stencil_round()
                    else:
                        wall_s, raw_s = await stencil_round(), await raw_round()
                    if i > 1:
                        raw.append(raw_s[0])
                        walls.append(wall_s[0])
                        # Outside ComfyUI's own execution, which varies by tens of ms from one
                        # run to the next on the CPU: each side less its execution.
                        outside.append((wall_s[0] - wall_s[1]) - (raw_s[0] - raw_s[1]))

        asyncio.run(rounds())
    diffs = [w - r for w, r in zip(walls, raw, strict=True)]
    print(
        f"txt2img {a.size}x{a.size}, {a.steps} steps, {a.jobs} interleaved rounds, "
        f"client follows by {a.follow}"
    )
    for label, xs in (
        ("raw ComfyUI", raw),
        ("through Stencil", walls),
        ("overhead", diffs),
        ("  outside exec", outside),
    ):
        print(
            f"  {label:<16} p50 {statistics.median(xs) * 1000:8.1f} ms   "
            f"p95 {pct(xs, 0.95) * 1000:8.1f} ms"
        )


if __name__ == "__main__":
    main()
