/** Metrics: hot-path fields exported at scrape time, histograms, the lag sampler, ops routes. */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { closeReasons, errorPayload } from "../contract/mod.ts";
import { answerOf } from "../gateway/errors.ts";
import {
  type ConnectionSample,
  EventLoopLagSampler,
  frameInTypes,
  GatewayMetrics,
} from "../gateway/metrics.ts";
import { mountOps, type Readiness } from "../gateway/routes/ops.ts";
import type { GatewayEnv } from "../gateway/services.ts";

async function exposition(metrics: GatewayMetrics): Promise<string> {
  return (await metrics.render()).body;
}

/** The sample lines (no comments) of the exposition, for exact-line assertions. */
async function samples(metrics: GatewayMetrics): Promise<Set<string>> {
  const body = await exposition(metrics);
  return new Set(body.split("\n").filter((line) => line !== "" && !line.startsWith("#")));
}

function assertSample(lines: Set<string>, sample: string): void {
  assert.ok(lines.has(sample), `missing '${sample}' in:\n${[...lines].join("\n")}`);
}

Deno.test("metrics: hot-path fields appear as counters at scrape time", async () => {
  const metrics = new GatewayMetrics();
  metrics.framesIn.ping += 3;
  metrics.framesIn.invalid++;
  metrics.framesOut.pong += 3;
  metrics.handshakes.ok++;
  metrics.pings.heartbeat += 2;
  metrics.pings.http++;
  const lines = await samples(metrics);
  assertSample(lines, 'gateway_frames_in_total{type="ping"} 3');
  assertSample(lines, 'gateway_frames_in_total{type="invalid"} 1');
  assertSample(lines, 'gateway_frames_in_total{type="connect"} 0');
  assertSample(lines, 'gateway_frames_in_total{type="control"} 0');
  assertSample(lines, 'gateway_frames_out_total{type="pong"} 3');
  assertSample(lines, 'gateway_frames_out_total{type="message"} 0');
  assertSample(lines, 'gateway_handshakes_total{result="ok"} 1');
  assertSample(lines, 'gateway_handshakes_total{result="timeout"} 0');
  assertSample(lines, 'gateway_pings_total{source="heartbeat"} 2');
  assertSample(lines, 'gateway_pings_total{source="http"} 1');
  assert.deepEqual(
    frameInTypes,
    [
      "connect",
      "ping",
      "app_state",
      "disconnect",
      "send",
      "start_typing",
      "end_typing",
      "invalid",
      "binary",
      "control",
    ],
  );
});

Deno.test("metrics: deltas accumulate across renders; a field set back does not lower a counter", async () => {
  const metrics = new GatewayMetrics();
  metrics.framesIn.ping += 3;
  assertSample(await samples(metrics), 'gateway_frames_in_total{type="ping"} 3');
  assertSample(await samples(metrics), 'gateway_frames_in_total{type="ping"} 3'); // no change
  metrics.framesIn.ping += 4;
  metrics.framesIn.app_state += 1;
  const second = await samples(metrics);
  assertSample(second, 'gateway_frames_in_total{type="ping"} 7');
  assertSample(second, 'gateway_frames_in_total{type="app_state"} 1');

  metrics.framesIn.ping = 0; // a reset field is a new base
  assertSample(await samples(metrics), 'gateway_frames_in_total{type="ping"} 7');
  metrics.framesIn.ping += 2;
  assertSample(await samples(metrics), 'gateway_frames_in_total{type="ping"} 9');
});

Deno.test("metrics: closes and refusals by reason and kind", async () => {
  const metrics = new GatewayMetrics();
  metrics.closed("liveness_timeout");
  metrics.closed("liveness_timeout");
  metrics.closed("connection_lost");
  metrics.refused("frame_rate");
  const lines = await samples(metrics);
  assertSample(lines, 'gateway_closes_total{reason="liveness_timeout"} 2');
  assertSample(lines, 'gateway_closes_total{reason="connection_lost"} 1');
  assertSample(lines, 'gateway_closes_total{reason="handshake_timeout"} 0');
  for (const reason of closeReasons) {
    assert.ok([...lines].some((l) => l.startsWith(`gateway_closes_total{reason="${reason}"}`)));
  }
  assertSample(lines, 'gateway_refusals_total{kind="frame_rate"} 1');
  assertSample(lines, 'gateway_refusals_total{kind="slow_consumer"} 0');
});

