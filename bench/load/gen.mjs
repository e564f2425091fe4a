/**
 * Load generator: one process, one scenario, one server. Started by bench/main.ts as
 * `node bench/load/gen.mjs '<json config>'`; it reports on stdout as JSON lines
 * (`{"event": ...}`) and, where the orchestrator must measure the server between two
 * stages, waits for a line on stdin before going on.
 *
 * Server kinds: `gateway` (login over HTTP, then the liveness.v1 protocol), `json`
 * (raw Deno / Node ws: the same frames without auth), `echo`, `sio` (Socket.IO over a
 * raw engine.io WebSocket: `40` connect, `42` emit, `43` ack, `2`/`3` heartbeat).
 */
import { Buffer } from "node:buffer";
import http from "node:http";
import process from "node:process";
import readline from "node:readline";
import { connect, textFrame } from "./wire.mjs";

const cfg = JSON.parse(process.argv[2]);
const { host, port, kind } = cfg;
const DEV = {
  appId: "demo",
  apiKey: "dev_api_key__not_secret",
  authKey: "dev_auth_key__not_secret",
};

const emit = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + "\n");
const stdin = readline.createInterface({ input: process.stdin })
  [Symbol.asyncIterator]();
/** Waits for the orchestrator's go-ahead (one line on stdin). */
const waitGo = () => stdin.next();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const PING = {
  gateway: '{"type":"ping","id":1}',
  json: '{"type":"ping","id":1}',
  echo: '{"type":"ping","id":1}',
  sio: '421["ping",{"id":1}]',
};
const PATH = {
  json: "/ws",
  echo: "/echo",
  sio: "/socket.io/?EIO=4&transport=websocket",
};
const SIO_HEARTBEAT_REPLY = textFrame("3");

// ---- HTTP (gateway login and user creation) ----

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
/** A POST to the server (in the cluster scenario: to the node at `toPort`). */
function post(path, body, headers = {}, toPort = port) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({
      host,
      port: toPort,
      path,
      method: "POST",
      agent,
      headers: {
        "content-type": "application/json",
        "content-length": data.length,
        ...headers,
      },
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on(
        "end",
        () =>
          resolve({
            status: res.statusCode,
            body: String(Buffer.concat(chunks)),
          }),
      );
    });
    req.on("error", reject);
    req.end(data);
  });
}

/** Runs `fn(i)` for i < n with at most `width` in flight; returns the results in order. */
async function pool(n, width, fn) {
  const out = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, n) }, worker));
  return out;
}

const uidOf = (i) => `bench_${i % cfg.users}`;

async function createUsers() {
  await pool(cfg.users, 32, async (i) => {
    const res = await post(`/v1/apps/${DEV.appId}/users`, { uid: uidOf(i) }, {
      apikey: DEV.apiKey,
    });
    if (res.status !== 201 && res.status !== 409) {
      throw new Error(`create user: ${res.status} ${res.body}`);
    }
  });
}

// ---- connections ----

/** Logs in session i (gateway) at the node on `toPort` and returns its credential. */
async function login(i, mode = "auto", toPort = port) {
  const res = await post(
    `/v1/apps/${DEV.appId}/login`,
    {
      uid: uidOf(i),
      authKey: DEV.authKey,
      mode,
    },
    {},
    toPort,
  );
  if (res.status !== 200) throw new Error(`login: ${res.status} ${res.body}`);
  return JSON.parse(res.body).session.credential;
}

/**
 * Login (gateway; skipped when a `credential` from an earlier login is given), upgrade and
 * handshake of connection i; resolves to an open Conn. With `socketLogin` the gateway
 * socket opens without a credential and the connect frame logs in (one round trip). `toPort`
 * is the server (the cluster scenario's node) it logs in and connects at.
 */
async function open(
  i,
  { mode = "auto", appState, credential, socketLogin, resume, toPort = port } = {},
) {
  let path = PATH[kind];
  let protocol;
  let loginInConnect;
  if (kind === "gateway" && socketLogin) {
    path = "/v1/ws";
    protocol = "liveness.v1";
    loginInConnect = { appId: DEV.appId, uid: uidOf(i), authKey: DEV.authKey, mode };
  } else if (kind === "gateway") {
    credential ??= await login(i, mode, toPort);
    path = `/v1/ws?credential=${encodeURIComponent(credential)}`;
    protocol = "liveness.v1";
  }
  const conn = await connect({ host, port: toPort, path, protocol });
  if (kind === "sio") {
    await conn.next(); // engine.io open packet `0{...}`
    conn.send(textFrame("40"));
    const reply = String(await conn.next());
    if (!reply.startsWith("40")) throw new Error(`socket.io connect: ${reply}`);
  } else if (kind !== "echo") {
    conn.send(
      textFrame(
        JSON.stringify({
          type: "connect",
          ...(appState && { appState }),
          ...(loginInConnect && { login: loginInConnect }),
          ...(resume && { resume }),
        }),
      ),
    );
    const reply = JSON.parse(String(await conn.next()));
    if (reply.type !== "connected") {
      throw new Error(`handshake: ${JSON.stringify(reply)}`);
    }
    conn.connected = reply;
  }
  return conn;
}

