/**
 * The events chaos property test (tests/chaos_test.ts) on a two-node cluster (docs/cluster.md):
 * a real `redis-server` of the test's own (append-only file, fsync per write: nothing it
 * acknowledged may be lost, even to `kill -9`) and two gateway processes on it (`STORE=redis`,
 * a short NODE_TTL_MS so that a dead node's users are taken over in about two seconds).
 *
 * The same sends, clients and property as the single-node test (tests/support/chaos.ts): every
 * acknowledged send in each receiver's stream exactly once, no gap, no duplicate, each client's
 * events the stream as the history route serves it. What the cluster adds:
 *
 * - every WebSocket (re)connect goes to a node chosen at random, and so does every HTTP request
 *   (the clients' sends and history pages, the server API's sends, the test's reads): a request
 *   for a user held by the other node is forwarded there, a socket brings its user to its node;
 * - chaos of a cluster: SIGTERM of a node, `kill -9` of a node (optionally in a burst of big
 *   group sends whose copies are appended by both nodes), each followed by a new process with a
 *   NEW NODE_ID (a restarted node is a new node: the dead one's users are taken over by the live
 *   node once its TTL runs out), and `kill -9` of Redis itself, restarted after a while on the
 *   same files. Every run has one of each, at random steps; the rest are drawn with the
 *   disconnects, background deadlines and slow consumers of the single-node test.
 *
 * A 503 (a request for a user that is moving between nodes, or held by a node that died and is
 * not taken over yet, or a write while Redis is away) is "try again shortly": the clients retry
 * their sends, history pages and upgrades, and take ERR_SERVICE_UNAVAILABLE at their handshake
 * as a reason to connect again; a server API send answered 503 is unacknowledged (it may be
 * stored at most once). The retries are counted and printed with the other counts.
 *
 * Replay as in tests/chaos_test.ts: the test prints `chaos-cluster seed <n>`; `CHAOS_SEED`,
 * `CHAOS_PATH`, `CHAOS_RUNS`, `CHAOS_SHRINK`, `CHAOS_VERBOSE`. `CHAOS_LOG_LEVEL` sets the nodes'
 * LOG_LEVEL (default warn; their output is printed when a run fails); `CHAOS_DUMP=<file>` writes
 * a failed run's records and events there; `CHAOS_NODES=1` runs the scenarios on one node.
 * Skipped, with a warning, where `redis-server` is missing (failed in CI).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  assertChaos,
  atArb,
  type ChaosDeployment,
  type ChaosOptions,
  ChaosScenario,
  chaosSettings,
  type ChaosTotals,
  type CommonChaos,
  deadlineArb,
  disconnectArb,
  MEMBER_CLIENTS,
  noneArb,
  runScenario,
  scenarioArb,
  slowArb,
  type Step,
} from "./support/chaos.ts";
import { delay, GatewayProcess } from "./support/process.ts";
import { type RedisServer, redisTest, startRedis } from "./support/redis_server.ts";
import type { GatewayTarget, StreamClient } from "./support/stream_client.ts";

const SETTINGS = chaosSettings(3);
const STEPS = 12;
const BATCH_MIN = 40;
const BATCH_MAX = 60;
const OPTIONS: ChaosOptions = {
  concurrency: 12,
  retryUnavailable: true,
  // A client of a killed node's user connects again once the other node took the user over.
  liveTimeoutMs: 60_000,
};

/**
 * Nodes of the cluster (CHAOS_NODES, default 2). With 1, the same scenarios run on one node on
 * Redis: what fails on two nodes but not on one is the cluster's.
 */
const NODES = Number(Deno.env.get("CHAOS_NODES") ?? 2);
const NODE_TTL_MS = 1_500;
const NODE_HEARTBEAT_MS = 250;

