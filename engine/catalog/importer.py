"""Turn a ComfyUI workflow ("Save (API format)") into a template and its catalog entry.

The ML team picks which node inputs become public params (`prompt=6.text`); each param's type,
bounds, options and default come from the node's own declaration in the engine's
`/object_info`, so nothing is typed by hand twice. Everything not picked is fixed in the
template. What comes out renders, passes `stencil catalog check` and fits the engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.catalog.catalog import NAME_RE, RESERVED_PARAMS, SEMVER_RE, Catalog, ModelFile
from engine.catalog.compat import InputSpec, input_specs
from engine.catalog.models import sha256_file, synthetic_sidecar

# Where a loader's file input is found, for the catalog's models list.
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("VAELoader", "vae_name"): "vae",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("CLIPLoader", "clip_name"): "clip",
}
# Node inputs that take an uploaded file: they become image params.
IMAGE_INPUTS: frozenset[tuple[str, str]] = frozenset(
    {("LoadImage", "image"), ("LoadImageMask", "image")}
)
SEED_INPUTS = frozenset({"seed", "noise_seed"})
SEED_MAX = 2**32 - 1  # what every SDK's integer type holds; ComfyUI accepts far more
STRING_MAX_LENGTH = 2000
IMAGE_MAX_BYTES = 10 * 1024 * 1024
IMAGE_MAX_PIXELS = 4 * 1024 * 1024
REVIEW = "REVIEW:"  # descriptions the importer could not know start with this


class ImportRefused(Exception):
    """The workflow cannot become a template; the message says why and what to do."""


@dataclass(frozen=True)
class ParamBinding:
    """`name=node.input` from the command line: which node input becomes which param."""

    name: str
    node: str  # a node id or a node title (`_meta.title`)
    input: str

    @classmethod
    def parse(cls, text: str) -> ParamBinding:
        """Parse `prompt=6.text` (or `prompt=Positive prompt.text`)."""
        m = re.fullmatch(r"([a-z][a-z0-9_]*)=(.+)\.([A-Za-z0-9_]+)", text.strip())
        if not m:
            raise ImportRefused(f"--param {text!r}: write it as NAME=NODE.INPUT (prompt=6.text)")
        return cls(m.group(1), m.group(2), m.group(3))


@dataclass
class ImportResult:
    """What the importer writes: the graph file's text and the catalog entry."""

    name: str
    source: str
    entry: dict[str, Any]
    reused_models: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)


_LINK = re.compile(r'\[\s*("[^"\n]*"),\s*(\d+)\s*\]')
_SMALL = re.compile(r'\{\s*("[^"\n]*": "[^"\n]*")\s*\}')


def _compact_links(text: str) -> str:
    """Links (`["4", 0]`) and one-key objects on one line, as a person would write them."""
    return _SMALL.sub(r"{\1}", _LINK.sub(r"[\1, \2]", text))


