"""`stencil templates import` and `render`: a ComfyUI workflow becomes a typed template.

Unit tests run the importer against a hand-written `/object_info`; the `comfy` test re-imports
the shipped templates from their committed workflows against the real engine and finds
exactly the committed graphs and params, so what ships is what the importer makes.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from api.cli import app as cli
from engine.catalog.catalog import load_catalog, parse_catalog
from engine.catalog.compat import check_template
from engine.catalog.importer import (
    ImportRefused,
    ParamBinding,
    append_entry,
    import_workflow,
    load_workflow,
)
from engine.catalog.render import TemplateGraphs
from tests.object_info import CKPT, engine

ROOT = Path(__file__).resolve().parents[1]
IMG2IMG = ROOT / "templates" / "img2img" / "workflow_api.json"


def flow(path: Path = IMG2IMG) -> dict[str, Any]:
    return load_workflow(path.read_text(), str(path))


def bind(*specs: str) -> list[ParamBinding]:
    return [ParamBinding.parse(s) for s in specs]


def test_params_are_typed_from_the_node_declarations() -> None:
    cat = load_catalog(ROOT / "catalog.yaml")
    result = import_workflow(
        flow(),
        engine(True),
        name="restyle",
        bindings=bind(
            "image=Input image.image",  # a node may be named by its title
            "prompt=4.text",
            "strength=6.denoise",
            "seed=6.seed",
            "steps=6.steps",
            "sampler=6.sampler_name",
        ),
        required=frozenset({"prompt"}),
        descriptions={"prompt": "What to paint."},
        gpu_class="l4",
        catalog=cat,
        values={"sampler": "euler,heun"},
        ranges={"steps": "1..50"},
    )
    p = result.entry["params"]
    assert p["image"]["type"] == "image" and p["image"]["required"] is True
    assert p["prompt"] == {
        "description": "What to paint.",
        "type": "string",
        "max_length": 2000,
        "example": "a watercolor painting of a harbour",
        "required": True,
        "min_length": 1,
    }
    assert (p["strength"]["type"], p["strength"]["minimum"], p["strength"]["maximum"]) == (
        "number",
        0.0,
        1.0,
    )
    assert p["strength"]["default"] == 0.6  # the workflow's own value
    assert p["seed"]["random_if_absent"] and p["seed"]["maximum"] == 2**32 - 1
    assert (p["steps"]["minimum"], p["steps"]["maximum"], p["steps"]["default"]) == (1, 50, 20)
    assert p["sampler"]["values"] == ["euler", "heun"] and p["sampler"]["default"] == "euler"
    # Descriptions the importer could not know are marked for review (here: the node tooltip
    # is absent, so the input's name stands in).
    assert p["steps"]["description"].startswith("REVIEW:")
    assert "prompt" not in result.review and "steps" in result.review
    # The shared checkpoint is reused from the catalog, not listed anew.
    assert result.reused_models == [f"checkpoints/{CKPT}"]
    assert result.entry["models"][0]["sha256"] == cat.all_models()[0].sha256
    # Chosen inputs became placeholders; everything else stayed fixed.
    assert '"text": {{ params.prompt | tojson }}' in result.source
    assert '"text": "blurry, low quality"' in result.source
    assert '"latent_image": ["3", 0]' in result.source


def test_the_result_parses_renders_and_fits(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    text = (ROOT / "catalog.yaml").read_text()
    cat = load_catalog(ROOT / "catalog.yaml")
    result = import_workflow(
        flow(),
        engine(False),
        name="restyle",
        bindings=bind("image=2.image", "prompt=4.text", "seed=6.seed"),
        gpu_class="a10g",
        catalog=cat,
    )
    (tmp_path / "templates" / "restyle").mkdir()
    (tmp_path / result.entry["graph"]).write_text(result.source)
    new_text = append_entry(text, result.entry)
    assert new_text.startswith(text)  # the catalog's own text and comments are kept
    (tmp_path / "catalog.yaml").write_text(new_text)
    after = load_catalog(tmp_path / "catalog.yaml")
    t = after.get("restyle")
    assert t is not None and t.gpu_class == "a10g" and t.version == "1.0.0"
    assert check_template(t, TemplateGraphs(after), engine(False)) == []


@pytest.mark.parametrize(
    ("change", "bindings", "message"),
    [
        (lambda f: f["6"].update(class_type="KSamplerPro"), [], "lacks these node types"),
        (
            lambda f: f["8"].update(class_type="FluxProImageNode"),
            [],
            "call paid outside services",
        ),
        (lambda f: None, ["x=6.model"], "fed by another node's output"),
        (lambda f: None, ["x=6.colour"], "has no input 'colour'"),
        (lambda f: None, ["x=99.seed"], "no node '99'"),
        (lambda f: None, ["webhook_url=4.text"], "taken or reserved"),
        (lambda f: None, ["a=4.text", "b=4.text"], "already a param"),
        (lambda f: f["6"]["inputs"].update(sampler_name="warp"), ["s=6.sampler_name"], "'warp'"),
    ],
)
def test_refusals(change: Any, bindings: list[str], message: str) -> None:
    f = flow()
    change(f)
    info = engine(True, FluxProImageNode={"input": {}, "output": ["IMAGE"], "api_node": True})
    with pytest.raises(ImportRefused, match=message):
        import_workflow(f, info, name="restyle", bindings=bind(*bindings), gpu_class="l4")


def test_ui_format_and_other_files_are_refused(tmp_path: Path) -> None:
    ui = {"last_node_id": 9, "nodes": [{"id": 1, "type": "KSampler"}], "links": []}
    with pytest.raises(ImportRefused, match="UI format"):
        load_workflow(json.dumps(ui), "ui.json")
    with pytest.raises(ImportRefused, match="not JSON"):
        load_workflow("{", "broken.json")
    with pytest.raises(ImportRefused, match="needs a class_type"):
        load_workflow(json.dumps({"1": {"inputs": {}}}), "x.json")
    # The body of a POST /prompt is accepted as well.
    assert load_workflow(json.dumps({"prompt": flow()}), "body.json") == flow()


def test_narrowing_must_stay_inside_the_node() -> None:
    def go(**kw: Any) -> None:
        import_workflow(
            flow(),
            engine(True),
            name="restyle",
            bindings=bind("steps=6.steps", "sampler=6.sampler_name"),
            gpu_class="l4",
            **kw,
        )

    with pytest.raises(ImportRefused, match="inside the node's 1..10000"):
        go(ranges={"steps": "0..20"})
    with pytest.raises(ImportRefused, match="only an enum"):
        go(values={"steps": "1,2"})
    with pytest.raises(ImportRefused, match="warp is not among"):
        go(values={"sampler": "euler,warp"})
    with pytest.raises(ImportRefused, match="--range names no param"):
        go(ranges={"cfg": "1..2"})


def test_new_models_need_a_url_and_a_real_sha256(tmp_path: Path) -> None:
    upscale = ROOT / "templates" / "upscale" / "workflow_api_v2.json"
    f = flow(upscale)
    cat = load_catalog(ROOT / "catalog.yaml").model_copy(update={"templates": []})

    def go(urls: dict[str, str]) -> dict[str, Any]:
        r = import_workflow(
            f,
            engine(True),
            name="sharpen",
            bindings=bind("image=1.image"),
            gpu_class="l4",
            catalog=cat,
            model_urls=urls,
            models_dir=tmp_path,
        )
        return r.entry["models"][0]

    with pytest.raises(ImportRefused, match="is not in the catalog"):
        go({})
    with pytest.raises(ImportRefused, match="give its sha256"):
        go({"RealESRGAN_x2plus.pth": "https://example.com/m.pth"})
    local = tmp_path / "upscale_models" / "RealESRGAN_x2plus.pth"
    local.parent.mkdir()
    local.write_bytes(b"weights")
    m = go({"RealESRGAN_x2plus.pth": "https://example.com/m.pth"})
    assert m["sha256"] == hashlib.sha256(b"weights").hexdigest()  # read from the file
    (local.parent / "RealESRGAN_x2plus.pth.synthetic.json").write_text(
        json.dumps({"synthetic": True, "kind": "esrgan"})
    )
    with pytest.raises(ImportRefused, match="random-weight stand-in"):
        go({"RealESRGAN_x2plus.pth": "https://example.com/m.pth"})
    sha = "ab" * 32
    m = go({"RealESRGAN_x2plus.pth": f"https://example.com/m.pth@{sha}"})
    assert (m["sha256"], m["synth"], m["folder"]) == (sha, "esrgan", "upscale_models")


def test_render_cli_validates_like_a_request() -> None:
    runner = CliRunner()
    ok = runner.invoke(
        cli,
        ["templates", "render", "txt2img", "--params", '{"prompt": "a cat", "style": "pokemon"}'],
    )
    assert ok.exit_code == 0, ok.output
    graph = json.loads(ok.stdout)
    assert graph["style"]["inputs"]["lora_name"] == "pokemon-lora-sd15.bin"
    assert graph["style"]["inputs"]["strength_model"] == 0.8
    assert 0 <= graph["sampler"]["inputs"]["seed"] <= 2**32 - 1  # drawn, as for a request
    bad = runner.invoke(cli, ["templates", "render", "txt2img", "--params", '{"steps": 0}'])
    assert bad.exit_code == 1
    assert "prompt" in bad.output and "steps" in bad.output
    v2 = runner.invoke(cli, ["templates", "render", "upscale", "--params", '{"image": "x"}'])
    assert v2.exit_code == 0 and "UpscaleModelLoader" in v2.stdout
    v1 = runner.invoke(
        cli, ["templates", "render", "upscale", "--major", "1", "--params", '{"image": "x"}']
    )
    assert v1.exit_code == 0 and "ImageScaleBy" in v1.stdout


# ---- the shipped templates, re-imported against the real engine ---------------------------

SAMPLER_VALUES = "euler,euler_ancestral,heun,dpmpp_2m,dpmpp_2m_sde,ddim,uni_pc"
SCHEDULER_VALUES = "normal,karras,exponential,sgm_uniform,simple,ddim_uniform"
SAMPLING = (
    f"--values sampler={SAMPLER_VALUES} --values scheduler={SCHEDULER_VALUES} "
    "--range steps=1..100 --range cfg=0..30 --range strength=0.05..1 --required prompt"
)
# The commands docs/catalog.md shows; descriptions are compared apart from them.
IMPORTS = {
    ("img2img", 1): (
        "templates/img2img/workflow_api.json --name img2img --param image=2.image "
        "--param prompt=4.text --param negative_prompt=5.text --param strength=6.denoise "
        "--param seed=6.seed --param steps=6.steps --param cfg=6.cfg "
        f"--param sampler=6.sampler_name --param scheduler=6.scheduler {SAMPLING}"
    ),
    ("inpaint", 1): (
        "templates/inpaint/workflow_api.json --name inpaint --param image=2.image "
        "--param mask=3.image --param prompt=6.text --param negative_prompt=7.text "
        "--param strength=8.denoise --param seed=8.seed --param steps=8.steps --param cfg=8.cfg "
        f"--param sampler=8.sampler_name --param scheduler=8.scheduler {SAMPLING}"
    ),
    ("upscale", 2): (
        "templates/upscale/workflow_api_v2.json --name upscale --version 2.0.0 "
        "--param image=1.image --model RealESRGAN_x2plus.pth=https://github.com/xinntao/"
        "Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth@49fafd45f8fd7aa8d31ab2a2"
        "2d14d91b536c34494a5cfe31eb5d89c2fa266abb"
    ),
}


def _without_text(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without the prose a person writes at review (summary and descriptions)."""
    out = {k: v for k, v in entry.items() if k not in ("summary", "description")}
    out["params"] = {
        n: {k: v for k, v in p.items() if k != "description"} for n, p in entry["params"].items()
    }
    return out


