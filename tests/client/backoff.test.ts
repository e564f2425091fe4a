/** Pure tests: backoff bounds, the reconnect policy, the settings builder, errors. */
import assert from "node:assert/strict";
import {
  AppSettingsBuilder,
  backoffCeiling,
  backoffDelay,
  closeReasons,
  type ConnectionEndReason,
  decideReconnect,
  DEFAULT_BACKOFF,
  GatewayError,
} from "../../client/mod.ts";

/** A deterministic random source (mulberry32), so a failure can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("backoff: the documented bounds hold for every attempt", () => {
  const { minDelayMs, maxDelayMs } = DEFAULT_BACKOFF;
  assert.equal(minDelayMs, 500);
  assert.equal(maxDelayMs, 20_000);
  const random = seeded(42);
  for (let attempt = 0; attempt < 40; attempt++) {
    const ceiling = backoffCeiling(attempt);
    assert.equal(ceiling, Math.min(maxDelayMs, minDelayMs * 2 ** attempt));
    for (let i = 0; i < 200; i++) {
      const delay = backoffDelay(attempt, random);
      assert.ok(delay >= minDelayMs, `attempt ${attempt}: ${delay} < floor`);
      assert.ok(delay <= maxDelayMs, `attempt ${attempt}: ${delay} > cap`);
      assert.ok(
        delay < Math.max(minDelayMs + 1, ceiling),
        `attempt ${attempt}: ${delay} ≥ ceiling`,
      );
      assert.equal(delay, Math.floor(delay));
    }
  }
});

Deno.test("backoff: full jitter spans the interval; the extremes of random give its ends", () => {
  const options = { minDelayMs: 100, maxDelayMs: 5_000 };
  assert.equal(backoffDelay(0, () => 0, options), 100);
  assert.equal(backoffDelay(3, () => 0, options), 100);
  assert.equal(backoffDelay(3, () => 0.5, options), 100 + Math.floor(0.5 * 700));
  assert.equal(backoffDelay(3, () => 0.9999999, options), 799);
  assert.equal(backoffDelay(10, () => 0.9999999, options), 4_999);
  // Out-of-range random values are clamped rather than trusted.
  assert.equal(backoffDelay(10, () => 7, options), 4_999);
  assert.equal(backoffDelay(10, () => -1, options), 100);
  // Spread: over many draws at a capped attempt, delays cover most of the interval.
  const random = seeded(7);
  const delays = Array.from({ length: 2_000 }, () => backoffDelay(20, random, options));
  assert.ok(Math.min(...delays) < 300 && Math.max(...delays) > 4_700);
});

Deno.test("backoff: huge attempt numbers stay finite", () => {
  assert.equal(backoffCeiling(1e9), DEFAULT_BACKOFF.maxDelayMs);
  assert.ok(Number.isFinite(backoffDelay(Number.MAX_SAFE_INTEGER, () => 0.5)));
});

Deno.test("policy: reconnect decisions for every mode, app state and reason", () => {
  const terminal = new Set([
    "client_disconnect",
    "logged_out",
    "unauthorized",
    "replaced",
    "destroyed",
  ]);
  const network = new Set([
    "network_lost",
    "pong_timeout",
    "handshake_timeout",
    "idle_timeout",
    "slow_consumer",
    "server_shutdown",
  ]);
  const reasons: ConnectionEndReason[] = [
    ...closeReasons,
    "network_lost",
    "pong_timeout",
    "handshake_timeout",
    "destroyed",
  ];
  for (const reason of reasons) {
    const base = { loggedIn: true, wantConnected: true, reason } as const;
    const autoFg = decideReconnect({ ...base, mode: "auto", appState: "foreground" });
    const autoBg = decideReconnect({ ...base, mode: "auto", appState: "background" });
    const manualFg = decideReconnect({ ...base, mode: "manual", appState: "foreground" });
    const manualBg = decideReconnect({ ...base, mode: "manual", appState: "background" });
    if (terminal.has(reason)) {
      assert.deepEqual([autoFg, autoBg, manualFg, manualBg], ["never", "never", "never", "never"]);
    } else {
      assert.equal(autoFg, "retry", reason);
      assert.equal(autoBg, "when_foreground", reason);
      assert.equal(manualFg, network.has(reason) ? "retry" : "never", reason);
      assert.equal(manualBg, "never", reason);
    }
    // Nothing reconnects without a user, or after disconnect() in manual mode.
    for (const mode of ["auto", "manual"] as const) {
      assert.equal(
        decideReconnect({ ...base, mode, appState: "foreground", loggedIn: false }),
        "never",
      );
      assert.equal(
        decideReconnect({ ...base, mode, appState: "foreground", wantConnected: false }),
        "never",
      );
    }
  }
});

Deno.test("settings builder: produces the contract's init body", () => {
  assert.deepEqual(
    new AppSettingsBuilder().setRegion("us").subscribePresenceForAllUsers()
      .autoEstablishSocketConnection(false).build(),
    { region: "us", subscriptionType: "allUsers", autoEstablishSocketConnection: false },
  );
  assert.deepEqual(
    new AppSettingsBuilder().setRegion("eu").subscribePresenceForRoles(["admin", "mod"]).build(),
    { region: "eu", subscriptionType: "roles", roles: ["admin", "mod"] },
  );
  assert.deepEqual(
    new AppSettingsBuilder().setRegion("eu").subscribePresenceForRoles(["x"])
      .subscribePresenceForFriends().build(),
    { region: "eu", subscriptionType: "friends" },
  );
  assert.throws(() => new AppSettingsBuilder().build(), /setRegion/);
});

Deno.test("GatewayError: carries the contract payload", () => {
  const error = new GatewayError("NOT_INITIALIZED");
  assert.equal(error.errorCode, "NOT_INITIALIZED");
  assert.equal(error.errorDescription, "init() must be called first.");
  assert.ok(error instanceof Error);
  assert.deepEqual(error.toJSON(), {
    errorCode: "NOT_INITIALIZED",
    errorDescription: "init() must be called first.",
  });
  const fromServer = GatewayError.fromPayload({
    errorCode: "ERR_BAD_REQUEST",
    errorDescription: "bad",
    details: { issues: [] },
  });
  assert.deepEqual(fromServer.details, { issues: [] });
  assert.equal(GatewayError.fromPayload("<html>", 502).errorCode, "ERR_INTERNAL");
});
