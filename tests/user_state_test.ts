/**
 * The single-writer user state with the real 30 000 ms window on fake time: the deadline
 * wheel, the lifecycle engine and the group-committed store, without sockets.
 */
import assert from "node:assert/strict";
import type { CloseReason, Message } from "../contract/mod.ts";
import { ManualClock } from "../gateway/clock.ts";
import { DEFAULTS } from "../gateway/config.ts";
import { KvStore } from "../gateway/store/kv.ts";
import {
  type SocketPort,
  type StreamOptions,
  UserStateRuntime,
  UserStates,
} from "../gateway/user_state.ts";

class FakeSocket implements SocketPort {
  closes: Array<{ reason: CloseReason; at: number }> = [];
  constructor(private clock: ManualClock) {}
  events: Array<{ seq: number; message: Message }> = [];
  touches: number[] = [];
  send(): void {}
  touch(now: number): void {
    this.touches.push(now);
  }
  sendEvent(text: string): boolean {
    this.events.push(JSON.parse(text));
    return true;
  }
  close(reason: CloseReason): void {
    this.closes.push({ reason, at: this.clock.now() });
  }
}

/** A runtime on fake time; `shared` is a store that outlives it (a restart), else its own. */
async function setup(
  shared?: KvStore,
  options: { deadlineBoundMs?: number; stream?: Partial<StreamOptions> } = {},
) {
  const clock = new ManualClock();
  const store = shared ?? await KvStore.open(":memory:");
  const runtime = new UserStateRuntime(
    clock,
    {
      livenessWindowMs: DEFAULTS.livenessWindowMs,
      idleTimeoutMs: DEFAULTS.idleTimeoutMs,
    },
    store,
    {
      tickMs: DEFAULTS.deadlineTickMs,
      persistDelayMs: 0,
      deadlineBoundMs: options.deadlineBoundMs ?? DEFAULTS.deadlineBoundMs,
      stream: options.stream,
    },
  );
  const users = new UserStates(runtime, { evictAfterMs: DEFAULTS.userEvictAfterMs });
  /** Runs the writer's timers and lets the store's real I/O finish. */
  const settle = async (ms = 1) => {
    clock.advance(ms);
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 1));
  };
  /** Waits for `promise`, moving fake time so that the group commit behind it runs. */
  const durable = async <T>(promise: Promise<T>): Promise<T> => {
    let done = false;
    const result = promise.finally(() => (done = true));
    for (let i = 0; i < 200 && !done; i++) await settle(1);
    return await result;
  };
  /** A crash: nothing more is written, no socket gets a close frame, timers stop. */
  const crash = () => {
    runtime.writer.close();
    runtime.alarms.close();
    users.stopTimers();
  };
  return {
    clock,
    store,
    users,
    settle,
    durable,
    crash,
    [Symbol.asyncDispose]: async () => {
      if (!runtime.writer.closed) await users.shutdown();
      if (shared === undefined) store.close();
    },
  };
}

Deno.test("user state: manual background with pings on fake time, real 30 s window", async () => {
  await using env = await setup();
  const { clock, users } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "manual");
  const socket = new FakeSocket(clock);
  assert.equal(user.attach("s1", socket, "foreground", false).ok, true);
  assert.equal(user.online, true);

  const entered = clock.now();
  user.call("s1", { type: "app_state", appState: "background", backgroundService: false });
  clock.advance(29_999);
  user.call("s1", { type: "ping", source: "app" }); // 1 ms inside the window
  const pingAt = clock.now();
  clock.advance(29_999);
  assert.equal(socket.closes.length, 0, "still open 1 ms before ping + window");
  clock.advance(1 + DEFAULTS.deadlineTickMs);
  assert.equal(socket.closes.length, 1);
  assert.equal(socket.closes[0].reason, "liveness_timeout");
  assert.ok(socket.closes[0].at >= pingAt + 30_000, "never early");
  assert.ok(socket.closes[0].at <= pingAt + 30_000 + DEFAULTS.deadlineTickMs);
  assert.ok(entered + 30_000 < socket.closes[0].at, "the ping moved the deadline");
  assert.equal(user.online, false);
  assert.equal(user.lastSeenAt, socket.closes[0].at);
});

