/**
 * Scenario 9, the cluster on Redis (docs/cluster.md): one Redis of the bench's own and one or
 * two gateway nodes on it, `clients` users spread over the nodes, every message a user `send`
 * frame to a user at the other node (with two nodes). The generator (bench/load/gen.mjs,
 * `cluster`) runs a steady phase (a fixed offered load) and a saturated one (a closed loop);
 * around each this reads the processes' CPU and Redis's `INFO stats` and `INFO commandstats`.
 *
 * Pinning: Redis and the nodes share the server core (core 0), the generator has core 1, as in
 * every other scenario; so "1 node" and "2 nodes, both on core 0" have the same CPU, and the
 * ratio of the two is what crossing nodes costs, not what a second machine would add. The arm
 * "one per core" (`spread`) moves the second node to core 1, beside the generator: on 2 cores
 * that is all a second node can get.
 */
import {
  cpuMs,
  freePort,
  Generator,
  otherCpuMs,
  pinning,
  type Server,
  startServer,
  track,
} from "./procs.ts";
import type { Measured } from "./report.ts";

/** The `redis-server` the bench starts: on the PATH, else /usr/bin's; null when there is none. */
export function redisServerBinary(): string | null {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/bin"];
  for (const dir of dirs) {
    if (dir === "") continue;
    try {
      if (Deno.statSync(`${dir}/redis-server`).isFile) return `${dir}/redis-server`;
    } catch {
      // Not in this directory.
    }
  }
  return null;
}

/** The Redis options of the run: every acknowledged write on disk, as docs/cluster.md says. */
export const REDIS_ARGS = ["--appendonly", "yes", "--appendfsync", "always", "--save", ""];

/** A running redis-server of the bench's own: loopback, a free port, a temporary directory. */
interface RedisProcess {
  port: number;
  pid: number;
  url: string;
  /** `INFO stats commandstats`, parsed: field → value (`cmdstat_*` lines as their `calls`). */
  info(): Promise<Record<string, number>>;
  /** Starts counting the clients' requests (MONITOR); `stop` ends it and gives the counts. */
  monitor(): Promise<{ stop(): Promise<MonitorCounts> }>;
  stop(): Promise<void>;
}

