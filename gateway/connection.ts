/**
 * One WebSocket connection: reads frames, validates them against the contract, applies the
 * connection-level rules (handshake, size and rate limits, idle timeout) and hands lifecycle
 * calls to the user's state object. Every close goes through one funnel, `close(reason)`.
 */
import {
  type ClientFrame,
  type ClientFrameOf,
  ClientFrameSchema,
  closeCodeTable,
  type CloseReason,
  type ErrorCode,
  errorPayload,
  type LoginBody,
  type LoginReply,
  type ServerFrame,
  type Timing,
  validationDetails,
} from "../contract/mod.ts";
import type { DeadlineWheel } from "./deadline_wheel.ts";
import { idleCheck, type LivenessEvent } from "./liveness.ts";
import { TokenBucket } from "./rate_limit.ts";
import type { LiveSession, SocketPort, UserState } from "./user_state.ts";
import type { Clock } from "./clock.ts";
import type { GatewayConfig } from "./config.ts";
import { answerOf } from "./errors.ts";
import type { LoginResult } from "./login.ts";

/** What every connection of a process shares. */
export interface ConnectionContext {
  clock: Clock;
  config: GatewayConfig;
  /** Idle sweep: one entry per connection at lastSeenAt + idle timeout. */
  idle: DeadlineWheel<Connection>;
  /** Live connections, for shutdown. */
  open: Set<Connection>;
  timing: Timing;
  /** A login inside the handshake (`connect` with `login`); as `POST …/login` does it. */
  login(appId: string, body: LoginBody): Promise<LoginResult>;
}

/**
 * How the socket was authenticated at the upgrade: by a valid credential, by none (the
 * `connect` frame must then log in), or by a refused one (closed as soon as it opens).
 */
export type SocketAuth =
  | { kind: "credential"; user: UserState; sessionId: string }
  | { kind: "login" }
  | { kind: "refused" };

const utf8 = new TextEncoder();

/** The ping events, allocated once: pings are the per-frame hot path. */
const HEARTBEAT: LivenessEvent = Object.freeze({ type: "ping", source: "heartbeat" });
const APP_PING: LivenessEvent = Object.freeze({ type: "ping", source: "app" });

/** Frames over budget tolerated (answered with an error) before the connection is closed. */
const RATE_STRIKES_BEFORE_CLOSE = 20;

const closeDescriptions: Record<CloseReason, string> = {
  background: "The app went to background without the background service.",
  background_timeout: "The background window ended.",
  liveness_timeout: "No ping arrived within the liveness window.",
  idle_timeout: "Nothing was received for the idle timeout.",
  replaced: "A newer connection of this session took over.",
  logged_out: "The session logged out.",
  unauthorized: "The session credential is not valid.",
  rate_limited: "Too many frames.",
  slow_consumer: "The connection did not read its frames fast enough.",
  client_disconnect: "Disconnected by the app.",
  payload_too_large: "A frame was over the size limit.",
  server_shutdown: "The gateway is restarting.",
};

export class Connection implements SocketPort {
  readonly #socket: WebSocket;
  readonly #ctx: ConnectionContext;
  /** Set at the upgrade (credential) or by the login inside the handshake. */
  #user: UserState | null;
  #sessionId: string | null;
  #refused: boolean;
  #loggingIn = false;
  #session: LiveSession | null = null;
  #closed = false;
  #lastSeenAt: number;
  #bucket: TokenBucket;
  #strikes = 0;