/** Sets the message handler; Socket.IO's engine heartbeat (`2`) is answered on the side. */
function handle(conn, fn) {
  conn.onmessage = kind === "sio"
    ? (payload) => {
      if (payload.length === 1 && payload[0] === 0x32) {
        conn.send(
          SIO_HEARTBEAT_REPLY,
        );
      } else fn(payload);
    }
    : fn;
}

function percentiles(values) {
  const sorted = Float64Array.from(values).sort();
  const at = (q) =>
    sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null;
  return {
    n: sorted.length,
    min: at(0),
    p50: at(0.5),
    p99: at(0.99),
    max: at(1),
  };
}

function cpuMs() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

// ---- scenarios ----

/** 1. Pipelined pings: each connection keeps `window` pings in flight. */
async function ceiling() {
  const conns = await pool(
    cfg.conns,
    50,
    (i) => open(i, { mode: cfg.mode ?? "auto" }),
  );
  if (cfg.background) {
    for (const conn of conns) {
      conn.send(textFrame('{"type":"app_state","state":"background"}'));
      const reply = JSON.parse(String(await conn.next()));
      if (reply.backgroundDeadline == null) {
        throw new Error(`app_state: ${JSON.stringify(reply)}`);
      }
    }
  }
  const ping = textFrame(cfg.ping ?? PING[kind]);
  const burst = Buffer.concat(Array(cfg.window).fill(ping));
  let received = 0;
  for (const conn of conns) {
    let owed = 0;
    handle(conn, () => owed++);
    conn.onchunk = () => {
      if (owed === 0) return;
      received += owed;
      conn.send(burst.subarray(0, owed * ping.length));
      owed = 0;
    };
    conn.send(burst);
  }
  await sleep(cfg.warmMs);
  const [r0, t0, c0] = [received, performance.now(), cpuMs()];
  emit("measure_start");
  await sleep(cfg.measureMs);
  const [r1, t1, c1] = [received, performance.now(), cpuMs()];
  emit("result", {
    rate: ((r1 - r0) / (t1 - t0)) * 1000,
    genCpu: (c1 - c0) / (t1 - t0),
  });
}

/** 2. Each connection pings once a second, the connections spread evenly over the second. */
async function steady() {
  const n = cfg.conns;
  const conns = await pool(n, 100, (i) => open(i));
  const sentAt = new Float64Array(n);
  const rtts = [];
  let measuring = false;
  let unanswered = 0;
  conns.forEach((conn, i) =>
    handle(conn, () => {
      if (measuring && sentAt[i]) rtts.push(performance.now() - sentAt[i]);
      sentAt[i] = 0;
    })
  );
  const ping = textFrame(PING[kind]);
  const start = performance.now();
  let sent = 0;
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - start) * n) / 1000);
    for (; sent < due; sent++) {
      const i = sent % n;
      if (measuring && sentAt[i]) unanswered++;
      sentAt[i] = performance.now();
      conns[i].send(ping);
    }
  }, 1);
  await sleep(cfg.warmMs);
  measuring = true;
  const [t0, c0] = [performance.now(), cpuMs()];
  emit("measure_start");
  await sleep(cfg.measureMs);
  emit("measure_end");
  measuring = false;
  const [t1, c1] = [performance.now(), cpuMs()];
  clearInterval(timer);
  const rtt = percentiles(rtts);
  emit("result", {
    rtt,
    unanswered,
    rate: (rtt.n / (t1 - t0)) * 1000,
    genCpu: (c1 - c0) / (t1 - t0),
  });
}

