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
import { Redis } from "ioredis";
import { DEV_APP } from "../gateway/config.ts";
import { TestSocket } from "./support/harness.ts";
import { delay, devLogin } from "./support/process.ts";
import { redisTest } from "./support/redis_server.ts";
import { TwoNodes, type TwoNodesOptions } from "./support/two_nodes.ts";

const TTL_MS = 1_500;
const HEARTBEAT_MS = 250;
/** Dead node noticed (TTL), found by a heartbeat, its users taken over: with room for load. */
const DEATH_BOUND_MS = TTL_MS + HEARTBEAT_MS + 2_000;

const ENV: Record<string, string> = {
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
};

/** Two nodes with this file's settings (ENV), and the test's own on top. */
function startNodes(options: TwoNodesOptions = {}): Promise<TwoNodes> {
  return TwoNodes.start({ ...options, env: { ...ENV, ...options.env } });
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

/**
 * A server send while a dead node's users are being taken over: a 503 (its holder did not answer)
 * is retried, as an app's server does. (The dead node stores nothing: a paused one that wakes is
 * refused by the fencing check.)
 */
async function serverSendRetrying(
  url: string,
  to: string[],
  value: string,
): Promise<SendMessageReply> {
  const started = Date.now();
  for (;;) {
    const { status, body } = await call<SendMessageReply>(
      url,
      "POST",
      `/v1/apps/${DEV_APP.appId}/messages`,
      apiKey,
      { to, message: text(value) },
    );
    if (status === 200) return body;
    assert.equal(status, 503, JSON.stringify(body));
    if (Date.now() - started > DEATH_BOUND_MS) throw new Error(`send not accepted: ${value}`);
    await delay(100);
  }
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
    await using nodes = await startNodes();
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
    await using nodes = await startNodes();
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
  await using nodes = await startNodes();
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
  "cluster: a user's sessions sit on both nodes at once: the socket at the other node is relayed to the holder",
  async () => {
    await using nodes = await startNodes();
    const watcher = await devLogin(nodes.a.url, "superhero2", "auto");
    const { socket: watch } = await TestSocket.connect(nodes.a, watcher.credential, {
      presence: { subscriptionType: "allUsers" },
    });
    await using _w = watch;
    const phone = await devLogin(nodes.a.url, "superhero1", "manual");
    const web = await devLogin(nodes.b.url, "superhero1", "manual");
    // The phone's socket at A brings the user to A; the web's socket at B cannot take it from
    // there, so its frames are relayed to A.
    const atA = await TestSocket.connect(nodes.a, phone.credential);
    await using _a = atA.socket;
    const atB = await TestSocket.connect(nodes.b, web.credential);
    await using _b = atB.socket;
    assert.equal(atB.connected.sessionId, web.sessionId);
    assert.equal(atB.connected.stream.epoch, atA.connected.stream.epoch);
    const sessions = await sessionsOf(nodes.b.url, "superhero1");
    assert.deepEqual(sessions.map((s) => s.status), ["connected", "connected"]);
    // Operators see the relay on both sides.
    const metric = async (url: string, side: string) => {
      const text = await (await fetch(`${url}/metrics`)).text();
      return new RegExp(`^gateway_relayed_sockets\\{side="${side}"\\} (\\d+)$`, "m").exec(text)
        ?.[1];
    };
    assert.equal(await metric(nodes.b.url, "edge"), "1");
    assert.equal(await metric(nodes.a.url, "holder"), "1");

    // A message to the user, sent at either node, reaches both sockets at the same seq.
    await serverSend(nodes.b.url, ["superhero1"], "to both devices");
    assert.deepEqual(await nextMessages(atA.socket, 1), [[1, "to both devices"]]);
    assert.deepEqual(await nextMessages(atB.socket, 1), [[1, "to both devices"]]);

    // The relayed socket sends: its `sent` comes back through the relay, and the phone gets the
    // copy of its own message; the receiver's socket at A gets it too.
    atB.socket.send({
      type: "send",
      id: "s1",
      clientMessageId: "web-1",
      receiverType: "user",
      receiver: "superhero2",
      message: text("from the web"),
    });
    const sent = await atB.socket.until("sent");
    assert.equal(sent.id, "s1");
    assert.equal(sent.seq, 2);
    assert.deepEqual(await nextMessages(atA.socket, 1), [[2, "from the web"]]);
    assert.equal(textOf((await watch.until("message")).message), "from the web");

    // Foreground heartbeats of the relayed socket are answered at B: no Redis round trip (no
    // publish while only they go on; the first one after the send still goes to A).
    atB.socket.send({ type: "ping", id: 8 });
    assert.equal((await atB.socket.until("pong")).id, 8);
    const redis = new Redis(nodes.redis.url);
    try {
      const publishes = async () =>
        Number(/cmdstat_publish:calls=(\d+)/.exec(await redis.info("commandstats"))?.[1] ?? 0);
      const before = await publishes();
      for (const id of [9, 10]) {
        atB.socket.send({ type: "ping", id });
        const pong = await atB.socket.until("pong");
        assert.deepEqual([pong.id, pong.backgroundDeadline], [id, null]);
        await delay(600);
      }
      assert.equal(await publishes() - before, 0, "heartbeats answered where the socket is");
    } finally {
      redis.disconnect();
    }
    // In background the holder answers again, and a ping moves the deadline; the rules hold on
    // the relayed socket, with their close codes.
    atB.socket.send({ type: "app_state", state: "background" });
    const entered = (await atB.socket.until("state")).backgroundDeadline!;
    assert.notEqual(entered, null);
    await delay(300);
    atB.socket.send({ type: "ping", id: 11 });
    const moved = await atB.socket.until("pong");
    assert.ok(moved.backgroundDeadline! > entered, "a background ping reaches the holder");
    const deadline = moved.backgroundDeadline!;
    const closing = await atB.socket.until("closing", 8_000);
    assert.equal(closing.reason, "liveness_timeout");
    const closed = await atB.socket.closed;
    assert.equal(closed.code, closeCodeTable.liveness_timeout);
    assert.ok(closed.at >= deadline, "never before the announced deadline");
    // The phone's session is independent: still connected, the user still online.
    assert.equal(atA.socket.ws.readyState, WebSocket.OPEN);
    assert.equal((await presenceOf(nodes.b.url, "superhero1")).online, true);

    // A socket that logs in inside its `connect` frame at B is relayed the same way.
    const fresh = new TestSocket(nodes.b.wsUrl);
    await using _f = fresh;
    await fresh.opened;
    fresh.send({
      type: "connect",
      id: 1,
      login: { appId: DEV_APP.appId, uid: "superhero1", authKey: DEV_APP.authKey!, mode: "manual" },
      resume: { epoch: atA.connected.stream.epoch, seq: 1 },
    });
    const connected = await fresh.until("connected");
    assert.equal(connected.uid, "superhero1");
    assert.deepEqual(connected.stream, {
      epoch: atA.connected.stream.epoch,
      seq: 2,
      recovered: true,
      replayed: 1,
    });
    assert.deepEqual(await nextMessages(fresh, 1), [[2, "from the web"]]);
    fresh.send({ type: "disconnect", id: 2 });
    assert.equal((await fresh.closed).code, closeCodeTable.client_disconnect);
  },
);

redisTest(
  "cluster: heartbeats answered at a relayed socket's edge keep it alive at the holder (idle rule); silence still closes it",
  async () => {
    await using nodes = await startNodes({
      env: { IDLE_TIMEOUT_MS: "1500", HEARTBEAT_INTERVAL_MS: "800", PONG_TIMEOUT_MS: "300" },
    });
    const phone = await devLogin(nodes.a.url, "superhero1", "auto");
    const web = await devLogin(nodes.b.url, "superhero1", "auto");
    const atA = await TestSocket.connect(nodes.a, phone.credential);
    await using _a = atA.socket;
    const relayed = await TestSocket.connect(nodes.b, web.credential);
    await using _b = relayed.socket;
    // Four idle timeouts of heartbeats, each answered: the holder never takes the socket for idle.
    const started = Date.now();
    for (let id = 1; Date.now() - started < 6_000; id++) {
      relayed.socket.send({ type: "ping", id });
      assert.equal((await relayed.socket.until("pong")).id, id);
      // The phone's own heartbeats keep it open too.
      atA.socket.send({ type: "ping", id });
      await atA.socket.until("pong");
      // Within the edge's allowance (one a second), so that each is answered there.
      await delay(1_100);
    }
    assert.equal(relayed.socket.ws.readyState, WebSocket.OPEN);
    // Silence: closed as idle by the holder, the code relayed.
    assert.equal((await relayed.socket.until("closing", 5_000)).reason, "idle_timeout");
    assert.equal((await relayed.socket.closed).code, closeCodeTable.idle_timeout);
  },
);

redisTest(
  "cluster: relays end with either node: a dead holder's relayed sockets close (1012) and resume at the live node; a dead edge's sessions go offline",
  async () => {
    await using nodes = await startNodes();
    // superhero1 is held at A (socket there), with a relayed socket at B.
    const one = await devLogin(nodes.a.url, "superhero1", "auto");
    const oneWeb = await devLogin(nodes.b.url, "superhero1", "auto");
    const atA = await TestSocket.connect(nodes.a, one.credential);
    const relayed = await TestSocket.connect(nodes.b, oneWeb.credential);
    await using _r = relayed.socket;
    // superhero3 is held at B, with a relayed socket at A.
    const three = await devLogin(nodes.b.url, "superhero3", "auto");
    const threeWeb = await devLogin(nodes.a.url, "superhero3", "auto");
    const atB = await TestSocket.connect(nodes.b, three.credential);
    await using _b = atB.socket;
    const relayedAtA = await TestSocket.connect(nodes.a, threeWeb.credential);
    await serverSend(nodes.b.url, ["superhero1"], "before");
    assert.deepEqual(await nextMessages(relayed.socket, 1), [[1, "before"]]);

    await nodes.a.crash();
    // The relayed socket at B closes with 1012 within the bound; its client resumes at B.
    const closed = await relayed.socket.closed;
    assert.equal(closed.code, 1012);
    await serverSendRetrying(nodes.b.url, ["superhero1"], "after");
    const back = await TestSocket.connect(nodes.b, oneWeb.credential, {
      resume: { epoch: relayed.connected.stream.epoch, seq: 1 },
    });
    await using _back = back.socket;
    assert.equal(back.connected.stream.recovered, true);
    assert.deepEqual(await nextMessages(back.socket, 1), [[2, "after"]]);
    // superhero3's session whose socket was at A is offline at B, the other one connected.
    await within(DEATH_BOUND_MS, "the dead edge's session offline", async () => {
      const sessions = await sessionsOf(nodes.b.url, "superhero3");
      const web = sessions.find((s) => s.sessionId === threeWeb.sessionId);
      return web?.status === "disconnected";
    });
    const sessions = await sessionsOf(nodes.b.url, "superhero3");
    assert.equal(sessions.find((s) => s.sessionId === three.sessionId)?.status, "connected");
    assert.equal(atA.socket.ws.readyState, WebSocket.CLOSED);
    assert.equal(relayedAtA.socket.ws.readyState, WebSocket.CLOSED);
  },
);

redisTest(
  "cluster: typing reaches receivers held by the other node, to a user and a group",
  async () => {
    await using nodes = await startNodes();
    const created = await call(nodes.a.url, "POST", `/v1/apps/${DEV_APP.appId}/groups`, apiKey, {
      guid: "crew",
      members: ["superhero1", "superhero2", "superhero3"],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const typist = await devLogin(nodes.a.url, "superhero1", "auto");
    const two = await devLogin(nodes.b.url, "superhero2", "auto");
    const three = await devLogin(nodes.a.url, "superhero3", "auto");
    const atA = await TestSocket.connect(nodes.a, typist.credential);
    await using _a = atA.socket;
    const twoAtB = await TestSocket.connect(nodes.b, two.credential);
    await using _b = twoAtB.socket;
    const threeAtA = await TestSocket.connect(nodes.a, three.credential);
    await using _c = threeAtA.socket;

    atA.socket.send({ type: "start_typing", receiverType: "user", receiver: "superhero2" });
    const started = await twoAtB.socket.until("typing_started");
    assert.deepEqual([started.from, started.receiverType, started.receiver], [
      "superhero1",
      "user",
      "superhero2",
    ]);
    atA.socket.send({ type: "end_typing", receiverType: "user", receiver: "superhero2" });
    assert.equal((await twoAtB.socket.until("typing_ended")).receiver, "superhero2");

    // To the group: the member at B and the member at A both see it.
    atA.socket.send({ type: "start_typing", receiverType: "group", receiver: "crew" });
    for (const socket of [twoAtB.socket, threeAtA.socket]) {
      const frame = await socket.until("typing_started");
      assert.deepEqual([frame.from, frame.receiver], ["superhero1", "crew"]);
    }
    // Its connection closes: the end reaches the other node too.
    atA.socket.close();
    assert.equal((await twoAtB.socket.until("typing_ended")).receiver, "crew");
  },
);

redisTest(
  "cluster: concurrent sends through both nodes give one stream, one writer: no gap, no duplicate",
  async () => {
    await using nodes = await startNodes();
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
    await using nodes = await startNodes();
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
    await serverSendRetrying(nodes.b.url, ["superhero1"], "three");
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

redisTest(
  "cluster: a node paused past its TTL comes back: the users taken over meanwhile leave it, and no ghost socket stays there",
  async () => {
    await using nodes = await startNodes();
    const user = await devLogin(nodes.a.url, "superhero1", "auto");
    const atA = await TestSocket.connect(nodes.a, user.credential);
    await using _a = atA.socket;
    const epoch = atA.connected.stream.epoch;

    Deno.kill(nodes.a.pid, "SIGSTOP");
    try {
      // B takes A for dead and takes superhero1 over: offline for everyone.
      await within(DEATH_BOUND_MS, "superhero1 offline at B", async () => {
        return !(await presenceOf(nodes.b.url, "superhero1")).online;
      });
      await serverSendRetrying(nodes.b.url, ["superhero1"], "while A was paused");
    } finally {
      Deno.kill(nodes.a.pid, "SIGCONT");
    }
    // A wakes up with the socket still open (a foreground socket writes nothing, so no fenced
    // write would tell it): within a heartbeat it finds the claim gone and closes it (1012).
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      atA.socket.closed,
      new Promise<null>((resolve) =>
        timer = setTimeout(() => resolve(null), 2_000 + HEARTBEAT_MS * 4)
      ),
    ]);
    clearTimeout(timer);
    assert.ok(closed !== null, "the socket at the node that lost its user was closed");
    assert.equal(closed.code, 1012);
    // The client reconnects (at B, where the user is) and resumes with nothing lost.
    const back = await TestSocket.connect(nodes.b, user.credential, { resume: { epoch, seq: 0 } });
    await using _b = back.socket;
    assert.deepEqual(back.connected.stream, { epoch, seq: 1, recovered: true, replayed: 1 });
    assert.deepEqual(await nextMessages(back.socket, 1), [[1, "while A was paused"]]);
  },
);

redisTest(
  "cluster: a graceful stop while Redis is away gives up on its last writes and exits (no spin, no hang)",
  async () => {
    await using nodes = await startNodes();
    const user = await devLogin(nodes.a.url, "superhero1", "auto");
    const { socket } = await TestSocket.connect(nodes.a, user.credential);
    await using _ = socket;
    await nodes.redis.kill();
    // The stop closes the socket (a change to write) and cannot write it: it must still end.
    const started = Date.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      nodes.a.terminate(),
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 20_000)),
    ]);
    clearTimeout(timer);
    assert.ok(status !== null, "the node exited");
    assert.equal(status.code, 0);
    assert.ok(Date.now() - started < 15_000);
    assert.equal((await socket.closed).code, 1012);
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
    await using nodes = await startNodes({ appendOnly: true });
    const { a, b, redis } = nodes;
    {
      const user = await devLogin(a.url, "superhero1", "auto");
      const { socket, connected } = await TestSocket.connect(a, user.credential);
      // A second session of the user, whose socket at B is relayed to A.
      const web = await devLogin(b.url, "superhero1", "auto");
      const relayed = await TestSocket.connect(b, web.credential);
      await serverSend(b.url, ["superhero1"], "before");
      assert.deepEqual(await nextMessages(socket, 1), [[1, "before"]]);
      assert.deepEqual(await nextMessages(relayed.socket, 1), [[1, "before"]]);

      await redis.kill();
      // The relay needs Redis (its frames may be lost meanwhile): that socket closes with 1012,
      // and its client reconnects once Redis is back.
      assert.equal((await relayed.socket.closed).code, 1012);
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
    await using nodes = await startNodes();
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
      // (Until each node has noticed the reset, a login may be refused with 503: retried.)
      let again: Awaited<ReturnType<typeof devLogin>> | undefined;
      await within(10_000, "login works again", async () => {
        again = await devLogin(b.url, "superhero1", "auto").catch(() => undefined);
        return again !== undefined;
      });
      const back = await TestSocket.connect(b, again!.credential, {
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
