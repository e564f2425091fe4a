/**
 * The connection lifecycle rules of SPEC §4 as a pure state machine:
 * `step(state, event, now, config) → { state, decisions }`.
 *
 * Nothing here touches a socket, a timer or storage. The user state object applies the
 * decisions: it closes sockets, arms the deadline wheel, and persists the new state.
 *
 * | mode   | app state                         | rule                                                  |
 * | ------ | --------------------------------- | ----------------------------------------------------- |
 * | auto   | foreground                        | connected; the client reconnects after network loss   |
 * | auto   | background, no background service | closed at once (`background`)                         |
 * | auto   | background, background service    | one window from entering background, then closed      |
 * |        |                                   | (`background_timeout`); pings do not extend it        |
 * | manual | foreground                        | connected between connect() and disconnect()          |
 * | manual | background                        | one window from entering background; each ping moves  |
 * |        |                                   | the deadline to ping + window (`liveness_timeout`)    |
 * | manual | after disconnect()                | nothing is maintained                                 |
 * | any    | back to foreground before deadline| the deadline is cancelled                             |
 * | any    | nothing received for idle timeout | closed (`idle_timeout`), see `idleCheck`              |
 * | any    | a new connection of the session   | the old one is closed (`replaced`); the new one takes |
 * |        |                                   | over the session, its window included                 |
 * | any    | logout                            | closed (`logged_out`), whatever was due               |
 * | any    | held in foreground when the       | held for the restart grace, then closed               |
 * |        | gateway crashed (see `restore`)   | (`server_shutdown`) unless its client connects again  |
 */
import type {
  AppState,
  CloseReason,
  DeadlineReason,
  DisconnectReason,
  ErrorCode,
  Mode,
} from "../contract/mod.ts";

export interface LivenessConfig {
  /** The liveness window (SPEC: 30 000 ms by default). */
  livenessWindowMs: number;
  /** A connection that sends nothing for this long is a dead peer. */
  idleTimeoutMs: number;
}

/** The lifecycle part of one session's state. Plain data: it is what gets persisted. */
export interface SessionLiveness {
  readonly mode: Mode;
  /** The session holds a connection (a live socket, or one awaiting its deadline after a restart). */
  readonly connected: boolean;
  readonly appState: AppState;
  readonly backgroundService: boolean;
  /** Server-clock time at which the connection is closed, unless cancelled or extended. */
  readonly deadline: number | null;
  readonly deadlineReason: DeadlineReason | null;
  readonly lastDisconnectReason: DisconnectReason | null;
  readonly lastDisconnectAt: number | null;
}

export type LivenessEvent =
  /**
   * A new socket of the session completed its handshake and is about to take the session over:
   * the connection the session holds, if any, is replaced. Comes before that socket's
   * `connected`.
   */
  | { type: "replaced" }
  /** The session's socket completed its handshake (after `replaced`, when it had one). */
  | { type: "connected"; appState: AppState; backgroundService: boolean }
  /** The client reported foreground/background (and whether the background service is on). */
  | { type: "app_state"; appState: AppState; backgroundService: boolean }
  /**
   * A ping: `heartbeat` is the client's automatic foreground heartbeat; `app` is the app's
   * ping() over the socket; `http` is the app's ping() over HTTP.
   */
  | { type: "ping"; source: "heartbeat" | "app" | "http" }
  /** Manual mode: the app called disconnect(). */
  | { type: "disconnect" }
  /** The socket went away (network loss, client close) or the server closed it for a reason. */
  | { type: "closed"; reason: DisconnectReason }
  /** The alarm armed for `state.deadline` fired. */
  | { type: "deadline" }
  /** The session ends (logout); it takes no event after this one. */
  | { type: "logout" };

export type Decision =
  /**
   * Close the session's socket with this reason (its close code is in the contract). For
   * `replaced` that is the old socket: the session stays connected, through the new one.
   */
  | { kind: "close"; reason: CloseReason }
  /** Refuse the call with this error; nothing changed. */
  | { kind: "reject"; errorCode: ErrorCode }
  /** Arm (or move) the session's alarm. */
  | { kind: "schedule"; at: number }
  /** Disarm the session's alarm. */
  | { kind: "cancel" };

export interface StepResult {
  state: SessionLiveness;
  decisions: Decision[];
}

/** A fresh session, not yet connected. */
export function initialLiveness(mode: Mode): SessionLiveness {
  return {
    mode,
    connected: false,
    appState: "foreground",
    backgroundService: false,
    deadline: null,
    deadlineReason: null,
    lastDisconnectReason: null,
    lastDisconnectAt: null,
  };
}

