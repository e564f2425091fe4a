/**
 * A gateway as a real process (`deno run gateway/main.ts --dev`), for tests that must kill it
 * (`kill -9`), measure its memory, or run it under a small open-file limit. The process gets a
 * free loopback port and, unless told otherwise, its own Deno KV file in a temporary directory
 * that outlives a restart (`restart()` starts a new process on the same store).
 */
import { DEV_APP } from "../../gateway/config.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

export interface GatewayProcessOptions {
  /** Extra environment (strings, as a shell would pass them). */
  env?: Record<string, string>;
  /** Reuse this KV file (a restart on the same store); default: a new temporary one. */
  kvPath?: string;
  /** Run under `ulimit -n <openFiles>` (soft and hard), through `sh`. */
  openFiles?: number;
  /** HOST of the process; null leaves it unset (the gateway's own default). Default 127.0.0.1. */
  host?: string | null;
  /**
   * The module the process runs instead of gateway/main.ts, from the repository root (a wrapper
   * that injects a fault, then imports gateway/main.ts).
   */
  main?: string;
}

/** `deno` arguments of the gateway process, as `deno task serve` runs it (from the repository root). */
const GATEWAY_MAIN_ARGS = [
  "run",
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-write",
  "gateway/main.ts",
  "--dev",
];

/** Runs the gateway process until it exits by itself (a start-up refusal): its code and output. */
export async function runGatewayToExit(
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: GATEWAY_MAIN_ARGS,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();
  return { code, stdout: decode(stdout), stderr: decode(stderr) };
}

export class GatewayProcess implements AsyncDisposable {
  readonly url: string;
  readonly wsUrl: string;
  readonly port: number;
  readonly kvPath: string;
  readonly #child: Deno.ChildProcess;
  readonly #ownsDir: string | null;
  readonly #options: GatewayProcessOptions;
  /** Everything the process wrote, stdout and stderr interleaved by line. */
  readonly output: string[] = [];
  readonly exited: Promise<Deno.CommandStatus>;

  private constructor(
    child: Deno.ChildProcess,
    port: number,
    kvPath: string,
    ownsDir: string | null,
    options: GatewayProcessOptions,
    output: string[],
    drained: Promise<unknown>,
  ) {
    this.#child = child;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.wsUrl = `ws://127.0.0.1:${port}/v1/ws`;
    this.kvPath = kvPath;
    this.#ownsDir = ownsDir;
    this.#options = options;
    this.output = output;
    // Its output is read to the end before anyone learns that it exited (no leaked streams).
    this.exited = child.status.then(async (status) => {
      this.#exited = true;
      await drained;
      return status;
    });
  }

  /** Starts a gateway process and waits until it answers `/healthz`. */
  static async start(options: GatewayProcessOptions = {}): Promise<GatewayProcess> {
    let ownsDir: string | null = null;
    let kvPath = options.kvPath;
    if (kvPath === undefined) {
      ownsDir = await Deno.makeTempDir({ prefix: "gateway_proc_" });
      kvPath = `${ownsDir}/gateway.kv`;
    }
    const port = freePort();
    const main = options.main;
    const mainArgs = main === undefined
      ? GATEWAY_MAIN_ARGS
      : GATEWAY_MAIN_ARGS.map((arg) => arg === "gateway/main.ts" ? main : arg);
    const deno = [Deno.execPath(), ...mainArgs];
    const quoted = deno.map((arg) => `'${arg.replaceAll("'", `'\\''`)}'`).join(" ");
    const [command, args] = options.openFiles === undefined
      ? [deno[0], deno.slice(1)]
      : ["sh", ["-c", `ulimit -n ${options.openFiles} && exec ${quoted}`]];
    const child = new Deno.Command(command, {
      args,
      cwd: ROOT,
      env: {
        PORT: String(port),
        ...(options.host === null ? {} : { HOST: options.host ?? "127.0.0.1" }),
        KV_PATH: kvPath,
        NO_COLOR: "1",
        ...(options.openFiles === undefined ? {} : { OPEN_FILE_LIMIT: String(options.openFiles) }),
        ...options.env,
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output: string[] = [];
    const drained = Promise.all([
      collectLines(child.stdout, output),
      collectLines(child.stderr, output),
    ]);
    const proc = new GatewayProcess(child, port, kvPath, ownsDir, options, output, drained);
    await proc.#waitHealthy();
    return proc;
  }

  get pid(): number {
    return this.#child.pid;
  }

  /**
   * Resident memory of the process, in bytes, from `ps` (Deno lets a program read /proc only
   * with --allow-all; the test task has --allow-run).
   */
  rss(): number {
    const { stdout } = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(this.pid)] })
      .outputSync();
    return Number(new TextDecoder().decode(stdout).trim()) * 1024;
  }

  /** Whether the process is still running. */
  async alive(): Promise<boolean> {
    // Let an exit that has already happened be noticed first.
    await Promise.resolve();
    return !this.#exited;
  }
  #exited = false;

  /** `kill -9`: no shutdown, no final write, sockets dropped by the kernel. */
  async crash(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.exited;
  }

  /** `SIGTERM`: the graceful stop (1012 to every socket, state written). */
  async terminate(): Promise<Deno.CommandStatus> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    return await this.exited;
  }

  /** A new process on the same store (after `crash` or `terminate`). */
  restart(options: Omit<GatewayProcessOptions, "kvPath"> = {}): Promise<GatewayProcess> {
    return GatewayProcess.start({ ...this.#options, ...options, kvPath: this.kvPath });
  }

  /** Removes the temporary store directory (when this process created it). */
  async cleanup(): Promise<void> {
    if (this.#ownsDir !== null) await Deno.remove(this.#ownsDir, { recursive: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (await this.alive()) await this.crash();
  }

  async #waitHealthy(): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (!(await this.alive())) {
        throw new Error(`gateway exited at start-up:\n${this.output.join("\n")}`);
      }
      try {
        const res = await fetch(`${this.url}/healthz`);
        await res.body?.cancel();
        if (res.ok) return;
      } catch { /* not listening yet */ }
      await delay(50);
    }
    await this.crash();
    throw new Error(`gateway did not become healthy:\n${this.output.join("\n")}`);
  }
}

/** Logs in a dev user over HTTP; returns its credential and session id. */
export async function devLogin(
  url: string,
  uid = "superhero1",
  mode: "auto" | "manual" = "manual",
): Promise<{ credential: string; sessionId: string }> {
  const res = await fetch(`${url}/v1/apps/${DEV_APP.appId}/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ uid, authKey: DEV_APP.authKey, mode }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`login failed: ${JSON.stringify(body)}`);
  return { credential: body.session.credential, sessionId: body.session.sessionId };
}

export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Lines of a process's output kept (the first ones, and the latest): a process that logs in a
 * loop must fail its test, not fill the test runner's memory.
 */
const KEPT_LINES = 5_000;

/** Reads a process's output stream to its end, pushing each line into `into`. */
export async function collectLines(
  stream: ReadableStream<Uint8Array>,
  into: string[],
): Promise<void> {
  let rest = "";
  const push = (line: string) => {
    // Past the bound, the middle goes: the start-up lines and the latest ones stay.
    if (into.length >= KEPT_LINES) into.splice(KEPT_LINES / 2, 1);
    into.push(line);
  };
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      for (let i = rest.indexOf("\n"); i >= 0; i = rest.indexOf("\n")) {
        push(rest.slice(0, i));
        rest = rest.slice(i + 1);
      }
    }
  } catch { /* the process died */ }
  if (rest !== "") push(rest);
}
