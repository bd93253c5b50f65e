from enum import StrEnum


class ProblemType(StrEnum):
    BUDGET_EXCEEDED = "https://stencil.dev/problems/budget_exceeded"
    COMFYUI_UNAVAILABLE = "https://stencil.dev/problems/comfyui_unavailable"
    CONFLICT = "https://stencil.dev/problems/conflict"
    EXECUTION_FAILED = "https://stencil.dev/problems/execution_failed"
    FORBIDDEN = "https://stencil.dev/problems/forbidden"
    HTTP_ERROR = "https://stencil.dev/problems/http_error"
    IDEMPOTENCY_KEY_REUSED = "https://stencil.dev/problems/idempotency_key_reused"
    INTERNAL_ERROR = "https://stencil.dev/problems/internal_error"
    INVALID_MEDIA = "https://stencil.dev/problems/invalid_media"
    INVALID_REQUEST = "https://stencil.dev/problems/invalid_request"
    JOB_FAILED = "https://stencil.dev/problems/job_failed"
    METHOD_NOT_ALLOWED = "https://stencil.dev/problems/method_not_allowed"
    NOT_FOUND = "https://stencil.dev/problems/not_found"
    PAYLOAD_TOO_LARGE = "https://stencil.dev/problems/payload_too_large"
    QUOTA_EXCEEDED = "https://stencil.dev/problems/quota_exceeded"
    RATE_LIMITED = "https://stencil.dev/problems/rate_limited"
    SERVICE_UNAVAILABLE = "https://stencil.dev/problems/service_unavailable"
    TIMEOUT = "https://stencil.dev/problems/timeout"
    TOO_MANY_STREAMS = "https://stencil.dev/problems/too_many_streams"
    UNAUTHORIZED = "https://stencil.dev/problems/unauthorized"
    UNSUPPORTED_MEDIA_TYPE = "https://stencil.dev/problems/unsupported_media_type"
    UNTRUSTED_HOST = "https://stencil.dev/problems/untrusted_host"
    VALIDATION_ERROR = "https://stencil.dev/problems/validation_error"
    WORKER_LOST = "https://stencil.dev/problems/worker_lost"

    def __str__(self) -> str:
        return str(self.value)
