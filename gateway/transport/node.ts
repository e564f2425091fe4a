/**
 * The self-hosting transport: node:http and the `ws` package, under Deno's Node compatibility.
 *
 * Why not `Deno.serve`: it accepts and parses connections in Rust before JavaScript sees them,
 * so a connection that never finishes its head is invisible (no cap, no timeout), an accept
 * error on a full descriptor table ends the process, and a WebSocket frame is read whole (up to
 * 64 MiB) before its size can be checked. Here every TCP connection is a `net.Socket` from
 * accept to close:
 *
 * - a global cap below the process's descriptor limit (counted and answered 503, with the listen
 *   backlog kept small: Deno accepts a whole backlog at once, and an accept that fails with
 *   EMFILE stops its listener for good), a cap and a connect rate per client address, a
 *   penalty for connections closed for abuse and a ban for connect floods;
 * - timeouts for a request's head, a whole request, an idle keep-alive connection and an
 *   unanswered close handshake;
 * - bodies counted while they arrive (413 and the connection closed past the limit), heads
 *   capped, malformed requests answered with the contract's error payload;
 * - `ws` refuses a frame longer than the limit from its header (close 1009) before it holds
 *   the payload.
 *
 * `deno task bench` compares this with `Deno.serve` (BENCHMARKS.md).
 */
import http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import net, { type Socket } from "node:net";
import type { Buffer } from "node:buffer";
// @ts-types="@types/ws"
import { type WebSocket as WsSocket, WebSocketServer } from "ws";
import { type ErrorCode, errorPayload, statusOf } from "../../contract/mod.ts";
import { KeyedRateLimiter } from "../rate_limit.ts";
import {
  normalizeAddress,
  type RequestInfo,
  type RunningTransport,
  type ServeOptions,
  type TransportRefusedFrame,
  type Upgrade,
  UpgradeRefused,
  type WireEvents,
  type WireSocket,
} from "./types.ts";

/**
 * Connections waiting in the kernel to be accepted. Deno's accept loop takes all of them in
 * one turn, so the descriptors they need must fit under the limit next to `maxConnections`.
 */
export const LISTEN_BACKLOG = 128;

/**
 * Frames parsed after the gateway's close frame (a client's in-flight frames, then its close
 * reply); past this many, the rest is dropped unparsed (see `WsWire.#afterClose`).
 */
const POST_CLOSE_FRAMES = 64;

/** How long an address that floods connections is banned (see `AddressBans`). */
const BAN_MS = 10_000;
/** Connections of one banned address held open at once (see `AddressBans`). */
const TARPIT_SLOTS = 16;

/** Refused connections of one address answered with a 429 per second (the rest are dropped). */
const EXPLAINED_REFUSALS_PER_SEC = 4;

/** Refused connections kept open at most this long so that their 429 can be read. */
const REFUSAL_LINGER_MS = 1_000;
/** At most this many refused connections linger at once; beyond that they are dropped at once. */
const MAX_LINGERING = 256;
/**
 * Connections past `maxConnections` that may stay open (briefly, lingering) to read a 503: the
 * descriptors come out of the reserve kept below the open-file limit.
 */
const AT_CAPACITY_EXPLAINED = 16;
/** The "at its connection limit" warning is logged at most this often. */
const AT_CAPACITY_LOG_MS = 10_000;

const encoder = new TextEncoder();

/** The header by which the handler's answer says "upgrade accepted" (see `acceptUpgrade`). */
const UPGRADE_MARKER = "x-gateway-upgrade-accepted";
const markerToken = crypto.randomUUID();

