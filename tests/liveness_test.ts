/**
 * The lifecycle engine, pure: one table row per rule of SPEC §4, driven by events at given
 * times on a manual clock, with the boundaries (1 ms before/after a deadline).
 */
import assert from "node:assert/strict";
import {
  type Decision,
  idleCheck,
  initialLiveness,
  type LivenessEvent,
  restore,
  type SessionLiveness,
  step,
} from "../gateway/liveness.ts";
import { DeadlineWheel } from "../gateway/deadline_wheel.ts";
import { ManualClock } from "../gateway/clock.ts";
import type { Mode } from "../contract/mod.ts";

const W = 30_000;
const config = { livenessWindowMs: W, idleTimeoutMs: 45_000 };
const T0 = 1_000_000;

type Timed = [at: number, event: LivenessEvent];

/** Runs timed events through the engine, firing the alarm when it falls due on the way. */
function run(mode: Mode, events: Timed[], until: number) {
  let state: SessionLiveness = initialLiveness(mode);
  let alarm: number | null = null;
  const log: Array<{ at: number; decision: Decision }> = [];
  const apply = (at: number, event: LivenessEvent) => {
    const result = step(state, event, at, config);
    state = result.state;
    for (const decision of result.decisions) {
      log.push({ at, decision });
      if (decision.kind === "schedule") alarm = decision.at;
      if (decision.kind === "cancel") alarm = null;
    }
  };
  const fireAlarmsUntil = (t: number) => {
    while (alarm !== null && alarm <= t) {
      const at = alarm;
      alarm = null;
      apply(at, { type: "deadline" });
    }
  };
  for (const [at, event] of events) {
    fireAlarmsUntil(at - 1);
    apply(at, event);
  }
  fireAlarmsUntil(until);
  const closes = log.filter((l) => l.decision.kind === "close").map((l) => ({
    at: l.at,
    reason: (l.decision as { reason: string }).reason,
  }));
  const rejects = log.filter((l) => l.decision.kind === "reject").map((l) =>
    (l.decision as { errorCode: string }).errorCode
  );
  return { state, closes, rejects, alarm };
}

const connect = (
  appState: "foreground" | "background" = "foreground",
  bg = false,
): LivenessEvent => ({
  type: "connected",
  appState,
  backgroundService: bg,
});
const toBackground = (bg = false): LivenessEvent => ({
  type: "app_state",
  appState: "background",
  backgroundService: bg,
});
const toForeground: LivenessEvent = {
  type: "app_state",
  appState: "foreground",
  backgroundService: false,
};
const appPing: LivenessEvent = { type: "ping", source: "app" };
const httpPing: LivenessEvent = { type: "ping", source: "http" };
const heartbeat: LivenessEvent = { type: "ping", source: "heartbeat" };
const replaced: LivenessEvent = { type: "replaced" };
const logout: LivenessEvent = { type: "logout" };

interface Row {
  name: string;
  mode: Mode;
  events: Timed[];
  until: number;
  closes: Array<{ at: number; reason: string }>;
  rejects?: string[];
  connected: boolean;
}

