/**
 * Prometheus metrics of one gateway process, through prom-client, on a registry of its own.
 *
 * The per-frame hot path never touches prom-client: a frame read or written bumps a plain
 * number field (`metrics.framesIn.ping++`), with no label hashing and no allocation. Those
 * fields are handed to prom-client at scrape time, by the `collect()` callbacks, as the delta
 * since the previous scrape. Rare events (deadline fires, store commits) observe prom-client
 * histograms directly.
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import {
  AppStateSchema,
  ClientFrameSchema,
  closeReasons,
  ModeSchema,
  PingFrameSchema,
  ServerFrameSchema,
} from "../contract/mod.ts";

// ---- label values, derived from the contract so that they cannot drift from it ----

/** Client frame types from the contract, in its order. */
const clientFrameTypes = ClientFrameSchema.options.map((schema) => schema.shape.type.value);
/** Server frame types from the contract, in its order. */
const serverFrameTypes = ServerFrameSchema.options.map((schema) => schema.shape.type.value);

/**
 * What a received WebSocket frame counts as: a contract frame type, or `invalid` (not JSON,
 * or failed validation), `binary` (refused: frames are text), `control` (a WebSocket ping).
 */
export type FrameInType = (typeof clientFrameTypes)[number] | "invalid" | "binary" | "control";
export const frameInTypes: readonly FrameInType[] = [
  ...clientFrameTypes,
  "invalid",
  "binary",
  "control",
];

/** A sent WebSocket frame, by its contract type. */
export type FrameOutType = (typeof serverFrameTypes)[number];
export const frameOutTypes: readonly FrameOutType[] = serverFrameTypes;

/** Where a ping came from: the client's heartbeat or the app (both frames), or the HTTP API. */
export type PingSource = (typeof pingFrameSources)[number] | "http";
const pingFrameSources = PingFrameSchema.shape.source.unwrap().options;
export const pingSources: readonly PingSource[] = [...pingFrameSources, "http"];

/** How a handshake ended: `connected`, refused (bad credential or login), or never sent. */
export type HandshakeResult = "ok" | "refused" | "timeout";
export const handshakeResults: readonly HandshakeResult[] = ["ok", "refused", "timeout"];

/**
 * Why a connection ended: a close reason of the contract, or `connection_lost` (the transport
 * closed under the gateway: the peer went away).
 */
export type CloseMetricReason = (typeof closeReasons)[number] | "connection_lost";
export const closeMetricReasons: readonly CloseMetricReason[] = [
  ...closeReasons,
  "connection_lost",
];

/** Which protective limit refused a frame, a request or a connection. */
export type RefusalKind = (typeof refusalKinds)[number];
export const refusalKinds = [
  "frame_rate",
  "frame_size",
  "body_size",
  "header_size",
  "max_connections",
  "per_ip_cap",
  "connect_rate",
  "http_rate",
  "headers_timeout",
  "slow_consumer",
  "banned",
] as const;

/** `gateway_connections` labels: `none` is an open socket whose handshake is not done yet. */
export type ConnectionMode = (typeof ModeSchema.options)[number] | "none";
export type ConnectionAppState = (typeof AppStateSchema.options)[number];
const connectionModes: readonly ConnectionMode[] = [...ModeSchema.options, "none"];
const connectionAppStates: readonly ConnectionAppState[] = AppStateSchema.options;

/** One open connection as the `gateway_connections` gauge counts it. */
export interface ConnectionSample {
  mode: ConnectionMode;
  appState: ConnectionAppState;
}

/** Values read at scrape time; a gauge whose source is left out is not exported. */
export interface GatewayMetricsOptions {
  /** Every open connection, for `gateway_connections{mode,app_state}`. */
  connections?: () => Iterable<ConnectionSample>;
  /** How many user state objects are in memory, for `gateway_user_states`. */
  usersInMemory?: () => number;
  /** Whether the store answers, for `gateway_store_ready` (1 or 0). */
  storeReady?: () => boolean;
  /**
   * In a cluster, for `gateway_relayed_sockets`: sockets here whose connection runs at their
   * user's holder (`edge`), and connections here whose socket is at another node (`holder`).
   */
  relayedSockets?: () => { edge: number; holder: number };
}

