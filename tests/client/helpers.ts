/**
 * Shared pieces of the client tests: a real gateway on a random loopback port with a short
 * window, a listener that records transitions, a tiny TCP proxy that can cut the network,
 * and a fake clock for the pure tests.
 */
import { type RunningGateway, startGateway } from "../../gateway/mod.ts";
import {
  AppSettingsBuilder,
  type Clock,
  type ConnectionListener,
  type DisconnectInfo,
  GatewayClient,
  type GatewayClientOptions,
  GatewayError,
  type StorageAdapter,
} from "../../client/mod.ts";

/** Timings of the test gateway: short, and still inside the gateway's own sanity rules. */
export const TEST_TIMING = {
  livenessWindowMs: 600,
  heartbeatIntervalMs: 200,
  pongTimeoutMs: 150,
  idleTimeoutMs: 1_000,
  typingTimeoutMs: 1_000,
  presenceIntervalMs: 50,
} as const;

export const DEV = {
  appId: "demo",
  region: "us",
  authKey: "dev_auth_key__not_secret",
  apiKey: "dev_api_key__not_secret",
} as const;

/** Starts a gateway in this process; always `stop()` it. */
export function startTestGateway(
  config: Record<string, unknown> = {},
): Promise<RunningGateway> {
  return startGateway({
    config: {
      port: 0,
      hostname: "127.0.0.1",
      kvPath: ":memory:",
      dev: true,
      ...TEST_TIMING,
      ...config,
    },
  });
}

/** Runs `body` with a fresh gateway and stops it afterwards, whatever happens. */
export async function withGateway(
  body: (gateway: RunningGateway) => Promise<void>,
  config: Record<string, unknown> = {},
): Promise<void> {
  const gateway = await startTestGateway(config);
  try {
    await body(gateway);
  } finally {
    await gateway.stop();
  }
}

/** Settings of the dev app in auto (default) or manual mode. */
export function devSettings(mode: "auto" | "manual" = "auto") {
  return new AppSettingsBuilder()
    .setRegion(DEV.region)
    .subscribePresenceForAllUsers()
    .autoEstablishSocketConnection(mode === "auto")
    .build();
}

/** A client on `baseUrl` with a recorder attached; `destroy()` it at the end. */
export function newClient(
  baseUrl: string,
  options: Partial<GatewayClientOptions> = {},
): { client: GatewayClient; rec: Recorder } {
  const client = new GatewayClient({ baseUrl, trackVisibility: false, ...options });
  const rec = new Recorder();
  client.addConnectionListener("recorder", rec);
  return { client, rec };
}

/** Records every listener call as a short string, in order. */
export class Recorder implements ConnectionListener {
  /** e.g. `connecting`, `connected`, `disconnected:background`, `error:AUTH_ERR_…`. */
  readonly log: string[] = [];
  readonly disconnects: DisconnectInfo[] = [];
  readonly errors: GatewayError[] = [];

  onConnected = (): void => {
    this.log.push("connected");
  };
  inConnecting = (): void => {
    this.log.push("connecting");
  };
  onDisconnected = (info: DisconnectInfo): void => {
    this.disconnects.push(info);
    this.log.push(`disconnected:${info.reason}`);
  };
  onConnectionError = (error: GatewayError): void => {
    this.errors.push(error);
    this.log.push(`error:${error.errorCode}`);
  };

  /** How often `entry` appears in the log. */
  count(entry: string): number {
    return this.log.filter((e) => e === entry).length;
  }

  /** The last disconnect; fails the test when there is none. */
  lastDisconnect(): DisconnectInfo {
    const last = this.disconnects.at(-1);
    if (last === undefined) throw new Error("no disconnect recorded");
    return last;
  }

  /** Waits until `entry` has appeared `times` times in the log. */
  waitFor(entry: string, times = 1, timeoutMs = 4_000): Promise<void> {
    return waitUntil(
      () => this.count(entry) >= times,
      timeoutMs,
      () => `waiting for ${times}× "${entry}"; log: ${JSON.stringify(this.log)}`,
    );
  }
}

