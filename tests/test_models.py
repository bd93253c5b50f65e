"""fetch_model / model_status against a local http.server."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.catalog.models import (
    ModelChecksumError,
    ModelDownloadError,
    fetch_model,
    model_status,
    partial_path,
    sha256_file,
    synthetic_sidecar,
)

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, several chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class FileServer:
    url: str
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            hits.append(self.path)
            if self.path != "/model.safetensors":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield FileServer(f"http://127.0.0.1:{server.server_address[1]}", hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_good_checksum_downloads(file_server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "checkpoints" / "model.safetensors"
    out = fetch_model(f"{file_server.url}/model.safetensors", dest, PAYLOAD_SHA, progress=True)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert not partial_path(dest).exists()
    assert model_status(dest, PAYLOAD_SHA) == "ok"


def test_bad_checksum_is_refused_and_leaves_nothing(
    file_server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "model.safetensors"
    wrong = "0" * 64
    with pytest.raises(ModelChecksumError) as info:
        fetch_model(f"{file_server.url}/model.safetensors", dest, wrong, progress=False)
    assert info.value.expected == wrong
    assert info.value.actual == PAYLOAD_SHA
    assert wrong in str(info.value) and PAYLOAD_SHA in str(info.value)
    assert not dest.exists()
    assert not partial_path(dest).exists()
    assert list(tmp_path.iterdir()) == []


def test_skips_download_when_present_and_valid(file_server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.safetensors"
    url = f"{file_server.url}/model.safetensors"
    fetch_model(url, dest, PAYLOAD_SHA, progress=False)
    assert len(file_server.hits) == 1
    fetch_model(url, dest, f"sha256:{PAYLOAD_SHA.upper()}", progress=False)
    assert len(file_server.hits) == 1  # verified locally, not fetched again


def test_replaces_a_corrupt_existing_file(file_server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.safetensors"
    dest.write_bytes(b"truncated")
    assert model_status(dest, PAYLOAD_SHA) == "mismatch"
    fetch_model(f"{file_server.url}/model.safetensors", dest, PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(file_server.hits) == 1


def test_http_error_leaves_nothing(file_server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.safetensors"
    with pytest.raises(ModelDownloadError, match="404"):
        fetch_model(f"{file_server.url}/missing", dest, PAYLOAD_SHA, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_model_status_and_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    assert model_status(path, PAYLOAD_SHA) == "missing"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == PAYLOAD_SHA
    assert model_status(path, PAYLOAD_SHA) == "ok"
    assert model_status(path, "f" * 64) == "mismatch"
    synthetic_sidecar(path).write_text('{"synthetic": true}')
    assert synthetic_sidecar(path).name == "m.safetensors.synthetic.json"
    assert model_status(path, "f" * 64) == "synthetic"


_LAYOUT = """
import json, sys
from pathlib import Path
from engine.catalog import synth
synth._import_comfy(Path(sys.argv[1]))
import comfy.model_detection
out = {}
for kind, cfg in synth.UNET_CONFIGS.items():
    lay = synth._layout(cfg)
    det = comfy.model_detection.model_config_from_unet(lay, "model.diffusion_model.")
    out[kind] = {
        "unet": sum(t.numel() for k, t in lay.items() if k.startswith("model.diffusion_model.")),
        "all": sum(t.numel() for t in lay.values()),
        "detected": type(det).__name__,
    }
print(json.dumps(out))
"""


@pytest.mark.comfy
def test_full_size_stand_in_has_the_released_sd15_layout(comfyui_path: Path) -> None:
    # The GPU benchmark's stand-in (bench/gpu_batching.sh) must cost what SD1.5 costs: the
    # released UNet has 859,520,964 parameters and the whole checkpoint 1,066,235,307.
    # Checked on meta tensors (nothing allocated), on the ComfyUI under test.
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _LAYOUT, str(comfyui_path)],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["sd15_full"] == {"unet": 859_520_964, "all": 1_066_235_307, "detected": "SD15"}
    assert got["sd15"]["detected"] == "SD15" and got["sd15"]["unet"] < 30_000_000
