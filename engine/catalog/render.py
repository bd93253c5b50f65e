"""Render a template's graph from params and check the result before it reaches ComfyUI."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.catalog.catalog import Catalog, CatalogError, Template

# Output counts of the core nodes our templates use; other types are checked against
# ComfyUI's /object_info when it is given.
CORE_OUTPUTS: dict[str, int] = {
    "CheckpointLoaderSimple": 3,
    "CLIPTextEncode": 1,
    "EmptyLatentImage": 1,
    "KSampler": 1,
    "VAEDecode": 1,
    "VAEEncode": 1,
    "SaveImage": 0,
    "PreviewImage": 0,
    "LoadImage": 2,
    "ImageScaleBy": 1,
    "ImageScale": 1,
    "LatentUpscaleBy": 1,
}

_EXPR = re.compile(r"\{\{(.*?)\}\}", re.S)
_TOJSON_TAIL = re.compile(r"\|\s*tojson\s*$")

_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)
_env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": True}


class GraphError(Exception):
    """A rendered graph that fails the checks."""


@dataclass(frozen=True)
class RenderedGraph:
    """A checked ComfyUI API-format graph and its content hash."""

    graph: dict[str, Any]
    sha256: str
    node_types: frozenset[str]


def graph_hash(graph: dict[str, Any]) -> str:
    """A stable sha256 of a graph (canonical JSON)."""
    canon = json.dumps(graph, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def check_source(source: str) -> None:
    """Every `{{ }}` expression must end in `| tojson`, so no value can break the JSON."""
    for m in _EXPR.finditer(source):
        if not _TOJSON_TAIL.search(m.group(1)):
            line = source.count("\n", 0, m.start()) + 1
            raise GraphError(
                f"line {line}: expression {{{{{m.group(1).strip()}}}}} must end in | tojson"
            )


def choice_values(t: Template, params: dict[str, Any]) -> dict[str, Any]:
    """What each choice param's chosen value stands for (`choices.<param>.<key>`)."""
    out: dict[str, Any] = {}
    for name, p in t.params.items():
        if p.choices is not None and params.get(name) in p.choices:
            out[name] = p.choices[params[name]]
    return out


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> jinja2.Template:
    """A graph source compiled once (compiling is most of a render's cost: ~1 ms a request)."""
    return _env.from_string(source)


def render_source(
    source: str, params: dict[str, Any], choices: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Render Jinja2 graph text with `params` (and `choices`) and parse it as JSON."""
    try:
        text = _compiled(source).render(params=params, choices=choices or {})
    except (TemplateError, TypeError, ValueError) as e:
        # StrictUndefined inside tojson surfaces as a TypeError.
        raise GraphError(f"render failed: {e}") from None
    try:
        graph = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraphError(f"rendered graph is not JSON: {e}") from None
    if not isinstance(graph, dict) or not graph:
        raise GraphError("rendered graph must be a non-empty object of nodes")
    return graph


def check_graph(
    graph: dict[str, Any],
    allowlist: frozenset[str] | None,
    object_info: dict[str, Any] | None = None,
) -> frozenset[str]:
    """Check node shapes, the allowlist, and that every link names a real node output."""
    types: set[str] = set()
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise GraphError(f"node {node_id}: needs a class_type")
        if not isinstance(node.get("inputs"), dict):
            raise GraphError(f"node {node_id}: needs an inputs object")
        ct = node["class_type"]
        if allowlist is not None and ct not in allowlist:
            raise GraphError(f"node {node_id}: type {ct} is not on the template's allowlist")
        types.add(ct)
    for node_id, node in graph.items():
        for name, value in node["inputs"].items():
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
                continue
            src, idx = value
            if src not in graph:
                raise GraphError(f"node {node_id}.{name}: links to missing node {src}")
            if not isinstance(idx, int) or idx < 0:
                raise GraphError(f"node {node_id}.{name}: bad output index {idx!r}")
            src_type = graph[src]["class_type"]
            n_out = _output_count(src_type, object_info)
            if n_out is not None and idx >= n_out:
                raise GraphError(
                    f"node {node_id}.{name}: {src_type} (node {src}) has no output {idx}"
                )
    return frozenset(types)


def _output_count(node_type: str, object_info: dict[str, Any] | None) -> int | None:
    if object_info and node_type in object_info:
        return len(object_info[node_type].get("output", []))
    return CORE_OUTPUTS.get(node_type)


def example_params(t: Template) -> dict[str, Any]:
    """Params built from every param's example, as the golden render and warm-up use."""
    out: dict[str, Any] = {}
    for name, p in t.params.items():
        out[name] = "example.png" if p.type == "image" else p.example
    return out


def param_bindings(source: str, t: Template) -> dict[tuple[str, str], str]:
    """Find where each param lands by rendering with sentinels; used to map node_errors."""
    sentinels = {name: f"__stencil_param_{name}__" for name in t.params}
    # A choice param's own value never reaches the graph; what it stands for is fixed data.
    fixed = {n: next(iter(p.choices.values())) for n, p in t.params.items() if p.choices}
    try:
        graph = render_source(source, sentinels, fixed)
    except GraphError:
        return {}  # a template that computes with params still works; errors stay unmapped
    reverse = {v: k for k, v in sentinels.items()}
    out: dict[tuple[str, str], str] = {}
    for node_id, node in graph.items():
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, str) and value in reverse:
                out[(str(node_id), name)] = reverse[value]
    return out


