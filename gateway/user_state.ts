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
 * The event stream: `append` gives an event the next seq (1, 2, 3, … with no gaps, across
 * restarts and crashes too: the seq of the last event on disk is written with it) and marks it
 * for the next group commit. Nobody sees it before the store has it: it is written to the
 * user's sockets when the commit lands (`changesWritten`), in seq order, and the sender is
 * answered after that too. A crash before the commit loses only events nobody saw, whose seqs
 * are then handed out again. The last `streamCacheEvents` durable events stay in memory,
 * encoded, so that a resume usually replays without reading the store.
 *
 * Memory: a state object with no connection, no pending deadline, no unwritten change and no
 * pin (a socket between its upgrade and its handshake) is evicted after `evictAfterMs` unused.
 */
import type {
  AppState,
  CloseReason,
  DisconnectReason,
  ErrorCode,
  Mode,
  ServerFrame,
  SessionView,
  StreamPosition,
  StreamStatus,
} from "../contract/mod.ts";
import type { Clock, TimerHandle } from "./clock.ts";
import { DeadlineWheel } from "./deadline_wheel.ts";
import {
  backgroundDeadlineOf,
  initialLiveness,
  type LivenessConfig,
  type LivenessEvent,
  restore,
  type SessionLiveness,
  step,
} from "./liveness.ts";
import { type ClusterPort, HolderUnanswered, OwnedElsewhere } from "./cluster/port.ts";
import { GatewayError } from "./errors.ts";
import {
  FencedWriteError,
  type GatewayStore,
  type SendRecord,
  type SessionRecord,
  type StoredEvent,
  type UserClaim,
  type UserStateChange,
  type UserStateRecord,
} from "./store/types.ts";

/** The server frames written already encoded: stream events and the live relays. */
export type EventFrameType = "message" | "sent" | "typing_started" | "typing_ended" | "presence";

/** What the state object needs of a live socket. */
export interface SocketPort {
  send(frame: ServerFrame): void;
  /**
   * Writes an already encoded event frame of `type` (default `message`); false when it was not
   * written (the socket is closing, or it is too far behind and is closed as `slow_consumer`
   * instead).
   */
  sendEvent(text: string, type?: EventFrameType): boolean;
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

const NO_SESSIONS: SessionRecord[] = Object.freeze([]) as unknown as SessionRecord[];
const NO_SESSION_IDS: string[] = Object.freeze([]) as unknown as string[];

/** What the writer took from a state object: the change, its version, the events it carries. */
export interface TakenChange {
  change: UserStateChange;
  version: number;
  events: AppendedEvent[];
}

/** Who appended an event: the sending session is answered with `sent` instead of the event. */
export interface EventOrigin {
  session: LiveSession;
  /** The `send` frame's id, when the send came over the socket. */
  frameId?: string | number;
}

/** An appended event, until it is durable and delivered. */
export interface AppendedEvent {
  readonly seq: number;
  readonly at: number;
  /** The message, JSON. */
  readonly body: string;
  readonly origin?: EventOrigin;
  /** Connections it was written to, once delivered. */
  deliveredTo: number;
}

/**
 * The most recent durable events of a stream, in memory. Kept as columns, not one object per
 * event: every event of a burst stays alive here, and the garbage collector copies each object
 * that survives (a young-generation scavenge costs what survives it, bench/comparisons.md).
 * The seqs are consecutive, from `first`.
 */
class StreamCache {
  first = 0;
  readonly ats: number[] = [];
  readonly bodies: string[] = [];
  /** Characters of the bodies held. */
  chars = 0;

  get length(): number {
    return this.bodies.length;
  }

  push(seq: number, at: number, body: string): void {
    if (this.bodies.length === 0) this.first = seq;
    this.ats.push(at);
    this.bodies.push(body);
    this.chars += body.length;
  }