def load_workflow(text: str, where: str) -> dict[str, Any]:
    """Parse an exported workflow; refuse the editor's UI format and other shapes."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ImportRefused(f"{where} is not JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise ImportRefused(
            f"{where} is the editor's UI format (nodes and links), not the API format: in "
            "ComfyUI use Workflow > Export (API), or 'Save (API Format)' with dev mode on"
        )
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # the body of a POST /prompt
    if not isinstance(data, dict) or not data:
        raise ImportRefused(f"{where} holds no API-format graph (an object of nodes)")
    for node_id, node in data.items():
        if not (
            isinstance(node, dict)
            and isinstance(node.get("class_type"), str)
            and isinstance(node.get("inputs"), dict)
        ):
            raise ImportRefused(f"{where}: node {node_id!r} needs a class_type and inputs")
    return data


def _find_node(graph: Mapping[str, Any], ref: str) -> str:
    if ref in graph:
        return ref
    titled = [k for k, n in graph.items() if (n.get("_meta") or {}).get("title") == ref]
    if len(titled) == 1:
        return titled[0]
    if len(titled) > 1:
        raise ImportRefused(f"several nodes are titled {ref!r}: name the node by its id")
    raise ImportRefused(f"no node {ref!r} in the workflow (ids: {', '.join(sorted(graph))})")


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _conf(node_info: Mapping[str, Any], name: str) -> dict[str, Any]:
    for section in ("required", "optional"):
        spec = ((node_info.get("input") or {}).get(section) or {}).get(name)
        if isinstance(spec, list | tuple) and len(spec) > 1 and isinstance(spec[1], Mapping):
            return dict(spec[1])
    return {}


def _param(
    b: ParamBinding,
    class_type: str,
    value: Any,
    spec: InputSpec,
    conf: Mapping[str, Any],
    description: str | None,
    required: bool,
) -> tuple[dict[str, Any], bool]:
    """The catalog param for one bound input; True when its description needs review."""
    tooltip = conf.get("tooltip") if isinstance(conf.get("tooltip"), str) else None
    text = description or (f"{REVIEW} {tooltip}" if tooltip else None)
    text = text or f"{REVIEW} {class_type} input {b.input}."
    p: dict[str, Any] = {"description": text}
    if (class_type, b.input) in IMAGE_INPUTS:
        p.update(
            type="image",
            required=True,
            max_bytes=IMAGE_MAX_BYTES,
            max_pixels=IMAGE_MAX_PIXELS,
            formats=["PNG", "JPEG", "WEBP"],
            example="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
            "nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==",
        )
        return p, description is None
    if spec.kind == "COMBO":
        options = list(spec.options or ())
        if str(value) not in options:
            raise ImportRefused(
                f"--param {b.name}: {b.node}.{b.input} is {value!r}, which this engine does not "
                "offer; fix the workflow first"
            )
        p.update(type="enum", values=options, default=str(value), example=str(value))
    elif spec.kind == "INT":
        lo, hi = spec.minimum, spec.maximum
        if b.input in SEED_INPUTS:
            lo, hi = max(lo or 0, 0), min(hi if hi is not None else SEED_MAX, SEED_MAX)
            p.update(type="integer", minimum=int(lo), maximum=int(hi), random_if_absent=True)
            p["example"] = int(value) if isinstance(value, int) else 42
            return p, description is None
        p.update(type="integer", default=int(value), example=int(value))
        if lo is not None:
            p["minimum"] = int(lo)
        if hi is not None:
            p["maximum"] = int(hi)
        step = conf.get("step")
        if isinstance(step, int) and step > 1:
            p["multiple_of"] = step
    elif spec.kind == "FLOAT":
        p.update(type="number", default=float(value), example=float(value))
        if spec.minimum is not None:
            p["minimum"] = spec.minimum
        if spec.maximum is not None:
            p["maximum"] = spec.maximum
    elif spec.kind == "STRING":
        p.update(type="string", max_length=STRING_MAX_LENGTH, example=str(value) or "text")
        if required:
            p.update(required=True, min_length=1)
        else:
            p["default"] = str(value)
    elif spec.kind == "BOOLEAN":
        p.update(type="boolean", default=bool(value), example=bool(value))
    else:
        raise ImportRefused(
            f"--param {b.name}: {class_type}.{b.input} is a {spec.kind} input, which no request "
            "param can carry"
        )
    if required and "default" in p:
        del p["default"]
        p["required"] = True
    return p, description is None


def narrow(name: str, p: dict[str, Any], values: str | None, bounds: str | None) -> None:
    """Narrow a param to a vetted subset of what the node accepts (--values, --range)."""
    if values is not None:
        if p["type"] != "enum":
            raise ImportRefused(f"--values {name}: only an enum param has values")
        chosen = [v.strip() for v in values.split(",") if v.strip()]
        outside = [v for v in chosen if v not in p["values"]]
        if not chosen or outside:
            raise ImportRefused(
                f"--values {name}: {', '.join(outside) or 'nothing'} is not among the node's "
                f"options ({', '.join(p['values'][:12])}...)"
            )
        p["values"] = chosen
        if p.get("default") not in chosen:
            p["default"] = chosen[0]
        if p.get("example") not in chosen:
            p["example"] = p["default"]
    if bounds is not None:
        if p["type"] not in ("integer", "number"):
            raise ImportRefused(f"--range {name}: only a number param has a range")
        m = re.fullmatch(r"\s*(-?[0-9.]+)\s*\.\.\s*(-?[0-9.]+)\s*", bounds)
        if not m:
            raise ImportRefused(f"--range {name}={bounds}: write it as LOW..HIGH")
        cast = int if p["type"] == "integer" else float
        lo, hi = cast(m.group(1)), cast(m.group(2))
        if lo > hi or lo < p.get("minimum", lo) or hi > p.get("maximum", hi):
            raise ImportRefused(
                f"--range {name}={bounds}: must lie inside the node's "
                f"{p.get('minimum')}..{p.get('maximum')}"
            )
        p["minimum"], p["maximum"] = lo, hi
        for key in ("default", "example"):
            if key in p and not lo <= p[key] <= hi:
                p[key] = min(max(p[key], lo), hi)


def _models(
    graph: Mapping[str, Any],
    catalog: Catalog | None,
    urls: Mapping[str, str],
    models_dir: Path | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The catalog models a workflow's fixed loader inputs name; reused where already listed."""
    known: dict[tuple[str, str], ModelFile] = {}
    if catalog is not None:
        known = {(m.folder, m.name): m for m in catalog.all_models()}
    out: list[dict[str, Any]] = []
    reused: list[str] = []
    for node in graph.values():
        for name, value in node["inputs"].items():
            folder = MODEL_INPUTS.get((node["class_type"], name))
            if folder is None or not isinstance(value, str):
                continue
            if any(m["folder"] == folder and m["name"] == value for m in out):
                continue
            if (folder, value) in known:
                out.append(known[(folder, value)].model_dump(exclude_none=True))
                reused.append(f"{folder}/{value}")
                continue
            spec = urls.get(value)
            if spec is None:
                raise ImportRefused(
                    f"model {folder}/{value} is not in the catalog: pass --model "
                    f"{value}=https://...[@SHA256] (without @SHA256 the file must be present in "
                    f"the models folder, and its sha256 is read from it)"
                )
            out.append(_new_model(folder, value, spec, models_dir))
    return out, reused


