/**
 * One WebSocket to the gateway, from the upgrade to its end: the handshake (`connect` →
 * `connected`), heartbeats and their pong timeout, and replies matched to their request by
 * frame id (app pings, app-state changes). However it ends — a close code, a `closing` frame,
 * a dead link, a handshake that never completes, or its owner closing it — the socket stops
 * its timers, settles what waited on it, closes the WebSocket and reports ONE
 * {@link SocketEndReport} to its owner; after that it reports nothing more.
 *
 * It holds no policy, as the gateway's `Connection` holds none of the lifecycle rules: it
 * never reconnects and knows nothing of modes, users or listeners. `GatewayClient` owns one
 * socket at a time and decides what an end means.
 */
import {
  type AppState,
  type ClientFrameInput,
  type Message,
  type PresenceSubscription,
  reasonOfCloseCode,
  type ServerFrame,
  type ServerFrameOf,
  type StreamPosition,
  type Timing,
  type UserSend,
  WS_CREDENTIAL_PROTOCOL_PREFIX,
  WS_PROTOCOL,
} from "../contract/mod.ts";
import { decodeServerFrame, encodeClientFrame } from "./codec.ts";
import { GatewayError } from "./errors.ts";
import {
  type Clock,
  type WebSocketConstructor,
  WS_CLOSED,
  WS_CONNECTING,
  WS_OPEN,
} from "./platform.ts";
import type { ConnectionEndReason } from "./policy.ts";

/** Close code of losses that carry no code of their own (a dead link, a handshake timeout). */
export const ABNORMAL_CLOSE = 1006;

/** How long a dropped socket may take to close before it is forgotten anyway. */
const CLOSE_WAIT_MS = 5_000;

/** How and why a socket ended. */
export interface SocketEnd {
  reason: ConnectionEndReason;
  /** `server`: the gateway closed it (closing frame or close code); `client`: this side did. */
  source: "server" | "client";
  /** The WebSocket close code (1006 for a network loss or a dead link). */
  code: number;
  /** The gateway's description (closing frame or close reason); absent for local ends. */
  errorDescription?: string;
}

/** The end as the owner hears it. */
export interface SocketEndReport extends SocketEnd {
  /**
   * An `error` frame that arrived before `connected` (e.g. a refused credential): the reason
   * the attempt failed, told in the frame before the close. Null when there was none.
   */
  handshakeError: GatewayError | null;
}

/** What a socket tells its owner. Every call comes from a WebSocket event or a timer. */
export interface SocketEvents {
  /** The gateway confirmed the handshake; heartbeats run from now on (in foreground). */
  onConnected(frame: ServerFrameOf<"connected">): void;
  /** The background deadline of a `pong` or `state` reply (null in foreground). */
  onBackgroundDeadline(deadline: number | null): void;
  /** A `message` frame: an event of the user's stream (replayed or live). */
  onMessage(message: Message, seq: number): void;
  /** A `sent` frame: this session's own message at its place in the stream, or a retry's answer. */
  onSent(frame: ServerFrameOf<"sent">): void;
  onTyping(frame: ServerFrameOf<"typing_started"> | ServerFrameOf<"typing_ended">): void;
  onPresence(frame: ServerFrameOf<"presence">): void;
  /**
   * An `error` frame after the handshake that no ping or app-state request of this socket was
   * waiting for; `id` is the frame id it answers (e.g. a `send`), if any.
   */
  onError(error: GatewayError, id: string | number | undefined): void;
  /** The one end of this socket. */
  onEnd(end: SocketEndReport): void;
}

/** What a socket needs to open. */
export interface SocketOptions {
  url: string;
  protocols: string[];
  WebSocket: WebSocketConstructor;
  clock: Clock;
  /** Heartbeat interval and pong timeout; replaced by the `connected` frame's timing. */
  timing: Timing;
  /** Time to wait for the `connected` frame, counted from the socket's creation. */
  handshakeTimeoutMs: number;
  /** The app state the `connect` frame announces; kept current with `setAppState()`. */
  appState: AppState;
  backgroundService: boolean;
  /**
   * What else the `connect` frame carries, asked for when the socket opens (so it is as fresh
   * as can be): the stream position to resume from and the presence subscription.
   */
  handshake?: () => { resume?: StreamPosition; presence?: PresenceSubscription };
}

/** Where a typing indicator is aimed. */
export interface TypingTarget {
  receiverType: UserSend["receiverType"];
  receiver: string;
}

