/** The error a route handler throws; `app.ts` turns it into the contract's error payload. */
import { type ErrorCode, type ErrorPayload, errorPayload, statusOf } from "../contract/mod.ts";
import type { Logger } from "./log.ts";

export class GatewayError extends Error {
  override name = "GatewayError";
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  readonly description: string | undefined;

  constructor(code: ErrorCode, description?: string, details?: Record<string, unknown>) {
    super(description ?? code);
    this.code = code;
    this.description = description;
    this.details = details;
  }

  get status(): number {
    return statusOf(this.code);
  }

  toPayload(): ErrorPayload {
    return errorPayload(this.code, this.description, this.details);
  }
}

/**
 * The payload and status a thrown error is answered with: a GatewayError's own, anything else
 * `ERR_INTERNAL` (logged here, never sent: no stack trace leaves the gateway).
 */
export function answerOf(
  error: unknown,
  log?: Logger,
): { status: number; payload: ErrorPayload } {
  if (error instanceof GatewayError) return { status: error.status, payload: error.toPayload() };
  if (log !== undefined) log.error("request.unexpected_error", { error });
  else console.error("unexpected error", error);
  return { status: statusOf("ERR_INTERNAL"), payload: errorPayload("ERR_INTERNAL") };
}
