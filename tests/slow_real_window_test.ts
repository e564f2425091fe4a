/**
 * The real default window (30 000 ms), end to end. Opt-in (it takes ~31 s): `RUN_SLOW=1`.
 * CI runs it. Everything else uses a short window or fake time.
 */
import assert from "node:assert/strict";
import { DEFAULTS } from "../gateway/mod.ts";
import { login, startTestGateway, TestSocket } from "./support/harness.ts";

Deno.test({
  name: "slow: the real 30 s window closes manual and auto+service sessions on time",
  ignore: Deno.env.get("RUN_SLOW") !== "1",
  async fn() {
    // Only the timing defaults: no FAST overrides.
    await using gateway = await startTestGateway({
      livenessWindowMs: DEFAULTS.livenessWindowMs,
      heartbeatIntervalMs: DEFAULTS.heartbeatIntervalMs,
      pongTimeoutMs: DEFAULTS.pongTimeoutMs,
      idleTimeoutMs: DEFAULTS.idleTimeoutMs,
      deadlineTickMs: DEFAULTS.deadlineTickMs,
    });
    assert.equal(gateway.config.livenessWindowMs, 30_000);
    const manual = await TestSocket.connect(gateway, (await login(gateway, "manual")).credential);
    const auto = await TestSocket.connect(gateway, (await login(gateway, "auto")).credential);

    manual.socket.send({ type: "app_state", state: "background" });
    auto.socket.send({ type: "app_state", state: "background", backgroundService: true });
    const manualDeadline = (await manual.socket.next("state")).backgroundDeadline!;
    const autoDeadline = (await auto.socket.next("state")).backgroundDeadline!;
    const entered = Date.now();
    assert.ok(Math.abs(manualDeadline - entered - 30_000) < 100);

    const [m, a] = await Promise.all([manual.socket.closed, auto.socket.closed]);
    assert.equal(m.code, 4003);
    assert.equal(a.code, 4002);
    for (const [closedAt, deadline] of [[m.at, manualDeadline], [a.at, autoDeadline]]) {
      assert.ok(closedAt >= deadline, `closed ${deadline - closedAt} ms early`);
      assert.ok(closedAt <= deadline + 250, `closed ${closedAt - deadline} ms late`);
    }
  },
});
