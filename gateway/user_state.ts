/**
 * One single-writer state object per (app, user), Durable-Object style.
 *
 * Serialization: every change to a user's state goes through a method of its `UserState`, and
 * no such method awaits in the middle of a change, so the event loop runs them one at a time,
 * in arrival order. Async work (reading the store, verifying a credential) happens before the
 * call; waiting for durability happens after it (like a Durable Object's output gate: a reply
 * that reports a new session is sent only once the session is on disk).
 *
 * Durability: changes are marked dirty and written by `StateWriter` as group commits, so no
 * storage write sits on the per-frame path; the deadline itself lives in the in-memory wheel.
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
import type { GatewayStore, SessionRecord, UserStateChange } from "./store/types.ts";

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
}

/** The outcome of a call on a session: the error to answer with, or the session after it. */
export type CallResult =
  | { ok: true; session: LiveSession }
  | { ok: false; errorCode: ErrorCode };

/**
 * Sequence numbers are reserved in blocks, so that handing one out never waits for the store:
 * the next reservation is written when half of the block is used, and a restart continues
 * above the last reservation written (a graceful stop writes back the last number used; a
 * crash skips the rest of a block). The first event
 * after the user's state is loaded is the exception: it goes out while its reservation is
 * still in the group commit (~1 ms), so a crash inside that window can hand its seq out again.
 */
const SEQ_BLOCK = 1_000;

/** Shared machinery of all state objects of one gateway process. */
export class UserStateRuntime {
  readonly clock: Clock;
  readonly config: LivenessConfig;
  readonly store: GatewayStore;
  readonly writer: StateWriter;
  readonly alarms: DeadlineWheel<LiveSession>;