Deno.test("user state: a late close of a replaced socket does not touch its successor", async () => {
  await using env = await setup();
  const { clock, users } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "auto");
  const first = new FakeSocket(clock);
  const second = new FakeSocket(clock);
  user.attach("s1", first, "foreground", false);
  user.attach("s1", second, "foreground", false);
  assert.deepEqual(first.closes.map((c) => c.reason), ["replaced"]);
  user.socketClosed("s1", first, "connection_lost"); // the old socket's close event arrives late
  assert.equal(user.session("s1")!.liveness.connected, true);
  assert.equal(user.online, true);
});

Deno.test("user state: a logout in a background window closes as logged_out and disarms its alarm", async () => {
  await using env = await setup();
  const { clock, users } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "manual");
  const socket = new FakeSocket(clock);
  user.attach("s1", socket, "foreground", false);
  assert.equal(
    user.call("s1", { type: "app_state", appState: "background", backgroundService: false }).ok,
    true,
  );
  assert.equal(users.runtime.alarms.size, 1);
  clock.advance(1_000);
  assert.equal(user.endSession("s1"), true);
  assert.deepEqual(socket.closes, [{ reason: "logged_out", at: clock.now() }]);
  assert.equal(users.runtime.alarms.size, 0, "nothing is left to fire for an ended session");
  assert.equal(user.online, false);
  assert.equal(user.lastSeenAt, clock.now());
  assert.equal(user.session("s1"), undefined);
  clock.advance(2 * DEFAULTS.livenessWindowMs);
  assert.equal(socket.closes.length, 1);
  assert.equal(user.endSession("s1"), false);
});

Deno.test("user state: changes are group-committed; heartbeats write nothing", async () => {
  await using env = await setup();
  const { clock, users, store } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "auto");
  user.attach("s1", new FakeSocket(clock), "foreground", false);
  const durable = users.runtime.writer.durable();
  clock.advance(1); // the writer's coalescing timer runs on the injected clock too
  await durable;
  const before = await store.loadUserState("demo", "u1");
  assert.equal(before?.sessions[0].liveness.connected, true);
  assert.equal(before?.meta.held, true);

  const saved: number[] = [];
  const original = store.saveUserStates.bind(store);
  store.saveUserStates = (changes) => {
    saved.push(changes.length);
    return original(changes);
  };
  for (let i = 0; i < 100; i++) user.call("s1", { type: "ping", source: "heartbeat" });
  clock.advance(10);
  await users.runtime.writer.flushAll();
  assert.deepEqual(saved, [], "heartbeats only move lastPingAt: no write");
});

Deno.test("user state: pings inside the persisted bound write nothing; the bound runs ahead", async () => {
  await using env = await setup();
  const { clock, users, store, settle, durable } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "manual");
  user.attach("s1", new FakeSocket(clock), "foreground", false);
  const entering = user.call("s1", {
    type: "app_state",
    appState: "background",
    backgroundService: false,
  });
  assert.ok(entering.ok && entering.durable, "the state reply waits for the write");
  await durable(entering.durable);
  const stored = async () => (await store.loadUserState("demo", "u1"))!.sessions[0];
  const entered = (await stored()).liveness.deadline!;
  assert.equal((await stored()).deadlineBound, entered + DEFAULTS.deadlineBoundMs);

  const saved: number[] = [];
  const original = store.saveUserStates.bind(store);
  store.saveUserStates = (changes) => {
    saved.push(changes.length);
    return original(changes);
  };
  // Pings every 100 ms for 2 s: each moves the deadline, none passes half the bound's lead.
  for (let i = 0; i < 20; i++) {
    clock.advance(100);
    const ping = user.call("s1", { type: "ping", source: "app" });
    assert.ok(ping.ok && ping.durable === undefined, "a pong inside the bound does not wait");
  }
  await settle(10);
  assert.deepEqual(saved, [], "no write on the ping path");
  // Past half the lead: one write moves the bound ahead again; the pong still does not wait.
  clock.advance(1_000);
  const ping = user.call("s1", { type: "ping", source: "app" });
  assert.ok(ping.ok && ping.durable === undefined);
  await settle(1);
  assert.equal(saved.length, 1);
  const deadline = user.session("s1")!.liveness.deadline!;
  assert.equal((await stored()).deadlineBound, deadline + DEFAULTS.deadlineBoundMs);
});

