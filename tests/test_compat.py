"""The catalog checked against a ComfyUI's node declarations (engine.compat).

Unit tests describe engines in both `/object_info` dialects (old `[[options], {}]` combos and
current `["COMBO", {"options": [...]}]`); the `comfy` tests read the real engine under test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from api.settings import Settings
from engine.catalog.catalog import Catalog, load_catalog
from engine.catalog.compat import EngineIncompatible, check_catalog, check_template, input_specs
from engine.catalog.render import TemplateGraphs
from engine.comfy import ComfyClient
from tests.object_info import CKPT, SAMPLERS, combo, engine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped() -> tuple[Catalog, TemplateGraphs]:
    cat = load_catalog(ROOT / "catalog.yaml")
    return cat, TemplateGraphs(cat)


def messages(
    cat: Catalog, graphs: TemplateGraphs, info: dict[str, Any], only: str | None = None
) -> list[str]:
    """The findings as text; `only` keeps one template's (name@version)."""
    return [str(p) for p in check_catalog(cat, graphs, info) if only in (None, p.template)]


@pytest.mark.parametrize("new", [False, True], ids=["old-combos", "new-combos"])
def test_the_shipped_catalog_fits_an_engine_with_its_nodes(
    shipped: tuple[Catalog, TemplateGraphs], new: bool
) -> None:
    assert messages(*shipped, engine(new)) == []


@pytest.mark.parametrize("new", [False, True], ids=["old-combos", "new-combos"])
def test_combo_options_read_in_both_dialects(new: bool) -> None:
    specs = input_specs(engine(new)["KSampler"])
    assert specs["sampler_name"].kind == "COMBO"
    assert specs["sampler_name"].options == tuple(SAMPLERS)
    assert (specs["steps"].kind, specs["steps"].minimum, specs["steps"].maximum) == (
        "INT",
        1.0,
        10000.0,
    )
    assert specs["model"].kind == "MODEL" and specs["model"].options is None


@pytest.mark.parametrize("new", [False, True], ids=["old-combos", "new-combos"])
def test_each_refusal_names_template_node_input_and_value(
    shipped: tuple[Catalog, TemplateGraphs], new: bool
) -> None:
    cat, graphs = shipped
    info = engine(new)
    # An engine without one sampler and without the catalog's checkpoint file.
    ks = json.loads(json.dumps(info["KSampler"]))
    ks["input"]["required"]["sampler_name"] = combo([s for s in SAMPLERS if s != "heun"], new)
    info["KSampler"] = ks
    info["CheckpointLoaderSimple"] = {
        "input": {"required": {"ckpt_name": combo(["other.safetensors"], new)}},
        "output": ["MODEL", "CLIP", "VAE"],
    }
    found = messages(cat, graphs, info, only="txt2img@1.1.0")
    assert len(found) == 2, found
    # Every template that samples with the checkpoint is refused for the same two reasons.
    assert len(messages(cat, graphs, info)) == 6
    sampler = next(m for m in found if "sampler_name" in m)
    assert "template txt2img@1.1.0" in sampler
    assert "node 'sampler' (KSampler)" in sampler
    assert "param 'sampler' allows 'heun'" in sampler
    ckpt = next(m for m in found if "ckpt_name" in m)
    assert "node 'checkpoint' (CheckpointLoaderSimple)" in ckpt
    assert f"value {CKPT!r} is not one of the engine's options: other.safetensors" in ckpt


def test_missing_node_type_and_required_input(shipped: tuple[Catalog, TemplateGraphs]) -> None:
    cat, graphs = shipped
    info = engine(True)
    del info["ImageScaleBy"]
    vae = info["VAEDecode"]
    info["VAEDecode"] = {
        "input": {"required": {**vae["input"]["required"], "tile": ["INT", {}]}},
        "output": ["IMAGE"],
    }
    found = messages(cat, graphs, info)
    assert any(
        "template upscale@1.0.0" in m and "node type ImageScaleBy is not installed" in m
        for m in found
    ), found
    assert any("(VAEDecode), input 'tile': required input is missing" in m for m in found), found


def test_numeric_bounds_wider_than_the_node(shipped: tuple[Catalog, TemplateGraphs]) -> None:
    cat, graphs = shipped
    info = engine(True)
    latent = json.loads(json.dumps(info["EmptyLatentImage"]))
    latent["input"]["required"]["width"] = ["INT", {"min": 128, "max": 768}]
    info["EmptyLatentImage"] = latent
    found = messages(cat, graphs, info)
    assert len(found) == 2, found  # only txt2img has a width param
    assert any("param 'width' admits values below the node's minimum 128" in m for m in found)
    assert any("param 'width' admits values above the node's maximum 768" in m for m in found)


def test_free_string_param_feeding_a_list_input(
    shipped: tuple[Catalog, TemplateGraphs], tmp_path: Path
) -> None:
    cat = _edited_catalog(
        tmp_path,
        lambda d: d["templates"][0]["params"].update(
            {
                "sampler": {
                    "type": "string",
                    "description": "The sampler.",
                    "default": "euler",
                    "max_length": 40,
                    "example": "euler",
                }
            }
        ),
    )
    graphs = TemplateGraphs(cat)
    t = next(t for t in cat.templates if t.name == "txt2img")
    found = [str(p) for p in check_template(t, graphs, engine(False))]
    assert len(found) == 1 and "param 'sampler' (string) feeds a list input" in found[0]


