/**
 * One WebSocket connection: reads frames, validates them against the contract, applies the
 * connection-level rules (handshake timeout, frame budget, output limit, idle timeout) and
 * hands lifecycle calls to the user's state object. Every close goes through one funnel,
 * `close(reason)`, which always tells the client why: a `closing` frame, then the reason's
 * close code.
 */
import {
  type ClientFrame,
  type ClientFrameOf,
  ClientFrameSchema,
  closeCodeTable,
  type CloseReason,
  type ErrorCode,
  errorPayload,
  FrameIdSchema,
  type LoginBody,
  type LoginReply,
  type ServerFrame,
  type Timing,
  validationDetails,
} from "../contract/mod.ts";
import type { DeadlineWheel } from "./deadline_wheel.ts";
import { idleCheck, type LivenessEvent } from "./liveness.ts";
import { TokenBucket } from "./rate_limit.ts";
import {
  type EventFrameType,
  type LiveSession,
  sentFrame,
  type SocketPort,
  type UserState,
} from "./user_state.ts";
import type { Clock } from "./clock.ts";
import type { GatewayConfig } from "./config.ts";
import { answerOf } from "./errors.ts";
import type { LoginResult } from "./login.ts";
import type { Logger } from "./log.ts";
import type { GatewayMetrics } from "./metrics.ts";
import type { TransportRefusedFrame, WireEvents, WireSocket } from "./transport/types.ts";
import type { Messaging } from "./messaging.ts";
import type { LiveRelays, RelayTarget } from "./relays.ts";
import type { GatewayStore } from "./store/types.ts";
import type { ReplayPlan } from "./user_state.ts";
import { OwnedElsewhere } from "./cluster/port.ts";

/** What every connection of a process shares. */
export interface ConnectionContext {
  clock: Clock;
  config: GatewayConfig;
  metrics: GatewayMetrics;
  log: Logger;
  /** Idle and handshake sweep: one entry per connection at its next due time. */
  idle: DeadlineWheel<Connection>;
  /** Live connections, for shutdown and the connection gauges. */
  open: Set<Connection>;
  timing: Timing;
  /** A login inside the handshake (`connect` with `login`); as `POST …/login` does it. */
  login(appId: string, body: LoginBody, remoteAddr: string): Promise<LoginResult>;
  /** Charges a client address for a connection closed for abuse (see ABUSIVE_CLOSES). */
  penalize(remoteAddr: string): void;
  /** Sends by users (the `send` frame): the one write path of messages. */
  messaging: Messaging;
  /** Typing and presence. */
  relays: LiveRelays;
  /** Read by a resume that reaches further back than the stream cache. */
  store: GatewayStore;
  /**
   * In a cluster: the user that the `connect` frame (`first`) logs in is held by `node`, which
   * has a socket of it already. Hands this socket to a relay whose connection runs there
   * (gateway/cluster/relay.ts); false when that node did not take it.
   */
  relayTo?(node: string, wire: WireSocket, first: string, remoteAddr: string): Promise<boolean>;
}

/** Store reads a resume may make before it gives up (the stream keeps moving meanwhile). */
const RESUME_READ_ATTEMPTS = 3;

/**
 * Closes that only a misbehaving client earns. Each charges its address extra connects of its
 * connect budget, so a client that reconnects to flood again is slowed down to a trickle,
 * while clients sharing its address (a NAT) keep most of the budget.
 */
const ABUSIVE_CLOSES: ReadonlySet<CloseReason> = new Set<CloseReason>([
  "rate_limited",
  "payload_too_large",
  "handshake_timeout",
  "unauthorized",
]);

/**
 * How the socket was authenticated at the upgrade: by a valid credential, by none (the
 * `connect` frame must then log in), or by a refused one (closed as soon as it opens).
 */
export type SocketAuth =
  | { kind: "credential"; user: UserState; sessionId: string }
  | { kind: "login" }
  | { kind: "refused" };

/** How a socket opened with `credential` (none: it logs in) that resolved to `found` is authed. */
export function socketAuthOf(
  credential: string | undefined,
  found: { user: UserState; session: LiveSession } | null,
): SocketAuth {
  if (found !== null) {
    return { kind: "credential", user: found.user, sessionId: found.session.sessionId };
  }
  return credential === undefined ? { kind: "login" } : { kind: "refused" };
}

