/**
 * The attacks of the security review, replayed from outside on loopback: each test is one
 * finding against the previous transport (Deno.serve) and asserts what a user or an operator
 * sees now: frames, close codes, error payloads, HTTP statuses, the process staying up and its
 * memory staying bounded. Real processes where the open-file limit or memory matter; raw
 * sockets (tests/support/raw_ws.ts, node:net for other source addresses) where the WebSocket
 * API cannot say what the attacker says.
 */
import assert from "node:assert/strict";
import net from "node:net";
import type { Buffer } from "node:buffer";
import {
  closeCodeTable,
  type ErrorCode,
  type SendMessageReply,
  type ServerFrame,
  ServerFrameSchema,
  statusOf,
} from "../contract/mod.ts";
import { DEV_APP } from "../gateway/mod.ts";
import { createLogger } from "../gateway/log.ts";
import {
  API_KEY,
  delay,
  login,
  startTestGateway,
  type TestGateway,
  TestSocket,
} from "./support/harness.ts";
import { GatewayProcess } from "./support/process.ts";
import {
  clientFrame,
  closeCodeOf,
  FrameParser,
  OPCODE,
  type RawFrame,
  RawWebSocket,
  textFrame,
  textOf,
  upgradeRequest,
  writeAll,
} from "./support/raw_ws.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// helpers

interface HttpAnswer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

function parseHttp(raw: string): HttpAnswer {
  const end = raw.indexOf("\r\n\r\n");
  assert.ok(end >= 0, `not an HTTP answer: ${JSON.stringify(raw.slice(0, 200))}`);
  const [statusLine, ...lines] = raw.slice(0, end).split("\r\n");
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return {
    status: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? NaN),
    headers,
    body: raw.slice(end + 4),
  };
}

/** Asserts an answer carries the contract's error payload with this code and its status. */
function assertErrorAnswer(answer: HttpAnswer, code: ErrorCode): Record<string, unknown> {
  assert.equal(answer.status, statusOf(code), answer.body);
  assert.equal(answer.headers.get("content-type")?.startsWith("application/json"), true);
  const body = JSON.parse(answer.body) as Record<string, unknown>;
  assert.equal(body.errorCode, code);
  assert.equal(typeof body.errorDescription, "string");
  return body;
}

/**
 * Writes `request` on a new connection and reads until the server ends it (or `timeoutMs`):
 * everything received, and how it ended. The client never closes its side first.
 */
async function exchange(
  port: number,
  request: string | Uint8Array,
  timeoutMs = 5_000,
): Promise<{ raw: string; end: "eof" | "reset" | "timeout"; afterMs: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const started = Date.now();
  const chunks: Uint8Array[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const reading = (async (): Promise<"eof" | "reset"> => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) return "eof";
        chunks.push(buffer.slice(0, n));
      }
    } catch {
      return "reset";
    }
  })();
  try {
    await writeAll(conn, typeof request === "string" ? encoder.encode(request) : request);
  } catch { /* refused while writing: what was answered is still read */ }
  const end = await Promise.race([reading, timedOut]);
  const afterMs = Date.now() - started;
  clearTimeout(timer);
  conn.close();
  await reading;
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const c of chunks) {
    all.set(c, offset);
    offset += c.byteLength;
  }
  return { raw: decoder.decode(all), end, afterMs };
}

/** A TCP connection from `localAddress` (node:net: Deno.connect cannot choose one). */
interface Probe {
  readonly socket: net.Socket;
  connectedAt: number | null;
  endedAt: number | null;
  readonly chunks: Uint8Array[];
  readonly ended: Promise<void>;
}

function probe(port: number, localAddress: string, request: string): Probe {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress });
  const chunks: Uint8Array[] = [];
  const p: Probe = {
    socket,
    connectedAt: null,
    endedAt: null,
    chunks,
    ended: new Promise<void>((resolve) => {
      socket.on("connect", () => {
        p.connectedAt = Date.now();
        socket.write(request);
      });
      socket.on("data", (chunk: Buffer) => chunks.push(new Uint8Array(chunk)));
      socket.on("error", () => {});
      socket.on("close", () => {
        p.endedAt = Date.now();
        resolve();
      });
    }),
  };
  return p;
}

function received(p: Probe): Uint8Array {
  const all = new Uint8Array(p.chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const c of p.chunks) {
    all.set(c, offset);
    offset += c.byteLength;
  }
  return all;
}

/** Drops every probe still open and waits until all are gone. */
async function dropAll(probes: Probe[]): Promise<void> {
  for (const p of probes) if (p.endedAt === null) p.socket.destroy();
  await Promise.all(probes.map((p) => p.ended));
}

/** Waits for every probe to end, up to `timeoutMs`; the number still open after it. */
async function allEnded(probes: Probe[], timeoutMs: number): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(probes.map((p) => p.ended)),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
  ]);
  clearTimeout(timer);
  return probes.filter((p) => p.endedAt === null).length;
}

/** The server frames after a raw upgrade answer (the 101's head stripped). */
function framesAfterHead(bytes: Uint8Array): RawFrame[] {
  let at = -1;
  for (let i = 0; i + 3 < bytes.byteLength; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      at = i + 4;
      break;
    }
  }
  if (at < 0) return [];
  const parser = new FrameParser();
  parser.push(bytes.subarray(at));
  const frames: RawFrame[] = [];
  for (let f = parser.next(); f !== null; f = parser.next()) frames.push(f);
  return frames;
}