  /**
   * A refused credential still gets a socket, closed as `unauthorized` as soon as it opens, so
   * that browsers (which cannot read an HTTP error on an upgrade) still learn why.
   */
  constructor(socket: WebSocket, ctx: ConnectionContext, auth: SocketAuth) {
    this.#socket = socket;
    this.#ctx = ctx;
    this.#user = auth.kind === "credential" ? auth.user : null;
    this.#sessionId = auth.kind === "credential" ? auth.sessionId : null;
    this.#refused = auth.kind === "refused";
    const now = ctx.clock.now();
    this.#lastSeenAt = now;
    this.#bucket = new TokenBucket(ctx.config.frameRatePerSec, ctx.config.frameRatePerSec * 2, now);
    socket.onopen = () => this.#onOpen();
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = () => this.#onTransportClose();
    socket.onerror = () => {}; // followed by close
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(frame: ServerFrame): void {
    if (this.#socket.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify(frame));
  }

  sendEvent(text: string): boolean {
    if (this.#closed || this.#socket.readyState !== WebSocket.OPEN) return false;
    // Backpressure: what the peer has not read yet stays in the gateway's memory. A peer that
    // lets it pass the limit is closed (and reconnects) rather than the gateway holding it
    // all. (`length` counts UTF-16 units, close enough to bytes for a bound like this one.)
    if (this.#socket.bufferedAmount + text.length > this.#ctx.config.maxBufferedBytes) {
      this.#closeForConnectionRule("slow_consumer");
      return false;
    }
    this.#socket.send(text);
    return true;
  }

  /** The one close funnel: `closing` frame, then the close code of the reason. */
  close(reason: CloseReason): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ctx.idle.cancel(this);
    this.#ctx.open.delete(this);
    const code = closeCodeTable[reason];
    this.send({ type: "closing", reason, code, errorDescription: closeDescriptions[reason] });
    if (
      this.#socket.readyState === WebSocket.OPEN || this.#socket.readyState === WebSocket.CONNECTING
    ) {
      this.#socket.close(code, reason);
    }
  }

  /** Idle sweep callback. */
  checkIdle(now: number): void {
    if (this.#closed) return;
    const decision = idleCheck(this.#lastSeenAt, now, this.#ctx.config);
    if (decision.kind === "schedule") this.#ctx.idle.schedule(this, decision.at);
    else this.#closeForConnectionRule("idle_timeout");
  }

  #onOpen(): void {
    if (this.#refused) {
      this.#sendError("AUTH_ERR_AUTH_TOKEN_NOT_FOUND");
      this.close("unauthorized");
      return;
    }
    this.#ctx.open.add(this);
    this.#ctx.idle.schedule(this, this.#lastSeenAt + this.#ctx.config.idleTimeoutMs);
  }

  #onTransportClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ctx.idle.cancel(this);
    this.#ctx.open.delete(this);
    if (this.#session !== null) this.#user!.socketClosed(this.#sessionId!, this, "connection_lost");
  }

  #onMessage(data: unknown): void {
    if (this.#closed || this.#refused) return;
    const now = this.#ctx.clock.now();
    this.#lastSeenAt = now;

    if (typeof data !== "string") {
      this.#sendError("ERR_BAD_REQUEST", "Frames are JSON text; binary frames are not accepted.");
      return;
    }
    // Characters ≤ bytes ≤ 3 × characters (UTF-16 → UTF-8): count bytes only when it matters.
    if (
      data.length > this.#ctx.config.maxFrameBytes ||
      (data.length * 3 > this.#ctx.config.maxFrameBytes &&
        utf8.encode(data).length > this.#ctx.config.maxFrameBytes)
    ) {
      this.#sendError("ERR_PAYLOAD_TOO_LARGE", undefined, {
        limitBytes: this.#ctx.config.maxFrameBytes,
      });
      this.#closeForConnectionRule("payload_too_large");
      return;
    }
    if (!this.#bucket.take(now)) {
      this.#sendError("ERR_TOO_MANY_REQUESTS");
      if (++this.#strikes >= RATE_STRIKES_BEFORE_CLOSE) {
        this.#closeForConnectionRule("rate_limited");
      }
      return;
    }

    let value: unknown;
    try {
      value = JSON.parse(data);
    } catch {
      this.#sendError("ERR_BAD_REQUEST", "The frame is not valid JSON.", {
        issues: [{ path: "", message: "invalid JSON" }],
      });
      return;
    }
    const parsed = ClientFrameSchema.safeParse(value);
    if (!parsed.success) {
      const id = frameIdOf(value);
      this.#sendError(
        "ERR_BAD_REQUEST",
        undefined,
        validationDetails(parsed.error.issues, "frame"),
        id,
      );
      return;
    }
    this.#dispatch(parsed.data);
  }

  #dispatch(frame: ClientFrame): void {
    if (frame.type === "connect") {
      if (this.#session !== null) {
        this.#sendError(
          "ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE",
          undefined,
          undefined,
          frame.id,
        );
      } else if (this.#loggingIn) {
        this.#sendError("ERR_BAD_REQUEST", "A login is in progress.", undefined, frame.id);
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
        this.#sendError(
          "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
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
        const now = this.#lastSeenAt; // when this frame arrived
        const result = user.call(sessionId, frame.source === "app" ? APP_PING : HEARTBEAT, now);
        if (!result.ok) return this.#sendError(result.errorCode, undefined, undefined, frame.id);
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
        });
        if (!result.ok) return this.#sendError(result.errorCode, undefined, undefined, frame.id);
        if (this.#closed) return; // closed at once (auto mode, no background service)
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
        const result = user.call(sessionId, { type: "disconnect" });
        if (!result.ok) this.#sendError(result.errorCode, undefined, undefined, frame.id);
        return;
      }
    }
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
      result = await this.#ctx.login(appId, login);
    } catch (error) {
      this.#loggingIn = false;
      const { payload } = answerOf(error);
      if (this.#closed) return;
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
    this.#connect(frame, result.reply);
  }

  /** Attaches the socket to its session and answers the handshake. */
  #connect(frame: ClientFrameOf<"connect">, login?: LoginReply): void {
    const user = this.#user!;
    const sessionId = this.#sessionId!;
    const result = user.attach(sessionId, this, frame.appState, frame.backgroundService);
    if (!result.ok) {
      this.#sendError(result.errorCode, undefined, undefined, frame.id);
      this.close("unauthorized");
      return;
    }
    this.#session = result.session;
    if (this.#closed) return; // e.g. auto mode connecting in background: closed at once
    const l = result.session.liveness;
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
      ...(login === undefined ? {} : { login }),
    });
  }

  /** A rule of the connection itself (not of the session) closes it. */
  #closeForConnectionRule(reason: CloseReason): void {
    if (this.#session !== null) this.#user!.socketClosed(this.#sessionId!, this, reason);
    this.close(reason);
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

function frameIdOf(value: unknown): string | number | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const id = (value as { id?: unknown }).id;
  return typeof id === "string" && id.length <= 64 || Number.isInteger(id)
    ? id as string | number
    : undefined;
}