/** The Prometheus text exposition and the content type to serve it with. */
export interface MetricsExposition {
  contentType: string;
  body: string;
}

/** Something the event loop lag sampler can report to (a `GatewayMetrics`, or a test). */
export interface EventLoopLagSink {
  eventLoopLag(lagMs: number): void;
}

// ---- buckets ----

/** Deadline lateness: a healthy wheel closes within a tick or two; the tail shows stalls. */
const LATENESS_BUCKETS_MS = [0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];
/** Store commits: sub-millisecond in memory, milliseconds on disk, seconds when in trouble. */
const COMMIT_BUCKETS_MS = [0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000];
/** Event loop lag: anything above a few ms delays every socket of the process. */
const LAG_BUCKETS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000];

/** Counts keyed by label value, every key present from the start (a stable object shape). */
function zeroCounts<K extends string>(keys: readonly K[]): Record<K, number> {
  const counts = {} as Record<K, number>;
  for (const key of keys) counts[key] = 0;
  return counts;
}

export class GatewayMetrics {
  /** This gateway's registry (never prom-client's global one). */
  readonly registry: Registry = new Registry();

  // ---- hot-path counters: plain fields, exported at scrape time ----

  /** Handshakes by how they ended. */
  readonly handshakes: Record<HandshakeResult, number> = zeroCounts(handshakeResults);
  /** Received WebSocket frames by type. */
  readonly framesIn: Record<FrameInType, number> = zeroCounts(frameInTypes);
  /** Sent WebSocket frames by type. */
  readonly framesOut: Record<FrameOutType, number> = zeroCounts(frameOutTypes);
  /** Pings by source. */
  readonly pings: Record<PingSource, number> = zeroCounts(pingSources);
  /**
   * Connection closes by reason. A field rather than a prom-client call: a shutdown or a
   * store outage closes every connection in one burst.
   */
  readonly closes: Record<CloseMetricReason, number> = zeroCounts(closeMetricReasons);
  /** Refusals by limit. A field: an abusive client is refused once per frame it sends. */
  readonly refusals: Record<RefusalKind, number> = zeroCounts(refusalKinds);

  readonly #deadlineLateness: Histogram;
  readonly #storeCommit: Histogram;
  readonly #storeCommitFailures: Counter;
  readonly #eventLoopLag: Histogram;

