"""The catalog: GPU classes and templates, parsed by strict models from `catalog.yaml`."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_RE = r"^[a-z][a-z0-9_]{0,39}$"
SEMVER_RE = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$"
MODEL_FOLDERS = (
    "checkpoints",
    "vae",
    "loras",
    "upscale_models",
    "embeddings",
    "clip",
    "controlnet",
)


class CatalogError(Exception):
    """A catalog that cannot be served; the message names file, template and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuClass(_Strict):
    """A kind of GPU container jobs run on, with its price."""

    gpu: str = Field(description="Modal GPU type, e.g. `L4`, `A10G`, `H100`; `cpu` for none.")
    fallbacks: list[str] = Field(
        default_factory=list, description="GPU types tried in order when `gpu` is unavailable."
    )
    usd_per_second: Decimal = Field(ge=0, description="Price of one second of this GPU class.")
    cpu_usd_per_core_second: Decimal = Field(
        default=Decimal(0), ge=0, description="Optional CPU rate per reserved core-second."
    )
    memory_usd_per_gib_second: Decimal = Field(
        default=Decimal(0), ge=0, description="Optional memory rate per reserved GiB-second."
    )
    cpu_cores: Decimal = Field(
        default=Decimal(0), ge=0, description="CPU cores reserved per container (CPU rate)."
    )
    memory_gib: Decimal = Field(
        default=Decimal(0), ge=0, description="Memory reserved per container, GiB (memory rate)."
    )
    max_containers: int = Field(default=2, ge=1, le=100, description="Upper bound on containers.")
    scaledown_window_s: int = Field(
        default=60, ge=2, le=1200, description="Idle seconds before a container is stopped."
    )
    gpu_snapshot: bool = Field(
        default=False, description="Use Modal's alpha GPU memory snapshot (off by default)."
    )


