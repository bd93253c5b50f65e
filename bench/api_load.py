"""Requests per second of one API process under `wrk`, as ratios to its own `/health`.

    .venv/bin/python bench/api_load.py [--db sqlite|postgres|both] [--seconds 10] [--conns 16]
                                       [--rounds 3] [--server auto|asyncio|both]

For each database, starts one API process (uvicorn, one worker, no engine: jobs stay queued,
as on an API-only process with its runner idle), creates a key and 16 jobs, then runs
`wrk -t1` on loopback against `GET /health`, `GET /v1/jobs/{id}` (the 16 jobs in turn) and
`POST /v1/upscale` (a 16x16 PNG), one after another, for `--rounds` rounds. Prints req/s,
p50 and p99 latency, the server process's own CPU per request (from `/proc`: the rate is
bounded by it, the server being one process on one core), and each route's req/s as a
fraction of `/health` measured in the same round (the round with the median fraction).
`--server`: uvicorn's loop and HTTP parser as `stencil serve` runs them (`auto`: uvloop and
httptools, which are installed), asyncio's own loop and h11 (`asyncio`), or both, one after
the other. Needs `wrk` (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_app() -> object:
    """The app uvicorn serves (`--factory`): settings from the environment, no engine."""
    from api.app import create_app
    from api.settings import Settings

    return create_app(Settings(), start_engine=False)


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _database(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'stencil.db'}"
    from sqlalchemy import create_engine, text

    name = f"stencil_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def _cpu_seconds(pid: int) -> float:
    """The user and system CPU time process `pid` has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(
    url: str, seconds: int, conns: int, pid: int, script: Path | None = None
) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    cpu = _cpu_seconds(pid)
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    cpu = _cpu_seconds(pid) - cpu
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    def lat(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        # The server's own CPU per request (its process alone: wrk's is not counted).
        "cpu_us": cpu / max(requests, 1) * 1e6,
        "p50_ms": lat("50"),
        "p99_ms": lat("99"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def bench(
    kind: str, seconds: int, conns: int, n_rounds: int, server: str
) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        db_url = _database(kind, tmp)
        port = _free_port()
        env = {
            **os.environ,
            "STENCIL_HOME": str(tmp / "home"),
            "STENCIL_DATABASE_URL": db_url,
            "STENCIL_CATALOG": str(ROOT / "catalog.yaml"),
            "STENCIL_URL_SIGNING_SECRET": "bench-secret",
            "STENCIL_ACTIVE_JOB_QUOTA": "100000000",
            "STENCIL_RATE_LIMIT_READ": "100000000/minute",
            "STENCIL_RATE_LIMIT_WRITE": "100000000/minute",
            "STENCIL_WEBHOOK_DISPATCH": "false",
            "STENCIL_LOG_LEVEL": "warning",
            "STENCIL_TRUSTED_HOSTS": "127.0.0.1",
            "PYTHONPATH": str(ROOT),
        }
        server = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--factory", "bench.api_load:make_app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--no-access-log",
                # `auto`: what `stencil serve` runs (uvloop and httptools, installed);
                # `asyncio`: asyncio's own loop and h11, for comparison.
                *(["--loop", "asyncio", "--http", "h11"] if server == "asyncio" else []),
            ],
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the API did not start")
                time.sleep(0.2)
            from engine.db.database import Database
            from engine.tenants.keys import create_key

            db = Database(db_url)
            with db.session() as s:
                token, _ = create_key(s, "bench")
            db.dispose()
            h = {"Authorization": f"Bearer {token}"}
            image = _png()
            # The GET reads 16 jobs in turn, as 16 clients following their own jobs would (one
            # job read over and over would let concurrent reads share a row).
            jobs = [
                httpx.post(f"{base}/v1/upscale", json={"image": image}, headers=h).json()["id"]
                for _ in range(16)
            ]
            get_lua = tmp / "get.lua"
            get_lua.write_text(
                f'wrk.headers["Authorization"] = "Bearer {token}"\n'
                "local paths = {" + ", ".join(f'"/v1/jobs/{j}"' for j in jobs) + "}\n"
                "local i = 0\n"
                "request = function()\n"
                "  i = i % #paths + 1\n"
                "  return wrk.format(nil, paths[i])\n"
                "end\n"
            )
            post_lua = tmp / "post.lua"
            post_lua.write_text(
                'wrk.method = "POST"\n'
                f'wrk.headers["Authorization"] = "Bearer {token}"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(json.dumps({'image': image}))}\n"
            )
            rounds: list[dict[str, dict[str, float]]] = []
            for _ in range(n_rounds):
                r = {
                    "GET /health": _wrk(f"{base}/health", seconds, conns, server.pid),
                    "GET /v1/jobs/{id}": _wrk(
                        f"{base}/v1/jobs/{jobs[0]}", seconds, conns, server.pid, get_lua
                    ),
                    "POST /v1/upscale": _wrk(
                        f"{base}/v1/upscale", seconds, conns, server.pid, post_lua
                    ),
                }
                for route in r:
                    r[route]["ratio"] = r[route]["rps"] / r["GET /health"]["rps"]
                rounds.append(r)
        finally:
            server.terminate()
            server.wait(30)
        # Each route's round with the median ratio to the /health of its own round: one round
        # can land on a moment when the shared machine is busy.
        return {
            route: sorted((r[route] for r in rounds), key=lambda x: x["ratio"])[len(rounds) // 2]
            for route in rounds[0]
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="health, GET, POST this many times")
    ap.add_argument(
        "--server",
        choices=["auto", "asyncio", "both"],
        default="auto",
        help="uvicorn's loop and parser: as installed (uvloop, httptools), or asyncio's and h11",
    )
    a = ap.parse_args()
    kinds = ["sqlite", "postgres"] if a.db == "both" else [a.db]
    servers = ["auto", "asyncio"] if a.server == "both" else [a.server]
    for kind in kinds:
        for server in servers:
            res = bench(kind, a.seconds, a.conns, a.rounds, server)
            print(
                f"{kind}, server {server}: wrk -t1 -c{a.conns} -d{a.seconds}s, one API process, "
                f"median of {a.rounds} rounds"
            )
            for route, r in res.items():
                print(
                    f"  {route:<18} {r['rps']:8.0f} req/s  ({r['ratio']:4.2f} of /health)  "
                    f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                    f"server CPU {r['cpu_us']:6.0f} us/req  non-2xx {r['errors']:.0f}"
                )


if __name__ == "__main__":
    main()