/** The single-node test's settings (short windows, small output limit), on Redis. */
function nodeEnv(redis: RedisServer, nodeId: string): Record<string, string> {
  return {
    STORE: "redis",
    REDIS_URL: redis.url,
    NODE_ID: nodeId,
    NODE_TTL_MS: String(NODE_TTL_MS),
    NODE_HEARTBEAT_MS: String(NODE_HEARTBEAT_MS),
    // Room for a busy machine: a request to the other node is not given up on too early.
    CLUSTER_REQUEST_TIMEOUT_MS: "2000",
    LIVENESS_WINDOW_MS: "300",
    HEARTBEAT_INTERVAL_MS: "100",
    PONG_TIMEOUT_MS: "100",
    // The clients send no heartbeats: nothing must close them as idle during a scenario.
    IDLE_TIMEOUT_MS: "600000",
    CLOSE_TIMEOUT_MS: "1000",
    // A replay of more than 32 KiB or 20 events is refused: the clients page the history.
    MAX_BUFFERED_BYTES: String(64 * 1024),
    REPLAY_LIMIT: "20",
    STREAM_CACHE_EVENTS: "64",
    RATE_LIMIT_HTTP_PER_SEC: "100000",
    RATE_LIMIT_FRAMES_PER_SEC: "100000",
    RATE_LIMIT_CONNECTS_PER_SEC: "10000",
    LOG_LEVEL: Deno.env.get("CHAOS_LOG_LEVEL") ?? "warn",
  };
}

// ---- the scenario ----

type Chaos =
  | CommonChaos
  /** SIGTERM of node `node`, then a new node in its place. */
  | { kind: "restart"; node: number; atMs: number }
  /**
   * kill -9 of node `node`, and a new node in its place `downMs` later. With a `burst` of big
   * sends to the crowd group (13 members, held by both nodes), `intoWriteMs` after they start.
   */
  | { kind: "kill"; node: number; atMs: number; burst: number; intoWriteMs: number; downMs: number }
  /** kill -9 of Redis, started again on the same files `downMs` later. */
  | { kind: "redis"; atMs: number; downMs: number };

const nodeArb = fc.integer({ min: 0, max: 1 });
const restartArb = fc.record({ kind: fc.constant("restart" as const), node: nodeArb, atMs: atArb });
const killArb = fc.record({
  kind: fc.constant("kill" as const),
  node: nodeArb,
  atMs: atArb,
  burst: fc.integer({ min: 0, max: 6 }),
  intoWriteMs: fc.integer({ min: 0, max: 40 }),
  downMs: fc.integer({ min: 0, max: 2_000 }),
});
const redisArb = fc.record({
  kind: fc.constant("redis" as const),
  atMs: atArb,
  downMs: fc.integer({ min: 0, max: 1_500 }),
});

const chaosArb: fc.Arbitrary<Chaos> = fc.oneof(
  { weight: 3, arbitrary: noneArb },
  { weight: 5, arbitrary: disconnectArb },
  { weight: 3, arbitrary: deadlineArb },
  { weight: 2, arbitrary: slowArb },
  { weight: 1, arbitrary: restartArb },
  { weight: 1, arbitrary: killArb },
  { weight: 1, arbitrary: redisArb },
);

/** Every run has a SIGTERM, a kill -9 and a Redis kill, at random steps. */
const REQUIRED: fc.Arbitrary<Chaos>[] = [restartArb, killArb, redisArb];

// ---- what the test counts ----

const totals = {
  runs: 0,
  sends: 0,
  acknowledged: 0,
  unacknowledged: 0,
  unacknowledgedSeen: 0,
  delivered: { live: 0, sent: 0, replay: 0, history: 0 },
  /** SIGTERM of a node. */
  restarts: 0,
  /** kill -9 of a node. */
  kills: 0,
  /** kill -9 of Redis. */
  redisKills: 0,
  /** Nodes started (NODES per run, one per restart or kill). */
  nodesStarted: 0,
  deadlines: 0,
  slowConsumerCloses: 0,
  blobs: 0,
  disconnects: 0,
  resumesRecovered: 0,
  resumesNotRecovered: {} as Record<string, number>,
  wsRetries: 0,
  httpRetries: 0,
  duplicateAnswers: 0,
  historyPages: 0,
  closes: {} as Record<string, number>,
  sendErrors: {} as Record<string, number>,
  /** What the clients tried again: refused upgrades (by status), handshakes, HTTP requests. */
  retries: {
    upgradeRefused: {} as Record<string, number>,
    handshakeUnavailable: 0,
    http: {} as Record<string, number>,
  },
  /** WebSocket connections the clients opened (past the upgrade). */
  connects: 0,
} satisfies ChaosTotals & Record<string, unknown>;