const none: Decision[] = [];

/** Applies one event at server time `now`. Never mutates `state`. */
export function step(
  state: SessionLiveness,
  event: LivenessEvent,
  now: number,
  config: LivenessConfig,
): StepResult {
  // A deadline is exact: whatever arrives at or after it finds the connection already over,
  // even when the alarm itself has not run yet (event-loop lag, the wheel's tick). Except a
  // logout: the client is told of the call it made (the SPEC leaves open which of two closes
  // in the same instant it hears of).
  if (
    state.connected && state.deadline !== null && state.deadlineReason !== null &&
    now >= state.deadline && event.type !== "closed" && event.type !== "logout"
  ) {
    const closed = close(state, state.deadlineReason, now);
    if (event.type === "ping" || event.type === "app_state" || event.type === "disconnect") {
      closed.decisions.push({ kind: "reject", errorCode: "NO_WEBSOCKET_CONNECTION" });
    }
    return closed;
  }
  switch (event.type) {
    case "replaced":
      // SPEC §4: "A second connection of the same session replaces the first". Only the old
      // socket goes: the session keeps its connection and its running window (see
      // `connected`), so a new socket neither ends the window nor buys more time, and the
      // user does not go offline in between.
      if (!state.connected) return { state, decisions: none };
      return { state, decisions: [{ kind: "close", reason: "replaced" }] };

    case "connected": {
      // A session held through a restart grace (see `restore`): its client is back, so the
      // grace ends here and the new connection starts from the app state it reports.
      const graceEnds = state.deadlineReason === "server_shutdown";
      const result = enterAppState(
        graceEnds
          ? { ...state, connected: true, deadline: null, deadlineReason: null }
          : { ...state, connected: true },
        event.appState,
        event.backgroundService,
        now,
        config,
        // A reconnect inside a running background window keeps that window.
        true,
      );
      if (graceEnds && !result.decisions.some((d) => d.kind === "schedule")) {
        return { state: result.state, decisions: [...result.decisions, { kind: "cancel" }] };
      }
      return result;
    }

    case "app_state":
      if (!state.connected) return reject(state, "NO_WEBSOCKET_CONNECTION");
      return enterAppState(state, event.appState, event.backgroundService, now, config, false);

    case "ping":
      return ping(state, event.source, now, config);

    case "disconnect":
      if (state.mode !== "manual") return reject(state, "ERR_NOT_MANUAL_MODE");
      if (!state.connected) return reject(state, "NO_WEBSOCKET_CONNECTION");
      return close(state, "client_disconnect", now);

    case "closed":
      if (!state.connected) return { state, decisions: none };
      return {
        state: disconnected(state, event.reason, now),
        decisions: state.deadline === null ? none : [{ kind: "cancel" }],
      };

    case "deadline":
      if (!state.connected || state.deadline === null || state.deadlineReason === null) {
        return { state, decisions: none };
      }
      // Never early: a stale alarm (the deadline moved later) re-arms instead of closing.
      if (now < state.deadline) {
        return { state, decisions: [{ kind: "schedule", at: state.deadline }] };
      }
      return close(state, state.deadlineReason, now);

    case "logout":
      if (!state.connected) return { state, decisions: none };
      return close(state, "logged_out", now);
  }
}

function enterAppState(
  state: SessionLiveness,
  appState: AppState,
  backgroundService: boolean,
  now: number,
  config: LivenessConfig,
  keepRunningWindow: boolean,
): StepResult {
  if (appState === "foreground") {
    const next = { ...state, appState, backgroundService, deadline: null, deadlineReason: null };
    return { state: next, decisions: state.deadline === null ? none : [{ kind: "cancel" }] };
  }

  const withFlags = { ...state, appState, backgroundService };
  if (state.mode === "auto" && !backgroundService) return close(withFlags, "background", now);

  // Already in background with a window running: the window keeps its start (moving to the
  // background twice, or turning the background service on, does not buy more time).
  const running = state.appState === "background" && state.deadline !== null;
  if (running || (keepRunningWindow && state.deadline !== null)) {
    return { state: withFlags, decisions: none };
  }
  const reason: DeadlineReason = state.mode === "auto" ? "background_timeout" : "liveness_timeout";
  const deadline = now + config.livenessWindowMs;
  return {
    state: { ...withFlags, deadline, deadlineReason: reason },
    decisions: [{ kind: "schedule", at: deadline }],
  };
}

