"""`stencil templates`: import a ComfyUI workflow as a template; render one for review."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from api.settings import Settings
from engine.catalog.catalog import CatalogError, load_catalog, parse_catalog

templates_app = typer.Typer(help="Templates: import from ComfyUI, render.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


async def _read_object_info(settings: Settings, engine: str | None) -> dict[str, Any]:
    """`/object_info` of the engine at `engine`, else of a local ComfyUI started for it."""
    from api.services import local_comfy
    from engine.comfy import ComfyClient
    from engine.comfy.process import ComfyProcess

    proc: ComfyProcess | None = None
    url = engine or settings.comfyui_url
    if not url:
        proc = local_comfy(settings)
        await proc.start()
        await proc.wait_ready(timeout=120)
        url = proc.base_url
    try:
        async with ComfyClient(url) as comfy:
            return await comfy.object_info()
    finally:
        if proc is not None:
            await proc.stop()


def _pairs(items: list[str], option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"[red]error[/red] {option} {item!r}: write it as NAME=VALUE")
            raise typer.Exit(2)
        found[key] = value
    return found


@templates_app.command("import")
def templates_import(
    workflow: Annotated[Path, typer.Argument(help="A workflow exported as 'Save (API Format)'.")],
    name: Annotated[str, typer.Option(help="The template's name: the route /vMAJOR/NAME.")],
    version: Annotated[
        str, typer.Option(help="Its version; a new major of an existing name is a new route.")
    ] = "1.0.0",
    param: Annotated[
        list[str] | None,
        typer.Option(help="NAME=NODE.INPUT: make that node input a public param (repeat)."),
    ] = None,
    describe: Annotated[
        list[str] | None, typer.Option(help="NAME=TEXT: the param's description (repeat).")
    ] = None,
    required: Annotated[
        list[str] | None, typer.Option(help="A param the request must give (repeat).")
    ] = None,
    values: Annotated[
        list[str] | None,
        typer.Option(help="NAME=a,b,c: offer only these of the node's options (repeat)."),
    ] = None,
    range_: Annotated[
        list[str] | None,
        typer.Option("--range", help="NAME=LOW..HIGH: a narrower range than the node's."),
    ] = None,
    summary: Annotated[str | None, typer.Option(help="One line for the API reference.")] = None,
    gpu_class: Annotated[
        str | None, typer.Option(help="The catalog GPU class (default: the first).")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="FILE=https://...: where a model the catalog lacks is downloaded."),
    ] = None,
    allow_api_node: Annotated[
        list[str] | None, typer.Option(help="A paid-service (api_node) type to allow.")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="A running ComfyUI's URL (default: start the local one)."),
    ] = None,
    catalog: Annotated[Path | None, typer.Option(help="The catalog file to add to.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print what would be written.")] = False,
) -> None:
    """Write templates/NAME/v1.json.j2 and a catalog entry from an exported workflow."""
    from engine.catalog.compat import check_template
    from engine.catalog.importer import (
        REVIEW,
        ImportRefused,
        ParamBinding,
        append_entry,
        import_workflow,
        load_workflow,
    )
    from engine.catalog.render import TemplateGraphs

    settings = Settings()
    cat_path = (catalog or settings.catalog).resolve()
    try:
        cat = load_catalog(cat_path)
        flow = load_workflow(workflow.read_text(), str(workflow))
        bindings = [ParamBinding.parse(p) for p in param or []]
        descriptions = _pairs(describe or [], "--describe")
        object_info = asyncio.run(_read_object_info(settings, engine))
        if sys.stdin.isatty() and not dry_run:
            for b in bindings:
                if b.name not in descriptions:
                    text = typer.prompt(f"Describe {b.name} ({b.node}.{b.input}), or leave", "")
                    if text.strip():
                        descriptions[b.name] = text.strip()
        result = import_workflow(
            flow,
            object_info,
            name=name,
            version=version,
            bindings=bindings,
            descriptions=descriptions,
            required=frozenset(required or []),
            summary=summary,
            gpu_class=gpu_class or next(iter(cat.gpu_classes)),
            catalog=cat,
            model_urls=_pairs(model or [], "--model"),
            models_dir=settings.models_path,
            allow_api_nodes=frozenset(allow_api_node or []),
            values=_pairs(values or [], "--values"),
            ranges=_pairs(range_ or [], "--range"),
        )
    except (ImportRefused, CatalogError, OSError) as e:
        err.print(f"[red]refused[/red] {e}")
        raise typer.Exit(2) from None
    graph_path = cat_path.parent / result.entry["graph"]
    if graph_path.exists():
        err.print(f"[red]refused[/red] {graph_path} exists already")
        raise typer.Exit(2)
    new_text = append_entry(cat_path.read_text(), result.entry)
    # Check the result as the service will: parse, render, and fit the engine, before writing.
    graph_path.parent.mkdir(parents=True, exist_ok=True)
    graph_path.write_text(result.source)
    try:
        import yaml

        checked = parse_catalog(yaml.safe_load(new_text), str(cat_path), cat_path.parent)
        t = checked.get(name, int(version.split(".")[0]))
        assert t is not None
        problems = check_template(t, TemplateGraphs(checked), object_info)
    except CatalogError as e:
        graph_path.unlink()
        err.print(f"[red]refused[/red] the imported template does not pass the catalog check: {e}")
        raise typer.Exit(1) from None
    if problems or dry_run:
        graph_path.unlink()
        if not any(graph_path.parent.iterdir()):
            graph_path.parent.rmdir()
    if problems:
        for p in problems:
            err.print(f"[red]refused[/red] {p}")
        raise typer.Exit(1)
    if dry_run:
        out.print(result.source, markup=False, highlight=False)
        out.print(new_text[len(cat_path.read_text()) :], markup=False, highlight=False)
        return
    cat_path.write_text(new_text)
    route = f"/v{version.split('.')[0]}/{name}"
    out.print(f"wrote {graph_path.relative_to(cat_path.parent)} and {route} in {cat_path.name}")
    for m in result.reused_models:
        out.print(f"  model {m}: already in the catalog, shared")
    if result.review:
        out.print(
            f"review before shipping: {', '.join(result.review)} (marked {REVIEW!r}); then "
            f"`stencil templates render {name} --params '{{...}}'`, `stencil catalog check`, "
            "`make openapi`"
        )


@templates_app.command("render")
def templates_render(
    name: Annotated[str, typer.Argument(help="The template's name.")],
    params: Annotated[str, typer.Option(help="The request body, as JSON.")] = "{}",
    major: Annotated[int | None, typer.Option(help="The major version (default: newest).")] = None,
) -> None:
    """Print the graph a request would produce, after the validation a request gets."""
    from engine.catalog.params import build_request_model, resolve_params, validate_params
    from engine.catalog.render import GraphError, TemplateGraphs
    from engine.errors import InvalidParams

    settings = Settings()
    try:
        cat = load_catalog(settings.catalog)
    except CatalogError as e:
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(2) from None
    t = cat.get(name, major)
    if t is None:
        err.print(f"[red]error[/red] no template {name!r}" + (f" v{major}" if major else ""))
        raise typer.Exit(2)
    try:
        body = json.loads(params)
    except ValueError as e:
        err.print(f"[red]error[/red] --params is not JSON: {e}")
        raise typer.Exit(2) from None
    try:
        values = validate_params(build_request_model(t), body, strict=True)
    except InvalidParams as e:
        for item in e.errors:
            err.print(f"[red]invalid[/red] {item['field']}: {item['message']}")
        raise typer.Exit(1) from None
    values.pop("webhook_url", None)
    resolved = resolve_params(t, values)
    for image in t.image_params:  # stands for the uploaded file's name in ComfyUI's inputs
        if resolved.get(image) is not None:
            resolved[image] = f"{image}.png"
    try:
        rendered = TemplateGraphs(cat).render(t, resolved)
    except GraphError as e:
        err.print(f"[red]error[/red] the params do not render: {e}")
        raise typer.Exit(1) from None
    sys.stdout.write(json.dumps(rendered.graph, indent=2) + "\n")
    err.print(f"{t.name} {t.version}: graph sha256 {rendered.sha256}")