/** Polls `condition` every 10 ms; rejects after `timeoutMs`. */
export async function waitUntil(
  condition: () => boolean,
  timeoutMs = 4_000,
  describe: () => string = () => "condition",
): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out: ${describe()}`);
    await sleep(10);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Awaits a promise that must reject with a GatewayError of `code`; returns the error. */
export async function rejectsWith(
  promise: Promise<unknown>,
  code: string,
): Promise<GatewayError> {
  try {
    await promise;
  } catch (error) {
    if (!(error instanceof GatewayError)) throw error;
    if (error.errorCode !== code) {
      throw new Error(`expected ${code}, got ${error.errorCode}: ${error.errorDescription}`);
    }
    return error;
  }
  throw new Error(`expected a rejection with ${code}, but the promise resolved`);
}

/** A storage adapter that shows what the client stored. */
export class InspectableStorage implements StorageAdapter {
  readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

/**
 * A TCP proxy on a random loopback port in front of the gateway: `cut()` drops every
 * connection through it (a network loss as the client sees it: no close frame, just a dead
 * TCP stream), `block()` makes new connections fail until `unblock()`.
 */
export class TcpProxy {
  readonly #listener: Deno.Listener;
  readonly #targetPort: number;
  readonly #conns = new Set<Deno.Conn>();
  readonly #frozen = new WeakSet<Deno.Conn>();
  readonly #pipes = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  #blocked = false;
  /** Connections accepted so far (each WebSocket attempt is one). */
  accepted = 0;

  constructor(targetUrl: string) {
    this.#targetPort = Number(new URL(targetUrl).port);
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#acceptLoop();
  }

  /** The proxy's HTTP origin. */
  get url(): string {
    return `http://127.0.0.1:${(this.#listener.addr as Deno.NetAddr).port}`;
  }

  /** Drops every open connection at once. */
  cut(): void {
    for (const conn of this.#conns) safeClose(conn);
    this.#conns.clear();
  }

  /** The open connections stop carrying data, without closing. */
  freeze(): void {
    for (const conn of this.#conns) this.#frozen.add(conn);
  }

  block(): void {
    this.#blocked = true;
  }

  unblock(): void {
    this.#blocked = false;
  }

  async close(): Promise<void> {
    this.#listener.close();
    this.cut();
    await this.#accepting;
    await Promise.all([...this.#pipes]);
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        this.accepted++;
        if (this.#blocked) {
          safeClose(conn);
          continue;
        }
        const pipe = this.#pipe(conn);
        this.#pipes.add(pipe);
        void pipe.then(() => this.#pipes.delete(pipe));
      }
    } catch {
      // The listener was closed.
    }
  }

  async #pipe(client: Deno.Conn): Promise<void> {
    this.#conns.add(client);
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.#targetPort });
    } catch {
      this.#conns.delete(client);
      safeClose(client);
      return;
    }
    this.#conns.add(upstream);
    const frozen = (conn: Deno.Conn) => this.#frozen.has(conn);
    await Promise.race([pump(client, upstream, frozen), pump(upstream, client, frozen)]);
    for (const conn of [client, upstream]) {
      if (this.#conns.delete(conn)) safeClose(conn);
    }
  }
}

async function pump(
  from: Deno.Conn,
  to: Deno.Conn,
  frozen: (conn: Deno.Conn) => boolean,
): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  try {
    while (true) {
      const n = await from.read(buffer);
      if (n === null) return;
      if (frozen(from)) continue;
      let offset = 0;
      while (offset < n) offset += await to.write(buffer.subarray(offset, n));
    }
  } catch {
    // Closed under us: that is how cut() works.
  }
}

function safeClose(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/**
 * A manual clock for the pure tests: timers run only when the test calls `advance()`,
 * in due order, so backoff and heartbeat timing can be asserted to the millisecond.
 */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; callback: () => void }>();

  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), callback });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Delays of the pending timers, from now, soonest first. */
  pending(): number[] {
    return [...this.#timers.values()].map((t) => t.at - this.#now).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, running every timer that falls due, in order. */
  advance(ms: number): void {
    const end = this.#now + ms;
    while (true) {
      let next: [number, { at: number; callback: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].at <= end && (next === undefined || entry[1].at < next[1].at)) next = entry;
      }
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.#now = next[1].at;
      next[1].callback();
    }
    this.#now = end;
  }
}
