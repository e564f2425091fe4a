/**
 * Chaos property test of the durable per-user streams (issue #10), on a real gateway process
 * and a real Deno KV file: random interleavings of sends (server API to users and to a group,
 * user `send` frames, user HTTP sends), client disconnects and resumes, manual-mode background
 * deadlines (a 300 ms window), slow consumers (a client that stops reading until the gateway
 * closes it as `slow_consumer`), and gateway restarts, graceful (SIGTERM) and `kill -9`, on the
 * same store.
 *
 * The property, for every client (tests/support/stream_client.ts: it keeps `{ epoch, seq }`,
 * resumes with it, pages the history when a resume is not recovered, retries its sends with the
 * same clientMessageId until answered):
 *
 * - the events it accepted are seq 1..N of its user's stream, N the stream's head: no gap, no
 *   event twice, in seq order, in one epoch; and they are the stream as the history route
 *   serves it (the same message at each seq);
 * - every acknowledged send (HTTP 200 reply, `sent` frame, or for a user send its own copy in
 *   the sender's stream) is in the stream of each of its receivers exactly once, at the seq the
 *   acknowledgement named where it named one;
 * - an unacknowledged send (a server send in flight when the gateway stopped) is there at most
 *   once; nothing is there that was not sent to that user; no (sender, clientMessageId) twice.
 *
 * Each fast-check run is one scenario on a fresh gateway and store: STEPS steps, each a batch of
 * BATCH_MIN..BATCH_MAX sends (CONCURRENCY at a time) with one chaos action started during it.
 * RUNS × STEPS × BATCH_MIN ≥ 10 000 sends per CI run (~14 000 with the slow consumers' blobs);
 * the counts are printed at the end. It takes ~2 min on two cores busy with other work too (the
 * gateway restarts, ~20 of them, cost ~1 s each).
 *
 * Its kills with a burst wait until the burst's writes are under way (the test reads the store
 * file), so many of them cut a write of several KV commits or a compaction of the write log
 * (gateway/store/kv.ts). Without the log's commit point, a user's group send can be left in some
 * members' streams without its send record, and the retry makes a second message
 * (tests/large_write_crash_test.ts pins that case); without the log's recovery at start-up,
 * acknowledged sends are lost. With the gateway broken on purpose it
 * fails too: replayed frames not sent (gaps), events delivered before they are durable (a seq
 * seen with another message after a kill), send records ignored (a clientMessageId twice).
 *
 * Replay: the test prints `chaos seed <n>`; `CHAOS_SEED=<n>` generates the same scenarios again
 * (the timing of a real process is not replayed, the commands are). On failure fast-check names
 * the seed and the path of the failing run: `CHAOS_SEED=<seed> CHAOS_PATH=<path>` runs only that
 * one. `CHAOS_RUNS=<n>` changes the number of runs; `CHAOS_SHRINK=1` lets fast-check shrink a
 * failure (slow: every attempt is a real scenario).
 *
 * The sends, the common chaos actions and the checker are shared with the same test on a
 * two-node cluster (tests/chaos_cluster_test.ts): tests/support/chaos.ts.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  APP,
  assertChaos,
  atArb,
  type ChaosDeployment,
  type ChaosOptions,
  ChaosScenario,
  chaosSettings,
  type CommonChaos,
  CROWD_MEMBERS,
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
import type { GatewayTarget, StreamClient } from "./support/stream_client.ts";

const SETTINGS = chaosSettings(6);
const STEPS = 30;
const BATCH_MIN = 60;
const BATCH_MAX = 80;
const OPTIONS: ChaosOptions = {
  /** Sends in flight at once within a batch. */
  concurrency: 16,
  retryUnavailable: false,
  liveTimeoutMs: 30_000,
};

/** Short windows and a small output limit, so that deadlines and slow consumers are cheap. */
const GATEWAY_ENV: Record<string, string> = {
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
  // The store compacts its write log every 256 KiB (about every second burst), not every
  // 64 MiB: the kills land inside compactions too, and restarts read logs back.
  KV_COMPACT_AFTER_BYTES: String(256 * 1024),
  RATE_LIMIT_CONNECTS_PER_SEC: "10000",
  LOG_LEVEL: "error",
};