class ModelFile(_Strict):
    """A weights file a template needs, pinned by sha256."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="File name inside the folder.")
    folder: Literal[
        "checkpoints", "vae", "loras", "upscale_models", "embeddings", "clip", "controlnet"
    ] = Field(description="ComfyUI model folder.")
    url: str = Field(pattern=r"^https://", description="Where `stencil models fetch` downloads it.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Expected sha256 of the file.")
    synth: Literal["sd15", "lora_sd15", "esrgan"] | None = Field(
        default=None,
        description="Architecture `stencil models synth` can generate with random weights: "
        "`sd15` (checkpoint), `lora_sd15` (LoRA for it), `esrgan` (2x upscale model).",
    )


class ScaledOutput(_Strict):
    """Declares that the output is an image param scaled by a number param."""

    image: str = Field(description="The image param.")
    factor: str = Field(description="The number param both sides are multiplied by.")


class Limits(_Strict):
    """Per-template limits enforced by the supervisor and at submit time."""

    max_queue_seconds: int = Field(
        default=600, ge=1, le=86400, description="A queued job waiting longer fails."
    )
    max_run_seconds: int = Field(
        default=300, ge=1, le=86400, description="A running job running longer is stopped."
    )
    max_outputs: int = Field(default=4, ge=1, le=64, description="Most output files per job.")
    max_output_pixels: int = Field(
        default=16_777_216, ge=1, description="Most pixels of one output image."
    )
    scaled_output: ScaledOutput | None = Field(
        default=None, description="Lets submit refuse an output over max_output_pixels."
    )


class Batching(_Strict):
    """Whether jobs of this template may share one ComfyUI prompt, and on what terms."""

    enabled: bool = Field(
        default=False, description="Batch this template's jobs (see `STENCIL_BATCHING`)."
    )
    key: list[Annotated[str, Field(pattern=NAME_RE)]] = Field(
        description="Params that must be equal for jobs to share a batch: every param that "
        "shapes the graph (width, height, steps, cfg, sampler, scheduler, model or style). "
        "`stencil catalog check` refuses a key that leaves one out.",
    )
    max_jobs: int = Field(
        default=8, ge=2, description="Most jobs in one batch (at most the engine's limit, 16)."
    )
    max_wait_ms: int = Field(
        default=100,
        ge=0,
        le=10_000,
        description="Longest a claimed job waits for company before its batch starts.",
    )
    gpu_classes: list[Annotated[str, Field(pattern=NAME_RE)]] | None = Field(
        default=None,
        description="GPU classes the template is batched on; default: every class it runs on.",
    )

    def on(self, gpu_class: str) -> bool:
        """Whether the declaration turns batching on for this GPU class."""
        return self.enabled and (self.gpu_classes is None or gpu_class in self.gpu_classes)


# Fields every request model carries besides the template's params.
RESERVED_PARAMS = frozenset({"webhook_url", "output_format", "quality"})

ParamType = Literal["integer", "number", "string", "boolean", "enum", "image"]


class Param(_Strict):
    """A typed input of a template, bound into the graph by name."""

    type: ParamType
    description: str = Field(min_length=1)
    example: Any = None
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: float | None = Field(default=None, gt=0)
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    values: list[str] | None = Field(default=None, description="Allowed values of an enum.")
    random_if_absent: bool = Field(
        default=False, description="An absent integer gets a random value, returned on the job."
    )
    max_bytes: int | None = Field(default=None, ge=1, description="Image: byte cap.")
    max_pixels: int | None = Field(default=None, ge=1, description="Image: pixel cap.")
    formats: list[Literal["PNG", "JPEG", "WEBP"]] | None = None
    choices: dict[str, dict[str, str | int | float | bool]] | None = Field(
        default=None,
        description="Enum only: the fixed values each choice stands for, the same keys for "
        "every choice, rendered as `choices.<param>.<key>` (for example a vetted LoRA file "
        "and its strength per style).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Param:
        t = self.type
        numeric = t in ("integer", "number")
        if not numeric and any(
            v is not None for v in (self.minimum, self.maximum, self.multiple_of)
        ):
            raise ValueError("minimum/maximum/multiple_of apply only to integer and number")
        if t != "string" and (self.max_length is not None or self.min_length is not None):
            raise ValueError("min_length/max_length apply only to string")
        if t == "string" and self.max_length is None:
            raise ValueError("a string param needs max_length")
        if t == "enum" and not self.values:
            raise ValueError("an enum param needs values")
        if t != "enum" and self.values is not None:
            raise ValueError("values apply only to enum")
        if t != "image" and any(v is not None for v in (self.max_bytes, self.max_pixels)):
            raise ValueError("max_bytes/max_pixels apply only to image")
        if self.random_if_absent and t != "integer":
            raise ValueError("random_if_absent applies only to integer")
        if self.required and self.default is not None:
            raise ValueError("a required param cannot have a default")
        if self.example is None:
            raise ValueError("every param needs an example")
        if numeric and self.minimum is not None and self.maximum is not None:
            if self.minimum > self.maximum:
                raise ValueError("minimum is above maximum")
        if t == "enum" and self.default is not None and self.default not in (self.values or []):
            raise ValueError(f"default {self.default!r} is not one of values")
        if self.choices is not None:
            if t != "enum":
                raise ValueError("choices apply only to enum")
            if set(self.choices) != set(self.values or []):
                raise ValueError("choices must list exactly the enum's values")
            shapes = {tuple(sorted(c)) for c in self.choices.values()}
            if len(shapes) != 1 or not next(iter(shapes)):
                raise ValueError("every choice must set the same, non-empty keys")
        return self


class Template(_Strict):
    """One versioned product endpoint: a graph file plus its typed params."""

    name: str = Field(pattern=NAME_RE)
    version: str = Field(pattern=SEMVER_RE)
    summary: str = Field(min_length=1, max_length=120)
    description: str = Field(min_length=1)
    graph: str = Field(description="Path of the Jinja2 graph file, relative to the catalog.")
    gpu_class: str
    models: list[ModelFile] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    node_allowlist: list[str] | None = Field(
        default=None, description="Node types allowed; default: those in the graph file."
    )
    allow_api_nodes: list[str] = Field(
        default_factory=list,
        description="Node types that call a paid outside service (ComfyUI marks them "
        "`api_node`) which this template may use; every other such node is refused.",
    )
    params: dict[Annotated[str, Field(pattern=NAME_RE)], Param]
    deprecated: date | None = Field(
        default=None,
        description="The day this major version was deprecated: its route then answers with "
        "`Deprecation` (RFC 9745) and, with `sunset`, `Sunset` (RFC 8594) headers, and the "
        "OpenAPI document and the SDKs mark it deprecated.",
    )
    sunset: date | None = Field(
        default=None,
        description="The day this deprecated version stops being served (needs `deprecated`).",
    )
    batching: Batching | None = Field(
        default=None,
        description="Cross-request micro-batching: same-shape jobs of several callers run as "
        "one ComfyUI prompt (docs/batching.md).",
    )

    @model_validator(mode="after")
    def _lifecycle(self) -> Template:
        if self.sunset is not None and self.deprecated is None:
            raise ValueError("sunset needs deprecated (the day the version was deprecated)")
        if self.sunset is not None and self.deprecated is not None:
            if self.sunset < self.deprecated:
                raise ValueError("sunset is before deprecated")
        return self

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, v: dict[str, Param]) -> dict[str, Param]:
        for name in v:
            if name in RESERVED_PARAMS:
                raise ValueError(f"param name {name!r} is reserved for every request")
        return v

    @property
    def major(self) -> int:
        """The major version: the `v{major}` in the route."""
        return int(self.version.split(".")[0])

    @property
    def image_params(self) -> list[str]:
        """Names of the params that carry images."""
        return [k for k, p in self.params.items() if p.type == "image"]


class Catalog(_Strict):
    """The whole catalog file."""

    gpu_classes: dict[Annotated[str, Field(pattern=NAME_RE)], GpuClass]
    templates: list[Template]
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("templates")
    @classmethod
    def _unique(cls, v: list[Template]) -> list[Template]:
        seen: set[tuple[str, int]] = set()
        for t in v:
            key = (t.name, t.major)
            if key in seen:
                raise ValueError(f"template {t.name} v{t.major} is listed twice")
            seen.add(key)
        return v

    @model_validator(mode="after")
    def _refs(self) -> Catalog:
        files: dict[tuple[str, str], ModelFile] = {}
        for i, t in enumerate(self.templates):
            for m in t.models:
                # One file on disk serves every template naming it: they must agree on it.
                seen = files.setdefault((m.folder, m.name), m)
                if (seen.sha256, seen.url) != (m.sha256, m.url):
                    raise ValueError(
                        f"templates[{i}] ({t.name}): model {m.folder}/{m.name} is listed with "
                        "another sha256 or url by an earlier template; one file, one entry"
                    )
            so = t.limits.scaled_output
            if so is not None and (
                t.params.get(so.image) is None
                or t.params[so.image].type != "image"
                or t.params.get(so.factor) is None
                or t.params[so.factor].type not in ("integer", "number")
            ):
                raise ValueError(
                    f"templates[{i}] ({t.name}): limits.scaled_output must name an image "
                    "param and a number param"
                )
            b = t.batching
            if b is not None:
                from engine.runners.batching import MAX_JOBS

                unknown = [k for k in b.key if k not in t.params]
                if unknown:
                    raise ValueError(
                        f"templates[{i}] ({t.name}): batching.key names unknown params: "
                        + ", ".join(unknown)
                    )
                if b.max_jobs > MAX_JOBS:
                    raise ValueError(
                        f"templates[{i}] ({t.name}): batching.max_jobs {b.max_jobs} is above "
                        f"the {MAX_JOBS} jobs one batched prompt can carry"
                    )
                bad = [g for g in b.gpu_classes or [] if g not in self.gpu_classes]
                if bad:
                    raise ValueError(
                        f"templates[{i}] ({t.name}): batching.gpu_classes names unknown "
                        f"classes: {', '.join(bad)}"
                    )
            if t.gpu_class not in self.gpu_classes:
                raise ValueError(
                    f"templates[{i}] ({t.name}): gpu_class {t.gpu_class!r} is not defined "
                    f"(known: {', '.join(sorted(self.gpu_classes))})"
                )
        return self

    def successor(self, t: Template) -> Template | None:
        """The newest major version of the same template above `t`, if any."""
        newer = self.get(t.name)
        return newer if newer is not None and newer.major > t.major else None

    def get(self, name: str, major: int | None = None) -> Template | None:
        """The template by name (newest major unless one is given)."""
        found = [
            t for t in self.templates if t.name == name and (major is None or t.major == major)
        ]
        return max(found, key=lambda t: t.major) if found else None

    def graph_path(self, t: Template) -> Path:
        """Absolute path of a template's graph file."""
        return (self.base_dir / t.graph).resolve()

    def all_models(self) -> list[ModelFile]:
        """Every model file any template needs, once each."""
        out: dict[tuple[str, str], ModelFile] = {}
        for t in self.templates:
            for m in t.models:
                out.setdefault((m.folder, m.name), m)
        return list(out.values())


