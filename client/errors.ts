/**
 * The one error type of the client: every rejected promise carries the contract's error
 * payload (`errorCode`, `errorDescription`, `details`), whether the client raised it or the
 * server returned it.
 */
import {
  errorCatalog,
  type ErrorCode,
  type ErrorPayload,
  ErrorPayloadSchema,
} from "../contract/mod.ts";

/** A failed call: the contract's error payload as an `Error`. */
export class GatewayError extends Error implements ErrorPayload {
  override name = "GatewayError";
  /** One of the contract's error codes (SPEC §3). */
  readonly errorCode: ErrorCode;
  /** Human-readable description, from the server or the contract's catalog. */
  readonly errorDescription: string;
  /** Extra data, e.g. the validation issues of `ERR_BAD_REQUEST`. */
  readonly details?: Record<string, unknown>;

  constructor(errorCode: ErrorCode, errorDescription?: string, details?: Record<string, unknown>) {
    const description = errorDescription ?? errorCatalog[errorCode].description;
    super(`${errorCode}: ${description}`);
    this.errorCode = errorCode;
    this.errorDescription = description;
    if (details !== undefined) this.details = details;
  }

  /** The wire payload of this error. */
  toJSON(): ErrorPayload {
    const payload: ErrorPayload = {
      errorCode: this.errorCode,
      errorDescription: this.errorDescription,
    };
    if (this.details !== undefined) payload.details = this.details;
    return payload;
  }

  /** Builds an error from a server payload, or `ERR_INTERNAL` if the body is not one. */
  static fromPayload(body: unknown, status?: number): GatewayError {
    const parsed = ErrorPayloadSchema.safeParse(body);
    if (parsed.success) {
      return new GatewayError(
        parsed.data.errorCode,
        parsed.data.errorDescription,
        parsed.data.details,
      );
    }
    return new GatewayError(
      "ERR_INTERNAL",
      `Unexpected reply from the gateway${status === undefined ? "" : ` (HTTP ${status})`}.`,
      { body },
    );
  }

  /** Wraps anything thrown by fetch or a WebSocket into a GatewayError. */
  static fromUnknown(error: unknown): GatewayError {
    if (error instanceof GatewayError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new GatewayError("ERR_INTERNAL", `Network error: ${message}`, { cause: message });
  }
}

/** True when `error` is a GatewayError (also across bundle copies, by shape). */
export function isGatewayError(error: unknown): error is GatewayError {
  return error instanceof GatewayError ||
    (typeof error === "object" && error !== null && "errorCode" in error &&
      "errorDescription" in error);
}