/** 3. Idle connections: a warm-up batch, then `conns` more; memory is read at both points. */
async function memory() {
  const warm = await pool(cfg.warmConns, 50, (i) => open(i));
  warm.forEach((conn) => handle(conn, () => {}));
  emit("ready", { stage: "base" });
  await waitGo();
  const conns = await pool(cfg.conns, 100, (i) => open(cfg.warmConns + i));
  conns.forEach((conn) => handle(conn, () => {}));
  emit("ready", { stage: "loaded" });
  await waitGo();
  emit("result", {});
}

/**
 * 4. Login + upgrade + handshake of `conns` sessions, `concurrency` at a time. With
 * `resume`, the sessions log in first (not timed) and the storm is upgrade + handshake with
 * their credentials: clients coming back after a gateway restart or deploy. With
 * `socketLogin` the login rides in the connect frame (no HTTP request).
 */
async function storm() {
  const times = [];
  const credentials = cfg.resume && kind === "gateway"
    ? await pool(cfg.conns, cfg.concurrency, (i) => login(i))
    : [];
  const [t0, c0] = [performance.now(), cpuMs()];
  await pool(cfg.conns, cfg.concurrency, async (i) => {
    const t = performance.now();
    const conn = await open(i, { credential: credentials[i], socketLogin: cfg.socketLogin });
    times.push(performance.now() - t);
    handle(conn, () => {});
  });
  const [t1, c1] = [performance.now(), cpuMs()];
  emit("result", {
    rate: (cfg.conns / (t1 - t0)) * 1000,
    connectMs: percentiles(times),
    genCpu: (c1 - c0) / (t1 - t0),
  });
}

/** 5. One trigger frame; the server sends `messages` frames round-robin over all sockets. */
async function fanout() {
  const conns = await pool(cfg.conns, 100, (i) => open(i));
  let received = 0;
  let last = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  for (const conn of conns) {
    handle(conn, () => {
      last = performance.now();
      if (++received === cfg.messages) done();
    });
  }
  emit("ready");
  await waitGo();
  const t0 = performance.now();
  if (kind === "gateway") void sendGatewayMessages();
  else {
    conns[0].send(textFrame(
      kind === "sio"
        ? `42["fanout",{"count":${cfg.messages}}]`
        : `{"type":"fanout","count":${cfg.messages}}`,
    ));
  }
  await Promise.race([finished, sleep(cfg.timeoutMs)]);
  emit("result", {
    rate: (received / (last - t0)) * 1000,
    received,
    ms: last - t0,
  });
}

/**
 * The gateway's fan-out goes through its server API: `messages` text messages round-robin
 * over all users (one connection each), sent as multi-recipient sends of up to 1 000 users,
 * a few requests in flight. Every message is a real one (id, sender, per-user seq).
 */
async function sendGatewayMessages() {
  const BATCH = 1_000;
  const sends = [];
  for (let first = 0; first < cfg.messages; first += BATCH) {
    const to = [];
    for (let k = first; k < Math.min(first + BATCH, cfg.messages); k++) {
      to.push(uidOf(k % cfg.conns));
    }
    sends.push(to);
  }
  await pool(sends.length, 16, async (i) => {
    const res = await post(`/v1/apps/${DEV.appId}/messages`, {
      to: sends[i],
      message: { kind: "text", text: `m${i}` },
    }, { apikey: DEV.apiKey });
    if (res.status !== 200) throw new Error(`send: ${res.status} ${res.body}`);
  }).catch((err) => emit("error", { message: String(err) }));
}

/**
 * 6. Manual-mode sessions enter background (spread over one second) and stop pinging;
 * records (time the closing frame or close arrived − backgroundDeadline) per session.
 */
async function deadline() {
  const n = cfg.conns;
  const conns = await pool(n, 100, (i) => open(i, { mode: "manual" }));
  const deadlines = new Float64Array(n);
  const closedAt = new Float64Array(n);
  const reasons = {};
  conns.forEach((conn, i) => {
    handle(conn, (payload) => {
      const frame = JSON.parse(String(payload));
      if (frame.type === "state") deadlines[i] = frame.backgroundDeadline;
      if (frame.type === "closing") {
        closedAt[i] ||= Date.now();
        reasons[frame.reason] = (reasons[frame.reason] ?? 0) + 1;
      }
    });
    conn.closed.then(() => (closedAt[i] ||= Date.now()));
  });
  emit("connected");
  const bg = textFrame('{"type":"app_state","state":"background"}');
  for (let i = 0; i < n; i++) {
    conns[i].send(bg);
    if (i % 100 === 99) await sleep(100_000 / n);
  }
  await Promise.race([
    Promise.all(conns.map((c) => c.closed)),
    sleep(cfg.windowMs + cfg.timeoutMs),
  ]);
  const lateness = [];
  let unclosed = 0;
  for (let i = 0; i < n; i++) {
    if (closedAt[i] && deadlines[i]) lateness.push(closedAt[i] - deadlines[i]);
    else unclosed++;
  }
  const codes = {};
  for (const c of conns) {
    codes[c.closeCode ?? "open"] = (codes[c.closeCode ?? "open"] ?? 0) + 1;
  }
  emit("result", {
    lateness: percentiles(lateness),
    early: lateness.filter((ms) => ms < 0).length,
    unclosed,
    reasons,
    codes,
  });
}

