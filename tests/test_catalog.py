"""Catalog parsing, template rendering and graph checks, golden renders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.catalog.catalog import CatalogError, catalog_json_schema, load_catalog
from engine.catalog.render import (
    GraphError,
    TemplateGraphs,
    check_graph,
    check_source,
    example_params,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "catalog.yaml", tmp_path / "catalog.yaml")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    return tmp_path


def edit(d: Path, fn: Any) -> Path:
    path = d / "catalog.yaml"
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_catalog_loads() -> None:
    cat = load_catalog(ROOT / "catalog.yaml")
    assert {(t.name, t.version) for t in cat.templates} == {
        ("txt2img", "1.1.0"),
        ("img2img", "1.0.0"),
        ("inpaint", "1.0.0"),
        ("upscale", "2.0.0"),
        ("upscale", "1.0.0"),
    }
    assert cat.gpu_classes["l4"].fallbacks == ["A10G"]


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (
            lambda d: d["templates"][0].update(colour="red"),
            ["template 'txt2img'", "field colour", "Extra inputs are not permitted"],
        ),
        (
            lambda d: d["templates"][0]["params"]["width"].update(maximum="big"),
            ["template 'txt2img'", "field params.width.maximum"],
        ),
        (
            lambda d: d["templates"][1].update(version="1.0"),
            ["template 'upscale'", "field version"],
        ),
        (
            lambda d: d["templates"][0].update(gpu_class="tpu"),
            ["txt2img", "gpu_class 'tpu' is not defined"],
        ),
        (
            lambda d: d["templates"][0]["params"]["sampler"].pop("values"),
            ["template 'txt2img'", "params.sampler", "needs values"],
        ),
        (
            lambda d: d["templates"][0]["params"]["prompt"].pop("description"),
            ["field params.prompt.description", "Field required"],
        ),
        (lambda d: d["templates"][0]["models"][0].update(sha256="abc"), ["field models.0.sha256"]),
        (
            lambda d: d["gpu_classes"]["l4"].update(usd_per_second=-1),
            ["field gpu_classes.l4.usd_per_second"],
        ),
        (
            lambda d: d["templates"].append(dict(d["templates"][0])),
            ["template txt2img v1 is listed twice"],
        ),
    ],
)
def test_broken_catalog_names_file_template_field(
    catalog_dir: Path, change: Any, expect: list[str]
) -> None:
    path = edit(catalog_dir, change)
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    msg = str(e.value)
    assert str(path) in msg
    for part in expect:
        assert part in msg, msg


def test_template_graph_problems_are_catalog_errors(catalog_dir: Path) -> None:
    g = catalog_dir / "templates/txt2img/v1.json.j2"
    src = g.read_text()
    g.write_text(src.replace("{{ params.steps | tojson }}", "{{ params.steps }}"))
    with pytest.raises(CatalogError, match=r"txt2img.*must end in \| tojson"):
        load_catalog(catalog_dir / "catalog.yaml")
    g.write_text(src.replace("params.steps", "params.stepz"))
    with pytest.raises(CatalogError, match="stepz"):
        load_catalog(catalog_dir / "catalog.yaml")
    g.write_text(src.replace('["sampler", 0]', '["nowhere", 0]'))
    with pytest.raises(CatalogError, match="missing node nowhere"):
        load_catalog(catalog_dir / "catalog.yaml")
    g.write_text(src.replace('["checkpoint", 2]', '["checkpoint", 7]'))
    with pytest.raises(CatalogError, match="has no output 7"):
        load_catalog(catalog_dir / "catalog.yaml")
    (catalog_dir / "templates/txt2img/v1.json.j2").unlink()
    with pytest.raises(
        CatalogError, match="field graph: file templates/txt2img/v1.json.j2 does not exist"
    ):
        load_catalog(catalog_dir / "catalog.yaml")


def test_broken_catalog_fails_startup_with_precise_message(
    catalog_dir: Path, tmp_path: Path
) -> None:
    path = edit(
        catalog_dir, lambda d: d["templates"][0]["params"]["steps"].update(minimum=50, maximum=10)
    )
    env = {
        "STENCIL_CATALOG": str(path),
        "STENCIL_HOME": str(tmp_path / "h"),
        "PATH": "/usr/bin:/bin",
    }
    r = subprocess.run(
        [sys.executable, "-m", "api", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 2
    assert str(path) in r.stderr and "template 'txt2img'" in r.stderr
    assert "params.steps" in r.stderr and "minimum is above maximum" in r.stderr


def test_values_cannot_break_the_json() -> None:
    cat = load_catalog(ROOT / "catalog.yaml")
    t = cat.get("txt2img")
    assert t is not None
    graphs = TemplateGraphs(cat)
    evil = '", "class_type": "ExecShell"}, "x": {"class_type": "Evil", "inputs": {}} {{ 7*7 }}'
    params = {**example_params(t), "prompt": evil}
    r = graphs.render(t, params)
    assert r.graph["positive"]["inputs"]["text"] == evil
    assert set(r.node_types) <= graphs.allowlist(t)


def test_allowlist_and_link_checks() -> None:
    g = {
        "a": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "b": {"class_type": "SaveImage", "inputs": {"images": ["a", 0]}},
    }
    assert check_graph(g, frozenset({"LoadImage", "SaveImage"})) == {"LoadImage", "SaveImage"}
    with pytest.raises(GraphError, match="not on the template's allowlist"):
        check_graph(g, frozenset({"SaveImage"}))
    with pytest.raises(GraphError, match="has no output 2"):
        check_graph({**g, "b": {"class_type": "SaveImage", "inputs": {"images": ["a", 2]}}}, None)
    with pytest.raises(GraphError, match="needs a class_type"):
        check_graph({"a": {"inputs": {}}}, None)
    info = {"LoadImage": {"output": ["IMAGE", "MASK", "EXTRA"]}}
    check_graph({**g, "b": {"class_type": "SaveImage", "inputs": {"images": ["a", 2]}}}, None, info)
    with pytest.raises(GraphError, match="must end in"):
        check_source('{"a": {{ params.x }}}')


def test_sandbox_refuses_attribute_tricks(catalog_dir: Path) -> None:
    g = catalog_dir / "templates/upscale/v1.json.j2"
    g.write_text(
        g.read_text().replace(
            "{{ params.method | tojson }}", "{{ params.method.__class__.__mro__ | tojson }}"
        )
    )
    with pytest.raises(CatalogError):
        load_catalog(catalog_dir / "catalog.yaml")


@pytest.mark.parametrize("name", ["txt2img", "upscale"])
def test_golden_render(name: str) -> None:
    cat = load_catalog(ROOT / "catalog.yaml")
    t = cat.get(name)
    assert t is not None
    r = TemplateGraphs(cat).render(t, example_params(t))
    golden = json.loads((GOLDEN / f"{t.name}-{t.version}.json").read_text())
    assert r.graph == golden["graph"]
    assert r.sha256 == golden["sha256"]


def test_every_template_version_has_a_golden() -> None:
    cat = load_catalog(ROOT / "catalog.yaml")
    for t in cat.templates:
        assert (GOLDEN / f"{t.name}-{t.version}.json").is_file(), (
            f"no golden for {t.name} {t.version}"
        )


def test_committed_catalog_schema_is_current() -> None:
    committed = json.loads((ROOT / "catalog.schema.json").read_text())
    assert committed == catalog_json_schema(), "run `stencil catalog schema`"


def test_catalog_schema_validates_the_catalog() -> None:
    import jsonschema

    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    jsonschema.validate(json.loads(json.dumps(data, default=str)), catalog_json_schema())
    data["templates"][0]["bogus"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(json.dumps(data, default=str)), catalog_json_schema())