  constructor(options: GatewayMetricsOptions = {}) {
    const registers = [this.registry];

    exportCounts(registers, {
      name: "gateway_handshakes_total",
      help: "WebSocket handshakes by result: ok (connected), refused (bad credential or " +
        "login), timeout (no connect frame in time).",
      label: "result",
      counts: this.handshakes,
    });
    exportCounts(registers, {
      name: "gateway_frames_in_total",
      help: "WebSocket frames received, by client frame type; invalid = not JSON or failed " +
        "validation, binary = binary frame (refused), control = WebSocket ping frame.",
      label: "type",
      counts: this.framesIn,
    });
    exportCounts(registers, {
      name: "gateway_frames_out_total",
      help: "WebSocket frames sent, by server frame type.",
      label: "type",
      counts: this.framesOut,
    });
    exportCounts(registers, {
      name: "gateway_pings_total",
      help: "Pings received, by source: heartbeat (client timer), app (app called ping), " +
        "http (ping through the HTTP API).",
      label: "source",
      counts: this.pings,
    });
    exportCounts(registers, {
      name: "gateway_closes_total",
      help: "Connections ended, by reason: the close reason sent to the client, or " +
        "connection_lost (the peer went away).",
      label: "reason",
      counts: this.closes,
    });
    exportCounts(registers, {
      name: "gateway_refusals_total",
      help: "Frames, requests or connections refused by a protective limit, by limit.",
      label: "kind",
      counts: this.refusals,
    });

    this.#deadlineLateness = new Histogram({
      name: "gateway_deadline_lateness_ms",
      help: "How late a liveness or background deadline closed its connection: close time " +
        "minus deadline, in milliseconds.",
      buckets: LATENESS_BUCKETS_MS,
      registers,
    });
    this.#storeCommit = new Histogram({
      name: "gateway_store_commit_ms",
      help: "Duration of a successful store commit, in milliseconds.",
      buckets: COMMIT_BUCKETS_MS,
      registers,
    });
    this.#storeCommitFailures = new Counter({
      name: "gateway_store_commit_failures_total",
      help: "Store commits that failed.",
      registers,
    });
    this.#eventLoopLag = new Histogram({
      name: "gateway_event_loop_lag_ms",
      help: "How late the event loop lag sampler's timer fired, in milliseconds: time the " +
        "loop was busy and could not serve sockets.",
      buckets: LAG_BUCKETS_MS,
      registers,
    });

    if (options.connections !== undefined) {
      const connections = options.connections;
      new Gauge({
        name: "gateway_connections",
        help: "Open WebSocket connections by mode and app state; mode none = socket open, " +
          "handshake not done.",
        labelNames: ["mode", "app_state"] as const,
        registers,
        collect() {
          // Counted into a flat array indexed mode × state: connections may number in the
          // hundreds of thousands, and every combination is exported, zeros included.
          const counts = new Array<number>(connectionModes.length * connectionAppStates.length)
            .fill(0);
          for (const { mode, appState } of connections()) {
            const m = connectionModes.indexOf(mode);
            const s = connectionAppStates.indexOf(appState);
            if (m >= 0 && s >= 0) counts[m * connectionAppStates.length + s]++;
          }
          connectionModes.forEach((mode, m) => {
            connectionAppStates.forEach((appState, s) => {
              this.set({ mode, app_state: appState }, counts[m * connectionAppStates.length + s]);
            });
          });
        },
      });
    }
    if (options.usersInMemory !== undefined) {
      const usersInMemory = options.usersInMemory;
      new Gauge({
        name: "gateway_user_states",
        help: "User state objects held in memory.",
        registers,
        collect() {
          this.set(usersInMemory());
        },
      });
    }
    if (options.relayedSockets !== undefined) {
      const relayedSockets = options.relayedSockets;
      new Gauge({
        name: "gateway_relayed_sockets",
        help: "Cluster: sockets relayed between this node and the nodes holding their users " +
          "(side=edge: the socket is here; side=holder: its connection runs here, counted in " +
          "gateway_connections too).",
        labelNames: ["side"],
        registers,
        collect() {
          const counts = relayedSockets();
          this.set({ side: "edge" }, counts.edge);
          this.set({ side: "holder" }, counts.holder);
        },
      });
    }
    if (options.storeReady !== undefined) {
      const storeReady = options.storeReady;
      new Gauge({
        name: "gateway_store_ready",
        help: "Whether the store answers: 1 ready, 0 not.",
        registers,
        collect() {
          this.set(storeReady() ? 1 : 0);
        },
      });
    }

    // Process metrics. prom-client's collectDefaultMetrics() does not throw under Deno 2.9,
    // but its output is broken there: the event loop delay series come out as the histogram's
    // empty state (min 9223372036 s, mean and stddev "Nan", p50..p99 0) because Deno's
    // perf_hooks.monitorEventLoopDelay records nothing, and the nodejs_active_* series count
    // Node's libuv handles, which Deno does not have. It has no option to keep only the sound
    // series, so it is left out; these two gauges (and gateway_event_loop_lag_ms) replace it.
    new Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory size of the process, in bytes.",
      registers,
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    });
    new Gauge({
      name: "process_heap_used_bytes",
      help: "JavaScript heap in use, in bytes.",
      registers,
      collect() {
        this.set(Deno.memoryUsage().heapUsed);
      },
    });
  }

  /** A connection ended; call once per connection. */
  closed(reason: CloseMetricReason): void {
    this.closes[reason]++;
  }

  /** A protective limit refused something. */
  refused(kind: RefusalKind): void {
    this.refusals[kind]++;
  }

  /** A deadline closed its connection `latenessMs` after the deadline. */
  deadlineFired(latenessMs: number): void {
    if (Number.isFinite(latenessMs)) this.#deadlineLateness.observe(latenessMs);
  }

  /** A store commit succeeded in `ms` milliseconds. */
  storeCommit(ms: number): void {
    if (Number.isFinite(ms)) this.#storeCommit.observe(ms);
  }

  /** A store commit failed. */
  storeCommitFailed(): void {
    this.#storeCommitFailures.inc();
  }

  /** One event loop lag sample, in milliseconds (fed by `EventLoopLagSampler`). */
  eventLoopLag(lagMs: number): void {
    if (Number.isFinite(lagMs)) this.#eventLoopLag.observe(lagMs);
  }

  /** The text exposition of every metric of this gateway. */
  async render(): Promise<MetricsExposition> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/**
 * A labelled prom-client Counter fed from `counts` at scrape time: each scrape adds what each
 * field gained since the previous one. Every label value is exported from the start (at 0),
 * so that `rate()` sees the series before its first event.
 */
