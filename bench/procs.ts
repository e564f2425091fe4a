/**
 * Processes of a bench run: the server under test and the load generator, each pinned to
 * its own core where the machine allows, plus what the bench reads off a running server
 * (CPU time and RSS from /proc, JS heap after GC through the V8 inspector).
 */

const ROOT = new URL("../", import.meta.url).pathname;
const DENO = Deno.execPath();

/** The servers under test. */
export type ServerName = "gateway" | "raw_deno" | "node_ws" | "socket_io";

/** `taskset -c N` prefixes when there are two cores or more and taskset is installed. */
export const pinning: { server: string[]; generator: string[] } = await (async () => {
  const cores = navigator.hardwareConcurrency;
  const hasTaskset = await new Deno.Command("taskset", {
    args: ["-V"],
    stdout: "null",
  })
    .output().then((o) => o.success, () => false);
  return cores >= 2 && hasTaskset
    ? { server: ["taskset", "-c", "0"], generator: ["taskset", "-c", "1"] }
    : { server: [], generator: [] };
})();

/** Children still running, killed if the bench itself is interrupted (`track` adds one). */
const running = new Set<Deno.ChildProcess>();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    for (const child of running) child.kill("SIGKILL");
    Deno.exit(130);
  });
}
export function track(child: Deno.ChildProcess): Deno.ChildProcess {
  running.add(child);
  child.status.finally(() => running.delete(child));
  return child;
}

/** A free loopback port (bound and released at once). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function* lines(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    for (let i = rest.indexOf("\n"); i >= 0; i = rest.indexOf("\n")) {
      yield rest.slice(0, i);
      rest = rest.slice(i + 1);
    }
  }
  if (rest) yield rest;
}

/** Keeps the last lines of a stream, for error messages, and calls `onLine` for each. */
function drain(
  stream: ReadableStream<Uint8Array>,
  tail: string[],
  onLine?: (l: string) => void,
) {
  (async () => {
    for await (const line of lines(stream)) {
      tail.push(line);
      if (tail.length > 40) tail.shift();
      onLine?.(line);
    }
  })().catch(() => {});
}

/** The argv that starts a server (without the pinning prefix). */
export function serverArgv(name: ServerName, inspectPort?: number): string[] {
  const inspect = inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : [];
  switch (name) {
    case "gateway":
      return [
        DENO,
        "run",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        "--allow-write",
        ...inspect,
        "gateway/main.ts",
        "--dev",
      ];
    case "raw_deno":
      return [
        DENO,
        "run",
        "--allow-net",
        "--allow-env",
        ...inspect,
        "bench/servers/raw_deno.ts",
      ];
    case "node_ws":
      return ["node", ...inspect, "bench/servers/node_ws.mjs"];
    case "socket_io":
      return ["node", ...inspect, "bench/servers/socket_io.mjs"];
  }
}

export interface Server {
  name: ServerName;
  pid: number;
  port: number;
  inspectPort?: number;
  stop(): Promise<void>;
}

/**
 * Starts a server and waits for its `listening on http://` line. `root` is the checkout it runs
 * from (this one by default; another commit's worktree for a before/after arm); `pin` the
 * pinning prefix (the server core's by default).
 */
