// Retries at the fetch: 429 and 5xx answers that say `Retry-After` are retried after that long,
// others with capped exponential backoff. A POST is retried only with an `Idempotency-Key` (the
// server then answers a retry with the first result) or after a 429 (the server did nothing).

export interface RetryPolicy {
  /** Retries after the first attempt (default 3). */
  maxRetries?: number;
  /** First backoff in ms, doubled each retry (default 500). */
  backoffMs?: number;
  /** Longest backoff in ms (default 30 000). */
  maxBackoffMs?: number;
  /** A longer `Retry-After` is returned to the caller, not slept through (default 120 000). */
  maxRetryAfterMs?: number;
}

const RETRY_STATUSES = new Set([429, 502, 503, 504]);
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);

/** `Retry-After` in ms (delta-seconds or an HTTP-date), if the response has one. */
export function retryAfterMs(response: Response): number | undefined {
  const value = response.headers.get("retry-after");
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const when = Date.parse(value);
  return Number.isNaN(when) ? undefined : Math.max(0, when - Date.now());
}

function replaySafe(request: Request): boolean {
  return SAFE_METHODS.has(request.method) || request.headers.has("idempotency-key");
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A fetch that retries as the module comment says. */
export function retryingFetch(
  base: (input: Request) => Promise<Response>,
  policy: RetryPolicy = {},
): (input: Request) => Promise<Response> {
  const maxRetries = policy.maxRetries ?? 3;
  const backoffMs = policy.backoffMs ?? 500;
  const maxBackoffMs = policy.maxBackoffMs ?? 30_000;
  const maxRetryAfterMs = policy.maxRetryAfterMs ?? 120_000;
  const backoff = (attempt: number): number =>
    Math.min(maxBackoffMs, backoffMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);

  return async (request: Request): Promise<Response> => {
    for (let attempt = 1; ; attempt++) {
      let response: Response;
      try {
        response = await base(request.clone());
      } catch (err) {
        if (attempt > maxRetries || !replaySafe(request) || request.signal.aborted) throw err;
        await sleep(backoff(attempt));
        continue;
      }
      const retryable =
        RETRY_STATUSES.has(response.status) && (response.status === 429 || replaySafe(request));
      if (!retryable || attempt > maxRetries) return response;
      const said = retryAfterMs(response);
      if (said !== undefined && said > maxRetryAfterMs) return response;
      await response.body?.cancel();
      await sleep(said ?? backoff(attempt));
    }
  };
}