def test_every_choice_is_checked(shipped: tuple[Catalog, TemplateGraphs], tmp_path: Path) -> None:
    """A style's LoRA file is fixed data of the graph: each choice is rendered and checked."""

    def add_style(d: dict[str, Any]) -> None:
        style = d["templates"][0]["params"]["style"]
        style["values"].append("inked")
        style["choices"]["inked"] = {"lora": "inked-lora.safetensors", "strength": 0.7}

    cat = _edited_catalog(tmp_path, add_style)
    found = messages(cat, TemplateGraphs(cat), engine(True))
    assert len(found) == 1, found
    assert "(LoraLoader), input 'lora_name': value 'inked-lora.safetensors' is not one" in found[0]


def test_api_nodes_refused_unless_the_catalog_allows_them(
    shipped: tuple[Catalog, TemplateGraphs], tmp_path: Path
) -> None:
    cat, graphs = shipped
    info = engine(True)
    info["SaveImage"] = {**info["SaveImage"], "api_node": True}
    found = messages(cat, graphs, info)
    assert len(found) == len(cat.templates)  # every template saves through it
    assert all("calls a paid outside service (api_node)" in m for m in found)
    allowed = _edited_catalog(
        tmp_path, lambda d: [t.update(allow_api_nodes=["SaveImage"]) for t in d["templates"]]
    )
    assert messages(allowed, TemplateGraphs(allowed), info) == []


def test_undeclared_input_is_refused(shipped: tuple[Catalog, TemplateGraphs]) -> None:
    cat, graphs = shipped
    info = engine(True)
    ks = json.loads(json.dumps(info["KSampler"]))
    del ks["input"]["required"]["denoise"]
    info["KSampler"] = ks
    found = messages(cat, graphs, info, only="txt2img@1.1.0")
    assert found == [
        "template txt2img@1.1.0, node 'sampler' (KSampler), input 'denoise': KSampler "
        "declares no input 'denoise'"
    ]


def _edited_catalog(tmp_path: Path, fn: Callable[[dict[str, Any]], Any]) -> Catalog:
    d = tmp_path / "cat"
    d.mkdir(exist_ok=True)
    shutil.copytree(ROOT / "templates", d / "templates", dirs_exist_ok=True)
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    fn(data)
    (d / "catalog.yaml").write_text(yaml.safe_dump(data))
    return load_catalog(d / "catalog.yaml")


# ---- against the real engine ------------------------------------------------------------------


def _real_object_info(url: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with ComfyClient(url) as c:
            return await c.object_info()

    return asyncio.run(go())


@pytest.mark.comfy
def test_real_engine_accepts_the_shipped_catalog(
    comfy_url: str, shipped: tuple[Catalog, TemplateGraphs]
) -> None:
    info = _real_object_info(comfy_url)
    assert messages(*shipped, info) == []


@pytest.mark.comfy
def test_real_engine_refuses_what_it_would_refuse_at_run_time(
    comfy_url: str, tmp_path: Path
) -> None:
    def breaks(d: dict[str, Any]) -> None:
        txt = d["templates"][0]
        # Not batched: the batching declaration would refuse the new sampler at load.
        txt.pop("batching", None)
        txt["params"]["sampler"]["values"].append("euler_imaginary")
        txt["models"][0]["name"] = "not-there.safetensors"

    d = tmp_path / "cat"
    _edited_catalog(tmp_path, breaks)
    graph = d / "templates" / "txt2img" / "v1.json.j2"
    graph.write_text(graph.read_text().replace(CKPT, "not-there.safetensors"))
    cat = load_catalog(d / "catalog.yaml")
    found = messages(cat, TemplateGraphs(cat), _real_object_info(comfy_url))
    assert any("'euler_imaginary'" in m and "(KSampler)" in m for m in found), found
    assert any("'not-there.safetensors' is not one of" in m for m in found), found

    # The CLI says the same and exits non-zero; the shipped catalog passes.
    runner = CliRunner()
    bad = runner.invoke(cli, ["catalog", "check", str(d / "catalog.yaml"), "--engine", comfy_url])
    assert bad.exit_code == 1
    assert "euler_imaginary" in bad.output and "FAIL" in bad.output
    good = runner.invoke(
        cli, ["catalog", "check", str(ROOT / "catalog.yaml"), "--engine", comfy_url]
    )
    assert good.exit_code == 0, good.output
    assert "fits the engine" in good.output

    # A service on this catalog refuses to start, naming the template, node and value.
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp_path / "home",
        catalog=d / "catalog.yaml",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        url_signing_secret="test-secret",
        comfyui_url=comfy_url,
    )
    with pytest.raises(EngineIncompatible) as info:
        with TestClient(create_app(settings)):
            pass
    assert "txt2img@1.1.0" in str(info.value) and "euler_imaginary" in str(info.value)
