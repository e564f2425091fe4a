/**
 * An in-process fake of the gateway (HTTP routes + WebSocket) for the client's
 * state-machine tests.
 *
 * Why it exists: the real gateway runs on the wall clock and a real network decides when
 * frames and closes arrive. These tests drive the client's heartbeat, pong timeout and
 * backoff with a {@link FakeClock}, and deliver frames and closes in an exact order — e.g. a
 * late close of an old socket after its replacement connected, or a live event that arrives
 * while the client pages the history — which only a fake can promise. What the real gateway
 * does is covered by `gateway.test.ts` and `events.test.ts`.
 *
 * The fake keeps ONE user's event stream (`events`, seq 1, 2, …), answers `resume` the way the
 * gateway does (replay, or `recovered: false` with the gateway's reasons), serves the history
 * route from it, and answers sends (frame and HTTP) idempotently by clientMessageId.
 */
import {
  type ClientFrame,
  type ClientFrameOf,
  decodeClientFrame,
  encodeServerFrame,
  type HistoryPage,
  type InitReply,
  type LoginReply,
  type Message,
  type Mode,
  type ServerFrame,
  type StreamEvent,
  type StreamPosition,
  type StreamStatus,
  type Timing,
  type UserSend,
} from "../../client/mod.ts";

export const FAKE_TIMING: Timing = {
  livenessWindowMs: 1_000,
  heartbeatIntervalMs: 400,
  pongTimeoutMs: 100,
  idleTimeoutMs: 2_000,
  typingTimeoutMs: 1_000,
  presenceIntervalMs: 50,
};

/** A text message from `from` to superhero1 (the fake's user). */
export function textMessage(text: string, from = "superhero2"): Message {
  return {
    kind: "text",
    text,
    id: `m-${text}`,
    from,
    receiverType: "user",
    to: "superhero1",
    sentAt: 0,
  };
}

/** One socket the client opened; the test plays the server side. */
export class FakeSocket {
  readyState = 0;
  protocol = "";
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  onclose: ((event: { code: number; reason: string; wasClean: boolean }) => void) | null = null;
  /** Frames the client sent, decoded. */
  readonly sent: ClientFrame[] = [];
  /** The close the client asked for, if any. */
  closedByClient: { code?: number; reason?: string } | null = null;
  /** Complete a close the client asked for (default true); false keeps it hanging. */
  autoCloseOnClientClose = true;

  constructor(
    readonly server: FakeGateway,
    readonly url: string,
    readonly protocols: string[],
  ) {}

  // ---- the client's side ----

  send(data: string): void {
    const decoded = decodeClientFrame(data);
    if (!decoded.ok) throw new Error(`client sent an invalid frame: ${data}`);
    this.sent.push(decoded.frame);
    this.server.onClientFrame(this, decoded.frame);
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.closedByClient = { code, reason };
    this.readyState = 2;
    if (!this.autoCloseOnClientClose) return;
    queueMicrotask(() => this.#finishClose(code ?? 1005, reason ?? "", true));
  }

  // ---- the server's side ----

  /** Completes the upgrade. */
  open(): void {
    this.readyState = 1;
    this.protocol = "liveness.v1";
    this.onopen?.({});
  }

  deliver(frame: ServerFrame): void {
    if (this.readyState !== 1) return;
    this.onmessage?.({ data: encodeServerFrame(frame) });
  }

  /** The server closes with `code` (a closing frame first when `reason` is a rule). */
  serverClose(code: number, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: true });
  }

  /** The network drops the connection: 1006, no close frame. */
  drop(): void {
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: "", wasClean: false });
  }

  #finishClose(code: number, reason: string, wasClean: boolean): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean });
  }

  /** Frames of one type the client sent. */
  sentOf<T extends ClientFrame["type"]>(type: T): Extract<ClientFrame, { type: T }>[] {
    return this.sent.filter((f): f is Extract<ClientFrame, { type: T }> => f.type === type);
  }
}

/** The fake gateway: answers init/login/logout over `fetch`, and plays the sockets. */
export class FakeGateway {
  readonly sockets: FakeSocket[] = [];
  /** Open sockets at once when the client creates them (default true). */
  autoOpen = true;
  /** Answer `connect` with `connected` (default true). */
  autoHandshake = true;
  /** Answer heartbeats and pings with `pong` (default true). */
  autoPong = true;
  /** HTTP requests seen, as `METHOD path` (with the query, when there is one). */
  readonly requests: string[] = [];
  #sessions = 0;

  // ---- the user's event stream ----