/**
 * 7. Resume: `clients` sessions connect once (their stream position is the `connected` frame's
 * `stream`), disconnect, and miss `missed` messages each (multi-recipient server sends, acked
 * once durable); then all upgrade again and, once every socket is open, each sends its
 * `connect` with `resume` in one loop. Per client: from writing `connect` to reading the last
 * replayed `message` frame (the `replayed`-th frame after `connected`).
 */
async function resume() {
  const n = cfg.clients;
  const credentials = await pool(n, 50, (i) => login(i));
  const first = await pool(n, 50, (i) => open(i, { credential: credentials[i] }));
  const positions = first.map((conn) => {
    const { epoch, seq } = conn.connected.stream;
    return { epoch, seq };
  });
  // Closed by the client and answered by the server: the session is disconnected before the
  // sends start (they would be missed either way; this keeps the live path out of the setup).
  for (const conn of first) conn.close();
  await Promise.all(first.map((conn) => conn.closed));
  const sendStart = performance.now();
  await sendToEach(n, cfg.missed, "r");
  const sendMs = performance.now() - sendStart;
  emit("ready", { sendMs, eventsPerSec: (n * cfg.missed / sendMs) * 1000 });
  await waitGo();
  const conns = await pool(n, 100, (i) => {
    const credential = encodeURIComponent(credentials[i]);
    return connect({
      host,
      port,
      path: `/v1/ws?credential=${credential}`,
      protocol: "liveness.v1",
    });
  });
  const sentAt = new Float64Array(n);
  const times = [];
  const failures = [];
  let lastDone = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  const finish = () => {
    if (times.length + failures.length === n) done();
  };
  conns.forEach((conn, i) => {
    let expected = -1;
    let seen = 0;
    conn.onmessage = (payload) => {
      if (expected < 0) {
        const reply = JSON.parse(String(payload));
        const stream = reply.stream;
        if (reply.type !== "connected" || !stream.recovered || stream.replayed !== cfg.missed) {
          failures.push(reply.type === "connected" ? stream : reply);
          expected = Infinity;
          return finish();
        }
        expected = stream.replayed;
        return;
      }
      if (++seen === expected) {
        lastDone = performance.now();
        times.push(lastDone - sentAt[i]);
        // The last replayed frame is the stream's head.
        if (!String(payload).includes(`"seq":${positions[i].seq + cfg.missed},`)) {
          failures.push({ wrongLastFrame: String(payload).slice(0, 80) });
        }
        finish();
      }
    };
    conn.closed.then(() => {
      if (seen < expected) {
        failures.push({ closed: conn.closeCode, seen });
        finish();
      }
    });
  });
  const frames = conns.map((_, i) =>
    textFrame(JSON.stringify({ type: "connect", resume: positions[i] }))
  );
  const [t0, c0] = [performance.now(), cpuMs()];
  for (let i = 0; i < n; i++) {
    sentAt[i] = performance.now();
    conns[i].send(frames[i]);
  }
  await Promise.race([finished, sleep(cfg.timeoutMs)]);
  const c1 = cpuMs();
  if (failures.length > 0 || times.length < n) {
    throw new Error(
      `resume: ${times.length} of ${n} replayed in full; ${failures.length} failed, e.g. ${
        JSON.stringify(failures[0])
      }`,
    );
  }
  emit("result", {
    clients: n,
    missed: cfg.missed,
    replayMs: percentiles(times),
    allMs: lastDone - t0,
    framesPerSec: (n * cfg.missed / (lastDone - t0)) * 1000,
    genCpu: (c1 - c0) / (lastDone - t0),
  });
}

/**
 * Server sends of `count` text messages (`<prefix><k>`) to each of users 0…users-1: every
 * message goes to all of them, 1 000 recipients per request, a few requests in flight.
 */
