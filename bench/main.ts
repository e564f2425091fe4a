/**
 * `deno task bench [--quick] [--scenarios=a,b] [--arms=a,b] [--reps=n] [--base=DIR] [--no-quiet]`
 *
 * The gateway side by side with a raw Deno server, Node `ws` and Socket.IO (issue #4), and
 * with itself before durable streams (issue #10: `--base=DIR` names a checkout of that
 * commit, whose gateway is the fan-out's "non-durable" arm; without it that arm is skipped).
 * Every run starts a fresh server process (pinned to core 0) and drives it from a separate
 * Node load generator (bench/load/gen.mjs, pinned to core 1); arms run interleaved, each
 * scenario repeated, and the table shows medians and the ratios the goals are about. Before
 * each run the bench waits (up to 30 s) for the machine to be quiet, unless `--no-quiet`.
 * The cluster scenario (bench/cluster.ts) starts its own redis-server and one or two gateway
 * nodes on it instead; it is skipped, with a note, where redis-server is not installed.
 * Full mode writes BENCHMARKS.md and bench/results.json (with `--scenarios`, only those
 * scenarios' figures are replaced: the others stay from the run before); --quick (CI's
 * smoke test) only prints. Both exit non-zero only when a run failed. `--rewrite` runs
 * nothing: it writes BENCHMARKS.md again from bench/results.json (after an edit of
 * bench/comparisons.md).
 */
import {
  awaitQuiet,
  cpuMs,
  Generator,
  heapAfterGc,
  otherCpuMs,
  procBytes,
  resetPeak,
  type Server,
  startServer,
} from "./procs.ts";
import { redisServerBinary, runCluster } from "./cluster.ts";
import {
  type Arm,
  environment,
  type Measured,
  type PartialRun,
  report,
  type Results,
  writeReport,
} from "./report.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const QUICK = Deno.args.includes("--quick");
/** The checkout the `base` arms run from (the commit before durable streams). */
const BASE_ROOT = arg("base");
const QUIET = !QUICK && !Deno.args.includes("--no-quiet");

/** Sizes per mode: quick stays well under two minutes in total. */
const SIZE = QUICK
  ? {
    reps: 1,
    ceiling: { conns: 100, window: 16, warmMs: 1_000, measureMs: 2_000 },
    steady: { conns: 1_000, warmMs: 1_000, measureMs: 3_000 },
    memory: { warmConns: 50, conns: 1_000 },
    storm: { conns: 1_000, concurrency: 100 },
    fanout: { conns: 1_000, messages: 20_000, timeoutMs: 20_000 },
    deadline: { conns: 1_000, windowMs: 5_000, timeoutMs: 10_000 },
    resume: { clients: 100, missed: 30, timeoutMs: 20_000 },
    group: { members: 100, messages: 50, inflight: 4, timeoutMs: 20_000 },
    cluster: {
      clients: 200,
      rate: 500,
      window: 1,
      warmMs: 1_000,
      measureMs: 2_000,
      monitorMs: 1_000,
      drainMs: 10_000,
    },
  }
  : {
    reps: 3,
    ceiling: { conns: 100, window: 16, warmMs: 2_000, measureMs: 10_000 },
    steady: { conns: 10_000, warmMs: 3_000, measureMs: 10_000 },
    memory: { warmConns: 100, conns: 10_000 },
    storm: { conns: 10_000, concurrency: 100 },
    fanout: { conns: 10_000, messages: 200_000, timeoutMs: 60_000 },
    deadline: { conns: 10_000, windowMs: 30_000, timeoutMs: 20_000 },
    resume: { clients: 1_000, missed: 300, timeoutMs: 60_000 },
    group: { members: 1_000, messages: 100, inflight: 4, timeoutMs: 120_000 },
    cluster: {
      clients: 1_000,
      rate: 1_000,
      window: 1,
      warmMs: 2_000,
      measureMs: 10_000,
      monitorMs: 3_000,
      drainMs: 30_000,
    },
  };
