/**
 * Presence over real sockets (SPEC §4, §6): each subscription type gets the changes it should and
 * no others (`none` gets nothing), offline is published for a deadline close and for a crashed
 * gateway (after the restart grace; a client back inside the grace makes no flap), and a join
 * wave of 200 users costs O(n) frames thanks to the per-connection coalescing.
 *
 * The last tests drive the hub itself on fake time with a store whose reads the test answers:
 * the coalescing interval to the millisecond, and changes that come while a profile is read.
 *
 * Subscriptions only hear changes after their `connected` frame (there is no snapshot), so each
 * test connects its subscribers first. "Nothing else arrived" is read from whole frames: the
 * entries up to a known last change must be exactly the expected ones.
 */
import assert from "node:assert/strict";
import type {
  ClientFrameInput,
  PresenceChange,
  PresenceSubscription,
  ServerFrameOf,
} from "../contract/mod.ts";
import { ManualClock } from "../gateway/clock.ts";
import { createLogger } from "../gateway/log.ts";
import { DEV_APP } from "../gateway/mod.ts";
import { PresenceHub, type PresenceUser } from "../gateway/presence.ts";
import type { RelayTarget } from "../gateway/relays.ts";
import type { GatewayStore, ProfileRecord } from "../gateway/store/types.ts";
import {
  API_KEY,
  login,
  startTestGateway,
  type TestGateway,
  TestSocket,
} from "./support/harness.ts";
import { delay, devLogin, GatewayProcess } from "./support/process.ts";

const APP = { appId: DEV_APP.appId };
const INTERVAL = 50;
/** The test sockets send no heartbeats: the idle timeout is kept out of the way. */
const QUIET = { presenceIntervalMs: INTERVAL, idleTimeoutMs: 30_000 };

type Handshake = Omit<Extract<ClientFrameInput, { type: "connect" }>, "type">;

async function connect(
  gateway: TestGateway,
  uid: string,
  presence?: PresenceSubscription,
  mode: "auto" | "manual" = "auto",
): Promise<TestSocket> {
  const { credential } = await login(gateway, mode, uid);
  const handshake: Handshake = presence === undefined ? {} : { presence };
  return (await TestSocket.connect(gateway, credential, handshake)).socket;
}

