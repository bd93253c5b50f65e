// The hand-written layer without a server: retries, typed errors, the SSE parser, webhooks.
// Run by tests/test_sdk.py (`node --test`); the webhook fixture is signed by the server's own
// library there and passed in STENCIL_WEBHOOK_FIXTURE.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ConflictError,
  type Job,
  RateLimitError,
  Stencil,
  ValidationError,
  WebhookVerificationError,
  retryingFetch,
  verifyWebhook,
} from "../src/index.js";
import { Decoder } from "../src/sse.js";

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": status >= 400 ? "application/problem+json" : "application/json", ...headers },
  });

const problem = (status: number, kind: string, extra: object = {}): object => ({
  type: `https://stencil.dev/problems/${kind}`,
  title: kind,
  status,
  detail: `${kind} detail`,
  ...extra,
});

test("429 with Retry-After is retried after that long, then succeeds", async () => {
  const seen: number[] = [];
  const send = retryingFetch(async () => {
    seen.push(Date.now());
    return seen.length < 3 ? json(429, problem(429, "rate_limited"), { "retry-after": "0" }) : json(200, {});
  });
  const r = await send(new Request("http://x/v1/jobs", { method: "POST", body: "{}" }));
  assert.equal(r.status, 200);
  assert.equal(seen.length, 3);
});

test("a POST without Idempotency-Key is not retried on 503; with one it is", async () => {
  let calls = 0;
  const send = retryingFetch(
    async () => {
      calls++;
      return json(503, problem(503, "service_unavailable"), { "retry-after": "0" });
    },
    { maxRetries: 2 },
  );
  await send(new Request("http://x/v1/txt2img", { method: "POST", body: "{}" }));
  assert.equal(calls, 1);
  calls = 0;
  await send(
    new Request("http://x/v1/txt2img", { method: "POST", body: "{}", headers: { "Idempotency-Key": "k" } }),
  );
  assert.equal(calls, 3);
});

test("errors are typed by status and carry the problem", async () => {
  const stencil = new Stencil({
    baseUrl: "http://x",
    apiKey: "sk_test",
    retry: { maxRetries: 0 },
    fetch: async (req) => {
      assert.equal(req.headers.get("authorization"), "Bearer sk_test");
      if (req.method === "DELETE") return json(409, problem(409, "conflict"));
      if (req.url.endsWith("/v1/txt2img")) {
        assert.ok(req.headers.get("idempotency-key"));
        return json(422, problem(422, "validation_error", { errors: [{ field: "width", message: "bad" }] }));
      }
      return json(429, problem(429, "quota_exceeded"), { "retry-after": "5" });
    },
  });
  await assert.rejects(stencil.submit("/v1/txt2img", { prompt: "x", width: 65 }), (err: unknown) => {
    assert.ok(err instanceof ValidationError);
    assert.equal(err.kind, "validation_error");
    assert.equal(err.errors[0]?.field, "width");
    return true;
  });
  await assert.rejects(stencil.cancel("job_1"), ConflictError);
  await assert.rejects(stencil.getJob("job_1"), (err: unknown) => {
    assert.ok(err instanceof RateLimitError);
    assert.equal(err.retryAfter, 5);
    return true;
  });
});

test("a body with bytes goes as multipart with the image as a file part", async () => {
  const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
  let form: FormData | undefined;
  const stencil = new Stencil({
    baseUrl: "http://x",
    apiKey: "k",
    fetch: async (req) => {
      form = await req.formData();
      return json(202, { id: "job_1" }, { deprecation: "@1767225600", sunset: "Fri, 01 Jan 2027 00:00:00 GMT" });
    },
    onDeprecation: (n) => notices.push(n.route),
  });
  const notices: string[] = [];
  await stencil.submit("/v1/upscale", { image: png, scale: 2 });
  await stencil.submit("/v1/upscale", { image: png, scale: 2 });
  const part = form?.get("image");
  assert.ok(part instanceof Blob);
  assert.equal(part.type, "image/png");
  assert.equal(form?.get("scale"), "2");
  assert.deepEqual(notices, ["/v1/upscale"]); // warned once per route
});

test("the SSE decoder dispatches named events with ids and skips comments", () => {
  const d = new Decoder();
  const out = [": ping", "event: job.progress", "id: 1520", "data: {\"a\":", "data: 1}", ""].map((l) =>
    d.feed(l),
  );
  assert.deepEqual(out.at(-1), { event: "job.progress", id: "1520", data: "{\"a\":\n1}" });
  assert.equal(out.slice(0, -1).filter(Boolean).length, 0);
});

test("events() ends cleanly after the terminal event and resumes with Last-Event-ID", async () => {
  const job = { id: "job_1", status: "succeeded" } as Job;
  const lastIds: (string | null)[] = [];
  const stencil = new Stencil({
    baseUrl: "http://x",
    apiKey: "k",
    fetch: async (req) => {
      lastIds.push(req.headers.get("last-event-id"));
      const body =
        lastIds.length === 1
          ? `event: job.running\r\nid: 1001\r\ndata: ${JSON.stringify({ id: 1001, type: "job.running", job })}\r\n\r\n`
          : `: ping\r\n\r\nevent: job.succeeded\r\nid: 4003\r\ndata: ${JSON.stringify({ id: 4003, type: "job.succeeded", job })}\r\n\r\n`;
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    },
  });
  const seen: number[] = [];
  for await (const e of stencil.events("job_1")) seen.push(e.id);
  assert.deepEqual(seen, [1001, 4003]);
  assert.deepEqual(lastIds, [null, "1001"]); // the stream ended early once: resumed after 1001
});

test("verifyWebhook accepts the server's signature and refuses tampering and replays", async () => {
  const fixture = process.env.STENCIL_WEBHOOK_FIXTURE;
  if (!fixture) return; // run through tests/test_sdk.py, which signs one with the server's library
  const { secret, body, headers, now } = JSON.parse(fixture) as {
    secret: string;
    body: string;
    headers: Record<string, string>;
    now: number;
  };
  const event = await verifyWebhook(body, headers, ["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", secret], { now });
  assert.equal(event.type, "job.succeeded");
  assert.equal(event.data.object, "job"); // narrowed by the type check above
  await assert.rejects(verifyWebhook(body.replace("job", "jab"), headers, secret, { now }), WebhookVerificationError);
  await assert.rejects(verifyWebhook(body, headers, secret, { now: now + 3600 }), WebhookVerificationError);
});