async function sendToEach(users, count, prefix) {
  const uids = Array.from({ length: users }, (_, i) => uidOf(i));
  const batches = [];
  for (let k = 0; k < count; k++) {
    for (let first = 0; first < users; first += 1_000) {
      batches.push({ k, to: uids.slice(first, first + 1_000) });
    }
  }
  await pool(batches.length, 8, async (b) => {
    const { k, to } = batches[b];
    const res = await post(`/v1/apps/${DEV.appId}/messages`, {
      to,
      message: { kind: "text", text: `${prefix}${k}` },
    }, { apikey: DEV.apiKey });
    if (res.status !== 200) throw new Error(`send: ${res.status} ${res.body}`);
  });
}

/**
 * 8. Group fan-out: `members` users, one connection each, in one group; `messages` server
 * sends to the group (`POST …/groups/:guid/messages`), `inflight` at a time. Per delivered
 * frame: from the start of its send request to its arrival.
 */
async function group() {
  const n = cfg.members;
  const guid = "bench_group";
  const res = await post(`/v1/apps/${DEV.appId}/groups`, {
    guid,
    members: Array.from({ length: n }, (_, i) => uidOf(i)),
  }, { apikey: DEV.apiKey });
  if (res.status !== 201) throw new Error(`create group: ${res.status} ${res.body}`);
  const conns = await pool(n, 100, (i) => open(i));
  const total = n * cfg.messages;
  const latencies = new Float64Array(total);
  const sentAt = new Float64Array(cfg.messages);
  const ackMs = [];
  const marker = Buffer.from('"text":"g');
  let received = 0;
  let last = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  for (const conn of conns) {
    handle(conn, (payload) => {
      const at = payload.indexOf(marker);
      if (at < 0) return;
      let k = 0;
      for (let p = at + marker.length; payload[p] !== 0x22; p++) k = k * 10 + payload[p] - 0x30;
      last = performance.now();
      latencies[received] = last - sentAt[k];
      if (++received === total) done();
    });
  }
  emit("ready");
  await waitGo();
  const [t0, c0] = [performance.now(), cpuMs()];
  const sends = pool(cfg.messages, cfg.inflight, async (k) => {
    const start = sentAt[k] = performance.now();
    const reply = await post(`/v1/apps/${DEV.appId}/groups/${guid}/messages`, {
      message: { kind: "text", text: `g${k}` },
    }, { apikey: DEV.apiKey });
    if (reply.status !== 200) throw new Error(`group send: ${reply.status} ${reply.body}`);
    ackMs.push(performance.now() - start);
  });
  await Promise.race([Promise.all([finished, sends]), sleep(cfg.timeoutMs)]);
  const c1 = cpuMs();
  if (received !== total) throw new Error(`group: ${received} of ${total} frames arrived`);
  emit("result", {
    members: n,
    inflight: cfg.inflight,
    received,
    rate: (received / (last - t0)) * 1000,
    latency: percentiles(latencies),
    ackMs: percentiles(ackMs),
    genCpu: (c1 - c0) / (last - t0),
  });
}

/**
 * 9. Cluster: `clients` users, one connection each, client i logged in and connected at node
 * `ports[i % ports.length]`; client i sends its messages (user `send` frames) to client i ^ 1,
 * which is at the other node when there are two. Two phases, each warmed up for `warmMs` and
 * measured for `measureMs` between two marks (the orchestrator reads Redis and the processes'
 * CPU at each mark, then says go): "steady", `rate` messages per second in all, spread evenly
 * over the clients and the second (an open loop); "saturated", each client keeps `window`
 * sends in flight, the next one sent when a `sent` answers one (a closed loop). The steady
 * phase goes on for `monitorMs` more between two marks of its own (`steady_extra_*`, where the
 * orchestrator counts the nodes' Redis requests with MONITOR). Per delivered message: from
 * writing its send frame to the receiver reading its `message` frame; per send: to its `sent`.
 * After each phase every message sent must have been answered and delivered.
 */