function addRetries(clients: StreamClient[]): void {
  for (const client of clients) {
    const c = client.counters;
    totals.connects += c.connects;
    totals.retries.handshakeUnavailable += c.handshakesUnavailable;
    for (const [status, n] of Object.entries(c.upgradeRefusals)) {
      totals.retries.upgradeRefused[status] = (totals.retries.upgradeRefused[status] ?? 0) + n;
    }
    for (const [what, n] of Object.entries(c.httpRetried)) {
      totals.retries.http[what] = (totals.retries.http[what] ?? 0) + n;
    }
  }
}

// ---- the cluster ----

/** One node's place: the process in it now (null while it is replaced). */
interface Slot {
  node: GatewayProcess | null;
}

/**
 * A Redis and two node slots on it. `ready` picks a node that is up, at random; a node being
 * replaced is not picked (requests already on their way to it fail, and are tried again).
 */
class ChaosCluster implements ChaosDeployment {
  readonly #redis: RedisServer;
  readonly #slots: Slot[];
  readonly #all: Array<{ id: string; node: GatewayProcess }> = [];
  readonly problems: string[] = [];
  readonly #broken = Promise.withResolvers<never>();
  readonly broken = this.#broken.promise;
  #generation = 0;

  private constructor(redis: RedisServer) {
    // (Nobody may be racing it when a node dies between two steps.)
    this.#broken.promise.catch(() => {});
    this.#redis = redis;
    this.#slots = Array.from({ length: NODES }, () => ({ node: null }));
  }