// ---- the scenario ----

type Chaos =
  | CommonChaos
  | { kind: "restart"; atMs: number }
  /**
   * kill -9. With a `burst` of big sends to the crowd group (each one's write takes several KV
   * commits): `intoWriteMs` after the first such write is seen under way, so that the kill cuts
   * one, before or after its commit point.
   */
  | { kind: "kill"; atMs: number; burst: number; intoWriteMs: number };

/** Weights: per step, a restart and a kill each have probability 1/17, a slow consumer 2/17. */
const chaosArb: fc.Arbitrary<Chaos> = fc.oneof(
  { weight: 5, arbitrary: noneArb },
  { weight: 5, arbitrary: disconnectArb },
  { weight: 3, arbitrary: deadlineArb },
  { weight: 2, arbitrary: slowArb },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("restart" as const), atMs: atArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("kill" as const),
      atMs: atArb,
      burst: fc.integer({ min: 0, max: 6 }),
      intoWriteMs: fc.integer({ min: 0, max: 15 }),
    }),
  },
);

// ---- what the test counts ----

const totals = {
  runs: 0,
  sends: 0,
  acknowledged: 0,
  unacknowledged: 0,
  unacknowledgedSeen: 0,
  delivered: { live: 0, sent: 0, replay: 0, history: 0 },
  restarts: 0,
  kills: 0,
  /** Kills that left write logs on disk (see `countCutWrite`). */
  killsInsideLargeWrite: { beforeCommitPoint: 0, afterCommitPoint: 0 },
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
};

// ---- one scenario ----

/** The gateway process and its successors on one store; `ready` waits while it restarts. */
class ChaosGateway implements ChaosDeployment {
  readonly #all: GatewayProcess[] = [];
  #current: GatewayProcess;
  #up: Promise<GatewayTarget>;
  /** Problems seen while stopping (a graceful stop that does not exit cleanly). */
  readonly problems: string[] = [];

  private constructor(first: GatewayProcess) {
    this.#all.push(first);
    this.#current = first;
    this.#up = Promise.resolve(targetOf(first));
  }

  static async start(): Promise<ChaosGateway> {
    return new ChaosGateway(await GatewayProcess.start({ env: GATEWAY_ENV }));
  }

  ready(): Promise<GatewayTarget> {
    return this.#up;
  }