const REPS = Number(arg("reps") ?? SIZE.reps);

/** The open-file limit the gateway process will have (Deno raises its soft limit to this). */
const OPEN_FILE_LIMIT = new TextDecoder().decode(
  (await new Deno.Command("sh", { args: ["-c", "ulimit -Hn"] }).output()).stdout,
).trim();

export const ARMS: Record<string, Arm> = {
  gateway: { label: "gateway", server: "gateway", kind: "gateway" },
  gateway_base: {
    label: "gateway, non-durable (before streams)",
    server: "gateway",
    kind: "gateway",
    base: true,
  },
  gateway_compacting: {
    label: "gateway, a compaction of its write log inside the burst",
    server: "gateway",
    kind: "gateway",
    // The burst writes about 45 MB of log, so the default (64 MiB) compacts after it, once
    // writes pause: at 24 MiB one compaction, of every user's rows, falls inside it. (At the
    // default this workload compacts every ~290 000 messages: this arm is pessimistic.)
    env: { KV_COMPACT_AFTER_BYTES: String(24 * 1024 * 1024) },
  },
  gateway_bg: {
    label: "gateway, manual mode in background",
    server: "gateway",
    kind: "gateway",
    gen: {
      mode: "manual",
      background: true,
      ping: '{"type":"ping","id":1,"source":"app"}',
    },
  },
  gateway_socket_login: {
    label: "gateway, login inside the handshake",
    server: "gateway",
    kind: "gateway",
    gen: { socketLogin: true },
  },
  gateway_deno: {
    label: "gateway on Deno.serve (TRANSPORT=deno)",
    server: "gateway",
    kind: "gateway",
    env: { TRANSPORT: "deno" },
  },
  gateway_resume: {
    label: "gateway, sessions logged in before (reconnect storm)",
    server: "gateway",
    kind: "gateway",
    gen: { resume: true },
  },
  gateway_cold: {
    label: "gateway, replay read from the store (STREAM_CACHE_EVENTS=0)",
    server: "gateway",
    kind: "gateway",
    env: { STREAM_CACHE_EVENTS: "0" },
  },
  gateway_serial: {
    label: "gateway, one group send at a time",
    server: "gateway",
    kind: "gateway",
    gen: { inflight: 1 },
  },
  gateway_g100: {
    label: "gateway, a group of 100",
    server: "gateway",
    kind: "gateway",
    gen: { members: 100, messages: 300 },
  },
  ...resumeScale(1_000, 30),
  ...resumeScale(1_000, 3),
  ...resumeScale(100, 300),
  ...resumeScale(30, 300),
  ...resumeScale(10, 300),
  cluster_1node: {
    label: "1 node (core 0, beside Redis)",
    server: "gateway",
    kind: "gateway",
    cluster: { nodes: 1 },
  },
  cluster_2nodes: {
    label: "2 nodes, both on core 0 (beside Redis)",
    server: "gateway",
    kind: "gateway",
    cluster: { nodes: 2 },
  },
  cluster_2cores: {
    label: "2 nodes, one per core (node 2 beside the generator)",
    server: "gateway",
    kind: "gateway",
    cluster: { nodes: 2, spread: true },
  },
  raw_deno: { label: "raw Deno", server: "raw_deno", kind: "json" },
  raw_echo: { label: "raw Deno echo", server: "raw_deno", kind: "echo" },
  node_ws: { label: "Node ws", server: "node_ws", kind: "json" },
  socket_io: { label: "Socket.IO", server: "socket_io", kind: "sio" },
};

/** A resume arm at another scale: `clients` reconnecting at once, `missed` events each. */
function resumeScale(clients: number, missed: number): Record<string, Arm> {
  return {
    [`gateway_${clients}x${missed}`]: {
      label: `gateway, ${clients} clients × ${missed} events`,
      server: "gateway",
      kind: "gateway",
      gen: { clients, missed },
    },
  };
}

