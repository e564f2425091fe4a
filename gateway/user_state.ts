/**
 * One single-writer state object per (app, user), Durable-Object style.
 *
 * Serialization: every change to a user's state goes through a method of its `UserState`, and
 * no such method awaits in the middle of a change, so the event loop runs them one at a time,
 * in arrival order. Async work (reading the store, verifying a credential) happens before the
 * call; waiting for durability happens after it (like a Durable Object's output gate: a reply
 * that reports a new session, a seq or a deadline is sent only once the store has it).
 *
 * Durability: changes are marked dirty and written by `StateWriter` as group commits, so no
 * storage write sits on the per-frame path; the deadline itself lives in the in-memory wheel.
 *
 * Deadlines across a crash (`kill -9`): a manual-mode ping moves a background deadline on every
 * ping, and writing each one would put the store on the ping path. Instead each session
 * persists a *bound* that runs up to `deadlineBoundMs` ahead of its deadline, rewritten only
 * when the deadline comes within half of that of it; a reply that announces a deadline beyond
 * the bound on disk waits for the write. So every deadline ever announced is ≤ a bound on disk,
 * and a restart after a crash restores each deadline as its bound: never earlier than
 * announced, at most `deadlineBoundMs` later. A graceful stop writes the exact deadlines.
 *
 * Memory: a state object with no connection, no pending deadline, no unwritten change and no
 * pin (a socket between its upgrade and its handshake) is evicted after `evictAfterMs` unused.
 */
import type {
  AppState,
  CloseReason,
  DisconnectReason,
  ErrorCode,
  Message,
  Mode,
  ServerFrame,
  SessionView,
} from "../contract/mod.ts";
import type { Clock, TimerHandle } from "./clock.ts";
import { DeadlineWheel } from "./deadline_wheel.ts";
import {
  initialLiveness,
  type LivenessConfig,
  type LivenessEvent,
  restore,
  type SessionLiveness,
  step,
} from "./liveness.ts";
import type {
  GatewayStore,
  SessionRecord,
  UserStateChange,
  UserStateRecord,
} from "./store/types.ts";

/** What the state object needs of a live socket. */
export interface SocketPort {
  send(frame: ServerFrame): void;
  /**
   * Writes an already encoded event frame; false when it was not written (the socket is
   * closing, or it is too far behind and is closed as `slow_consumer` instead).
   */
  sendEvent(text: string): boolean;
  /** Sends the `closing` frame and closes with the reason's code; idempotent. */
  close(reason: CloseReason): void;
  /** The session showed life on another channel (an HTTP ping) at `now`. */
  touch(now: number): void;
}

/** A session held in memory. */
export interface LiveSession {
  readonly owner: UserState;
  readonly sessionId: string;
  readonly mode: Mode;
  readonly createdAt: number;
  liveness: SessionLiveness;
  /** When the last accepted ping arrived; informational (status read), kept off the engine. */
  lastPingAt: number | null;
  socket: SocketPort | null;
  /** No deadline announced for this session is later than this bound (null: no deadline). */
  bound: number | null;
  /** The bound as last written to the store. */
  durableBound: number | null;
}

/**
 * The outcome of a call on a session: the error to answer with, or the session after it —
 * with `durable` when the reply announces a deadline the store does not cover yet: the reply
 * must wait for it.
 */
export type CallResult =
  | { ok: true; session: LiveSession; durable?: Promise<void> }
  | { ok: false; errorCode: ErrorCode };

/** Told about what the state objects do, for metrics and logs. */
export interface UserStateObserver {
  /** A deadline closed a session this many ms after it fell due. */
  deadlineFired?(latenessMs: number): void;
  /** A group commit took this long. */
  storeCommit?(ms: number): void;
  storeCommitFailed?(error: unknown): void;
  /** A deadline handler threw (the others still fire). */
  alarmFailed?(error: unknown): void;
}