function exportCounts<K extends string>(
  registers: Registry[],
  spec: { name: string; help: string; label: string; counts: Record<K, number> },
): void {
  const { counts, label } = spec;
  const keys = Object.keys(counts) as K[];
  const exported = zeroCounts(keys);
  const counter = new Counter({
    name: spec.name,
    help: spec.help,
    labelNames: [label],
    registers,
    collect() {
      for (const key of keys) {
        const delta = counts[key] - exported[key];
        // A field set back (by a test, say) is taken as the new base: a counter never falls.
        if (delta > 0) counter.inc({ [label]: key }, delta);
        exported[key] = counts[key];
      }
    },
  });
  for (const key of keys) counter.inc({ [label]: key }, 0);
}

/**
 * Measures event loop lag: a timer that should fire every `intervalMs` records how late it
 * actually fired (`performance.now()` drift). A late timer means the loop was busy with
 * something else, and every socket of the process waited as long.
 *
 * The timer is re-armed after each firing (not `setInterval`, which would fire its missed
 * ticks back to back after a stall and report them as on time), and is unref'd so that it
 * never keeps the process alive. `stop()` clears it.
 */
export class EventLoopLagSampler {
  readonly #sink: EventLoopLagSink;
  readonly #intervalMs: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #expectedAt = 0;

  constructor(sink: EventLoopLagSink, options: { intervalMs?: number } = {}) {
    const intervalMs = options.intervalMs ?? 500;
    if (!(intervalMs > 0)) throw new RangeError(`intervalMs must be positive, got ${intervalMs}`);
    this.#sink = sink;
    this.#intervalMs = intervalMs;
  }

  /** Whether the sampler's timer is armed. */
  get running(): boolean {
    return this.#timer !== undefined;
  }

  /** Starts sampling; a second call while running does nothing. */
  start(): void {
    if (this.#timer === undefined) this.#arm();
  }

  /** Stops sampling and clears the pending timer. */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(): void {
    this.#expectedAt = performance.now() + this.#intervalMs;
    const timer = setTimeout(() => this.#fire(), this.#intervalMs);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #fire(): void {
    const lagMs = Math.max(0, performance.now() - this.#expectedAt);
    this.#arm();
    try {
      this.#sink.eventLoopLag(lagMs);
    } catch {
      // A throw from a timer callback would be an uncaught error that ends the process.
    }
  }
}