Deno.test("user state: after a crash, no deadline fires before the one last announced", async () => {
  const store = await KvStore.open(":memory:");
  try {
    let announced: number;
    let crashedAt: number;
    {
      const env = await setup(store);
      const { clock, users, durable } = env;
      const user = await users.get("demo", "u1");
      user.createSession("s1", "manual");
      user.attach("s1", new FakeSocket(clock), "foreground", false);
      const entering = user.call("s1", {
        type: "app_state",
        appState: "background",
        backgroundService: false,
      });
      if (entering.ok && entering.durable) await durable(entering.durable);
      // The finding: a ping at +20 s promises +50 s; the process dies 200 ms later.
      clock.advance(20_000);
      const ping = user.call("s1", { type: "ping", source: "app" });
      assert.ok(ping.ok);
      if (ping.durable) await durable(ping.durable); // the pong goes out only after this
      announced = ping.session.liveness.deadline!;
      clock.advance(200);
      crashedAt = clock.now();
      env.crash();
    }
    {
      await using env = await setup(store);
      const { clock, users } = env;
      assert.equal(await users.revive(), 1);
      const user = users.peek("demo", "u1")!;
      const restored = user.session("s1")!.liveness.deadline!;
      assert.ok(restored >= announced, `restored ${restored} is before announced ${announced}`);
      assert.ok(restored <= announced + DEFAULTS.deadlineBoundMs, "at most the bound later");
      clock.advance(restored - clock.now() - 1);
      assert.equal(user.session("s1")!.liveness.connected, true, "held until the deadline");
      clock.advance(1 + DEFAULTS.deadlineTickMs);
      const after = user.session("s1")!.liveness;
      assert.equal(after.connected, false);
      assert.equal(after.lastDisconnectReason, "liveness_timeout");
      assert.ok(after.lastDisconnectAt! >= announced, "never early");
      assert.ok(crashedAt < announced);
    }
  } finally {
    store.close();
  }
});

Deno.test("user state: an HTTP ping counts as life for the session's connection", async () => {
  await using env = await setup();
  const { clock, users } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "manual");
  const socket = new FakeSocket(clock);
  user.attach("s1", socket, "foreground", false);
  clock.advance(1_000);
  assert.equal(user.call("s1", { type: "ping", source: "http" }).ok, true);
  assert.deepEqual(socket.touches, [clock.now()]);
  user.call("s1", { type: "ping", source: "app" });
  assert.equal(socket.touches.length, 1, "a ping over the socket is life on the socket already");
});

Deno.test("user state: idle state objects are evicted; held, pinned or unwritten ones are not", async () => {
  await using env = await setup();
  const { clock, users, settle } = env;
  const evictAfter = DEFAULTS.userEvictAfterMs;
  const idle = await users.get("demo", "idle");
  const connected = await users.get("demo", "connected");
  connected.createSession("s1", "auto");
  connected.attach("s1", new FakeSocket(clock), "foreground", false);
  const pinned = await users.get("demo", "pinned");
  pinned.pin();
  await settle(1);
  const unwritten = await users.get("demo", "unwritten");
  unwritten.createSession("s1", "auto");
  assert.equal(idle.evictable, true);
  assert.equal(unwritten.evictable, false, "a change not written yet keeps it");

  users.runtime.writer.close(); // nothing more is written: `unwritten` stays unwritten
  assert.equal(users.evictIdle(idle.lastUsedAt + evictAfter - 1), 0, "not before the idle time");
  assert.equal(users.evictIdle(clock.now() + evictAfter), 1);
  assert.equal(users.peek("demo", "idle"), undefined);
  for (const uid of ["connected", "pinned", "unwritten"]) {
    assert.ok(users.peek("demo", uid) !== undefined, `${uid} stays in memory`);
  }
  pinned.unpin();
  assert.equal(users.evictIdle(clock.now() + evictAfter), 1, "unpinned: evicted");
  // Reads do not load users for good.
  const read = await users.read("demo", "never-held");
  assert.equal(read.online, false);
  assert.equal(users.peek("demo", "never-held"), undefined);
});

