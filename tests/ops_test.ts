/**
 * Operations, on a real gateway: what `/metrics` counts after real traffic, `/healthz` and
 * `/readyz`, the metrics token, and the JSON logs (levels, no secrets).
 */
import assert from "node:assert/strict";
import { createLogger, type LogLevel } from "../gateway/log.ts";
import { API_KEY, login, startTestGateway, TestSocket } from "./support/harness.ts";

/** The value of one series in a Prometheus text exposition. */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  assert.ok(line !== undefined, `no series ${series}`);
  return Number(line.slice(series.length + 1));
}

Deno.test("/metrics counts what happened: handshakes, frames, pings, closes, refusals", async () => {
  await using gateway = await startTestGateway({ frameRatePerSec: 10 });
  const { credential } = await login(gateway, "manual");
  const { socket } = await TestSocket.connect(gateway, credential);
  socket.send({ type: "ping", id: 1, source: "app" });
  await socket.next("pong");
  socket.sendRaw("not json");
  await socket.next("error");
  await gateway.rest.session.ping({ headers: { authorization: `Bearer ${credential}` } });
  // A flood: refused past the budget, then closed as rate_limited.
  for (let i = 0; i < 60 && socket.ws.readyState === WebSocket.OPEN; i++) {
    socket.send({ type: "ping", id: 100 + i });
  }
  assert.equal((await socket.closed).code, 4008);

  const res = await fetch(`${gateway.url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
  const text = await res.text();
  assert.equal(sample(text, 'gateway_handshakes_total{result="ok"}'), 1);
  assert.equal(sample(text, 'gateway_frames_in_total{type="connect"}'), 1);
  assert.ok(sample(text, 'gateway_frames_in_total{type="ping"}') >= 2);
  assert.equal(sample(text, 'gateway_frames_in_total{type="invalid"}'), 1);
  assert.equal(sample(text, 'gateway_frames_out_total{type="connected"}'), 1);
  assert.ok(sample(text, 'gateway_frames_out_total{type="pong"}') >= 2);
  assert.equal(sample(text, 'gateway_pings_total{source="http"}'), 1);
  assert.equal(sample(text, 'gateway_pings_total{source="app"}'), 1);
  assert.ok(sample(text, 'gateway_pings_total{source="heartbeat"}') >= 1);
  assert.equal(sample(text, 'gateway_closes_total{reason="rate_limited"}'), 1);
  assert.ok(sample(text, 'gateway_refusals_total{kind="frame_rate"}') >= 20);
  assert.ok(sample(text, "gateway_store_commit_ms_count") >= 1);
  assert.equal(sample(text, "gateway_store_ready"), 1);
  assert.ok(sample(text, "process_resident_memory_bytes") > 0);
});

Deno.test("/healthz, /readyz, and /metrics behind METRICS_TOKEN", async () => {
  await using gateway = await startTestGateway({ metricsToken: "scrape_token_for_tests" });
  assert.deepEqual(await (await fetch(`${gateway.url}/healthz`)).json(), { status: "ok" });
  const ready = await fetch(`${gateway.url}/readyz`);
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), {
    status: "ready",
    checks: { store: true, accepting: true },
  });
  const refused = await fetch(`${gateway.url}/metrics`);
  assert.equal(refused.status, 401);
  assert.equal((await refused.json()).errorCode, "ERR_INVALID_API_KEY");
  const allowed = await fetch(`${gateway.url}/metrics`, {
    headers: { authorization: "Bearer scrape_token_for_tests" },
  });
  assert.equal(allowed.status, 200);
  await allowed.body?.cancel();
});

Deno.test("logs are JSON lines at the configured level, with no credential, token or key", async () => {
  const lines: string[] = [];
  const logger = (level: LogLevel) => createLogger(level, (line) => lines.push(line));
  let credential: string;
  let authToken: string;
  {
    await using gateway = await startTestGateway({}, { logger: logger("debug") });
    // An auth token, a login with it, a connection closed by a rule.
    const created = await fetch(`${gateway.url}/v1/apps/demo/users/superhero2/auth_tokens`, {
      method: "POST",
      headers: { "content-type": "application/json", ...API_KEY },
      body: "{}",
    });
    authToken = (await created.json()).authToken;
    const res = await gateway.rest.login({
      params: { appId: "demo" },
      body: { authToken, mode: "auto" },
    });
    credential = (res.body as { session: { credential: string } }).session.credential;
    const { socket } = await TestSocket.connect(gateway, credential);
    socket.send({ type: "app_state", state: "background" });
    assert.equal((await socket.closed).code, 4001);
  }
  assert.ok(lines.length > 0);
  for (const line of lines) {
    const entry = JSON.parse(line);
    assert.equal(typeof entry.time, "string");
    assert.ok(["debug", "info", "warn", "error"].includes(entry.level));
    assert.equal(typeof entry.event, "string");
    for (const secret of [credential, authToken, "dev_api_key__not_secret"]) {
      assert.ok(!line.includes(secret), `a secret in the log: ${line}`);
    }
  }
  const closed = lines.map((l) => JSON.parse(l)).find((e) => e.event === "connection.closed");
  assert.equal(closed?.reason, "background");
  assert.equal(closed?.uid, "superhero2");

  lines.length = 0;
  {
    await using gateway = await startTestGateway({}, { logger: logger("warn") });
    const { credential } = await login(gateway, "auto");
    const { socket } = await TestSocket.connect(gateway, credential);
    socket.send({ type: "app_state", state: "background" });
    await socket.closed;
  }
  assert.ok(
    lines.every((l) => ["warn", "error"].includes(JSON.parse(l).level)),
    "nothing below the level",
  );
});
