"""The batching nodes (nodes/stencil_batch) against a real ComfyUI on the CPU.

Each job of a batched prompt must get the image it gets alone: the same initial noise, the
same per-step noise for ancestral and SDE samplers, its own prompt whatever its token length,
its own number of images. Checked against lone KSampler runs, on every ComfyUI under test.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.comfy import ComfyClient, ComfyProcess
from nodes.stencil_batch import BATCHABLE_SAMPLERS, row_spans
from tests.comfy_fixtures import SYNTH_CHECKPOINT, txt2img_graph

pytestmark = pytest.mark.comfy

ROOT = Path(__file__).resolve().parents[1]
LONG = ", ".join(["a lighthouse on a rocky cliff above a stormy sea at dawn"] * 12)  # >75 tokens


@pytest.fixture(scope="module")
def batch_engine(
    comfyui_path: Path, synth_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A ComfyUI that loads Stencil's batching nodes from this repository."""
    work = tmp_path_factory.mktemp("batch-engine")
    (work / "nodes").mkdir()
    (work / "nodes" / "stencil_batch").symlink_to(ROOT / "nodes" / "stencil_batch")
    proc = ComfyProcess(
        comfyui_path,
        models_dir=synth_models_dir,
        input_dir=work / "input",
        output_dir=work / "output",
        log_path=work / "comfyui.log",
        custom_nodes=[work / "nodes"],
    )

    async def start() -> None:
        await proc.start()
        await proc.wait_ready(timeout=120)

    try:
        asyncio.run(start())
        yield proc.base_url
    finally:
        proc.close()