class TemplateGraphs:
    """Graph sources of a catalog's templates, loaded once, with their allowlists."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._sources: dict[tuple[str, int], str] = {}
        self._allow: dict[tuple[str, int], frozenset[str]] = {}
        self._bindings: dict[tuple[str, int], dict[tuple[str, str], str]] = {}
        for t in catalog.templates:
            src = catalog.graph_path(t).read_text()
            key = (t.name, t.major)
            self._sources[key] = src
            self._bindings[key] = param_bindings(src, t)
            if t.node_allowlist is not None:
                self._allow[key] = frozenset(t.node_allowlist)
            else:
                ex = example_params(t)
                self._allow[key] = check_graph(render_source(src, ex, choice_values(t, ex)), None)

    def render(
        self, t: Template, params: dict[str, Any], object_info: dict[str, Any] | None = None
    ) -> RenderedGraph:
        """Render and check one template's graph."""
        key = (t.name, t.major)
        graph = render_source(self._sources[key], params, choice_values(t, params))
        types = check_graph(graph, self._allow[key], object_info)
        return RenderedGraph(graph=graph, sha256=graph_hash(graph), node_types=types)

    def bindings(self, t: Template) -> dict[tuple[str, str], str]:
        """Where each param lands in the graph: (node_id, input_name) -> param name."""
        return self._bindings[(t.name, t.major)]

    def allowlist(self, t: Template) -> frozenset[str]:
        """The node types a template may use."""
        return self._allow[(t.name, t.major)]


def check_template(catalog: Catalog, t: Template, source: str) -> None:
    """Fail with a CatalogError if a template's graph file cannot render and pass checks."""
    path = catalog.graph_path(t)
    text = path.read_text()
    where = f"{source}: template {t.name!r} ({t.graph})"
    used = set(re.findall(r"(?:params|choices)\.([a-z][a-z0-9_]*)", text))
    unknown = used - set(t.params)
    if unknown:
        raise CatalogError(f"{where}: uses undeclared params: {', '.join(sorted(unknown))}")
    unused = set(t.params) - used
    if unused:
        raise CatalogError(f"{where}: params never used by the graph: {', '.join(sorted(unused))}")
    try:
        check_source(text)
        ex = example_params(t)
        graph = render_source(text, ex, choice_values(t, ex))
        allow = frozenset(t.node_allowlist) if t.node_allowlist is not None else None
        check_graph(graph, allow)
    except GraphError as e:
        raise CatalogError(f"{where}: {e}") from None