const utf8 = new TextEncoder();

/** The ping events, allocated once: pings are the per-frame hot path. */
const HEARTBEAT: LivenessEvent = Object.freeze({ type: "ping", source: "heartbeat" });
const APP_PING: LivenessEvent = Object.freeze({ type: "ping", source: "app" });

/**
 * Refusals of the frame budget tolerated before the connection is closed (`rate_limited`).
 * Strikes decay at STRIKE_DECAY_PER_SEC, so a client that overshoots now and then in bursts,
 * but stays under the budget on average, is never closed; one that keeps flooding is closed
 * within a few dozen frames.
 */
const RATE_STRIKES_BEFORE_CLOSE = 20;
const STRIKE_DECAY_PER_SEC = 2;

const closeDescriptions: Record<CloseReason, string> = {
  background: "The app went to background without the background service.",
  background_timeout: "The background window ended.",
  liveness_timeout: "No ping arrived within the liveness window.",
  idle_timeout: "Nothing was received for the idle timeout.",
  handshake_timeout: "The connect frame did not arrive within the handshake timeout.",
  replaced: "A newer connection of this session took over.",
  logged_out: "The session logged out.",
  unauthorized: "The session credential is not valid.",
  rate_limited: "Too many frames.",
  slow_consumer: "The connection did not read its frames fast enough.",
  client_disconnect: "Disconnected by the app.",
  payload_too_large: "A frame was over the size limit.",
  protocol_error: "A frame broke the WebSocket protocol.",
  invalid_utf8: "A text frame was not valid UTF-8.",
  too_many_fragments: "A message came in too many fragments.",
  server_shutdown: "The gateway is restarting.",
};

export class Connection implements SocketPort, RelayTarget {
  readonly #wire: WireSocket;
  readonly #ctx: ConnectionContext;
  readonly #remoteAddr: string;
  /** Set at the upgrade (credential) or by the login inside the handshake. */
  #user: UserState | null;
  #sessionId: string | null;
  #refused: boolean;
  /** A login or a resume's store read is under way inside the handshake. */
  #loggingIn = false;
  #session: LiveSession | null = null;
  #closed = false;
  readonly #openedAt: number;
  #lastSeenAt: number;
  #bucket: TokenBucket;
  #strikes = 0;
  #strikesAt = 0;
  /**
   * Output gate: while a reply announces a deadline that is not durable yet, it and every
   * frame after it wait here (in order) until the store has it.
   */
  #gate: Promise<void> | null = null;
  #held: string[] = [];
  #heldBytes = 0;
  /** The state object this connection keeps in memory until its handshake is done. */
  #pinnedUser: UserState | null = null;