const textTo = (to: string, text: string): string =>
  JSON.stringify(
    {
      kind: "text",
      text,
      id: `m_${text}`,
      from: null,
      receiverType: "user",
      to,
      sentAt: 0,
    } satisfies Message,
  );

Deno.test("user state: an event reaches connected sessions once durable, in seq order", async () => {
  await using env = await setup();
  const { clock, users, durable, store } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "auto");
  user.createSession("s2", "manual"); // logged in, never connected
  const socket = new FakeSocket(clock);
  user.attach("s1", socket, "foreground", false);

  const a = user.append(textTo("u1", "a"));
  const b = user.append(textTo("u1", "b"));
  assert.deepEqual([a.seq, b.seq], [1, 2]);
  assert.equal(socket.events.length, 0, "nobody sees an event before the store has it");
  await durable(users.runtime.durable());
  assert.deepEqual(socket.events.map((e) => [e.seq, e.message.kind === "text" && e.message.text]), [
    [1, "a"],
    [2, "b"],
  ]);
  assert.deepEqual([a.deliveredTo, b.deliveredTo], [1, 1]);

  user.socketClosed("s1", socket, "connection_lost");
  const c = user.append(textTo("u1", "c"));
  await durable(users.runtime.durable());
  assert.equal(c.deliveredTo, 0);
  assert.equal(socket.events.length, 2, "a closed socket gets nothing more");
  // …but the stream has it: on disk, and replayed to a resume after seq 2.
  assert.deepEqual((await store.readEvents("demo", "u1", 0, 10)).map((e) => e.seq), [1, 2, 3]);
  const plan = user.planReplay({ epoch: user.epoch, seq: 2 });
  assert.equal(plan.kind, "ready");
  if (plan.kind === "ready") {
    assert.deepEqual(plan.stream, { epoch: user.epoch, seq: 3, recovered: true, replayed: 1 });
    assert.equal(JSON.parse(plan.frames[0]).message.text, "c");
  }
});

Deno.test("user state: resume plans say why they cannot recover", async () => {
  await using env = await setup();
  const { users, durable } = env;
  const user = await users.get("demo", "u1");
  for (let i = 0; i < 5; i++) user.append(textTo("u1", `${i}`));
  await durable(users.runtime.durable());
  const reason = (resume?: { epoch: string; seq: number }) => {
    const plan = user.planReplay(resume);
    return plan.kind === "ready" ? plan.stream.reason ?? "recovered" : "read";
  };
  assert.equal(reason(undefined), "no_position");
  assert.equal(reason({ epoch: "other", seq: 2 }), "epoch_changed");
  assert.equal(reason({ epoch: user.epoch, seq: 6 }), "ahead_of_stream");
  assert.equal(reason({ epoch: user.epoch, seq: 5 }), "recovered");
  assert.equal(reason({ epoch: user.epoch, seq: 0 }), "recovered");
});

Deno.test("user state: the stream cache holds at most STREAM_CACHE_BYTES of messages; a resume past it reads the store", async () => {
  await using env = await setup(undefined, { stream: { cacheChars: 30_000 } });
  const { users, durable, store } = env;
  const user = await users.get("demo", "u1");
  for (let i = 0; i < 10; i++) user.append(textTo("u1", `${i}`.repeat(10_000)));
  await durable(users.runtime.durable());
  // 10 messages of 20 000 characters (the text and the id): past the limit, the cache keeps the
  // newest half of it, or at least the newest event.
  const recent = user.planReplay({ epoch: user.epoch, seq: 9 });
  assert.equal(recent.kind, "ready");
  const old = user.planReplay({ epoch: user.epoch, seq: 0 });
  assert.deepEqual(old, { kind: "read", after: 0, limit: 10 });
  const events = await store.readEvents("demo", "u1", 0, 10);
  const plan = user.planReplay({ epoch: user.epoch, seq: 0 }, { events, upTo: 10 });
  assert.equal(plan.kind, "ready");
  if (plan.kind === "ready") {
    assert.deepEqual(plan.stream, { epoch: user.epoch, seq: 10, recovered: true, replayed: 10 });
    assert.deepEqual(
      plan.frames.map((frame) => JSON.parse(frame).message.text[0]),
      ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    );
  }
});