/**
 * The URL and sub-protocols of the gateway's WebSocket endpoint. The credential travels as a
 * `cred.<credential>` sub-protocol (keeps it out of URLs and logs) or as a query parameter.
 */
export function socketAddress(input: {
  baseUrl: string;
  path: string;
  credential: string;
  credentialIn: "protocol" | "query";
}): { url: string; protocols: string[] } {
  const base = input.baseUrl.replace(/\/$/, "").replace(/^http/, "ws");
  if (input.credentialIn === "query") {
    return {
      url: `${base}${input.path}?credential=${encodeURIComponent(input.credential)}`,
      protocols: [WS_PROTOCOL],
    };
  }
  return {
    url: `${base}${input.path}`,
    protocols: [WS_PROTOCOL, `${WS_CREDENTIAL_PROTOCOL_PREFIX}${input.credential}`],
  };
}

interface PingWaiter {
  resolve(pong: ServerFrameOf<"pong">): void;
  reject(error: GatewayError): void;
  timer: unknown;
}

/** One WebSocket with its handshake, heartbeat and id-matched replies. */
export class GatewaySocket {
  /**
   * Settles once the WebSocket has closed after the end (or after {@link CLOSE_WAIT_MS} if
   * it never says so), so that an owner can wait until nothing of it is left.
   */
  readonly closed: Promise<void>;

  readonly #ws: WebSocket;
  readonly #clock: Clock;
  readonly #events: SocketEvents;
  #timing: Timing;
  #appState: AppState;
  #backgroundService: boolean;

  #handshaken = false;
  #handshakeError: GatewayError | null = null;
  #ended = false;
  #markClosed: () => void = () => {};
  /** Frame ids are this socket's own: a reply only ever matches a request on its socket. */
  #frameSeq = 0;

  #handshakeTimer: unknown = null;
  #heartbeatTimer: unknown = null;
  /** The heartbeat waiting for its pong, and the pong timeout that runs meanwhile. */
  #heartbeatId: number | null = null;
  #pongTimer: unknown = null;
  #disconnectTimer: unknown = null;

  readonly #pings = new Map<number, PingWaiter>();
  /** `app_state` frames waiting for the gateway's `state` reply. */
  readonly #stateAcks = new Map<number, () => void>();

  /** Opens the WebSocket; throws what its constructor throws (e.g. a malformed URL). */
  constructor(options: SocketOptions, events: SocketEvents) {
    this.#clock = options.clock;
    this.#events = events;
    this.#timing = options.timing;
    this.#appState = options.appState;
    this.#backgroundService = options.backgroundService;
    this.closed = new Promise<void>((resolve) => this.#markClosed = resolve);

    const handshake = options.handshake;
    const ws = new options.WebSocket(options.url, options.protocols);
    this.#ws = ws;
    this.#handshakeTimer = this.#clock.setTimeout(() => {
      this.#handshakeTimer = null;
      this.#end({ reason: "handshake_timeout", source: "client", code: ABNORMAL_CLOSE });
    }, options.handshakeTimeoutMs);