interface Scenario {
  arms: string[];
  /** Start the server with the V8 inspector (to GC and read the heap). */
  inspect?: boolean;
  /** Extra gateway environment. */
  env?: Record<string, string>;
  /** Needs redis-server (skipped, with a note, where there is none). */
  redis?: boolean;
  /** Measures one run of the one server `runOnce` starts. */
  measure?(gen: Generator, server: Server): Promise<Measured>;
  /** Or runs the whole run itself (its own processes), with the gateway environment. */
  run?(arm: Arm, env: Record<string, string>): Promise<Measured>;
}

const SCENARIOS: Record<string, Scenario> = {
  ceiling: {
    arms: [
      "gateway",
      "gateway_bg",
      "gateway_deno",
      "raw_deno",
      "raw_echo",
      "node_ws",
      "socket_io",
    ],
    async measure(gen) {
      const { rate, genCpu } = await gen.next("result") as {
        rate: number;
        genCpu: number;
      };
      return { rate, genCpu };
    },
  },
  steady: {
    arms: ["gateway", "raw_deno", "node_ws", "socket_io"],
    async measure(gen, server) {
      await gen.next("measure_start");
      const [c0, t0] = [cpuMs(server.pid), performance.now()];
      await gen.next("measure_end");
      const cpu = (cpuMs(server.pid) - c0) / (performance.now() - t0) * 100;
      const { rtt, unanswered } = await gen.next("result") as {
        rtt: { p50: number; p99: number; max: number };
        unanswered: number;
      };
      return { p50: rtt.p50, p99: rtt.p99, max: rtt.max, cpu, unanswered };
    },
  },
  memory: {
    arms: ["gateway", "raw_deno", "node_ws", "socket_io"],
    inspect: true,
    async measure(gen, server) {
      const read = async () => {
        const heap = await heapAfterGc(server.inspectPort!);
        return { heap, rss: procBytes(server.pid, "VmRSS") };
      };
      await gen.next("ready");
      const base = await read();
      await gen.go();
      await gen.next("ready");
      const loaded = await read();
      await gen.go();
      const n = SIZE.memory.conns;
      return {
        rss: (loaded.rss - base.rss) / n,
        heap: (loaded.heap - base.heap) / n,
      };
    },
  },
  storm: {
    arms: ["gateway", "gateway_socket_login", "gateway_resume", "raw_deno", "node_ws", "socket_io"],
    async measure(gen) {
      const { rate, connectMs, genCpu } = await gen.next("result") as {
        rate: number;
        connectMs: { p99: number };
        genCpu: number;
      };
      return { rate, p99: connectMs.p99, genCpu };
    },
  },
  fanout: {
    // The gateway sends real messages through its server API (multi-recipient sends); the
    // others get one trigger frame and write `messages` frames in one synchronous loop.
    arms: QUICK
      ? ["gateway", "gateway_base", "raw_deno", "node_ws", "socket_io"]
      : ["gateway", "gateway_compacting", "gateway_base", "raw_deno", "node_ws", "socket_io"],
    async measure(gen, server) {
      await gen.next("ready");
      // The connections' own writes settle first (the gateway compacts its write log once
      // writes pause for a second): the burst is measured alone.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const before = procBytes(server.pid, "VmRSS");
      resetPeak(server.pid);
      const cpu0 = cpuMs(server.pid);
      await gen.go();
      const { rate, received } = await gen.next("result") as {
        rate: number;
        received: number;
      };
      if (received !== SIZE.fanout.messages) {
        throw new Error(
          `fan-out: ${received} of ${SIZE.fanout.messages} frames arrived`,
        );
      }
      return {
        rate,
        // Server CPU (all threads: the store's writes included) per delivered message, in µs:
        // what the work costs, less sensitive than the rate to other load on the machine.
        cpuUs: (cpuMs(server.pid) - cpu0) * 1000 / received,
        peakRss: procBytes(server.pid, "VmHWM"),
        growth: procBytes(server.pid, "VmHWM") - before,
      };
    },
  },
  resume: {
    arms: QUICK ? ["gateway", "gateway_cold"] : [
      "gateway",
      "gateway_cold",
      "gateway_1000x30",
      "gateway_1000x3",
      "gateway_100x300",
      "gateway_30x300",
      "gateway_10x300",
    ],
    // The handshake timeout runs from the upgrade to the end of the replay's store read: lifted,
    // so that a slow replay is measured rather than cut off (the bench reports what it takes).
    env: { HANDSHAKE_TIMEOUT_MS: "120000" },
    async measure(gen) {
      const { eventsPerSec } = await gen.next("ready") as { eventsPerSec: number };
      await gen.go();
      const r = await gen.next("result") as {
        replayMs: { p50: number; p99: number; max: number };
        allMs: number;
        framesPerSec: number;
        genCpu: number;
        clients: number;
        missed: number;
      };
      const { p50, p99, max } = r.replayMs;
      return {
        clients: r.clients,
        missed: r.missed,
        p50,
        p99,
        max,
        allMs: r.allMs,
        framesPerSec: r.framesPerSec,
        genCpu: r.genCpu,
        appendsPerSec: eventsPerSec,
      };
    },
  },
  group: {
    arms: ["gateway", "gateway_serial", "gateway_g100"],
    async measure(gen, server) {
      await gen.next("ready");
      // The connections' own writes settle first (the gateway compacts its write log once
      // writes pause for a second): the burst is measured alone.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const before = procBytes(server.pid, "VmRSS");
      resetPeak(server.pid);
      const cpu0 = cpuMs(server.pid);
      await gen.go();
      const r = await gen.next("result") as {
        members: number;
        inflight: number;
        received: number;
        rate: number;
        latency: { p50: number; p99: number; max: number };
        ackMs: { p50: number; p99: number };
        genCpu: number;
      };
      return {
        members: r.members,
        inflight: r.inflight,
        rate: r.rate,
        cpuUs: (cpuMs(server.pid) - cpu0) * 1000 / r.received,
        p50: r.latency.p50,
        p99: r.latency.p99,
        max: r.latency.max,
        ackP50: r.ackMs.p50,
        ackP99: r.ackMs.p99,
        genCpu: r.genCpu,
        peakRss: procBytes(server.pid, "VmHWM"),
        growth: procBytes(server.pid, "VmHWM") - before,
      };
    },
  },
  deadline: {
    arms: ["gateway"],
    env: {
      LIVENESS_WINDOW_MS: String(SIZE.deadline.windowMs),
      // The gateway wants heartbeats inside the window (quick mode shortens the window).
      HEARTBEAT_INTERVAL_MS: String(
        Math.min(15_000, SIZE.deadline.windowMs / 2),
      ),
    },
    async measure(gen) {
      const r = await gen.next("result") as {
        lateness: { min: number; p50: number; p99: number; max: number };
        early: number;
        unclosed: number;
        codes: Record<string, number>;
        reasons: Record<string, number>;
      };
      const { early, unclosed, codes, reasons } = r;
      return { ...r.lateness, early, unclosed, codes, reasons };
    },
  },
  cluster: {
    arms: ["cluster_1node", "cluster_2nodes", "cluster_2cores"],
    redis: true,
    run: (arm, env) => runCluster(arm.cluster!, SIZE.cluster, env),
  },
};

