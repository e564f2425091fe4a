/**
 * The client's side of the lifecycle rules (SPEC §4, §5) as pure functions: why a connection
 * ended, and whether and when the client opens a new one. The client applies the answer;
 * nothing here touches a socket or a timer.
 */
import type { AppState, CloseReason, Mode } from "../contract/mod.ts";

/** Reasons the client itself ends a connection (the server's are the contract's). */
export type LocalDisconnectReason =
  /** The socket closed without a reason from the gateway, or could not be opened. */
  | "network_lost"
  /** A heartbeat or ping got no pong within the pong timeout: a dead link. */
  | "pong_timeout"
  /** The socket opened but the gateway did not answer the handshake in time. */
  | "handshake_timeout"
  /** `destroy()` was called. */
  | "destroyed";

/** Why a connection ended: a server close reason from the contract, or a local one. */
export type ConnectionEndReason = CloseReason | LocalDisconnectReason;

/** Reasons that end the client's wish to be connected, in every mode. */
const TERMINAL: ReadonlySet<ConnectionEndReason> = new Set<ConnectionEndReason>([
  "client_disconnect", // the app asked for it
  "logged_out", // the session is gone
  "unauthorized", // the credential is no longer valid
  "replaced", // another connection of this session took over; fighting it would loop
  "destroyed",
]);

/** Losses that are the network's fault rather than a rule's: manual mode retries these. */
const NETWORK: ReadonlySet<ConnectionEndReason> = new Set<ConnectionEndReason>([
  "network_lost",
  "pong_timeout",
  "handshake_timeout",
  "idle_timeout", // the gateway heard nothing from a foreground client: the link was dead
  "slow_consumer", // the link could not keep up with what the gateway had to send
  "server_shutdown",
]);

/** What the client does after a connection ends. */
export type ReconnectDecision =
  /** Retry after the backoff delay. */
  | "retry"
  /** Retry when the app returns to foreground (auto mode in background). */
  | "when_foreground"
  /** Stay disconnected until the app acts (connect() in manual mode, login in auto mode). */
  | "never";

/**
 * Decides reconnection after a connection ended.
 *
 * - Auto mode: every reason except the terminal ones reconnects — at once (after backoff) in
 *   foreground, on return to foreground in background.
 * - Manual mode: only a network loss in foreground reconnects, and only while the app wants
 *   the connection (between `connect()` and `disconnect()`); a rule close in background
 *   (`liveness_timeout`, …) waits for the app's `connect()`.
 */
export function decideReconnect(input: {
  mode: Mode;
  appState: AppState;
  loggedIn: boolean;
  /** Manual mode: connect() was called and disconnect() was not. Auto mode: logged in. */
  wantConnected: boolean;
  reason: ConnectionEndReason;
}): ReconnectDecision {
  if (!input.loggedIn || !input.wantConnected || TERMINAL.has(input.reason)) return "never";
  if (input.mode === "auto") return input.appState === "foreground" ? "retry" : "when_foreground";
  return input.appState === "foreground" && NETWORK.has(input.reason) ? "retry" : "never";
}

/** Whether a reason ends the session on the client (the stored user is dropped). */
export function endsSession(reason: ConnectionEndReason): boolean {
  return reason === "logged_out" || reason === "unauthorized";
}
