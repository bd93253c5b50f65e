"""Faults survived, nothing lost: the API killed with jobs in flight, the database going away.

The first test runs `python -m api serve` as a real process with its own ComfyUI, kills it
with SIGKILL mid-job, checks its ComfyUI died with it (no orphan), restarts it and watches every
job finish and every webhook arrive. The second runs a private PostgreSQL, stops it under the
API and starts it again.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from api.app import create_app
from api.settings import Settings
from engine.db.database import Database
from engine.tenants.keys import create_key
from tests.netfixtures import Listener, listener, respond

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except httpx.HTTPError as e:
            last = None
            err = e
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out; last {last!r} {err!r}")


def children(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Served:
    """`python -m api serve` as a subprocess."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = int(env["STENCIL_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_comfy: list[int] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api", "serve"],
                cwd=ROOT,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            return httpx.get(f"{self.base}/ready", timeout=5).status_code == 200

        wait_until(ready, timeout=180, every=0.5)

    def comfy_pid(self) -> int:
        assert self.proc is not None
        kids = [p for p in children(self.proc.pid) if alive(p)]
        comfy = [p for p in kids if b"main.py" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(comfy) == 1, kids
        self.seen_comfy.append(comfy[0])
        return comfy[0]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.comfy
def test_api_killed_with_jobs_in_flight_loses_nothing(
    tmp_path: Path, comfyui_path: Path, synth_models_dir: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'stencil.db'}"
    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        token, _ = create_key(s, "acme")
    db.dispose()
    h = {"Authorization": f"Bearer {token}"}
    with listener("127.0.0.1") as hook:
        hook.routes["/hook"] = respond(200, b"", "text/plain")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STENCIL_")},
            "STENCIL_HOME": str(tmp_path / "home"),
            "STENCIL_CATALOG": str(ROOT / "catalog.yaml"),
            "STENCIL_DATABASE_URL": db_url,
            "STENCIL_PORT": str(free_port()),
            "STENCIL_COMFYUI_PATH": str(comfyui_path),
            "STENCIL_MODELS_DIR": str(synth_models_dir),
            "STENCIL_URL_SIGNING_SECRET": "test",
            "STENCIL_HEARTBEAT_TIMEOUT_S": "3",
            "STENCIL_SUPERVISE_INTERVAL_S": "0.5",
            "STENCIL_URL_ALLOW_HTTP": "true",
            "STENCIL_URL_ALLOW": f"127.0.0.1:{hook.port}",
            "STENCIL_WEBHOOK_BACKOFF_BASE_S": "0.5",
            "STENCIL_WEBHOOK_POLL_INTERVAL_S": "0.2",
            "STENCIL_LOG_LEVEL": "WARNING",
        }
        served = Served(env, tmp_path / "serve.log")
        try:
            _kill_and_recover(served, h, hook)
        finally:
            served.stop()
            for pid in served.seen_comfy:  # never leave an orphan behind, even on failure
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _kill_and_recover(served: Served, h: dict[str, str], hook: Listener) -> None:
    served.start()
    api = httpx.Client(base_url=served.base, headers=h, timeout=30)
    url = f"{hook.base}/hook"
    long = api.post("/v1/txt2img", json={**SMALL, "steps": 60, "webhook_url": url})
    assert long.status_code == 202, long.text
    ids = [long.json()["id"]] + [
        api.post("/v1/txt2img", json={**SMALL, "seed": i, "webhook_url": url}).json()["id"]
        for i in range(2)
    ]
    wait_until(
        lambda: (
            (j := api.get(f"/v1/jobs/{ids[0]}").json())["status"] == "running" and j["progress"] > 0
        ),
        timeout=120,
    )
    comfy = served.comfy_pid()
    assert served.proc is not None
    served.proc.kill()  # SIGKILL: no cleanup runs
    served.proc.wait()
    # ComfyUI dies with its parent instead of living on as an orphan.
    wait_until(lambda: not alive(comfy), timeout=15)

    served.start()  # the same store; the supervisor finds the job whose worker vanished
    assert served.comfy_pid() != comfy
    api.close()
    api = httpx.Client(base_url=served.base, headers=h, timeout=30)

    def all_done() -> list[dict[str, Any]] | None:
        jobs = [api.get(f"/v1/jobs/{i}").json() for i in ids]
        return (
            jobs if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs) else None
        )

    jobs = wait_until(all_done, timeout=240, every=0.5)
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, [j["error"] for j in jobs]
    assert all(len(j["outputs"]) == 1 for j in jobs)
    # Every terminal state reached the receiver, signed.
    secret = api.get("/v1/webhook-secret").json()["secret"]
    wait_until(lambda: len({r["headers"]["webhook-id"] for r in hook.requests}) == 3, timeout=30)
    got = {Webhook(secret).verify(r["body"], r["headers"])["data"]["id"] for r in hook.requests}
    assert got == set(ids)
    api.close()
    comfy2 = served.comfy_pid()
    served.stop()  # a clean stop takes ComfyUI down too
    wait_until(lambda: not alive(comfy2), timeout=30)