/** Starts the node:http + ws transport; resolves once listening. */
export async function serveNode(options: ServeOptions): Promise<RunningTransport> {
  const { limits } = options;
  const refused = options.onRefused ?? (() => {});
  const reportError = options.onError ?? (() => {});
  const warn = options.onWarning ?? (() => {});

  const server = http.createServer({
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // How often node:http looks for requests past their timeouts.
    connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
    // Nagle off (frames are small and latency-bound), set in the connection handler below
    // only for connections that are kept: a refused one costs no extra syscall.
    noDelay: false,
  } as http.ServerOptions);

  const wss = new WebSocketServer({
    // ws ≥ 8.20 closes the TCP connection when a close handshake is not answered in time
    // (@types/ws does not list the option yet).
    ...({ closeTimeout: limits.closeTimeoutMs } as Record<string, number>),
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: limits.maxFrameBytes,
    // Control frames go through the gateway's frame budget and output limit like any other.
    autoPong: false,
    handleProtocols: (_offered: Set<string>, req: IncomingMessage) =>
      chosenProtocol.get(req) ?? false,
  });
  const chosenProtocol = new WeakMap<IncomingMessage, string>();

  // ---- connections: caps per address and a connect rate, before any byte is parsed ----
  const sockets = new Set<Socket>();
  const perAddress = new Map<string, number>();
  const connectRate = new KeyedRateLimiter(limits.connectRatePerIp, limits.connectRatePerIp * 2);

  /**
   * Closes `socket` after `answer` (a whole HTTP response), draining what the peer still sends
   * for up to `lingerMs` so that the answer is not lost to a reset; then drops it.
   */
  const lingering = new Set<Socket>();
  const endWith = (socket: Socket, answer: string, lingerMs: number) => {
    if (lingering.size >= MAX_LINGERING) return void socket.destroy();
    lingering.add(socket);
    const timer = setTimeout(() => socket.destroy(), lingerMs);
    socket.once("close", () => {
      lingering.delete(socket);
      clearTimeout(timer);
    });
    socket.on("error", () => {});
    socket.resume();
    socket.end(answer);
  };

  // An address that keeps getting refused is told why a few times a second, not every time: a
  // connect flood must cost the gateway as little as possible per connection (no write, no
  // timer), while a client that is merely over its budget still reads a 429.
  const explained = new KeyedRateLimiter(EXPLAINED_REFUSALS_PER_SEC, EXPLAINED_REFUSALS_PER_SEC);
  // An address that goes on connecting at more than twice its connect rate once refused, as a
  // connect flood does, is banned for BAN_MS (see `AddressBans`: held unread, then dropped at
  // the listener).
  const persistence = new KeyedRateLimiter(limits.connectRatePerIp, limits.connectRatePerIp * 2);
  const bans = new AddressBans(server, () => refused("banned"));
  const refuseConnection = (
    socket: Socket,
    kind: "per_ip_cap" | "connect_rate",
    address: string,
  ) => {
    refused(kind);
    const now = Date.now();
    if (kind === "connect_rate" && !persistence.take(address, now)) bans.ban(address, now);
    if (!explained.take(address, now)) return void socket.destroy();
    // Say why (an HTTP client or a WebSocket upgrade reads a 429), then let go.
    const description = kind === "per_ip_cap"
      ? "Too many connections from this address."
      : "Too many new connections from this address.";
    endWith(socket, rawResponse("ERR_TOO_MANY_REQUESTS", description), REFUSAL_LINGER_MS);
  };

  // The global cap, counted here rather than by node:net's `maxConnections` (which Deno's
  // node:net enforces without a word: no 'drop' event, so nothing to count or log). Every
  // accepted connection counts until it closes: served, lingering after a refusal, or held in
  // the tarpit.
  let open = 0;
  let atCapacitySince = 0;
  let atCapacityLoggedAt = -Infinity;
  const refuseAtCapacity = (socket: Socket, address: string) => {
    refused("max_connections");
    const now = Date.now();
    atCapacitySince++;
    if (now - atCapacityLoggedAt >= AT_CAPACITY_LOG_MS) {
      warn("transport.at_capacity", {
        maxConnections: limits.maxConnections,
        refusedSinceLastWarning: atCapacitySince,
      });
      atCapacityLoggedAt = now;
      atCapacitySince = 0;
    }
    if (open > limits.maxConnections + AT_CAPACITY_EXPLAINED || !explained.take(address, now)) {
      return void socket.destroy();
    }
    endWith(
      socket,
      rawResponse(
        "ERR_SERVICE_UNAVAILABLE",
        "The gateway is at its connection limit; retry later.",
      ),
      REFUSAL_LINGER_MS,
    );
  };

  server.on("connection", (socket: Socket) => {
    open++;
    socket.once("close", () => open--);
    const address = normalizeAddress(socket.remoteAddress);
    if (open > limits.maxConnections) return refuseAtCapacity(socket, address);
    if (bans.banned(address, Date.now())) return bans.hold(socket, address);
    const held = perAddress.get(address) ?? 0;
    if (held >= limits.maxConnectionsPerIp) return refuseConnection(socket, "per_ip_cap", address);
    if (!connectRate.take(address, Date.now())) {
      return refuseConnection(socket, "connect_rate", address);
    }
    perAddress.set(address, held + 1);
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left <= 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
  });

  // A request node:http could not parse, or that ran out of time: answered with the error
  // payload (not a bare status line), then the connection is closed.
  server.on("clientError", (error: Error & { code?: string }, socket: Socket) => {
    if (error.code === "ECONNRESET" || !socket.writable) return void socket.destroy();
    let answer: string;
    if (error.code === "HPE_HEADER_OVERFLOW") {
      refused("header_size");
      answer = rawResponse("ERR_HEADERS_TOO_LARGE", undefined, {
        limitBytes: limits.maxHeaderBytes,
      });
    } else if (error.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      refused("headers_timeout");
      answer = rawResponse("ERR_REQUEST_TIMEOUT");
    } else {
      answer = rawResponse("ERR_BAD_REQUEST", "The request is not valid HTTP/1.1.");
    }
    endWith(socket, answer, REFUSAL_LINGER_MS);
  });

  // ---- HTTP requests ----
  const notAnUpgrade: Upgrade = () => {
    throw new UpgradeRefused("This request is not a WebSocket upgrade.");
  };

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    void serveRequest(req, res).catch((error) => {
      reportError("transport.request_failed", error);
      if (!res.headersSent) writeError(res, "ERR_INTERNAL");
      else res.destroy();
    });
  });

  const serveRequest = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = await readBody(req, res);
    if (body === "refused") return;
    const info: RequestInfo = {
      remoteAddr: normalizeAddress(req.socket.remoteAddress),
      upgrade: notAnUpgrade,
    };
    const request = toRequest(req, body);
    if (request === null) return writeError(res, "ERR_BAD_REQUEST", "The request is malformed.");
    const response = await options.fetch(request, info);
    const headers: Record<string, string> = {};
    response.headers.forEach((value, name) => (headers[name] = value));
    const bytes = req.method === "HEAD" || response.body === null
      ? null
      : new Uint8Array(await response.arrayBuffer());
    if (bytes !== null) headers["content-length"] = String(bytes.byteLength);
    res.writeHead(response.status, headers);
    res.end(bytes ?? undefined);
  };

  /**
   * The body, counted while it arrives: past the limit the request gets 413 and its connection
   * is closed (what was sent after it is drained, not answered).
   */
  const readBody = (req: IncomingMessage, res: ServerResponse) =>
    new Promise<Uint8Array<ArrayBuffer> | null | "refused">((resolve, reject) => {
      const declared = Number(req.headers["content-length"] ?? "0");
      const chunked = req.headers["transfer-encoding"] !== undefined;
      if (!chunked && (!Number.isFinite(declared) || declared === 0)) {
        req.resume();
        return resolve(null);
      }
      const refuse = () => {
        refused("body_size");
        writeError(res, "ERR_PAYLOAD_TOO_LARGE", undefined, { limitBytes: limits.maxBodyBytes }, {
          close: true,
        });
        // Lingering close: drain what is still on its way so the 413 is not lost to a reset.
        req.resume();
        const socket = req.socket;
        const timer = setTimeout(() => socket.destroy(), limits.closeTimeoutMs);
        socket.once("close", () => clearTimeout(timer));
        resolve("refused");
      };
      if (declared > limits.maxBodyBytes) return refuse();
      const chunks: Uint8Array[] = [];
      let size = 0;
      let done = false;
      req.on("data", (chunk: Uint8Array) => {
        if (done) return;
        size += chunk.byteLength;
        if (size > limits.maxBodyBytes) {
          done = true;
          chunks.length = 0;
          return refuse();
        }
        chunks.push(chunk);
      });
      req.on("end", () => {
        if (done) return;
        done = true;
        resolve(concat(chunks, size));
      });
      req.on("error", (error) => {
        if (done) return;
        done = true;
        reject(error);
      });
    });

  // ---- WebSocket upgrades ----
  server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on("error", () => {}); // a reset during the handshake is the peer's business
    void acceptUpgrade(req, socket, head).catch((error) => {
      reportError("transport.upgrade_failed", error);
      if (socket.writable) socket.end(rawResponse("ERR_INTERNAL"));
      socket.destroy();
    });
  });

  const acceptUpgrade = async (req: IncomingMessage, socket: Socket, head: Buffer) => {
    let accepted: WsWire | null = null;
    const upgrade: Upgrade = (_request, { protocol }) => {
      const refusal = upgradeRefusal(req);
      if (refusal !== null) throw new UpgradeRefused(refusal);
      if (accepted !== null) throw new UpgradeRefused("The upgrade was accepted already.");
      if (protocol !== undefined) chosenProtocol.set(req, protocol);
      accepted = new WsWire();
      // Middleware may replace the Response object (CORS copies it to set headers), so the
      // marker is a header: a per-process secret, never sent anywhere.
      return {
        socket: accepted,
        response: new Response(null, { status: 200, headers: { [UPGRADE_MARKER]: markerToken } }),
      };
    };
    const request = toRequest(req, null);
    if (request === null) {
      socket.end(rawResponse("ERR_BAD_REQUEST", "The request is malformed."));
      return;
    }
    const response = await options.fetch(request, {
      remoteAddr: normalizeAddress(socket.remoteAddress),
      upgrade,
    });
    const wire = accepted as WsWire | null;
    if (wire === null || response.headers.get(UPGRADE_MARKER) !== markerToken) {
      // Refused by the handler (bad credential format, rate limit, …): its answer, then close.
      // (An upgrade accepted and then answered otherwise still tells its socket it is over.)
      wire?.abort();
      socket.end(await rawFromResponse(response));
      return;
    }
    if (socket.destroyed || !socket.writable) return wire.abort();
    // ws drops a socket the peer has already half-closed without calling back: the wire must
    // still report the end.
    reportEndOf(socket, wire);
    wss.handleUpgrade(req, socket, head, (ws: WsSocket) => wire.attach(ws));
  };

  // ---- listening ----
  // A failed listen rejects (the caller says which setting to change); once listening, accept
  // errors and the like are reported, never thrown (an unhandled 'error' would end the process).
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: options.port, host: options.hostname, backlog: LISTEN_BACKLOG }, () => {
      server.off("error", reject);
      server.on("error", (error: Error) => reportError("transport.server_error", error));
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : options.port;

  let stopped: Promise<void> | null = null;
  const stopAccepting = () =>
    stopped ??= new Promise<void>((resolve) => {
      // `close` stops the listener at once; its callback waits for every connection, which
      // `close()` below ends.
      server.close(() => {});
      server.closeIdleConnections?.();
      // A connection that has sent nothing has nothing to answer (a browser's preconnect, a
      // client pool's spare): closeIdleConnections leaves it open, and it would hold the stop
      // for the whole close timeout.
      for (const socket of sockets) if (socket.bytesRead === 0) socket.destroy();
      resolve();
    });

  return {
    hostname: options.hostname,
    port,
    get connections() {
      return sockets.size;
    },
    penalize(address, connects) {
      connectRate.charge(address, Date.now(), connects);
    },
    stopAccepting,
    async close() {
      await stopAccepting();
      // Connections closing gracefully (a WebSocket answering its 1012) get the close timeout;
      // whatever is left after it is dropped.
      const allClosed = () =>
        Promise.all(
          [...sockets, ...lingering].map((socket) =>
            socket.destroyed && socket.closed
              ? undefined
              : new Promise<void>((resolve) => socket.once("close", () => resolve()))
          ),
        );
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        allClosed(),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, limits.closeTimeoutMs))),
      ]);
      clearTimeout(timer);
      server.closeAllConnections?.();
      for (const socket of [...sockets, ...lingering]) socket.destroy();
      await Promise.all([allClosed(), bans.close()]);
      wss.close();
    },
  };
}