/** Parses a server text frame and checks it against the contract. */
function serverFrame(frame: RawFrame): ServerFrame {
  const parsed = ServerFrameSchema.safeParse(JSON.parse(textOf(frame)));
  assert.ok(parsed.success, `invalid server frame: ${textOf(frame)}`);
  return parsed.data;
}

/** `promise`, or an assertion failure after `ms` (a test fails instead of hanging). */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new assert.AssertionError({ message: what })), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** One sample of the gateway's /metrics, e.g. `gateway_frames_in_total{type="binary"}`. */
async function metric(url: string, sample: string): Promise<number> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  const line = text.split("\n").find((l) => l.startsWith(sample + " "));
  assert.ok(line !== undefined, `no ${sample} in /metrics`);
  return Number(line.slice(sample.length + 1));
}

async function healthz(url: string): Promise<number> {
  const res = await fetch(`${url}/healthz`);
  await res.body?.cancel();
  return res.status;
}

const ADDRESSES = Array.from({ length: 19 }, (_, i) => `127.0.0.${i + 2}`);
const PARTIAL_HEAD = "GET / HTTP/1.1\r\nHost: x\r\n";

// ---------------------------------------------------------------------------------------------
// 1. Too many connections must not kill the process

Deno.test("1: 1 100 unfinished heads and 1 100 WebSockets under ulimit -n 1024: shed, timed out, the process stays up", async () => {
  const HEADERS_TIMEOUT = 1_000;
  const HANDSHAKE_TIMEOUT = 1_500;
  const CLOSE_TIMEOUT = 1_000;
  await using proc = await GatewayProcess.start({
    openFiles: 1024,
    env: {
      HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT),
      HANDSHAKE_TIMEOUT_MS: String(HANDSHAKE_TIMEOUT),
      CLOSE_TIMEOUT_MS: String(CLOSE_TIMEOUT),
      LOG_LEVEL: "error",
    },
  });
  try {
    // --- heads that never end ---
    const heads = Array.from(
      { length: 1_100 },
      (_, i) => probe(proc.port, ADDRESSES[i % ADDRESSES.length], PARTIAL_HEAD),
    );
    const headsOpen = await allEnded(heads, 20_000);
    assert.ok(await proc.alive(), `the process died:\n${proc.output.slice(-20).join("\n")}`);
    assert.equal(headsOpen, 0, "every unfinished head was ended by the gateway");
    const timedOut = heads.filter((p) => decoder.decode(received(p)).startsWith("HTTP/1.1 408"));
    const unanswered = heads.filter((p) => received(p).byteLength === 0).length;
    const atCapacity = heads.filter((p) => decoder.decode(received(p)).startsWith("HTTP/1.1 503"));
    // Every head ends by the head timeout (+ node:http's check interval, ≤ 1 s): answered 408;
    // or, over the connection cap, answered 503 (a few a second per address) or dropped.
    const slowest = Math.max(
      ...heads.filter((p) => p.connectedAt !== null).map((p) => p.endedAt! - p.connectedAt!),
    );
    console.log(
      `heads: ${timedOut.length} answered 408, ${atCapacity.length} answered 503, ` +
        `${unanswered} dropped without an answer; the last ended ${slowest} ms after its connect`,
    );
    assert.ok(timedOut.length > 0, "some heads were accepted and timed out");
    assert.equal(
      timedOut.length + atCapacity.length + unanswered,
      heads.length,
      "no other answer than 408 and 503",
    );
    for (const p of atCapacity) {
      assertErrorAnswer(parseHttp(decoder.decode(received(p))), "ERR_SERVICE_UNAVAILABLE");
    }
    assert.ok(slowest <= 3 * HEADERS_TIMEOUT + 1_000, `a head was held ${slowest} ms`);
    assertErrorAnswer(parseHttp(decoder.decode(received(timedOut[0]))), "ERR_REQUEST_TIMEOUT");
    assert.equal(await healthz(proc.url), 200, "/healthz answers once the flood is over");

    // --- WebSockets that never send their connect frame ---
    const sockets = Array.from(
      { length: 1_100 },
      (_, i) => probe(proc.port, ADDRESSES[i % ADDRESSES.length], upgradeRequest("/v1/ws")),
    );
    const socketsOpen = await allEnded(sockets, 20_000);
    assert.ok(await proc.alive(), `the process died:\n${proc.output.slice(-20).join("\n")}`);
    assert.equal(socketsOpen, 0, "every WebSocket was ended by the gateway");
    const upgraded = sockets.filter((p) =>
      decoder.decode(received(p).subarray(0, 12)) === "HTTP/1.1 101"
    );
    const slowestSocket = Math.max(...upgraded.map((p) => p.endedAt! - p.connectedAt!));
    console.log(
      `sockets: ${upgraded.length} upgraded, ${sockets.length - upgraded.length} refused or ` +
        `dropped; the last upgraded one ended ${slowestSocket} ms after its connect`,
    );
    assert.ok(upgraded.length > 0, "some upgrades were accepted");
    // Each upgraded socket got `closing` handshake_timeout and 4010; it never answered the
    // close, and lost its TCP connection at the close timeout.
    for (const p of upgraded) {
      const frames = framesAfterHead(received(p));
      const closing = frames.filter((f) => f.opcode === OPCODE.text).map(serverFrame)
        .find((f) => f.type === "closing");
      assert.deepEqual(
        closing === undefined ? undefined : [closing.type, closing.reason, closing.code],
        ["closing", "handshake_timeout", 4010],
      );
      const close = frames.find((f) => f.opcode === OPCODE.close);
      assert.equal(close === undefined ? undefined : closeCodeOf(close), 4010);
    }
    assert.ok(
      slowestSocket <= 3 * (HANDSHAKE_TIMEOUT + CLOSE_TIMEOUT),
      `a socket was held ${slowestSocket} ms`,
    );
    assert.equal(await healthz(proc.url), 200, "/healthz answers once the flood is over");
    assert.ok(await proc.alive());
    await Promise.all([dropAll(heads), dropAll(sockets)]);
  } finally {
    await proc.crash();
    await proc.cleanup();
  }
});