  constructor(
    clock: Clock,
    config: LivenessConfig,
    store: GatewayStore,
    options: { tickMs: number; persistDelayMs: number; persistLazyMs: number },
  ) {
    this.clock = clock;
    this.config = config;
    this.store = store;
    this.writer = new StateWriter(clock, store, {
      delayMs: options.persistDelayMs,
      lazyDelayMs: options.persistLazyMs,
    });
    this.alarms = new DeadlineWheel<LiveSession>(
      clock,
      options.tickMs,
      (session) => session.owner.alarm(session),
    );
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
  /** The last event sequence number handed out, and the highest one reserved in the store. */
  #lastSeq: number;
  #seqReservedTo: number;

  constructor(
    runtime: UserStateRuntime,
    appId: string,
    uid: string,
    loaded?: { lastSeenAt: number | null; seqReservedTo?: number; sessions: SessionRecord[] },
  ) {
    this.#runtime = runtime;
    this.appId = appId;
    this.uid = uid;
    this.#lastSeenAt = loaded?.lastSeenAt ?? null;
    this.#lastSeq = this.#seqReservedTo = loaded?.seqReservedTo ?? 0;
    for (const record of loaded?.sessions ?? []) {
      this.#sessions.set(record.sessionId, {
        owner: this,
        sessionId: record.sessionId,
        mode: record.mode,
        createdAt: record.createdAt,
        liveness: record.liveness,
        lastPingAt: record.lastPingAt ?? null,
        socket: null,
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
    };
    this.#sessions.set(sessionId, session);
    this.#markDirty(sessionId);
    return session;
  }

  /** Ends a session (logout): closes its socket and forgets it. */
  endSession(sessionId: string): boolean {
    const session = this.#sessions.get(sessionId);
    if (session === undefined) return false;
    this.#runtime.alarms.cancel(session);
    const socket = session.socket;
    session.socket = null;
    this.#setLiveness(session, { ...session.liveness, connected: false });
    this.#sessions.delete(sessionId);
    this.#dirtySessions.delete(sessionId);
    this.#deletedSessions.add(sessionId);
    this.#runtime.writer.markDirty(this);
    socket?.close("logged_out");
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
    const previous = session.socket;
    session.socket = socket;
    if (previous !== null && previous !== socket) previous.close("replaced");
    return this.#apply(session, { type: "connected", appState, backgroundService });
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
    this.#apply(session, { type: "closed", reason });
  }

  /**
   * A lifecycle call on a session: ping, app state or disconnect, over the socket or HTTP.
   * `now` is when the frame or request was received (the caller has read the clock already).
   */
  call(sessionId: string, event: LivenessEvent, now = this.#runtime.clock.now()): CallResult {
    const session = this.#sessions.get(sessionId);
    if (session === undefined) return { ok: false, errorCode: "AUTH_ERR_AUTH_TOKEN_NOT_FOUND" };
    const result = this.#apply(session, event, now);
    if (result.ok && event.type === "ping") session.lastPingAt = now;
    return result;
  }

  /** The last event sequence number this user was given (0 before the first). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /**
   * A message for this user: it takes the next sequence number and goes to every session that
   * holds a connection. Returns the seq and how many connections it was written to.
   */
  deliver(message: Message): { seq: number; deliveredTo: number } {
    const seq = ++this.#lastSeq;
    if (seq > this.#seqReservedTo - SEQ_BLOCK / 2) {
      this.#seqReservedTo = seq + SEQ_BLOCK;
      this.#runtime.writer.markDirty(this);
    }
    let text: string | null = null;
    let deliveredTo = 0;
    for (const session of this.#sessions.values()) {
      if (session.socket === null) continue;
      // Encoded once for all of the user's connections.
      text ??= JSON.stringify({ type: "message", seq, message } satisfies ServerFrame);
      if (session.socket.sendEvent(text)) deliveredTo++;
    }
    return { seq, deliveredTo };
  }

  /** The wheel says a session's deadline is due. */
  alarm(session: LiveSession): void {
    if (this.#sessions.get(session.sessionId) !== session) return;
    this.#apply(session, { type: "deadline" });
  }

  /** After a restart: re-arm pending deadlines, record the ones that passed meanwhile. */
  restoreAfterRestart(): void {
    const now = this.#runtime.clock.now();
    for (const session of this.#sessions.values()) {
      const before = session.liveness;
      const result = restore(before, now);
      this.#setLiveness(session, result.state);
      for (const decision of result.decisions) {
        if (decision.kind === "schedule") this.#runtime.alarms.schedule(session, decision.at);
      }
      if (result.state !== before) this.#markDirty(session.sessionId);
    }
  }

  /**
   * Shutdown: close sockets with 1012 and keep the state as it is, deadlines included. The
   * unused rest of the seq block is given back, so a graceful restart continues at the next
   * number (only a crash leaves a gap).
   */
  closeSocketsForShutdown(): void {
    for (const session of this.#sessions.values()) {
      const socket = session.socket;
      session.socket = null;
      socket?.close("server_shutdown");
    }
    if (this.#seqReservedTo !== this.#lastSeq) {
      this.#seqReservedTo = this.#lastSeq;
      this.#runtime.writer.markDirty(this);
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

  /** Hands the writer what changed since the last call. */
  takeChanges(): UserStateChange {
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
    return change;
  }

  /** Marks everything dirty again after a failed write (retried after the lazy delay). */
  retryChanges(change: UserStateChange): void {
    for (const s of change.putSessions) {
      if (this.#sessions.has(s.sessionId)) this.#dirtySessions.add(s.sessionId);
    }
    for (const id of change.deleteSessions) {
      if (!this.#sessions.has(id)) this.#deletedSessions.add(id);
    }
    // Not "now": a store that keeps failing must not be hammered every millisecond.
    this.#runtime.writer.markDirty(this, "lazy");
  }

  #apply(
    session: LiveSession,
    event: LivenessEvent,
    now = this.#runtime.clock.now(),
  ): CallResult {
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
    if (state !== before) this.#markDirty(session.sessionId, urgencyOf(before, state));
    return rejected === null ? { ok: true, session } : { ok: false, errorCode: rejected };
  }

  #markDirty(sessionId: string, urgency: Urgency = "now"): void {
    this.#dirtySessions.add(sessionId);
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
      this.#runtime.writer.markDirty(this);
    } else if (next.connected && this.#connectedCount === 1) {
      this.#runtime.writer.markDirty(this);
    }
  }
}

/**
 * How soon a change must reach the store. A ping that only moves a background deadline later
 * is `lazy` (written within the lazy delay, or at shutdown): writing every one would put the
 * store on the per-ping path. Everything else — sessions, connections, app state, a deadline
 * set or cancelled — is written `now` (group-committed within the short delay).
 */
function urgencyOf(before: SessionLiveness, after: SessionLiveness): Urgency {
  const onlyExtended = before.connected === after.connected &&
    before.appState === after.appState && before.backgroundService === after.backgroundService &&
    before.deadlineReason === after.deadlineReason && before.deadline !== null &&
    after.deadline !== null && after.deadline >= before.deadline &&
    before.lastDisconnectReason === after.lastDisconnectReason;
  return onlyExtended ? "lazy" : "now";
}

export type Urgency = "now" | "lazy";

/**
 * Group commit of dirty user states: changes marked within `delayMs` of each other go to the
 * store in one write. `durable()` resolves once everything marked before it is on disk.
 */
export class StateWriter {
  readonly #clock: Clock;
  readonly #store: GatewayStore;
  readonly #delayMs: number;
  readonly #lazyDelayMs: number;
  #dirty = new Set<UserState>();
  #waiters: Array<{ resolve: () => void; reject: (error: unknown) => void }> = [];
  #timer: TimerHandle | null = null;
  #timerDue = Infinity;
  #timerKind: Urgency = "lazy";
  #flushing: Promise<void> | null = null;
  /** What the next flush owes: the shortest delay asked for since the last one. */
  #pending: Urgency | null = null;
  #closed = false;

  constructor(clock: Clock, store: GatewayStore, delays: { delayMs: number; lazyDelayMs: number }) {
    this.#clock = clock;
    this.#store = store;
    this.#delayMs = delays.delayMs;
    this.#lazyDelayMs = delays.lazyDelayMs;
  }

  markDirty(user: UserState, urgency: Urgency = "now"): void {
    this.#dirty.add(user);
    this.#want(urgency);
  }

  /** Resolves when every change marked so far has been written. */
  durable(): Promise<void> {
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
  }

  #want(urgency: Urgency): void {
    if (this.#pending !== "now") this.#pending = urgency;
    // Per-ping path: a timer already armed for a delay at least this short covers it, without
    // reading the clock.
    if (this.#timer !== null && (this.#timerKind === "now" || urgency === "lazy")) return;
    this.#arm();
  }

  /** Arms the timer for what is pending; a flush in flight re-arms when it ends. */
  #arm(): void {
    if (this.#pending === null || this.#flushing !== null || this.#closed) return;
    const due = this.#clock.now() + (this.#pending === "now" ? this.#delayMs : this.#lazyDelayMs);
    if (this.#timer !== null && this.#timerDue <= due) return;
    this.#disarm();
    this.#timerDue = due;
    this.#timerKind = this.#pending;
    this.#timer = this.#clock.setTimer(() => {
      this.#timer = null;
      this.#timerDue = Infinity;
      void this.#flush();
    }, due - this.#clock.now());
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
    const changes = users.map((user) => user.takeChanges());
    const write = changes.length === 0 ? Promise.resolve() : this.#store.saveUserStates(changes);
    this.#flushing = write.then(
      () => {
        for (const w of waiters) w.resolve();
      },
      (error) => {
        console.error("state write failed; will retry", error);
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

  constructor(runtime: UserStateRuntime) {
    this.runtime = runtime;
  }

  /** The state object of a user, loading it once if needed. */
  get(appId: string, uid: string): Promise<UserState> {
    const key = userKey(appId, uid);
    const user = this.#users.get(key);
    if (user !== undefined) return Promise.resolve(user);
    let loading = this.#loading.get(key);
    if (loading === undefined) {
      loading = this.runtime.store.loadUserState(appId, uid).then((record) => {
        const created = new UserState(this.runtime, appId, uid, {
          lastSeenAt: record?.meta.lastSeenAt ?? null,
          seqReservedTo: record?.meta.seqReservedTo,
          sessions: record?.sessions ?? [],
        });
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

  /** Start-up: load the users that held a connection and restore their deadlines. */
  async revive(): Promise<number> {
    const held = await this.runtime.store.listHeldUsers();
    for (const { appId, uid } of held) (await this.get(appId, uid)).restoreAfterRestart();
    return held.length;
  }

  /** Shutdown: 1012 to every socket, then write everything. */
  async shutdown(): Promise<void> {
    for (const user of this.#users.values()) user.closeSocketsForShutdown();
    this.runtime.alarms.close();
    await this.runtime.writer.flushAll();
    this.runtime.writer.close();
  }
}

function userKey(appId: string, uid: string): string {
  return `${appId}\u0000${uid}`;
}
