// `Stencil`: the generated types on openapi-fetch, with retries and typed errors, plus the
// calls people make most (run and wait, upload, follow events, page through jobs, download).
// Every operation stays typed through `stencil.api` (`stencil.api.GET("/v1/templates")`).
import createClient, { type Client } from "openapi-fetch";

import {
  APIError,
  JobCancelledError,
  JobFailedError,
  StencilError,
  WaitTimeoutError,
  errorFor,
  jsonOrThrow,
} from "./errors.js";
import { type RetryPolicy, retryingFetch } from "./retry.js";
import type { components, paths } from "./schema.js";
import { Decoder, lines } from "./sse.js";

export type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type JobEvent = Schemas["JobEvent"];
export type JobList = Schemas["JobList"];
export type JobStatus = Schemas["JobStatus"];
export type Output = Schemas["Output"];
export type TemplateInfo = Schemas["TemplateInfo"];

type PostOf<P extends keyof paths> = paths[P] extends { post: infer O } ? O : never;

/** The catalog's submit routes (`"/v1/txt2img"`, ...): POSTs that answer 202 with a job. */
export type TemplateRoute = {
  [P in keyof paths]: [PostOf<P>] extends [never]
    ? never
    : PostOf<P> extends { responses: { 202: { content: { "application/json": Job } } } }
      ? P
      : never;
}[keyof paths];

type JsonBody<P extends TemplateRoute> = PostOf<P> extends {
  requestBody: { content: { "application/json": infer B } };
}
  ? B
  : never;
type MultipartBody<P extends TemplateRoute> = PostOf<P> extends {
  requestBody: { content: { "multipart/form-data": infer B } };
}
  ? B
  : never;

/** File contents for an image field: the body then goes as multipart. */
export type FileInput = Blob | Uint8Array | ArrayBuffer;
type WithFiles<B> = { [K in keyof B]: B[K] extends string | undefined ? B[K] | FileInput : B[K] };

/** A template's request: its JSON body, or its multipart body with files as bytes or Blobs. */
export type SubmitBody<P extends TemplateRoute> = JsonBody<P> | WithFiles<MultipartBody<P>>;

export interface DeprecationNotice {
  route: string;
  /** RFC 9745 `Deprecation`: `@` + unix seconds. */
  deprecation: string;
  /** RFC 8594 `Sunset`, when set: the HTTP-date the route stops. */
  sunset: string | undefined;
  /** `Link` to the successor version, when there is one. */
  link: string | undefined;
}

export interface StencilOptions {
  /** Default: `STENCIL_BASE_URL`, else `http://127.0.0.1:8000`. */
  baseUrl?: string;
  /** Default: `STENCIL_API_KEY`. */
  apiKey?: string;
  /** The fetch to send requests with (default: the global one). */
  fetch?: (input: Request) => Promise<Response>;
  retry?: RetryPolicy;
  /** Called once per route that answers with `Deprecation` (default: `console.warn`). */
  onDeprecation?: (notice: DeprecationNotice) => void;
}

export interface SubmitOptions {
  /** Sent as `Idempotency-Key` (default: a fresh UUID, so retries never start a second job). */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface WaitOptions {
  /** Give up waiting after this long (`WaitTimeoutError`); the job goes on. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface EventsOptions extends WaitOptions {
  /** Resume after this event id (`JobEvent.id`). */
  lastEventId?: number;
}

export type ListJobsQuery = NonNullable<paths["/v1/jobs"]["get"]["parameters"]["query"]>;

const TERMINAL_EVENTS = new Set<JobEvent["type"]>(["job.succeeded", "job.failed", "job.cancelled"]);
const TERMINAL_STATUSES = new Set<JobStatus>(["succeeded", "failed", "cancelled"]);
const MAX_RECONNECTS = 5;

function env(name: string): string | undefined {
  return typeof process === "undefined" ? undefined : process.env[name];
}

function isFile(value: unknown): value is FileInput {
  return value instanceof Blob || value instanceof Uint8Array || value instanceof ArrayBuffer;
}

function sniff(bytes: Uint8Array): string {
  const b = (i: number): number => bytes[i] ?? -1;
  if (b(0) === 0x89 && b(1) === 0x50 && b(2) === 0x4e && b(3) === 0x47) return "image/png";
  if (b(0) === 0xff && b(1) === 0xd8 && b(2) === 0xff) return "image/jpeg";
  if (b(8) === 0x57 && b(9) === 0x45 && b(10) === 0x42 && b(11) === 0x50) return "image/webp";
  return "application/octet-stream";
}

function toBlob(value: FileInput): Blob {
  if (value instanceof Blob) return value;
  const bytes = value instanceof ArrayBuffer ? new Uint8Array(value) : new Uint8Array(value);
  return new Blob([bytes], { type: sniff(bytes) });
}

const EXT: Record<string, string> = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function jobId(job: string | Job): string {
  return typeof job === "string" ? job : job.id;
}

function final(job: Job): Job {
  if (job.status === "failed") throw new JobFailedError(job);
  if (job.status === "cancelled") throw new JobCancelledError(job);
  return job;
}

/** A Stencil API client. */
export class Stencil {
  /** The typed openapi-fetch client for every operation, with auth and retries. */
  readonly api: Client<paths>;
  readonly baseUrl: string;
  private readonly headers: Headers;
  private readonly send: (input: Request) => Promise<Response>;
  private readonly sendPlain: (input: Request) => Promise<Response>;
  private readonly onDeprecation: (notice: DeprecationNotice) => void;
  private readonly warned = new Set<string>();