  /** Stops the process (SIGTERM or kill -9) and starts a new one on the same store. */
  async bounce(kind: "graceful" | "kill"): Promise<void> {
    const up = Promise.withResolvers<GatewayTarget>();
    // Whoever waits for a gateway that does not come back fails with the reason.
    up.promise.catch(() => {});
    this.#up = up.promise;
    try {
      const old = this.#current;
      if (kind === "graceful") {
        const status = await old.terminate();
        if (status.code !== 0) {
          this.problems.push(`graceful stop exited ${status.code}:\n${old.output.join("\n")}`);
        }
      } else {
        await old.crash();
        await countCutWrite(old.kvPath);
      }
      this.#current = await old.restart();
      this.#all.push(this.#current);
      up.resolve(targetOf(this.#current));
    } catch (error) {
      up.reject(error);
      throw error;
    }
  }

  /**
   * Starts `work` (a burst of sends) and resolves once its writes are under way: the store's
   * write log has changed, or a compaction wrote the stream of a crowd member nobody connects
   * as; or after `timeoutMs`. The test reads the gateway's store file as it is written.
   */
  async untilLargeWrite(work: () => void, timeoutMs: number): Promise<void> {
    const kv = await Deno.openKv(this.#current.kvPath);
    try {
      const silent = ["event", APP, CROWD_MEMBERS.at(-1)!];
      const state = async () => {
        const last = await kv.list({ prefix: silent }, { reverse: true, limit: 1 }).next();
        const log = await kv.list({ prefix: ["redo_log"] }, { reverse: true, limit: 1 }).next();
        return JSON.stringify([last.value?.key, log.value?.key]);
      };
      const before = await state();
      work();
      const giveUp = Date.now() + timeoutMs;
      while (Date.now() < giveUp) {
        if ((await state()) !== before) return;
        await delay(1);
      }
    } finally {
      kv.close();
    }
  }

  output(): string {
    return this.#all.map((p, i) => `--- process ${i} ---\n${p.output.join("\n")}`).join("\n");
  }

  async dispose(): Promise<void> {
    for (const proc of this.#all) if (await proc.alive()) await proc.crash();
    await this.#all[0].cleanup();
  }
}

/**
 * After a kill: whether it left write logs the next start-up applies (written, marker and all,
 * not compacted yet), and whether it cut one before its commit point (chunks without a marker:
 * they never count).
 */
async function countCutWrite(kvPath: string): Promise<void> {
  const kv = await Deno.openKv(kvPath);
  try {
    const marked = new Set<string>();
    for await (const entry of kv.list({ prefix: ["redo"] })) {
      marked.add(JSON.stringify(entry.key.slice(1)));
    }
    let cut = false;
    for await (const entry of kv.list({ prefix: ["redo_log"] })) {
      if (!marked.has(JSON.stringify(entry.key.slice(1, -1)))) cut = true;
    }
    if (marked.size > 0) totals.killsInsideLargeWrite.afterCommitPoint++;
    if (cut) totals.killsInsideLargeWrite.beforeCommitPoint++;
  } finally {
    kv.close();
  }
}

function targetOf(proc: GatewayProcess): GatewayTarget {
  return { port: proc.port, url: proc.url };
}

class Scenario extends ChaosScenario<Chaos> {
  readonly #gateway: ChaosGateway;

  constructor(gateway: ChaosGateway, clients: StreamClient[], run: number) {
    super(gateway, clients, run, totals, OPTIONS);
    this.#gateway = gateway;
  }

  protected async chaos(chaos: Chaos): Promise<void> {
    if (chaos.kind !== "restart" && chaos.kind !== "kill") return await this.commonChaos(chaos);
    await delay(chaos.atMs);
    switch (chaos.kind) {
      case "restart":
        totals.restarts++;
        await this.#gateway.bounce("graceful");
        await this.allLive();
        return;
      case "kill": {
        const burst: Array<Promise<void>> = [];
        const sendBurst = () => {
          for (let i = 0; i < chaos.burst; i++) {
            const client = this.clients[MEMBER_CLIENTS[i % MEMBER_CLIENTS.length]];
            burst.push(this.crowdSend(client));
          }
        };
        if (chaos.burst > 0) {
          await this.#gateway.untilLargeWrite(sendBurst, 5_000);
          await delay(chaos.intoWriteMs);
        }
        totals.kills++;
        const [killed, ...sent] = await Promise.allSettled([
          this.#gateway.bounce("kill").then(() => this.allLive()),
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
  return runScenario(
    steps,
    SETTINGS,
    totals,
    OPTIONS,
    () => ChaosGateway.start(),
    (gateway, clients, run) => new Scenario(gateway, clients, run),
  );
}

Deno.test("chaos: every client sees exactly the acknowledged events of its stream", async () => {
  const started = Date.now();
  await assertChaos(
    "chaos",
    SETTINGS,
    scenarioArb(chaosArb, STEPS, { min: BATCH_MIN, max: BATCH_MAX }),
    runOne,
  );
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`chaos: ${totals.runs} runs in ${seconds} s\n${JSON.stringify(totals, null, 2)}`);
  if (SETTINGS.path === undefined && SETTINGS.runs >= 6) {
    assert.ok(totals.sends >= 10_000, `only ${totals.sends} sends`);
    // Each kind of chaos happened (180 steps; each kind has probability ≥ 1/17 per step).
    assert.ok(totals.kills > 0 && totals.restarts > 0, "a kill and a graceful restart");
    assert.ok(
      totals.deadlines > 0 && totals.slowConsumerCloses > 0,
      "a deadline and a slow consumer",
    );
    assert.ok(totals.resumesRecovered > 0, "a recovered resume");
    assert.ok((totals.resumesNotRecovered.replay_limit ?? 0) > 0, "a resume paged from history");
  }
});
