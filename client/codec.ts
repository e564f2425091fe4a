/**
 * The typed frame codec: encodes client frames and decodes server frames with the contract's
 * schemas (and the reverse, for the gateway and tests).
 */
import {
  type ClientFrame,
  type ClientFrameInput,
  ClientFrameSchema,
  type ServerFrame,
  ServerFrameSchema,
} from "../contract/mod.ts";

export type DecodeResult<T> =
  | { ok: true; frame: T }
  | { ok: false; issues: Array<{ path: string; message: string }> };

function decodeWith<T>(
  schema: {
    safeParse(
      v: unknown,
    ):
      | { success: true; data: T }
      | { success: false; error: { issues: Array<{ path: PropertyKey[]; message: string }> } };
  },
  text: string,
): DecodeResult<T> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, issues: [{ path: "", message: "frame is not valid JSON" }] };
  }
  const result = schema.safeParse(value);
  if (result.success) return { ok: true, frame: result.data };
  return {
    ok: false,
    issues: result.error.issues.map((i) => ({
      path: i.path.map(String).join("."),
      message: i.message,
    })),
  };
}

/** Encodes a frame the client sends. */
export function encodeClientFrame(frame: ClientFrameInput): string {
  return JSON.stringify(frame);
}

/** Decodes and validates a frame the server sent. */
export function decodeServerFrame(text: string): DecodeResult<ServerFrame> {
  return decodeWith<ServerFrame>(ServerFrameSchema, text);
}

/** Decodes and validates a frame a client sent (used by the gateway and by fakes). */
export function decodeClientFrame(text: string): DecodeResult<ClientFrame> {
  return decodeWith<ClientFrame>(ClientFrameSchema, text);
}

/** Encodes a frame the server sends. */
export function encodeServerFrame(frame: ServerFrame): string {
  return JSON.stringify(frame);
}