/** The gateway's environment in a run (without its store). */
function gatewayEnv(scenario: Scenario, arm: Arm): Record<string, string> {
  return {
    // Connections are opened thousands at a time: keep the dead-peer rule out of the way.
    IDLE_TIMEOUT_MS: "600000",
    // The load is one client on a few hundred loopback addresses: lift the per-client
    // budgets (the limits are measured by their own tests, not here).
    RATE_LIMIT_FRAMES_PER_SEC: "1000000",
    RATE_LIMIT_HTTP_PER_SEC: "1000000",
    RATE_LIMIT_CONNECTS_PER_SEC: "1000000",
    MAX_CONNECTIONS_PER_IP: "1000",
    OPEN_FILE_LIMIT: OPEN_FILE_LIMIT,
    ...scenario.env,
    ...arm.env,
  };
}

/** One run: a fresh server, a generator, the scenario's measurement, both stopped. */
async function runOnce(
  scenarioName: string,
  armName: string,
): Promise<Measured> {
  const scenario = SCENARIOS[scenarioName];
  const arm = ARMS[armName];
  const size = SIZE[scenarioName as keyof typeof SIZE] as Record<
    string,
    number
  >;
  if (scenario.run) return await scenario.run(arm, gatewayEnv(scenario, arm));
  let kvDir: string | undefined;
  let env: Record<string, string> = {};
  if (arm.server === "gateway") {
    kvDir = await Deno.makeTempDir({ prefix: "bench_kv_" });
    env = { KV_PATH: `${kvDir}/kv.sqlite3`, ...gatewayEnv(scenario, arm) };
  }
  const server = await startServer(arm.server, {
    inspect: scenario.inspect,
    env,
    root: arm.base ? BASE_ROOT : undefined,
  });
  const config = { ...size, ...arm.gen } as Record<string, number>;
  const users = (config.conns ?? config.clients ?? config.members ?? 0) +
    (config.warmConns ?? 0);
  const gen = new Generator({
    scenario: scenarioName,
    host: "127.0.0.1",
    port: server.port,
    kind: arm.kind,
    users,
    ...config,
  }, 9 * 60_000);
  try {
    await gen.next("setup_done");
    const [other0, t0] = [otherCpuMs([server.pid, gen.pid]), performance.now()];
    const measured = await scenario.measure!(gen, server);
    const other = otherCpuMs([server.pid, gen.pid]) - other0;
    // Percent of one core that other processes took during the run: a noise indicator.
    return { ...measured, otherCpu: (other / (performance.now() - t0)) * 100 };
  } finally {
    await gen.stop();
    await server.stop();
    if (kvDir) await Deno.remove(kvDir, { recursive: true });
  }
}