const rows: Row[] = [
  {
    name: "auto/foreground: stays connected; heartbeats are accepted",
    mode: "auto",
    events: [[T0, connect()], [T0 + 15_000, heartbeat], [T0 + 30_000, heartbeat]],
    until: T0 + 10 * W,
    closes: [],
    connected: true,
  },
  {
    name: "auto/background without service: closed at once (background)",
    mode: "auto",
    events: [[T0, connect()], [T0 + 5, toBackground(false)]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 5, reason: "background" }],
    connected: false,
  },
  {
    name: "auto: connecting while in background without service is closed at once",
    mode: "auto",
    events: [[T0, connect("background", false)]],
    until: T0 + W,
    closes: [{ at: T0, reason: "background" }],
    connected: false,
  },
  {
    name: "auto/background with service: closed exactly one window after entering background",
    mode: "auto",
    events: [[T0, connect()], [T0 + 100, toBackground(true)]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 100 + W, reason: "background_timeout" }],
    connected: false,
  },
  {
    name: "auto/background with service: heartbeats do not extend the window",
    mode: "auto",
    events: [
      [T0, connect()],
      [T0 + 100, toBackground(true)],
      [T0 + 10_000, heartbeat],
      [T0 + 100 + W - 1, heartbeat],
    ],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 100 + W, reason: "background_timeout" }],
    connected: false,
  },
  {
    name: "auto: app ping and HTTP ping are refused (ERR_NOT_MANUAL_MODE), nothing changes",
    mode: "auto",
    events: [[T0, connect()], [T0 + 100, toBackground(true)], [T0 + 200, appPing], [
      T0 + 300,
      httpPing,
    ]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 100 + W, reason: "background_timeout" }],
    rejects: ["ERR_NOT_MANUAL_MODE", "ERR_NOT_MANUAL_MODE"],
    connected: false,
  },
  {
    name: "auto/background with service: a heartbeat arriving at the deadline finds it closed",
    mode: "auto",
    events: [[T0, connect()], [T0, toBackground(true)], [T0 + W, heartbeat]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + W, reason: "background_timeout" }],
    rejects: ["NO_WEBSOCKET_CONNECTION"],
    connected: false,
  },
  {
    name: "any: back to foreground exactly at the deadline is too late",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + W, toForeground]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + W, reason: "liveness_timeout" }],
    rejects: ["NO_WEBSOCKET_CONNECTION"],
    connected: false,
  },
  {
    name: "auto: turning the background service off in background closes at once",
    mode: "auto",
    events: [[T0, connect()], [T0 + 100, toBackground(true)], [T0 + 200, toBackground(false)]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 200, reason: "background" }],
    connected: false,
  },
  {
    name: "auto: disconnect is a manual-mode call",
    mode: "auto",
    events: [[T0, connect()], [T0 + 1, { type: "disconnect" }]],
    until: T0 + W,
    closes: [],
    rejects: ["ERR_NOT_MANUAL_MODE"],
    connected: true,
  },
  {
    name: "manual/foreground: connected until disconnect()",
    mode: "manual",
    events: [[T0, connect()], [T0 + 100_000, { type: "disconnect" }]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 100_000, reason: "client_disconnect" }],
    connected: false,
  },
  {
    name: "manual/background without ping: closed exactly one window after entering background",
    mode: "manual",
    events: [[T0, connect()], [T0 + 50, toBackground()]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 50 + W, reason: "liveness_timeout" }],
    connected: false,
  },
  {
    name: "manual/background: a ping 1 ms inside the window moves the deadline to ping + window",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + W - 1, appPing]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + W - 1 + W, reason: "liveness_timeout" }],
    connected: false,
  },
  {
    name: "manual/background: HTTP pings and socket pings both extend, each from its own time",
    mode: "manual",
    events: [
      [T0, connect()],
      [T0, toBackground()],
      [T0 + 20_000, httpPing],
      [T0 + 45_000, appPing],
      [T0 + 70_000, heartbeat],
    ],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 70_000 + W, reason: "liveness_timeout" }],
    connected: false,
  },
  {
    name: "manual/background: a ping exactly at the deadline is too late (the close came first)",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + W, appPing]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + W, reason: "liveness_timeout" }],
    rejects: ["NO_WEBSOCKET_CONNECTION"],
    connected: false,
  },
  {
    name: "manual/background: going to background again does not restart the window",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + 20_000, toBackground(true)]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + W, reason: "liveness_timeout" }],
    connected: false,
  },
  {
    name: "manual: after disconnect() nothing is maintained and pings are refused",
    mode: "manual",
    events: [[T0, connect()], [T0 + 10, toBackground()], [T0 + 20, { type: "disconnect" }], [
      T0 + 30,
      appPing,
    ], [T0 + 40, { type: "disconnect" }]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 20, reason: "client_disconnect" }],
    rejects: ["NO_WEBSOCKET_CONNECTION", "NO_WEBSOCKET_CONNECTION"],
    connected: false,
  },
  {
    name: "any: back to foreground 1 ms before the deadline cancels it (manual)",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + W - 1, toForeground]],
    until: T0 + 10 * W,
    closes: [],
    connected: true,
  },
  {
    name: "any: back to foreground 1 ms before the deadline cancels it (auto + service)",
    mode: "auto",
    events: [[T0, connect()], [T0, toBackground(true)], [T0 + W - 1, toForeground]],
    until: T0 + 10 * W,
    closes: [],
    connected: true,
  },
  {
    name: "any: a new window starts when going to background again after foreground",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + 1000, toForeground], [
      T0 + 2000,
      toBackground(),
    ]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 2000 + W, reason: "liveness_timeout" }],
    connected: false,
  },
  {
    name: "replacement: the old socket closes (replaced); a new one in background keeps the window",
    mode: "manual",
    events: [
      [T0, connect()],
      [T0, toBackground()],
      [T0 + 10_000, replaced],
      [T0 + 10_000, connect("background")],
    ],
    until: T0 + 10 * W,
    closes: [
      { at: T0 + 10_000, reason: "replaced" },
      { at: T0 + W, reason: "liveness_timeout" },
    ],
    connected: false,
  },
  {
    name: "replacement: a new socket does not buy an auto-mode window more time",
    mode: "auto",
    events: [
      [T0, connect()],
      [T0, toBackground(true)],
      [T0 + W - 1, replaced],
      [T0 + W - 1, connect("background", true)],
    ],
    until: T0 + 10 * W,
    closes: [
      { at: T0 + W - 1, reason: "replaced" },
      { at: T0 + W, reason: "background_timeout" },
    ],
    connected: false,
  },
  {
    name: "replacement: a new socket in foreground cancels the window",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + 10, replaced], [T0 + 10, connect()]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 10, reason: "replaced" }],
    connected: true,
  },
  {
    name:
      "replacement at the deadline: the old connection was over already (its deadline's reason)",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + W, replaced], [T0 + W, connect()]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + W, reason: "liveness_timeout" }],
    connected: true,
  },
  {
    name: "replacement of a session without a connection closes nothing",
    mode: "auto",
    events: [[T0, replaced], [T0, connect()], [T0 + 10, {
      type: "closed",
      reason: "connection_lost",
    }], [
      T0 + 20,
      replaced,
    ]],
    until: T0 + 10 * W,
    closes: [],
    connected: false,
  },
  {
    name: "logout in foreground: closed (logged_out)",
    mode: "auto",
    events: [[T0, connect()], [T0 + 100, logout]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 100, reason: "logged_out" }],
    connected: false,
  },
  {
    name: "logout in a background window: closed (logged_out); the deadline is cancelled",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + 100, logout]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 100, reason: "logged_out" }],
    connected: false,
  },
  {
    name: "logout exactly at the deadline, before its alarm ran: the client hears of its logout",
    mode: "auto",
    events: [[T0, connect()], [T0, toBackground(true)], [T0 + W, logout]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + W, reason: "logged_out" }],
    connected: false,
  },
  {
    name: "logout without a connection closes nothing",
    mode: "manual",
    events: [[T0, connect()], [T0 + 10, { type: "disconnect" }], [T0 + 20, logout]],
    until: T0 + 10 * W,
    closes: [{ at: T0 + 10, reason: "client_disconnect" }],
    connected: false,
  },
  {
    name: "network loss in background: the window is dropped with the socket",
    mode: "manual",
    events: [[T0, connect()], [T0, toBackground()], [T0 + 10, {
      type: "closed",
      reason: "connection_lost",
    }]],
    until: T0 + 10 * W,
    closes: [],
    connected: false,
  },
];