Deno.test("1: the per-address cap answers 429 with the error payload; other addresses still get in", async () => {
  await using gateway = await startTestGateway({ maxConnectionsPerIp: 4 });
  // Four connections from 127.0.0.1 that hold their slot (an unfinished head).
  const held = Array.from({ length: 4 }, () => probe(gateway.port, "127.0.0.1", PARTIAL_HEAD));
  try {
    while (held.some((p) => p.connectedAt === null && p.endedAt === null)) await delay(10);
    assert.ok(held.every((p) => p.endedAt === null), "the four connections were accepted");
    await delay(100);
    const refused = await exchange(
      gateway.port,
      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    const body = assertErrorAnswer(parseHttp(refused.raw), "ERR_TOO_MANY_REQUESTS");
    assert.match(String(body.errorDescription), /Too many connections from this address/);
    assert.equal(refused.end, "eof", "the refused connection is closed after its answer");

    // A WebSocket upgrade from the same address reads the same 429.
    await using ws = await RawWebSocket.open(gateway.port);
    assert.equal(ws.status, 429, ws.responseHead);

    // Another address is not affected.
    const other = probe(
      gateway.port,
      "127.0.0.9",
      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    await other.ended;
    assert.equal(parseHttp(decoder.decode(received(other))).status, 200);

    // A slot freed is a slot again.
    held[0].socket.destroy();
    await held[0].ended;
    await delay(100);
    const again = await exchange(
      gateway.port,
      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.equal(parseHttp(again.raw).status, 200);
  } finally {
    await dropAll(held);
  }
});

Deno.test("1: past MAX_CONNECTIONS a connection reads 503 with the error payload; counted and logged", async () => {
  const lines: string[] = [];
  await using gateway = await startTestGateway(
    { maxConnections: 8, maxConnectionsPerIp: 8, headersTimeoutMs: 10_000 },
    { logger: createLogger("warn", (line) => lines.push(line)) },
  );
  // Eight unfinished heads from eight addresses hold every slot.
  const held = Array.from(
    { length: 8 },
    (_, i) => probe(gateway.port, ADDRESSES[i], PARTIAL_HEAD),
  );
  try {
    await delay(200);
    const refused = await exchange(
      gateway.port,
      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    const body = assertErrorAnswer(parseHttp(refused.raw), "ERR_SERVICE_UNAVAILABLE");
    assert.match(String(body.errorDescription), /connection limit/);
    assert.equal(refused.end, "eof", "the refused connection is closed after its answer");
    assert.equal(held.filter((p) => p.endedAt !== null).length, 0, "the held ones stay");

    const warnings = lines.map((line) => JSON.parse(line))
      .filter((line) => line.event === "transport.at_capacity");
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0].level, "warn");
    assert.equal(warnings[0].maxConnections, 8);

    // A slot freed is a slot again; the refusal was counted.
    held[0].socket.destroy();
    await held[0].ended;
    await delay(100);
    const metrics = await exchange(
      gateway.port,
      "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.equal(parseHttp(metrics.raw).status, 200);
    assert.match(metrics.raw, /gateway_refusals_total\{kind="max_connections"\} 1\b/);
  } finally {
    await dropAll(held);
  }
});

Deno.test("1: the connect rate per address answers 429 with the error payload past its burst", async () => {
  const RATE = 5; // burst of 10
  await using gateway = await startTestGateway({ connectRatePerIp: RATE });
  const request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const answers = await Promise.all(
    Array.from({ length: 16 }, () => exchange(gateway.port, request)),
  );
  // Refused connections are told why a few times a second (429 with the payload); past that
  // they are dropped unanswered, so that a connect flood costs the gateway nothing to write.
  const statuses = answers.map((a) => a.raw === "" ? "dropped" : parseHttp(a.raw).status);
  const ok = statuses.filter((s) => s === 200).length;
  const refused = answers.filter((a) => a.raw !== "" && parseHttp(a.raw).status === 429);
  const dropped = statuses.filter((s) => s === "dropped").length;
  console.log(
    `connect rate ${RATE}/s: ${ok} answered, ${refused.length} refused, ${dropped} dropped`,
  );
  assert.ok(ok >= 2 * RATE && ok <= 2 * RATE + 2, `answered: ${statuses}`);
  assert.equal(ok + refused.length + dropped, answers.length, `statuses: ${statuses}`);
  assert.ok(refused.length >= 1, `at least the first refusals say why: ${statuses}`);
  for (const answer of refused) {
    const body = assertErrorAnswer(parseHttp(answer.raw), "ERR_TOO_MANY_REQUESTS");
    assert.match(String(body.errorDescription), /Too many new connections/);
  }
  // Other addresses have their own budget.
  const other = probe(gateway.port, "127.0.0.11", request);
  await other.ended;
  assert.equal(parseHttp(decoder.decode(received(other))).status, 200);
  // The budget refills.
  await delay(1_000);
  assert.equal(parseHttp((await exchange(gateway.port, request)).raw).status, 200);
});

// ---------------------------------------------------------------------------------------------
// 2. Unanswered close handshakes do not hold descriptors

Deno.test("2: a client that never answers the close frame loses its connection at the close timeout", async () => {
  const CLOSE_TIMEOUT = 800;
  await using gateway = await startTestGateway({ closeTimeoutMs: CLOSE_TIMEOUT });
  await using ws = await RawWebSocket.open(gateway.port);
  assert.equal(ws.status, 101);
  // No credential, no login: the gateway refuses the handshake and closes 4007.
  await ws.write(textFrame(JSON.stringify({ type: "connect", id: 1 })));
  const frames: RawFrame[] = [];
  let close: RawFrame | null = null;
  while (close === null) {
    const got = await ws.next(3_000);
    assert.ok(typeof got !== "string", `connection ${got} before the close frame`);
    if (got.opcode === OPCODE.close) close = got;
    else frames.push(got);
  }
  const closeAt = Date.now();
  const replies = frames.map(serverFrame);
  assert.deepEqual(replies.map((f) => f.type), ["error", "closing"]);
  assert.equal(closeCodeOf(close), closeCodeTable.unauthorized);
  // Never answered: the gateway drops the TCP connection.
  const { frames: after, end, at } = await ws.readToEnd(3 * CLOSE_TIMEOUT + 2_000);
  console.log(`close frame unanswered: connection ended (${end}) after ${at - closeAt} ms`);
  assert.deepEqual(after, []);
  assert.notEqual(end, "timeout", "the gateway still holds the connection");
  assert.ok(at - closeAt <= 3 * CLOSE_TIMEOUT, `held ${at - closeAt} ms after the close frame`);
  await delay(50);
  assert.equal(gateway.transport.connections, 0, "the gateway holds no connection");
});

// ---------------------------------------------------------------------------------------------
// 3. Binary frames count against the frame budget; replies respect the output limit

/**
 * Writes `batch` again and again until a write fails (the gateway cut the connection) or
 * `maxMs` passes; never reads.
 */
async function floodUntilCut(
  ws: RawWebSocket,
  batch: Uint8Array,
  maxMs: number,
): Promise<{ batches: number; cutAfterMs: number | null }> {
  const started = Date.now();
  let batches = 0;
  while (Date.now() - started < maxMs) {
    try {
      await ws.write(batch);
    } catch {
      return { batches, cutAfterMs: Date.now() - started };
    }
    batches++;
  }
  return { batches, cutAfterMs: null };
}

/** Frames up to and including the first close frame (or until the connection ends). */
async function readUntilClose(ws: RawWebSocket, timeoutMs: number): Promise<RawFrame[]> {
  const deadline = Date.now() + timeoutMs;
  const frames: RawFrame[] = [];
  for (;;) {
    const got = await ws.next(Math.max(0, deadline - Date.now()));
    if (typeof got === "string") return frames;
    frames.push(got);
    if (got.opcode === OPCODE.close) return frames;
  }
}

function repeat(frame: Uint8Array, times: number): Uint8Array {
  const out = new Uint8Array(frame.byteLength * times);
  for (let i = 0; i < times; i++) out.set(frame, i * frame.byteLength);
  return out;
}

Deno.test("3: empty binary frames from an unauthenticated socket that never reads: closed 4008, memory flat", async () => {
  const SOCKETS = 4;
  await using proc = await GatewayProcess.start({
    env: { CLOSE_TIMEOUT_MS: "1000", LOG_LEVEL: "error" },
  });
  try {
    const before = proc.rss();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, proc.rss())), 50);
    const FRAMES_PER_BATCH = 1_000;
    const batch = repeat(clientFrame(OPCODE.binary), FRAMES_PER_BATCH);
    const sockets = await Promise.all(
      Array.from({ length: SOCKETS }, () => RawWebSocket.open(proc.port)),
    );
    try {
      const floods = await Promise.all(sockets.map((ws) => floodUntilCut(ws, batch, 10_000)));
      clearInterval(sampler);
      const after = proc.rss();
      for (const [i, ws] of sockets.entries()) {
        assert.equal(ws.status, 101);
        const { frames, end } = await ws.readToEnd(3_000);
        const texts = frames.filter((f) => f.opcode === OPCODE.text).map(serverFrame);
        const answered = texts.filter((f) =>
          f.type === "error" && f.errorCode === "ERR_BAD_REQUEST"
        )
          .length;
        const throttled = texts.filter((f) =>
          f.type === "error" && f.errorCode === "ERR_TOO_MANY_REQUESTS"
        ).length;
        const closing = texts.find((f) => f.type === "closing");
        const close = frames.find((f) => f.opcode === OPCODE.close);
        console.log(
          `binary flood #${i}: sent ${floods[i].batches * FRAMES_PER_BATCH}+ frames, cut after ` +
            `${floods[i].cutAfterMs} ms; ${answered} answered, ${throttled} refused, then ` +
            `${closing?.type === "closing" ? closing.reason : "no closing"} / ` +
            `${close === undefined ? "no close frame" : closeCodeOf(close)} (${end})`,
        );
        assert.notEqual(floods[i].cutAfterMs, null, "the gateway never cut the flood");
        assert.equal(closing?.type === "closing" ? closing.reason : undefined, "rate_limited");
        assert.equal(close === undefined ? undefined : closeCodeOf(close), 4008);
        // The budget: a burst of 2 × 100 frames, then at most 20 refusals.
        assert.ok(answered + throttled <= 2 * 100 + 20 + 20, `${answered + throttled} frames`);
      }
      // The operator's view: how many binary frames the gateway acted on, in all.
      const binaryIn = await metric(proc.url, 'gateway_frames_in_total{type="binary"}');
      const rateRefusals = await metric(proc.url, 'gateway_refusals_total{kind="frame_rate"}');
      const rateCloses = await metric(proc.url, 'gateway_closes_total{reason="rate_limited"}');
      console.log(
        `binary flood /metrics: ${binaryIn} binary frames acted on, ${rateRefusals} refused, ` +
          `${rateCloses} closed rate_limited`,
      );
      assert.equal(rateCloses, SOCKETS);
      assert.ok(binaryIn + rateRefusals <= SOCKETS * (2 * 100 + 20 + 20));
      console.log(
        `binary flood RSS: before ${(before / MB).toFixed(1)} MB, peak ${
          (peak / MB).toFixed(1)
        } MB, after ${(after / MB).toFixed(1)} MB`,
      );
      assert.ok(peak - before < 100 * MB, `RSS grew by ${((peak - before) / MB).toFixed(1)} MB`);
      assert.ok(await proc.alive());
    } finally {
      clearInterval(sampler);
      for (const ws of sockets) await ws[Symbol.asyncDispose]();
    }
  } finally {
    await proc.crash();
    await proc.cleanup();
  }
});

