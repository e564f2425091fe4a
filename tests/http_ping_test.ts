/**
 * SPEC §4: "A ping accepted for the session over HTTP counts as life for its connection too: a
 * backgrounded app that can only make HTTP requests keeps its connection until last ping +
 * window." At the default timings (30 s window, 45 s idle timeout), on fake time, with a real
 * WebSocket and real HTTP requests.
 */
import assert from "node:assert/strict";
import { DEFAULTS, ManualClock } from "../gateway/mod.ts";
import { login, startTestGateway, TestSocket } from "./support/harness.ts";

const DEFAULT_TIMINGS = {
  livenessWindowMs: DEFAULTS.livenessWindowMs,
  heartbeatIntervalMs: DEFAULTS.heartbeatIntervalMs,
  pongTimeoutMs: DEFAULTS.pongTimeoutMs,
  idleTimeoutMs: DEFAULTS.idleTimeoutMs,
  handshakeTimeoutMs: DEFAULTS.handshakeTimeoutMs,
  deadlineTickMs: DEFAULTS.deadlineTickMs,
  persistDelayMs: 0,
};

Deno.test("an app that pings only over HTTP keeps its background connection, then closes at last ping + window", async () => {
  const clock = new ManualClock(Date.now());
  // Time moves only when the test says so; timers already due (the writer's group commit)
  // run on every real millisecond.
  const pump = setInterval(() => clock.advance(0), 1);
  try {
    await using gateway = await startTestGateway(DEFAULT_TIMINGS, { clock });
    const { credential } = await login(gateway, "manual");
    const { socket } = await TestSocket.connect(gateway, credential);
    socket.send({ type: "app_state", id: 1, state: "background" });
    const entered = await socket.next("state");
    assert.equal(entered.backgroundDeadline, clock.now() + DEFAULTS.livenessWindowMs);

    const httpPing = async () => {
      const res = await gateway.rest.session.ping({
        headers: { authorization: `Bearer ${credential}` },
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body as { backgroundDeadline: number; connected: boolean };
    };

    // Every 20 s for 5 minutes, nothing on the socket: well past the 45 s idle timeout.
    let lastPingAt = clock.now();
    for (let elapsed = 0; elapsed < 300_000; elapsed += 20_000) {
      clock.advance(20_000);
      lastPingAt = clock.now();
      const reply = await httpPing();
      assert.equal(reply.connected, true, `closed after ${elapsed + 20_000} ms`);
      assert.equal(reply.backgroundDeadline, lastPingAt + DEFAULTS.livenessWindowMs);
    }
    assert.equal(socket.ws.readyState, WebSocket.OPEN);
    assert.deepEqual(socket.unread(), [], "no closing frame");

    // The app stops pinging: open 1 ms before last ping + window …
    clock.advance(DEFAULTS.livenessWindowMs - 1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(socket.unread(), [], "never early");
    // … and closed at it, for the liveness rule (not as idle).
    clock.advance(1 + DEFAULTS.deadlineTickMs);
    const closing = await socket.next("closing");
    assert.equal(closing.reason, "liveness_timeout");
    assert.equal((await socket.closed).code, 4003);
    const status = await gateway.rest.session.status({
      headers: { authorization: `Bearer ${credential}` },
    });
    const view = status.body as { lastDisconnectReason: string; lastDisconnectAt: number };
    assert.equal(view.lastDisconnectReason, "liveness_timeout");
    assert.ok(view.lastDisconnectAt >= lastPingAt + DEFAULTS.livenessWindowMs);
  } finally {
    clearInterval(pump);
  }
});