for (const row of rows) {
  Deno.test(`engine: ${row.name}`, () => {
    const result = run(row.mode, row.events, row.until);
    assert.deepEqual(result.closes, row.closes);
    assert.deepEqual(result.rejects, row.rejects ?? []);
    assert.equal(result.state.connected, row.connected);
    if (!row.connected && row.closes.length > 0) {
      assert.equal(result.state.lastDisconnectReason, row.closes.at(-1)!.reason);
      assert.equal(result.state.deadline, null);
      assert.equal(result.alarm, null);
    }
  });
}

Deno.test("engine: the deadline never fires early — a deadline event 1 ms before re-arms", () => {
  let s = step(initialLiveness("manual"), connect(), T0, config).state;
  s = step(s, toBackground(), T0, config).state;
  const early = step(s, { type: "deadline" }, T0 + W - 1, config);
  assert.deepEqual(early.decisions, [{ kind: "schedule", at: T0 + W }]);
  assert.equal(early.state.connected, true);
  const due = step(s, { type: "deadline" }, T0 + W, config);
  assert.deepEqual(due.decisions, [{ kind: "close", reason: "liveness_timeout" }, {
    kind: "cancel",
  }]);
});

Deno.test("engine: a pong in background reports the moved deadline; foreground has none", () => {
  let s = step(initialLiveness("manual"), connect(), T0, config).state;
  assert.equal(step(s, appPing, T0 + 5, config).state.deadline, null);
  s = step(s, toBackground(), T0 + 10, config).state;
  assert.equal(s.deadline, T0 + 10 + W);
  assert.equal(step(s, appPing, T0 + 500, config).state.deadline, T0 + 500 + W);
});