async function installNodeDeps(): Promise<void> {
  try {
    await Deno.stat(`${ROOT}bench/node/node_modules/.package-lock.json`);
  } catch {
    const out = await new Deno.Command("npm", {
      args: ["ci", "--prefix", "bench/node", "--no-audit", "--no-fund"],
      cwd: ROOT,
    }).output();
    if (!out.success) {
      throw new Error(
        `npm ci --prefix bench/node:\n${new TextDecoder().decode(out.stderr)}`,
      );
    }
  }
}

/** `--rewrite`: BENCHMARKS.md again from the last run's bench/results.json. */
async function rewrite(): Promise<number> {
  const saved = JSON.parse(await Deno.readTextFile(`${ROOT}bench/results.json`));
  await writeReport(
    saved.results,
    saved.notes,
    {
      sizes: saved.sizes,
      reps: saved.reps,
      seconds: saved.seconds,
      args: saved.args,
      partials: saved.partials,
    },
    ARMS,
    { date: saved.date, environment: saved.environment },
  );
  return 0;
}

/**
 * A full run of some scenarios only (`--scenarios`): BENCHMARKS.md and bench/results.json keep
 * the other scenarios' figures of the run before, and say which rows come from which run.
 */
async function writeMerged(
  results: Results,
  notes: string[],
  scenarios: string[],
  seconds: number,
): Promise<void> {
  const saved = JSON.parse(await Deno.readTextFile(`${ROOT}bench/results.json`));
  const ran = (note: string) => scenarios.some((name) => note.startsWith(`${name} `));
  const partials: PartialRun[] = (saved.partials ?? [])
    .map((p: PartialRun) => ({
      ...p,
      scenarios: p.scenarios.filter((s) => !scenarios.includes(s)),
    }))
    .filter((p: PartialRun) => p.scenarios.length > 0);
  partials.push({
    scenarios,
    date: new Date().toISOString(),
    args: Deno.args,
    commit: (await environment()).commit,
    reps: REPS,
    seconds,
  });
  const sizes = { ...saved.sizes };
  for (const name of scenarios) sizes[name] = SIZE[name as keyof typeof SIZE];
  const kept = Object.fromEntries(
    Object.entries(saved.results as Results).filter(([name]) => !scenarios.includes(name)),
  );
  await writeReport(
    { ...kept, ...results },
    [...(saved.notes as string[]).filter((n) => !ran(n)), ...notes],
    { sizes, reps: saved.reps, seconds: saved.seconds, args: saved.args, partials },
    ARMS,
    { date: saved.date, environment: saved.environment },
  );
}