Deno.test("3: a client that never reads while the gateway answers its pings is closed slow_consumer (4009)", async () => {
  await using gateway = await startTestGateway({
    maxBufferedBytes: 1024,
    frameRatePerSec: 1_000_000,
  });
  const metrics = gateway.services.metrics;
  const { credential } = await login(gateway, "auto");
  await using ws = await RawWebSocket.open(
    gateway.port,
    `/v1/ws?credential=${encodeURIComponent(credential)}`,
  );
  assert.equal(ws.status, 101);
  await ws.write(textFrame(JSON.stringify({ type: "connect", id: 0 })));
  const connected = await ws.next();
  assert.ok(typeof connected !== "string");
  assert.equal(serverFrame(connected).type, "connected");

  // Pings with the longest id the contract accepts: each pong is ~150 bytes the client does
  // not read, so the kernel's buffers fill, then the gateway's. The client goes in step with
  // what the gateway has read (its metrics), so that it stops soon after the close and can
  // then read why.
  const ping = textFrame(JSON.stringify({ type: "ping", id: "p".repeat(64) }));
  const PINGS_PER_BATCH = 200;
  const batch = repeat(ping, PINGS_PER_BATCH);
  const pingsBefore = metrics.framesIn.ping;
  let sent = 0;
  const deadline = Date.now() + 30_000;
  while (metrics.closes.slow_consumer === 0 && Date.now() < deadline) {
    await ws.write(batch);
    sent += PINGS_PER_BATCH;
    while (
      metrics.framesIn.ping - pingsBefore < sent && metrics.closes.slow_consumer === 0 &&
      Date.now() < deadline
    ) await delay(2);
  }
  const answered = metrics.framesIn.ping - pingsBefore;
  const frames = await readUntilClose(ws, 10_000);
  const texts = frames.filter((f) => f.opcode === OPCODE.text).map(serverFrame);
  const pongs = texts.filter((f) => f.type === "pong").length;
  const pongBytes = frames.reduce((n, f) => n + f.payload.byteLength, 0);
  const closing = texts.find((f) => f.type === "closing");
  const close = frames.find((f) => f.opcode === OPCODE.close);
  console.log(
    `slow consumer: ${sent} pings sent unread, ${answered} read by the gateway, ${pongs} pongs ` +
      `(${(pongBytes / MB).toFixed(1)} MB, what the kernel's buffers held) delivered, then ` +
      `${close === undefined ? "no close" : closeCodeOf(close)}`,
  );
  assert.equal(closing?.type === "closing" ? closing.reason : undefined, "slow_consumer");
  assert.equal(close === undefined ? undefined : closeCodeOf(close), 4009);
  assert.ok(pongs < answered, "the gateway stopped answering instead of buffering every pong");
});

