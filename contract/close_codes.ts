/**
 * Why the server closes a connection, and the WebSocket close code for each reason
 * (SPEC §4). One table, read by the gateway, the client, the docs and the tests.
 */
import { z } from "zod";

export const closeCodeTable = {
  /** Auto mode went to background without the background service: closed at once. */
  background: 4001,
  /** Auto mode in background with the background service: one window, then closed. */
  background_timeout: 4002,
  /** Manual mode in background: no ping within the window. */
  liveness_timeout: 4003,
  /** Nothing received (not even a heartbeat) for the idle timeout: a dead peer. */
  idle_timeout: 4004,
  /** A newer connection of the same session took over. */
  replaced: 4005,
  /** The session logged out. */
  logged_out: 4006,
  /** The credential is unknown, revoked or expired, or the handshake was not completed. */
  unauthorized: 4007,
  /** The connection exceeded its frame budget. */
  rate_limited: 4008,
  /**
   * The connection did not read its frames: more than the outbound buffer limit was waiting
   * to be sent to it. The client reconnects; the gateway does not buffer without bound.
   */
  slow_consumer: 4009,
  /** The socket did not send its `connect` frame within the handshake timeout. */
  handshake_timeout: 4010,
  /** Manual mode: the app called disconnect(). A normal close. */
  client_disconnect: 1000,
  /** A frame over the size limit (the standard "message too big" code), refused from its header. */
  payload_too_large: 1009,
  /**
   * A frame broke the WebSocket protocol itself (RFC 6455): an unknown opcode, an unmasked
   * client frame, a fragmented control frame, reserved bits set. The standard code.
   */
  protocol_error: 1002,
  /** A text frame was not valid UTF-8 (the standard code). */
  invalid_utf8: 1007,
  /** A message came in more fragments than the WebSocket layer keeps (policy violation). */
  too_many_fragments: 1008,
  /** The gateway is shutting down or restarting; reconnect later. */
  server_shutdown: 1012,
} as const;

export type CloseReason = keyof typeof closeCodeTable;
export const closeReasons = Object.keys(closeCodeTable) as [CloseReason, ...CloseReason[]];
export const CloseReasonSchema = z.enum(closeReasons).meta({
  id: "CloseReason",
  description: "Why the server closed a connection.",
});

/** Deadline-driven reasons: the lifecycle engine schedules these. */
export type DeadlineReason = "background_timeout" | "liveness_timeout";

/** Reason for a close code, or undefined for codes the gateway does not send. */
export function reasonOfCloseCode(code: number): CloseReason | undefined {
  for (const reason of closeReasons) if (closeCodeTable[reason] === code) return reason;
  return undefined;
}