Deno.test("user state: seqs have no gaps across a restart and across a crash", async () => {
  const store = await KvStore.open(":memory:");
  const appendAll = async (env: Awaited<ReturnType<typeof setup>>, count: number) => {
    const user = await env.users.get("demo", "u1");
    const seqs = Array.from({ length: count }, (_, i) => user.append(textTo("u1", `${i}`)).seq);
    await env.durable(env.users.runtime.durable());
    return seqs;
  };
  try {
    let epoch: string;
    {
      await using env = await setup(store);
      const seqs = await appendAll(env, 700);
      assert.equal(seqs.at(-1), 700);
      epoch = (await env.users.get("demo", "u1")).epoch;
    }
    {
      const env = await setup(store);
      const [first] = await appendAll(env, 1);
      assert.equal(first, 701, "a graceful restart continues at the next number");
      assert.equal((await env.users.get("demo", "u1")).epoch, epoch, "the epoch stays");
      // Appended but never durable: nobody saw 702, nobody was answered about it.
      (await env.users.get("demo", "u1")).append(textTo("u1", "lost"));
      env.crash();
    }
    {
      await using env = await setup(store);
      const [seq] = await appendAll(env, 1);
      assert.equal(seq, 702, "the seq nobody saw is handed out again: no gap");
      const events = await store.readEvents("demo", "u1", 700, 10);
      assert.deepEqual(events.map((e) => [e.seq, JSON.parse(e.body).text]), [
        [701, "0"],
        [702, "0"],
      ]);
    }
  } finally {
    store.close();
  }
});

Deno.test("user state: the writer never arms a timer with a negative delay", async () => {
  // A clock that moves on every read, as a busy event loop does between two reads.
  class DriftingClock extends ManualClock {
    delays: number[] = [];
    override now(): number {
      const now = super.now();
      this.advance(1);
      return now;
    }
    override setTimer(callback: () => void, delayMs: number) {
      this.delays.push(delayMs);
      return super.setTimer(callback, delayMs);
    }
  }
  const clock = new DriftingClock();
  const store = await KvStore.open(":memory:");
  const runtime = new UserStateRuntime(clock, DEFAULTS, store, {
    tickMs: DEFAULTS.deadlineTickMs,
    persistDelayMs: 0,
    deadlineBoundMs: DEFAULTS.deadlineBoundMs,
  });
  const users = new UserStates(runtime);
  try {
    const user = await users.get("demo", "u1");
    for (let i = 0; i < 20; i++) user.createSession(`s${i}`, "manual");
    assert.ok(clock.delays.length > 0);
    assert.ok(clock.delays.every((d) => d >= 0), `delays: ${clock.delays}`);
  } finally {
    await users.shutdown();
    store.close();
  }
});

Deno.test("user state: a stop gives up on a store that keeps refusing, after its bound, without spinning", async () => {
  await using env = await setup();
  const { clock, users, store } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "auto");
  let attempts = 0;
  store.saveUserStates = () => {
    attempts++;
    return Promise.reject(new Error("the store is gone"));
  };
  let ended: boolean | undefined;
  const flushing = users.runtime.writer.flushAll(5_000).then((ok) => (ended = ok));
  // Fake time: 10 s pass in 50 ms steps; a writer that retried without pausing would make
  // thousands of attempts in the real milliseconds this loop takes.
  for (let i = 0; i < 200 && ended === undefined; i++) {
    clock.advance(50);
    for (let j = 0; j < 3; j++) await new Promise((r) => setTimeout(r, 0));
  }
  assert.notEqual(ended, undefined, "the stop's flush ended");
  await flushing;
  assert.equal(ended, false, "gave up: the store never took the write");
  assert.ok(attempts >= 3 && attempts <= 10, `a few attempts with growing pauses, not ${attempts}`);
  users.runtime.writer.close();
});
