"""Response models: what SDKs see. Every field is described; every closed set is a named enum."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from engine.errors import PROBLEM_BASE

# Every field is in every answer (a default only fills it): the document says so, and SDKs
# type such a field `str | None` rather than `str | None | Unset`.
ALWAYS_SENT = ConfigDict(json_schema_serialization_defaults_required=True)


class JobStatus(StrEnum):
    """Where a job is: queued, running, then one terminal state."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ProblemType(StrEnum):
    """Every kind of problem Stencil answers or records on a failed job, as its `type` URI.

    `tests/test_openapi.py` checks that the error hierarchy and the handlers add none but
    these, so the set is closed and SDKs can switch on it.
    """

    INVALID_REQUEST = PROBLEM_BASE + "invalid_request"
    VALIDATION_ERROR = PROBLEM_BASE + "validation_error"
    INVALID_MEDIA = PROBLEM_BASE + "invalid_media"
    IDEMPOTENCY_KEY_REUSED = PROBLEM_BASE + "idempotency_key_reused"
    UNAUTHORIZED = PROBLEM_BASE + "unauthorized"
    BUDGET_EXCEEDED = PROBLEM_BASE + "budget_exceeded"
    FORBIDDEN = PROBLEM_BASE + "forbidden"
    NOT_FOUND = PROBLEM_BASE + "not_found"
    METHOD_NOT_ALLOWED = PROBLEM_BASE + "method_not_allowed"
    CONFLICT = PROBLEM_BASE + "conflict"
    PAYLOAD_TOO_LARGE = PROBLEM_BASE + "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = PROBLEM_BASE + "unsupported_media_type"
    QUOTA_EXCEEDED = PROBLEM_BASE + "quota_exceeded"
    RATE_LIMITED = PROBLEM_BASE + "rate_limited"
    TOO_MANY_STREAMS = PROBLEM_BASE + "too_many_streams"
    UNTRUSTED_HOST = PROBLEM_BASE + "untrusted_host"
    HTTP_ERROR = PROBLEM_BASE + "http_error"
    INTERNAL_ERROR = PROBLEM_BASE + "internal_error"
    SERVICE_UNAVAILABLE = PROBLEM_BASE + "service_unavailable"
    JOB_FAILED = PROBLEM_BASE + "job_failed"
    COMFYUI_UNAVAILABLE = PROBLEM_BASE + "comfyui_unavailable"
    EXECUTION_FAILED = PROBLEM_BASE + "execution_failed"
    TIMEOUT = PROBLEM_BASE + "timeout"
    WORKER_LOST = PROBLEM_BASE + "worker_lost"

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        # URIs make poor identifiers: generators name the members after the kinds instead.
        target["x-enum-varnames"] = [m.name for m in cls]
        return schema


class FieldError(BaseModel):
    """One bad field of a request."""

    field: str = Field(
        description="The field by its public name: a param, `body`, a query parameter or a "
        "header (`Idempotency-Key`); nested fields are dotted."
    )
    message: str = Field(description="What is wrong with it.")
    type: str | None = Field(
        default=None, description="The validator's error kind (e.g. `greater_than`), if any."
    )


class Problem(BaseModel):
    """An RFC 9457 problem. Kinds may add members (`limit`, `budget_usd`, ...)."""

    model_config = ConfigDict(extra="allow")
    type: ProblemType = Field(description="A URI naming the kind of error; stable per kind.")
    title: str = Field(description="A short summary of the kind of error.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong this time.")
    instance: str | None = Field(default=None, description="The path that failed.")
    errors: list[FieldError] | None = Field(
        default=None, description="For validation errors: each bad field and why."
    )


class MediaInput(BaseModel):
    """A media input of a job as stored (never the bytes)."""

    sha256: str = Field(description="sha256 of the bytes, hex.")
    content_type: str = Field(description="MIME type, e.g. `image/png`.")
    width: int = Field(description="Width in pixels.")
    height: int = Field(description="Height in pixels.")
    bytes: int = Field(description="Size in bytes.")


class Output(BaseModel):
    """One output file of a job."""

    url: str = Field(description="Download URL, signed afresh on every read.")
    expires_at: datetime = Field(description="When this URL stops working; read the job again.")
    content_type: str = Field(description="MIME type, e.g. `image/png`.")
    width: int = Field(description="Width in pixels.")
    height: int = Field(description="Height in pixels.")
    bytes: int = Field(description="Size in bytes.")


class Timings(BaseModel):
    """How long the job waited and ran, in seconds."""

    queue_seconds: float | None = Field(description="From creation to start.")
    run_seconds: float | None = Field(description="From start to finish.")
    total_seconds: float | None = Field(description="From creation to finish.")