// ---------------------------------------------------------------------------------------------
// 4. An oversized frame is refused from its header

Deno.test("4: a frame header announcing 60 MB is refused at once with 1009; memory stays flat", async () => {
  await using proc = await GatewayProcess.start({
    env: { CLOSE_TIMEOUT_MS: "1000", LOG_LEVEL: "error" },
  });
  try {
    const before = proc.rss();
    const sockets = await Promise.all(
      Array.from({ length: 10 }, () => RawWebSocket.open(proc.port)),
    );
    try {
      // Half send the header alone, half 16 KiB of the 60 MB after it.
      const headerOnly = clientFrame(OPCODE.binary, new Uint8Array(0), {
        announcedLength: 60 * MB,
      });
      const headerAndSome = clientFrame(OPCODE.binary, new Uint8Array(16 * 1024), {
        announcedLength: 60 * MB,
      });
      const results = await Promise.all(sockets.map(async (ws, i) => {
        assert.equal(ws.status, 101);
        const sentAt = Date.now();
        await ws.write(i % 2 === 0 ? headerOnly : headerAndSome);
        for (;;) {
          const got = await ws.next(10_000);
          assert.ok(typeof got !== "string", `connection ${got} before a close frame`);
          if (got.opcode === OPCODE.text) serverFrame(got);
          if (got.opcode === OPCODE.close) {
            return { code: closeCodeOf(got), afterMs: Date.now() - sentAt };
          }
        }
      }));
      const after = proc.rss();
      const slowest = Math.max(...results.map((r) => r.afterMs));
      console.log(
        `60 MB headers: close codes ${[...new Set(results.map((r) => r.code))]}, slowest ` +
          `${slowest} ms; RSS before ${(before / MB).toFixed(1)} MB, after ${
            (after / MB).toFixed(1)
          } MB`,
      );
      for (const r of results) assert.equal(r.code, 1009);
      assert.ok(slowest < 3_000, `the close took ${slowest} ms`);
      assert.ok(after - before < 100 * MB, `RSS grew by ${((after - before) / MB).toFixed(1)} MB`);
      assert.ok(await proc.alive());
    } finally {
      for (const ws of sockets) await ws[Symbol.asyncDispose]();
    }
  } finally {
    await proc.crash();
    await proc.cleanup();
  }
});

