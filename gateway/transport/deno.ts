/**
 * The edge transport: `Deno.serve` and `Deno.upgradeWebSocket`. For platforms that accept and
 * terminate connections themselves (Deno Deploy and the like) and apply their own connection
 * limits; nothing here needs a local file or a Node API.
 *
 * What it cannot enforce, because Deno handles it in Rust before JavaScript sees it (the node
 * transport does all of these; docs/security.md lists them): a connection cap and per-address
 * caps, timeouts for a slow request head or an unanswered close, refusing an oversized frame
 * before it is read (here it is refused after: close 1009), answering WebSocket ping frames
 * under the frame budget.
 */
import {
  normalizeAddress,
  type RunningTransport,
  type ServeOptions,
  type Upgrade,
  UpgradeRefused,
  type WireEvents,
  type WireSocket,
} from "./types.ts";

export async function serveDeno(options: ServeOptions): Promise<RunningTransport> {
  const abort = new AbortController();
  let resolveListen: (addr: Deno.NetAddr) => void;
  const listening = new Promise<Deno.NetAddr>((r) => (resolveListen = r));
  let connections = 0;
  const server = Deno.serve(
    {
      port: options.port,
      hostname: options.hostname,
      signal: abort.signal,
      onListen: (addr) => resolveListen(addr as Deno.NetAddr),
      onError: (error) => {
        options.onError?.("transport.request_failed", error);
        return new Response(null, { status: 500 });
      },
    },
    (request, info) => {
      const upgrade: Upgrade = (req, { protocol }) => {
        let upgraded: Deno.WebSocketUpgrade;
        try {
          // idleTimeout 0: dead peers are the gateway's own rule (`idle_timeout`); Deno's
          // keepalive would re-arm a timer on every frame and close with its own code.
          upgraded = Deno.upgradeWebSocket(req, { protocol, idleTimeout: 0 });
        } catch {
          throw new UpgradeRefused("The WebSocket upgrade request is malformed.");
        }
        connections++;
        const wire = new DenoWire(upgraded.socket, () => connections--);
        return { socket: wire, response: upgraded.response };
      };
      return options.fetch(request, {
        remoteAddr: normalizeAddress((info.remoteAddr as Deno.NetAddr).hostname),
        upgrade,
      });
    },
  );
  const addr = await listening;
  return {
    hostname: addr.hostname,
    port: addr.port,
    get connections() {
      return connections;
    },
    // No connect budget to charge: the platform in front limits connections.
    penalize: () => {},
    // Deno.serve stops accepting only by aborting, which also ends what it serves: the
    // gateway's draining flag refuses new requests meanwhile, and `close` aborts at the end.
    stopAccepting: () => Promise.resolve(),
    async close() {
      abort.abort();
      await server.finished;
    },
  };
}

class DenoWire implements WireSocket {
  readonly #socket: WebSocket;
  readonly #onGone: () => void;
  #closing = false;

  constructor(socket: WebSocket, onGone: () => void) {
    this.#socket = socket;
    this.#onGone = onGone;
  }

  get bufferedAmount(): number {
    return this.#socket.bufferedAmount;
  }

  get writable(): boolean {
    return this.#socket.readyState === WebSocket.OPEN && !this.#closing;
  }

  listen(events: WireEvents): void {
    const socket = this.#socket;
    socket.onopen = () => events.open();
    socket.onmessage = (event) => {
      const data = event.data;
      if (typeof data === "string") events.text(data);
      else events.binary(data instanceof ArrayBuffer ? data.byteLength : (data as Blob).size);
    };
    socket.onclose = () => {
      this.#onGone();
      events.closed();
    };
    socket.onerror = () => {}; // followed by close
  }

  send(text: string): void {
    this.#socket.send(text);
  }

  pong(): void {
    // Deno answers ping frames itself.
  }

  close(code: number, reason: string, lastFrame?: string): void {
    if (this.#closing) return;
    const state = this.#socket.readyState;
    if (lastFrame !== undefined && state === WebSocket.OPEN) this.#socket.send(lastFrame);
    this.#closing = true;
    if (state === WebSocket.OPEN || state === WebSocket.CONNECTING) {
      this.#socket.close(code, reason);
    }
  }
}