# ---- the database going away ---------------------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A throwaway PostgreSQL server in a temp folder, on a free port, that tests can stop."""

    def __init__(self, root: Path) -> None:
        self.data = root / "pgdata"
        self.port = free_port()
        self.log = root / "pg.log"

    def _run(self, *args: str) -> None:
        cmd = [str(a) for a in args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, timeout=60)
        if r.returncode:
            raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)

    def init(self) -> None:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data.parent, "postgres")
            os.chmod(self.data.parent, 0o755)
        self._run(PG_BIN / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            PG_BIN / "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start"
        )

    def stop(self) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries are not installed")
    import tempfile

    # Outside pytest's tmp tree: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="stencil-pg-"))
    pg = PrivatePostgres(root)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


def _is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


def test_database_unavailable_is_503_and_the_service_recovers(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    with listener("127.0.0.1") as hook:
        hook.routes["/hook"] = respond(200, b"", "text/plain")
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            home=tmp_path / "home",
            catalog=ROOT / "catalog.yaml",
            database_url=private_pg.url,
            url_signing_secret="t",
            trusted_hosts="testserver",
            url_allow_http=True,
            url_allow=f"127.0.0.1:{hook.port}",
            webhook_poll_interval_s=0.2,
            webhook_backoff_base_s=0.3,
            webhook_backoff_max_s=0.5,
        )
        app = create_app(settings, start_engine=False)
        with TestClient(app, raise_server_exceptions=False) as c:
            with app.state.services.db.session() as s:
                token, _ = create_key(s, "acme")
            h = {"Authorization": f"Bearer {token}"}
            before = c.post("/v1/txt2img", json=SMALL, headers=h)
            assert before.status_code == 202
            queued = c.post(
                "/v1/txt2img", json={**SMALL, "webhook_url": f"{hook.base}/hook"}, headers=h
            ).json()["id"]

            private_pg.stop()
            for r in (
                c.get("/v1/jobs", headers=h),
                c.get(f"/v1/jobs/{queued}", headers=h),
                c.post("/v1/txt2img", json=SMALL, headers=h),
                c.delete(f"/v1/jobs/{queued}", headers=h),
                c.get("/ready"),
            ):
                body = _is_problem(r, 503)  # type: ignore[arg-type]
                assert body["type"].endswith("/service_unavailable")
                assert int(r.headers["retry-after"]) > 0
            assert c.get("/health").status_code == 200  # the process itself is fine
            time.sleep(0.5)  # the dispatcher loop meets the outage too, and must survive it

            private_pg.start()
            jobs = wait_until(
                lambda: (r := c.get("/v1/jobs", headers=h)).status_code == 200 and r.json(),
                timeout=20,
            )
            ids = {j["id"] for j in jobs["data"]}
            assert ids == {before.json()["id"], queued}  # nothing lost, nothing half-written
            # The cancel refused during the outage works now, and its webhook is delivered.
            assert c.delete(f"/v1/jobs/{queued}", headers=h).json()["status"] == "cancelled"
            wait_until(lambda: hook.requests, timeout=20)
            assert c.post("/v1/txt2img", json=SMALL, headers=h).status_code == 202