async function main(): Promise<number> {
  if (Deno.args.includes("--rewrite")) return await rewrite();
  await installNodeDeps();
  const hasGateway = await Deno.stat(`${ROOT}gateway/main.ts`).then(
    () => true,
    () => false,
  );
  const onlyArms = arg("arms")?.split(",");
  const scenarioNames = arg("scenarios")?.split(",") ?? Object.keys(SCENARIOS);
  const results: Results = {};
  const notes: string[] = [];
  if (!hasGateway) {
    notes.push("gateway/main.ts not found: gateway arms skipped.");
  }
  const baseArms = scenarioNames.some((name) => SCENARIOS[name].arms.some((a) => ARMS[a].base));
  if (BASE_ROOT === undefined && baseArms) {
    notes.push("no --base=DIR (a checkout of the commit before streams): its arm skipped.");
  }
  let failures = 0;
  const started = performance.now();
  for (const name of scenarioNames) {
    if (SCENARIOS[name].redis && redisServerBinary() === null) {
      const note = `${name} skipped: redis-server is not installed (apt-get install redis-server).`;
      console.log(note);
      notes.push(note);
      continue;
    }
    const arms = SCENARIOS[name].arms.filter((a) =>
      (!onlyArms || onlyArms.includes(a)) &&
      (hasGateway || ARMS[a].server !== "gateway") &&
      (BASE_ROOT !== undefined || !ARMS[a].base)
    );
    results[name] = {};
    for (let rep = 0; rep < REPS; rep++) {
      // Interleaved, and rotated so that no arm always runs first.
      for (let k = 0; k < arms.length; k++) {
        const armName = arms[(k + rep) % arms.length];
        try {
          if (QUIET) {
            const waited = await awaitQuiet();
            if (waited.ms > 1_000) {
              console.log(`(waited ${(waited.ms / 1000).toFixed(0)} s for a quiet machine)`);
            }
          }
          const t0 = performance.now();
          const measured = await runOnce(name, armName);
          (results[name][armName] ??= []).push(measured);
          const secs = ((performance.now() - t0) / 1000).toFixed(1);
          console.log(
            `${name} #${rep + 1} ${armName} (${secs} s): ${JSON.stringify(measured)}`,
          );
        } catch (err) {
          failures++;
          notes.push(
            `${name} ${armName} #${rep + 1} failed: ${(err as Error).message.split("\n")[0]}`,
          );
          console.error(`${name} #${rep + 1} ${armName} FAILED:`, err);
        }
      }
    }
  }
  for (const [name, arms] of Object.entries(results)) {
    for (const [armName, runs] of Object.entries(arms)) {
      const noisy = runs.map((r) => r.otherCpu as number).filter((c) => c > 10);
      if (noisy.length) {
        notes.push(
          `${name} ${armName}: other processes took ${
            noisy.map((c) => c.toFixed(0)).join(", ")
          } %` +
            " of a core during a run (noise).",
        );
      }
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(`\n${report(results, notes, ARMS)}\n\n(${seconds.toFixed(0)} s)`);
  const saved = await Deno.stat(`${ROOT}bench/results.json`).then(() => true, () => false);
  if (!QUICK && arg("scenarios") !== undefined && saved) {
    await writeMerged(results, notes, scenarioNames, seconds);
  } else if (!QUICK) {
    await writeReport(results, notes, {
      sizes: SIZE,
      reps: REPS,
      seconds,
      args: Deno.args,
    }, ARMS);
  }
  return failures ? 1 : 0;
}

Deno.exit(await main());