  constructor(options: StencilOptions = {}) {
    this.baseUrl = (options.baseUrl ?? env("STENCIL_BASE_URL") ?? "http://127.0.0.1:8000").replace(
      /\/+$/,
      "",
    );
    const apiKey = options.apiKey ?? env("STENCIL_API_KEY");
    if (!apiKey) throw new StencilError("an API key is needed: pass apiKey or set STENCIL_API_KEY");
    const base = options.fetch ?? ((input: Request) => fetch(input));
    this.sendPlain = retryingFetch(base, options.retry);
    this.headers = new Headers({ Authorization: `Bearer ${apiKey}` });
    const auth = this.headers;
    this.send = (input: Request) => {
      const request = new Request(input);
      auth.forEach((value, key) => request.headers.set(key, value));
      return this.sendPlain(request);
    };
    this.api = createClient<paths>({ baseUrl: this.baseUrl, fetch: this.send });
    this.onDeprecation =
      options.onDeprecation ??
      ((n) =>
        console.warn(
          `Stencil: POST ${n.route} is deprecated${n.sunset ? ` and stops on ${n.sunset}` : ""}` +
            (n.link ? `; its successor: ${n.link}` : ""),
        ));
  }

  /** A template's newest major version: route, params schema, price and estimate. */
  async template(name: string): Promise<TemplateInfo> {
    const { data, error, response } = await this.api.GET("/v1/templates/{name}", {
      params: { path: { name } },
    });
    if (data === undefined) throw errorFor(response, error);
    return data;
  }

  /**
   * Submits a job: `submit("/v1/txt2img", { prompt: "a lighthouse" })`. A body with bytes or a
   * Blob in an image field goes as multipart. An `Idempotency-Key` is always sent.
   */
  async submit<P extends TemplateRoute>(
    route: P,
    body: SubmitBody<P>,
    options: SubmitOptions = {},
  ): Promise<Job> {
    const headers = new Headers({ "Idempotency-Key": options.idempotencyKey ?? crypto.randomUUID() });
    const fields = Object.entries(body as Record<string, unknown>).filter(
      ([, v]) => v !== undefined && v !== null,
    );
    let payload: BodyInit;
    if (fields.some(([, v]) => isFile(v))) {
      const form = new FormData();
      for (const [key, value] of fields) {
        if (isFile(value)) {
          const blob = toBlob(value);
          form.append(key, blob, `${key}.${EXT[blob.type] ?? "bin"}`);
        } else {
          form.append(key, String(value));
        }
      }
      payload = form;
    } else {
      headers.set("Content-Type", "application/json");
      payload = JSON.stringify(Object.fromEntries(fields));
    }
    const init: RequestInit = { method: "POST", headers, body: payload };
    if (options.signal) init.signal = options.signal;
    const response = await this.send(new Request(`${this.baseUrl}${route}`, init));
    const job = await jsonOrThrow<Job>(response);
    const deprecation = response.headers.get("deprecation");
    if (deprecation !== null && !this.warned.has(route)) {
      this.warned.add(route);
      this.onDeprecation({
        route,
        deprecation,
        sunset: response.headers.get("sunset") ?? undefined,
        link: response.headers.get("link") ?? undefined,
      });
    }
    return job;
  }

