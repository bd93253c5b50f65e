// One real job flow through the TypeScript SDK against a live Stencil (run by
// tests/test_sdk_live.py): upscale from bytes, txt2img, wait, download, a 422 read as a typed
// error, a cancel, a page of jobs, the event iterator to the end. Prints a JSON summary.
import { readFileSync } from "node:fs";

import { type JobEvent, Stencil, ValidationError } from "../src/index.js";

function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Error(`check failed: ${what}`);
}

const PNG = [0x89, 0x50, 0x4e, 0x47];

async function main(): Promise<void> {
  const stencil = new Stencil(); // STENCIL_BASE_URL and STENCIL_API_KEY
  const image = new Uint8Array(readFileSync(process.env.STENCIL_TEST_PNG ?? ""));

  // Upscale from bytes: multipart, with the image as a file part.
  const up = await stencil.run("/v1/upscale", { image, scale: 2, method: "bicubic" });
  const out = up.outputs[0];
  check(out !== undefined && out.width === 32 && out.height === 16, "upscale output size");
  const upBytes = await stencil.download(out);
  check(PNG.every((b, i) => upBytes[i] === b), "the download is a PNG");

  // txt2img, followed through the event iterator to its end.
  const job = await stencil.submit("/v1/txt2img", {
    prompt: "a red cube",
    width: 64,
    height: 64,
    steps: 2,
  });
  const events: JobEvent[] = [];
  for await (const event of stencil.events(job)) events.push(event);
  const ids = events.map((e) => e.id);
  check(ids.every((id, i) => i === 0 || id > (ids[i - 1] ?? -1)), "event ids only grow");
  check(events.at(-1)?.type === "job.succeeded", "the last event is job.succeeded");
  const done = await stencil.wait(job);
  check(done.status === "succeeded" && done.outputs.length === 1, "wait gives the final job");
  const bytes = await stencil.download(done.outputs[0]!);
  check(bytes.length === done.outputs[0]!.bytes, "downloaded every byte");

  // A 422 as a typed error naming the field.
  let field: string | undefined;
  try {
    await stencil.submit("/v1/txt2img", { prompt: "x", width: 65 });
  } catch (err) {
    check(err instanceof ValidationError, "a 422 is a ValidationError");
    field = err.errors[0]?.field;
  }
  check(field === "width", "the error names width");

  // A cancel.
  const slow = await stencil.submit("/v1/txt2img", { prompt: "slow", width: 64, height: 64, steps: 100 });
  const cancelled = await stencil.cancel(slow);
  check(cancelled.status === "cancelled", "cancelled");

  // A page of jobs, then every job through the paginating iterator.
  const page = await stencil.listJobs({ limit: 2 });
  check(page.data.length === 2 && typeof page.next_cursor === "string", "a page with a cursor");
  let all = 0;
  for await (const _ of stencil.jobs({ limit: 2 })) all++;
  check(all >= 3, "the iterator pages through every job");

  console.log(
    JSON.stringify({
      upscale: up.id,
      txt2img: done.id,
      events: events.map((e) => e.type),
      field,
      cancelled: cancelled.id,
      jobs: all,
    }),
  );
}

// Never called: what the compiler refuses is part of the contract.
export function typeErrors(stencil: Stencil): void {
  // @ts-expect-error width is a number
  void stencil.submit("/v1/txt2img", { prompt: "x", width: "wide" });
  // @ts-expect-error prompt is required
  void stencil.submit("/v1/txt2img", { width: 64 });
  // @ts-expect-error not a template route
  void stencil.submit("/v1/jobs", {});
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