    ws.onopen = () => {
      const extra = handshake?.() ?? {};
      this.#send({
        type: "connect",
        id: this.#nextFrameId(),
        appState: this.#appState,
        backgroundService: this.#backgroundService,
        ...(extra.resume === undefined ? {} : { resume: extra.resume }),
        ...(extra.presence === undefined ? {} : { presence: extra.presence }),
      });
    };
    ws.onmessage = (event: MessageEvent) => {
      if (typeof event.data !== "string") return;
      const decoded = decodeServerFrame(event.data);
      if (decoded.ok) this.#onFrame(decoded.frame);
    };
    ws.onerror = () => {/* The close event follows and carries what is known. */};
    ws.onclose = (event: CloseEvent) => {
      const serverReason = reasonOfCloseCode(event.code);
      if (serverReason !== undefined) {
        this.#end({
          reason: serverReason,
          source: "server",
          code: event.code,
          errorDescription: event.reason || undefined,
        });
      } else {
        this.#end({ reason: "network_lost", source: "client", code: event.code });
      }
    };
  }

  /** Whether the gateway confirmed the handshake (and the socket has not ended since). */
  get handshaken(): boolean {
    return this.#handshaken && !this.#ended;
  }

  /**
   * Records the app state (announced by the `connect` frame, or re-sent after `connected`
   * if it changed meanwhile) and, once handshaken, sends it. Heartbeats stop in background
   * and restart in foreground. Resolves once the gateway answered, the socket ended, or a
   * pong timeout passed; returns undefined when nothing was sent.
   */
  setAppState(state: AppState, backgroundService: boolean): Promise<void> | undefined {
    if (this.#ended) return undefined;
    this.#appState = state;
    this.#backgroundService = backgroundService;
    let acknowledged: Promise<void> | undefined;
    if (this.#handshaken) {
      const id = this.#nextFrameId();
      acknowledged = new Promise<void>((resolve) => {
        const done = () => {
          if (!this.#stateAcks.delete(id)) return;
          this.#clock.clearTimeout(timer);
          resolve();
        };
        const timer = this.#clock.setTimeout(done, this.#timing.pongTimeoutMs);
        this.#stateAcks.set(id, done);
      });
      this.#send({ type: "app_state", id, state, backgroundService });
    }
    if (state === "background") this.#stopHeartbeat();
    else if (this.#handshaken) this.#startHeartbeat();
    return acknowledged;
  }

  /**
   * An app ping: resolves with its pong. No pong within the pong timeout ends the socket
   * (`pong_timeout`), which rejects the ping; an `error` reply rejects it alone.
   */
  ping(): Promise<ServerFrameOf<"pong">> {
    if (!this.handshaken) return Promise.reject(new GatewayError("NO_WEBSOCKET_CONNECTION"));
    const id = this.#nextFrameId();
    const pong = new Promise<ServerFrameOf<"pong">>((resolve, reject) => {
      const timer = this.#clock.setTimeout(() => {
        this.#end({ reason: "pong_timeout", source: "client", code: ABNORMAL_CLOSE });
      }, this.#timing.pongTimeoutMs);
      this.#pings.set(id, { resolve, reject, timer });
    });
    this.#send({ type: "ping", id, source: "app" });
    return pong;
  }

  /**
   * Asks the gateway to close (`disconnect` frame) and stops heartbeats, since a pong timeout
   * now would only blur the reason. If the gateway has not closed within `timeoutMs`, the
   * socket ends itself with `client_disconnect`.
   */
  disconnect(timeoutMs: number): void {
    if (this.#ended) return;
    this.#stopHeartbeat();
    this.#send({ type: "disconnect", id: this.#nextFrameId() });
    this.#disconnectTimer ??= this.#clock.setTimeout(() => {
      this.#disconnectTimer = null;
      this.#end({ reason: "client_disconnect", source: "client", code: 1000 });
    }, timeoutMs);
  }

  /**
   * Sends a message (`send` frame); returns the frame id its `error` answer would carry, or
   * null when the socket is not handshaken. Its success is the `sent` frame (`onSent`).
   */
  sendMessage(send: UserSend): number | null {
    if (!this.handshaken) return null;
    const id = this.#nextFrameId();
    this.#send({ type: "send", id, ...send });
    return id;
  }

  /** Sends `start_typing` or `end_typing`; false when the socket is not handshaken. */
  typing(type: "start_typing" | "end_typing", target: TypingTarget): boolean {
    if (!this.handshaken) return false;
    this.#send({
      type,
      id: this.#nextFrameId(),
      receiverType: target.receiverType,
      receiver: target.receiver,
    });
    return true;
  }

  /** Ends the socket from this side; the end is reported like any other. */
  close(end: SocketEnd): void {
    this.#end(end);
  }

  #onFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case "connected":
        this.#clearHandshakeTimer();
        this.#handshaken = true;
        this.#timing = frame.timing;
        // The app state may have changed while the handshake was on its way.
        if (
          frame.appState !== this.#appState || frame.backgroundService !== this.#backgroundService
        ) {
          this.#send({
            type: "app_state",
            id: this.#nextFrameId(),
            state: this.#appState,
            backgroundService: this.#backgroundService,
          });
        }
        if (this.#appState === "foreground") this.#startHeartbeat();
        this.#events.onConnected(frame);
        return;
      case "pong": {
        this.#events.onBackgroundDeadline(frame.backgroundDeadline);
        if (typeof frame.id !== "number") return;
        if (frame.id === this.#heartbeatId) {
          this.#heartbeatId = null;
          this.#clearPongTimer();
          if (this.#appState === "foreground") this.#startHeartbeat();
          return;
        }
        const waiter = this.#pings.get(frame.id);
        if (waiter !== undefined) {
          this.#pings.delete(frame.id);
          this.#clock.clearTimeout(waiter.timer);
          waiter.resolve(frame);
        }
        return;
      }
      case "state":
        this.#events.onBackgroundDeadline(frame.backgroundDeadline);
        if (typeof frame.id === "number") this.#stateAcks.get(frame.id)?.();
        return;
      case "error": {
        const error = new GatewayError(frame.errorCode, frame.errorDescription, frame.details);
        // A refused app_state is settled, and still told to the owner (no ping matches it).
        if (typeof frame.id === "number") this.#stateAcks.get(frame.id)?.();
        const waiter = typeof frame.id === "number" ? this.#pings.get(frame.id) : undefined;
        if (waiter !== undefined && typeof frame.id === "number") {
          this.#pings.delete(frame.id);
          this.#clock.clearTimeout(waiter.timer);
          waiter.reject(error);
        } else if (!this.#handshaken) {
          this.#handshakeError = error; // Reported with the end that follows.
        } else {
          this.#events.onError(error, frame.id);
        }
        return;
      }
      case "message":
        this.#events.onMessage(frame.message, frame.seq);
        return;
      case "sent":
        this.#events.onSent(frame);
        return;
      case "typing_started":
      case "typing_ended":
        this.#events.onTyping(frame);
        return;
      case "presence":
        this.#events.onPresence(frame);
        return;
      case "closing":
        this.#end({
          reason: frame.reason,
          source: "server",
          code: frame.code,
          errorDescription: frame.errorDescription,
        });
        return;
    }
  }

  /**
   * The socket's one end. Order: detach and close the WebSocket, stop every timer, fail the
   * pings and settle the app-state waits, then tell the owner — last, so that whatever the
   * owner does next (open a new socket, call listeners) finds this one fully ended.
   */
  #end(end: SocketEnd): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#drop(end.reason);
    this.#clearHandshakeTimer();
    this.#stopHeartbeat();
    if (this.#disconnectTimer !== null) this.#clock.clearTimeout(this.#disconnectTimer);
    this.#disconnectTimer = null;
    for (const waiter of this.#pings.values()) {
      this.#clock.clearTimeout(waiter.timer);
      waiter.reject(new GatewayError("NO_WEBSOCKET_CONNECTION", undefined, { reason: end.reason }));
    }
    this.#pings.clear();
    for (const done of [...this.#stateAcks.values()]) done();
    this.#events.onEnd({ ...end, handshakeError: this.#handshakeError });
  }

  /** Detaches the WebSocket's handlers and closes it; `closed` settles once it has closed. */
  #drop(reason: ConnectionEndReason): void {
    const ws = this.#ws;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onerror = null;
    if (ws.readyState === WS_CLOSED) {
      ws.onclose = null;
      this.#markClosed();
      return;
    }
    const finish = () => {
      ws.onclose = null;
      this.#markClosed();
    };
    const timer = this.#clock.setTimeout(finish, CLOSE_WAIT_MS);
    ws.onclose = () => {
      this.#clock.clearTimeout(timer);
      finish();
    };
    if (ws.readyState === WS_CONNECTING || ws.readyState === WS_OPEN) {
      try {
        ws.close(1000, reason);
      } catch {
        // Already closing.
      }
    }
  }

  #startHeartbeat(): void {
    this.#stopHeartbeat();
    const timing = this.#timing;
    this.#heartbeatTimer = this.#clock.setTimeout(() => {
      this.#heartbeatTimer = null;
      if (this.#ended || !this.#handshaken || this.#appState !== "foreground") return;
      const id = this.#nextFrameId();
      this.#heartbeatId = id;
      this.#pongTimer = this.#clock.setTimeout(() => {
        this.#pongTimer = null;
        this.#end({ reason: "pong_timeout", source: "client", code: ABNORMAL_CLOSE });
      }, timing.pongTimeoutMs);
      this.#send({ type: "ping", id, source: "heartbeat" });
    }, timing.heartbeatIntervalMs);
  }

  #stopHeartbeat(): void {
    if (this.#heartbeatTimer !== null) this.#clock.clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    this.#clearPongTimer();
    this.#heartbeatId = null;
  }

  #clearPongTimer(): void {
    if (this.#pongTimer !== null) this.#clock.clearTimeout(this.#pongTimer);
    this.#pongTimer = null;
  }

  #clearHandshakeTimer(): void {
    if (this.#handshakeTimer !== null) this.#clock.clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = null;
  }

  #send(frame: ClientFrameInput): void {
    if (this.#ws.readyState !== WS_OPEN) return;
    try {
      this.#ws.send(encodeClientFrame(frame));
    } catch {
      // The close event follows.
    }
  }

  #nextFrameId(): number {
    return ++this.#frameSeq;
  }
}