export async function startServer(
  name: ServerName,
  { inspect = false, env = {}, root = ROOT, pin = pinning.server }: {
    inspect?: boolean;
    env?: Record<string, string>;
    root?: string;
    pin?: string[];
  } = {},
): Promise<Server> {
  const port = freePort();
  const inspectPort = inspect ? freePort() : undefined;
  const [cmd, ...args] = [...pin, ...serverArgv(name, inspectPort)];
  const child = track(
    new Deno.Command(cmd, {
      args,
      cwd: root,
      env: { PORT: String(port), HOST: "127.0.0.1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  const tail: string[] = [];
  const ready = Promise.withResolvers<void>();
  const onLine = (line: string) => line.includes("listening on http://") && ready.resolve();
  drain(child.stdout, tail, onLine);
  drain(child.stderr, tail, onLine);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    ready.reject(new Error(`${name} exited (${s.code}):\n${tail.join("\n")}`));
  });
  const timer = setTimeout(
    () => ready.reject(new Error(`${name} not ready:\n${tail.join("\n")}`)),
    60_000,
  );
  const stop = async () => {
    if (!exited) child.kill("SIGTERM");
    const kill = setTimeout(() => !exited && child.kill("SIGKILL"), 5_000);
    await status;
    clearTimeout(kill);
  };
  try {
    await ready.promise;
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { name, pid: child.pid, port, inspectPort, stop };
}

/** A running load generator (bench/load/gen.mjs) and its stream of JSON events. */
export class Generator {
  #child: Deno.ChildProcess;
  readonly pid: number;
  #events: AsyncGenerator<string>;
  #tail: string[] = [];
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #timer: ReturnType<typeof setTimeout>;

  constructor(config: Record<string, unknown>, timeoutMs: number) {
    const [cmd, ...args] = [
      ...pinning.generator,
      "node",
      "bench/load/gen.mjs",
      JSON.stringify(config),
    ];
    this.#child = track(
      new Deno.Command(cmd, {
        args,
        cwd: ROOT,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    this.pid = this.#child.pid;
    this.#events = lines(this.#child.stdout);
    drain(this.#child.stderr, this.#tail);
    this.#stdin = this.#child.stdin.getWriter();
    this.#timer = setTimeout(() => this.#child.kill("SIGKILL"), timeoutMs);
  }

  /** Waits for `event`; throws on the generator's `error` event or exit. */
  async next(event: string): Promise<Record<string, unknown>> {
    for (;;) {
      const { value, done } = await this.#events.next();
      if (done) {
        throw new Error(
          `generator exited before "${event}":\n${this.#tail.join("\n")}`,
        );
      }
      const data = JSON.parse(value);
      if (data.event === "error") throw new Error(`generator: ${data.message}`);
      if (data.event === event) return data;
    }
  }

  /** Lets the generator go on to its next stage. */
  async go(): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode("go\n"));
  }

  async stop(): Promise<void> {
    clearTimeout(this.#timer);
    await this.#stdin.close().catch(() => {});
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.#child.status;
    for await (const _ of this.#events) { /* drain */ }
  }
}

/** User + system CPU time of a process, in ms (clock ticks are 10 ms on Linux). */
export function cpuMs(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * CPU time (user + system, ms) spent by processes other than `pids` and this one: how much
 * the rest of the machine got in the way of a run.
 */
export function otherCpuMs(pids: number[]): number {
  const [line] = Deno.readTextFileSync("/proc/stat").split("\n", 1);
  // Loopback traffic is processed in softirq context, yet charged to the process's stime.
  const [user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).slice(
    1,
    8,
  ).map(Number);
  const ours = [...pids, Deno.pid].reduce((sum, pid) => sum + cpuMs(pid), 0);
  return (user + nice + system + irq + softirq) * 10 - ours;
}

/** A `/proc/<pid>/status` size field (VmRSS, VmHWM) in bytes. */
export function procBytes(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(status.match(new RegExp(`${field}:\\s+(\\d+) kB`))![1]) * 1024;
}

/** Resets the peak RSS (VmHWM) of a process to its current RSS. */
export function resetPeak(pid: number): void {
  Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
}

/** Runs a full GC in the server through the V8 inspector; returns the used JS heap in bytes. */
export async function heapAfterGc(inspectPort: number): Promise<number> {
  const [target] = await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json();
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const replies = new Map<number, (result: { usedSize?: number }) => void>();
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    replies.get(msg.id)?.(msg.result);
  };
  let id = 0;
  const call = (method: string) =>
    new Promise<{ usedSize?: number }>((resolve) => {
      replies.set(++id, resolve);
      ws.send(JSON.stringify({ id, method }));
    });
  await call("HeapProfiler.collectGarbage");
  await call("HeapProfiler.collectGarbage");
  const { usedSize } = await call("Runtime.getHeapUsage");
  const closed = new Promise((resolve) => (ws.onclose = resolve));
  ws.close();
  await closed;
  return usedSize!;
}

/** CPU time (ms) the whole machine spent busy so far, from /proc/stat. */
function machineBusyMs(): number {
  const [line] = Deno.readTextFileSync("/proc/stat").split("\n", 1);
  const [user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).slice(1, 8)
    .map(Number);
  return (user + nice + system + irq + softirq) * 10;
}

/**
 * Waits until the rest of the machine takes less than `maxPercent` of one core over a
 * `sampleMs` window, or `maxWaitMs` have passed (other work on a shared machine skews a run
 * more than anything the bench measures). Returns how long it waited and the last sample.
 */
export async function awaitQuiet(
  { maxPercent = 20, sampleMs = 500, maxWaitMs = 30_000 } = {},
): Promise<{ ms: number; busyPercent: number }> {
  const start = performance.now();
  for (;;) {
    const [busy0, own0, t0] = [machineBusyMs(), cpuMs(Deno.pid), performance.now()];
    await new Promise((resolve) => setTimeout(resolve, sampleMs));
    const others = machineBusyMs() - busy0 - (cpuMs(Deno.pid) - own0);
    const busyPercent = (others / (performance.now() - t0)) * 100;
    const ms = performance.now() - start;
    if (busyPercent < maxPercent || ms >= maxWaitMs) return { ms, busyPercent };
  }
}