class Metering(BaseModel):
    """What the worker measured with its own monotonic clock (see docs/costs.md)."""

    queue_seconds: float = Field(description="From acceptance to a worker taking the job.")
    cold_start: bool = Field(description="Whether this job paid a cold start.")
    cold_start_seconds: float = Field(
        description="Container start or restore, engine restart and model load this job paid."
    )
    execution_seconds: float = Field(
        description="From ComfyUI starting the prompt to its end (cold model load included)."
    )
    upload_seconds: float = Field(description="Fetching and storing the outputs.")
    billable_seconds: float = Field(
        description="Container time the job held its GPU; what the job is priced on."
    )


class ChargedTo(StrEnum):
    """Who pays for a job."""

    TENANT = "tenant"
    PLATFORM = "platform"


class Cost(BaseModel):
    """What the job cost, priced when it finished at the rate then in force."""

    gpu_class: str = Field(description="The catalog GPU class the job was priced at.")
    gpu_type: str = Field(description="The GPU type it ran on.")
    billable_seconds: float = Field(description="Billable seconds (whole milliseconds).")
    usd: str = Field(description="USD charged to the tenant, six decimals (exact, a string).")
    rate: str = Field(description="USD per billable second used (GPU, CPU and memory).")
    charged_to: ChargedTo = Field(
        description="`platform` when the platform failed the job: the tenant pays nothing."
    )
    platform_usd: str = Field(
        description="USD the platform absorbed for this job (its failures, retried attempts)."
    )


class Batch(BaseModel):
    """The batched prompt a job ran in: same-shape jobs that shared one GPU pass."""

    id: str = Field(description="The batch id; jobs that ran together share it.")
    size: int = Field(
        ge=1, description="How many jobs the prompt carried; the billable seconds were split."
    )


class Job(BaseModel):
    """A job: one call of a template."""

    model_config = ALWAYS_SENT

    id: str = Field(description="The job id.")
    object: Literal["job"] = Field(default="job", description="Always `job`.")
    template: str = Field(description="Template name.")
    template_version: str = Field(description="Exact template version that ran.")
    status: JobStatus = Field(description="queued, running, succeeded, failed or cancelled.")
    progress: float = Field(description="0 to 1.")
    params: Any = Field(
        description="Params as run, including the seed used: the `{Template}V{major}Params` "
        "schema of the job's template version."
    )
    inputs: dict[str, MediaInput] = Field(
        description="Media inputs by param name, as stored: sha256, content type, size."
    )
    graph_hash: str = Field(description="sha256 of the rendered graph, for reproducibility.")
    comfyui_version: str | None = Field(description="The ComfyUI version that ran the job.")
    outputs: list[Output] = Field(description="Output files; present once succeeded.")
    error: Problem | None = Field(description="Why the job failed, as a problem.")
    created_at: datetime = Field(description="When the job was accepted.")
    started_at: datetime | None = Field(description="When a worker started it.")
    finished_at: datetime | None = Field(description="When it reached a terminal state.")
    timings: Timings = Field(description="Queue, run and total seconds.")
    metering: Metering | None = Field(
        description="Worker-measured seconds of the last attempt; present once it ran."
    )
    cost: Cost | None = Field(description="The priced charge; present once the job is settled.")
    batch: Batch | None = Field(
        default=None,
        description="The batch the job's last attempt ran in, when it shared its prompt "
        "with other jobs (docs/batching.md); null when it ran alone.",
    )
    webhook_url: str | None = Field(
        default=None, description="Where the signed terminal-state webhook goes, if anywhere."
    )
    events_url: str = Field(
        description="This job's Server-Sent Event stream with a signed `token`, for a browser's "
        "`EventSource` (which cannot send `Authorization`); valid for this job only, for "
        "`STENCIL_STREAM_URL_TTL_S` seconds from this response."
    )