Deno.test("metrics: histograms observe deadlines, commits and lag", async () => {
  const metrics = new GatewayMetrics();
  metrics.deadlineFired(3);
  metrics.deadlineFired(700);
  metrics.deadlineFired(NaN); // ignored
  metrics.storeCommit(1.5);
  metrics.storeCommitFailed();
  metrics.eventLoopLag(12);
  const lines = await samples(metrics);
  assertSample(lines, 'gateway_deadline_lateness_ms_bucket{le="2"} 0');
  assertSample(lines, 'gateway_deadline_lateness_ms_bucket{le="5"} 1');
  assertSample(lines, 'gateway_deadline_lateness_ms_bucket{le="500"} 1');
  assertSample(lines, 'gateway_deadline_lateness_ms_bucket{le="1000"} 2');
  assertSample(lines, "gateway_deadline_lateness_ms_count 2");
  assertSample(lines, "gateway_deadline_lateness_ms_sum 703");
  assertSample(lines, 'gateway_store_commit_ms_bucket{le="2"} 1');
  assertSample(lines, "gateway_store_commit_ms_count 1");
  assertSample(lines, "gateway_store_commit_failures_total 1");
  assertSample(lines, 'gateway_event_loop_lag_ms_bucket{le="25"} 1');
  assertSample(lines, "gateway_event_loop_lag_ms_count 1");
});

Deno.test("metrics: gauges read their callbacks at scrape time", async () => {
  let connections: ConnectionSample[] = [
    { mode: "auto", appState: "foreground" },
    { mode: "auto", appState: "foreground" },
    { mode: "manual", appState: "background" },
    { mode: "none", appState: "foreground" },
  ];
  let users = 2;
  let store = true;
  const metrics = new GatewayMetrics({
    connections: () => connections,
    usersInMemory: () => users,
    storeReady: () => store,
  });
  let lines = await samples(metrics);
  assertSample(lines, 'gateway_connections{mode="auto",app_state="foreground"} 2');
  assertSample(lines, 'gateway_connections{mode="manual",app_state="background"} 1');
  assertSample(lines, 'gateway_connections{mode="none",app_state="foreground"} 1');
  assertSample(lines, 'gateway_connections{mode="auto",app_state="background"} 0');
  assertSample(lines, "gateway_user_states 2");
  assertSample(lines, "gateway_store_ready 1");

  connections = [];
  users = 0;
  store = false;
  lines = await samples(metrics);
  assertSample(lines, 'gateway_connections{mode="auto",app_state="foreground"} 0');
  assertSample(lines, "gateway_user_states 0");
  assertSample(lines, "gateway_store_ready 0");
});