async function createUser(gateway: TestGateway, uid: string): Promise<void> {
  const res = await gateway.rest.server.createUser({
    params: APP,
    headers: API_KEY,
    body: { uid },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
}

async function setRoles(gateway: TestGateway, uid: string, roles: string[]): Promise<void> {
  const res = await gateway.rest.server.setRoles({
    params: { ...APP, uid },
    headers: API_KEY,
    body: { roles },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
}

async function setFriends(gateway: TestGateway, uid: string, friends: string[]): Promise<void> {
  const res = await gateway.rest.server.setFriends({
    params: { ...APP, uid },
    headers: API_KEY,
    body: { friends },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
}

/** Closes a socket and waits until the gateway has the user offline (server API read). */
async function closeLast(gateway: TestGateway, socket: TestSocket, uid: string): Promise<void> {
  socket.close();
  await socket.closed;
  for (;;) {
    const res = await gateway.rest.server.getPresence({
      params: { ...APP, uid },
      headers: API_KEY,
    });
    assert.equal(res.status, 200);
    if (res.status === 200 && !res.body.online) return;
    await delay(5);
  }
}

interface Received {
  entries: PresenceChange[];
  frames: number;
  /** The change looked for. */
  last: PresenceChange;
}

/**
 * The presence entries read on `socket` up to and including the frame that holds `uid` going
 * `online`. Each frame is checked on the way: one entry per user, at least one entry.
 */
async function presenceUntil(
  socket: TestSocket,
  uid: string,
  online: boolean,
  timeoutMs = 5_000,
): Promise<Received> {
  const entries: PresenceChange[] = [];
  let frames = 0;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const frame = await socket.until("presence", Math.max(1, deadline - Date.now()));
    frames++;
    checkFrame(frame);
    entries.push(...frame.users);
    const last = frame.users.find((u) => u.uid === uid && u.online === online);
    if (last !== undefined) return { entries, frames, last };
  }
}

function checkFrame(frame: ServerFrameOf<"presence">): void {
  const uids = frame.users.map((u) => u.uid);
  assert.ok(uids.length > 0, "a presence frame is never empty");
  assert.equal(
    new Set(uids).size,
    uids.length,
    `each user once per frame: ${JSON.stringify(frame)}`,
  );
}

/** `uid:on` / `uid:off`, sorted: what a subscriber learned, order aside. */
function summary(entries: PresenceChange[]): string[] {
  return entries.map((e) => `${e.uid}:${e.online ? "on" : "off"}`).sort();
}

let fences = 0;
/** Nothing arrived on `socket` (beyond what was read): its next frame is the pong to a ping. */
async function nothingMore(socket: TestSocket, what: string): Promise<void> {
  const id = `fence-${++fences}`;
  socket.send({ type: "ping", id });
  const frame = await socket.next();
  assert.deepEqual(
    { type: frame.type, id: "id" in frame ? frame.id : undefined },
    { type: "pong", id },
    `${what}: got ${JSON.stringify(frame)}`,
  );
}

Deno.test("allUsers: each user online with the first session, offline with the last; none gets nothing", async () => {
  await using gateway = await startTestGateway(QUIET);
  await using none = await connect(gateway, "superhero2", { subscriptionType: "none" });
  await using absent = await connect(gateway, "superhero3"); // no `presence`: none
  await using sub = await connect(gateway, "superhero1", { subscriptionType: "allUsers" });

  const before = Date.now();
  const phone = await connect(gateway, "superhero4");
  const online = await presenceUntil(sub, "superhero4", true);
  assert.deepEqual(summary(online.entries), ["superhero4:on"]);
  assert.ok(online.last.at >= before && online.last.at <= Date.now(), "`at` is when it happened");

  // A second session of an online user changes nothing; the last one closing is the offline.
  const laptop = await connect(gateway, "superhero4");
  phone.close();
  await phone.closed;
  const closedAt = Date.now();
  await closeLast(gateway, laptop, "superhero4");
  const offline = await presenceUntil(sub, "superhero4", false);
  assert.deepEqual(summary(offline.entries), ["superhero4:off"]);
  assert.ok(offline.last.at >= closedAt);

  await nothingMore(none, "subscriptionType none");
  await nothingMore(absent, "a connect frame without presence");
});

Deno.test("roles: a change reaches the connections subscribed to one of the user's roles", async () => {
  await using gateway = await startTestGateway(QUIET);
  for (const uid of ["sentinel", "roleless"]) await createUser(gateway, uid);
  await setRoles(gateway, "superhero2", ["vip"]);
  await setRoles(gateway, "superhero3", ["staff"]);
  await setRoles(gateway, "superhero4", ["vip", "staff"]);
  await setRoles(gateway, "sentinel", ["vip", "staff"]);
  await using vip = await connect(gateway, "superhero1", {
    subscriptionType: "roles",
    roles: ["vip"],
  });
  await using staff = await connect(gateway, "superhero5", {
    subscriptionType: "roles",
    roles: ["staff", "nobody-has-it"],
  });
  await using roleless = await connect(gateway, "roleless", { subscriptionType: "roles" });

  await using vipUser = await connect(gateway, "superhero2");
  const staffUser = await connect(gateway, "superhero3");
  await using both = await connect(gateway, "superhero4");
  const sentinel = await connect(gateway, "sentinel");
  assert.deepEqual(summary((await presenceUntil(vip, "sentinel", true)).entries), [
    "sentinel:on",
    "superhero2:on",
    "superhero4:on",
  ]);
  assert.deepEqual(summary((await presenceUntil(staff, "sentinel", true)).entries), [
    "sentinel:on",
    "superhero3:on",
    "superhero4:on",
  ]);
  await nothingMore(roleless, "a roles subscription naming no role");

  // superhero3 becomes vip while online: its next change follows its new roles.
  await setRoles(gateway, "superhero3", ["vip"]);
  await closeLast(gateway, staffUser, "superhero3");
  await closeLast(gateway, sentinel, "sentinel");
  assert.deepEqual(summary((await presenceUntil(vip, "sentinel", false)).entries), [
    "sentinel:off",
    "superhero3:off",
  ]);
  assert.deepEqual(summary((await presenceUntil(staff, "sentinel", false)).entries), [
    "sentinel:off",
  ]);
  assert.equal(vipUser.unread().length + both.unread().length, 0, "no presence for unsubscribed");
});

Deno.test("friends: a change reaches the users whose friend list holds the user", async () => {
  await using gateway = await startTestGateway(QUIET);
  await createUser(gateway, "sentinel");
  await setFriends(gateway, "superhero1", ["superhero2", "sentinel"]);
  await setFriends(gateway, "superhero3", ["superhero1"]); // one way: 1 does not list 3
  const fan = await connect(gateway, "superhero3", { subscriptionType: "friends" });
  // Changes right after the connected frame are heard (its friend list is read meanwhile).
  await using me = await connect(gateway, "superhero1", { subscriptionType: "friends" });
  const friend = await connect(gateway, "superhero2");
  await using _stranger = await connect(gateway, "superhero5");
  await using _sentinel = await connect(gateway, "sentinel");
  assert.deepEqual(summary((await presenceUntil(me, "sentinel", true)).entries), [
    "sentinel:on",
    "superhero2:on",
  ]);
  assert.deepEqual(summary((await presenceUntil(fan, "superhero1", true)).entries), [
    "superhero1:on",
  ]);
  await nothingMore(fan, "a friend list without the users who changed");

  // The friend list changes while subscribed: the old friend is no longer heard, the new one is.
  await setFriends(gateway, "superhero1", ["superhero4"]);
  const newFriend = await connect(gateway, "superhero4");
  assert.deepEqual(summary((await presenceUntil(me, "superhero4", true)).entries), [
    "superhero4:on",
  ]);
  await closeLast(gateway, friend, "superhero2");
  await closeLast(gateway, fan, "superhero3"); // lists superhero1, who does not list it
  await closeLast(gateway, newFriend, "superhero4");
  assert.deepEqual(summary((await presenceUntil(me, "superhero4", false)).entries), [
    "superhero4:off",
  ]);
});

Deno.test("a liveness deadline close publishes offline", async () => {
  await using gateway = await startTestGateway(QUIET);
  await using sub = await connect(gateway, "superhero1", { subscriptionType: "allUsers" });
  await using background = await connect(gateway, "superhero2", undefined, "manual");
  await presenceUntil(sub, "superhero2", true);

  // Manual mode in background, and no ping: the window (400 ms here) ends the connection.
  background.send({ type: "app_state", state: "background" });
  const deadline = (await background.next("state")).backgroundDeadline!;
  assert.equal((await background.until("closing")).reason, "liveness_timeout");
  const offline = await presenceUntil(sub, "superhero2", false);
  assert.deepEqual(summary(offline.entries), ["superhero2:off"]);
  assert.ok(offline.last.at >= deadline, `offline at ${offline.last.at}, deadline ${deadline}`);
});

// ---- a crashed gateway ----

/** Long enough for a restart and two reconnects on a loaded machine. */
const GRACE_MS = 6_000;
const PROCESS_ENV: Record<string, string> = {
  RESTART_GRACE_MS: String(GRACE_MS),
  PRESENCE_INTERVAL_MS: String(INTERVAL),
  IDLE_TIMEOUT_MS: "30000",
  LOG_LEVEL: "warn",
};

async function connectTo(
  proc: GatewayProcess,
  credential: string,
  handshake: Handshake = {},
): Promise<{ socket: TestSocket; connected: ServerFrameOf<"connected"> }> {
  const socket = new TestSocket(`${proc.wsUrl}?credential=${encodeURIComponent(credential)}`);
  await socket.opened;
  socket.send({ type: "connect", ...handshake });
  return { socket, connected: await socket.next("connected") };
}

Deno.test("after kill -9: offline when the restart grace ends; a client back inside it makes no flap", async () => {
  const first = await GatewayProcess.start({ env: PROCESS_ENV });
  let second: GatewayProcess | null = null;
  const sockets: TestSocket[] = [];
  try {
    const gone = await devLogin(first.url, "superhero2", "auto");
    const back = await devLogin(first.url, "superhero3", "auto");
    for (const { credential } of [gone, back]) {
      sockets.push((await connectTo(first, credential)).socket);
    }

    // A connect in foreground is written within a group commit, unannounced: a server send,
    // answered once the store has everything marked before it, makes sure it is on disk.
    const sent = await fetch(`${first.url}/v1/apps/${DEV_APP.appId}/messages`, {
      method: "POST",
      headers: { ...API_KEY, "content-type": "application/json" },
      body: JSON.stringify({ to: ["superhero3"], message: { kind: "text", text: "sync" } }),
    });
    assert.equal(sent.status, 200, await sent.text());
    const killedAt = Date.now();
    await first.crash();
    second = await first.restart();

    // A subscriber connects to the restarted gateway, then superhero3's client comes back.
    const subscriber = await devLogin(second.url, "superhero1", "auto");
    const { socket: sub } = await connectTo(second, subscriber.credential, {
      presence: { subscriptionType: "allUsers" },
    });
    sockets.push(sub);
    const { socket: again, connected } = await connectTo(second, back.credential);
    sockets.push(again);
    assert.ok(
      connected.serverTime < killedAt + GRACE_MS,
      "superhero3 reconnected inside the grace (the restart took too long for this test)",
    );

    // superhero2 never comes back: offline when the grace ends; superhero3 never flapped.
    const offline = await presenceUntil(sub, "superhero2", false, GRACE_MS + 10_000);
    assert.deepEqual(summary(offline.entries), ["superhero2:off"]);
    assert.ok(offline.last.at >= killedAt + GRACE_MS, "not before the grace ended");
    await nothingMore(sub, "after the grace");
  } finally {
    for (const socket of sockets) socket.close();
    await Promise.all(sockets.map((socket) => socket.closed));
    if (second !== null) await second.crash();
    await first.crash();
    await first.cleanup();
  }
});

// ---- a join wave ----

Deno.test("a join wave of 200 users costs O(n) presence frames", async () => {
  const N = 200;
  await using gateway = await startTestGateway({
    idleTimeoutMs: 60_000,
    httpRatePerSec: 100_000,
    connectRatePerIp: 100_000,
    maxConnectionsPerIp: 500,
  });
  const interval = gateway.config.presenceIntervalMs;
  const uids = Array.from({ length: N }, (_, i) => `wave${i}`);
  await Promise.all([...uids, "sentinel"].map((uid) => createUser(gateway, uid)));
  const loginOf = (uid: string) => ({ appId: DEV_APP.appId, uid, authKey: DEV_APP.authKey! });

  const sockets: TestSocket[] = [];
  try {
    // All at once: each socket logs in inside its handshake and subscribes to allUsers.
    const started = Date.now();
    await Promise.all(uids.map(async (uid) => {
      const socket = new TestSocket(gateway.wsUrl);
      sockets.push(socket);
      await socket.opened;
      socket.send({
        type: "connect",
        login: loginOf(uid),
        presence: { subscriptionType: "allUsers" },
      });
      await socket.next("connected", 30_000);
    }));
    const joined = Date.now();
    // One more user after the wave: once every subscriber has heard of it, it has heard of
    // everything before it (a frame carries all that was pending).
    const sentinel = new TestSocket(gateway.wsUrl);
    sockets.push(sentinel);
    await sentinel.opened;
    sentinel.send({ type: "connect", login: loginOf("sentinel") });
    await sentinel.next("connected");
    const received = await Promise.all(
      sockets.slice(0, N).map((socket) => presenceUntil(socket, "sentinel", true, 30_000)),
    );
    const duration = Date.now() - started;

    const frames = received.reduce((sum, r) => sum + r.frames, 0);
    const entries = received.reduce((sum, r) => sum + r.entries.length, 0);
    const bound = N * (1 + Math.ceil(duration / interval));
    console.log(
      `join wave of ${N}: joined in ${joined - started} ms, ${frames} presence frames ` +
        `(${(frames / N).toFixed(1)} per subscriber) carrying ${entries} changes over ` +
        `${duration} ms; bound n·(1 + ⌈${duration}/${interval}⌉) = ${bound}; one frame per ` +
        `change would be ${entries}, 2·n·(n+1) = ${2 * N * (N + 1)}`,
    );
    // Exactly one entry per pair (the earlier of two hears the later come online), plus the
    // sentinel for everyone: nothing lost, nothing repeated.
    assert.equal(entries, (N * (N - 1)) / 2 + N);
    for (const r of received) {
      const uids = r.entries.map((e) => e.uid);
      assert.equal(new Set(uids).size, uids.length, "each user's change once");
      assert.ok(r.entries.every((e) => e.online));
    }
    // At most one frame per subscriber per interval: O(n) for the wave.
    assert.ok(frames <= bound, `${frames} frames > ${bound}`);
    assert.ok(frames < entries / 2, `${frames} frames for ${entries} changes: not coalesced`);
  } finally {
    for (const socket of sockets) socket.close();
    await Promise.all(sockets.map((socket) => socket.closed));
  }
});

// ---- the hub itself, on fake time ----

const HUB_INTERVAL = 250;
const HUB_APP = "app";
const userOf = (uid: string): PresenceUser => ({ appId: HUB_APP, uid });

/** A connection as the hub sees it: records each frame with the (fake) time it was written. */
class FakeTarget implements RelayTarget {
  readonly written: Array<{ at: number; users: PresenceChange[] }> = [];
  closed = false;
  constructor(private readonly clock: ManualClock) {}
  sendEvent(text: string): boolean {
    const frame = JSON.parse(text) as ServerFrameOf<"presence">;
    checkFrame(frame);
    this.written.push({ at: this.clock.now(), users: frame.users });
    return true;
  }
}

/** A store whose profile reads wait until the test answers them. */
class ProfileReads {
  readonly pending: Array<{ uid: string; answer: (profile: ProfileRecord | null) => void }> = [];
  getProfile(_appId: string, uid: string): Promise<ProfileRecord | null> {
    return new Promise((answer) => this.pending.push({ uid, answer }));
  }
  /** Answers the oldest read (of `uid`), and lets its continuation run. */
  async answer(uid: string, profile: ProfileRecord): Promise<void> {
    const i = this.pending.findIndex((read) => read.uid === uid);
    assert.ok(i >= 0, `a read of ${uid} is pending`);
    this.pending.splice(i, 1)[0].answer(profile);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

function hubOnFakeTime(store: Pick<GatewayStore, "getProfile"> = new ProfileReads()) {
  const clock = new ManualClock();
  const hub = new PresenceHub({
    clock,
    store,
    intervalMs: HUB_INTERVAL,
    log: createLogger("error"),
  });
  return { clock, hub, target: new FakeTarget(clock) };
}

Deno.test("hub: the first change goes out at once, then one frame per interval with the latest state per user", () => {
  const { clock, hub, target } = hubOnFakeTime();
  hub.connected(target, userOf("me"), { subscriptionType: "allUsers" });
  const t0 = clock.now();
  hub.presenceChanged(userOf("u1"), true, t0);
  assert.equal(target.written.length, 0, "never written inside the state object's call");
  clock.advance(10);
  assert.deepEqual(target.written.map((w) => w.users), [[{ uid: "u1", online: true, at: t0 }]]);
  const firstAt = target.written[0].at;

  // Within the interval: three changes, u1 back offline among them.
  clock.advance(40);
  const t1 = clock.now();
  hub.presenceChanged(userOf("u2"), true, t1);
  hub.presenceChanged(userOf("u1"), false, t1);
  hub.presenceChanged(userOf("u3"), true, t1);
  hub.presenceChanged(userOf("me"), false, t1); // one's own: never
  clock.advance(firstAt + HUB_INTERVAL - 1 - clock.now());
  assert.equal(target.written.length, 1, "nothing more before the interval is over");
  clock.advance(10);
  assert.equal(target.written.length, 2);
  assert.ok(target.written[1].at >= firstAt + HUB_INTERVAL);
  assert.deepEqual(summary(target.written[1].users), ["u1:off", "u2:on", "u3:on"]);

  // After a quiet interval, a change goes out at once again.
  clock.advance(HUB_INTERVAL);
  const t2 = clock.now();
  hub.presenceChanged(userOf("u4"), true, t2);
  clock.advance(10);
  assert.equal(target.written.length, 3);
  assert.ok(target.written[2].at - t2 <= 10);

  // Closed: nothing more, and nothing left armed.
  hub.presenceChanged(userOf("u5"), true, clock.now());
  hub.disconnected(target);
  clock.advance(10 * HUB_INTERVAL);
  assert.equal(target.written.length, 3);
  hub.close();
});

Deno.test("hub: a friend's change while the friend list is read, or read again, is not lost", async () => {
  const store = new ProfileReads();
  const { clock, hub, target } = hubOnFakeTime(store);
  hub.connected(target, userOf("me"), { subscriptionType: "friends" });
  hub.presenceChanged(userOf("friend"), true, clock.now());
  hub.presenceChanged(userOf("stranger"), true, clock.now());
  await store.answer("me", { roles: [], friends: ["friend", "kept"] });
  clock.advance(10);
  assert.deepEqual(target.written.map((w) => summary(w.users)), [["friend:on"]]);

  // The list changes ("friend" out, "new" in): while it is read again, the old list still
  // routes; the new friend's change meanwhile is routed once the new list is known; a friend on
  // both lists is heard once.
  hub.profileChanged(HUB_APP, "me", undefined);
  hub.presenceChanged(userOf("kept"), true, clock.now());
  clock.advance(HUB_INTERVAL + 10);
  hub.presenceChanged(userOf("new"), true, clock.now());
  await store.answer("me", { roles: [], friends: ["kept", "new"] });
  clock.advance(HUB_INTERVAL + 10);
  assert.deepEqual(target.written.slice(1).map((w) => summary(w.users)), [
    ["kept:on"],
    ["new:on"],
  ]);
  hub.presenceChanged(userOf("friend"), false, clock.now());
  clock.advance(2 * HUB_INTERVAL);
  assert.equal(target.written.length, 3, "no longer a friend");
  hub.close();
});

Deno.test("hub: roles are read once per user in memory, again after a profile change", async () => {
  const store = new ProfileReads();
  const { clock, hub, target } = hubOnFakeTime(store);
  hub.connected(target, userOf("me"), { subscriptionType: "roles", roles: ["vip"] });
  const vip = userOf("vip");
  hub.presenceChanged(vip, true, clock.now());
  clock.advance(HUB_INTERVAL);
  assert.equal(target.written.length, 0, "waits for the user's roles");
  await store.answer("vip", { roles: ["vip"], friends: [] });
  clock.advance(10);
  assert.deepEqual(target.written.map((w) => summary(w.users)), [["vip:on"]]);

  hub.presenceChanged(vip, false, clock.now());
  assert.equal(store.pending.length, 0, "kept in memory: not read again");
  clock.advance(HUB_INTERVAL + 10);
  assert.equal(target.written.length, 2);

  // No longer vip: the change that comes while the roles are read again follows the new ones.
  hub.profileChanged(HUB_APP, "vip", vip);
  hub.presenceChanged(vip, true, clock.now());
  await store.answer("vip", { roles: ["staff"], friends: [] });
  clock.advance(2 * HUB_INTERVAL);
  assert.equal(target.written.length, 2);
  hub.close();
});
