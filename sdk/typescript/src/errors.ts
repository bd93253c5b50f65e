// Typed errors: one class per problem status, each carrying the RFC 9457 problem.
import type { components } from "./schema.js";

export type Problem = components["schemas"]["Problem"];
export type FieldError = components["schemas"]["FieldError"];
type Job = components["schemas"]["Job"];

const PROBLEM_BASE = "https://stencil.dev/problems/";

/** Base of every error this SDK throws. */
export class StencilError extends Error {
  override name = "StencilError";
}

/** The API answered with an error; `problem` is its RFC 9457 body. */
export class APIError extends StencilError {
  override name = "APIError";
  readonly status: number;
  readonly headers: Headers;
  readonly problem: Problem | undefined;

  constructor(status: number, headers: Headers, problem: Problem | undefined) {
    super(`${status} ${problem ? problem.type.replace(PROBLEM_BASE, "") : "error"}: ${problem?.detail ?? `HTTP ${status}`}`);
    this.status = status;
    this.headers = headers;
    this.problem = problem;
  }

  /** The problem's kind: the last part of its `type` (`validation_error`, ...). */
  get kind(): string | undefined {
    return this.problem?.type.replace(PROBLEM_BASE, "");
  }

  /** What went wrong this time. */
  get detail(): string {
    return this.problem?.detail ?? "";
  }

  /** For validation errors: each bad field and why. */
  get errors(): FieldError[] {
    return this.problem?.errors ?? [];
  }

  /** Seconds the server asked to wait before trying again, if it said. */
  get retryAfter(): number | undefined {
    const value = this.headers.get("retry-after");
    const n = value === null ? NaN : Number(value);
    return Number.isFinite(n) ? n : undefined;
  }
}

/** 400: the request could not be read. */
export class BadRequestError extends APIError { override name = "BadRequestError"; }
/** 401: the API key is missing, unknown or revoked. */
export class AuthenticationError extends APIError { override name = "AuthenticationError"; }
/** 402: the tenant's monthly budget is spent. */
export class BudgetExceededError extends APIError { override name = "BudgetExceededError"; }
/** 403: the key lacks a scope. */
export class PermissionDeniedError extends APIError { override name = "PermissionDeniedError"; }
/** 404: no such job, template, event or file for this tenant. */
export class NotFoundError extends APIError { override name = "NotFoundError"; }
/** 409: the resource is not in a state that allows this. */
export class ConflictError extends APIError { override name = "ConflictError"; }
/** 413: the body is over the server's cap. */
export class PayloadTooLargeError extends APIError { override name = "PayloadTooLargeError"; }
/** 415: the body is neither JSON nor multipart. */
export class UnsupportedMediaTypeError extends APIError { override name = "UnsupportedMediaTypeError"; }
/** 422: invalid params or media; `errors` names each field. */
export class ValidationError extends APIError { override name = "ValidationError"; }
/** 429: over the rate limit or the active-job quota (after retries). */
export class RateLimitError extends APIError { override name = "RateLimitError"; }
/** 500: the server failed. */
export class InternalServerError extends APIError { override name = "InternalServerError"; }
/** 503: the job store or the engine is unavailable (after retries). */
export class ServiceUnavailableError extends APIError { override name = "ServiceUnavailableError"; }

const BY_STATUS: Record<number, typeof APIError> = {
  400: BadRequestError,
  401: AuthenticationError,
  402: BudgetExceededError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  415: UnsupportedMediaTypeError,
  422: ValidationError,
  429: RateLimitError,
  500: InternalServerError,
  503: ServiceUnavailableError,
};

function asProblem(body: unknown): Problem | undefined {
  if (typeof body === "object" && body !== null && "type" in body && "status" in body) {
    return body as Problem;
  }
  return undefined;
}

/** The typed error for an error answer, from its parsed (or raw) body. */
export function errorFor(response: Response, body: unknown): APIError {
  let parsed = body;
  if (typeof body === "string") {
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = undefined;
    }
  }
  const cls = BY_STATUS[response.status] ?? APIError;
  return new cls(response.status, response.headers, asProblem(parsed));
}

/** Throws the typed error unless the response is a success; returns its JSON. */
export async function jsonOrThrow<T>(response: Response): Promise<T> {
  const text = await response.text();
  if (!response.ok) throw errorFor(response, text);
  return JSON.parse(text) as T;
}

/** A job ended without succeeding; `job` is its final state. */
export class JobError extends StencilError {
  override name = "JobError";
  constructor(readonly job: Job, message: string) {
    super(message);
  }
}

/** The job failed; `problem` says why. */
export class JobFailedError extends JobError {
  override name = "JobFailedError";
  readonly problem: Problem | null;
  constructor(job: Job) {
    super(job, `job ${job.id} failed: ${job.error?.detail ?? "no reason recorded"}`);
    this.problem = job.error;
  }
}

/** The job was cancelled before it finished. */
export class JobCancelledError extends JobError {
  override name = "JobCancelledError";
  constructor(job: Job) {
    super(job, `job ${job.id} was cancelled`);
  }
}

/** The job did not finish within the wait's timeout (it goes on running). */
export class WaitTimeoutError extends StencilError { override name = "WaitTimeoutError"; }

/** A webhook's signature, timestamp or body does not check out: do not trust it. */
export class WebhookVerificationError extends StencilError { override name = "WebhookVerificationError"; }
