/**
 * Test harness: a real gateway on a random loopback port, real WebSockets, and a typed frame
 * reader. Every gateway and socket a test opens is closed by `using`/`await using` or `stop`.
 */
import { createRestClient, decodeServerFrame, encodeClientFrame } from "../../client/mod.ts";
import type { ClientFrameInput, Mode, ServerFrame, ServerFrameOf } from "../../contract/mod.ts";
import { DEV_APP, type GatewayConfig, startGateway, type StartOptions } from "../../gateway/mod.ts";
import type { RunningGateway } from "../../gateway/server.ts";
import type { Clock, TimerHandle } from "../../gateway/clock.ts";

/** Short timings so lifecycle tests run in well under a second each. */
export const FAST: Partial<GatewayConfig> = {
  livenessWindowMs: 400,
  heartbeatIntervalMs: 150,
  pongTimeoutMs: 100,
  idleTimeoutMs: 2_000,
  deadlineTickMs: 5,
  persistDelayMs: 5,
};

export interface TestGateway extends RunningGateway, AsyncDisposable {
  rest: ReturnType<typeof createRestClient>;
  wsUrl: string;
}

export async function startTestGateway(
  config: Partial<GatewayConfig> = {},
  options: Omit<StartOptions, "config"> = {},
): Promise<TestGateway> {
  const gateway = await startGateway({
    ...options,
    config: { port: 0, hostname: "127.0.0.1", kvPath: ":memory:", dev: true, ...FAST, ...config },
  });
  return Object.assign(gateway, {
    rest: createRestClient({ baseUrl: gateway.url }),
    wsUrl: gateway.url.replace(/^http/, "ws") + "/v1/ws",
    [Symbol.asyncDispose]: () => gateway.stop(),
  });
}

/** Headers of a server API call to the dev app. */
export const API_KEY = { apikey: DEV_APP.apiKey };

/** Logs in a dev user and returns its session credential. */
export async function login(
  gateway: TestGateway,
  mode: Mode,
  uid = "superhero1",
): Promise<{ credential: string; sessionId: string }> {
  const res = await gateway.rest.login({
    params: { appId: DEV_APP.appId },
    body: { uid, authKey: DEV_APP.authKey!, mode },
  });
  if (res.status !== 200) throw new Error(`login failed: ${JSON.stringify(res.body)}`);
  return { credential: res.body.session.credential, sessionId: res.body.session.sessionId };
}

export interface CloseInfo {
  code: number;
  reason: string;
  /** When the close event arrived (Date.now()). */
  at: number;
}

/** A WebSocket with a queue of decoded server frames. */
export class TestSocket implements AsyncDisposable {
  readonly ws: WebSocket;
  readonly frames: ServerFrame[] = [];
  readonly closed: Promise<CloseInfo>;
  readonly opened: Promise<void>;
  #waiters: Array<() => void> = [];
  #read = 0;

  constructor(url: string, protocols?: string[]) {
    this.ws = new WebSocket(url, protocols);
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener("open", () => resolve(), { once: true });
      this.ws.addEventListener("error", () => reject(new Error("socket error before open")), {
        once: true,
      });
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.addEventListener("close", (e) => {
        resolve({ code: e.code, reason: e.reason, at: Date.now() });
        this.#wake();
      });
    });
    this.ws.addEventListener("message", (e) => {
      const decoded = decodeServerFrame(String(e.data));
      if (!decoded.ok) throw new Error(`server sent an invalid frame: ${e.data}`);
      this.frames.push(decoded.frame);
      this.#wake();
    });
  }

  /** `gateway`: an in-process gateway, or anything with its WebSocket URL (a GatewayProcess). */
  static async open(gateway: { wsUrl: string }, credential: string): Promise<TestSocket> {
    const socket = new TestSocket(`${gateway.wsUrl}?credential=${encodeURIComponent(credential)}`);
    await socket.opened;
    return socket;
  }

  /** Opens and completes the handshake. */
  static async connect(
    gateway: { wsUrl: string },
    credential: string,
    handshake: Omit<Extract<ClientFrameInput, { type: "connect" }>, "type"> = {},
  ): Promise<{ socket: TestSocket; connected: ServerFrameOf<"connected"> }> {
    const socket = await TestSocket.open(gateway, credential);
    socket.send({ type: "connect", ...handshake });
    const connected = await socket.next("connected");
    return { socket, connected };
  }

  send(frame: ClientFrameInput): void {
    this.ws.send(encodeClientFrame(frame));
  }

  sendRaw(data: string | Uint8Array): void {
    this.ws.send(data);
  }

  /** The next unread frame (of `type`, if given: frames of other types before it are an error). */
  async next<T extends ServerFrame["type"]>(
    type?: T,
    timeoutMs = 3_000,
  ): Promise<ServerFrameOf<T>> {
    const deadline = Date.now() + timeoutMs;
    while (this.#read >= this.frames.length) {
      if (this.ws.readyState === WebSocket.CLOSED) {
        throw new Error(`socket closed while waiting for a ${type ?? "frame"}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${type ?? "frame"} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const frame = this.frames[this.#read++];
    if (type !== undefined && frame.type !== type) {
      throw new Error(`expected a ${type} frame, got ${JSON.stringify(frame)}`);
    }
    return frame as ServerFrameOf<T>;
  }

  /** The next frame of `type`, skipping frames of other types on the way. */
  async until<T extends ServerFrame["type"]>(
    type: T,
    timeoutMs = 3_000,
  ): Promise<ServerFrameOf<T>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = await this.next(undefined, Math.max(1, deadline - Date.now()));
      if (frame.type === type) return frame as ServerFrameOf<T>;
    }
  }

  /** Frames not read yet. */
  unread(): ServerFrame[] {
    return this.frames.slice(this.#read);
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(1000);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A clock a test can move forward (`offset`): only `now` moves, timers are real, so a whole
 * gateway runs on it without pumping (a ManualClock would stall its group commits).
 */
export class OffsetClock implements Clock {
  offset = 0;
  now = (): number => Date.now() + this.offset;
  setTimer = (callback: () => void, delayMs: number): TimerHandle =>
    setTimeout(callback, delayMs) as unknown as TimerHandle;
  clearTimer = (handle: TimerHandle): void => clearTimeout(handle as number);
}

/**
 * A WebSocket peer on raw TCP that completes the handshake (`connect`) and then reads nothing
 * until its caller does, so what the gateway sends piles up in its buffers: a slow consumer.
 */
export async function openStalledPeer(
  gateway: { url: string },
  credential: string,
): Promise<Deno.TcpConn> {
  const { port } = new URL(gateway.url);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
  const utf8 = new TextEncoder();
  await conn.write(utf8.encode(
    `GET /v1/ws?credential=${encodeURIComponent(credential)} HTTP/1.1\r\n` +
      `Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  ));
  // A masked text frame with an all-zero mask: the payload goes as it is.
  const connect = utf8.encode('{"type":"connect"}');
  await conn.write(new Uint8Array([0x81, 0x80 | connect.length, 0, 0, 0, 0, ...connect]));
  return conn;
}