  /**
   * A refused credential still gets a socket, closed as `unauthorized` as soon as it opens, so
   * that browsers (which cannot read an HTTP error on an upgrade) still learn why.
   */
  constructor(wire: WireSocket, ctx: ConnectionContext, auth: SocketAuth, remoteAddr: string) {
    this.#wire = wire;
    this.#ctx = ctx;
    this.#remoteAddr = remoteAddr;
    this.#user = auth.kind === "credential" ? auth.user : null;
    this.#sessionId = auth.kind === "credential" ? auth.sessionId : null;
    this.#refused = auth.kind === "refused";
    // The state object must not be evicted between the upgrade and the handshake.
    if (this.#user !== null) this.#pin(this.#user);
    const now = ctx.clock.now();
    this.#openedAt = this.#lastSeenAt = now;
    // A new connection starts with a fifth of a second's budget, not the whole burst: a client
    // needs a handful of frames to start, and a flooder that reconnects must not get a full
    // burst for free each time.
    const rate = ctx.config.frameRatePerSec;
    this.#bucket = new TokenBucket(rate, rate * 2, now, Math.max(8, rate / 5));
    wire.listen(new Connection.#WireEvents(this));
  }

  /**
   * The wire's handlers as one object whose methods live on a shared prototype: six closures
   * per connection cost about 0.4 KB of heap each time. (Declared inside the class to reach its
   * private methods.)
   */
  static readonly #WireEvents = class implements WireEvents {
    readonly #connection: Connection;
    constructor(connection: Connection) {
      this.#connection = connection;
    }
    open(): void {
      this.#connection.#onOpen();
    }
    text(data: string): void {
      this.#connection.#onText(data);
    }
    binary(byteLength: number): void {
      this.#connection.#onBinary(byteLength);
    }
    control(): void {
      this.#connection.#onControl();
    }
    frameRefused(reason: TransportRefusedFrame): void {
      if (reason === "payload_too_large") this.#connection.#frameTooLarge();
      else this.#connection.#closeForConnectionRule(reason);
    }
    closed(): void {
      this.#connection.#onTransportClose();
    }
    alive(): void {
      const connection = this.#connection;
      connection.touch(connection.#ctx.clock.now());
    }
    overflow(): void {
      this.#connection.#closeForConnectionRule("slow_consumer");
    }
  };

  get closed(): boolean {
    return this.#closed;
  }

  /** The session's mode and app state, for the connection gauges (null before the handshake). */
  get liveness(): LiveSession["liveness"] | null {
    return this.#session?.liveness ?? null;
  }

  send(frame: ServerFrame): void {
    if (this.#closed) return;
    this.#ctx.metrics.framesOut[frame.type]++;
    this.#write(JSON.stringify(frame));
  }

  sendEvent(text: string, type: EventFrameType = "message"): boolean {
    if (this.#closed || !this.#wire.writable) return false;
    this.#ctx.metrics.framesOut[type]++;
    return this.#write(text);
  }

  /**
   * The session was kept alive by another channel (an HTTP ping): that counts as life for this
   * connection too, so the idle rule does not close what the liveness window keeps.
   */
  touch(now: number): void {
    if (now > this.#lastSeenAt) this.#lastSeenAt = now;
  }

  /** Holds every frame written from now on until `durable` settles (see `#gate`). */
  holdUntil(durable: Promise<void>): void {
    const previous = this.#gate;
    const gate: Promise<void> = (previous === null ? durable : previous.then(() => durable))
      .then(
        () => this.#release(gate),
        // Only a stopping gateway gives up on a write: what waited for it is not sent.
        () => {
          if (this.#gate !== gate) return;
          this.#gate = null;
          this.#held = [];
          this.#heldBytes = 0;
        },
      );
    this.#gate = gate;
  }

  /** The one close funnel: `closing` frame, then the close code of the reason. */
  close(reason: CloseReason): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ctx.idle.cancel(this);
    this.#ctx.open.delete(this);
    this.#unpin();
    this.#ctx.metrics.closed(reason);
    this.#leaveRelays();
    if (ABUSIVE_CLOSES.has(reason)) this.#ctx.penalize(this.#remoteAddr);
    if (this.#ctx.log.enabled("debug")) {
      this.#ctx.log.debug("connection.closed", {
        reason,
        code: closeCodeTable[reason],
        uid: this.#user?.uid,
        sessionId: this.#sessionId,
        remoteAddr: this.#remoteAddr,
      });
    }
    // Frames held behind the output gate announced what is not durable: they are dropped.
    this.#held = [];
    this.#gate = null;
    const code = closeCodeTable[reason];
    if (!this.#wire.writable) return this.#wire.close(code, reason);
    this.#ctx.metrics.framesOut.closing++;
    // Past the output limit too: it is small, and the client must learn why.
    this.#wire.close(code, reason, closingFrame(reason));
  }

  /** Idle and handshake sweep callback. */
  checkIdle(now: number): void {
    if (this.#closed) return;
    if (this.#session === null) {
      const due = this.#openedAt + this.#ctx.config.handshakeTimeoutMs;
      if (now >= due) {
        this.#ctx.metrics.handshakes.timeout++;
        return this.close("handshake_timeout");
      }
      return this.#ctx.idle.schedule(this, due);
    }
    const decision = idleCheck(this.#lastSeenAt, now, this.#ctx.config);
    if (decision.kind === "schedule") this.#ctx.idle.schedule(this, decision.at);
    else this.#closeForConnectionRule("idle_timeout");
  }

  #onOpen(): void {
    if (this.#refused) {
      this.#ctx.metrics.handshakes.refused++;
      this.#sendError("AUTH_ERR_AUTH_TOKEN_NOT_FOUND");
      this.close("unauthorized");
      return;
    }
    this.#ctx.open.add(this);
    // Until the handshake completes, the sweep looks at the handshake timeout.
    this.#ctx.idle.schedule(this, this.#openedAt + this.#ctx.config.handshakeTimeoutMs);
  }

  #onTransportClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ctx.idle.cancel(this);
    this.#ctx.open.delete(this);
    this.#unpin();
    this.#ctx.metrics.closed("connection_lost");
    this.#held = [];
    this.#leaveRelays();
    if (this.#session !== null) this.#user!.socketClosed(this.#sessionId!, this, "connection_lost");
  }

  /**
   * Every frame, of any kind, takes from the budget before anything else is done with it:
   * a flood costs one token check per frame and is closed after a few dozen refusals.
   */
  #admit(now: number): boolean {
    if (this.#closed || this.#refused) return false;
    this.#lastSeenAt = now;
    if (this.#bucket.take(now)) return true;
    this.#ctx.metrics.refusals.frame_rate++;
    // Strikes decay, so occasional bursts over the budget are forgiven.
    const decayed = (now - this.#strikesAt) * STRIKE_DECAY_PER_SEC / 1000;
    this.#strikes = Math.max(0, this.#strikes - decayed) + 1;
    this.#strikesAt = now;
    if (this.#strikes >= RATE_STRIKES_BEFORE_CLOSE) {
      this.#closeForConnectionRule("rate_limited");
    } else this.#sendError("ERR_TOO_MANY_REQUESTS");
    return false;
  }

  #onBinary(size: number): void {
    if (!this.#admit(this.#ctx.clock.now())) return;
    this.#ctx.metrics.framesIn.binary++;
    if (size > this.#ctx.config.maxFrameBytes) return this.#frameTooLarge();
    this.#sendError("ERR_BAD_REQUEST", "Frames are JSON text; binary frames are not accepted.");
  }

  #onControl(): void {
    if (!this.#admit(this.#ctx.clock.now())) return;
    this.#ctx.metrics.framesIn.control++;
    // A pong is a write like any other: a peer that does not read is closed, not buffered for.
    if (this.#wire.bufferedAmount > this.#ctx.config.maxBufferedBytes) {
      return this.#closeForConnectionRule("slow_consumer");
    }
    this.#wire.pong();
  }

  #onText(data: string): void {
    const now = this.#ctx.clock.now();
    if (!this.#admit(now)) return;
    // Characters ≤ bytes ≤ 3 × characters (UTF-16 → UTF-8): count bytes only when it matters.
    // (The node transport refuses larger frames from their header; this check is for the
    // others.)
    const max = this.#ctx.config.maxFrameBytes;
    if (data.length > max || (data.length * 3 > max && utf8.encode(data).length > max)) {
      return this.#frameTooLarge();
    }

    let value: unknown;
    try {
      value = JSON.parse(data);
    } catch {
      this.#ctx.metrics.framesIn.invalid++;
      this.#sendError("ERR_BAD_REQUEST", "The frame is not valid JSON.", {
        issues: [{ path: "", message: "invalid JSON" }],
      });
      return;
    }
    const parsed = ClientFrameSchema.safeParse(value);
    if (!parsed.success) {
      this.#ctx.metrics.framesIn.invalid++;
      this.#sendError(
        "ERR_BAD_REQUEST",
        undefined,
        validationDetails(parsed.error.issues, "frame"),
        frameIdOf(value),
      );
      return;
    }
    this.#ctx.metrics.framesIn[parsed.data.type]++;
    this.#dispatch(parsed.data, now);
  }

  /**
   * A frame over the size limit: an error frame and close 1009. (When the transport refused it
   * from its header, its close frame is already on the way: only the reason is recorded.)
   */
  #frameTooLarge(): void {
    if (this.#closed) return;
    this.#ctx.metrics.refusals.frame_size++;
    this.#sendError("ERR_PAYLOAD_TOO_LARGE", undefined, {
      limitBytes: this.#ctx.config.maxFrameBytes,
    });
    this.#closeForConnectionRule("payload_too_large");
  }

  #dispatch(frame: ClientFrame, now: number): void {
    if (frame.type === "connect") {
      if (this.#session !== null) {
        this.#sendError(
          "ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE",
          undefined,
          undefined,
          frame.id,
        );
      } else if (this.#loggingIn) {
        this.#sendError("ERR_BAD_REQUEST", "A connect is in progress.", undefined, frame.id);
      } else if (frame.login !== undefined) {
        if (this.#user !== null) {
          this.#sendError(
            "ERR_BAD_REQUEST",
            "This socket is already authenticated by its credential: connect without `login`.",
            undefined,
            frame.id,
          );
        } else void this.#loginThenConnect(frame, frame.login);
      } else if (this.#user === null) {
        // SPEC §3: a connect without a logged-in user.
        this.#ctx.metrics.handshakes.refused++;
        this.#sendError(
          "ERROR_USER_NOT_LOGGED_IN",
          "Open the socket with a session credential, or log in inside the connect frame.",
          undefined,
          frame.id,
        );
        this.close("unauthorized");
      } else this.#connect(frame);
      return;
    }