// ---------------------------------------------------------------------------------------------
// 5. The handshake must finish in time

Deno.test("5: frames before the handshake never extend it: closed handshake_timeout (4010)", async () => {
  const HANDSHAKE_TIMEOUT = 1_000;
  await using gateway = await startTestGateway({ handshakeTimeoutMs: HANDSHAKE_TIMEOUT });
  const socket = new TestSocket(gateway.wsUrl);
  await using _ = socket;
  await socket.opened;
  const openedAt = Date.now();
  const timer = setInterval(() => {
    if (socket.ws.readyState === WebSocket.OPEN) socket.sendRaw("{}");
  }, 300);
  try {
    const closed = await within(
      socket.closed,
      3 * HANDSHAKE_TIMEOUT + 2_000,
      "the socket was never closed: frames extend the handshake, or it has no timeout",
    );
    const afterMs = closed.at - openedAt;
    const errors = socket.frames.filter((f) => f.type === "error");
    const closing = socket.frames.find((f) => f.type === "closing");
    console.log(`handshake timeout: ${errors.length} errors answered, closed after ${afterMs} ms`);
    assert.ok(errors.length >= 2, "each {} was answered");
    for (const e of errors) assert.equal(e.type === "error" && e.errorCode, "ERR_BAD_REQUEST");
    assert.equal(closing?.type === "closing" ? closing.reason : undefined, "handshake_timeout");
    assert.equal(closing?.type === "closing" ? closing.code : undefined, 4010);
    assert.equal(closed.code, closeCodeTable.handshake_timeout);
    // (Measured from the client's open event, a little after the gateway's upgrade.)
    assert.ok(afterMs >= 0.7 * HANDSHAKE_TIMEOUT, `closed early: ${afterMs} ms`);
    assert.ok(afterMs <= 3 * HANDSHAKE_TIMEOUT, `closed late: ${afterMs} ms`);
  } finally {
    clearInterval(timer);
  }
});

// ---------------------------------------------------------------------------------------------
// 6. Rate-limit strikes decay

async function connectedSocket(
  gateway: TestGateway,
): Promise<TestSocket> {
  const { credential } = await login(gateway, "auto");
  return (await TestSocket.connect(gateway, credential)).socket;
}

Deno.test("6: bursts over the burst size but under the budget on average are never closed; a flood is", async () => {
  const RATE = 20; // burst of 40
  const BURST = 2 * RATE + 3;
  const GAP_MS = 2_500; // 43 frames every 2.5 s: 17 frames/s under a 20/s budget
  await using gateway = await startTestGateway({ frameRatePerSec: RATE, idleTimeoutMs: 20_000 });
  await using socket = await connectedSocket(gateway);
  await delay(GAP_MS);
  let id = 0;
  let refusedTotal = 0;
  for (let burst = 1; burst <= 6; burst++) {
    const first = id;
    for (let i = 0; i < BURST; i++) socket.send({ type: "ping", id: ++id });
    // Every frame of the burst gets a reply: a pong, or a refusal.
    let replies = 0;
    let refused = 0;
    while (replies < BURST) {
      const frame = await socket.next();
      assert.ok(frame.type === "pong" || frame.type === "error", JSON.stringify(frame));
      if (frame.type === "error") {
        assert.equal(frame.errorCode, "ERR_TOO_MANY_REQUESTS");
        refused++;
      } else assert.ok(frame.id !== undefined && Number(frame.id) > first);
      replies++;
    }
    refusedTotal += refused;
    assert.ok(refused > 0, `burst ${burst} went over the burst size`);
    assert.equal(socket.ws.readyState, WebSocket.OPEN, `closed after burst ${burst}`);
    await delay(GAP_MS);
  }
  console.log(`6 bursts of ${BURST} every ${GAP_MS} ms: ${refusedTotal} refused, never closed`);
  socket.send({ type: "ping", id: ++id });
  assert.equal((await socket.next("pong")).id, id, "still connected and working");

  // A sustained flood at twice the budget is closed.
  const floodStart = Date.now();
  const flood = setInterval(() => {
    if (socket.ws.readyState !== WebSocket.OPEN) return;
    for (let i = 0; i < 4; i++) socket.send({ type: "ping", id: ++id });
  }, 100);
  try {
    const closed = await within(socket.closed, 15_000, "a sustained flood was never closed");
    console.log(`flood at ${2 * RATE}/s closed after ${closed.at - floodStart} ms`);
    assert.equal(closed.code, closeCodeTable.rate_limited);
    const closing = socket.unread().find((f) => f.type === "closing");
    assert.equal(closing?.type === "closing" ? closing.reason : undefined, "rate_limited");
    assert.ok(closed.at - floodStart < 10_000);
  } finally {
    clearInterval(flood);
  }
});