def _new_model(folder: str, name: str, spec: str, models_dir: Path | None) -> dict[str, Any]:
    """A catalog model entry from `URL[@SHA256]` and the local file, if any."""
    url, _, sha = spec.partition("@")
    if not url.startswith("https://"):
        raise ImportRefused(f"--model {name}: the URL must be https://")
    path = models_dir / folder / name if models_dir is not None else None
    sidecar: dict[str, Any] = {}
    if path is not None and synthetic_sidecar(path).is_file():
        sidecar = json.loads(synthetic_sidecar(path).read_text())
    if not sha:
        if path is None or not path.is_file():
            raise ImportRefused(
                f"--model {name}: give its sha256 (URL@SHA256) or put the file at "
                f"<models folder>/{folder}/{name}"
            )
        if sidecar.get("synthetic"):
            raise ImportRefused(
                f"--model {name}: the local file is a random-weight stand-in, whose sha256 is "
                "not the real file's: give the real one (URL@SHA256)"
            )
        sha = sha256_file(path)
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ImportRefused(f"--model {name}: {sha!r} is not a sha256 (64 hex digits)")
    entry: dict[str, Any] = {"name": name, "folder": folder, "url": url, "sha256": sha}
    if isinstance(sidecar.get("kind"), str):
        entry["synth"] = sidecar["kind"]  # `stencil models synth` can make it again
    return entry