/**
 * Sequence numbers are reserved in blocks, so that handing one out never waits for the store:
 * the next reservation is written when half of the block is used. A seq is handed out only
 * once its reservation is on disk (the first one after the state is loaded waits for that
 * write), so a restart — after a crash too — continues above every seq ever handed out. A
 * graceful stop writes back the last number used; a crash skips the rest of a block.
 */
const SEQ_BLOCK = 1_000;

/** A failed state write is tried again after this long (a failing store is not hammered). */
const RETRY_DELAY_MS = 1_000;

export interface UserStateRuntimeOptions {
  tickMs: number;
  persistDelayMs: number;
  /** See the module comment; 0 writes every deadline change. */
  deadlineBoundMs: number;
  observer?: UserStateObserver;
}

/** Shared machinery of all state objects of one gateway process. */
export class UserStateRuntime {
  readonly clock: Clock;
  readonly config: LivenessConfig;
  readonly store: GatewayStore;
  readonly writer: StateWriter;
  readonly alarms: DeadlineWheel<LiveSession>;
  readonly deadlineBoundMs: number;
  readonly observer: UserStateObserver;

  constructor(
    clock: Clock,
    config: LivenessConfig,
    store: GatewayStore,
    options: UserStateRuntimeOptions,
  ) {
    this.clock = clock;
    this.config = config;
    this.store = store;
    this.deadlineBoundMs = options.deadlineBoundMs;
    this.observer = options.observer ?? {};
    this.writer = new StateWriter(clock, store, {
      delayMs: options.persistDelayMs,
      retryDelayMs: RETRY_DELAY_MS,
      observer: this.observer,
    });
    this.alarms = new DeadlineWheel<LiveSession>(
      clock,
      options.tickMs,
      (session) => session.owner.alarm(session),
      (error) => this.observer.alarmFailed?.(error),
    );
  }

  /** Resolves when everything marked so far is on disk, retrying failed writes. */
  async durable(): Promise<void> {
    for (let attempt = 0;; attempt++) {
      try {
        return await this.writer.durable();
      } catch (error) {
        if (this.writer.closed) throw error;
        const wait = Math.min(RETRY_DELAY_MS * 2 ** attempt, 10 * RETRY_DELAY_MS);
        await new Promise<void>((resolve) => this.clock.setTimer(resolve, wait));
      }
    }
  }
}

export class UserState {
  readonly appId: string;
  readonly uid: string;
  readonly #runtime: UserStateRuntime;
  readonly #sessions = new Map<string, LiveSession>();
  #lastSeenAt: number | null;
  /** Sessions holding a connection; kept by `#setLiveness`, so presence is O(1) per event. */
  #connectedCount = 0;
  /** Sessions written or deleted since the last flush. */
  #dirtySessions = new Set<string>();
  #deletedSessions = new Set<string>();
  /**
   * The last event sequence number handed out, the highest one reserved (to be written), and
   * the highest reservation on disk.
   */
  #lastSeq: number;
  #seqReservedTo: number;
  #seqDurableTo: number;
  /** Every change bumps `#version`; `#writtenVersion` is the version the store has. */
  #version = 0;
  #writtenVersion = 0;
  /** Holders that keep this object in memory (sockets between upgrade and handshake). */
  #pins = 0;
  /** When the object was last asked for; eviction measures from here. */
  lastUsedAt: number;