def _loc(cat: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    if len(loc) >= 2 and loc[0] == "templates" and isinstance(loc[1], int):
        try:
            name = cat["templates"][loc[1]].get("name", "?")
        except (KeyError, IndexError, AttributeError, TypeError):
            name = "?"
        parts.append(f"template {name!r} (templates[{loc[1]}])")
        rest = loc[2:]
    else:
        rest = loc
    if rest:
        parts.append("field " + ".".join(str(x) for x in rest))
    return ", ".join(parts) or "top level"


def parse_catalog(data: Any, source: str, base_dir: Path) -> Catalog:
    """Validate catalog data; raise CatalogError naming the file, template and field."""
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: the catalog must be a mapping")
    try:
        cat = Catalog.model_validate({**data, "base_dir": base_dir})
    except ValidationError as e:
        lines = [f"{source}: invalid catalog"]
        for err in e.errors():
            lines.append(f"  - {_loc(data, tuple(err['loc']))}: {err['msg']}")
        raise CatalogError("\n".join(lines)) from None
    for t in cat.templates:
        path = cat.graph_path(t)
        if not path.is_file():
            raise CatalogError(
                f"{source}: template {t.name!r}, field graph: file {t.graph} does not exist"
            )
    from engine.catalog.batchable import check_batching
    from engine.catalog.render import check_template  # late: render imports this module

    for t in cat.templates:
        check_template(cat, t, source)
        check_batching(cat, t, source)
    return cat


def load_catalog(path: Path | str) -> Catalog:
    """Load and fully check a catalog file (graphs render and pass the graph checks)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise CatalogError(f"{p}: cannot read the catalog: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CatalogError(f"{p}: not valid YAML: {e}") from None
    return parse_catalog(data, str(p), p.parent.resolve())


def catalog_json_schema() -> dict[str, Any]:
    """The JSON Schema of catalog.yaml, for editors."""
    schema = Catalog.model_json_schema()
    schema["properties"].pop("base_dir", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Stencil catalog"
    return schema