function ping(
  state: SessionLiveness,
  source: "heartbeat" | "app" | "http",
  now: number,
  config: LivenessConfig,
): StepResult {
  if (state.mode === "auto") {
    // The automatic heartbeat is always accepted but never extends a background deadline;
    // the app's own ping() is a manual-mode call.
    if (source !== "heartbeat") return reject(state, "ERR_NOT_MANUAL_MODE");
    if (!state.connected) return reject(state, "NO_WEBSOCKET_CONNECTION");
    return { state, decisions: none };
  }
  if (!state.connected) return reject(state, "NO_WEBSOCKET_CONNECTION");
  if (state.appState === "background" && state.deadline !== null) {
    const deadline = now + config.livenessWindowMs;
    // Several pings within one millisecond: the deadline is already there.
    if (deadline === state.deadline) return { state, decisions: none };
    return { state: { ...state, deadline }, decisions: [{ kind: "schedule", at: deadline }] };
  }
  return { state, decisions: none };
}

function close(state: SessionLiveness, reason: CloseReason, now: number): StepResult {
  const decisions: Decision[] = [{ kind: "close", reason }];
  if (state.deadline !== null) decisions.push({ kind: "cancel" });
  return { state: disconnected(state, reason, now), decisions };
}

function disconnected(
  state: SessionLiveness,
  reason: DisconnectReason,
  now: number,
): SessionLiveness {
  return {
    ...state,
    connected: false,
    deadline: null,
    deadlineReason: null,
    lastDisconnectReason: reason,
    lastDisconnectAt: now,
  };
}

function reject(state: SessionLiveness, errorCode: ErrorCode): StepResult {
  return { state, decisions: [{ kind: "reject", errorCode }] };
}

/**
 * The idle rule for dead peers, as a last-seen sweep: frames only record `lastSeenAt`; the
 * check runs when the previous idle deadline falls due and either closes or names the next
 * time to look.
 */
export function idleCheck(
  lastSeenAt: number,
  now: number,
  config: LivenessConfig,
): { kind: "close"; reason: "idle_timeout" } | { kind: "schedule"; at: number } {
  const due = lastSeenAt + config.idleTimeoutMs;
  return now >= due ? { kind: "close", reason: "idle_timeout" } : { kind: "schedule", at: due };
}

/**
 * What a restarted gateway does with a session persisted while it held a connection: the
 * socket is gone (the process died: a graceful stop records its foreground sessions as closed
 * before it writes, see `UserState.closeSocketsForShutdown`).
 *
 * - A session without a deadline (connected in foreground when the process died) is held for
 *   `graceMs` (RESTART_GRACE_MS): it stays connected, so its user stays online, for its client
 *   to reconnect; a connect inside the grace ends the grace without a presence change (see
 *   `connected`). If none comes, the grace's deadline closes it as `server_shutdown`. With no
 *   grace it is recorded as closed by the shutdown at once.
 * - A session inside its background window (or a grace) keeps its deadline, which still fires;
 *   one whose deadline passed while the gateway was down is recorded as closed at that deadline.
 *
 * `bound` is the persisted bound that no announced deadline exceeds: after a crash the last
 * deadline written may be older than the last one announced, so the deadline restored is the
 * later of the two — never earlier than what the client was told.
 */
export function restore(
  state: SessionLiveness,
  now: number,
  bound: number | null = null,
  graceMs = 0,
): StepResult {
  if (!state.connected) return { state, decisions: none };
  if (state.deadline === null || state.deadlineReason === null) {
    if (graceMs <= 0) {
      return { state: disconnected(state, "server_shutdown", now), decisions: none };
    }
    const deadline = now + graceMs;
    return {
      state: { ...state, deadline, deadlineReason: "server_shutdown" },
      decisions: [{ kind: "schedule", at: deadline }],
    };
  }
  const deadline = bound !== null && bound > state.deadline ? bound : state.deadline;
  if (now >= deadline) {
    return { state: disconnected(state, state.deadlineReason, deadline), decisions: none };
  }
  const restored = deadline === state.deadline ? state : { ...state, deadline };
  return { state: restored, decisions: [{ kind: "schedule", at: deadline }] };
}

/**
 * The deadline a client is told about (`backgroundDeadline`): a background window's. The end of
 * a restart grace is not one (the session is in foreground, its client away).
 */
export function backgroundDeadlineOf(state: SessionLiveness): number | null {
  return state.deadlineReason === "server_shutdown" ? null : state.deadline;
}