def import_workflow(
    workflow: dict[str, Any],
    object_info: Mapping[str, Any],
    *,
    name: str,
    version: str = "1.0.0",
    bindings: list[ParamBinding],
    descriptions: Mapping[str, str] | None = None,
    required: frozenset[str] = frozenset(),
    summary: str | None = None,
    gpu_class: str,
    catalog: Catalog | None = None,
    model_urls: Mapping[str, str] | None = None,
    models_dir: Path | None = None,
    allow_api_nodes: frozenset[str] = frozenset(),
    values: Mapping[str, str] | None = None,
    ranges: Mapping[str, str] | None = None,
) -> ImportResult:
    """Build the template source and catalog entry; ImportRefused says what is wrong."""
    if not re.fullmatch(NAME_RE, name):
        raise ImportRefused(f"--name {name!r}: lower-case letters, digits and _ (max 40)")
    if not re.fullmatch(SEMVER_RE, version):
        raise ImportRefused(f"--version {version!r}: MAJOR.MINOR.PATCH")
    major = int(version.split(".")[0])
    if catalog is not None and catalog.get(name, major) is not None:
        raise ImportRefused(
            f"the catalog already has {name} v{major}; a new graph for it is a new major version "
            "(--version) or another name"
        )
    missing = sorted({n["class_type"] for n in workflow.values()} - set(object_info))
    if missing:
        raise ImportRefused(
            "the engine lacks these node types (install their custom nodes first, or use core "
            f"nodes): {', '.join(missing)}"
        )
    paid = sorted(
        {
            n["class_type"]
            for n in workflow.values()
            if object_info[n["class_type"]].get("api_node")
            and n["class_type"] not in allow_api_nodes
        }
    )
    if paid:
        raise ImportRefused(
            f"these nodes call paid outside services (api_node): {', '.join(paid)}; a product "
            "template may not, unless the catalog allows each by name (--allow-api-node)"
        )
    graph = json.loads(json.dumps(workflow))  # a private copy to put placeholders in
    descriptions = descriptions or {}
    params: dict[str, Any] = {}
    review: list[str] = []
    seen_inputs: set[tuple[str, str]] = set()
    for b in bindings:
        if b.name in params or b.name in RESERVED_PARAMS:
            raise ImportRefused(f"--param {b.name}: the name is taken or reserved")
        node_id = _find_node(graph, b.node)
        node = graph[node_id]
        ct = node["class_type"]
        if (node_id, b.input) in seen_inputs:
            raise ImportRefused(f"--param {b.name}: {b.node}.{b.input} is already a param")
        seen_inputs.add((node_id, b.input))
        specs = input_specs(object_info[ct])
        if b.input not in specs:
            raise ImportRefused(
                f"--param {b.name}: {ct} (node {node_id}) has no input {b.input!r} "
                f"(it has: {', '.join(sorted(specs))})"
            )
        value = node["inputs"].get(b.input)
        if _is_link(value):
            raise ImportRefused(
                f"--param {b.name}: {ct}.{b.input} (node {node_id}) is fed by another node's "
                "output, so it has no value to expose"
            )
        p, needs_review = _param(
            b,
            ct,
            value,
            specs[b.input],
            _conf(object_info[ct], b.input),
            descriptions.get(b.name),
            b.name in required,
        )
        narrow(b.name, p, (values or {}).get(b.name), (ranges or {}).get(b.name))
        params[b.name] = p
        if needs_review:
            review.append(b.name)
        node["inputs"][b.input] = f"__stencil_param_{b.name}__"
    for option, given in (
        ("--describe", descriptions),
        ("--values", values or {}),
        ("--range", ranges or {}),
        ("--required", dict.fromkeys(required)),
    ):
        unknown = set(given) - set(params)
        if unknown:
            raise ImportRefused(f"{option} names no param: {', '.join(sorted(unknown))}")
    models, reused = _models(graph, catalog, model_urls or {}, models_dir)
    source = _compact_links(json.dumps(graph, indent=2, sort_keys=False)) + "\n"
    for pname in params:
        source = source.replace(
            f'"__stencil_param_{pname}__"', f"{{{{ params.{pname} | tojson }}}}"
        )
    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "summary": (summary or f"{REVIEW} {name} (imported workflow)")[:120],
        "description": f"{REVIEW} what {name} does, for the API reference.",
        "graph": f"templates/{name}/v{major}.json.j2",
        "gpu_class": gpu_class,
    }
    if models:
        entry["models"] = models
    if allow_api_nodes:
        entry["allow_api_nodes"] = sorted(allow_api_nodes)
    entry["params"] = params
    if summary is None:
        review.append("summary")
    review.append("description")
    return ImportResult(name, source, entry, reused, review)


def append_entry(catalog_text: str, entry: dict[str, Any]) -> str:
    """The catalog text with `entry` added to its templates (comments and order kept)."""
    found = re.search(r"^templates:[ \t]*$(.*)", catalog_text, re.M | re.S)
    if found is None:
        raise ImportRefused("the catalog has no top-level 'templates:' list to add to")
    # templates is the catalog's last top-level key by convention; append at the end.
    if re.search(r"^[A-Za-z_]", found.group(1), re.M):
        raise ImportRefused("'templates:' must be the catalog's last top-level key to append to")
    item = re.search(r"^([ \t]*)- ", found.group(1), re.M)
    indent = item.group(1) if item else "  "  # as the file's own entries are indented
    block = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, width=96)
    indented = "".join(
        (indent + line if line.strip() else line) for line in block.splitlines(keepends=True)
    )
    text = catalog_text if catalog_text.endswith("\n") else catalog_text + "\n"
    return text + "\n" + indented
