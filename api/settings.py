"""Every setting, from the environment or `.env`. `.env.example` documents each one."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """Settings that are unsafe or inconsistent; the process refuses to start."""


class Settings(BaseSettings):
    """Stencil's configuration. Defaults are the embedded, one-machine setup."""

    model_config = SettingsConfigDict(
        env_prefix="STENCIL_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["local", "production"] = Field(
        default="local", description="`production` refuses unsafe defaults."
    )
    home: Path = Field(default=Path(".stencil"), description="Folder for local state.")
    catalog: Path = Field(default=Path("catalog.yaml"), description="The catalog file.")
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty: a SQLite file in the home folder."
    )
    host: str = Field(default="127.0.0.1", description="Address `stencil serve` binds.")
    port: int = Field(default=8000, description="Port `stencil serve` binds.")
    public_base_url: str = Field(
        default="",
        description=(
            "Base of local file URLs (`https://api.example.com`); required in production. "
            "Empty: the request's own base URL, from a Host header in STENCIL_TRUSTED_HOSTS."
        ),
    )
    trusted_hosts: str = Field(
        default="",
        description=(
            "Host names (comma-separated) a request's Host header may carry; others are a 400. "
            "Empty: with STENCIL_PUBLIC_BASE_URL set, any; without it, localhost, 127.0.0.1, "
            "::1 and STENCIL_HOST."
        ),
    )

    runner: Literal["local", "modal"] = Field(default="local", description="Where jobs run.")
    worker_concurrency: int = Field(default=1, ge=1, le=32, description="Local worker loops.")
    batching: Literal["off", "auto", "force"] = Field(
        default="auto",
        description="Cross-request micro-batching (docs/batching.md): `auto` batches a template "
        "on the GPU classes its catalog entry enables it for, never on the local CPU runner; "
        "`force` batches every template that declares batching, on any runner; `off` never.",
    )
    heartbeat_timeout_s: float = Field(
        default=30.0, gt=0, description="A running job with no heartbeat this long is recovered."
    )
    supervise_interval_s: float = Field(default=5.0, gt=0, description="Supervisor period.")

    comfyui_url: str = Field(
        default="", description="Use this running ComfyUI; empty: start a local subprocess."
    )
    comfyui_path: Path | None = Field(
        default=None, description="ComfyUI folder; default: `<home>/comfyui`."
    )
    comfyui_port: int = Field(default=0, description="Local ComfyUI port; 0 picks a free one.")
    comfyui_cpu: bool = Field(default=True, description="Run the local ComfyUI on the CPU.")
    models_dir: Path | None = Field(default=None, description="Models; default `<home>/models`.")

    storage: Literal["local", "s3"] = Field(default="local", description="Output storage.")
    url_signing_secret: str = Field(
        default="", description="HMAC key for local file URLs; empty: generated in the home."
    )
    url_ttl_s: int = Field(default=3600, ge=60, le=7 * 86400, description="Signed URL lifetime.")
    s3_bucket: str = Field(default="", description="Bucket for outputs when storage is s3.")
    s3_endpoint_url: str = Field(default="", description="S3 endpoint (R2: the account URL).")
    s3_region: str = Field(default="auto", description="S3 region (`auto` for R2).")
    s3_access_key_id: str = Field(default="", description="S3 access key id.")
    s3_secret_access_key: str = Field(default="", description="S3 secret access key.")

    active_job_quota: int = Field(
        default=5, ge=1, description="Queued plus running jobs a tenant may have at once."
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413)."
    )
    metrics_token: str = Field(
        default="", description="Bearer token `/metrics` requires; empty: open (scrape privately)."
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    streams_per_key: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="Server-Sent Event streams one API key may hold open at once, per API "
        "process (429 past it).",
    )

    modal_warmup: bool = Field(
        default=False,
        description="Deploy: run each template's example before the Modal memory snapshot.",
    )
    modal_requires_proxy_auth: bool = Field(
        default=False, description="Deploy: require Modal proxy auth on the API."
    )

    url_allow_http: bool = Field(
        default=False, description="Also accept `http://` image and webhook URLs (else https only)."
    )
    url_ports: str = Field(
        default="80,443", description="Ports image and webhook URLs may name (comma-separated)."
    )
    url_allow: str = Field(
        default="",
        description=(
            "ADDRESS:PORT entries (comma-separated) the URL guard admits although not public; "
            "for tests and known internal services only. Empty: public addresses only."
        ),
    )
    url_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="URL fetch and webhook: connect timeout."
    )
    url_read_timeout_s: float = Field(
        default=10.0, gt=0, description="URL fetch: timeout between bytes read."
    )
    url_total_timeout_s: float = Field(
        default=30.0, gt=0, description="URL fetch: limit for the whole fetch, redirects included."
    )
    url_max_redirects: int = Field(
        default=3, ge=0, le=5, description="URL fetch: redirects followed, each re-validated."
    )

    webhook_dispatch: bool = Field(
        default=True, description="Run the webhook dispatcher in this API process."
    )
    webhook_concurrency: int = Field(
        default=8, ge=1, le=256, description="Webhook deliveries in flight per process."
    )
    webhook_per_host_concurrency: int = Field(
        default=2, ge=1, description="Deliveries in flight to one receiver (host and port)."
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="Limit for one delivery attempt, connect to response."
    )
    webhook_poll_interval_s: float = Field(
        default=1.0, gt=0, description="How often the dispatcher looks for due deliveries."
    )
    webhook_backoff_base_s: float = Field(
        default=5.0, gt=0, description="First retry delay; doubles per attempt, with jitter."
    )
    webhook_backoff_max_s: float = Field(
        default=3600.0, gt=0, description="Longest delay between two attempts."
    )
    webhook_retry_window_s: float = Field(
        default=86400.0, gt=0, description="How long a delivery is retried before it is failed."
    )
    webhook_secret_overlap_s: float = Field(
        default=86400.0, ge=0, description="How long a rotated-out signing secret still signs."
    )

    idempotency_ttl_s: int = Field(
        default=86400, ge=60, description="How long an Idempotency-Key is remembered."
    )
    redis_url: str = Field(
        default="",
        description="Redis (`redis://...`) for rate limits shared by every API process and for "
        "change events between processes; empty: rate limits in each process's memory, events "
        "through PostgreSQL LISTEN/NOTIFY (or within the one process on SQLite).",
    )
    stream_url_ttl_s: int = Field(
        default=900,
        ge=30,
        le=86400,
        description="How long the signed `events_url` of a job (for a browser's EventSource) "
        "stays valid.",
    )
    key_cache_ttl_s: float = Field(
        default=30.0,
        ge=0.0,
        le=600.0,
        description="How long a resolved API key is kept in each process; a revocation drops it "
        "at once through the change feed.",
    )
    rate_limit_write: str = Field(
        default="60/minute",
        description="Default POST rate limit per API key (`N/minute`, `N/hour`, ...).",
    )
    rate_limit_read: str = Field(
        default="1200/minute", description="Default rate limit per API key for other requests."
    )

    @field_validator("comfyui_path", "models_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("rate_limit_write", "rate_limit_read")
    @classmethod
    def _rate(cls, v: str) -> str:
        from limits import parse_many

        parse_many(v)  # raises ValueError on a malformed limit
        return v

    @field_validator("url_ports")
    @classmethod
    def _ports(cls, v: str) -> str:
        from engine.intake.fetch import parse_ports

        parse_ports(v)
        return v

    @field_validator("url_allow")
    @classmethod
    def _allow(cls, v: str) -> str:
        from engine.intake.fetch import parse_allow

        parse_allow(v)
        return v

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not v:
            return v
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"{v!r}: expected an http(s) URL with a host and no query")
        return v

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if self.env == "production":
            problems = []
            if not self.database_url or self.database_url.startswith("sqlite"):
                problems.append("STENCIL_DATABASE_URL must name a PostgreSQL database")
            if self.storage == "local":
                problems.append("STENCIL_STORAGE must be s3")
            if self.storage == "s3" and not self.s3_bucket:
                problems.append("STENCIL_S3_BUCKET is required")
            if problems:
                raise SettingsError("unsafe production settings: " + "; ".join(problems))
        if self.storage == "s3" and not self.s3_bucket:
            raise SettingsError("STENCIL_S3_BUCKET is required when STENCIL_STORAGE=s3")
        return self

    def require_api_safe(self) -> None:
        """What serving the API in production needs on top of `_safe` (the GPU workers and the
        CLI share these settings but build no URLs): a fixed public base URL, so no request
        header ever chooses where output links point."""
        if self.env == "production" and not self.public_base_url:
            raise SettingsError(
                "unsafe production settings: STENCIL_PUBLIC_BASE_URL is required to serve the API"
            )

    @cached_property
    def trusted_host_names(self) -> frozenset[str] | None:
        """The Host header values requests may carry; None: any (URLs do not depend on it)."""
        names = {h.strip().lower().strip("[]") for h in self.trusted_hosts.split(",") if h.strip()}
        if names:
            return frozenset(names)
        if self.public_base_url:
            return None
        names = {"localhost", "127.0.0.1", "::1"}
        if self.host not in ("", "0.0.0.0", "::"):  # noqa: S104 - a bind address, compared
            names.add(self.host.lower().strip("[]"))
        return frozenset(names)

    @cached_property
    def db_url(self) -> str:
        """The database URL, defaulting to SQLite in the home folder."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return url
        return f"sqlite:///{(self.home / 'stencil.db').resolve()}"

    @cached_property
    def comfyui_dir(self) -> Path:
        """Where the local ComfyUI lives."""
        return (self.comfyui_path or self.home / "comfyui").resolve()

    @cached_property
    def models_path(self) -> Path:
        """Where model files live."""
        return (self.models_dir or self.home / "models").resolve()

    def signing_secret(self) -> bytes:
        """The URL signing key; generated once into the home folder for local use."""
        return self.url_signing_key

    @cached_property
    def url_signing_key(self) -> bytes:
        """`signing_secret`, read once (every job view signs with it: a read of the file per
        request cost more than the signing)."""
        if self.url_signing_secret:
            return self.url_signing_secret.encode()
        path = self.home / "url-signing.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()