  constructor(runtime: UserStateRuntime, appId: string, uid: string, loaded?: UserStateRecord) {
    this.#runtime = runtime;
    this.appId = appId;
    this.uid = uid;
    this.lastUsedAt = runtime.clock.now();
    this.#lastSeenAt = loaded?.meta.lastSeenAt ?? null;
    this.#lastSeq = this.#seqReservedTo = this.#seqDurableTo = loaded?.meta.seqReservedTo ?? 0;
    for (const record of loaded?.sessions ?? []) {
      const bound = record.deadlineBound ?? record.liveness.deadline;
      this.#sessions.set(record.sessionId, {
        owner: this,
        sessionId: record.sessionId,
        mode: record.mode,
        createdAt: record.createdAt,
        liveness: record.liveness,
        lastPingAt: record.lastPingAt ?? null,
        socket: null,
        bound,
        durableBound: bound,
      });
      if (record.liveness.connected) this.#connectedCount++;
    }
  }

  /** Online while at least one session holds a connection. */
  get online(): boolean {
    return this.#connectedCount > 0;
  }

  get lastSeenAt(): number | null {
    return this.#lastSeenAt;
  }

  session(sessionId: string): LiveSession | undefined {
    return this.#sessions.get(sessionId);
  }

  sessions(): IterableIterator<LiveSession> {
    return this.#sessions.values();
  }

  /** Keeps this object in memory until `unpin` (a socket that will attach to it soon). */
  pin(): void {
    this.#pins++;
  }

  unpin(): void {
    if (this.#pins > 0) this.#pins--;
  }

  /**
   * Whether the object can leave memory: nothing holds it, nothing in it is pending. (A
   * session with a deadline holds a connection, so `#connectedCount` covers alarms too.)
   */
  get evictable(): boolean {
    if (this.#pins > 0 || this.#connectedCount > 0 || this.#version !== this.#writtenVersion) {
      return false;
    }
    for (const session of this.#sessions.values()) if (session.socket !== null) return false;
    return true;
  }

  /**
   * Before leaving memory: gives back the unused rest of the seq block (written like any
   * change), so that the user's stream continues at the next number when it is loaded again.
   * True when a write was needed (the object is evictable once it is done).
   */
  releaseSeqs(): boolean {
    if (this.#seqReservedTo === this.#lastSeq) return false;
    this.#seqReservedTo = this.#lastSeq;
    this.#markDirty();
    return true;
  }

  /** Creates a session (login). */
  createSession(sessionId: string, mode: Mode): LiveSession {
    const session: LiveSession = {
      owner: this,
      sessionId,
      mode,
      createdAt: this.#runtime.clock.now(),
      liveness: initialLiveness(mode),
      lastPingAt: null,
      socket: null,
      bound: null,
      durableBound: null,
    };
    this.#sessions.set(sessionId, session);
    this.#markSession(sessionId);
    return session;
  }

  /** Ends a session (logout): the engine closes its connection, then the session is forgotten. */
  endSession(sessionId: string): boolean {
    const session = this.#sessions.get(sessionId);
    if (session === undefined) return false;
    this.#run(session, { type: "logout" }, this.#runtime.clock.now());
    this.#sessions.delete(sessionId);
    this.#dirtySessions.delete(sessionId);
    this.#deletedSessions.add(sessionId);
    this.#markDirty();
    return true;
  }

  /**
   * A socket completed its handshake for `sessionId`. An older socket of the same session is
   * closed as `replaced`; the new one then takes over the session's lifecycle.
   */
  attach(
    sessionId: string,
    socket: SocketPort,
    appState: AppState,
    backgroundService: boolean,
  ): CallResult {
    const session = this.#sessions.get(sessionId);
    if (session === undefined) return { ok: false, errorCode: "AUTH_ERR_AUTH_TOKEN_NOT_FOUND" };
    const now = this.#runtime.clock.now();
    this.#runDueDeadline(session, now);
    // While the old socket is still the session's: the engine's close for `replaced` is its.
    if (session.socket !== socket) this.#run(session, { type: "replaced" }, now);
    session.socket = socket;
    return this.#apply(session, { type: "connected", appState, backgroundService }, now);
  }

  /**
   * A session's socket closed without a lifecycle rule: the network or the client dropped it
   * (`connection_lost`), or a connection-level rule closed it (idle timeout, rate limit, size).
   */
  socketClosed(sessionId: string, socket: SocketPort, reason: DisconnectReason): void {
    const session = this.#sessions.get(sessionId);
    // A late close of a replaced socket must not touch the session its successor now holds.
    if (session === undefined || session.socket !== socket) return;
    session.socket = null;
    this.#run(session, { type: "closed", reason }, this.#runtime.clock.now());
  }

  /**
   * A lifecycle call on a session: ping, app state or disconnect, over the socket or HTTP.
   * `now` is when the frame or request was received (the caller has read the clock already).
   */
  call(sessionId: string, event: LivenessEvent, now = this.#runtime.clock.now()): CallResult {
    const session = this.#sessions.get(sessionId);
    if (session === undefined) return { ok: false, errorCode: "AUTH_ERR_AUTH_TOKEN_NOT_FOUND" };
    this.#runDueDeadline(session, now);
    const result = this.#apply(session, event, now);
    if (result.ok && event.type === "ping") {
      session.lastPingAt = now;
      // SPEC §4: a ping over HTTP keeps the connection too, not only the deadline.
      if (event.source === "http") session.socket?.touch(now);
    }
    return result;
  }

  /** The last event sequence number this user was given (0 before the first). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** How many seqs can be handed out now, without waiting for the store. */
  get seqCapacity(): number {
    return this.#seqDurableTo - this.#lastSeq;
  }

  /** Resolves once at least one seq can be handed out (its reservation is on disk). */
  seqReady(): Promise<void> {
    this.#reserveSeqs();
    return this.#runtime.durable();
  }

  /**
   * A message for this user: it takes the next sequence number and goes to every session that
   * holds a connection. Returns the seq and how many connections it was written to. Call only
   * with `seqCapacity > 0` (see `seqReady`).
   */
  deliver(message: Message): { seq: number; deliveredTo: number } {
    if (this.seqCapacity <= 0) throw new Error("deliver() without a durable seq reservation");
    // Encoded before the seq is taken: a message that cannot be encoded takes none.
    const body = JSON.stringify(message);
    const seq = ++this.#lastSeq;
    if (seq > this.#seqReservedTo - SEQ_BLOCK / 2) this.#reserveSeqs();
    let deliveredTo = 0;
    // The same frame for all of the user's connections.
    const text = `{"type":"message","seq":${seq},"message":${body}}`;
    for (const session of this.#sessions.values()) {
      if (session.socket === null) continue;
      if (session.socket.sendEvent(text)) deliveredTo++;
    }
    return { seq, deliveredTo };
  }

  /** The wheel says a session's deadline is due. */
  alarm(session: LiveSession): void {
    if (this.#sessions.get(session.sessionId) !== session) return;
    const deadline = session.liveness.deadline;
    const now = this.#runtime.clock.now();
    this.#run(session, { type: "deadline" }, now);
    if (deadline !== null && !session.liveness.connected) {
      this.#runtime.observer.deadlineFired?.(now - deadline);
    }
  }

  /**
   * After a restart: re-arm pending deadlines (each at its persisted bound, which is never
   * earlier than what was announced before a crash) and record the ones that passed meanwhile.
   */
  restoreAfterRestart(): void {
    const now = this.#runtime.clock.now();
    for (const session of this.#sessions.values()) {
      const before = session.liveness;
      const result = restore(before, now, session.durableBound);
      this.#setLiveness(session, result.state);
      session.bound = session.durableBound = result.state.deadline;
      for (const decision of result.decisions) {
        if (decision.kind === "schedule") this.#runtime.alarms.schedule(session, decision.at);
      }
      if (result.state !== before) this.#markSession(session.sessionId);
    }
  }

  /**
   * Shutdown: close sockets with 1012 and keep the state as it is, deadlines included, each
   * written exactly (bound = deadline). The unused rest of the seq block is given back, so a
   * graceful restart continues at the next number (only a crash leaves a gap).
   */
  closeSocketsForShutdown(): void {
    for (const session of this.#sessions.values()) {
      const socket = session.socket;
      session.socket = null;
      socket?.close("server_shutdown");
      const deadline = session.liveness.deadline;
      if (session.bound !== deadline || session.durableBound !== deadline) {
        session.bound = deadline;
        this.#markSession(session.sessionId);
      }
    }
    if (this.#seqReservedTo !== this.#lastSeq) {
      this.#seqReservedTo = this.#lastSeq;
      this.#markDirty();
    }
  }

  view(session: LiveSession): SessionView {
    const l = session.liveness;
    return {
      sessionId: session.sessionId,
      uid: this.uid,
      mode: session.mode,
      status: l.connected ? "connected" : "disconnected",
      appState: l.appState,
      backgroundService: l.backgroundService,
      backgroundDeadline: l.deadline,
      lastPingAt: session.lastPingAt,
      lastDisconnectReason: l.lastDisconnectReason,
      lastDisconnectAt: l.lastDisconnectAt,
      createdAt: session.createdAt,
    };
  }

  /** Hands the writer what changed since the last call, and the version it brings the store to. */
  takeChanges(): { change: UserStateChange; version: number } {
    const putSessions: SessionRecord[] = [];
    for (const sessionId of this.#dirtySessions) {
      const session = this.#sessions.get(sessionId);
      if (session === undefined) continue;
      putSessions.push({
        sessionId,
        mode: session.mode,
        createdAt: session.createdAt,
        lastPingAt: session.lastPingAt,
        liveness: session.liveness,
        deadlineBound: session.bound,
      });
    }
    const change: UserStateChange = {
      appId: this.appId,
      uid: this.uid,
      meta: {
        lastSeenAt: this.#lastSeenAt,
        held: this.#connectedCount > 0,
        seqReservedTo: this.#seqReservedTo,
      },
      putSessions,
      deleteSessions: [...this.#deletedSessions],
    };
    this.#dirtySessions.clear();
    this.#deletedSessions.clear();
    return { change, version: this.#version };
  }

  /** The store has `change`: what it covers is durable now. */
  changesWritten(change: UserStateChange, version: number): void {
    this.#writtenVersion = Math.max(this.#writtenVersion, version);
    this.#seqDurableTo = change.meta.seqReservedTo ?? 0;
    for (const record of change.putSessions) {
      const session = this.#sessions.get(record.sessionId);
      if (session !== undefined) {
        // What is on disk now, unless a change still to be written lowers it.
        const written = record.deadlineBound ?? null;
        const next = session.bound;
        session.durableBound = written === null || next === null ? null : Math.min(written, next);
      }
    }
  }

  /** Marks everything dirty again after a failed write (retried after a delay). */
  retryChanges(change: UserStateChange): void {
    for (const s of change.putSessions) {
      if (this.#sessions.has(s.sessionId)) this.#dirtySessions.add(s.sessionId);
    }
    for (const id of change.deleteSessions) {
      if (!this.#sessions.has(id)) this.#deletedSessions.add(id);
    }
    // Not "now": a store that keeps failing must not be hammered every millisecond.
    this.#markDirty("retry");
  }

  /**
   * A deadline that has passed runs before anything else reaches the session (its alarm may
   * lag by a tick): a connect or a call at or after it finds that connection already over.
   */
  #runDueDeadline(session: LiveSession, now: number): void {
    const deadline = session.liveness.deadline;
    if (!session.liveness.connected || deadline === null || now < deadline) return;
    this.#run(session, { type: "deadline" }, now);
    this.#runtime.observer.deadlineFired?.(now - deadline);
  }

  /**
   * Runs an event through the engine for a caller that answers with it: the error, or the
   * session and, when the answer announces a deadline the store does not cover yet, the write
   * to wait for.
   */
  #apply(session: LiveSession, event: LivenessEvent, now: number): CallResult {
    const rejected = this.#run(session, event, now);
    if (rejected !== null) return { ok: false, errorCode: rejected };
    const runtime = this.#runtime;
    const state = session.liveness;
    const deadline = state.deadline;
    const margin = state.deadlineReason === "liveness_timeout" ? runtime.deadlineBoundMs : 0;
    if (
      deadline !== null &&
      (session.durableBound === null || deadline > session.durableBound ||
        session.durableBound > deadline + margin)
    ) {
      return { ok: true, session, durable: runtime.durable() };
    }
    return { ok: true, session };
  }

  /**
   * Runs an event through the engine and applies its decisions to the socket, the alarm and
   * the store; returns the error code of a refused call. (Callers that answer nobody use this
   * directly: a `durable` promise nobody awaits would reject unheard at shutdown.)
   */
  #run(session: LiveSession, event: LivenessEvent, now: number): ErrorCode | null {
    const runtime = this.#runtime;
    const before = session.liveness;
    const { state, decisions } = step(before, event, now, runtime.config);
    this.#setLiveness(session, state);
    let rejected: ErrorCode | null = null;
    for (const decision of decisions) {
      switch (decision.kind) {
        case "close": {
          const socket = session.socket;
          session.socket = null;
          socket?.close(decision.reason);
          break;
        }
        case "reject":
          rejected = decision.errorCode;
          break;
        case "schedule":
          runtime.alarms.schedule(session, decision.at);
          break;
        case "cancel":
          runtime.alarms.cancel(session);
          break;
      }
    }
    if (state !== before) {
      const boundMoved = this.#moveBound(session, state);
      // A ping that only moves the deadline inside the bound on disk writes nothing.
      if (boundMoved || !onlyDeadlineMoved(before, state)) this.#markSession(session.sessionId);
    }
    return rejected;
  }

  /**
   * Keeps the session's bound ahead of its deadline (see the module comment); true when the
   * bound moved and must be written.
   */
  #moveBound(session: LiveSession, state: SessionLiveness): boolean {
    const deadline = state.deadline;
    if (deadline === null) {
      if (session.bound === null) return false;
      session.bound = null;
      // A write that ends the window may land any time now: the old bound no longer covers.
      session.durableBound = null;
      return true;
    }
    // Only a manual-mode window is moved by pings; the others are fixed when they start.
    const margin = state.deadlineReason === "liveness_timeout" ? this.#runtime.deadlineBoundMs : 0;
    if (
      session.bound !== null && deadline <= session.bound - margin / 2 &&
      session.bound <= deadline + margin
    ) return false;
    session.bound = deadline + margin;
    return true;
  }

  #reserveSeqs(): void {
    const target = this.#lastSeq + SEQ_BLOCK;
    if (target <= this.#seqReservedTo) return;
    this.#seqReservedTo = target;
    this.#markDirty();
  }

  #markSession(sessionId: string): void {
    this.#dirtySessions.add(sessionId);
    this.#markDirty();
  }

  #markDirty(urgency: Urgency = "now"): void {
    this.#version++;
    this.#runtime.writer.markDirty(this, urgency);
  }

  /** The one place a session's lifecycle state changes: keeps presence in step with it. */
  #setLiveness(session: LiveSession, next: SessionLiveness): void {
    const was = session.liveness.connected;
    session.liveness = next;
    if (was === next.connected) return;
    this.#connectedCount += next.connected ? 1 : -1;
    if (this.#connectedCount === 0) {
      // The user went offline: remember when (presence `lastSeenAt`).
      this.#lastSeenAt = this.#runtime.clock.now();
      this.#markDirty();
    } else if (next.connected && this.#connectedCount === 1) {
      this.#markDirty();
    }
  }
}

/** Only the deadline of an otherwise unchanged state moved (a manual-mode ping in background). */
function onlyDeadlineMoved(before: SessionLiveness, after: SessionLiveness): boolean {
  return before.connected === after.connected && before.appState === after.appState &&
    before.backgroundService === after.backgroundService &&
    before.deadlineReason === after.deadlineReason && before.deadline !== null &&
    after.deadline !== null && before.lastDisconnectReason === after.lastDisconnectReason;
}

/** How soon a change must reach the store: `now` (the group-commit delay) or after a `retry`. */
export type Urgency = "now" | "retry";

/**
 * Group commit of dirty user states: changes marked within `delayMs` of each other go to the
 * store in one write. `durable()` resolves once everything marked before it is on disk.
 */
export class StateWriter {
  readonly #clock: Clock;
  readonly #store: GatewayStore;
  readonly #delayMs: number;
  readonly #retryDelayMs: number;
  readonly #observer: UserStateObserver;
  #dirty = new Set<UserState>();
  #waiters: Array<{ resolve: () => void; reject: (error: unknown) => void }> = [];
  #timer: TimerHandle | null = null;
  #timerDue = Infinity;
  #timerKind: Urgency = "retry";
  #flushing: Promise<void> | null = null;
  /** What the next flush owes: the shortest delay asked for since the last one. */
  #pending: Urgency | null = null;
  #closed = false;

  constructor(
    clock: Clock,
    store: GatewayStore,
    options: { delayMs: number; retryDelayMs: number; observer?: UserStateObserver },
  ) {
    this.#clock = clock;
    this.#store = store;
    this.#delayMs = options.delayMs;
    this.#retryDelayMs = options.retryDelayMs;
    this.#observer = options.observer ?? {};
  }

  get closed(): boolean {
    return this.#closed;
  }

  markDirty(user: UserState, urgency: Urgency = "now"): void {
    this.#dirty.add(user);
    this.#want(urgency);
  }

  /** Resolves when every change marked so far has been written. */
  durable(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("the state writer is closed"));
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      this.#want("now");
    });
  }

  /** Writes everything now (shutdown). */
  async flushAll(): Promise<void> {
    while (this.#flushing !== null || this.#dirty.size > 0 || this.#waiters.length > 0) {
      if (this.#flushing !== null) await this.#flushing;
      else await this.#flush();
    }
  }

  close(): void {
    this.#closed = true;
    this.#disarm();
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(new Error("the state writer is closed"));
  }

  #want(urgency: Urgency): void {
    if (this.#pending !== "now") this.#pending = urgency;
    // A timer already armed for a delay at least this short covers it, without reading the
    // clock.
    if (this.#timer !== null && (this.#timerKind === "now" || urgency === "retry")) return;
    this.#arm();
  }

  /** Arms the timer for what is pending; a flush in flight re-arms when it ends. */
  #arm(): void {
    if (this.#pending === null || this.#flushing !== null || this.#closed) return;
    const now = this.#clock.now();
    const due = now + (this.#pending === "now" ? this.#delayMs : this.#retryDelayMs);
    if (this.#timer !== null && this.#timerDue <= due) return;
    this.#disarm();
    this.#timerDue = due;
    this.#timerKind = this.#pending;
    this.#timer = this.#clock.setTimer(() => {
      this.#timer = null;
      this.#timerDue = Infinity;
      void this.#flush();
    }, Math.max(0, due - now));
  }

  #disarm(): void {
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    this.#timerDue = Infinity;
  }

  async #flush(): Promise<void> {
    this.#disarm();
    this.#pending = null;
    const users = [...this.#dirty];
    this.#dirty.clear();
    const waiters = this.#waiters;
    this.#waiters = [];
    const taken = users.map((user) => user.takeChanges());
    const changes = taken.map((t) => t.change);
    const started = performance.now();
    const write = changes.length === 0 ? Promise.resolve() : this.#store.saveUserStates(changes);
    this.#flushing = write.then(
      () => {
        if (changes.length > 0) this.#observer.storeCommit?.(performance.now() - started);
        users.forEach((user, i) => user.changesWritten(taken[i].change, taken[i].version));
        for (const w of waiters) w.resolve();
      },
      (error) => {
        this.#observer.storeCommitFailed?.(error);
        users.forEach((user, i) => user.retryChanges(changes[i]));
        for (const w of waiters) w.reject(error);
      },
    ).finally(() => {
      this.#flushing = null;
      if (this.#waiters.length > 0) this.#pending = "now";
      this.#arm();
    });
    await this.#flushing;
  }
}