  /**
   * Keeps at most the last `keep` events, and at most `maxChars` characters of them (but the
   * newest event, whatever its size).
   */
  trim(keep: number, maxChars: number): void {
    let drop = Math.max(0, this.bodies.length - keep);
    let chars = this.chars;
    for (let i = 0; i < drop; i++) chars -= this.bodies[i].length;
    while (drop < this.bodies.length - 1 && chars > maxChars) {
      chars -= this.bodies[drop++].length;
    }
    if (drop === 0) return;
    this.ats.splice(0, drop);
    this.bodies.splice(0, drop);
    this.first += drop;
    this.chars = chars;
  }

  /** Up to `limit` events from seq `from` on. */
  slice(from: number, limit: number): StoredEvent[] {
    const events: StoredEvent[] = [];
    for (let i = from - this.first; i < this.bodies.length && events.length < limit; i++) {
      events.push({ seq: this.first + i, at: this.ats[i], body: this.bodies[i] });
    }
    return events;
  }
}

/** The outcome of a resume request, when it can be decided from memory. */
export type ReplayPlan =
  | { kind: "ready"; stream: StreamStatus; frames: string[] }
  /** The events after `after` (up to `limit`) must be read from the store first. */
  | { kind: "read"; after: number; limit: number };

export interface StreamOptions {
  /** Events older than this are gone (retention by age). */
  retentionMs: number;
  /** Most events kept per stream (retention by count). */
  maxEvents: number;
  /** Most recent events held in memory per user. */
  cacheEvents: number;
  /** Most characters of message bodies held in memory per user (large messages hold fewer). */
  cacheChars: number;
  /** Most events replayed on connect. */
  replayLimit: number;
  /** Most bytes replayed on connect (so a replay never trips the output limit). */
  replayMaxBytes: number;
}

export const DEFAULT_STREAM_OPTIONS: StreamOptions = {
  retentionMs: 24 * 3600_000,
  maxEvents: 10_000,
  cacheEvents: 512,
  cacheChars: 256 * 1024,
  replayLimit: 1_000,
  replayMaxBytes: 512 * 1024,
};

/** Told about what the state objects do, for metrics and logs. */
export interface UserStateObserver {
  /** A deadline closed a session this many ms after it fell due. */
  deadlineFired?(latenessMs: number): void;
  /** A group commit took this long. */
  storeCommit?(ms: number): void;
  storeCommitFailed?(error: unknown): void;
  /** A deadline handler threw (the others still fire). */
  alarmFailed?(error: unknown): void;
  /** A user came online (first connected session) or went offline (last one), at `at`. */
  presenceChanged?(user: UserState, online: boolean, at: number): void;
  /** In a cluster: a write of this user was refused, another node holds it now. */
  claimLost?(user: UserState): void;
}

/** A failed state write is tried again after this long (a failing store is not hammered). */
const RETRY_DELAY_MS = 1_000;

export interface UserStateRuntimeOptions {
  tickMs: number;
  persistDelayMs: number;
  /** See the module comment; 0 writes every deadline change. */
  deadlineBoundMs: number;
  observer?: UserStateObserver;
  stream?: Partial<StreamOptions>;
  /**
   * After a crash, how long a session that was connected in foreground stays connected for its
   * client to come back (RESTART_GRACE_MS; see `restore` in liveness.ts). Default 0: none.
   */
  restartGraceMs?: number;
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
  readonly stream: StreamOptions;
  readonly restartGraceMs: number;

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
    this.stream = { ...DEFAULT_STREAM_OPTIONS, ...options.stream };
    this.restartGraceMs = options.restartGraceMs ?? 0;
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
  /** The last seq handed out, and the last one durable (on disk, written to the sockets). */
  #lastSeq: number;
  #durableSeq: number;
  #epoch: string;
  /** Seqs below this are deleted or about to be (retention by count). */
  #droppedBelow: number;
  /** Appended events the writer has not taken yet. */
  #pending: AppendedEvent[] = [];
  /** The most recent durable events (see `streamCacheEvents`). */
  readonly #cache = new StreamCache();
  /** Send results to write with the next change. */
  #sendRecords: SendRecord[] = [];
  /**
   * Sends of this user by client id, recent ones: a retry that arrives while the first is
   * still under way waits for its result instead of sending again. Bounded; older ids are
   * found in the store.
   */
  readonly sends = new Map<string, Promise<SendOutcome>>();
  /** Every change bumps `#version`; `#writtenVersion` is the version the store has. */
  #version = 0;
  #writtenVersion = 0;
  /** Holders that keep this object in memory (sockets between upgrade and handshake). */
  #pins = 0;
  /** When the object was last asked for; eviction measures from here. */
  lastUsedAt: number;
  /** In a cluster: this node's claim on the user, sent with every write (fencing). */
  claim: UserClaim | null = null;
  /** In a cluster: the claim was lost (a write was fenced); the object is being dropped. */
  lost = false;