/**
 * Addresses banned for a while, for connect floods. A banned address's connections are held
 * open, unread, until its ban ends (a tarpit): a client that reconnects as soon as it is
 * refused then waits instead of costing an accept per attempt. Past TARPIT_SLOTS held at once
 * (a client connecting in parallel), the address goes into the server's `blockList`, which
 * node:net checks right after accept, so its other connections cost an accept and a close.
 * (A new `BlockList` each time the set changes: BlockList has no removal.)
 */
class AddressBans {
  readonly #server: http.Server;
  readonly #onBan: () => void;
  readonly #until = new Map<string, number>();
  readonly #held = new Map<string, Set<Socket>>();
  readonly #blocked = new Set<string>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(server: http.Server, onBan: () => void) {
    this.#server = server;
    this.#onBan = onBan;
  }

  ban(address: string, now: number): void {
    if (this.#until.has(address) || !net.isIP(address)) return;
    this.#onBan();
    this.#until.set(address, now + BAN_MS);
    this.#apply(now);
  }

  /** Whether `address` is banned: its connection must go to `hold`. */
  banned(address: string, now: number): boolean {
    const until = this.#until.get(address);
    return until !== undefined && until > now;
  }

  /** Holds a banned address's connection until its ban ends (or blocks the address). */
  hold(socket: Socket, address: string): void {
    socket.on("error", () => {});
    let held = this.#held.get(address);
    if (held === undefined) this.#held.set(address, held = new Set());
    if (held.size >= TARPIT_SLOTS) {
      socket.destroy();
      if (!this.#blocked.has(address)) {
        this.#blocked.add(address);
        this.#apply(Date.now());
      }
      return;
    }
    socket.pause();
    held.add(socket);
    socket.once("close", () => {
      held.delete(socket);
      if (held.size === 0 && this.#held.get(address) === held) this.#held.delete(address);
    });
  }

  /** Ends every ban; resolves once the held connections are closed. */
  close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#until.clear();
    this.#blocked.clear();
    const closing = [...this.#held.values()].flatMap((held) => [...held]).map((socket) =>
      new Promise<void>((resolve) => {
        socket.once("close", () => resolve());
        socket.destroy();
      })
    );
    return Promise.all(closing).then(() => {});
  }

  /**
   * Ends the bans that are over (dropping their held connections), rebuilds the block list, and
   * wakes up at the next expiry.
   */
  #apply(now: number): void {
    clearTimeout(this.#timer);
    const list = new net.BlockList();
    let next = Infinity;
    for (const [address, until] of this.#until) {
      if (until <= now) {
        this.#until.delete(address);
        this.#blocked.delete(address);
        for (const socket of this.#held.get(address) ?? []) socket.destroy();
        continue;
      }
      next = Math.min(next, until);
      if (!this.#blocked.has(address)) continue;
      if (net.isIPv6(address)) list.addAddress(address, "ipv6");
      else {
        list.addAddress(address, "ipv4");
        // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6 addresses.
        list.addAddress(`::ffff:${address}`, "ipv6");
      }
    }
    (this.#server as unknown as { blockList?: net.BlockList }).blockList = this.#blocked.size > 0
      ? list
      : undefined;
    if (next !== Infinity) {
      this.#timer = setTimeout(() => this.#apply(Date.now()), next - now);
    }
  }
}

/**
 * One WebSocket of the `ws` package behind the WireSocket interface. It exists before the
 * upgrade completes (the handler gets it at once, as `Deno.upgradeWebSocket` does) and opens
 * when `ws` hands over the socket.
 */
class WsWire implements WireSocket {
  #ws: WsSocket | null = null;
  #events: WireEvents | null = null;
  #ended = false;
  #closeAsked: { code: number; reason: string; lastFrame?: string } | null = null;

  get bufferedAmount(): number {
    return this.#ws?.bufferedAmount ?? 0;
  }

  get writable(): boolean {
    return this.#ws !== null && this.#ws.readyState === 1 && this.#closeAsked === null;
  }

  listen(events: WireEvents): void {
    this.#events = events;
  }

  send(text: string): void {
    this.#ws?.send(text);
  }

  batch(write: () => void): void {
    const socket = (this.#ws as unknown as WsInternals | null)?._socket;
    socket?.cork();
    try {
      write();
    } finally {
      socket?.uncork();
    }
  }

  pong(): void {
    this.#ws?.pong();
  }

  close(code: number, reason: string, lastFrame?: string): void {
    if (this.#closeAsked !== null) return;
    this.#closeAsked = { code, reason, lastFrame };
    // Before the upgrade completes, the close waits for it (the client still learns why).
    if (this.#ws !== null) this.#closeNow();
  }

  /** The last frame and the close frame in one write (a close wave is bound by syscalls). */
  #closeNow(): void {
    const ws = this.#ws!;
    const { code, reason, lastFrame } = this.#closeAsked!;
    const socket = (ws as unknown as WsInternals)._socket;
    socket?.cork();
    if (lastFrame !== undefined && ws.readyState === 1) ws.send(lastFrame);
    ws.close(code, reason);
    socket?.uncork();
  }

  attach(ws: WsSocket): void {
    if (this.#ended) return void ws.terminate();
    this.#ws = ws;
    // ws ends its parser and its socket again when the peer's FIN and the socket's close
    // arrive after the close handshake. Under Deno, ending a finished stream builds an error
    // (ERR_STREAM_ALREADY_FINISHED) for ~45 µs; twice per connection, that was most of a
    // close wave's cost (10 000 deadlines at once). Ending twice is made a no-op.
    const internals = ws as unknown as WsInternals;
    if (internals._receiver !== undefined) endOnce(internals._receiver);
    if (internals._socket !== undefined) {
      endOnce(internals._socket);
      // Replies to the frames of one TCP chunk leave in one write: ws parses a chunk and emits
      // its messages synchronously, the gateway answers each synchronously, and the socket is
      // corked around ws's own `data` listener (a pipelining client sends many frames per chunk;
      // a write per reply cost a system call each).
      internals._socket.prependListener("data", corkForChunk);
      internals._socket.on("data", uncorkAfterChunk);
    }
    (ws as WsWithWire)[WIRE] = this;
    ws.on("message", WsWire.#onMessage);
    ws.on("ping", WsWire.#onPing);
    ws.on("error", WsWire.#onError);
    ws.on("close", WsWire.#onClose);
    this.#events?.open();
    if (this.#closeAsked !== null) this.#closeNow();
  }

  // ws's listeners, shared by every connection (ws calls them with `this` = the socket): four
  // closures per connection would cost about 0.3 KB of heap.
  static #onMessage(this: WsSocket, data: Uint8Array, isBinary: boolean): void {
    const wire = (this as WsWithWire)[WIRE];
    if (wire.#closeAsked !== null) return wire.#afterClose();
    if (isBinary) wire.#events?.binary(data.byteLength);
    else wire.#events?.text(data.toString());
  }

  static #onPing(this: WsSocket): void {
    const wire = (this as WsWithWire)[WIRE];
    if (wire.#closeAsked !== null) return wire.#afterClose();
    wire.#events?.control();
  }

  /**
   * A frame ws refused (oversized, against the protocol, not UTF-8): ws closes with the
   * standard code and reports it here; the gateway records why.
   */
  static #onError(this: WsSocket, error: Error & { code?: string }): void {
    (this as WsWithWire)[WIRE].#events?.frameRefused(refusedFrameOf(error.code));
  }

  static #onClose(this: WsSocket): void {
    (this as WsWithWire)[WIRE].#end();
  }

  /**
   * A frame that arrived after the close frame was sent: dropped. A client with frames in
   * flight gets them read until its close reply comes, so the close reaches it cleanly; past
   * POST_CLOSE_FRAMES, a flood stops costing a parse per frame.
   */
  #afterClose(): void {
    if (++this.#framesAfterClose !== POST_CLOSE_FRAMES) return;
    const ws = this.#ws;
    if (ws === null) return;
    // Stop reading: what still arrives waits in the kernel, TCP flow control stops the sender,
    // and the flood costs nothing more (at most the rest of the chunk being parsed now). The
    // TCP connection is ended after the close frame (a FIN, not a reset, which would make the
    // client's kernel drop what it has not read yet), so the client still reads the `closing`
    // frame and the close code; ws drops the connection at the close timeout.
    ws.pause();
    const internals = ws as unknown as WsInternals;
    // ws parses a whole chunk (thousands of small frames) in one loop, and the chunks read
    // meanwhile queue up behind it: stop the loop at this frame and drop the queued chunks.
    const receiver = internals._receiver;
    if (receiver !== undefined) {
      receiver._loop = false;
      receiver._write = (_chunk, _encoding, done) => done();
    }
    internals._socket?.end();
  }
  #framesAfterClose = 0;

  /** The upgrade never completed (or the connection ended): report the end once. */
  abort(): void {
    if (this.#ws === null) this.#end();
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#events?.closed();
  }
}

/**
 * The parts of a `ws` WebSocket the post-close cut-off needs and ws does not expose: its TCP
 * socket and its parser (there since ws 1 and 6; the version is pinned in deno.json, and
 * tests/flood_isolation_test.ts fails if the cut-off stops working).
 */
interface WsInternals {
  _socket?: Socket;
  /**
   * ws's frame parser, a Writable fed by the socket: its loop over the chunk being parsed stops
   * when `_loop` is false; `_write` takes each chunk.
   */
  _receiver?: EndableStream & {
    _loop: boolean;
    _write(chunk: Uint8Array, encoding: string, done: () => void): void;
  };
}

/** The wire a ws socket reports to (a property, so that ws's listeners can be shared). */
const WIRE = Symbol("wire");
type WsWithWire = WsSocket & { [WIRE]: WsWire };

interface EndableStream {
  readonly writableEnded: boolean;
  end(...args: unknown[]): unknown;
}

/**
 * Aborts the wire when its socket closes. A closure of its own, outside `acceptUpgrade`: a
 * closure made there would keep that function's whole context alive with the socket, the
 * upgrade request included (its headers, about 1.5 KB per connection).
 */
function reportEndOf(socket: Socket, wire: WsWire): void {
  socket.once("close", () => wire.abort());
}

function corkForChunk(this: Socket): void {
  this.cork();
}

function uncorkAfterChunk(this: Socket): void {
  this.uncork();
}

/** Makes `end()` of an already ended stream a no-op (see `WsWire.attach`). */
function endOnce(stream: EndableStream): void {
  stream.end = endUnlessEnded;
}

/**
 * `end()` that does nothing on an ended stream; otherwise the prototype's `end` (one function
 * for every stream: a closure per stream would cost heap per connection).
 */
function endUnlessEnded(this: EndableStream, ...args: unknown[]): unknown {
  if (!this.writableEnded) {
    return (Object.getPrototypeOf(this) as EndableStream).end.apply(this, args);
  }
  // A callback still runs, as Node runs it for an ended stream (with no error: ws's own calls
  // pass none; this keeps the contract for any other caller).
  const done = args.at(-1);
  if (typeof done === "function") queueMicrotask(() => done());
  return this;
}

/** The close reason of a frame ws refused, from its error code (ws closes with its code). */
function refusedFrameOf(code: string | undefined): TransportRefusedFrame {
  switch (code) {
    case "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH":
    case "WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH":
      return "payload_too_large"; // 1009
    case "WS_ERR_INVALID_UTF8":
      return "invalid_utf8"; // 1007
    case "WS_ERR_TOO_MANY_BUFFERED_PARTS":
      return "too_many_fragments"; // 1008
    default:
      return "protocol_error"; // 1002: opcodes, masks, reserved bits, control frames
  }
}

/**
 * A `Sec-WebSocket-Protocol` header as RFC 6455 allows it: comma-separated tokens (RFC 7230),
 * none empty, none twice. ws refuses anything else with its own HTML answer, so the gateway
 * checks first and answers with the error payload.
 */
function protocolsValid(header: string | undefined): boolean {
  if (header === undefined) return true;
  const seen = new Set<string>();
  for (const part of header.split(",")) {
    const protocol = part.trim();
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(protocol) || seen.has(protocol)) return false;
    seen.add(protocol);
  }
  return true;
}

/** Why `req` is not a WebSocket upgrade this server can complete, or null. */
function upgradeRefusal(req: IncomingMessage): string | null {
  if (req.method !== "GET") return "A WebSocket upgrade is a GET request.";
  if (req.headers.upgrade?.toLowerCase() !== "websocket") {
    return "This endpoint expects a WebSocket upgrade.";
  }
  const key = req.headers["sec-websocket-key"];
  if (typeof key !== "string" || !/^[+/0-9A-Za-z]{22}==$/.test(key.trim())) {
    return "The WebSocket upgrade request is malformed (Sec-WebSocket-Key).";
  }
  const version = req.headers["sec-websocket-version"];
  if (version !== "13" && version !== "8") {
    return "The WebSocket upgrade request is malformed (Sec-WebSocket-Version must be 13).";
  }
  if (!protocolsValid(req.headers["sec-websocket-protocol"])) {
    return "The WebSocket upgrade request is malformed (Sec-WebSocket-Protocol).";
  }
  return null;
}

/** A fetch Request for a node:http request; null when its URL or headers are not valid. */
function toRequest(req: IncomingMessage, body: Uint8Array<ArrayBuffer> | null): Request | null {
  try {
    const headers = new Headers();
    const raw = req.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
    // The Host header is the client's to choose; routing only needs the path.
    const url = new URL(req.url ?? "/", "http://gateway.invalid");
    const method = req.method ?? "GET";
    return new Request(url, {
      method,
      headers,
      body: body !== null && method !== "GET" && method !== "HEAD" ? body : null,
    });
  } catch {
    return null;
  }
}

function concat(chunks: Uint8Array[], size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

function writeError(
  res: ServerResponse,
  code: ErrorCode,
  description?: string,
  details?: Record<string, unknown>,
  options: { close?: boolean } = {},
): void {
  const body = encoder.encode(JSON.stringify(errorPayload(code, description, details)));
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "content-length": String(body.byteLength),
  };
  if (options.close) headers.connection = "close";
  res.writeHead(statusOf(code), headers);
  res.end(body);
}

/** A whole HTTP/1.1 response with the error payload, for a socket no handler owns. */
function rawResponse(
  code: ErrorCode,
  description?: string,
  details?: Record<string, unknown>,
): string {
  const body = JSON.stringify(errorPayload(code, description, details));
  const status = statusOf(code);
  return `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\n` +
    "Content-Type: application/json\r\n" +
    `Content-Length: ${encoder.encode(body).byteLength}\r\n` +
    "Connection: close\r\n\r\n" + body;
}

/** A handler's Response as raw HTTP/1.1, for an upgrade it refused. */
async function rawFromResponse(response: Response): Promise<Uint8Array> {
  const body = new Uint8Array(await response.arrayBuffer());
  let head = `HTTP/1.1 ${response.status} ${http.STATUS_CODES[response.status] ?? ""}\r\n`;
  response.headers.forEach((value, name) => {
    if (name !== "content-length" && name !== "connection") head += `${name}: ${value}\r\n`;
  });
  head += `Content-Length: ${body.byteLength}\r\nConnection: close\r\n\r\n`;
  const headBytes = encoder.encode(head);
  const out = new Uint8Array(headBytes.byteLength + body.byteLength);
  out.set(headBytes);
  out.set(body, headBytes.byteLength);
  return out;
}
