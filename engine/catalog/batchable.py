"""`stencil catalog check` for a batching declaration: can the engine honour it?

The declaration is tried the way the engine would use it: the template is rendered with its
examples, then with each param outside the key changed in turn. A param outside the key must
leave the batch key (engine.runners.batching.batch_key) as it is, or two jobs the runner
groups would not fit one prompt; every value of an enum inside the key (the sampler, say) must
give a graph `build_batch` accepts; and the renders together must build one batched prompt.
"""

from __future__ import annotations

from typing import Any

from engine.catalog.catalog import Catalog, CatalogError, Param, Template
from engine.catalog.render import GraphError, choice_values, example_params, render_source


def _other(p: Param, value: Any) -> Any:
    """A valid value of `p` other than `value`; None when there is none."""
    if p.type == "enum":
        return next((v for v in p.values or [] if v != value), None)
    if p.type == "boolean":
        return not value
    if p.type == "string":
        text = "a different prompt" if value != "a different prompt" else "another one"
        return text[: p.max_length] if p.max_length else text
    if p.type in ("integer", "number"):
        for cand in (p.minimum, p.maximum, (value or 0) + (p.multiple_of or 1)):
            if cand is not None and cand != value:
                return int(cand) if p.type == "integer" else float(cand)
    return None


def check_batching(catalog: Catalog, t: Template, source: str) -> None:
    """Raise CatalogError when `t` declares batching the engine cannot carry out."""
    from engine.runners.batching import BatchRefused, batch_key, build_batch

    b = t.batching
    if b is None:
        return
    where = f"{source}: template {t.name!r}, field batching"
    text = catalog.graph_path(t).read_text()

    def render(params: dict[str, Any]) -> dict[str, Any]:
        try:
            return render_source(text, params, choice_values(t, params))
        except GraphError as e:  # pragma: no cover - check_template rendered it already
            raise CatalogError(f"{where}: {e}") from None

    base_params = example_params(t)
    base = render(base_params)
    try:
        key = batch_key(base)
    except BatchRefused as e:
        raise CatalogError(f"{where}: the graph cannot be batched: {e}") from None
    varied = dict(base_params)
    for name, p in t.params.items():
        if name in b.key or p.type == "image":
            continue
        value = _other(p, base_params[name])
        if value is None:
            continue
        graph = render({**base_params, name: value})
        if batch_key(graph) != key:
            raise CatalogError(
                f"{where}: param {name!r} changes the graph's shape, not only a job's prompt, "
                "seed or image count; add it to batching.key"
            )
        varied[name] = value
    try:
        build_batch([("example", base), ("varied", render(varied))])
    except BatchRefused as e:
        raise CatalogError(f"{where}: the engine cannot batch this graph: {e}") from None
    for name in b.key:
        p = t.params[name]
        for value in p.values or [] if p.type == "enum" else []:
            try:
                build_batch([("example", render({**base_params, name: value}))])
            except BatchRefused as e:
                raise CatalogError(
                    f"{where}: with {name}={value!r} the engine cannot batch the graph: {e}; "
                    f"drop the value or the declaration"
                ) from None