// ---------------------------------------------------------------------------------------------
// 7. A burst past the budget still learns why

Deno.test("7: 600 pings at once: pongs, refusals, then closing rate_limited and 4008 (not 1006)", async () => {
  // (A short close timeout only so that the gateway stops sooner at the end of the test.)
  await using gateway = await startTestGateway({ closeTimeoutMs: 500 });
  await using socket = await connectedSocket(gateway);
  const sentAt = Date.now();
  for (let i = 1; i <= 600; i++) socket.send({ type: "ping", id: i });
  const closed = await within(socket.closed, 5_000, "600 pings at once were never closed");
  const pongs = socket.frames.filter((f) => f.type === "pong").length;
  const refused = socket.frames.filter((f) => f.type === "error").length;
  const closing = socket.frames.find((f) => f.type === "closing");
  console.log(
    `600 pings at once: ${pongs} pongs, ${refused} refused, then closing and ${closed.code} ` +
      `after ${closed.at - sentAt} ms`,
  );
  assert.equal(closing?.type === "closing" ? closing.reason : undefined, "rate_limited");
  assert.equal(closing?.type === "closing" ? closing.code : undefined, 4008);
  assert.equal(closed.code, closeCodeTable.rate_limited);
  // Within the budget (a burst of 200); pongs still held for the store when the close came
  // are dropped with it (they announce what is not durable yet).
  assert.ok(pongs > 0 && pongs <= 200, `${pongs} pongs`);
  assert.ok(refused <= 25, `${refused} refusals before the close`);
  assert.equal(socket.frames.at(-1)?.type, "closing", "the closing frame is the last one");
});

Deno.test("7: pings pipelined in one TCP write, within the budget: every reply, in order", async () => {
  // The replies to one chunk's frames leave in one write (the socket is corked around the
  // chunk): none may be lost, reordered or held back, also with an error reply among them.
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  await using ws = await RawWebSocket.open(
    gateway.port,
    `/v1/ws?credential=${encodeURIComponent(credential)}`,
    { headers: { "sec-websocket-protocol": "liveness.v1" } },
  );
  assert.equal(ws.status, 101, ws.responseHead);
  await ws.sendText(JSON.stringify({ type: "connect" }));
  const connected = await ws.next();
  assert.equal(typeof connected === "object" && JSON.parse(textOf(connected)).type, "connected");

  const frames: Uint8Array[] = [];
  // 12 frames: within a new connection's initial budget (a fifth of a second's worth, at least 8).
  for (let id = 1; id <= 12; id++) {
    frames.push(textFrame(JSON.stringify(id === 6 ? { type: "nope", id } : { type: "ping", id })));
  }
  const batch = new Uint8Array(frames.reduce((n, f) => n + f.byteLength, 0));
  frames.reduce((at, f) => (batch.set(f, at), at + f.byteLength), 0);
  await ws.write(batch);

  const replies: ServerFrame[] = [];
  while (replies.length < 12) {
    const frame = await ws.next();
    assert.ok(typeof frame === "object", `reply ${replies.length + 1} never came: ${frame}`);
    replies.push(ServerFrameSchema.parse(JSON.parse(textOf(frame))));
  }
  assert.deepEqual(
    replies.map((f) => [f.type, "id" in f ? f.id : undefined]),
    Array.from({ length: 12 }, (_, i) => [i + 1 === 6 ? "error" : "pong", i + 1]),
  );
  assert.equal(await ws.next(300), "timeout", "nothing more, and the connection stays open");
});

// ---------------------------------------------------------------------------------------------
// 8. Error frames only echo ids the contract accepts

Deno.test("8: every frame the gateway writes validates; ids the contract refuses are not echoed", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  // A raw client: every text the gateway writes is checked against ServerFrameSchema here,
  // as an assertion of this test (TestSocket throws on an invalid frame, but from an event
  // listener, which would take the other tests down with it).
  await using ws = await RawWebSocket.open(
    gateway.port,
    `/v1/ws?credential=${encodeURIComponent(credential)}`,
  );
  assert.equal(ws.status, 101);
  const reply = async (text: string): Promise<ServerFrame> => {
    await ws.write(textFrame(text));
    const got = await ws.next();
    assert.ok(typeof got !== "string", `no reply to ${text}: ${got}`);
    assert.equal(got.opcode, OPCODE.text);
    const value = JSON.parse(textOf(got));
    const parsed = ServerFrameSchema.safeParse(value);
    assert.ok(parsed.success, `the reply to ${text} is not a valid server frame: ${textOf(got)}`);
    return parsed.data;
  };
  assert.equal((await reply('{"type":"connect","id":"c"}')).type, "connected");
  const cases: Array<[string, string | number | undefined]> = [
    ['{"type":"ping","id":9007199254740992}', undefined],
    ['{"type":"ping","id":-9007199254740992}', undefined],
    ['{"type":"ping","id":1.5}', undefined],
    ['{"type":"ping","id":1e400}', undefined],
    [`{"type":"ping","id":"${"x".repeat(65)}"}`, undefined],
    ['{"type":"ping","id":{"a":1}}', undefined],
    ['{"type":"ping","id":[1]}', undefined],
    ['{"type":"teleport","id":9007199254740993}', undefined],
    ['{"type":"teleport","id":9007199254740991}', 9007199254740991],
    [`{"type":"teleport","id":"${"y".repeat(64)}"}`, "y".repeat(64)],
  ];
  for (const [text, echoed] of cases) {
    const frame = await reply(text);
    assert.equal(frame.type, "error", text);
    assert.equal(frame.type === "error" && frame.errorCode, "ERR_BAD_REQUEST", text);
    assert.equal(frame.id, echoed, text);
  }
  const pong = await reply('{"type":"ping","id":9007199254740991}');
  assert.equal(pong.type, "pong");
  assert.equal(pong.id, 9007199254740991);
});