class JobList(BaseModel):
    """A page of jobs, newest first."""

    data: list[Job] = Field(description="The jobs on this page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class Estimate(BaseModel):
    """p50/p95 cost and run time measured over a template's recent succeeded jobs."""

    sample_size: int = Field(description="How many recent succeeded jobs were measured.")
    note: str = Field(description="`no data yet`, or what the figures were measured from.")
    usd_p50: str | None = Field(description="Median cost per job, USD.")
    usd_p95: str | None = Field(description="95th percentile cost per job, USD.")
    run_seconds_p50: float | None = Field(description="Median run time (worker span), s.")
    run_seconds_p95: float | None = Field(description="95th percentile run time, s.")


def _absent_if_none(v: object) -> bool:
    return v is None


def _absent_not_null(schema: dict[str, Any]) -> None:
    """For a field left out when None: the schema says its type, not `T | null`."""
    any_of = schema.pop("anyOf")
    schema.pop("default", None)
    kinds = [s for s in any_of if s != {"type": "null"}]
    if len(kinds) == 1:
        schema.update(kinds[0])
    else:
        schema["anyOf"] = kinds


def _optional(description: str, **kw: Any) -> Any:
    """A JSON Schema keyword that is absent unless set."""
    return Field(
        default=None,
        exclude_if=_absent_if_none,
        json_schema_extra=_absent_not_null,
        description=description,
        **kw,
    )


class ParamSchema(BaseModel):
    """The JSON Schema of one request field (keywords a template's params can use)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["string", "integer", "number", "boolean"] = Field(description="The JSON type.")
    description: str = Field(description="What the field is.")
    examples: list[str | int | float | bool] = Field(description="An example value.")
    default: str | int | float | bool | None = _optional("The value when absent.")
    enum: list[str] | None = _optional("The allowed values.")
    minimum: int | float | None = _optional("Smallest allowed value.")
    maximum: int | float | None = _optional("Largest allowed value.")
    multiple_of: int | float | None = _optional(
        "The value is a multiple of this.", alias="multipleOf"
    )
    min_length: int | None = _optional("Fewest characters.", alias="minLength")
    max_length: int | None = _optional("Most characters.", alias="maxLength")
    content_media_type: str | None = _optional("For images: `image/*`.", alias="contentMediaType")


class ParamsSchema(BaseModel):
    """The JSON Schema (2020-12) of a template's JSON request body."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    title: str = Field(description="The request schema's name in the OpenAPI document.")
    description: str = Field(description="What the template does.")
    type: Literal["object"] = Field(description="Always `object`.")
    properties: dict[str, ParamSchema] = Field(description="Each field's schema, by name.")
    required: list[str] = Field(description="The fields a request must give.")
    additional_properties: bool = Field(
        alias="additionalProperties", description="Always false: unknown fields are refused."
    )


class TemplateInfo(BaseModel):
    """A template as offered by the API."""

    name: str = Field(description="Template name.")
    version: str = Field(description="Semantic version.")
    summary: str = Field(description="One line.")
    description: str = Field(description="What it does.")
    route: str = Field(description="The route that runs it, e.g. `/v1/txt2img`.")
    gpu_class: str = Field(description="The GPU class jobs run on.")
    gpu: str = Field(description="The GPU type of that class.")
    usd_per_second: str = Field(
        description="Price of one billable second on the GPU class (GPU, CPU, memory), USD."
    )
    estimate: Estimate = Field(description="Measured cost and run time of recent jobs.")
    params: ParamsSchema = Field(description="JSON Schema of the request body.")
    operation_id: str = Field(
        description="The route's operationId, the SDKs' method name (`run_txt2img_v1`)."
    )
    deprecated: bool = Field(description="Whether this major version is deprecated.")
    deprecated_at: date | None = Field(description="The day it was deprecated, if it is.")
    sunset_at: date | None = Field(description="The day it stops being served, if set.")
    successor: str | None = Field(
        description="The route of the newer major version, when there is one (`/v2/txt2img`)."
    )


class TemplateList(BaseModel):
    """All templates."""

    data: list[TemplateInfo] = Field(description="The templates.")


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = Field(description="Always ok when the process answers.")


class EngineInfo(BaseModel):
    """What the runner reports about the engine."""

    model_config = ALWAYS_SENT

    runner: str = Field(description="The runner: `local` or `modal`.")
    comfyui: str | None = Field(
        default=None, description="The local ComfyUI's version (local runner)."
    )
    app: str | None = Field(default=None, description="The Modal app jobs go to (modal runner).")
    classes: dict[str, str] | None = Field(
        default=None, description="The Modal class per GPU class (modal runner)."
    )


class Ready(BaseModel):
    """Readiness: database and engine reachable."""

    status: Literal["ready"] = Field(description="Always `ready` when it answers 200.")
    database: str = Field(description="Database dialect.")
    engine: EngineInfo = Field(description="Facts from the runner.")


class UsageGroup(BaseModel):
    """Usage totals of one group."""

    key: str = Field(description="The group: a template, a day (`YYYY-MM-DD`), a GPU class...")
    jobs: int = Field(description="Jobs charged to the tenant.")
    billable_seconds: float = Field(description="Billable seconds charged to the tenant.")
    usd: str = Field(description="USD charged to the tenant (exact, six decimals).")
    platform_seconds: float = Field(
        description="Billable seconds the platform absorbed (its failures, retried attempts)."
    )
    platform_usd: str = Field(description="USD the platform absorbed.")


class BudgetInfo(BaseModel):
    """A tenant's monthly budget and its spend this month."""

    month: str = Field(description="The budget month, `YYYY-MM` (UTC).")
    budget_usd: str = Field(description="The monthly budget, USD.")
    spend_usd: str = Field(description="USD charged so far this month.")
    threshold: str | None = Field(description="Fraction of the budget that raises an event.")
    over_budget: bool = Field(description="True when new submissions are refused (402).")


class UsageGroupBy(StrEnum):
    """How usage totals are grouped; `tenant` is for the admin report only."""

    TENANT = "tenant"
    TEMPLATE = "template"
    DAY = "day"
    GPU_CLASS = "gpu_class"


class TenantUsageGroupBy(StrEnum):
    """How a tenant's own usage totals are grouped."""

    TEMPLATE = "template"
    DAY = "day"
    GPU_CLASS = "gpu_class"


class Usage(BaseModel):
    """Usage from the ledger over [start, end), grouped."""

    model_config = ALWAYS_SENT

    object: Literal["usage"] = Field(default="usage", description="Always `usage`.")
    start: datetime = Field(description="Start of the range (inclusive, UTC).")
    end: datetime = Field(description="End of the range (exclusive, UTC).")
    group_by: UsageGroupBy = Field(description="What the groups are.")
    tenant: str | None = Field(description="The tenant, or null for all tenants (admin).")
    data: list[UsageGroup] = Field(description="One entry per group, sorted by key.")
    total: UsageGroup = Field(description="The sum of all groups (key `total`).")
    budget: BudgetInfo | None = Field(description="The tenant's budget, when it has one.")


class WebhookSecret(BaseModel):
    """The tenant's webhook signing secret (Standard Webhooks)."""

    secret: str = Field(
        description="The current `whsec_` secret; verify deliveries with any Standard Webhooks "
        "library."
    )
    created_at: datetime = Field(description="When this secret was made.")
    previous_expires_at: datetime | None = Field(
        description="Until then deliveries also carry a signature made with the previous "
        "secret (rotation overlap); null when there is none."
    )


class WebhookAttempt(BaseModel):
    """One delivery attempt."""

    attempted_at: datetime = Field(description="When the attempt started.")
    status_code: int | None = Field(description="The receiver's HTTP status; null if none.")
    error: str | None = Field(description="Why the attempt failed; null when it succeeded.")
    duration_ms: int = Field(description="How long the attempt took, in milliseconds.")


class WebhookEventType(StrEnum):
    """Every event a webhook receiver gets."""

    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    BUDGET_THRESHOLD = "budget.threshold"


class AccountEventType(StrEnum):
    """Events of a tenant's account (not of a job)."""

    BUDGET_THRESHOLD = "budget.threshold"


class DeliveryStatus(StrEnum):
    """Where a webhook delivery is."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(BaseModel):
    """One webhook event (of a job, or an account event) and every attempt to deliver it."""

    id: str = Field(description="The message id, sent as `webhook-id` (the same on every retry).")
    type: WebhookEventType = Field(description="The event type.")
    url: str = Field(description="Where it is delivered.")
    status: DeliveryStatus = Field(
        description="pending (retrying), delivered, or failed (retry window closed, or, for an "
        "account event, the webhook endpoint was removed)."
    )
    attempts: list[WebhookAttempt] = Field(description="Every attempt, oldest first.")
    created_at: datetime = Field(description="When the event was written (the state change).")
    next_attempt_at: datetime | None = Field(description="When the next attempt is due.")
    delivered_at: datetime | None = Field(description="When the receiver accepted it.")


class WebhookDeliveryList(BaseModel):
    """A job's webhook deliveries."""

    data: list[WebhookDelivery] = Field(description="The job's events, oldest first.")


ACCOUNT_EVENT_TYPES = [t.value for t in AccountEventType]


class WebhookEndpointRequest(BaseModel):
    """Where to deliver the tenant's account events."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="An `https://` URL on a public address (checked like job webhook URLs); "
        "account events are POSTed to it, signed like job events.",
        examples=["https://your.app/hooks/stencil-account"],
    )


class WebhookEndpoint(BaseModel):
    """The tenant's endpoint for account events (not job events: those go to each job's
    `webhook_url`)."""

    url: str | None = Field(description="Where account events are delivered; null when none.")
    updated_at: datetime | None = Field(description="When the endpoint was last set or removed.")
    events: list[AccountEventType] = Field(description="The account event types delivered to it.")


class BudgetThresholdData(BaseModel):
    """The figures of a `budget.threshold` event."""

    tenant: str = Field(description="The tenant's name.")
    month: str = Field(description="The budget month, `YYYY-MM` (UTC).")
    budget_usd: str = Field(description="The monthly budget, USD.")
    spend_usd: str = Field(description="USD charged this month when the threshold was crossed.")
    threshold: str = Field(description="The fraction of the budget that was crossed.")


class AccountEvent(BaseModel):
    """Something that happened to the tenant's account (not to a job), e.g. a budget
    threshold crossed. Recorded whether or not the tenant has a webhook endpoint."""

    model_config = ALWAYS_SENT

    id: str = Field(description="The event id (`evt_...`), also `data.id` in the webhook body.")
    object: Literal["event"] = Field(default="event", description="Always `event`.")
    type: AccountEventType = Field(description="The event type.")
    created_at: datetime = Field(description="When it happened (the charge that caused it).")
    data: BudgetThresholdData = Field(description="The event's figures.")
    delivery: WebhookDelivery | None = Field(
        description="Its webhook delivery and every attempt; null when the tenant had no "
        "endpoint then (replay delivers it to the current one)."
    )


class AccountEventList(BaseModel):
    """A page of account events, newest first."""

    data: list[AccountEvent] = Field(description="The events on this page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


# ---- the job event stream ------------------------------------------------------------------


class JobEventType(StrEnum):
    """What an event of a job's stream says: a state entered, or progress while running."""

    JOB_QUEUED = "job.queued"
    JOB_RUNNING = "job.running"
    JOB_PROGRESS = "job.progress"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"