Deno.test("engine: idle check closes a silent peer at lastSeen + idle, not before", () => {
  assert.deepEqual(idleCheck(T0, T0 + 44_999, config), { kind: "schedule", at: T0 + 45_000 });
  assert.deepEqual(idleCheck(T0, T0 + 45_000, config), { kind: "close", reason: "idle_timeout" });
});

Deno.test("engine: restore after a restart re-arms, records passed deadlines and shutdowns", () => {
  let s = step(initialLiveness("manual"), connect(), T0, config).state;
  const foreground = s;
  s = step(s, toBackground(), T0, config).state;
  assert.deepEqual(restore(s, T0 + 100).decisions, [{ kind: "schedule", at: T0 + W }]);
  const passed = restore(s, T0 + W + 5_000).state;
  assert.equal(passed.connected, false);
  assert.equal(passed.lastDisconnectReason, "liveness_timeout");
  assert.equal(passed.lastDisconnectAt, T0 + W);
  // Without a restart grace, a session connected in foreground is closed by the restart.
  const shut = restore(foreground, T0 + 100).state;
  assert.equal(shut.connected, false);
  assert.equal(shut.lastDisconnectReason, "server_shutdown");
  assert.equal(shut.lastDisconnectAt, T0 + 100);
});

Deno.test("engine: restart grace holds a foreground session, then closes it as server_shutdown", () => {
  const GRACE = 10_000;
  const foreground = step(initialLiveness("auto"), connect(), T0, config).state;
  const held = restore(foreground, T0 + 100, null, GRACE);
  assert.equal(held.state.connected, true, "still connected: its user stays online");
  assert.equal(held.state.deadline, T0 + 100 + GRACE);
  assert.equal(held.state.deadlineReason, "server_shutdown");
  assert.deepEqual(held.decisions, [{ kind: "schedule", at: T0 + 100 + GRACE }]);

  // Nobody comes back: the grace's deadline closes it, not a millisecond early.
  const early = step(held.state, { type: "deadline" }, T0 + 100 + GRACE - 1, config);
  assert.equal(early.state.connected, true);
  const ended = step(held.state, { type: "deadline" }, T0 + 100 + GRACE, config);
  assert.equal(ended.state.connected, false);
  assert.equal(ended.state.lastDisconnectReason, "server_shutdown");
  assert.equal(ended.state.lastDisconnectAt, T0 + 100 + GRACE);

  // Its client connects inside the grace: the grace ends, the session never stopped being
  // connected; in foreground no deadline is left.
  const back = step(held.state, connect(), T0 + 5_000, config);
  assert.equal(back.state.connected, true);
  assert.equal(back.state.deadline, null);
  assert.equal(back.state.deadlineReason, null);
  assert.deepEqual(back.decisions, [{ kind: "cancel" }]);
  // In background (manual mode), a window of its own starts: the grace is not a window.
  const manual = restore(
    step(initialLiveness("manual"), connect(), T0, config).state,
    T0 + 100,
    null,
    GRACE,
  ).state;
  const inBackground = step(manual, toBackground(), T0 + 5_000, config);
  assert.equal(inBackground.state.deadline, T0 + 5_000 + W);
  assert.equal(inBackground.state.deadlineReason, "liveness_timeout");
  // Auto mode in background without the service: closed at once, the grace's alarm cancelled.
  const gone = step(held.state, toBackground(), T0 + 5_000, config);
  assert.equal(gone.state.connected, false);
  assert.deepEqual(gone.decisions, [{ kind: "close", reason: "background" }, { kind: "cancel" }]);

  // A second crash inside the grace keeps the grace's deadline (it is on disk); after it, the
  // session is recorded as closed at the grace's end.
  assert.deepEqual(restore(held.state, T0 + 2_000, held.state.deadline, GRACE).decisions, [
    { kind: "schedule", at: T0 + 100 + GRACE },
  ]);
  const after = restore(held.state, T0 + 100 + GRACE + 1, held.state.deadline, GRACE).state;
  assert.equal(after.connected, false);
  assert.equal(after.lastDisconnectReason, "server_shutdown");
  assert.equal(after.lastDisconnectAt, T0 + 100 + GRACE);
});

