/**
 * Several gateway processes on one Redis act as one (docs/cluster.md): real processes, a real
 * `redis-server` of the test's own on a free port, real WebSockets. Node death uses a short
 * NODE_TTL_MS so that the bound is measured in a second or two, not ten.
 */
import assert from "node:assert/strict";
import type { z } from "zod";
import {
  closeCodeTable,
  type Message,
  type SendMessageReply,
  type ServerFrameOf,
  type SessionView,
} from "../contract/mod.ts";
import type { PingReplySchema, PresenceSchema } from "../contract/routes.ts";
import { DEV_APP } from "../gateway/config.ts";
import { TestSocket } from "./support/harness.ts";
import { delay, devLogin, GatewayProcess } from "./support/process.ts";
import { type RedisServer, redisTest, startRedis } from "./support/redis_server.ts";

const TTL_MS = 1_500;
const HEARTBEAT_MS = 250;
/** Dead node noticed (TTL), found by a heartbeat, its users taken over: with room for load. */
const DEATH_BOUND_MS = TTL_MS + HEARTBEAT_MS + 2_000;

const ENV = (redis: RedisServer): Record<string, string> => ({
  STORE: "redis",
  REDIS_URL: redis.url,
  NODE_TTL_MS: String(TTL_MS),
  NODE_HEARTBEAT_MS: String(HEARTBEAT_MS),
  LIVENESS_WINDOW_MS: "3000",
  // After a node's death a deadline fires at its persisted bound: at most this after it.
  DEADLINE_BOUND_MS: "500",
  HEARTBEAT_INTERVAL_MS: "1000",
  PONG_TIMEOUT_MS: "500",
  IDLE_TIMEOUT_MS: "20000",
  LOG_LEVEL: "warn",
  RATE_LIMIT_HTTP_PER_SEC: "5000",
});

/** A Redis and two gateway nodes on it; disposing kills them all. */
class TwoNodes implements AsyncDisposable {
  private constructor(
    readonly redis: RedisServer,
    readonly a: GatewayProcess,
    readonly b: GatewayProcess,
  ) {}

  static async start(options: { appendOnly?: boolean } = {}): Promise<TwoNodes> {
    const redis = await startRedis(options);
    const [a, b] = await Promise.all([
      GatewayProcess.start({ env: ENV(redis) }),
      GatewayProcess.start({ env: ENV(redis) }),
    ]);
    return new TwoNodes(redis, a, b);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const node of [this.a, this.b]) {
      if (await node.alive()) await node.crash();
      await node.cleanup();
    }
    await this.redis.stop();
  }
}

const text = (value: string) => ({ kind: "text" as const, text: value });

function textOf(message: Message): string {
  return message.kind === "text" ? message.text : `custom:${message.customType}`;
}

async function call<T>(
  url: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() as T };
}

type PingReply = z.infer<typeof PingReplySchema>;
type Presence = z.infer<typeof PresenceSchema>;

const bearer = (credential: string) => ({ authorization: `Bearer ${credential}` });
const apiKey = { apikey: DEV_APP.apiKey };

async function serverSend(url: string, to: string[], value: string): Promise<SendMessageReply> {
  const { status, body } = await call<SendMessageReply>(
    url,
    "POST",
    `/v1/apps/${DEV_APP.appId}/messages`,
    apiKey,
    { to, message: text(value) },
  );
  assert.equal(status, 200, JSON.stringify(body));
  return body;
}

async function presenceOf(url: string, uid: string): Promise<Presence> {
  const { status, body } = await call<Presence>(
    url,
    "GET",
    `/v1/apps/${DEV_APP.appId}/users/${uid}/presence`,
    apiKey,
  );
  assert.equal(status, 200, JSON.stringify(body));
  return body;
}

async function sessionsOf(url: string, uid: string): Promise<SessionView[]> {
  const { body } = await call<{ sessions: SessionView[] }>(
    url,
    "GET",
    `/v1/apps/${DEV_APP.appId}/users/${uid}/sessions`,
    apiKey,
  );
  return body.sessions;
}

/** Polls `check` until it holds; the time it took. */
async function within(
  ms: number,
  what: string,
  check: () => boolean | Promise<boolean>,
): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > ms) throw new Error(`${what}: not within ${ms} ms`);
    await delay(50);
  }
  return Date.now() - started;
}

