/**
 * Two nodes behind nginx, with the configuration docs/cluster.md gives (read from the doc, so
 * the doc's config is the one that runs): a client logs in and connects through the balancer,
 * the node holding its user is killed (`kill -9`), and the client, reconnecting through the
 * balancer as the SDK does, resumes at the other node with nothing lost; the user is offline
 * for everyone within the bound meanwhile.
 *
 * nginx is a Debian package (`nginx`); .ci/run installs it. Where it is missing the test is
 * skipped with a warning, except in CI, where it fails.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import type { SendMessageReply, ServerFrameOf } from "../contract/mod.ts";
import { DEV_APP } from "../gateway/config.ts";
import { RedisKeys } from "../gateway/store/redis_keys.ts";
import { TestSocket } from "./support/harness.ts";
import { delay, freePort } from "./support/process.ts";
import { redisBinary } from "./support/redis_server.ts";
import { TwoNodes } from "./support/two_nodes.ts";

const TTL_MS = 1_500;
const HEARTBEAT_MS = 250;

function nginxBinary(): string | null {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin"];
  for (const dir of dirs) {
    if (dir === "") continue;
    try {
      if (Deno.statSync(`${dir}/nginx`).isFile) return `${dir}/nginx`;
    } catch {
      // Not here.
    }
  }
  return null;
}

/** The `nginx` block of docs/cluster.md, pointed at these ports. */
async function documentedConfig(listen: number, upstreams: [number, number]): Promise<string> {
  const doc = await Deno.readTextFile(new URL("../docs/cluster.md", import.meta.url));
  const block = /```nginx\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block !== undefined, "docs/cluster.md has an nginx block");
  assert.ok(block.includes("listen 8080;") && block.includes("127.0.0.1:8001"));
  return block
    .replace("listen 8080;", `listen 127.0.0.1:${listen};`)
    .replace("127.0.0.1:8001", `127.0.0.1:${upstreams[0]}`)
    .replace("127.0.0.1:8002", `127.0.0.1:${upstreams[1]}`);
}

/** nginx in the foreground, one process, everything under `dir`. */
async function startNginx(binary: string, http: string, port: number) {
  const dir = await Deno.makeTempDir({ prefix: "nginx_test_" });
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((kind) => `${kind}_temp_path ${dir}/${kind};`).join("\n  ");
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    `daemon off;\nmaster_process off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\n` +
      `events { worker_connections 1024; }\n` +
      `http {\n  access_log off;\n  ${temp}\n${http}\n}\n`,
  );
  const child = new Deno.Command(binary, {
    args: ["-p", dir, "-c", `${dir}/nginx.conf`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const started = Date.now();
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      break;
    } catch {
      if (Date.now() - started > 10_000) throw new Error("nginx did not start listening");
      await delay(50);
    }
  }
  return {
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await child.stderr.cancel();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function post<T>(url: string, path: string, body: unknown, headers = {}) {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() as T };
}

/** Retries what a client retries: a 503 while the cluster takes a dead node's users over. */
async function untilOk<T>(ms: number, attempt: () => Promise<T | null>): Promise<T> {
  const started = Date.now();
  for (;;) {
    const result = await attempt().catch(() => null);
    if (result !== null) return result;
    if (Date.now() - started > ms) throw new Error(`not within ${ms} ms`);
    await delay(100);
  }
}

const binary = nginxBinary();
const inCi = Deno.env.get("CI") === "true";
if ((binary === null || redisBinary() === null) && !inCi) {
  console.warn("SKIPPING the nginx test: nginx or redis-server is missing (apt-get install nginx)");
}

Deno.test({
  name:
    "cluster behind nginx (docs/cluster.md's config): kill -9 of the node holding a user; the client resumes through the balancer at the other node with nothing lost",
  ignore: (binary === null || redisBinary() === null) && !inCi,
  async fn() {
    if (binary === null) throw new Error("nginx is not installed, and CI must run this");
    await using cluster = await TwoNodes.start({
      appendOnly: true,
      ids: ["node-a", "node-b"],
      env: {
        NODE_TTL_MS: String(TTL_MS),
        NODE_HEARTBEAT_MS: String(HEARTBEAT_MS),
        CLUSTER_REQUEST_TIMEOUT_MS: "500",
        LOG_LEVEL: "warn",
      },
    });
    const nodes = [cluster.a, cluster.b];
    const listen = freePort();
    const nginx = await startNginx(
      binary,
      await documentedConfig(listen, [nodes[0].port, nodes[1].port]),
      listen,
    );
    const keys = new Redis(cluster.redis.url);
    try {
      const apiKey = { apikey: DEV_APP.apiKey };
      const send = (text: string) =>
        untilOk(10_000, async () => {
          const res = await post<SendMessageReply>(
            nginx.url,
            `/v1/apps/${DEV_APP.appId}/messages`,
            {
              to: ["superhero1"],
              message: { kind: "text", text },
            },
            apiKey,
          );
          return res.status === 200 ? res.body : null;
        });
      const login = await post<{ session: { credential: string } }>(
        nginx.url,
        `/v1/apps/${DEV_APP.appId}/login`,
        { uid: "superhero1", authKey: DEV_APP.authKey, mode: "auto" },
      );
      assert.equal(login.status, 200, JSON.stringify(login.body));
      const { credential } = login.body.session;
      const first = await TestSocket.connect(nginx, credential);
      await send("one");
      await send("two");
      const seen: ServerFrameOf<"message">[] = [
        await first.socket.until("message"),
        await first.socket.until("message"),
      ];
      const epoch = first.connected.stream.epoch;

      // The node holding the user (its socket brought it there) dies.
      const owner = await keys.get(new RedisKeys("lg:").owner(DEV_APP.appId, "superhero1"));
      const holder = nodes.find((_node, i) => owner?.startsWith(`node-${"ab"[i]} `));
      assert.ok(holder !== undefined, `the user is held by a node: ${owner}`);
      const other = nodes.find((n) => n !== holder)!;
      await holder.crash();
      await first.socket.closed;

      // Offline for everyone within the bound, as seen through the balancer.
      const killedAt = Date.now();
      await untilOk(TTL_MS + 3_000, async () => {
        const res = await fetch(
          `${nginx.url}/v1/apps/${DEV_APP.appId}/users/superhero1/presence`,
          { headers: apiKey },
        );
        const body = await res.json() as { online?: boolean };
        return res.status === 200 && body.online === false ? true : null;
      });
      const offlineAfter = Date.now() - killedAt;

      // Sent after the death (retried while the takeover runs), then the client reconnects
      // through the balancer and resumes where it was.
      await send("three");
      const back = await untilOk(10_000, async () => {
        try {
          return await TestSocket.connect(nginx, credential, { resume: { epoch, seq: 2 } });
        } catch {
          return null;
        }
      });
      assert.deepEqual(back.connected.stream, { epoch, seq: 3, recovered: true, replayed: 1 });
      seen.push(await back.socket.until("message"));
      assert.deepEqual(
        seen.map((f) => [f.seq, f.message.kind === "text" ? f.message.text : ""]),
        [[1, "one"], [2, "two"], [3, "three"]],
      );
      const nowHeld = await keys.get(new RedisKeys("lg:").owner(DEV_APP.appId, "superhero1"));
      assert.ok(nowHeld?.startsWith(other === nodes[0] ? "node-a " : "node-b "), nowHeld ?? "");
      console.log(`offline for everyone ${offlineAfter} ms after the kill (TTL ${TTL_MS} ms)`);
      back.socket.close();
      await back.socket.closed;
    } finally {
      keys.disconnect();
      await nginx.stop();
    }
  },
});
