/**
 * The narrow boundary between the gateway and whatever runs its sockets. The gateway sees a
 * `WireSocket` per WebSocket and hands a `fetch`-style handler to a transport; each transport
 * maps its runtime onto these types:
 *
 * - `node.ts` — node:http and the `ws` package under Deno's Node compatibility. The default for
 *   self-hosting: it owns every TCP connection from accept to close, so it can cap them, time
 *   out slow heads and unanswered closes, and refuse an oversized frame from its header.
 * - `deno.ts` — `Deno.serve` and `Deno.upgradeWebSocket`, for edge platforms that terminate
 *   connections themselves (see docs/security.md for what it cannot enforce).
 */

/** What the gateway needs of one WebSocket, whatever implements it. */
export interface WireSocket {
  /** Bytes queued for the peer that the kernel has not taken yet. */
  readonly bufferedAmount: number;
  /** Open, and no close started: frames can be written. */
  readonly writable: boolean;
  /** Writes one text frame. */
  send(text: string): void;
  /**
   * Runs `write`, whose frames leave together (one system call where the transport can: a
   * replay writes hundreds of frames at once). Transports without it write each frame alone.
   */
  batch?(write: () => void): void;
  /** Answers a WebSocket ping control frame. */
  pong(): void;
  /**
   * Starts the close handshake with this code, after `lastFrame` (a text frame that says why)
   * when given: both go out in one write. A peer that does not answer within the transport's
   * close timeout loses its TCP connection, so no descriptor waits on it.
   */
  close(code: number, reason: string, lastFrame?: string): void;
  /** Sets the handlers: right after the upgrade, and again when the socket is handed to a relay. */
  listen(events: WireEvents): void;
}

export interface WireEvents {
  /** The upgrade completed; frames can be written. */
  open(): void;
  /** A text frame arrived (already within the transport's frame size limit, where it has one). */
  text(data: string): void;
  /** A binary frame of this many bytes arrived. */
  binary(byteLength: number): void;
  /** A WebSocket ping control frame arrived (transports that surface them). */
  control(): void;
  /**
   * The transport's WebSocket layer refused a frame and is closing the connection with the
   * standard code itself: over the size limit (refused from its header, 1009), against the
   * protocol (1002), not UTF-8 (1007), too many fragments (1008). (Transports that surface it;
   * the others deliver oversized frames and close the rest without a word.)
   */
  frameRefused(reason: TransportRefusedFrame): void;
  /** The connection is gone (closed by either side, or never opened). */
  closed(): void;
  /**
   * The peer showed life on another path: heartbeats of a socket relayed from another node of a
   * cluster, answered there (gateway/cluster/relay.ts). It counts for the idle rule.
   */
  alive?(): void;
  /**
   * The peer stopped reading and its socket was closed where it is, past the output limit (a
   * socket relayed from another node of a cluster): the connection ends as `slow_consumer`.
   */
  overflow?(): void;
}

/** Why a WebSocket layer refused a frame (close reasons of the contract's table). */
export type TransportRefusedFrame =
  | "payload_too_large"
  | "protocol_error"
  | "invalid_utf8"
  | "too_many_fragments";

/** The result of accepting a WebSocket upgrade inside a request handler. */
export interface Upgraded {
  socket: WireSocket;
  /** Return this from the handler; the transport completes the upgrade when it sees it. */
  response: Response;
}

/**
 * Accepts the WebSocket upgrade of `request` with this sub-protocol. Throws `UpgradeRefused`
 * when the request is not a valid WebSocket upgrade.
 */
export type Upgrade = (request: Request, options: { protocol?: string }) => Upgraded;

export class UpgradeRefused extends Error {
  override name = "UpgradeRefused";
}

/** What a transport tells the handler about a request besides the request itself. */
export interface RequestInfo {
  /** The client's address (IPv4-mapped IPv6 addresses are given as IPv4). */
  remoteAddr: string;
  upgrade: Upgrade;
}

export type FetchHandler = (request: Request, info: RequestInfo) => Response | Promise<Response>;

/** Why a transport refused a connection or a request before the handler saw it. */
export type TransportRefusal =
  /** The process holds MAX_CONNECTIONS connections already. */
  | "max_connections"
  | "per_ip_cap"
  | "connect_rate"
  | "headers_timeout"
  | "header_size"
  | "body_size"
  | "frame_size"
  /** An address was banned for a connect flood (its connections are then dropped unseen). */
  | "banned";

/** Limits a transport enforces itself (the ones it can: see each transport). */
export interface TransportLimits {
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** New TCP connections per client address per second (burst twice this). */
  connectRatePerIp: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxHeaderBytes: number;
  maxBodyBytes: number;
  maxFrameBytes: number;
  closeTimeoutMs: number;
}

export interface ServeOptions {
  hostname: string;
  port: number;
  limits: TransportLimits;
  fetch: FetchHandler;
  /** Told about every refusal, for metrics. */
  onRefused?: (kind: TransportRefusal) => void;
  /** Told about errors that are the transport's own (never the client's), for logs. */
  onError?: (event: string, error: unknown) => void;
  /** Told about conditions an operator should see (rate-limited by the transport), for logs. */
  onWarning?: (event: string, fields: Record<string, unknown>) => void;
}

export interface RunningTransport {
  hostname: string;
  port: number;
  /** Live TCP connections (HTTP and WebSocket). */
  readonly connections: number;
  /**
   * Charges an address this many connects of its connect budget (`connectRatePerIp`): a
   * connection closed for abuse costs more than one that behaved, so a client that reconnects to
   * flood again is slowed down while clients sharing its address keep most of the budget.
   */
  penalize(address: string, connects: number): void;
  /** Stops accepting connections and requests; open WebSockets stay until closed. */
  stopAccepting(): Promise<void>;
  /** Drops every remaining connection; resolves when the transport has released everything. */
  close(): Promise<void>;
}

export type Transport = (options: ServeOptions) => Promise<RunningTransport>;

/** `::ffff:127.0.0.1` → `127.0.0.1`; anything unknown → `unknown`. */
export function normalizeAddress(address: string | undefined): string {
  if (address === undefined || address === "") return "unknown";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}