// ---------------------------------------------------------------------------------------------
// 9. Deep nesting

Deno.test("9: a custom message nested 8 000 levels deep: 400 naming message.data, no seq burned", async () => {
  await using gateway = await startTestGateway();
  await using socket = await connectedSocket(gateway);
  const sendMessage = async (message: unknown) => {
    const res = await fetch(`${gateway.url}/v1/apps/${DEV_APP.appId}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", ...API_KEY },
      body: typeof message === "string" ? message : JSON.stringify(message),
    });
    return { status: res.status, body: await res.json() as Record<string, unknown> };
  };
  const text = { kind: "text", text: "before" };
  const first = await sendMessage({ to: ["superhero1"], message: text });
  assert.equal(first.status, 200);
  const firstSeq = (first.body as unknown as SendMessageReply).recipients[0].seq;
  assert.equal((await socket.next("message")).seq, firstSeq);

  const DEPTH = 8_000;
  const deep = '{"to":["superhero1"],"message":{"kind":"custom","customType":"x","data":' +
    '{"a":'.repeat(DEPTH - 1) + "{}" + "}".repeat(DEPTH - 1) + "}}";
  assert.ok(deep.length < 64 * 1024, `${deep.length} bytes`);
  const refused = await sendMessage(deep);
  assert.equal(refused.status, 400, JSON.stringify(refused.body).slice(0, 300));
  assert.equal(refused.body.errorCode, "ERR_BAD_REQUEST");
  const issues = (refused.body.details as { issues: Array<{ path: string; message: string }> })
    .issues;
  assert.ok(
    issues.some((i) => i.path === "message.data"),
    `issues: ${JSON.stringify(issues)}`,
  );

  const next = await sendMessage({ to: ["superhero1"], message: { kind: "text", text: "after" } });
  assert.equal(next.status, 200);
  const nextSeq = (next.body as unknown as SendMessageReply).recipients[0].seq;
  assert.equal(nextSeq, firstSeq + 1, "the refused message took no seq");
  const frame = await socket.next("message");
  assert.equal(frame.seq, firstSeq + 1);
  assert.deepEqual(socket.unread(), []);
});

// ---------------------------------------------------------------------------------------------
// 10. HTTP edge cases

Deno.test("10: a chunked body over MAX_BODY_BYTES gets 413 with the error payload, and the connection is closed", async () => {
  const CLOSE_TIMEOUT = 1_000;
  await using gateway = await startTestGateway({
    maxBodyBytes: 1_024,
    closeTimeoutMs: CLOSE_TIMEOUT,
  });
  const chunk = "x".repeat(512);
  const request = "POST /v1/apps/demo/init HTTP/1.1\r\nHost: x\r\n" +
    "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
    `${chunk.length.toString(16)}\r\n${chunk}\r\n`.repeat(4); // 2 KiB, and never the last chunk
  const answer = await exchange(gateway.port, request, 3 * CLOSE_TIMEOUT + 2_000);
  console.log(
    `chunked 2 KiB over a 1 KiB limit: connection ${answer.end} after ${answer.afterMs} ms`,
  );
  const body = assertErrorAnswer(parseHttp(answer.raw), "ERR_PAYLOAD_TOO_LARGE");
  assert.deepEqual(body.details, { limitBytes: 1_024 });
  assert.notEqual(answer.end, "timeout", "the connection was kept open after the 413");
  assert.ok(answer.afterMs <= 3 * CLOSE_TIMEOUT);
});

Deno.test("10: 10 000 headers get 431 with the error payload (ERR_HEADERS_TOO_LARGE)", async () => {
  await using gateway = await startTestGateway();
  let request = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  for (let i = 0; i < 10_000; i++) request += `X-H${i}: v\r\n`;
  request += "\r\n";
  const answer = await exchange(gateway.port, request);
  assert.ok(answer.raw.length > 0, "an answer, not a bare close");
  const body = assertErrorAnswer(parseHttp(answer.raw), "ERR_HEADERS_TOO_LARGE");
  assert.deepEqual(body.details, { limitBytes: gateway.config.maxHeaderBytes });
  assert.notEqual(answer.end, "timeout");
});

Deno.test("10: `authorization: bearer <credential>` (lower-case scheme) is accepted", async () => {
  await using gateway = await startTestGateway();
  const { credential, sessionId } = await login(gateway, "auto");
  for (const scheme of ["bearer", "BEARER", "Bearer"]) {
    const res = await fetch(`${gateway.url}/v1/session`, {
      headers: { authorization: `${scheme} ${credential}` },
    });
    const body = await res.json();
    assert.equal(res.status, 200, `${scheme}: ${JSON.stringify(body)}`);
    assert.equal(body.sessionId, sessionId);
  }
});

// 11 (connect without credential and without login → ERROR_USER_NOT_LOGGED_IN, then 4007) is
// covered by tests/socket_login_test.ts ("refused logins answer the login's error code…").
