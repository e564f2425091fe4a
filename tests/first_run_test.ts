/**
 * The first run, as the README gives it: `deno task serve` on a machine whose Deno cache is
 * empty, then the first calls of the tour. What the newcomer reads is the banner; nothing
 * else they must decode (a build-script box, a runtime deprecation warning) may appear.
 */
import assert from "node:assert/strict";
import { DEV_APP } from "../gateway/config.ts";
import { collectLines, delay, freePort } from "./support/process.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** Lines Deno itself prints while it fills an empty cache: progress, not something to decode. */
const CACHE_PROGRESS = /^(Download|Task|Check|Compile) /;

/** What a newcomer must not have to decode. */
const NOISE = [
  /warning/i,
  /ignored build scripts/i,
  /scarf/i,
  /request\.signal/,
  /legacy/i,
  /deprecat/i,
  /^\s+at /, // a stack trace
  /[╭│╰]/,
];

interface ServeRun {
  lines: string[];
  url: string;
}

/** `deno task serve` with this environment; `calls` runs once the banner is out. */
async function serve(
  env: Record<string, string>,
  calls: (url: string) => Promise<void>,
): Promise<ServeRun> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "serve"],
    cwd: ROOT,
    env: { NO_COLOR: "1", PORT: String(port), ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const drained = Promise.all([
    collectLines(child.stdout, lines),
    collectLines(child.stderr, lines),
  ]);
  const url = `http://127.0.0.1:${port}`;
  try {
    const deadline = Date.now() + 180_000; // an empty cache downloads every npm package first
    while (!lines.some((l) => l.startsWith("    users "))) {
      if (Date.now() > deadline) throw new Error(`no banner:\n${lines.join("\n")}`);
      await delay(100);
    }
    await calls(url);
    await delay(300); // a warning is printed when the response completes
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await drained;
  }
  return { lines, url };
}

/** A POST with no body and no content-length, as `curl -XPOST` sends it. */
async function bodylessPost(url: string, path: string, credential: string): Promise<string> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    await conn.write(new TextEncoder().encode(
      `POST ${path} HTTP/1.1\r\nhost: ${hostname}:${port}\r\n` +
        `authorization: Bearer ${credential}\r\nconnection: close\r\n\r\n`,
    ));
    let answer = "";
    for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) answer += chunk;
    return answer;
  } catch (error) {
    conn.close();
    throw error;
  }
}

/** The tour's first calls: login, then the first Bearer calls (a GET and bodyless POSTs). */
async function firstCalls(url: string): Promise<void> {
  const login = await fetch(`${url}/v1/apps/${DEV_APP.appId}/login`, {
    method: "POST",
    body: JSON.stringify({ uid: "superhero1", authKey: DEV_APP.authKey, mode: "manual" }),
  });
  assert.equal(login.status, 200);
  const { session } = await login.json();
  const status = await fetch(`${url}/v1/session`, {
    headers: { authorization: `Bearer ${session.credential}` },
  });
  assert.equal(status.status, 200);
  await status.body?.cancel();
  const ping = await bodylessPost(url, "/v1/session/ping", session.credential);
  assert.match(ping, /^HTTP\/1\.1 409 /, "manual mode, not connected: NO_WEBSOCKET_CONNECTION");
  const logout = await bodylessPost(url, "/v1/session/logout", session.credential);
  assert.match(logout, /^HTTP\/1\.1 200 /);
}

/** The banner as the README shows it (the block after "`serve` binds"), `...` lines aside. */
async function readmeBanner(): Promise<string[]> {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const block = /`serve` binds[^\n]*\n\n```\n([\s\S]*?)\n```/.exec(readme);
  assert.ok(block, "README.md shows the banner of `serve`");
  return block[1].split("\n").filter((line) => line.trim() !== "...");
}

async function assertNothingToDecode(run: ServeRun, what: string): Promise<void> {
  const shown = run.lines.filter((line) => !CACHE_PROGRESS.test(line));
  const noisy = shown.filter((line) => NOISE.some((pattern) => pattern.test(line)));
  assert.deepEqual(noisy, [], `${what} printed:\n${run.lines.join("\n")}`);
  // Every line the README shows is printed as written (on this run's port).
  for (const line of await readmeBanner()) {
    const expected = line.replaceAll("127.0.0.1:8000", new URL(run.url).host);
    assert.ok(shown.includes(expected), `"${expected}" is not in:\n${shown.join("\n")}`);
  }
}

Deno.test({
  name: "first run: `deno task serve` on an empty Deno cache shows the banner and no warnings",
  // The empty cache is filled from the npm registry: the first run takes its download time.
  sanitizeResources: false,
  fn: async () => {
    const denoDir = await Deno.makeTempDir({ prefix: "first_run_deno_dir_" });
    const kvDir = await Deno.makeTempDir({ prefix: "first_run_kv_" });
    try {
      const env = { DENO_DIR: denoDir, KV_PATH: `${kvDir}/gateway.kv` };
      await assertNothingToDecode(await serve(env, firstCalls), "the first `deno task serve`");
      // The edge transport serves with Deno.serve, whose request.signal warns when touched.
      await assertNothingToDecode(
        await serve({ ...env, TRANSPORT: "deno" }, firstCalls),
        "`TRANSPORT=deno deno task serve`",
      );
    } finally {
      await Deno.remove(denoDir, { recursive: true });
      await Deno.remove(kvDir, { recursive: true });
    }
  },
});