    const user = this.#user;
    const sessionId = this.#sessionId;
    if (this.#session === null || user === null || sessionId === null) {
      // Until the handshake, nothing but `connect` is acted on.
      this.#sendError(
        "ERR_BAD_REQUEST",
        "The first frame must be the connect handshake.",
        undefined,
        frame.id,
      );
      return;
    }

    switch (frame.type) {
      case "ping": {
        const app = frame.source === "app";
        if (app) this.#ctx.metrics.pings.app++;
        else this.#ctx.metrics.pings.heartbeat++;
        const result = user.call(sessionId, app ? APP_PING : HEARTBEAT, now);
        if (!result.ok) return this.#sendError(result.errorCode, undefined, undefined, frame.id);
        if (result.durable !== undefined) this.holdUntil(result.durable);
        this.send({
          type: "pong",
          id: frame.id,
          serverTime: now,
          backgroundDeadline: result.session.liveness.deadline,
        });
        return;
      }
      case "app_state": {
        const result = user.call(sessionId, {
          type: "app_state",
          appState: frame.state,
          backgroundService: frame.backgroundService,
        }, now);
        if (!result.ok) return this.#sendError(result.errorCode, undefined, undefined, frame.id);
        if (this.#closed) return; // closed at once (auto mode, no background service)
        if (result.durable !== undefined) this.holdUntil(result.durable);
        const l = result.session.liveness;
        this.send({
          type: "state",
          id: frame.id,
          appState: l.appState,
          backgroundService: l.backgroundService,
          backgroundDeadline: l.deadline,
        });
        return;
      }
      case "disconnect": {
        const result = user.call(sessionId, { type: "disconnect" }, now);
        if (!result.ok) this.#sendError(result.errorCode, undefined, undefined, frame.id);
        return;
      }
      case "send": {
        const { type: _type, id, ...send } = frame;
        this.#ctx.messaging.sendFromUser(user, this.#session, send, id).then(
          (outcome) => {
            // A first send is answered by its `sent` frame at its place in the stream; a retry
            // of one is answered now.
            if (outcome.duplicate) {
              this.sendEvent(sentFrame(id, outcome.seq, outcome.body, true), "sent");
            }
          },
          (error) => this.#answerError(error, id),
        );
        return;
      }
      case "start_typing":
      case "end_typing": {
        this.#ctx.relays.typing(this, user, sessionId, frame).then(
          (refusal) => refusal !== null && this.#answerError(refusal, frame.id),
          (error) => this.#answerError(error, frame.id),
        );
        return;
      }
    }
  }

  /** The error frame for a failed asynchronous call (no stack leaves the gateway). */
  #answerError(error: unknown, id: string | number | undefined): void {
    const { payload } = answerOf(error, this.#ctx.log);
    if (!this.#closed) this.send({ type: "error", id, ...payload });
  }

  /** Leaves typing and presence, once, when a connection that was live closes. */
  #leaveRelays(): void {
    if (this.#session !== null) this.#ctx.relays.disconnected(this, this.#user!, this.#sessionId!);
  }

  /** The login inside the handshake: a session is created, then connected like any other. */
  async #loginThenConnect(
    frame: ClientFrameOf<"connect">,
    body: NonNullable<ClientFrameOf<"connect">["login"]>,
  ): Promise<void> {
    this.#loggingIn = true;
    let result: LoginResult;
    try {
      const { appId, ...login } = body;
      result = await this.#ctx.login(appId, login, this.#remoteAddr);
    } catch (error) {
      if (
        error instanceof OwnedElsewhere && this.#ctx.relayTo !== undefined && !this.#closed &&
        await this.#relayTo(error.node, frame)
      ) return;
      this.#loggingIn = false;
      const { payload } = answerOf(error, this.#ctx.log);
      if (this.#closed) return;
      this.#ctx.metrics.handshakes.refused++;
      this.send({ type: "error", id: frame.id, ...payload });
      this.close("unauthorized");
      return;
    }
    this.#loggingIn = false;
    // The socket may have gone while the session was written: the session stays, as after an
    // HTTP login whose client went away before reading the reply.
    if (this.#closed) return;
    this.#user = result.user;
    this.#sessionId = result.session.sessionId;
    this.#pin(result.user);
    this.#connect(frame, result.reply);
  }

  /**
   * Hands the socket to a relay to `node` (see `relayTo`): the `connect` frame is handled
   * there, and this object lets the socket go without a word to the client.
   */
  async #relayTo(node: string, frame: ClientFrameOf<"connect">): Promise<boolean> {
    let relayed = false;
    try {
      relayed = await this.#ctx.relayTo!(node, this.#wire, JSON.stringify(frame), this.#remoteAddr);
    } catch {
      // Not taken: answered as the login's own refusal.
    }
    if (!relayed || this.#closed) return relayed;
    this.#closed = true;
    this.#ctx.idle.cancel(this);
    this.#ctx.open.delete(this);
    this.#unpin();
    this.#held = [];
    this.#gate = null;
    return true;
  }

  /**
   * Answers the handshake: first the replay plan (a resume that reaches past the stream cache
   * reads the store first), then attach, `connected`, the replayed events, and live events
   * after them — all in one turn of the event loop, so no live event can come between.
   */
  #connect(frame: ClientFrameOf<"connect">, login?: LoginReply): void {
    const plan = this.#user!.planReplay(frame.resume);
    if (plan.kind === "ready") return this.#attach(frame, plan, login);
    this.#loggingIn = true;
    void this.#readThenAttach(frame, plan, login);
  }

  async #readThenAttach(
    frame: ClientFrameOf<"connect">,
    first: ReplayPlan,
    login?: LoginReply,
  ): Promise<void> {
    const user = this.#user!;
    const fetched = { events: [] as Awaited<ReturnType<GatewayStore["readEvents"]>>, upTo: 0 };
    let plan = first;
    try {
      for (let attempt = 0; plan.kind === "read" && attempt < RESUME_READ_ATTEMPTS; attempt++) {
        const events = await this.#ctx.store.readEvents(
          user.appId,
          user.uid,
          plan.after,
          plan.limit,
        );
        fetched.events.push(...events);
        fetched.upTo = plan.after + plan.limit;
        plan = user.planReplay(frame.resume, fetched);
      }
    } catch (error) {
      this.#loggingIn = false;
      this.#ctx.log.error("resume.read_failed", { error, uid: user.uid });
      if (this.#closed) return;
      this.#sendError("ERR_SERVICE_UNAVAILABLE", undefined, undefined, frame.id);
      this.close("server_shutdown");
      return;
    }
    this.#loggingIn = false;
    if (this.#closed) return;
    if (plan.kind === "read") {
      // The stream outran the reads: connect without the replay; the history has it.
      plan = {
        kind: "ready",
        frames: [],
        stream: {
          epoch: user.epoch,
          seq: user.streamSeq,
          recovered: false,
          reason: "replay_limit",
          replayed: 0,
        },
      };
    }
    this.#attach(frame, plan, login);
  }

  /** Attaches the socket to its session and answers the handshake. */
  #attach(
    frame: ClientFrameOf<"connect">,
    plan: Extract<ReplayPlan, { kind: "ready" }>,
    login?: LoginReply,
  ): void {
    const user = this.#user!;
    const sessionId = this.#sessionId!;
    const result = user.attach(sessionId, this, frame.appState, frame.backgroundService);
    // Attached (the session now holds the state object in memory) or refused: either way the
    // handshake is over.
    this.#unpin();
    if (!result.ok) {
      this.#ctx.metrics.handshakes.refused++;
      this.#sendError(result.errorCode, undefined, undefined, frame.id);
      this.close("unauthorized");
      return;
    }
    this.#session = result.session;
    this.#ctx.metrics.handshakes.ok++;
    if (this.#closed) return; // e.g. auto mode connecting in background: closed at once
    this.#ctx.idle.schedule(this, this.#lastSeenAt + this.#ctx.config.idleTimeoutMs);
    if (result.durable !== undefined) this.holdUntil(result.durable);
    const l = result.session.liveness;
    // The plan was made before attach, in this same turn: the stream has not moved since.
    // `connected` and the replay leave together (after a store read, no chunk's cork covers
    // them, and a write per frame costs a system call each).
    this.#batch(() => {
      this.send({
        type: "connected",
        id: frame.id,
        sessionId,
        uid: user.uid,
        mode: result.session.mode,
        appState: l.appState,
        backgroundService: l.backgroundService,
        backgroundDeadline: l.deadline,
        serverTime: this.#ctx.clock.now(),
        timing: this.#ctx.timing,
        stream: plan.stream,
        ...(login === undefined ? {} : { login }),
      });
      for (const text of plan.frames) if (!this.sendEvent(text)) break;
    });
    this.#ctx.relays.connected(this, user, sessionId, frame.presence);
  }

  /** Runs `write` so that its frames leave in one write where the transport allows. */
  #batch(write: () => void): void {
    const wire = this.#wire;
    if (wire.batch === undefined) write();
    else wire.batch(write);
  }

  /** A rule of the connection itself (not of the session) closes it. */
  #closeForConnectionRule(reason: CloseReason): void {
    if (this.#closed) return;
    if (reason === "slow_consumer") this.#ctx.metrics.refusals.slow_consumer++;
    if (this.#session !== null) this.#user!.socketClosed(this.#sessionId!, this, reason);
    this.close(reason);
  }

  /**
   * Every write goes through here: behind the output gate if one is up, and never past the
   * output limit (a peer that does not read is closed as `slow_consumer`, whatever the frame).
   */
  #write(text: string): boolean {
    const limit = this.#ctx.config.maxBufferedBytes;
    if (this.#gate !== null) {
      if (this.#heldBytes + text.length > limit) {
        this.#closeForConnectionRule("slow_consumer");
        return false;
      }
      this.#held.push(text);
      this.#heldBytes += text.length;
      return true;
    }
    if (!this.#wire.writable) return false;
    // (`length` counts UTF-16 units, close enough to bytes for a bound like this one.)
    if (this.#wire.bufferedAmount + text.length > limit) {
      this.#closeForConnectionRule("slow_consumer");
      return false;
    }
    this.#wire.send(text);
    return true;
  }

  #release(gate: Promise<void>): void {
    if (this.#gate !== gate) return; // a later gate took over, or the connection closed
    this.#gate = null;
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    this.#batch(() => {
      for (const text of held) if (!this.#write(text)) break;
    });
  }

  #pin(user: UserState): void {
    user.pin();
    this.#pinnedUser = user;
  }

  /** Lets the state object be evicted again (attached, or closed before the handshake). */
  #unpin(): void {
    this.#pinnedUser?.unpin();
    this.#pinnedUser = null;
  }

  #sendError(
    code: ErrorCode,
    description?: string,
    details?: Record<string, unknown>,
    id?: string | number,
  ): void {
    this.send({ type: "error", id, ...errorPayload(code, description, details) });
  }
}

/** The last frame of a connection closed for `reason`: the `closing` frame. */
export function closingFrame(reason: CloseReason): string {
  const closing: ServerFrame = {
    type: "closing",
    reason,
    code: closeCodeTable[reason],
    errorDescription: closeDescriptions[reason],
  };
  return JSON.stringify(closing);
}

/**
 * The id to echo on an error reply: only one the contract accepts (a safe integer, or a string
 * of at most 64 characters counted as zod counts them: code points).
 */
function frameIdOf(value: unknown): string | number | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const id = (value as { id?: unknown }).id;
  if (Number.isSafeInteger(id)) return id as number;
  if (typeof id !== "string" || id.length > 4 * 64) return undefined;
  return FrameIdSchema.safeParse(id).success ? id : undefined;
}