  static async start(): Promise<ChaosCluster> {
    const redis = await startRedis({ appendOnly: true });
    const cluster = new ChaosCluster(redis);
    try {
      await Promise.all(cluster.#slots.map((_, slot) => cluster.#startNode(slot)));
    } catch (error) {
      await cluster.dispose();
      throw error;
    }
    return cluster;
  }

  async ready(): Promise<GatewayTarget> {
    const giveUp = Date.now() + 60_000;
    for (;;) {
      const up = this.#slots.flatMap((slot) => slot.node === null ? [] : [slot.node]);
      if (up.length > 0) {
        const node = up[Math.floor(Math.random() * up.length)];
        return { port: node.port, url: node.url };
      }
      if (Date.now() > giveUp) throw new Error("no node of the cluster is up");
      await delay(20);
    }
  }

  /** Stops the node in `slot` (SIGTERM or kill -9) and, `downMs` later, starts a new one there. */
  async bounce(node: number, kind: "graceful" | "kill", downMs = 0): Promise<void> {
    const slot = node % this.#slots.length;
    const old = this.#slots[slot].node!;
    this.#slots[slot].node = null;
    if (kind === "graceful") {
      // A stop gives up on the store after 10 s (docs/operations.md): past 20 s it is stuck.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        old.terminate(),
        new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 20_000)),
      ]);
      clearTimeout(timer);
      if (status === null) {
        this.problems.push(`graceful stop did not end in 20 s:\n${old.output.join("\n")}`);
        await old.crash();
      } else if (status.code !== 0) {
        this.problems.push(`graceful stop exited ${status.code}:\n${old.output.join("\n")}`);
      }
    } else await old.crash();
    await delay(downMs);
    await this.#startNode(slot);
  }

  /** kill -9 of Redis; `downMs` later it starts again on the same port and files. */
  async redisOutage(downMs: number): Promise<void> {
    await this.#redis.kill();
    await delay(downMs);
    await this.#redis.restart();
  }

  async #startNode(slot: number): Promise<void> {
    // A new process is a new node: a new NODE_ID, never the one before it in this slot.
    const id = `n${slot}g${++this.#generation}`;
    const node = await GatewayProcess.start({ env: nodeEnv(this.#redis, id) });
    this.#all.push({ id, node });
    this.#slots[slot].node = node;
    totals.nodesStarted++;
    // A node that exits while it is in its slot was not stopped by the test: it died.
    node.exited.then((status) => {
      if (this.#slots[slot].node !== node) return;
      this.#slots[slot].node = null;
      this.#broken.reject(new Error(`node ${id} exited by itself (code ${status.code})`));
    });
  }

  output(): string {
    let redisLog = "";
    try {
      redisLog = Deno.readTextFileSync(`${this.#redis.dir}/redis.log`).split("\n").slice(-30)
        .join("\n");
    } catch {
      // Removed already.
    }
    return this.#all.map(({ id, node }) => `--- node ${id} ---\n${node.output.join("\n")}`)
      .join("\n") + `\n--- redis.log (end) ---\n${redisLog}`;
  }

  async dispose(): Promise<void> {
    for (const { node } of this.#all) {
      if (await node.alive()) await node.crash();
      await node.cleanup();
    }
    await this.#redis.stop();
  }
}

class Scenario extends ChaosScenario<Chaos> {
  readonly #cluster: ChaosCluster;

  constructor(cluster: ChaosCluster, clients: StreamClient[], run: number) {
    super(cluster, clients, run, totals, OPTIONS);
    this.#cluster = cluster;
  }

  protected async chaos(chaos: Chaos): Promise<void> {
    if (chaos.kind !== "restart" && chaos.kind !== "kill" && chaos.kind !== "redis") {
      return await this.commonChaos(chaos);
    }
    await delay(chaos.atMs);
    switch (chaos.kind) {
      case "restart":
        totals.restarts++;
        await this.#cluster.bounce(chaos.node, "graceful");
        await this.allLive();
        return;
      case "redis":
        totals.redisKills++;
        await this.#cluster.redisOutage(chaos.downMs);
        await this.allLive();
        return;
      case "kill": {
        const burst: Array<Promise<void>> = [];
        for (let i = 0; i < chaos.burst; i++) {
          const client = this.clients[MEMBER_CLIENTS[i % MEMBER_CLIENTS.length]];
          burst.push(this.crowdSend(client));
        }
        if (chaos.burst > 0) await delay(chaos.intoWriteMs);
        totals.kills++;
        const [killed, ...sent] = await Promise.allSettled([
          this.#cluster.bounce(chaos.node, "kill", chaos.downMs).then(() => this.allLive()),
          ...burst,
        ]);
        for (const outcome of [killed, ...sent]) {
          if (outcome.status === "rejected") throw outcome.reason;
        }
        return;
      }
    }
  }
}

function runOne(steps: Step<Chaos>[]): Promise<void> {
  let clients: StreamClient[] = [];
  return runScenario(
    steps,
    SETTINGS,
    totals,
    OPTIONS,
    () => ChaosCluster.start(),
    (cluster, started, run) => {
      clients = started;
      return new Scenario(cluster, started, run);
    },
  ).finally(() => addRetries(clients));
}

redisTest(
  "chaos on a two-node cluster: every client sees exactly the acknowledged events of its stream",
  async () => {
    const started = Date.now();
    try {
      await assertChaos(
        "chaos-cluster",
        SETTINGS,
        scenarioArb(chaosArb, STEPS, { min: BATCH_MIN, max: BATCH_MAX }, REQUIRED),
        runOne,
      );
    } finally {
      // Also after a failure: the retries and the chaos so far tell what the run went through.
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      console.log(
        `chaos-cluster: ${totals.runs} runs in ${seconds} s\n${JSON.stringify(totals, null, 2)}`,
      );
    }
    if (SETTINGS.path === undefined && SETTINGS.runs >= 3) {
      assert.ok(totals.sends >= SETTINGS.runs * STEPS * BATCH_MIN, `only ${totals.sends} sends`);
      assert.ok(totals.kills > 0 && totals.restarts > 0 && totals.redisKills > 0);
      assert.ok(totals.resumesRecovered > 0, "a recovered resume");
    }
  },
);