  epoch = "epoch-1";
  /** The stream: `events[i].seq === i + 1`. */
  readonly events: StreamEvent[] = [];
  /** Events below this seq are past retention (by count): the history route skips them. */
  retainedFrom = 1;
  /**
   * Events past retention by age although still cached: a page leaves them out, and its
   * `nextAfter` moves past them (as the gateway's does).
   */
  readonly expired = new Set<number>();
  /** Most events replayed on connect (the gateway's REPLAY_LIMIT). */
  replayLimit = 1_000;
  /** When set, decides the `connected` frame's stream status instead of the model. */
  streamStatus: ((resume: StreamPosition | undefined) => StreamStatus) | null = null;
  /** Hold the answers of history requests until `releaseHistory()` (to send live events meanwhile). */
  holdHistory = false;
  readonly #heldHistory: Array<() => void> = [];
  /** History requests fail with a network error while this is above 0 (each one counts). */
  failHistory = 0;
  /** Answer `send` frames (default true); false leaves them unanswered (a lost answer). */
  autoAnswerSends = true;
  /** `POST /v1/session/logout` closes the newest socket (4006) before it answers. */
  closeOnLogout = false;
  /** `POST /v1/session/messages` fails with a network error (default false). */
  failHttpSends = false;
  /** First results of sends, by clientMessageId. */
  readonly #sends = new Map<string, { seq: number; message: Message }>();

  /** The WebSocket constructor to inject into the client. */
  readonly WebSocket: new (url: string, protocols?: string | string[]) => WebSocket;
  /** The fetch to inject into the client. */
  readonly fetch: typeof fetch;

  constructor(readonly timing: Timing = FAKE_TIMING) {
    // deno-lint-ignore no-this-alias
    const server = this;
    this.WebSocket = class {
      constructor(url: string, protocols?: string | string[]) {
        const socket = new FakeSocket(
          server,
          url,
          protocols === undefined ? [] : [protocols].flat(),
        );
        server.sockets.push(socket);
        if (server.autoOpen) queueMicrotask(() => socket.open());
        return socket;
      }
    } as unknown as new (url: string, protocols?: string | string[]) => WebSocket;
    this.fetch = (input, init) => this.#answer(input, init);
  }

  /** The newest socket. */
  get last(): FakeSocket {
    const socket = this.sockets.at(-1);
    if (socket === undefined) throw new Error("no socket yet");
    return socket;
  }

  /** The stream's last seq. */
  get head(): number {
    return this.events.length;
  }

  /** Appends a message to the stream; returns its event (not delivered: see `deliverLive`). */
  append(message: Message): StreamEvent {
    const event: StreamEvent = { type: "message", seq: this.head + 1, message };
    this.events.push(event);
    return event;
  }

  /** Appends a message and sends it live on the newest socket. */
  push(message: Message): StreamEvent {
    const event = this.append(message);
    this.last.deliver(event);
    return event;
  }

  /** History requests read and held (`holdHistory`), not answered yet. */
  get heldHistory(): number {
    return this.#heldHistory.length;
  }

  /** Lets the held history requests go on. */
  releaseHistory(): void {
    for (const release of this.#heldHistory.splice(0)) release();
  }

  /** The stream status a connect with `resume` gets, and the events replayed after it. */
  resumeOf(resume: StreamPosition | undefined): { stream: StreamStatus; replay: StreamEvent[] } {
    const refuse = (reason: NonNullable<StreamStatus["reason"]>) => ({
      stream: { epoch: this.epoch, seq: this.head, recovered: false, reason, replayed: 0 },
      replay: [],
    });
    if (this.streamStatus !== null) {
      const stream = this.streamStatus(resume);
      return { stream, replay: stream.recovered ? this.events.slice(resume!.seq) : [] };
    }
    if (resume === undefined) return refuse("no_position");
    if (resume.epoch !== this.epoch) return refuse("epoch_changed");
    if (resume.seq > this.head) return refuse("ahead_of_stream");
    if (resume.seq + 1 < this.retainedFrom) return refuse("retention");
    if ([...this.expired].some((seq) => seq > resume.seq)) return refuse("retention");
    if (this.head - resume.seq > this.replayLimit) return refuse("replay_limit");
    const replay = this.events.slice(resume.seq);
    return {
      stream: { epoch: this.epoch, seq: this.head, recovered: true, replayed: replay.length },
      replay,
    };
  }

  /** A user's send: the first result for its clientMessageId, or a new event. */
  #send(send: UserSend): { seq: number; message: Message; duplicate: boolean } {
    const first = this.#sends.get(send.clientMessageId);
    if (first !== undefined) return { ...first, duplicate: true };
    const message: Message = {
      ...send.message,
      id: `m-${send.clientMessageId}`,
      from: "superhero1",
      receiverType: send.receiverType,
      to: send.receiver,
      clientMessageId: send.clientMessageId,
      sentAt: 0,
    };
    const { seq } = this.append(message);
    this.#sends.set(send.clientMessageId, { seq, message });
    return { seq, message, duplicate: false };
  }

