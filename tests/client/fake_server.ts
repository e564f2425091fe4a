/**
 * An in-process fake of the gateway (HTTP routes + WebSocket) for the client's
 * state-machine tests.
 *
 * Why it exists: the real gateway runs on the wall clock and a real network decides when
 * frames and closes arrive. These tests drive the client's heartbeat, pong timeout and
 * backoff with a {@link FakeClock}, and deliver frames and closes in an exact order — e.g. a
 * late close of an old socket after its replacement connected — which only a fake can
 * promise. What the real gateway does is covered by `gateway.test.ts`.
 */
import {
  type ClientFrame,
  decodeClientFrame,
  encodeServerFrame,
  type InitReply,
  type LoginReply,
  type Mode,
  type ServerFrame,
  type Timing,
} from "../../client/mod.ts";

export const FAKE_TIMING: Timing = {
  livenessWindowMs: 1_000,
  heartbeatIntervalMs: 400,
  pongTimeoutMs: 100,
  idleTimeoutMs: 2_000,
};

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
  /** HTTP requests seen, as `METHOD path`. */
  readonly requests: string[] = [];
  #sessions = 0;

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
    this.fetch = (input, init) => Promise.resolve(this.#answer(input, init));
  }

  /** The newest socket. */
  get last(): FakeSocket {
    const socket = this.sockets.at(-1);
    if (socket === undefined) throw new Error("no socket yet");
    return socket;
  }

  onClientFrame(socket: FakeSocket, frame: ClientFrame): void {
    const reply = (f: ServerFrame) => queueMicrotask(() => socket.deliver(f));
    if (frame.type === "connect" && this.autoHandshake) {
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
      });
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

  #answer(input: RequestInfo | URL, init?: RequestInit): Response {
    const url = new URL(typeof input === "string" ? input : String(input));
    const method = init?.method ?? "GET";
    this.requests.push(`${method} ${url.pathname}`);
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
    if (url.pathname === "/v1/session/logout") return json(200, { ok: true });
    return json(404, { errorCode: "ERR_NOT_FOUND", errorDescription: "No such route." });
  }
}

/** Lets queued microtasks (fake socket events) run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}
