/**
 * How a failed reconcile is retried:
 * - transient: requeue with per-key exponential backoff, counted as an error;
 * - conflict: the cache was stale (HTTP 409); requeue with backoff, not counted as an error;
 * - terminal: retrying cannot help until the object changes; no requeue, surfaced to the user.
 */
export type ErrorClass = "transient" | "conflict" | "terminal";

/** Thrown by a reconciler when the object itself is wrong (invalid spec, impossible request). */
export class TerminalError extends Error {
  /** A CamelCase reason for the condition and the Event. */
  readonly reason: string;

  constructor(message: string, options: { reason?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = "TerminalError";
    this.reason = options.reason ?? "ReconcileFailed";
  }
}

/** The HTTP status of an API error, from our client (`code`), client-node's ApiException (`code`) or its Watch (`statusCode`). */
export function httpStatusOf(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const candidate =
    (error as { code?: unknown; statusCode?: unknown }).code ??
    (error as { statusCode?: unknown }).statusCode;
  return typeof candidate === "number" ? candidate : undefined;
}

export function classifyError(error: unknown): ErrorClass {
  if (error instanceof TerminalError) return "terminal";
  const status = httpStatusOf(error);
  if (status === 409) return "conflict";
  // The API server rejected what we sent: the same request will be rejected again.
  if (status === 400 || status === 422) return "terminal";
  // 5xx, 429, 404 of something not yet created, network errors, bugs: retry with backoff.
  return "transient";
}

/** The CamelCase reason to report a terminal error under. */
export function terminalReason(error: unknown): string {
  if (error instanceof TerminalError) return error.reason;
  return httpStatusOf(error) === 422 ? "Invalid" : "BadRequest";
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
