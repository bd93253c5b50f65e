"""Response models: what SDKs see. Every field is described."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Problem(BaseModel):
    """An RFC 9457 problem."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="A URI naming the kind of error; stable per kind.")
    title: str = Field(description="A short summary of the kind of error.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong this time.")
    instance: str | None = Field(default=None, description="The path that failed.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For validation errors: `{field, message}` per bad field."
    )


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


class Cost(BaseModel):
    """What the job cost, priced when it finished at the rate then in force."""

    gpu_class: str = Field(description="The catalog GPU class the job was priced at.")
    gpu_type: str = Field(description="The GPU type it ran on.")
    billable_seconds: float = Field(description="Billable seconds (whole milliseconds).")
    usd: str = Field(description="USD charged to the tenant, six decimals (exact, a string).")
    rate: str = Field(description="USD per billable second used (GPU, CPU and memory).")
    charged_to: Literal["tenant", "platform"] = Field(
        description="`platform` when the platform failed the job: the tenant pays nothing."
    )
    platform_usd: str = Field(
        description="USD the platform absorbed for this job (its failures, retried attempts)."
    )


class Job(BaseModel):
    """A job: one call of a template."""

    id: str = Field(description="The job id.")
    object: Literal["job"] = Field(default="job", description="Always `job`.")
    template: str = Field(description="Template name.")
    template_version: str = Field(description="Exact template version that ran.")
    status: JobStatus = Field(description="queued, running, succeeded, failed or cancelled.")
    progress: float = Field(description="0 to 1.")
    params: dict[str, Any] = Field(description="Params as run, including the seed used.")
    inputs: dict[str, Any] = Field(
        description="Media inputs as stored: sha256, content type, size (never the bytes)."
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
    webhook_url: str | None = Field(
        default=None, description="Where the signed terminal-state webhook goes, if anywhere."
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
    params: dict[str, Any] = Field(description="JSON Schema of the request body.")


class TemplateList(BaseModel):
    """All templates."""

    data: list[TemplateInfo] = Field(description="The templates.")


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = Field(description="Always ok when the process answers.")


class Ready(BaseModel):
    """Readiness: database and engine reachable."""

    status: Literal["ready"] = Field(description="ready")
    database: str = Field(description="Database dialect.")
    engine: dict[str, Any] = Field(description="Facts from the runner.")


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


class Usage(BaseModel):
    """Usage from the ledger over [start, end), grouped."""

    object: Literal["usage"] = Field(default="usage", description="Always `usage`.")
    start: datetime = Field(description="Start of the range (inclusive, UTC).")
    end: datetime = Field(description="End of the range (exclusive, UTC).")
    group_by: str = Field(description="What the groups are: template, day, gpu_class or tenant.")
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


class WebhookDelivery(BaseModel):
    """One webhook event (of a job, or an account event) and every attempt to deliver it."""

    id: str = Field(description="The message id, sent as `webhook-id` (the same on every retry).")
    type: str = Field(
        description="Event type: `job.succeeded`, `job.failed`, `job.cancelled`, "
        "`budget.threshold`."
    )
    url: str = Field(description="Where it is delivered.")
    status: Literal["pending", "delivered", "failed"] = Field(
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


ACCOUNT_EVENT_TYPES = ["budget.threshold"]


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
    events: list[str] = Field(description="The account event types delivered to it.")


class AccountEvent(BaseModel):
    """Something that happened to the tenant's account (not to a job), e.g. a budget
    threshold crossed. Recorded whether or not the tenant has a webhook endpoint."""

    id: str = Field(description="The event id (`evt_...`), also `data.id` in the webhook body.")
    object: Literal["event"] = Field(default="event", description="Always `event`.")
    type: str = Field(description="Event type: `budget.threshold`.")
    created_at: datetime = Field(description="When it happened (the charge that caused it).")
    data: dict[str, Any] = Field(
        description="The event's figures; for `budget.threshold`: `tenant`, `month`, "
        "`budget_usd`, `spend_usd`, `threshold`."
    )
    delivery: WebhookDelivery | None = Field(
        description="Its webhook delivery and every attempt; null when the tenant had no "
        "endpoint then (replay delivers it to the current one)."
    )


class AccountEventList(BaseModel):
    """A page of account events, newest first."""

    data: list[AccountEvent] = Field(description="The events on this page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
