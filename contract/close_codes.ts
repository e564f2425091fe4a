/**
 * Why the server closes a connection, and the WebSocket close code for each reason
 * (SPEC §4). One table, read by the gateway, the client, the docs and the tests.
 */
import { z } from "zod";

export const closeCodeTable = {
  background: 4001,
  background_timeout: 4002,
  liveness_timeout: 4003,
  idle_timeout: 4004,
  replaced: 4005,
  logged_out: 4006,
  unauthorized: 4007,
  rate_limited: 4008,
  slow_consumer: 4009,
  handshake_timeout: 4010,
  client_disconnect: 1000,
  payload_too_large: 1009,
  protocol_error: 1002,
  invalid_utf8: 1007,
  too_many_fragments: 1008,
  server_shutdown: 1012,
} as const;

/**
 * What each reason means, next to its code. A runtime map (not JSDoc) so that generated docs
 * (the AsyncAPI document) can list it; a map of its own so that `closeCodeTable[reason]` stays
 * a plain number for its many readers.
 */
export const closeReasonDescriptions: Readonly<Record<CloseReason, string>> = {
  background: "Auto mode went to background without the background service: closed at once.",
  background_timeout:
    "Auto mode in background with the background service: one window, then closed.",
  liveness_timeout: "Manual mode in background: no ping within the window.",
  idle_timeout: "Nothing received (not even a heartbeat) for the idle timeout: a dead peer.",
  replaced: "A newer connection of the same session took over.",
  logged_out: "The session logged out.",
  unauthorized:
    "The credential is unknown, revoked or expired, or the handshake was not completed.",
  rate_limited: "The connection exceeded its frame budget.",
  slow_consumer: "The connection did not read its frames: more than the outbound buffer limit " +
    "was waiting to be sent to it. The client reconnects; the gateway does not buffer without " +
    "bound.",
  handshake_timeout: "The socket did not send its `connect` frame within the handshake timeout.",
  client_disconnect: "Manual mode: the app called disconnect(). A normal close.",
  payload_too_large:
    'A frame over the size limit (the standard "message too big" code), refused from its header.',
  protocol_error: "A frame broke the WebSocket protocol itself (RFC 6455): an unknown opcode, an " +
    "unmasked client frame, a fragmented control frame, reserved bits set. The standard code.",
  invalid_utf8: "A text frame was not valid UTF-8 (the standard code).",
  too_many_fragments:
    "A message came in more fragments than the WebSocket layer keeps (policy violation).",
  server_shutdown: "The gateway is shutting down or restarting; reconnect later.",
};

export type CloseReason = keyof typeof closeCodeTable;
export const closeReasons = Object.keys(closeCodeTable) as [CloseReason, ...CloseReason[]];
export const CloseReasonSchema = z.enum(closeReasons).meta({
  id: "CloseReason",
  description: "Why the server closed a connection.",
});

/**
 * Deadline-driven reasons: the lifecycle engine schedules these. `server_shutdown` is the end of
 * a restart grace (a session that held a connection when the gateway crashed, kept online for
 * its client to come back: gateway/liveness.ts `restore`).
 */
export type DeadlineReason = "background_timeout" | "liveness_timeout" | "server_shutdown";

/** Reason for a close code, or undefined for codes the gateway does not send. */
export function reasonOfCloseCode(code: number): CloseReason | undefined {
  for (const reason of closeReasons) if (closeCodeTable[reason] === code) return reason;
  return undefined;
}
