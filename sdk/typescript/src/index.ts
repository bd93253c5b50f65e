// Stencil's TypeScript SDK: types generated from the OpenAPI document (openapi-typescript) on
// openapi-fetch, with a small layer on top.
//
//   import { Stencil } from "@stencil/sdk";
//   const stencil = new Stencil({ baseUrl: "http://127.0.0.1:8000", apiKey: "sk_..." });
//   const job = await stencil.run("/v1/txt2img", { prompt: "a lighthouse at dawn" });
//   const png = await stencil.download(job.outputs[0]!);
export {
  Stencil,
  type DeprecationNotice,
  type EventsOptions,
  type FileInput,
  type Job,
  type JobEvent,
  type JobList,
  type JobStatus,
  type ListJobsQuery,
  type Output,
  type Schemas,
  type StencilOptions,
  type SubmitBody,
  type SubmitOptions,
  type TemplateInfo,
  type TemplateRoute,
  type WaitOptions,
} from "./client.js";
export {
  APIError,
  AuthenticationError,
  BadRequestError,
  BudgetExceededError,
  ConflictError,
  InternalServerError,
  JobCancelledError,
  JobError,
  JobFailedError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  RateLimitError,
  ServiceUnavailableError,
  StencilError,
  UnsupportedMediaTypeError,
  ValidationError,
  WaitTimeoutError,
  WebhookVerificationError,
  type FieldError,
  type Problem,
} from "./errors.js";
export { type RetryPolicy, retryAfterMs, retryingFetch } from "./retry.js";
export type { components, operations, paths, webhooks } from "./schema.js";
export {
  parseWebhook,
  verifyWebhook,
  type HeaderBag,
  type WebhookEvent,
  type WebhookEvents,
} from "./webhooks.js";
