/**
 * `deno task bench [--quick] [--scenarios=a,b] [--arms=a,b] [--reps=n]`
 *
 * The gateway side by side with a raw Deno server, Node `ws` and Socket.IO (issue #4).
 * Every run starts a fresh server process (pinned to core 0) and drives it from a separate
 * Node load generator (bench/load/gen.mjs, pinned to core 1); arms run interleaved, each
 * scenario repeated, and the table shows medians and the ratios the goals are about.
 * Full mode writes BENCHMARKS.md and bench/results.json; --quick (CI's smoke test) only
 * prints. Both exit non-zero only when a run failed.
 */
import {
  cpuMs,
  Generator,
  heapAfterGc,
  otherCpuMs,
  procBytes,
  resetPeak,
  type Server,
  startServer,
} from "./procs.ts";
import { type Arm, type Measured, report, type Results, writeReport } from "./report.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const QUICK = Deno.args.includes("--quick");

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
  }
  : {
    reps: 3,
    ceiling: { conns: 100, window: 16, warmMs: 2_000, measureMs: 10_000 },
    steady: { conns: 10_000, warmMs: 3_000, measureMs: 10_000 },
    memory: { warmConns: 100, conns: 10_000 },
    storm: { conns: 10_000, concurrency: 100 },
    fanout: { conns: 10_000, messages: 200_000, timeoutMs: 60_000 },
    deadline: { conns: 10_000, windowMs: 30_000, timeoutMs: 20_000 },
  };
const REPS = Number(arg("reps") ?? SIZE.reps);

/** The open-file limit the gateway process will have (Deno raises its soft limit to this). */
const OPEN_FILE_LIMIT = new TextDecoder().decode(
  (await new Deno.Command("sh", { args: ["-c", "ulimit -Hn"] }).output()).stdout,
).trim();

export const ARMS: Record<string, Arm> = {
  gateway: { label: "gateway", server: "gateway", kind: "gateway" },
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
  raw_deno: { label: "raw Deno", server: "raw_deno", kind: "json" },
  raw_echo: { label: "raw Deno echo", server: "raw_deno", kind: "echo" },
  node_ws: { label: "Node ws", server: "node_ws", kind: "json" },
  socket_io: { label: "Socket.IO", server: "socket_io", kind: "sio" },
};

interface Scenario {
  arms: string[];
  /** Start the server with the V8 inspector (to GC and read the heap). */
  inspect?: boolean;
  /** Extra gateway environment. */
  env?: Record<string, string>;
  measure(gen: Generator, server: Server): Promise<Measured>;
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
    arms: ["gateway", "raw_deno", "node_ws", "socket_io"],
    async measure(gen, server) {
      await gen.next("ready");
      const before = procBytes(server.pid, "VmRSS");
      resetPeak(server.pid);
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
};

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
  let kvDir: string | undefined;
  let env: Record<string, string> = {};
  if (arm.server === "gateway") {
    kvDir = await Deno.makeTempDir({ prefix: "bench_kv_" });
    env = {
      KV_PATH: `${kvDir}/kv.sqlite3`,
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
  const server = await startServer(arm.server, {
    inspect: scenario.inspect,
    env,
  });
  const users = (size.conns ?? 0) + (size.warmConns ?? 0);
  const gen = new Generator({
    scenario: scenarioName,
    host: "127.0.0.1",
    port: server.port,
    kind: arm.kind,
    users,
    ...size,
    ...arm.gen,
  }, 9 * 60_000);
  try {
    await gen.next("setup_done");
    const [other0, t0] = [otherCpuMs([server.pid, gen.pid]), performance.now()];
    const measured = await scenario.measure(gen, server);
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

async function main(): Promise<number> {
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
  let failures = 0;
  const started = performance.now();
  for (const name of scenarioNames) {
    const arms = SCENARIOS[name].arms.filter((a) =>
      (!onlyArms || onlyArms.includes(a)) &&
      (hasGateway || ARMS[a].server !== "gateway")
    );
    results[name] = {};
    for (let rep = 0; rep < REPS; rep++) {
      // Interleaved, and rotated so that no arm always runs first.
      for (let k = 0; k < arms.length; k++) {
        const armName = arms[(k + rep) % arms.length];
        try {
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
  console.log(`\n${report(results, notes)}\n\n(${seconds.toFixed(0)} s)`);
  if (!QUICK) {
    await writeReport(results, notes, {
      sizes: SIZE,
      reps: REPS,
      seconds,
      args: Deno.args,
    });
  }
  return failures ? 1 : 0;
}

Deno.exit(await main());
