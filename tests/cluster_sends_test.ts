/**
 * A user's send on Redis is stored exactly once for every receiver, whatever fails between its
 * first attempt and its retry with the same `clientMessageId` (found by the two-node chaos test:
 * tests/chaos_cluster_test.ts). Real processes, a real `redis-server` with its append-only file.
 *
 * - The receiver's holder dies during the send: the sender is not acknowledged (no `sent`, 503),
 *   and its retry, once the receiver is taken over, stores the message for the receiver.
 * - The sender's node is paused past its TTL while the receiver's copy is stored elsewhere: the
 *   retry at the other node does not store the receiver's copy again.
 * - On one node, Redis crashes while a commit waits: the retry, which may come before the first
 *   attempt's commit lands, does not store the message a second time.
 */
import assert from "node:assert/strict";
import { TestSocket } from "./support/harness.ts";
import { delay, devLogin, GatewayProcess } from "./support/process.ts";
import { redisTest, startRedis } from "./support/redis_server.ts";
import { TwoNodes } from "./support/two_nodes.ts";

const ENV: Record<string, string> = {
  NODE_TTL_MS: "1500",
  NODE_HEARTBEAT_MS: "250",
  CLUSTER_REQUEST_TIMEOUT_MS: "1000",
  LOG_LEVEL: "warn",
};

function sendAs(url: string, credential: string, receiver: string, clientMessageId = "m-1") {
  return fetch(`${url}/v1/session/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
    body: JSON.stringify({
      clientMessageId,
      receiverType: "user",
      receiver,
      message: { kind: "text", text: "hello" },
    }),
  }).then(async (r) => ({ status: r.status, body: await r.json() }));
}

/** Retries a send as a client does (same clientMessageId) until it is answered 200. */
async function sendUntilAnswered(
  url: () => string,
  credential: string,
  receiver: string,
): Promise<{ seq: number; duplicate: boolean }> {
  const started = Date.now();
  for (;;) {
    const reply = await sendAs(url(), credential, receiver).catch(() => null);
    if (reply?.status === 200) return reply.body;
    if (reply !== null) assert.equal(reply.status, 503, JSON.stringify(reply.body));
    if (Date.now() - started > 15_000) throw new Error("the send was never answered");
    await delay(100);
  }
}

/** The stream as `[seq, clientMessageId]`, read at `url`. */
async function streamOf(url: string, credential: string): Promise<Array<[number, string]>> {
  for (let attempt = 0;; attempt++) {
    const res = await fetch(`${url}/v1/session/events?after=0&limit=50`, {
      headers: { authorization: `Bearer ${credential}` },
    });
    const body = await res.json();
    if (res.status === 200) {
      return body.events.map((
        e: { seq: number; message: { clientMessageId?: string } },
      ) => [e.seq, e.message.clientMessageId ?? ""]);
    }
    if (attempt > 100) throw new Error(`history: ${res.status} ${JSON.stringify(body)}`);
    await delay(100);
  }
}

redisTest(
  "cluster sends: the receiver's holder dies during a user's send: not acknowledged, and the retry stores it for the receiver once",
  async () => {
    await using nodes = await TwoNodes.start({ appendOnly: true, env: ENV, ids: ["A", "B"] });
    const { a, b } = nodes;
    {
      const one = await devLogin(a.url, "superhero1", "auto");
      const two = await devLogin(b.url, "superhero2", "auto");
      const atA = await TestSocket.connect(a, one.credential);
      await using _a = atA.socket;
      const atB = await TestSocket.connect(b, two.credential);
      atB.socket.close();
      await atB.socket.closed;
      await b.crash();

      const first = await sendAs(a.url, one.credential, "superhero2");
      assert.equal(first.status, 503, JSON.stringify(first.body));
      // Nothing was acknowledged: no `sent`, no copy in the sender's stream.
      await delay(300);
      assert.ok(!atA.socket.frames.some((f) => f.type === "sent"), "no sent for a failed send");

      const retried = await sendUntilAnswered(() => a.url, one.credential, "superhero2");
      assert.equal(retried.seq, 1);
      const again = await devLogin(a.url, "superhero2", "auto");
      assert.deepEqual(await streamOf(a.url, again.credential), [[1, "m-1"]]);
      assert.deepEqual(await streamOf(a.url, one.credential), [[1, "m-1"]]);
      assert.equal((await atA.socket.until("sent")).seq, 1);
    }
  },
);

redisTest(
  "cluster sends: the sender's node is paused past its TTL during a send: the retry at the other node stores nothing twice",
  async () => {
    await using nodes = await TwoNodes.start({ appendOnly: true, env: ENV, ids: ["A", "B"] });
    const { a, b } = nodes;
    {
      const one = await devLogin(a.url, "superhero1", "auto");
      const two = await devLogin(b.url, "superhero2", "auto");
      const atA = await TestSocket.connect(a, one.credential);
      await using _a = atA.socket;
      const atB = await TestSocket.connect(b, two.credential);
      await using _b = atB.socket;

      // A stalls (a long pause); B takes superhero1 over. The send reaches A meanwhile, and A
      // handles it when it wakes, with the state it had.
      Deno.kill(a.pid, "SIGSTOP");
      let first: Promise<{ status: number }>;
      try {
        await delay(3_000);
        first = sendAs(a.url, one.credential, "superhero2");
        await delay(200);
      } finally {
        Deno.kill(a.pid, "SIGCONT");
      }
      const answered = await first;
      // Whatever A answered, the client retries until it has an answer, at B.
      if (answered.status !== 200) {
        await sendUntilAnswered(() => b.url, one.credential, "superhero2");
      }
      await sendUntilAnswered(() => b.url, one.credential, "superhero2");
      await delay(500);
      assert.deepEqual(await streamOf(b.url, two.credential), [[1, "m-1"]]);
      assert.deepEqual(await streamOf(b.url, one.credential), [[1, "m-1"]]);
      const delivered = atB.socket.frames.filter((f) => f.type === "message");
      assert.equal(delivered.length, 1, "the receiver's socket got the message once");
    }
  },
);

redisTest(
  "cluster sends: one node, Redis crashes while a send's commit waits: the retry does not store it twice",
  async () => {
    const redis = await startRedis({ appendOnly: true });
    const node = await GatewayProcess.start({
      env: { STORE: "redis", REDIS_URL: redis.url, ...ENV },
    });
    try {
      const one = await devLogin(node.url, "superhero1", "auto");
      const two = await devLogin(node.url, "superhero2", "auto");
      // Redis holds every write (reads go on): the send's commit is sent and waits, unanswered.
      const pause = await new Deno.Command("redis-cli", {
        args: ["-p", String(redis.port), "CLIENT", "PAUSE", "5000", "WRITE"],
        stdout: "null",
      }).output();
      assert.ok(pause.success);
      const first = await sendAs(node.url, one.credential, "superhero2");
      assert.equal(first.status, 503, JSON.stringify(first.body));
      await redis.kill();
      await delay(300);
      await redis.restart();
      const retried = await sendUntilAnswered(() => node.url, one.credential, "superhero2");
      assert.equal(retried.seq, 1);
      // The first attempt's commit, retried by the gateway meanwhile, is the one stored.
      await delay(2_500);
      assert.deepEqual(await streamOf(node.url, two.credential), [[1, "m-1"]]);
      assert.deepEqual(await streamOf(node.url, one.credential), [[1, "m-1"]]);
    } finally {
      await node.crash();
      await node.cleanup();
      await redis.stop();
    }
  },
);