Deno.test("metrics: a gauge without its callback is left out; process gauges are there", async () => {
  const metrics = new GatewayMetrics();
  const { contentType, body } = await metrics.render();
  assert.match(contentType, /^text\/plain; version=0\.0\.4/);
  assert.ok(!body.includes("gateway_connections"));
  assert.ok(!body.includes("gateway_user_states"));
  assert.ok(!body.includes("gateway_store_ready"));
  assert.match(body, /^process_resident_memory_bytes [1-9]\d*$/m);
  assert.match(body, /^process_heap_used_bytes [1-9]\d*$/m);
  assert.match(body, /^# HELP gateway_frames_in_total \S/m);
  assert.match(body, /^# TYPE gateway_frames_in_total counter$/m);
  assert.match(body, /^# TYPE gateway_event_loop_lag_ms histogram$/m);
});

Deno.test("metrics: each GatewayMetrics has its own registry", async () => {
  const a = new GatewayMetrics();
  const b = new GatewayMetrics();
  a.framesIn.ping = 5;
  assertSample(await samples(a), 'gateway_frames_in_total{type="ping"} 5');
  assertSample(await samples(b), 'gateway_frames_in_total{type="ping"} 0');
});

Deno.test("metrics: the lag sampler samples while started and clears its timer on stop", async () => {
  const lags: number[] = [];
  const sampler = new EventLoopLagSampler({ eventLoopLag: (ms) => lags.push(ms) }, {
    intervalMs: 5,
  });
  assert.equal(sampler.running, false);
  sampler.start();
  sampler.start(); // idempotent: still one timer (the op sanitizer would see a second)
  assert.equal(sampler.running, true);
  await new Promise((resolve) => setTimeout(resolve, 60));
  sampler.stop();
  assert.equal(sampler.running, false);
  assert.ok(lags.length >= 2, `only ${lags.length} samples`);
  assert.ok(lags.every((lag) => lag >= 0 && Number.isFinite(lag)));
  const count = lags.length;
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(lags.length, count);
  sampler.stop(); // a second stop is harmless

  assert.throws(() => new EventLoopLagSampler({ eventLoopLag() {} }, { intervalMs: 0 }));
});

Deno.test("metrics: the lag sampler measures a blocked loop and feeds the histogram", async () => {
  const metrics = new GatewayMetrics();
  const sampler = new EventLoopLagSampler(metrics, { intervalMs: 5 });
  sampler.start();
  await new Promise((resolve) => setTimeout(resolve, 1));
  const until = performance.now() + 40;
  while (performance.now() < until) { /* block the loop */ }
  await new Promise((resolve) => setTimeout(resolve, 20));
  sampler.stop();
  const body = await exposition(metrics);
  const count = Number(/^gateway_event_loop_lag_ms_count (\d+)$/m.exec(body)?.[1]);
  const sum = Number(/^gateway_event_loop_lag_ms_sum (\S+)$/m.exec(body)?.[1]);
  assert.ok(count >= 1, body);
  assert.ok(sum >= 25, `lag sum ${sum} after a 40 ms block`);
});

// ---- ops routes ----

function opsApp(options: { ready?: Readiness; metricsToken?: string } = {}) {
  const app = new Hono<GatewayEnv>();
  const metrics = new GatewayMetrics();
  mountOps(app, {
    metrics,
    ready: () => options.ready ?? { ready: true, checks: { store: true, draining: true } },
    metricsToken: options.metricsToken,
  });
  // As app.ts does: a thrown GatewayError becomes the contract's error payload.
  app.onError((error, c) => {
    const { status, payload } = answerOf(error);
    return c.json(payload, status as 400);
  });
  return { app, metrics };
}

Deno.test("ops: /healthz answers ok", async () => {
  const { app } = opsApp({ ready: { ready: false, checks: { store: false } } });
  const response = await app.request("/healthz");
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: "ok" });
  assert.equal(response.headers.get("cache-control"), "no-store");
});

Deno.test("ops: /readyz is 200 when ready and 503 with its checks when not", async () => {
  const ready = opsApp({ ready: { ready: true, checks: { store: true, draining: true } } });
  const yes = await ready.app.request("/readyz");
  assert.equal(yes.status, 200);
  assert.deepEqual(await yes.json(), { status: "ready", checks: { store: true, draining: true } });

  const notReady = opsApp({ ready: { ready: false, checks: { store: false, draining: true } } });
  const no = await notReady.app.request("/readyz");
  assert.equal(no.status, 503);
  assert.deepEqual(await no.json(), {
    status: "not_ready",
    checks: { store: false, draining: true },
  });
});

Deno.test("ops: /metrics serves the exposition with its content type", async () => {
  const { app, metrics } = opsApp();
  metrics.framesIn.ping += 3;
  const response = await app.request("/metrics");
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), metrics.registry.contentType);
  assert.match(await response.text(), /^gateway_frames_in_total\{type="ping"\} 3$/m);
});

Deno.test("ops: /metrics with a token requires it as a bearer", async () => {
  const { app } = opsApp({ metricsToken: "scrape-secret" });
  const expected = errorPayload(
    "ERR_INVALID_API_KEY",
    "The metrics endpoint requires `Authorization: Bearer <metrics token>`.",
  );
  for (
    const headers of [
      {},
      { authorization: "Bearer wrong" },
      { authorization: "Bearer scrape-secre" },
      { authorization: "Bearer scrape-secret-and-more" },
      { authorization: "Basic scrape-secret" },
      { authorization: "scrape-secret" },
    ] as Record<string, string>[]
  ) {
    const refused = await app.request("/metrics", { headers });
    assert.equal(refused.status, 401, JSON.stringify(headers));
    assert.deepEqual(await refused.json(), expected);
  }
  const allowed = await app.request("/metrics", {
    headers: { authorization: "Bearer scrape-secret" },
  });
  assert.equal(allowed.status, 200);
  assert.match(await allowed.text(), /gateway_frames_in_total/);
  const lowerCaseScheme = await app.request("/metrics", {
    headers: { authorization: "bearer scrape-secret" },
  });
  assert.equal(lowerCaseScheme.status, 200);
  await lowerCaseScheme.body?.cancel();
});

Deno.test("ops: an empty metrics token is refused at mount", () => {
  assert.throws(() => opsApp({ metricsToken: "" }), /must not be empty/);
});