class JobEvent(BaseModel):
    """One event of `GET /v1/jobs/{id}/events`: the JSON in its `data`.

    The SSE `event` field is `type` and the SSE `id` field is `id`; the last event of a
    stream is the job's terminal state.
    """

    id: int = Field(
        description="The event's position in the job's life, also its SSE `id`: it only "
        "grows. Send the last one seen as `Last-Event-ID` to resume after it."
    )
    type: JobEventType = Field(description="What happened; also the SSE event name.")
    job: Job = Field(description="The job as `GET /v1/jobs/{id}` shows it now.")


# ---- webhook payloads (the `webhooks` section) -----------------------------------------------


class JobWebhookEventType(StrEnum):
    """A job's terminal state, as a webhook event type."""

    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"


class WebhookOutput(BaseModel):
    """One output of a finished job, without its URL (read the job for a fresh one)."""

    content_type: str = Field(description="MIME type, e.g. `image/png`.")
    width: int = Field(description="Width in pixels.")
    height: int = Field(description="Height in pixels.")
    bytes: int = Field(description="Size in bytes.")


class JobWebhookData(BaseModel):
    """The job a terminal-state webhook is about."""

    id: str = Field(description="The job id.")
    object: Literal["job"] = Field(description="Always `job`.")
    status: JobStatus = Field(description="The terminal state: succeeded, failed or cancelled.")
    template: str = Field(description="Template name.")
    template_version: str = Field(description="Exact template version that ran.")
    error: Problem | None = Field(description="Why the job failed; null unless it failed.")
    outputs: list[WebhookOutput] = Field(description="The outputs; empty unless it succeeded.")
    created_at: datetime = Field(description="When the job was accepted.")
    finished_at: datetime | None = Field(description="When it reached its terminal state.")
    url: str = Field(description="The job's path: `GET` it for output URLs signed now.")
    batch: Batch | None = Field(
        default=None,
        description="The batch the job's last attempt ran in (its id and size: the billable "
        "seconds were split among its jobs); null when it ran alone.",
    )


class JobWebhookEvent(BaseModel):
    """The body POSTed to a job's `webhook_url` when it reaches a terminal state."""

    type: JobWebhookEventType = Field(description="`job.` and the terminal state.")
    timestamp: datetime = Field(description="When the event was written (UTC).")
    data: JobWebhookData = Field(description="The job.")


class BudgetThresholdWebhookData(BudgetThresholdData):
    """The account event a `budget.threshold` webhook is about."""

    id: str = Field(description="The event id (`evt_...`): `GET /v1/events/{id}`.")
    object: Literal["event"] = Field(description="Always `event`.")
    url: str = Field(description="The event's path.")


class BudgetThresholdWebhookEvent(BaseModel):
    """The body POSTed to the tenant's webhook endpoint when spend crosses its threshold."""

    type: Literal["budget.threshold"] = Field(description="Always `budget.threshold`.")
    timestamp: datetime = Field(description="When the event happened (UTC).")
    data: BudgetThresholdWebhookData = Field(description="The event's figures.")