Deno.test("deadline wheel: fires at or after each deadline, in order, never early", () => {
  const clock = new ManualClock(T0);
  const fired: Array<[string, number]> = [];
  const wheel = new DeadlineWheel<string>(clock, 10, (key, now) => fired.push([key, now]));
  wheel.schedule("a", T0 + 1_001);
  wheel.schedule("b", T0 + 500);
  wheel.schedule("c", T0 + 2_000);
  wheel.schedule("a", T0 + 3_003); // moved later
  wheel.cancel("c");
  clock.advance(499);
  assert.equal(fired.length, 0);
  clock.advance(10_000);
  assert.deepEqual(fired.map(([k]) => k), ["b", "a"]);
  assert.ok(fired[0][1] >= T0 + 500 && fired[0][1] < T0 + 510);
  assert.ok(fired[1][1] >= T0 + 3_003 && fired[1][1] < T0 + 3_013);
  assert.equal(wheel.size, 0);
  assert.equal(clock.pending, 0, "no timer stays armed when the wheel is empty");
  wheel.close();
});

Deno.test("deadline wheel: moving a deadline earlier re-arms the timer", () => {
  const clock = new ManualClock(T0);
  const fired: string[] = [];
  const wheel = new DeadlineWheel<string>(clock, 10, (key) => fired.push(key));
  wheel.schedule("x", T0 + 10_000);
  wheel.schedule("x", T0 + 100);
  clock.advance(100);
  assert.deepEqual(fired, ["x"]);
  wheel.close();
});

Deno.test("engine: pings within one millisecond leave the state as it is (nothing to write)", () => {
  let s = step(initialLiveness("manual"), connect(), T0, config).state;
  s = step(s, toBackground(), T0, config).state;
  const first = step(s, appPing, T0 + 7, config);
  assert.notEqual(first.state, s);
  const again = step(first.state, appPing, T0 + 7, config);
  assert.equal(again.state, first.state);
  assert.deepEqual(again.decisions, []);
  const heartbeatInForeground = step(
    step(s, toForeground, T0 + 8, config).state,
    heartbeat,
    T0 + 9,
    config,
  );
  assert.deepEqual(heartbeatInForeground.decisions, []);
});

Deno.test("engine: a replacement closes only the old socket; the session's state is untouched", () => {
  let s = step(initialLiveness("manual"), connect(), T0, config).state;
  s = step(s, toBackground(), T0, config).state;
  const result = step(s, replaced, T0 + 10, config);
  assert.deepEqual(result.decisions, [{ kind: "close", reason: "replaced" }]);
  // The same object: still connected (the user stays online), the alarm stays armed, and there
  // is nothing to write.
  assert.equal(result.state, s);
  const idle = initialLiveness("auto");
  assert.deepEqual(step(idle, replaced, T0, config), { state: idle, decisions: [] });
});

Deno.test("engine: a logout closes as logged_out and cancels the alarm of a running window", () => {
  let s = step(initialLiveness("auto"), connect(), T0, config).state;
  s = step(s, toBackground(true), T0, config).state;
  for (const at of [T0 + 10, T0 + W, T0 + W + 1]) {
    const result = step(s, logout, at, config);
    assert.deepEqual(result.decisions, [{ kind: "close", reason: "logged_out" }, {
      kind: "cancel",
    }]);
    assert.equal(result.state.connected, false);
    assert.equal(result.state.deadline, null);
    assert.equal(result.state.lastDisconnectReason, "logged_out");
    assert.equal(result.state.lastDisconnectAt, at);
  }
  const foreground = step(initialLiveness("manual"), connect(), T0, config).state;
  assert.deepEqual(step(foreground, logout, T0 + 5, config).decisions, [{
    kind: "close",
    reason: "logged_out",
  }]);
  const idle = initialLiveness("manual");
  assert.deepEqual(step(idle, logout, T0, config), { state: idle, decisions: [] });
});