@pytest.mark.comfy
@pytest.mark.parametrize("key", sorted(IMPORTS), ids=lambda k: f"{k[0]}-v{k[1]}")
def test_shipped_templates_are_what_the_importer_makes(
    key: tuple[str, int], comfy_url: str, tmp_path: Path
) -> None:
    name, major = key
    shipped_data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    shipped = next(
        t for t in shipped_data["templates"] if t["name"] == name and t["version"][0] == str(major)
    )
    # The catalog as it was before this template: the others stay, so shared models are found.
    before = dict(shipped_data)
    before["templates"] = [t for t in shipped_data["templates"] if t is not shipped]
    work = tmp_path / "cat"
    shutil.copytree(ROOT / "templates", work / "templates")
    (work / shipped["graph"]).unlink()
    head = (ROOT / "catalog.yaml").read_text().split("\ntemplates:")[0]
    (work / "catalog.yaml").write_text(
        head + "\n" + yaml.safe_dump({"templates": before["templates"]}, sort_keys=False)
    )
    parse_catalog(yaml.safe_load((work / "catalog.yaml").read_text()), "before", work)
    args = shlex.split(IMPORTS[key].replace("templates/", f"{work}/templates/", 1))
    result = CliRunner().invoke(
        cli,
        [
            "templates",
            "import",
            *args,
            "--engine",
            comfy_url,
            "--catalog",
            str(work / "catalog.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    made = (work / shipped["graph"]).read_text()
    assert made == (ROOT / shipped["graph"]).read_text()
    entry = next(
        t
        for t in yaml.safe_load((work / "catalog.yaml").read_text())["templates"]
        if t["name"] == name and t["version"][0] == str(major)
    )
    assert _without_text(entry) == _without_text(shipped)