/** The state objects of this process, created on first use and loaded from the store. */
export class UserStates {
  readonly runtime: UserStateRuntime;
  readonly #users = new Map<string, UserState>();
  readonly #loading = new Map<string, Promise<UserState>>();
  readonly #evictAfterMs: number;
  #sweepTimer: TimerHandle | null = null;
  #stopped = false;

  constructor(runtime: UserStateRuntime, options: { evictAfterMs?: number } = {}) {
    this.runtime = runtime;
    this.#evictAfterMs = options.evictAfterMs ?? Infinity;
    this.#armSweep();
  }

  /** State objects in memory. */
  get size(): number {
    return this.#users.size;
  }

  /** The state object of a user, loading it once if needed. */
  get(appId: string, uid: string): Promise<UserState> {
    const key = userKey(appId, uid);
    const user = this.#users.get(key);
    if (user !== undefined) {
      user.lastUsedAt = this.runtime.clock.now();
      return Promise.resolve(user);
    }
    let loading = this.#loading.get(key);
    if (loading === undefined) {
      loading = this.runtime.store.loadUserState(appId, uid).then((record) => {
        const created = new UserState(this.runtime, appId, uid, record ?? undefined);
        this.#users.set(key, created);
        return created;
      }).finally(() => this.#loading.delete(key));
      this.#loading.set(key, loading);
    }
    return loading;
  }

  /** The state object if it is in memory. */
  peek(appId: string, uid: string): UserState | undefined {
    return this.#users.get(userKey(appId, uid));
  }

  /**
   * A read-only view for the read routes (presence, sessions): the object in memory, or one
   * built from the store and not kept, so that reads never fill memory.
   */
  async read(appId: string, uid: string): Promise<UserState> {
    const held = this.#users.get(userKey(appId, uid));
    if (held !== undefined) return held;
    const loading = this.#loading.get(userKey(appId, uid));
    if (loading !== undefined) return await loading;
    const record = await this.runtime.store.loadUserState(appId, uid);
    return this.#users.get(userKey(appId, uid)) ??
      new UserState(this.runtime, appId, uid, record ?? undefined);
  }

  /** Start-up: load the users that held a connection and restore their deadlines. */
  async revive(): Promise<number> {
    const held = await this.runtime.store.listHeldUsers();
    for (const { appId, uid } of held) (await this.get(appId, uid)).restoreAfterRestart();
    return held.length;
  }

  /**
   * Drops the state objects that are evictable and were not used for `evictAfterMs`. One that
   * still holds unused seqs gives them back first and goes at a later sweep, once written.
   */
  evictIdle(now = this.runtime.clock.now()): number {
    let evicted = 0;
    for (const [key, user] of this.#users) {
      if (now - user.lastUsedAt < this.#evictAfterMs || !user.evictable) continue;
      if (user.releaseSeqs()) continue;
      this.#users.delete(key);
      evicted++;
    }
    return evicted;
  }

  /** Stops the eviction sweep (shutdown; tests that simulate a crash). */
  stopTimers(): void {
    this.#stopped = true;
    if (this.#sweepTimer !== null) this.runtime.clock.clearTimer(this.#sweepTimer);
    this.#sweepTimer = null;
  }

  /** Shutdown: 1012 to every socket, then write everything. */
  async shutdown(): Promise<void> {
    this.stopTimers();
    for (const user of this.#users.values()) user.closeSocketsForShutdown();
    this.runtime.alarms.close();
    await this.runtime.writer.flushAll();
    this.runtime.writer.close();
  }

  #armSweep(): void {
    if (!Number.isFinite(this.#evictAfterMs) || this.#stopped) return;
    const every = Math.max(1_000, Math.floor(this.#evictAfterMs / 4));
    this.#sweepTimer = this.runtime.clock.setTimer(() => {
      this.#sweepTimer = null;
      this.evictIdle();
      this.#armSweep();
    }, every);
  }
}

function userKey(appId: string, uid: string): string {
  return `${appId}\u0000${uid}`;
}