def batched_graph(jobs: list[dict[str, Any]], sampler: str, steps: int = 3) -> dict[str, Any]:
    """One prompt for `jobs` ({prompt, seed, rows}), as the engine builds it."""
    rows = ",".join(str(j["rows"]) for j in jobs)
    g: dict[str, Any] = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SYNTH_CHECKPOINT}},
        "latent": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": sum(j["rows"] for j in jobs)},
        },
        "pos": {"class_type": "StencilStackConditioning", "inputs": {"rows": rows}},
        "neg": {"class_type": "StencilStackConditioning", "inputs": {"rows": rows}},
        "sample": {
            "class_type": "StencilBatchKSampler",
            "inputs": {
                "model": ["ckpt", 0],
                "positive": ["pos", 0],
                "negative": ["neg", 0],
                "latent_image": ["latent", 0],
                "seeds": ",".join(str(j["seed"]) for j in jobs),
                "rows": rows,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": sampler,
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "decode": {
            "class_type": "VAEDecode",
            "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]},
        },
    }
    for i, j in enumerate(jobs):
        g[f"p{i}"] = {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": j["prompt"], "clip": ["ckpt", 1]},
        }
        g[f"n{i}"] = {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": j.get("negative", ""), "clip": ["ckpt", 1]},
        }
        g["pos"]["inputs"][f"c{i + 1}"] = [f"p{i}", 0]
        g["neg"]["inputs"][f"c{i + 1}"] = [f"n{i}", 0]
        g[f"split{i}"] = {
            "class_type": "StencilSplitImages",
            "inputs": {"images": ["decode", 0], "rows": rows, "index": i},
        }
        g[f"save{i}"] = {
            "class_type": "SaveImage",
            "inputs": {"images": [f"split{i}", 0], "filename_prefix": f"batch-{i}"},
        }
    return g


def lone_graph(job: dict[str, Any], sampler: str, steps: int = 3) -> dict[str, Any]:
    g = txt2img_graph(job["seed"], steps=steps, prompt=job["prompt"])
    g["3"]["inputs"]["text"] = job.get("negative", "")
    g["4"]["inputs"]["batch_size"] = job["rows"]
    g["5"]["inputs"]["sampler_name"] = sampler
    return g


async def images_of(client: ComfyClient, graph: dict[str, Any]) -> dict[str, list[Any]]:
    result = await client.run(graph, timeout=300)
    out: dict[str, list[Any]] = {}
    for ref in result.outputs:
        data = await client.view(ref)
        out.setdefault(ref.node_id, []).append(
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
        )
    return out


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m_sde"])
def test_each_job_gets_its_lone_image(batch_engine: str, sampler: str) -> None:
    assert sampler in BATCHABLE_SAMPLERS
    rnd = random.Random(sampler)
    jobs = [
        {"prompt": "a red cube", "seed": rnd.randrange(2**31), "rows": 1},
        {"prompt": LONG, "seed": rnd.randrange(2**31), "rows": 2, "negative": "blurry"},
        {"prompt": "a blue sphere", "seed": rnd.randrange(2**31), "rows": 1},
    ]

    async def go() -> None:
        async with ComfyClient(batch_engine) as client:
            batch = await images_of(client, batched_graph(jobs, sampler))
            for i, job in enumerate(jobs):
                alone = (await images_of(client, lone_graph(job, sampler)))["7"]
                mine = batch[f"save{i}"]
                assert len(mine) == job["rows"] == len(alone)
                for a, b in zip(alone, mine, strict=True):
                    diff = np.abs(a - b).mean()
                    assert diff < 1.0, (sampler, i, diff)  # mean absolute, in 1/255 units
            # Neighbours really differ: the batch did not hand every job the same image.
            assert np.abs(batch["save0"][0] - batch["save2"][0]).mean() > 5

    asyncio.run(go())


def test_row_spans_and_bad_input() -> None:
    assert row_spans([1, 2, 1]) == [(0, 1), (1, 3), (3, 4)]
    with pytest.raises(ValueError):
        row_spans([1, 0])


def test_engine_and_nodes_agree_on_batchable_samplers() -> None:
    from engine.runners import batching

    assert batching.BATCHABLE_SAMPLERS == BATCHABLE_SAMPLERS


def _txt2img(params: dict[str, Any]) -> dict[str, Any]:
    from engine.catalog.catalog import load_catalog
    from engine.catalog.render import TemplateGraphs

    cat = load_catalog(ROOT / "catalog.yaml")
    t = cat.get("txt2img")
    assert t is not None
    base = {
        "negative_prompt": "",
        "width": 64,
        "height": 64,
        "steps": 2,
        "cfg": 7.0,
        "sampler": "euler_ancestral",
        "scheduler": "normal",
        "batch_size": 1,
        "style": "pokemon",
    }
    return TemplateGraphs(cat).render(t, {**base, **params}).graph


def test_the_engine_batches_rendered_jobs(batch_engine: str) -> None:
    from engine.runners.batching import BatchRefused, build_batch

    jobs = [
        ("job_a", _txt2img({"prompt": "a red cube", "seed": 11})),
        ("job_b", _txt2img({"prompt": LONG, "seed": 12, "batch_size": 2, "negative_prompt": "x"})),
        ("job_c", _txt2img({"prompt": "a blue sphere", "seed": 13})),
    ]
    batch = build_batch(jobs)
    assert batch.rows == {"job_a": 1, "job_b": 2, "job_c": 1}
    types = [n["class_type"] for n in batch.graph.values()]
    assert types.count("KSampler") == 0 and types.count("StencilBatchKSampler") == 1
    assert types.count("CheckpointLoaderSimple") == 1 and types.count("LoraLoader") == 1
    assert types.count("CLIPTextEncode") == 6 and types.count("SaveImage") == 3

    async def go() -> None:
        async with ComfyClient(batch_engine) as client:
            got = await images_of(client, batch.graph)
            for job_id, graph in jobs:
                alone = [img for imgs in (await images_of(client, graph)).values() for img in imgs]
                mine = [img for n in batch.outputs[job_id] for img in got[n]]
                assert len(mine) == batch.rows[job_id] == len(alone)
                for a, b in zip(alone, mine, strict=True):
                    assert np.abs(a - b).mean() < 1.0, job_id

    asyncio.run(go())
    # A job of another shape cannot join, nor can a sampler that keeps no per-job noise.
    with pytest.raises(BatchRefused, match="differ in more than"):
        build_batch([jobs[0], ("job_d", _txt2img({"prompt": "x", "seed": 1, "steps": 3}))])
    with pytest.raises(BatchRefused, match="keeps no per-job noise"):
        build_batch([("job_e", _txt2img({"prompt": "x", "seed": 1, "sampler": "euler_cfg_pp"}))])