async function cluster() {
  const n = cfg.clients;
  const ports = cfg.ports;
  const conns = await pool(n, 50, (i) => open(i, { toPort: ports[i % ports.length] }));
  const receiverOf = conns.map((_, i) => JSON.stringify(uidOf(i ^ 1)));
  const SLOTS = 1 << 20;
  const sentAt = new Float64Array(SLOTS);
  const marker = Buffer.from('"text":"c');
  let next = 0;
  let delivered = 0;
  let acked = 0;
  let measuring = false;
  let latencies = [];
  let ackMs = [];
  let closedLoop = false;
  const errors = [];
  const send = (i) => {
    const k = next++;
    sentAt[k & (SLOTS - 1)] = performance.now();
    conns[i].send(textFrame(
      `{"type":"send","id":${k},"clientMessageId":"c${k}","receiverType":"user",` +
        `"receiver":${receiverOf[i]},"message":{"kind":"text","text":"c${k}"}}`,
    ));
  };
  /** The message number in a `message` or `sent` frame (its text is `c<k>`). */
  const numberIn = (payload) => {
    const at = payload.indexOf(marker);
    if (at < 0) return -1;
    let k = 0;
    for (let p = at + marker.length; payload[p] !== 0x22; p++) k = k * 10 + payload[p] - 0x30;
    return k;
  };
  conns.forEach((conn, i) => {
    handle(conn, (payload) => {
      // `{"type":"message"…`, `{"type":"sent"…`, `{"type":"error"…`: the 10th byte tells them.
      const t = payload[9];
      if (t === 0x6d /* m */) {
        const k = numberIn(payload);
        if (k < 0) return;
        delivered++;
        if (measuring) latencies.push(performance.now() - sentAt[k & (SLOTS - 1)]);
      } else if (t === 0x73 /* s */ && payload[10] === 0x65 /* e */) {
        const k = numberIn(payload);
        acked++;
        if (measuring) ackMs.push(performance.now() - sentAt[k & (SLOTS - 1)]);
        if (closedLoop) send(i);
      } else if (t === 0x65 /* e */) {
        errors.push(String(payload));
      }
    });
    conn.closed.then(() => errors.push(`connection ${i} closed (${conn.closeCode})`));
  });
  const mark = async (at) => {
    emit("mark", { at });
    await waitGo();
    return { t: performance.now(), sent: next, delivered, acked, cpu: cpuMs() };
  };
  const check = () => {
    if (errors.length > 0) {
      throw new Error(`cluster: ${errors.length} errors, e.g. ${errors[0].slice(0, 300)}`);
    }
  };
  /** Every message sent so far answered and delivered (or a failure). */
  const drain = async () => {
    const until = performance.now() + cfg.drainMs;
    while ((acked < next || delivered < next) && performance.now() < until) await sleep(10);
    check();
    if (acked < next || delivered < next) {
      throw new Error(`cluster: of ${next} sent, ${acked} answered, ${delivered} delivered`);
    }
  };
  /**
   * A phase: warm-up, the measured interval, then (`extra` ms, load going on) the interval
   * `<name>_extra` for what would disturb the measurement (the orchestrator's MONITOR).
   */
  const phase = async (name, start, stop, extra = 0) => {
    start();
    await sleep(cfg.warmMs);
    const a = await mark(`${name}_start`);
    [latencies, ackMs, measuring] = [[], [], true];
    await sleep(cfg.measureMs);
    measuring = false;
    const b = await mark(`${name}_end`);
    let extraSent = 0;
    if (extra > 0) {
      const c = await mark(`${name}_extra_start`);
      await sleep(extra);
      extraSent = (await mark(`${name}_extra_end`)).sent - c.sent;
    }
    stop();
    check();
    await drain();
    return {
      delivered: b.delivered - a.delivered,
      rate: ((b.delivered - a.delivered) / (b.t - a.t)) * 1000,
      latency: percentiles(latencies),
      ackMs: percentiles(ackMs),
      genCpu: (b.cpu - a.cpu) / (b.t - a.t),
      extraSent,
    };
  };

  let timer;
  const steadyResult = await phase(
    "steady",
    () => {
      const t0 = performance.now();
      const first = next;
      timer = setInterval(() => {
        const due = first + Math.floor(((performance.now() - t0) * cfg.rate) / 1000);
        while (next < due) send(next % n);
      }, 1);
    },
    () => clearInterval(timer),
    cfg.monitorMs,
  );
  const saturated = await phase("saturated", () => {
    closedLoop = true;
    for (let w = 0; w < cfg.window; w++) for (let i = 0; i < n; i++) send(i);
  }, () => (closedLoop = false));
  emit("result", { clients: n, nodes: ports.length, steady: steadyResult, saturated });
}

const scenarios = { ceiling, steady, memory, storm, fanout, deadline, resume, group, cluster };
try {
  const t0 = performance.now();
  if (kind === "gateway") await createUsers();
  emit("setup_done", { ms: performance.now() - t0 });
  await scenarios[cfg.scenario]();
  process.exit(0);
} catch (err) {
  emit("error", { message: String(err?.stack ?? err) });
  process.exit(1);
}