  constructor(runtime: UserStateRuntime, appId: string, uid: string, loaded?: UserStateRecord) {
    this.#runtime = runtime;
    this.appId = appId;
    this.uid = uid;
    this.lastUsedAt = runtime.clock.now();
    this.#lastSeenAt = loaded?.meta.lastSeenAt ?? null;
    this.#lastSeq = this.#durableSeq = loaded?.meta.seqReservedTo ?? 0;
    this.#epoch = loaded?.meta.epoch ?? newEpoch();
    this.#droppedBelow = Math.max(1, this.#lastSeq - runtime.stream.maxEvents + 1);
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

  /** The stream's epoch. */
  get epoch(): string {
    return this.#epoch;
  }

  /** The last seq of the stream that is durable (0 before the first event). */
  get streamSeq(): number {
    return this.#durableSeq;
  }

  /** The last seq handed out (durable or not yet). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /**
   * Appends a message to this user's stream: it takes the next seq and is written with the next
   * group commit, then delivered to every connected session (the `origin` session gets `sent`
   * instead). Await `runtime.durable()` before acknowledging anything about it.
   */
  append(body: string, origin?: EventOrigin): AppendedEvent {
    const event: AppendedEvent = {
      seq: ++this.#lastSeq,
      at: this.#runtime.clock.now(),
      body,
      origin,
      deliveredTo: 0,
    };
    this.#pending.push(event);
    this.#markDirty();
    return event;
  }

  /** Remembers a send's result with the next write (idempotent retries). */
  recordSend(record: SendRecord): void {
    this.#sendRecords.push(record);
    this.#markDirty();
  }

  /**
   * What to send a connection that asks to resume after `resume`: the stream status and the
   * frames to replay, or the store read that must come first. `fetched` holds what earlier
   * reads for this resume returned, and the stream's last seq when they were asked for.
   */
  planReplay(
    resume: StreamPosition | undefined,
    fetched?: { events: StoredEvent[]; upTo: number },
  ): ReplayPlan {
    const head = this.#durableSeq;
    const options = this.#runtime.stream;
    const status = (reason?: StreamStatus["reason"], replayed = 0): StreamStatus => ({
      epoch: this.#epoch,
      seq: head,
      recovered: reason === undefined,
      ...(reason === undefined ? {} : { reason }),
      replayed,
    });
    const refuse = (reason: NonNullable<StreamStatus["reason"]>): ReplayPlan => ({
      kind: "ready",
      stream: status(reason),
      frames: [],
    });
    if (resume === undefined) return refuse("no_position");
    if (resume.epoch !== this.#epoch) return refuse("epoch_changed");
    if (resume.seq > head) return refuse("ahead_of_stream");
    // Caught up: nothing to replay, whatever retention has dropped since.
    if (resume.seq === head) return { kind: "ready", stream: status(undefined, 0), frames: [] };
    if (head - resume.seq > options.replayLimit) return refuse("replay_limit");
    if (resume.seq + 1 < Math.max(this.#droppedBelow, head - options.maxEvents + 1)) {
      return refuse("retention");
    }
    const minAt = this.#runtime.clock.now() - options.retentionMs;
    const frames: string[] = [];
    let next = resume.seq + 1;
    let bytes = 0;
    let gone = false;
    const take = (seq: number, at: number, text: string) => {
      if (seq < next || seq > head) return;
      if (seq !== next || at < minAt) {
        gone = true;
        return;
      }
      frames.push(text);
      bytes += text.length;
      next++;
    };
    for (const event of fetched?.events ?? []) {
      if (gone) break;
      take(event.seq, event.at, messageFrame(event.seq, event.body));
    }
    // What the reads did not find, although the stream had it when they were made, is gone.
    if (!gone && fetched !== undefined && next <= Math.min(fetched.upTo, head)) gone = true;
    if (gone) return refuse("retention");
    if (next <= head) {
      const cached = this.#cache;
      if (cached.length === 0 || cached.first > next) {
        return { kind: "read", after: next - 1, limit: head - next + 1 };
      }
      for (let i = next - cached.first; i < cached.length && !gone; i++) {
        const seq = cached.first + i;
        take(seq, cached.ats[i], messageFrame(seq, cached.bodies[i]));
      }
      if (gone || next <= head) return refuse("retention");
    }
    if (bytes > options.replayMaxBytes) return refuse("replay_limit");
    return { kind: "ready", stream: status(undefined, frames.length), frames };
  }

  /** One page of the stream after `after` (the history route). */
  async history(after: number, limit: number): Promise<HistoryPageData> {
    const head = this.#durableSeq;
    const options = this.#runtime.stream;
    const oldest = Math.max(this.#droppedBelow, head - options.maxEvents + 1, 1);
    const from = Math.min(Math.max(after, oldest - 1), head);
    const minAt = this.#runtime.clock.now() - options.retentionMs;
    const events: StoredEvent[] = [];
    let nextAfter = from;
    if (from < head) {
      const cached = this.#cache;
      const source = cached.length > 0 && cached.first <= from + 1
        ? cached.slice(from + 1, limit)
        : await this.#runtime.store.readEvents(this.appId, this.uid, from, limit);
      for (const event of source) {
        if (event.seq > head) break;
        nextAfter = event.seq;
        if (event.at >= minAt) events.push(event);
      }
      // Nothing left between here and the head: the rest is gone (retention).
      if (source.length < limit && nextAfter < head) nextAfter = head;
    }
    return { epoch: this.#epoch, events, lastSeq: head, nextAfter, hasMore: nextAfter < head };
  }

  /** The wheel says a session's deadline is due. */
  alarm(session: LiveSession): void {
    // A user given up (claim lost) has its deadlines run by the node that holds it now.
    if (this.lost || this.#sessions.get(session.sessionId) !== session) return;
    const deadline = session.liveness.deadline;
    const now = this.#runtime.clock.now();
    this.#run(session, { type: "deadline" }, now);
    if (deadline !== null && !session.liveness.connected) {
      this.#runtime.observer.deadlineFired?.(now - deadline);
    }
  }

  /**
   * After a restart: re-arm pending deadlines (each at its persisted bound, which is never
   * earlier than what was announced before a crash), record the ones that passed meanwhile, and
   * hold the sessions that were connected in foreground when the process died for the restart
   * grace (their users stay online unless the grace ends without their client).
   */
  restoreAfterRestart(graceMs = this.#runtime.restartGraceMs): void {
    const now = this.#runtime.clock.now();
    for (const session of this.#sessions.values()) {
      const before = session.liveness;
      const result = restore(before, now, session.durableBound, graceMs);
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
   * written exactly (bound = deadline). A connection without a deadline ends here, and is
   * recorded so (`server_shutdown`): only a crash leaves such a session connected on disk, which
   * is how a restart knows to give it the restart grace.
   */
  closeSocketsForShutdown(): void {
    const now = this.#runtime.clock.now();
    for (const session of this.#sessions.values()) {
      const socket = session.socket;
      session.socket = null;
      socket?.close("server_shutdown");
      if (session.liveness.connected && session.liveness.deadline === null) {
        this.#run(session, { type: "closed", reason: "server_shutdown" }, now);
      }
      const deadline = session.liveness.deadline;
      if (session.bound !== deadline || session.durableBound !== deadline) {
        session.bound = deadline;
        this.#markSession(session.sessionId);
      }
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
      backgroundDeadline: backgroundDeadlineOf(l),
      lastPingAt: session.lastPingAt,
      lastDisconnectReason: l.lastDisconnectReason,
      lastDisconnectAt: l.lastDisconnectAt,
      createdAt: session.createdAt,
    };
  }

  /** Hands the writer what changed since the last call, and the version it brings the store to. */
  takeChanges(): TakenChange {
    // Most changes under load carry events only: they share empty session lists.
    const putSessions: SessionRecord[] = this.#dirtySessions.size === 0 ? NO_SESSIONS : [];
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
    const appended = this.#pending;
    this.#pending = [];
    const options = this.#runtime.stream;
    // Retention by count: the oldest events go, a bounded number per write.
    let dropEvents: UserStateChange["dropEvents"];
    const keepFrom = this.#lastSeq - options.maxEvents + 1;
    if (keepFrom > this.#droppedBelow) {
      const below = Math.min(keepFrom, this.#droppedBelow + MAX_DROPS_PER_WRITE);
      dropEvents = { from: this.#droppedBelow, below };
      this.#droppedBelow = below;
    }
    const sendRecords = this.#sendRecords;
    this.#sendRecords = [];
    const change: UserStateChange = {
      appId: this.appId,
      uid: this.uid,
      meta: {
        lastSeenAt: this.#lastSeenAt,
        held: this.#connectedCount > 0,
        // Every seq handed out is in this change: the stream continues above it after a crash.
        seqReservedTo: this.#lastSeq,
        epoch: this.#epoch,
      },
      putSessions,
      deleteSessions: this.#deletedSessions.size === 0
        ? NO_SESSION_IDS
        : [...this.#deletedSessions],
      retentionMs: options.retentionMs,
    };
    if (this.claim !== null) change.owner = this.claim;
    if (appended.length > 0) {
      change.appendEvents = appended.map(({ seq, at, body }) => ({ seq, at, body }));
    }
    if (dropEvents !== undefined) change.dropEvents = dropEvents;
    if (sendRecords.length > 0) change.sendRecords = sendRecords;
    this.#dirtySessions.clear();
    this.#deletedSessions.clear();
    return { change, version: this.#version, events: appended };
  }

  /** The store has `change`: what it covers is durable now, and its events go out. */
  changesWritten({ change, version, events }: TakenChange): void {
    this.#writtenVersion = Math.max(this.#writtenVersion, version);
    for (const record of change.putSessions) {
      const session = this.#sessions.get(record.sessionId);
      if (session !== undefined) {
        // What is on disk now, unless a change still to be written lowers it.
        const written = record.deadlineBound ?? null;
        const next = session.bound;
        session.durableBound = written === null || next === null ? null : Math.min(written, next);
      }
    }
    if (events.length > 0) this.#deliver(events);
  }

  /** Marks everything dirty again after a failed write (retried after a delay). */
  retryChanges({ change, events }: TakenChange): void {
    for (const s of change.putSessions) {
      if (this.#sessions.has(s.sessionId)) this.#dirtySessions.add(s.sessionId);
    }
    for (const id of change.deleteSessions) {
      if (!this.#sessions.has(id)) this.#deletedSessions.add(id);
    }
    // The failed change's events come before any appended since (writes are serial).
    if (events.length > 0) this.#pending = [...events, ...this.#pending];
    if (change.sendRecords !== undefined) {
      this.#sendRecords = [...change.sendRecords, ...this.#sendRecords];
    }
    if (change.dropEvents !== undefined) {
      this.#droppedBelow = Math.min(this.#droppedBelow, change.dropEvents.from);
    }
    // Not "now": a store that keeps failing must not be hammered every millisecond.
    this.#markDirty("retry");
  }

  /** Durable events: into the cache, then to every connected session, in seq order. */
  #deliver(events: AppendedEvent[]): void {
    const cache = this.#cache;
    const cap = this.#runtime.stream.cacheEvents;
    for (const event of events) {
      this.#durableSeq = event.seq;
      // The same frame for all of the user's connections; the cache keeps the body only (a
      // replay builds its frames again), so that the frame dies young.
      const text = messageFrame(event.seq, event.body);
      if (cap > 0) cache.push(event.seq, event.at, event.body);
      const origin = event.origin;
      for (const session of this.#sessions.values()) {
        const socket = session.socket;
        if (socket === null) continue;
        const frame = origin?.session === session
          ? sentFrame(origin.frameId, event.seq, event.body, false)
          : text;
        if (socket.sendEvent(frame)) event.deliveredTo++;
      }
    }
    // Trimmed in chunks, so that the cache costs O(1) per event: down to the count, and to half
    // the size limit once it is passed.
    const maxChars = this.#runtime.stream.cacheChars;
    if (cache.length > cap * 2 || cache.chars > maxChars) cache.trim(cap, maxChars / 2);
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
      const now = this.#runtime.clock.now();
      this.#lastSeenAt = now;
      this.#markDirty();
      // A user given up says nothing: its presence is the new holder's to publish.
      if (!this.lost) this.#runtime.observer.presenceChanged?.(this, false, now);
    } else if (next.connected && this.#connectedCount === 1) {
      this.#markDirty();
      if (!this.lost) {
        this.#runtime.observer.presenceChanged?.(this, true, this.#runtime.clock.now());
      }
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
  /** Flushes the store refused, all told (flushAll backs off on them). */
  #failedFlushes = 0;
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
    // A user whose claim is lost is never written again (the writes would be refused).
    if (user.lost) return;
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

  /**
   * Writes everything now (shutdown). A store that keeps failing is tried again with a growing
   * pause, until `giveUpAfterMs`: what is still unwritten then was never acknowledged (every
   * answer waits for its write), and a stop must end rather than spin on a store that is gone.
   */
  async flushAll(giveUpAfterMs = 10_000): Promise<boolean> {
    const giveUpAt = this.#clock.now() + giveUpAfterMs;
    for (let failures = 0;;) {
      if (this.#flushing !== null) {
        await this.#flushing;
        continue;
      }
      if (this.#dirty.size === 0 && this.#waiters.length === 0) return true;
      const failedBefore = this.#failedFlushes;
      await this.#flush();
      if (this.#failedFlushes === failedBefore) {
        failures = 0;
        continue;
      }
      const wait = Math.min(100 * 2 ** failures++, 2_000);
      if (this.#clock.now() + wait > giveUpAt) return false;
      await new Promise<void>((resolve) => this.#clock.setTimer(resolve, wait));
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
        users.forEach((user, i) => user.changesWritten(taken[i]));
        for (const w of waiters) w.resolve();
      },
      (error) => {
        this.#failedFlushes++;
        this.#observer.storeCommitFailed?.(error);
        // Fenced users are given up (another node writes them now); the others are retried.
        const fenced = error instanceof FencedWriteError
          ? new Set(error.users.map((u) => userKey(u.appId, u.uid)))
          : null;
        users.forEach((user, i) => {
          if (fenced?.has(userKey(user.appId, user.uid))) {
            user.lost = true;
            this.#observer.claimLost?.(user);
          } else user.retryChanges(taken[i]);
        });
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
  readonly #cluster: ClusterPort | undefined;
  #sweepTimer: TimerHandle | null = null;
  #stopped = false;

  constructor(
    runtime: UserStateRuntime,
    options: { evictAfterMs?: number; cluster?: ClusterPort } = {},
  ) {
    this.runtime = runtime;
    this.#evictAfterMs = options.evictAfterMs ?? Infinity;
    this.#cluster = options.cluster;
    this.#armSweep();
  }

  /**
   * Whether writes can reach the store now (false while Redis is away): a write that cannot is
   * refused before anything is changed, rather than left waiting.
   */
  writable: () => boolean = () => true;
  /** Longest wait for a write to be confirmed before the caller is answered 503. */
  confirmWithinMs = Infinity;

  /** Resolves once everything marked so far is stored; 503 when it takes too long. */
  async durable(): Promise<void> {
    if (!Number.isFinite(this.confirmWithinMs)) return await this.runtime.durable();
    let timer: TimerHandle | null = null;
    try {
      await Promise.race([
        this.runtime.durable(),
        new Promise<never>((_, reject) => {
          timer = this.runtime.clock.setTimer(
            () => reject(new GatewayError("ERR_SERVICE_UNAVAILABLE", NOT_CONFIRMED)),
            this.confirmWithinMs,
          );
        }),
      ]);
    } finally {
      if (timer !== null) this.runtime.clock.clearTimer(timer);
    }
  }

  /** Refuses (503) a write that cannot reach the store now; nothing is changed. */
  requireWritable(): void {
    if (!this.writable()) throw new GatewayError("ERR_SERVICE_UNAVAILABLE", STORE_AWAY);
  }

  /** State objects in memory. */
  get size(): number {
    return this.#users.size;
  }

  /**
   * The state object of a user, loading it once if needed. In a cluster the user is claimed
   * first; when a live node holds it, this throws `OwnedElsewhere` (the work goes there), or,
   * with `where` = "here" (a socket of the user connects to this node), asks that node to
   * hand the user over first, which it does when no socket of the user is there.
   */
  get(appId: string, uid: string, where: "here" | "anywhere" = "anywhere"): Promise<UserState> {
    const key = userKey(appId, uid);
    const user = this.#users.get(key);
    if (user !== undefined) {
      user.lastUsedAt = this.runtime.clock.now();
      return Promise.resolve(user);
    }
    let loading = this.#loading.get(key);
    if (loading === undefined) {
      loading = this.#load(appId, uid, where).finally(() => this.#loading.delete(key));
      this.#loading.set(key, loading);
    }
    return loading;
  }

  async #load(appId: string, uid: string, where: "here" | "anywhere"): Promise<UserState> {
    let claim: UserClaim | null = null;
    const cluster = this.#cluster;
    if (cluster !== undefined) {
      for (let attempt = 0;; attempt++) {
        const result = await cluster.claim(appId, uid);
        if ("fence" in result) {
          claim = result;
          break;
        }
        if (where !== "here" || attempt >= 3) throw new OwnedElsewhere(result.owner, appId, uid);
        const answer = await cluster.requestHandoff(result.owner, appId, uid);
        // A holder that does not answer gets no more work (nor a relay): 503, and the client
        // tries again, by when the node answers or its users are taken over.
        if (answer === "unanswered") throw new HolderUnanswered(result.owner);
        if (answer === "refused") throw new OwnedElsewhere(result.owner, appId, uid);
      }
    }
    const record = await this.runtime.store.loadUserState(appId, uid);
    const created = new UserState(this.runtime, appId, uid, record ?? undefined);
    if (claim !== null) {
      created.claim = claim;
      // Claimed: whichever node held the user before is gone or gave it up with no socket,
      // so a session still recorded as connected lost its connection (a dead node's), and its
      // deadlines are armed again, never earlier than announced. No grace: its socket is gone.
      created.restoreAfterRestart(0);
    }
    this.#users.set(userKey(appId, uid), created);
    return created;
  }

  /**
   * In a cluster, another node asks for a user (a socket of it connects there): this node
   * gives it up when nothing holds it here. True when the user is not held here any more.
   */
  async handOff(appId: string, uid: string): Promise<boolean> {
    const key = userKey(appId, uid);
    if (this.#loading.has(key)) return false;
    const user = this.#users.get(key);
    if (user !== undefined) {
      if (!user.evictable) return false;
      this.#users.delete(key);
    }
    if (user?.claim) await this.#cluster?.release(appId, uid, user.claim);
    return true;
  }

  /** The users in memory that hold a claim (in a cluster). */
  claimed(): UserState[] {
    return [...this.#users.values()].filter((user) => user.claim !== null);
  }

  /** A user whose claim was lost leaves memory at once; its sockets are closed (1012). */
  drop(user: UserState): void {
    const key = userKey(user.appId, user.uid);
    if (this.#users.get(key) === user) this.#users.delete(key);
    user.closeSocketsForShutdown();
  }

  /** Every user leaves memory (a Redis that restarted empty: what they hold is gone). */
  dropAll(): void {
    const users = [...this.#users.values()];
    this.#users.clear();
    for (const user of users) {
      // Lost first: nothing of it is written into the empty store (a stream recreated there
      // at its old epoch would claim events that are gone).
      user.lost = true;
      user.closeSocketsForShutdown();
    }
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

  /** Drops the state objects that are evictable and were not used for `evictAfterMs`. */
  evictIdle(now = this.runtime.clock.now()): number {
    let evicted = 0;
    for (const [key, user] of this.#users) {
      if (now - user.lastUsedAt < this.#evictAfterMs || !user.evictable) continue;
      this.#users.delete(key);
      // In a cluster the claim goes too, so the next node that needs the user just takes it.
      if (user.claim !== null) {
        this.#cluster?.release(user.appId, user.uid, user.claim).catch(() => {});
      }
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
    if (!await this.runtime.writer.flushAll()) {
      this.runtime.observer.storeCommitFailed?.(
        new Error("stopping: the store kept refusing the last writes; they are not written"),
      );
    }
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

const STORE_AWAY = "The store is unreachable; nothing was changed: try again.";
const NOT_CONFIRMED = "The store did not confirm the write in time. It may still be stored " +
  "when the store answers again: retry a send with the same clientMessageId.";

/** Events deleted per write at most (retention by count), so one write stays small. */
const MAX_DROPS_PER_WRITE = 500;

/** The result of a user's send: the message, its seq in the sender's stream. */
export interface SendOutcome {
  body: string;
  seq: number;
  duplicate: boolean;
}

/** One page of a user's stream, as the history route answers it (bodies still encoded). */
export interface HistoryPageData {
  epoch: string;
  events: StoredEvent[];
  lastSeq: number;
  nextAfter: number;
  hasMore: boolean;
}

/** A new stream epoch: random, so a wiped store never reuses one. */
function newEpoch(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/**
 * The `message` frame of a stream event (the body is the message's JSON). Built with `join`,
 * which makes a flat string: a template literal makes a rope (V8 cons string), which the
 * socket's write must flatten first; for a frame kept in the stream cache and written later
 * (a replay), that flattening of an old string cost about as much as the rest of the write
 * (bench/comparisons.md, resume).
 */
export function messageFrame(seq: number, body: string): string {
  return ['{"type":"message","seq":', seq, ',"message":', body, "}"].join("");
}

/** The `sent` frame: the sending session's own message, at its place in the stream. */
export function sentFrame(
  id: string | number | undefined,
  seq: number,
  body: string,
  duplicate: boolean,
): string {
  const idPart = id === undefined ? "" : `"id":${JSON.stringify(id)},`;
  return `{"type":"sent",${idPart}"seq":${seq},"message":${body},"duplicate":${duplicate}}`;
}
