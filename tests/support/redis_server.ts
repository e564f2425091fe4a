/**
 * A real `redis-server` for tests: started from the PATH on a free loopback port, with its own
 * temporary directory, no RDB snapshots, and optionally the append-only file with an fsync per
 * write (what makes an acknowledged write survive `kill -9`). `stop()`, `kill()` and `restart()`
 * (same port, same directory) let a test take Redis away and bring it back.
 *
 * Redis tests are declared with `redisTest`: where `redis-server` is missing they are skipped
 * with a warning that says so, except in CI (`CI=true`), where a missing binary fails them (CI
 * installs it: .ci/run).
 */
import { delay, freePort } from "./process.ts";

export interface RedisServerOptions {
  /** `appendonly yes` with `appendfsync always` (default: no persistence at all). */
  appendOnly?: boolean;
  /** Data directory (default: a new temporary one, removed by `stop()`). */
  dir?: string;
}

export interface RedisServer {
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** The server's process id (SIGSTOP makes a Redis that stops answering). */
  readonly pid: number;
  /** Stops it (SIGTERM: Redis flushes its append-only file and exits) and removes its own dir. */
  stop(): Promise<void>;
  /** `kill -9`: nothing is flushed that was not already. */
  kill(): Promise<void>;
  /** Starts it again on the same port and directory (stopping it first if it runs). */
  restart(): Promise<void>;
  /** SIGKILL without waiting, and its own dir removed: for the `unload` event, which cannot wait. */
  abandon(): void;
}

/** The `redis-server` on the PATH, or null. */
export function redisBinary(): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    const path = `${dir}/redis-server`;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not in this directory.
    }
  }
  return null;
}

const inCi = Deno.env.get("CI") === "true";
let warned = false;

/**
 * Declares a test that needs `redis-server`: skipped, with a warning, where it is missing;
 * failed instead in CI, which must run it.
 */
export function redisTest(name: string, fn: () => Promise<void>): void {
  const binary = redisBinary();
  if (binary === null && !inCi && !warned) {
    warned = true;
    console.warn(
      "SKIPPING Redis tests: redis-server is not on the PATH (apt-get install redis-server)",
    );
  }
  Deno.test({
    name,
    ignore: binary === null && !inCi,
    async fn() {
      if (binary === null) throw new Error("redis-server is not on the PATH, and CI must run this");
      await fn();
    },
  });
}

export async function startRedis(options: RedisServerOptions = {}): Promise<RedisServer> {
  const binary = redisBinary();
  if (binary === null) throw new Error("redis-server is not on the PATH");
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "redis_test_" });
  const port = freePort();
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    options.appendOnly ? "yes" : "no",
    "--appendfsync",
    "always",
    "--dir",
    dir,
    "--logfile",
    `${dir}/redis.log`,
  ];
  let child: Deno.ChildProcess | null = null;
  let exited: Promise<Deno.CommandStatus> | null = null;

  const spawn = async () => {
    child = new Deno.Command(binary, { args, stdin: "null", stdout: "null", stderr: "null" })
      .spawn();
    exited = child.status;
    await untilAnswering(port, exited, dir);
  };
  const signal = async (name: Deno.Signal) => {
    if (child === null || exited === null) return;
    try {
      child.kill(name);
    } catch {
      // Exited already.
    }
    await exited;
    child = null;
    exited = null;
  };

  await spawn();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    get pid() {
      if (child === null) throw new Error("redis-server is not running");
      return child.pid;
    },
    async stop() {
      await signal("SIGTERM");
      if (ownsDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
    kill: () => signal("SIGKILL"),
    async restart() {
      await signal("SIGTERM");
      await spawn();
    },
    abandon() {
      try {
        child?.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      if (ownsDir) {
        try {
          Deno.removeSync(dir, { recursive: true });
        } catch {
          // Gone already.
        }
      }
    },
  };
}

/**
 * One server for a whole test file, or null where `redis-server` is missing. Call it at the top
 * level of the file (`await`): a process started inside a test would have to end in that test
 * (the resource sanitizer). It is killed when the file's tests are done.
 */
export async function sharedRedis(options: RedisServerOptions = {}): Promise<RedisServer | null> {
  if (redisBinary() === null) return null;
  const server = await startRedis(options);
  globalThis.addEventListener("unload", () => server.abandon());
  return server;
}

/** Waits until the server answers PING with PONG (not LOADING); fails if it exits first. */
async function untilAnswering(
  port: number,
  exited: Promise<Deno.CommandStatus>,
  dir: string,
): Promise<void> {
  let status: Deno.CommandStatus | null = null;
  exited.then((s) => status = s, () => {});
  const until = performance.now() + 15_000;
  while (performance.now() < until) {
    if (status !== null) break;
    if (await answersPing(port)) return;
    await delay(20);
  }
  const log = await Deno.readTextFile(`${dir}/redis.log`).catch(() => "(no log)");
  throw new Error(
    `redis-server on port ${port} ${status === null ? "did not answer" : "exited"}:\n` +
      log.split("\n").slice(-15).join("\n"),
  );
}

async function answersPing(port: number): Promise<boolean> {
  let conn: Deno.TcpConn | null = null;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode("PING\r\n"));
    const buffer = new Uint8Array(64);
    const read = await conn.read(buffer);
    return read !== null && new TextDecoder().decode(buffer.subarray(0, read)).startsWith("+PONG");
  } catch {
    return false;
  } finally {
    conn?.close();
  }
}
