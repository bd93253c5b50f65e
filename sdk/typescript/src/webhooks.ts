// Verifying Stencil's webhooks (Standard Webhooks) and reading them as typed events.
import { WebhookVerificationError } from "./errors.js";
import type { webhooks } from "./schema.js";

type BodyOf<T> = T extends { post: { requestBody: { content: { "application/json": infer B } } } }
  ? B
  : never;

/** Every body a receiver gets, by event type: the document's `webhooks` section. */
export type WebhookEvents = { [K in keyof webhooks]: BodyOf<webhooks[K]> };
/** Any webhook body; narrow it on `type`. */
export type WebhookEvent = WebhookEvents[keyof WebhookEvents];

export type HeaderBag = Headers | Record<string, string | string[] | undefined>;

const TOLERANCE_S = 300;

function header(headers: HeaderBag, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name) return Array.isArray(value) ? value.join(" ") : value;
  }
  return undefined;
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(bytes: ArrayBuffer): string {
  let bin = "";
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b);
  return btoa(bin);
}

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

async function sign(secret: string, content: Uint8Array<ArrayBuffer>): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    fromBase64(secret.replace(/^whsec_/, "")),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return toBase64(await crypto.subtle.sign("HMAC", key, content));
}

/**
 * Checks a delivery's signature and timestamp, then parses it.
 *
 * `body` is the raw request body (before any JSON parsing), `headers` the request's headers,
 * `secret` the tenant's `whsec_` secret (or several: during a rotation either verifies).
 * Throws `WebhookVerificationError` unless a signature matches and the timestamp is within
 * `toleranceS` seconds of now.
 */
export async function verifyWebhook(
  body: string | Uint8Array,
  headers: HeaderBag,
  secret: string | string[],
  options: { toleranceS?: number; now?: number } = {},
): Promise<WebhookEvent> {
  const raw = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const id = header(headers, "webhook-id");
  const stamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!id || !stamp || !signatures) {
    throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  const sent = Number(stamp);
  const now = options.now ?? Date.now() / 1000;
  if (!Number.isInteger(sent)) throw new WebhookVerificationError("webhook-timestamp is not unix seconds");
  if (Math.abs(now - sent) > (options.toleranceS ?? TOLERANCE_S)) {
    throw new WebhookVerificationError("webhook-timestamp is too far from now (a replay?)");
  }
  const prefix = new TextEncoder().encode(`${id}.${stamp}.`);
  const content: Uint8Array<ArrayBuffer> = new Uint8Array(prefix.length + raw.length);
  content.set(prefix);
  content.set(raw, prefix.length);
  const given = signatures
    .split(" ")
    .filter((s) => s.startsWith("v1,"))
    .map((s) => s.slice(3));
  for (const s of Array.isArray(secret) ? secret : [secret]) {
    const expected = await sign(s, content);
    if (given.some((g) => sameText(g, expected))) return parseWebhook(raw);
  }
  throw new WebhookVerificationError("no signature matches the secret");
}

/** A webhook body as its typed event (no verification: use `verifyWebhook`). */
export function parseWebhook(body: string | Uint8Array): WebhookEvent {
  const text = typeof body === "string" ? body : new TextDecoder().decode(body);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new WebhookVerificationError("the body is not JSON");
  }
  const type = typeof data === "object" && data !== null && "type" in data ? data.type : undefined;
  if (typeof type !== "string" || !(type.startsWith("job.") || type === "budget.threshold")) {
    throw new WebhookVerificationError(`unknown webhook type ${String(type)}`);
  }
  return data as WebhookEvent;
}
