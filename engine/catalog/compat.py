"""Check a catalog against the node declarations of the ComfyUI that will run it.

ComfyUI validates a prompt only when it is queued, and answers a value it does not accept
(a sampler it lacks, a model file that is not there) with ``value_not_in_list`` at run time:
too late for a product, since the customer's job then fails. This module reads the engine's
``/object_info`` once and refuses, before anything is served, every template whose graph the
engine would refuse: unknown node types, nodes that call paid outside services (``api_node``)
unless the catalog allows them, missing required inputs, fixed values and enum values outside
a combo's options, and numeric bounds wider than the node accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.catalog.catalog import Catalog, Param, Template
from engine.catalog.render import TemplateGraphs, example_params

_NUMERIC = {"INT", "FLOAT"}


@dataclass(frozen=True)
class Incompatibility:
    """One thing the engine would refuse, located by template, node and input."""

    template: str  # name@version
    node: str | None
    class_type: str | None
    input: str | None
    message: str

    def __str__(self) -> str:
        where = f"template {self.template}"
        if self.node is not None:
            where += f", node {self.node!r} ({self.class_type})"
        if self.input is not None:
            where += f", input {self.input!r}"
        return f"{where}: {self.message}"


class EngineIncompatible(Exception):
    """The engine would refuse part of the catalog; str() lists every finding."""

    def __init__(self, engine: str, problems: list[Incompatibility]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"the catalog does not fit the ComfyUI at {engine} ({len(problems)} problems):\n{lines}"
        )


@dataclass(frozen=True)
class InputSpec:
    """One node input from ``/object_info``, in a shape independent of the ComfyUI version."""

    kind: str  # "COMBO", "INT", "FLOAT", "STRING", "BOOLEAN" or a link type ("MODEL", ...)
    options: tuple[str, ...] | None
    minimum: float | None
    maximum: float | None
    required: bool


def input_specs(node_info: Mapping[str, Any]) -> dict[str, InputSpec]:
    """Every declared input of a node, old (``[[opts], {}]``) or new (``["COMBO", {}]``) combos."""
    out: dict[str, InputSpec] = {}
    inputs = node_info.get("input")
    if not isinstance(inputs, Mapping):
        return out
    for section in ("required", "optional"):
        group = inputs.get(section)
        if not isinstance(group, Mapping):
            continue
        for name, spec in group.items():
            if not isinstance(spec, list | tuple) or not spec:
                continue
            head = spec[0]
            conf = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
            options: tuple[str, ...] | None = None
            if isinstance(head, list | tuple):
                kind, options = "COMBO", tuple(str(o) for o in head)
            elif head == "COMBO":
                opts = conf.get("options")
                kind = "COMBO"
                options = tuple(str(o) for o in opts) if isinstance(opts, list | tuple) else ()
            else:
                kind = str(head)
            out[str(name)] = InputSpec(
                kind=kind,
                options=options,
                minimum=_num(conf.get("min")),
                maximum=_num(conf.get("max")),
                required=section == "required",
            )
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _shown(options: tuple[str, ...], limit: int = 8) -> str:
    if not options:
        return "none (the engine lists no options: is its folder empty?)"
    head = ", ".join(options[:limit])
    return head + (f", ... ({len(options)} in all)" if len(options) > limit else "")


def check_template(
    t: Template, graphs: TemplateGraphs, object_info: Mapping[str, Any]
) -> list[Incompatibility]:
    """What the engine described by `object_info` would refuse in template `t`.

    The graph is rendered with the params' examples, and once more for each value of every
    choice param, since what a choice stands for (a LoRA file, say) is fixed data of the graph.
    """
    label = f"{t.name}@{t.version}"
    bindings = graphs.bindings(t)
    variants = [example_params(t)]
    for name, p in t.params.items():
        for value in p.choices or {}:
            variants.append({**variants[0], name: value})
    problems: list[Incompatibility] = []
    for params in variants:
        graph = graphs.render(t, params).graph
        for found in _check_graph(label, t, graph, bindings, object_info):
            if found not in problems:
                problems.append(found)
    return problems


def _check_graph(
    label: str,
    t: Template,
    graph: Mapping[str, Any],
    bindings: Mapping[tuple[str, str], str],
    object_info: Mapping[str, Any],
) -> list[Incompatibility]:
    problems: list[Incompatibility] = []

    def refuse(node: str | None, ct: str | None, inp: str | None, msg: str) -> None:
        problems.append(Incompatibility(label, node, ct, inp, msg))

    for node_id, node in graph.items():
        ct = str(node["class_type"])
        info = object_info.get(ct)
        if not isinstance(info, Mapping):
            refuse(node_id, ct, None, f"node type {ct} is not installed in this ComfyUI")
            continue
        if info.get("api_node") and ct not in t.allow_api_nodes:
            refuse(
                node_id,
                ct,
                None,
                f"node type {ct} calls a paid outside service (api_node); list it in the "
                "template's allow_api_nodes to use it",
            )
        specs = input_specs(info)
        inputs: Mapping[str, Any] = node["inputs"]
        for name, spec in specs.items():
            if spec.required and name not in inputs:
                refuse(node_id, ct, name, "required input is missing")
        for name, value in inputs.items():
            spec_or_none = specs.get(name)
            if spec_or_none is None:
                refuse(node_id, ct, name, f"{ct} declares no input {name!r}")
                continue
            if _is_link(value):
                continue
            param_name = bindings.get((str(node_id), name))
            if param_name is not None:
                for m in _param_fits(param_name, t.params[param_name], spec_or_none):
                    refuse(node_id, ct, name, m)
            else:
                for m in _value_fits(value, spec_or_none):
                    refuse(node_id, ct, name, m)
    return problems


def _value_fits(value: Any, spec: InputSpec) -> list[str]:
    """Why ComfyUI would refuse a fixed value, if it would."""
    if spec.kind == "COMBO" and spec.options is not None:
        if str(value) not in spec.options:
            return [f"value {value!r} is not one of the engine's options: {_shown(spec.options)}"]
        return []
    if spec.kind in _NUMERIC and isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            return [f"value {value!r} is below the node's minimum {spec.minimum:g}"]
        if spec.maximum is not None and value > spec.maximum:
            return [f"value {value!r} is above the node's maximum {spec.maximum:g}"]
    return []


def _param_fits(name: str, p: Param, spec: InputSpec) -> list[str]:
    """Why some value the param admits would be refused by the node input it feeds."""
    if spec.kind == "COMBO" and spec.options is not None:
        if p.type == "image":
            return []  # the engine uploads the job's image under a fresh name first
        if p.type != "enum" or not p.values:
            return [
                f"param {name!r} ({p.type}) feeds a list input; declare it as an enum of the "
                f"engine's options: {_shown(spec.options)}"
            ]
        missing = [v for v in p.values if v not in spec.options]
        if missing:
            return [
                f"param {name!r} allows {', '.join(map(repr, missing))}, which the engine "
                f"does not offer (it offers: {_shown(spec.options)})"
            ]
        return []
    if spec.kind in _NUMERIC and p.type in ("integer", "number"):
        out = []
        if spec.minimum is not None and (p.minimum is None or p.minimum < spec.minimum):
            out.append(
                f"param {name!r} admits values below the node's minimum {spec.minimum:g} "
                f"(its minimum: {p.minimum if p.minimum is not None else 'none'})"
            )
        if spec.maximum is not None and (p.maximum is None or p.maximum > spec.maximum):
            out.append(
                f"param {name!r} admits values above the node's maximum {spec.maximum:g} "
                f"(its maximum: {p.maximum if p.maximum is not None else 'none'})"
            )
        return out
    return []


def check_catalog(
    catalog: Catalog, graphs: TemplateGraphs, object_info: Mapping[str, Any]
) -> list[Incompatibility]:
    """Every incompatibility of every template with the engine."""
    out: list[Incompatibility] = []
    for t in catalog.templates:
        out += check_template(t, graphs, object_info)
    return out