async function nextMessages(socket: TestSocket, count: number): Promise<Array<[number, string]>> {
  const frames: ServerFrameOf<"message">[] = [];
  for (let i = 0; i < count; i++) frames.push(await socket.until("message"));
  return frames.map((f) => [f.seq, textOf(f.message)]);
}

redisTest(
  "cluster: a REST ping at node B moves the background deadline enforced at node A",
  async () => {
    await using nodes = await TwoNodes.start();
    const { credential } = await devLogin(nodes.a.url, "superhero1", "manual");
    const { socket } = await TestSocket.connect(nodes.a, credential);
    await using _ = socket;
    socket.send({ type: "app_state", state: "background" });
    const first = (await socket.next("state")).backgroundDeadline!;
    assert.notEqual(first, null);

    await delay(1_000);
    const ping = await call<PingReply>(nodes.b.url, "POST", "/v1/session/ping", bearer(credential));
    assert.equal(ping.status, 200, JSON.stringify(ping.body));
    assert.ok(ping.body.backgroundDeadline! >= first + 900, "the deadline moved forward");
    // The old deadline passes and the socket at A stays open; the new one closes it.
    await delay(first - Date.now() + 500);
    assert.equal(socket.ws.readyState, WebSocket.OPEN, "closed at the deadline the ping moved");
    assert.equal((await socket.until("closing", 5_000)).reason, "liveness_timeout");
    const closed = await socket.closed;
    assert.equal(closed.code, closeCodeTable.liveness_timeout);
    assert.ok(closed.at >= ping.body.backgroundDeadline!, "never before the announced deadline");
  },
);

redisTest(
  "cluster: messages cross nodes; a user who reconnects at the other node resumes exactly",
  async () => {
    await using nodes = await TwoNodes.start();
    const one = await devLogin(nodes.a.url, "superhero1", "auto");
    const two = await devLogin(nodes.b.url, "superhero2", "auto");
    const atA = await TestSocket.connect(nodes.a, one.credential);
    const atB = await TestSocket.connect(nodes.b, two.credential);
    await using _b = atB.socket;

    // The server API at B reaches a user held at A, and the other way round.
    const reply = await serverSend(nodes.b.url, ["superhero1", "superhero2"], "to both");
    assert.deepEqual(reply.recipients.map((r) => [r.uid, r.seq, r.deliveredTo]), [
      ["superhero1", 1, 1],
      ["superhero2", 1, 1],
    ]);
    assert.deepEqual(await nextMessages(atA.socket, 1), [[1, "to both"]]);
    assert.deepEqual(await nextMessages(atB.socket, 1), [[1, "to both"]]);

    // A user's send over its socket at A reaches the receiver's socket at B.
    atA.socket.send({
      type: "send",
      id: 1,
      clientMessageId: "c-1",
      receiverType: "user",
      receiver: "superhero2",
      message: text("from A"),
    });
    assert.equal((await atA.socket.until("sent")).seq, 2);
    assert.deepEqual(await nextMessages(atB.socket, 1), [[2, "from A"]]);

    // superhero1 leaves A, messages arrive meanwhile, and it comes back at B with its position.
    const epoch = atA.connected.stream.epoch;
    atA.socket.close();
    await atA.socket.closed;
    await serverSend(nodes.a.url, ["superhero1"], "while away 1");
    await serverSend(nodes.b.url, ["superhero1"], "while away 2");
    const back = await TestSocket.connect(nodes.b, one.credential, { resume: { epoch, seq: 1 } });
    await using _back = back.socket;
    assert.deepEqual(back.connected.stream, { epoch, seq: 4, recovered: true, replayed: 3 });
    assert.deepEqual(await nextMessages(back.socket, 3), [
      [2, "from A"],
      [3, "while away 1"],
      [4, "while away 2"],
    ]);
  },
);

redisTest("cluster: presence is cluster-wide", async () => {
  await using nodes = await TwoNodes.start();
  const watcher = await devLogin(nodes.b.url, "superhero2", "auto");
  const watched = await devLogin(nodes.a.url, "superhero1", "auto");
  const { socket } = await TestSocket.connect(nodes.b, watcher.credential, {
    presence: { subscriptionType: "allUsers" },
  });
  await using _ = socket;
  const at = await TestSocket.connect(nodes.a, watched.credential);
  const online = await socket.until("presence");
  assert.deepEqual(online.users.map((u) => [u.uid, u.online]), [["superhero1", true]]);
  assert.equal((await presenceOf(nodes.b.url, "superhero1")).online, true);
  at.socket.close();
  const offline = await socket.until("presence");
  assert.deepEqual(offline.users.map((u) => [u.uid, u.online]), [["superhero1", false]]);
});