  /** Answers a `send` frame that was left unanswered (`autoAnswerSends` false). */
  answerSend(socket: FakeSocket, frame: ClientFrameOf<"send">): void {
    const { type: _type, id, ...send } = frame;
    const result = this.#send(send);
    socket.deliver({ type: "sent", id, ...result });
  }

  onClientFrame(socket: FakeSocket, frame: ClientFrame): void {
    const reply = (f: ServerFrame) => queueMicrotask(() => socket.deliver(f));
    if (frame.type === "connect" && this.autoHandshake) {
      const { stream, replay } = this.resumeOf(frame.resume);
      reply({
        type: "connected",
        id: frame.id,
        sessionId: "s1",
        uid: "superhero1",
        mode: this.#mode,
        appState: frame.appState ?? "foreground",
        backgroundService: frame.backgroundService ?? false,
        backgroundDeadline: null,
        serverTime: 0,
        timing: this.timing,
        stream,
      });
      for (const event of replay) reply(event);
    } else if (frame.type === "send" && this.autoAnswerSends) {
      queueMicrotask(() => this.answerSend(socket, frame));
    } else if (frame.type === "ping" && this.autoPong) {
      reply({ type: "pong", id: frame.id, serverTime: 0, backgroundDeadline: null });
    } else if (frame.type === "app_state" && this.autoPong) {
      // Like the gateway: acknowledge with the state (the deadline is not modelled here).
      reply({
        type: "state",
        id: frame.id,
        appState: frame.state,
        backgroundService: frame.backgroundService ?? false,
        backgroundDeadline: null,
      });
    }
  }

  #mode: Mode = "auto";

  async #answer(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const url = new URL(typeof input === "string" ? input : String(input));
    const method = init?.method ?? "GET";
    this.requests.push(`${method} ${url.pathname}${url.search}`);
    const body = typeof init?.body === "string" ? JSON.parse(init.body) : undefined;
    const json = (status: number, value: unknown) =>
      new Response(JSON.stringify(value), {
        status,
        headers: { "content-type": "application/json" },
      });
    if (url.pathname.endsWith("/init")) {
      this.#mode = body.autoEstablishSocketConnection === false ? "manual" : "auto";
      const reply: InitReply = {
        appId: "demo",
        region: body.region,
        subscriptionType: body.subscriptionType ?? "allUsers",
        ...(body.roles === undefined ? {} : { roles: body.roles }),
        autoEstablishSocketConnection: this.#mode === "auto",
        mode: this.#mode,
        timing: this.timing,
        devLoginEnabled: true,
        websocketPath: "/v1/ws",
      };
      return json(200, reply);
    }
    if (url.pathname.endsWith("/login")) {
      const n = ++this.#sessions;
      const reply: LoginReply = {
        user: { uid: body.uid ?? "superhero1", name: "Superhero", createdAt: 0 },
        session: { sessionId: `s${n}`, credential: `cred${n}`, mode: body.mode, createdAt: 0 },
      };
      return json(200, reply);
    }
    if (url.pathname === "/v1/session/logout") {
      // Like the gateway: the session's socket is closed (logged_out) before the answer.
      if (this.closeOnLogout) this.sockets.at(-1)?.serverClose(4006, "logged_out");
      return json(200, { ok: true });
    }
    if (url.pathname === "/v1/session/events") {
      if (this.failHistory > 0) {
        this.failHistory--;
        throw new TypeError("fetch failed (fake network error)");
      }
      // The page is read now and answered when released: events appended meanwhile are not
      // in it (as with a real read whose answer is still on its way).
      const after = Number(url.searchParams.get("after") ?? 0);
      const limit = Number(url.searchParams.get("limit") ?? 100);
      const from = Math.min(Math.max(after, this.retainedFrom - 1), this.head);
      const read = this.events.slice(from, from + limit);
      const nextAfter = read.at(-1)?.seq ?? from;
      const page: HistoryPage = {
        epoch: this.epoch,
        events: read.filter((event) => !this.expired.has(event.seq)),
        lastSeq: this.head,
        nextAfter,
        hasMore: nextAfter < this.head,
      };
      if (this.holdHistory) await new Promise<void>((resolve) => this.#heldHistory.push(resolve));
      return json(200, page);
    }
    if (url.pathname === "/v1/session/messages" && method === "POST") {
      if (this.failHttpSends) throw new TypeError("fetch failed (fake network error)");
      const result = this.#send(body);
      // Like the gateway: the sending session's socket gets its `sent` frame too.
      if (!result.duplicate) {
        const socket = this.sockets.at(-1);
        if (socket?.readyState === 1) socket.deliver({ type: "sent", ...result });
      }
      return json(200, result);
    }
    return json(404, { errorCode: "ERR_NOT_FOUND", errorDescription: "No such route." });
  }
}

/** Lets queued microtasks (fake socket events) run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}
