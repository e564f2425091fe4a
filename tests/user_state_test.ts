/**
 * The single-writer user state with the real 30 000 ms window on fake time: the deadline
 * wheel, the lifecycle engine and the group-committed store, without sockets.
 */
import assert from "node:assert/strict";
import type { CloseReason, Message } from "../contract/mod.ts";
import { ManualClock } from "../gateway/clock.ts";
import { DEFAULTS } from "../gateway/config.ts";
import { KvStore } from "../gateway/store/kv.ts";
import { type SocketPort, UserStateRuntime, UserStates } from "../gateway/user_state.ts";

class FakeSocket implements SocketPort {
  closes: Array<{ reason: CloseReason; at: number }> = [];
  constructor(private clock: ManualClock) {}
  events: Array<{ seq: number; message: Message }> = [];
  send(): void {}
  sendEvent(text: string): boolean {
    this.events.push(JSON.parse(text));
    return true;
  }
  close(reason: CloseReason): void {
    this.closes.push({ reason, at: this.clock.now() });
  }
}

/** A runtime on fake time; `shared` is a store that outlives it (a restart), else its own. */
async function setup(shared?: KvStore) {
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
      persistLazyMs: 1_000,
    },
  );
  const users = new UserStates(runtime);
  return {
    clock,
    store,
    users,
    [Symbol.asyncDispose]: async () => {
      await users.shutdown();
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

Deno.test("user state: a ping that only extends a deadline is written lazily, the rest at once", async () => {
  await using env = await setup();
  const { clock, users, store } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "manual");
  user.attach("s1", new FakeSocket(clock), "foreground", false);
  user.call("s1", { type: "app_state", appState: "background", backgroundService: false });
  const stored = async () => (await store.loadUserState("demo", "u1"))?.sessions[0];
  const settle = async (ms: number) => {
    clock.advance(ms);
    // Let the store's async commit finish (it is real I/O, not on the manual clock).
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 1));
  };
  await settle(1);
  const entered = (await stored())!.liveness.deadline!;
  assert.equal(entered, clock.now() - 1 + 30_000, "entering background is written at once");

  clock.advance(5_000);
  user.call("s1", { type: "ping", source: "app" });
  const extended = user.session("s1")!.liveness.deadline!;
  await settle(10);
  assert.equal((await stored())!.liveness.deadline, entered, "the extension waits");
  await settle(1_000);
  assert.equal((await stored())!.liveness.deadline, extended, "…and is written within 1 s");
  assert.ok((await stored())!.lastPingAt !== null);
});

const textTo = (to: string, text: string): Message => ({
  kind: "text",
  text,
  id: `m_${text}`,
  from: null,
  to,
  sentAt: 0,
});

Deno.test("user state: a message goes to connected sessions only, with the next seq", async () => {
  await using env = await setup();
  const { clock, users } = env;
  const user = await users.get("demo", "u1");
  user.createSession("s1", "auto");
  user.createSession("s2", "manual"); // logged in, never connected
  const socket = new FakeSocket(clock);
  user.attach("s1", socket, "foreground", false);

  assert.deepEqual(user.deliver(textTo("u1", "a")), { seq: 1, deliveredTo: 1 });
  assert.deepEqual(user.deliver(textTo("u1", "b")), { seq: 2, deliveredTo: 1 });
  assert.deepEqual(socket.events.map((e) => [e.seq, e.message.kind === "text" && e.message.text]), [
    [1, "a"],
    [2, "b"],
  ]);
  user.socketClosed("s1", socket, "connection_lost");
  assert.deepEqual(user.deliver(textTo("u1", "c")), { seq: 3, deliveredTo: 0 });
  assert.equal(socket.events.length, 2, "an offline session gets nothing (no retention yet)");
});

Deno.test("user state: seq keeps increasing across a restart and across a crash", async () => {
  const store = await KvStore.open(":memory:");
  try {
    // A graceful stop: the stream continues right after the last number handed out.
    {
      await using env = await setup(store);
      const user = await env.users.get("demo", "u1");
      for (let i = 0; i < 700; i++) user.deliver(textTo("u1", `${i}`));
      assert.equal(user.lastSeq, 700);
    }
    let resumedAt: number;
    {
      const env = await setup(store);
      const user = await env.users.get("demo", "u1");
      resumedAt = user.deliver(textTo("u1", "after restart")).seq;
      assert.equal(resumedAt, 701, "a graceful restart continues at the next number");
      env.clock.advance(1); // the reservation's group commit
      await env.users.runtime.writer.flushAll();
      for (let i = 0; i < 10; i++) user.deliver(textTo("u1", `x${i}`));
      // A crash: nothing more is written (no shutdown, timers stopped).
      env.users.runtime.writer.close();
      env.users.runtime.alarms.close();
    }
    {
      await using env = await setup(store);
      const user = await env.users.get("demo", "u1");
      const seq = user.deliver(textTo("u1", "after crash")).seq;
      assert.ok(seq > resumedAt + 10, `seq ${seq} repeats one handed out before the crash`);
    }
  } finally {
    store.close();
  }
});