  /** Submits and waits: the succeeded job, or `JobFailedError` / `JobCancelledError`. */
  async run<P extends TemplateRoute>(
    route: P,
    body: SubmitBody<P>,
    options: SubmitOptions & WaitOptions = {},
  ): Promise<Job> {
    const job = await this.submit(route, body, options);
    return final(await this.wait(job, options));
  }

  /** A job as it is now (output URLs signed afresh). */
  async getJob(job: string | Job): Promise<Job> {
    const { data, error, response } = await this.api.GET("/v1/jobs/{job_id}", {
      params: { path: { job_id: jobId(job) } },
    });
    if (data === undefined) throw errorFor(response, error);
    return data;
  }

  /** Cancels a job (a no-op on a cancelled one; `ConflictError` on a finished one). */
  async cancel(job: string | Job): Promise<Job> {
    const { data, error, response } = await this.api.DELETE("/v1/jobs/{job_id}", {
      params: { path: { job_id: jobId(job) } },
    });
    if (data === undefined) throw errorFor(response, error);
    return data;
  }

  /** Follows the job's events until it ends; its final state (whatever it is). */
  async wait(job: string | Job, options: WaitOptions = {}): Promise<Job> {
    let last: Job | undefined;
    for await (const event of this.events(job, options)) last = event.job;
    return last ?? (await this.getJob(job));
  }

  /**
   * The job's events as they happen (`for await`), ending after its terminal state. Reconnects
   * with `Last-Event-ID` if the stream breaks; breaking out of the loop closes the stream.
   */
  async *events(job: string | Job, options: EventsOptions = {}): AsyncGenerator<JobEvent, void> {
    const id = jobId(job);
    const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
    let last = options.lastEventId;
    let failures = 0;
    for (;;) {
      let got = false;
      try {
        const { data, error, response } = await this.api.GET("/v1/jobs/{job_id}/events", {
          params: {
            path: { job_id: id },
            header: last === undefined ? {} : { "Last-Event-ID": String(last) },
          },
          parseAs: "stream",
          ...(options.signal ? { signal: options.signal } : {}),
        });
        if (error !== undefined) throw errorFor(response, error);
        if (data) {
          const decoder = new Decoder();
          for await (const line of lines(data)) {
            if (deadline !== undefined && Date.now() > deadline) {
              throw new WaitTimeoutError(`job ${id} did not finish in ${options.timeoutMs} ms`);
            }
            const sse = decoder.feed(line);
            if (!sse?.data) continue;
            const event = JSON.parse(sse.data) as JobEvent;
            last = event.id;
            got = true;
            failures = 0;
            yield event;
            if (TERMINAL_EVENTS.has(event.type)) return;
          }
        }
      } catch (err) {
        if (err instanceof StencilError || options.signal?.aborted) throw err;
        if (++failures > MAX_RECONNECTS) throw err;
        await sleep(Math.min(250 * 2 ** failures, 5000));
        continue;
      }
      if (!got) {
        if (TERMINAL_STATUSES.has((await this.getJob(id)).status)) return;
        if (++failures > MAX_RECONNECTS) {
          throw new StencilError(`the event stream of job ${id} keeps ending early`);
        }
      }
    }
  }

  /** One page of the caller's jobs, newest first. */
  async listJobs(query: ListJobsQuery = {}): Promise<JobList> {
    const { data, error, response } = await this.api.GET("/v1/jobs", { params: { query } });
    if (data === undefined) throw errorFor(response, error);
    return data;
  }

  /** Every job of the caller, newest first (`for await`), fetching pages as it goes. */
  async *jobs(query: Omit<ListJobsQuery, "cursor"> = {}): AsyncGenerator<Job, void> {
    let cursor: string | undefined;
    for (;;) {
      const page = await this.listJobs(cursor === undefined ? query : { ...query, cursor });
      yield* page.data;
      if (!page.next_cursor) return;
      cursor = page.next_cursor;
    }
  }

  /** An output's bytes, from its signed URL (no API key is sent with it). */
  async download(output: Output | string): Promise<Uint8Array> {
    const url = new URL(typeof output === "string" ? output : output.url, `${this.baseUrl}/`);
    const response = await this.sendPlain(new Request(url));
    if (!response.ok) throw errorFor(response, await response.text());
    return new Uint8Array(await response.arrayBuffer());
  }
}