async function startRedis(binary: string, port: number): Promise<RedisProcess> {
  const dir = await Deno.makeTempDir({ prefix: "bench_redis_" });
  const [cmd, ...args] = [
    ...pinning.server,
    binary,
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    ...REDIS_ARGS,
    "--dir",
    dir,
    "--logfile",
    `${dir}/redis.log`,
  ];
  const child = track(
    new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "null" }).spawn(),
  );
  let exited = false;
  const status = child.status.finally(() => (exited = true));
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited already */ }
    await status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  let conn: RedisConn | null = null;
  for (const until = performance.now() + 15_000; performance.now() < until && !exited;) {
    try {
      conn = await RedisConn.connect(port);
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  if (conn === null) {
    const log = await Deno.readTextFile(`${dir}/redis.log`).catch(() => "(no log)");
    await stop();
    throw new Error(`redis-server did not answer:\n${log.split("\n").slice(-10).join("\n")}`);
  }
  const probe = conn;
  return {
    port,
    pid: child.pid,
    url: `redis://127.0.0.1:${port}`,
    async info() {
      const text = await probe.command("INFO", "stats", "commandstats");
      const fields: Record<string, number> = {};
      for (const line of text.split("\r\n")) {
        const [key, value] = line.split(":", 2);
        if (value === undefined) continue;
        const calls = value.match(/^calls=(\d+)/);
        fields[key] = calls ? Number(calls[1]) : Number(value);
      }
      return fields;
    },
    async monitor() {
      const conn = await RedisConn.connect(port);
      const { counts, done } = await conn.monitor();
      return {
        async stop() {
          await probe.command("ECHO", END_MONITOR);
          await done;
          conn.close();
          return counts;
        },
      };
    },
    async stop() {
      probe.close();
      await stop();
    },
  };
}

/** What MONITOR saw, by command name: the clients' requests, and the commands scripts ran. */
interface MonitorCounts {
  requests: Record<string, number>;
  scripted: Record<string, number>;
}

/** The text the bench ECHOes to end a MONITOR count. */
const END_MONITOR = "bench: end of the monitored interval";

/** One connection to Redis speaking just enough RESP for INFO and MONITOR. */
class RedisConn {
  #conn: Deno.TcpConn;
  #buffer = new Uint8Array(0);

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async connect(port: number): Promise<RedisConn> {
    const conn = new RedisConn(await Deno.connect({ hostname: "127.0.0.1", port }));
    try {
      if ((await conn.command("PING")) !== "PONG") throw new Error("no PONG");
    } catch (error) {
      conn.close();
      throw error;
    }
    return conn;
  }

  /** Sends a command; its reply as text (a simple or bulk string), or throws its error. */
  async command(...words: string[]): Promise<string> {
    const enc = new TextEncoder();
    const request = `*${words.length}\r\n` +
      words.map((w) => `$${enc.encode(w).length}\r\n${w}\r\n`).join("");
    await this.#conn.write(enc.encode(request));
    const line = await this.#line();
    if (line.startsWith("+")) return line.slice(1);
    if (line.startsWith("-")) throw new Error(`redis: ${line.slice(1)}`);
    if (!line.startsWith("$")) throw new Error(`redis: unexpected reply ${line}`);
    const length = Number(line.slice(1));
    await this.#fill(length + 2);
    const body = new TextDecoder().decode(this.#buffer.subarray(0, length));
    this.#buffer = this.#buffer.subarray(length + 2);
    return body;
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed already */ }
  }

  /**
   * Turns this connection into a MONITOR and counts the requests Redis gets from its clients
   * (by command name; a MULTI … EXEC block counts once, as "multi") until it sees the command
   * `ECHO <END_MONITOR>`. Commands a script runs are listed by MONITOR as the client `lua`: they
   * are not requests.
   */
  async monitor(): Promise<{ counts: MonitorCounts; done: Promise<void> }> {
    if ((await this.command("MONITOR")) !== "OK") throw new Error("redis: MONITOR refused");
    const requests: Record<string, number> = {};
    const scripted: Record<string, number> = {};
    const inMulti = new Set<string>();
    const done = (async () => {
      for (;;) {
        let line: string;
        try {
          line = await this.#line();
        } catch {
          return; // closed
        }
        // +<time> [<db> <client>] "<command>" "<arg>"…
        const open = line.indexOf("[");
        const close = line.indexOf('] "', open);
        if (open < 0 || close < 0) continue;
        const client = line.slice(line.indexOf(" ", open) + 1, close);
        const name = line.slice(close + 3, line.indexOf('"', close + 3)).toLowerCase();
        if (client === "lua") {
          scripted[name] = (scripted[name] ?? 0) + 1;
          continue;
        }
        if (name === "echo" && line.endsWith(`"${END_MONITOR}"`)) return;
        if (name === "multi") inMulti.add(client);
        else if (inMulti.has(client)) {
          if (name !== "exec" && name !== "discard") continue;
          inMulti.delete(client);
          requests.multi = (requests.multi ?? 0) + 1;
          continue;
        }
        if (name !== "multi") requests[name] = (requests[name] ?? 0) + 1;
      }
    })();
    return { counts: { requests, scripted }, done };
  }

  async #line(): Promise<string> {
    for (;;) {
      const end = this.#buffer.indexOf(0x0a);
      if (end > 0 && this.#buffer[end - 1] === 0x0d) {
        const line = new TextDecoder().decode(this.#buffer.subarray(0, end - 1));
        this.#buffer = this.#buffer.subarray(end + 1);
        return line;
      }
      await this.#read();
    }
  }

  async #fill(bytes: number): Promise<void> {
    while (this.#buffer.length < bytes) await this.#read();
  }

  async #read(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("redis: connection closed");
    const joined = new Uint8Array(this.#buffer.length + n);
    joined.set(this.#buffer);
    joined.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = joined;
  }
}

/**
 * What the processes and Redis had done at one mark: the time; CPU ms of the nodes, of Redis, of
 * the generator, and of the run's processes pinned to each core; Redis's INFO.
 */
interface Snapshot {
  t: number;
  nodes: number;
  redis: number;
  gen: number;
  core0: number;
  core1: number;
  info: Record<string, number>;
}

/** A generator phase's figures, as gen.mjs reports them. */
interface PhaseResult {
  delivered: number;
  rate: number;
  latency: { p50: number; p99: number; max: number };
  ackMs: { p50: number; p99: number; max: number };
}

/**
 * One phase's figures: the generator's, and per delivered message the Redis commands (those
 * inside scripts included, the bench's own INFO calls not), the request batches Redis read
 * (`total_reads_processed`; pipelined requests, or requests written while Redis waited for its
 * core, arrive in one) and the CPU of the nodes and of Redis; the load of each core from the
 * processes of the run, in % of one core.
 */
function phaseFigures(
  prefix: string,
  r: PhaseResult,
  a: Snapshot,
  b: Snapshot,
): { figures: Measured; commands: Record<string, number> } {
  const n = r.delivered;
  const delta = (key: string) => (b.info[key] ?? 0) - (a.info[key] ?? 0);
  const commands: Record<string, number> = {};
  let total = 0;
  for (const key of Object.keys(b.info)) {
    if (!key.startsWith("cmdstat_") || key === "cmdstat_info") continue;
    const calls = delta(key);
    if (calls > 0) commands[key.slice("cmdstat_".length)] = calls / n;
    total += calls;
  }
  const ms = b.t - a.t;
  const perMessage = (key: "nodes" | "redis") => (b[key] - a[key]) * 1000 / n;
  const percent = (key: "core0" | "core1" | "gen") => ((b[key] - a[key]) / ms) * 100;
  return {
    figures: {
      [`${prefix}Rate`]: r.rate,
      [`${prefix}P50`]: r.latency.p50,
      [`${prefix}P99`]: r.latency.p99,
      [`${prefix}Max`]: r.latency.max,
      [`${prefix}AckP50`]: r.ackMs.p50,
      [`${prefix}AckP99`]: r.ackMs.p99,
      [`${prefix}Commands`]: total / n,
      // The bench's own INFO at the second mark is one read inside the interval.
      [`${prefix}Reads`]: (delta("total_reads_processed") - 1) / n,
      [`${prefix}NodesCpuUs`]: perMessage("nodes"),
      [`${prefix}RedisCpuUs`]: perMessage("redis"),
      [`${prefix}Core0`]: percent("core0"),
      [`${prefix}Core1`]: percent("core1"),
      [`${prefix}GenCpu`]: percent("gen"),
    },
    commands,
  };
}

export interface ClusterSize {
  clients: number;
  /** Steady phase: messages per second offered, in all. */
  rate: number;
  /** Saturated phase: sends in flight per client. */
  window: number;
  warmMs: number;
  measureMs: number;
  /** Steady phase: how long MONITOR counts requests, after the measured interval. */
  monitorMs: number;
  /** After each phase: how long the last answers and deliveries may take. */
  drainMs: number;
}

/**
 * The nodes' requests to Redis per message (round trips), by command name. MONITOR tells which
 * commands are requests; but it slows Redis down, and so changes how many messages a group
 * commit takes. So a command that no script runs (EVALSHA, EVAL, PUBLISH; a MULTI … EXEC block
 * by its EXEC) is counted from `INFO commandstats` over the measured interval, `delivered`
 * messages; one that scripts run too (GET) by MONITOR's count of requests, over `sent` messages.
 */
function requestsPerMessage(
  seen: MonitorCounts,
  sent: number,
  a: Snapshot,
  b: Snapshot,
  delivered: number,
): Record<string, number> {
  return Object.fromEntries(
    Object.entries(seen.requests).map(([name, count]) => {
      const stat = `cmdstat_${name === "multi" ? "exec" : name}`;
      if (seen.scripted[name] || b.info[stat] === undefined) return [name, count / sent];
      return [name, (b.info[stat] - (a.info[stat] ?? 0)) / delivered];
    }),
  );
}

/** How an arm lays the cluster out. */
export interface ClusterLayout {
  /** Gateway nodes on the one Redis. */
  nodes: number;
  /**
   * Node i > 0 on the generator's core (one core per node) instead of all on the server core
   * with Redis.
   */
  spread?: boolean;
}

/**
 * One run of the cluster scenario: a fresh Redis, the layout's gateways on it (environment
 * `env` plus the cluster's), one generator; all stopped at the end.
 */
export async function runCluster(
  layout: ClusterLayout,
  size: ClusterSize,
  env: Record<string, string>,
): Promise<Measured> {
  const binary = redisServerBinary();
  if (binary === null) throw new Error("redis-server not found");
  const redis = await startRedis(binary, freePort());
  const servers: Server[] = [];
  let gen: Generator | undefined;
  try {
    const pins = Array.from(
      { length: layout.nodes },
      (_, i) => layout.spread && i > 0 ? pinning.generator : pinning.server,
    );
    const started = await Promise.allSettled(pins.map((pin, i) =>
      startServer("gateway", {
        env: { ...env, STORE: "redis", REDIS_URL: redis.url, NODE_ID: `bench-node-${i}` },
        pin,
      })
    ));
    for (const s of started) if (s.status === "fulfilled") servers.push(s.value);
    const failed = started.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
    gen = new Generator({
      scenario: "cluster",
      host: "127.0.0.1",
      port: servers[0].port,
      ports: servers.map((s) => s.port),
      kind: "gateway",
      users: size.clients,
      ...size,
    }, 5 * 60_000);
    await gen.next("setup_done");
    const pids = [...servers.map((s) => s.pid), redis.pid, gen.pid];
    const onCore0 = [
      redis.pid,
      ...servers.filter((_, i) => pins[i] === pinning.server)
        .map((s) => s.pid),
    ];
    const onCore1 = pids.filter((pid) => !onCore0.includes(pid));
    const sum = (of: number[]) => of.reduce((total, pid) => total + cpuMs(pid), 0);
    const [other0, t0] = [otherCpuMs(pids), performance.now()];
    const snapshot = async (): Promise<Snapshot> => ({
      info: await redis.info(),
      t: performance.now(),
      nodes: sum(servers.map((server) => server.pid)),
      redis: cpuMs(redis.pid),
      gen: cpuMs(gen!.pid),
      core0: sum(onCore0),
      core1: sum(onCore1),
    });
    // The generator's marks, in its order: at each, the reading, then its go-ahead.
    const marks: Record<string, Snapshot> = {};
    let monitor: { stop(): Promise<MonitorCounts> } | undefined;
    let seen: MonitorCounts = { requests: {}, scripted: {} };
    for (let i = 0; i < 6; i++) {
      const { at } = await gen.next("mark") as { at: string };
      if (at === "steady_extra_start") monitor = await redis.monitor();
      else if (at === "steady_extra_end") seen = await monitor!.stop();
      else marks[at] = await snapshot();
      await gen.go();
    }
    const result = await gen.next("result") as {
      steady: PhaseResult & { extraSent: number };
      saturated: PhaseResult;
    };
    const other = otherCpuMs(pids) - other0;
    const steady = phaseFigures("steady", result.steady, marks.steady_start, marks.steady_end);
    const saturated = phaseFigures(
      "sat",
      result.saturated,
      marks.saturated_start,
      marks.saturated_end,
    );
    const requestsByName = requestsPerMessage(
      seen,
      result.steady.extraSent,
      marks.steady_start,
      marks.steady_end,
      result.steady.delivered,
    );
    return {
      nodes: layout.nodes,
      clients: size.clients,
      offered: size.rate,
      window: size.window,
      ...steady.figures,
      ...saturated.figures,
      steadyRequests: Object.values(requestsByName).reduce((a, b) => a + b, 0),
      steadyRequestsByName: requestsByName,
      steadyCommandsByName: steady.commands,
      satCommandsByName: saturated.commands,
      otherCpu: (other / (performance.now() - t0)) * 100,
    };
  } finally {
    await gen?.stop();
    await Promise.all(servers.map((s) => s.stop()));
    await redis.stop();
  }
}