redisTest(
  "cluster: concurrent sends through both nodes give one stream, one writer: no gap, no duplicate",
  async () => {
    await using nodes = await TwoNodes.start();
    const receiver = await devLogin(nodes.a.url, "superhero3", "auto");
    const seqs: number[] = [];
    await Promise.all([0, 1, 2, 3].map(async (lane) => {
      for (let i = 0; i < 25; i++) {
        const node = (lane + i) % 2 === 0 ? nodes.a : nodes.b;
        const reply = await serverSend(node.url, ["superhero3"], `lane ${lane} #${i}`);
        seqs.push(reply.recipients[0].seq);
      }
    }));
    assert.deepEqual(seqs.toSorted((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i + 1));
    // The stream as a reader at either node sees it: 100 events, each once.
    const { socket, connected } = await TestSocket.connect(nodes.b, receiver.credential, {
      resume: { epoch: "unknown", seq: 0 },
    });
    await using _ = socket;
    assert.equal(connected.stream.seq, 100);
    const history = await call<{ events: Array<{ seq: number }> }>(
      nodes.a.url,
      "GET",
      "/v1/session/events?after=0&limit=200",
      bearer(receiver.credential),
    );
    assert.equal(history.status, 200, JSON.stringify(history.body));
    assert.deepEqual(
      history.body.events.map((e) => e.seq),
      Array.from({ length: 100 }, (_, i) => i + 1),
    );
  },
);

redisTest(
  "cluster: kill -9 of a node: its users are offline within the bound, resume at the other node, and background deadlines still hold",
  async () => {
    await using nodes = await TwoNodes.start();
    const watcher = await devLogin(nodes.b.url, "superhero2", "auto");
    const { socket: watch } = await TestSocket.connect(nodes.b, watcher.credential, {
      presence: { subscriptionType: "allUsers" },
    });
    await using _w = watch;

    // At A: a foreground user with two messages, and a manual-mode user in background.
    const fg = await devLogin(nodes.a.url, "superhero1", "auto");
    const bg = await devLogin(nodes.a.url, "superhero3", "manual");
    const atA = await TestSocket.connect(nodes.a, fg.credential);
    const bgSocket = await TestSocket.connect(nodes.a, bg.credential);
    bgSocket.socket.send({ type: "app_state", state: "background" });
    const deadline = (await bgSocket.socket.next("state")).backgroundDeadline!;
    await serverSend(nodes.b.url, ["superhero1"], "one");
    await serverSend(nodes.b.url, ["superhero1"], "two");
    assert.deepEqual(await nextMessages(atA.socket, 2), [[1, "one"], [2, "two"]]);
    const epoch = atA.connected.stream.epoch;
    // The watcher at B saw both come online (coalesced or not).
    await within(3_000, "watcher sees superhero1 online", () => {
      const frames = watch.unread().filter((f) => f.type === "presence");
      return frames.some((f) =>
        f.type === "presence" && f.users.some((u) => u.uid === "superhero1")
      );
    });

    const killedAt = Date.now();
    await nodes.a.crash();
    // Within the bound, everyone at B sees superhero1 offline: the presence route and the feed.
    const took = await within(
      DEATH_BOUND_MS,
      "superhero1 offline after the kill",
      async () => !(await presenceOf(nodes.b.url, "superhero1")).online,
    );
    assert.ok(took <= DEATH_BOUND_MS);
    await within(
      2_000,
      "the watcher hears superhero1 go offline",
      () =>
        watch.frames.some((f) =>
          f.type === "presence" && f.users.some((u) => u.uid === "superhero1" && !u.online)
        ),
    );

    // Messages sent after the death are kept; the client resumes at B with nothing lost.
    await serverSend(nodes.b.url, ["superhero1"], "three");
    const back = await TestSocket.connect(nodes.b, fg.credential, { resume: { epoch, seq: 2 } });
    await using _back = back.socket;
    assert.deepEqual(back.connected.stream, { epoch, seq: 3, recovered: true, replayed: 1 });
    assert.deepEqual(await nextMessages(back.socket, 1), [[3, "three"]]);

    // The background session's deadline is honoured by B: closed at or after it, not before.
    await within(deadline - Date.now() + DEATH_BOUND_MS, "background session closed", async () => {
      const [session] = await sessionsOf(nodes.b.url, "superhero3");
      return session?.status === "disconnected";
    });
    const [session] = await sessionsOf(nodes.b.url, "superhero3");
    assert.equal(session.lastDisconnectReason, "liveness_timeout");
    assert.ok(session.lastDisconnectAt! >= deadline, "never before the announced deadline");
    assert.ok(killedAt > 0);
    bgSocket.socket.close();
    atA.socket.close();
  },
);

/** Whether a node reports ready (`/readyz` 200). */
async function ready(url: string): Promise<boolean> {
  const res = await fetch(`${url}/readyz`);
  await res.body?.cancel();
  return res.status === 200;
}

redisTest(
  "cluster: Redis goes away and comes back: sockets stay, writes are refused (never acknowledged), then all recovers with nothing lost",
  async () => {
    await using nodes = await TwoNodes.start({ appendOnly: true });
    const { a, b, redis } = nodes;
    {
      const user = await devLogin(a.url, "superhero1", "auto");
      const { socket, connected } = await TestSocket.connect(a, user.credential);
      await serverSend(b.url, ["superhero1"], "before");
      assert.deepEqual(await nextMessages(socket, 1), [[1, "before"]]);

      await redis.kill();
      // Both nodes say they are not ready, and a send is refused at once with a clear error.
      await within(
        TTL_MS + 2_000,
        "both nodes not ready",
        async () => !(await ready(a.url)) && !(await ready(b.url)),
      );
      for (const node of [a, b]) {
        const started = Date.now();
        const refused = await call<{ errorCode: string }>(
          node.url,
          "POST",
          `/v1/apps/${DEV_APP.appId}/messages`,
          apiKey,
          { to: ["superhero1"], message: text("during the outage") },
        );
        assert.equal(refused.status, 503, JSON.stringify(refused.body));
        assert.equal(refused.body.errorCode, "ERR_SERVICE_UNAVAILABLE");
        assert.ok(Date.now() - started < 1_000, "refused at once, not left waiting");
      }
      // The socket stays, and its heartbeats are answered by its node.
      socket.send({ type: "ping", id: 7 });
      assert.equal((await socket.until("pong")).id, 7);

      await redis.restart();
      await within(
        10_000,
        "both nodes ready again",
        async () => await ready(a.url) && await ready(b.url),
      );
      await serverSend(b.url, ["superhero1"], "after");
      assert.deepEqual(await nextMessages(socket, 1), [[2, "after"]]);
      assert.equal(socket.ws.readyState, WebSocket.OPEN);
      // Nothing refused was stored: the stream holds what was acknowledged, once.
      const history = await call<{ events: Array<{ seq: number }> }>(
        b.url,
        "GET",
        "/v1/session/events?after=0&limit=10",
        bearer(user.credential),
      );
      assert.deepEqual(history.body.events.map((e) => e.seq), [1, 2]);
      assert.equal(connected.stream.seq, 0);
      socket.close();
      await socket.closed;
    }
  },
);

redisTest(
  "cluster: a Redis that restarted empty is detected: sockets close (1012), a new login resumes with recovered: false (epoch_changed)",
  async () => {
    await using nodes = await TwoNodes.start();
    const { a, b, redis } = nodes;
    {
      const user = await devLogin(a.url, "superhero1", "auto");
      const { socket, connected } = await TestSocket.connect(a, user.credential);
      await serverSend(a.url, ["superhero1"], "lost with Redis");
      assert.deepEqual(await nextMessages(socket, 1), [[1, "lost with Redis"]]);

      await redis.kill();
      await redis.restart();
      const closed = await socket.closed;
      assert.equal(closed.code, 1012);

      // The seed users are back; the old stream is gone, and the client is told so.
      const again = await within(10_000, "login works again", async () => {
        try {
          await devLogin(b.url, "superhero1", "auto");
          return true;
        } catch {
          return false;
        }
      }).then(() => devLogin(b.url, "superhero1", "auto"));
      const back = await TestSocket.connect(b, again.credential, {
        resume: { epoch: connected.stream.epoch, seq: 1 },
      });
      await using _ = back.socket;
      assert.equal(back.connected.stream.recovered, false);
      assert.equal(back.connected.stream.reason, "epoch_changed");
      assert.notEqual(back.connected.stream.epoch, connected.stream.epoch);
      assert.ok(await a.alive() && await b.alive(), "nothing crashed");
    }
  },
);
