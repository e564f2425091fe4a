/**
 * Crashes with real processes: a gateway killed with SIGKILL at the worst moment and started
 * again on the same Deno KV file. What a user was told before the crash must hold after it
 * (SPEC §4 "deadlines hold across crashes", §6 "seq strictly increasing ... survives crashes"):
 * no deadline fires before the one last announced, no acknowledged seq is handed out again,
 * and users, tokens and sessions that were acknowledged exist afterwards. SIGTERM still drains
 * with 1012, and auth tokens never reach the store in clear.
 *
 * Wall-clock assertions are one-sided where it matters ("never early", against the server's
 * own record and against the test's clock, which is the server's: same machine); the "not too
 * late" side has generous slack, since other suites share the two cores.
 */
import assert from "node:assert/strict";
import {
  closeCodeTable,
  type DisconnectReason,
  type SessionView,
  SessionViewSchema,
} from "../contract/mod.ts";
import { DEV_APP } from "../gateway/config.ts";
import { TestSocket } from "./support/harness.ts";
import { delay, devLogin, GatewayProcess } from "./support/process.ts";

/** Timings short enough for a test: a 3 s window; the relational rules of the config hold. */
const WINDOW_MS = 3_000;
const BASE_ENV: Record<string, string> = {
  LIVENESS_WINDOW_MS: String(WINDOW_MS),
  HEARTBEAT_INTERVAL_MS: "1000",
  PONG_TIMEOUT_MS: "500",
  IDLE_TIMEOUT_MS: "20000",
  LOG_LEVEL: "warn",
  RATE_LIMIT_HTTP_PER_SEC: "1000",
};
/** Slack for "not too late" under load (the bound itself is exact; this is scheduling noise). */
const LATE_SLACK_MS = 1_500;

const APP = DEV_APP.appId;
const API_HEADERS = { apikey: DEV_APP.apiKey, "content-type": "application/json" };

// ---- a chain of processes on one store ----

/** A gateway and its successors on the same KV file; disposing kills them and removes the store. */
class GatewayChain implements AsyncDisposable {
  readonly #all: GatewayProcess[];
  current: GatewayProcess;

  private constructor(first: GatewayProcess) {
    this.#all = [first];
    this.current = first;
  }

  static async start(env: Record<string, string>): Promise<GatewayChain> {
    return new GatewayChain(await GatewayProcess.start({ env }));
  }

  get url(): string {
    return this.current.url;
  }

  get kvPath(): string {
    return this.current.kvPath;
  }

  /** kill -9 now; returns when the process is gone (Date.now() of the kill as `killedAt`). */
  async crash(): Promise<number> {
    const killedAt = Date.now();
    await this.current.crash();
    return killedAt;
  }

  /** A new process on the same store (the old one must be gone). */
  async restart(): Promise<GatewayProcess> {
    assert.ok(!(await this.current.alive()), "restart after crash() or terminate()");
    this.current = await this.current.restart();
    this.#all.push(this.current);
    return this.current;
  }

  async crashAndRestart(): Promise<void> {
    await this.crash();
    await this.restart();
  }

  /** Everything the processes wrote, for a failure message. */
  output(): string {
    return this.#all.map((p, i) => `--- process ${i} ---\n${p.output.join("\n")}`).join("\n");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const proc of this.#all) if (await proc.alive()) await proc.crash();
    // Only the first process created the temporary directory; its cleanup removes it.
    await this.#all[0].cleanup();
  }
}

// ---- HTTP helpers (plain fetch, every body read) ----

async function call(
  url: string,
  method: string,
  path: string,
  init: { headers?: Record<string, string>; body?: unknown } = {},
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: init.headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  const text = await res.text();
  return { status: res.status, body: text === "" ? null : JSON.parse(text) };
}

function field<T>(body: unknown, name: string): T {
  assert.ok(typeof body === "object" && body !== null && name in body, JSON.stringify(body));
  return (body as Record<string, T>)[name];
}

/** `GET /v1/session`, with when the reply arrived (test clock = server clock). */
async function status(
  url: string,
  credential: string,
): Promise<{ view: SessionView; receivedAt: number }> {
  const res = await call(url, "GET", "/v1/session", {
    headers: { authorization: `Bearer ${credential}` },
  });
  const receivedAt = Date.now();
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { view: SessionViewSchema.parse(res.body), receivedAt };
}

/**
 * Polls the status until the session is disconnected. Every reply that arrived before
 * `notBefore` must still say connected (never early, seen from the client's side too).
 */
async function pollUntilDisconnected(
  url: string,
  credential: string,
  notBefore: number,
  timeoutMs: number,
  label: string,
): Promise<{ view: SessionView; sawConnectedBeforeDeadline: number }> {
  const giveUp = Date.now() + timeoutMs;
  let sawConnectedBeforeDeadline = 0;
  for (;;) {
    const { view, receivedAt } = await status(url, credential);
    if (view.status === "disconnected") {
      assert.ok(
        receivedAt >= notBefore,
        `${label}: status already disconnected at ${receivedAt}, ` +
          `${notBefore - receivedAt} ms before the announced deadline ${notBefore} ` +
          `(${JSON.stringify(view)})`,
      );
      return { view, sawConnectedBeforeDeadline };
    }
    if (receivedAt < notBefore) sawConnectedBeforeDeadline++;
    assert.ok(Date.now() < giveUp, `${label}: still connected after ${timeoutMs} ms`);
    await delay(50);
  }
}

/** Sends a text message to `uid` with the server API; returns the seq it got. */
async function sendMessage(url: string, uid: string, text: string): Promise<number> {
  const res = await call(url, "POST", `/v1/apps/${APP}/messages`, {
    headers: API_HEADERS,
    body: { to: [uid], message: { kind: "text", text } },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const recipients = field<Array<{ uid: string; seq: number }>>(res.body, "recipients");
  assert.equal(recipients.length, 1);
  return recipients[0].seq;
}

async function createUser(url: string, uid: string): Promise<void> {
  const res = await call(url, "POST", `/v1/apps/${APP}/users`, {
    headers: API_HEADERS,
    body: { uid, name: `Crash ${uid}` },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
}

async function createToken(url: string, uid: string): Promise<string> {
  const res = await call(url, "POST", `/v1/apps/${APP}/users/${uid}/auth_tokens`, {
    headers: API_HEADERS,
    body: {},
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return field<string>(res.body, "authToken");
}

async function tokenLogin(
  url: string,
  authToken: string,
  mode: "auto" | "manual" = "manual",
): Promise<{ status: number; credential?: string; uid?: string }> {
  const res = await call(url, "POST", `/v1/apps/${APP}/login`, {
    headers: { "content-type": "application/json" },
    body: { authToken, mode },
  });
  if (res.status !== 200) return { status: res.status };
  const session = field<{ credential: string }>(res.body, "session");
  const user = field<{ uid: string }>(res.body, "user");
  return { status: 200, credential: session.credential, uid: user.uid };
}

// ---- sockets ----

/** Opens a socket for a session and completes the handshake. */
async function connectSocket(
  proc: GatewayProcess,
  credential: string,
): Promise<TestSocket> {
  const socket = new TestSocket(`${proc.wsUrl}?credential=${encodeURIComponent(credential)}`);
  try {
    await socket.opened;
    socket.send({ type: "connect" });
    await socket.next("connected");
    return socket;
  } catch (error) {
    socket.close();
    await socket.closed;
    throw error;
  }
}

/** Closes every socket (a crashed gateway has dropped them already) and waits for each. */
async function closeAll(sockets: TestSocket[]): Promise<void> {
  for (const socket of sockets) socket.close();
  await Promise.all(sockets.map((socket) => socket.closed));
}

/** Waits for every scenario to end (each cleans up after itself), then reports all failures. */
async function allToTheEnd<T>(runs: Array<Promise<T>>): Promise<T[]> {
  const settled = await Promise.allSettled(runs);
  const failures = settled.flatMap((s, i) =>
    s.status === "rejected"
      ? [`#${i}: ${s.reason instanceof Error ? s.reason.stack : s.reason}`]
      : []
  );
  if (failures.length > 0) throw new Error(failures.join("\n\n"));
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

// ---- 1. a deadline is never early after a crash ----

const BOUND_1 = 2_000;

interface DeadlineRun {
  offsetMs: number;
  announced: number;
  restored: number | null;
  closedAt: number;
  lateMs: number;
  connectedChecks: number;
}

/**
 * Manual mode in background; the app pings over the socket every `intervalMs` until late in
 * the window; kill -9 `offsetMs` after the last pong; restart; the session must close as
 * `liveness_timeout` no earlier than the deadline that pong announced.
 */
async function deadlineAcrossCrash(
  offsetMs: number,
  intervalMs: number,
  startAfterMs: number,
): Promise<DeadlineRun> {
  await delay(startAfterMs);
  await using chain = await GatewayChain.start({
    ...BASE_ENV,
    DEADLINE_BOUND_MS: String(BOUND_1),
  });
  const label = `offset ${offsetMs} ms`;
  const { credential } = await devLogin(chain.url, "superhero1", "manual");
  const socket = await connectSocket(chain.current, credential);
  let announced: number;
  let killedAt: number;
  try {
    socket.send({ type: "app_state", state: "background" });
    const state = await socket.next("state");
    assert.ok(state.backgroundDeadline !== null);
    const backgroundAt = Date.now();
    announced = state.backgroundDeadline;
    // Pings until late in the window (the last one sent at most 2.6 s into the 3 s window).
    let id = 0;
    while (Date.now() + intervalMs < backgroundAt + WINDOW_MS - 400) {
      await delay(intervalMs);
      socket.send({ type: "ping", source: "app", id: ++id });
      const pong = await socket.until("pong");
      assert.equal(pong.id, id);
      assert.ok(pong.backgroundDeadline !== null, "a pong in background carries the deadline");
      assert.ok(pong.backgroundDeadline >= announced, "a ping never moves the deadline back");
      announced = pong.backgroundDeadline;
    }
    assert.ok(id >= 1, `${label}: at least one ping (${id})`);
    if (offsetMs > 0) await delay(offsetMs);
    killedAt = await chain.crash();
    assert.ok(killedAt < announced, `${label}: killed inside the window`);
    const dropped = await socket.closed;
    assert.notEqual(dropped.code, closeCodeTable.liveness_timeout, "killed, not closed by a rule");
  } finally {
    await closeAll([socket]);
  }

  await chain.restart();
  const after = await status(chain.url, credential);
  const restored = after.view.backgroundDeadline;
  let connectedChecks = 0;
  if (after.view.status === "disconnected") {
    // Only acceptable if the restart itself took us past the deadline.
    assert.ok(
      after.receivedAt >= announced,
      `${label}: disconnected right after restart, ${announced - after.receivedAt} ms before ` +
        `the announced deadline ${announced}: ${JSON.stringify(after.view)}\n${chain.output()}`,
    );
  } else {
    if (after.receivedAt < announced) connectedChecks++;
    assert.ok(restored !== null, `${label}: a connected background session has a deadline`);
    assert.ok(
      restored >= announced,
      `${label}: restored deadline ${restored} is ${announced - restored} ms before the ` +
        `announced ${announced}`,
    );
    assert.ok(
      restored <= announced + BOUND_1,
      `${label}: restored deadline ${restored} is more than DEADLINE_BOUND_MS after ${announced}`,
    );
  }
  const { view, sawConnectedBeforeDeadline } = await pollUntilDisconnected(
    chain.url,
    credential,
    announced,
    announced - Date.now() + BOUND_1 + 5_000,
    label,
  );
  connectedChecks += sawConnectedBeforeDeadline;
  assert.equal(view.lastDisconnectReason, "liveness_timeout", JSON.stringify(view));
  const closedAt = view.lastDisconnectAt!;
  assert.ok(
    closedAt >= announced,
    `${label}: closed at ${closedAt}, ${announced - closedAt} ms BEFORE the announced deadline`,
  );
  assert.ok(
    closedAt <= announced + BOUND_1 + LATE_SLACK_MS,
    `${label}: closed ${closedAt - announced} ms after the announced deadline`,
  );
  return { offsetMs, announced, restored, closedAt, lateMs: closedAt - announced, connectedChecks };
}

Deno.test("crash: a deadline announced in a pong never fires early after kill -9 and restart", async () => {
  // Five crashes at different offsets after the last pong, with different ping cadences (so
  // that the last ping sometimes moved the persisted bound and sometimes did not). They run
  // side by side on five gateways (own stores), staggered, to keep the test short.
  const plans = [
    { offsetMs: 0, intervalMs: 500 },
    { offsetMs: 50, intervalMs: 700 },
    { offsetMs: 200, intervalMs: 600 },
    { offsetMs: 400, intervalMs: 450 },
    { offsetMs: 800, intervalMs: 550 },
  ];
  const runs = await allToTheEnd(
    plans.map((p, i) => deadlineAcrossCrash(p.offsetMs, p.intervalMs, i * 250)),
  );
  for (const run of runs) {
    console.log(
      `offset ${run.offsetMs} ms: closed ${run.lateMs} ms after the announced deadline ` +
        `(restored deadline +${run.restored === null ? "-" : run.restored - run.announced} ms, ` +
        `${run.connectedChecks} status reads before it said connected)`,
    );
  }
  // The status read right after the restart came before the announced deadline at least once.
  assert.ok(
    runs.some((run) => run.connectedChecks > 0),
    "no status read happened before an announced deadline",
  );
});

// ---- 2. an acknowledged seq is never handed out again ----

Deno.test("crash: an acknowledged seq is never handed out again (first send after load, kill -9)", async () => {
  await using chain = await GatewayChain.start(BASE_ENV);
  const seqs: number[] = [];
  // The first send of a fresh process loads superhero1's state; kill -9 right after its reply.
  for (let i = 0; i < 12; i++) {
    const seq = await sendMessage(chain.url, "superhero1", `before crash ${i}`);
    await chain.crash();
    if (seqs.length > 0) {
      assert.ok(
        seq > seqs[seqs.length - 1],
        `try ${i}: seq ${seq} after a restart, but ${seqs[seqs.length - 1]} was acknowledged ` +
          `before the crash (all: ${seqs.join(", ")})`,
      );
    }
    seqs.push(seq);
    await chain.restart();
  }
  const last = await sendMessage(chain.url, "superhero1", "after the last crash");
  assert.ok(last > seqs[seqs.length - 1], `final seq ${last} after ${seqs.join(", ")}`);
  console.log(`seqs across 12 crashes: ${[...seqs, last].join(", ")}`);
});

// ---- 3. nothing promised is lost ----

Deno.test("crash: users, tokens, sessions and seqs acknowledged before kill -9 are all there after it", async () => {
  await using chain = await GatewayChain.start(BASE_ENV);
  const uid = "crash_user_1";

  // Each step is followed at once by kill -9 and a restart: its reply was the promise.
  await createUser(chain.url, uid);
  await chain.crashAndRestart();
  const authToken = await createToken(chain.url, uid); // 404 if the user was lost
  await chain.crashAndRestart();
  const first = await tokenLogin(chain.url, authToken);
  assert.equal(first.status, 200, "the token created before the crash logs in");
  const credential = first.credential!;
  await chain.crashAndRestart();
  assert.equal((await status(chain.url, credential)).view.uid, uid, "the session survived");

  const acknowledged: number[] = [];
  for (let i = 0; i < 5; i++) acknowledged.push(await sendMessage(chain.url, uid, `m${i}`));
  for (let i = 1; i < acknowledged.length; i++) {
    assert.ok(acknowledged[i] > acknowledged[i - 1], `seqs increase: ${acknowledged.join(", ")}`);
  }
  await chain.crashAndRestart();

  // Everything, once more, after the last crash.
  const again = await call(chain.url, "POST", `/v1/apps/${APP}/users`, {
    headers: API_HEADERS,
    body: { uid },
  });
  assert.equal(again.status, 409, `the user exists: ${JSON.stringify(again.body)}`);
  const presence = await call(chain.url, "GET", `/v1/apps/${APP}/users/${uid}/presence`, {
    headers: API_HEADERS,
  });
  assert.equal(presence.status, 200, JSON.stringify(presence.body));
  const second = await tokenLogin(chain.url, authToken);
  assert.equal(second.status, 200, "the token still logs in");
  assert.equal(second.uid, uid);
  const old = await status(chain.url, credential);
  assert.equal(old.view.uid, uid, "the old session credential still works");
  // The old credential also connects a socket.
  const socket = await connectSocket(chain.current, credential);
  try {
    const later = await sendMessage(chain.url, uid, "after");
    const max = Math.max(...acknowledged);
    assert.ok(later > max, `seq ${later} after the crash, ${max} acknowledged before it`);
    const frame = await socket.until("message");
    assert.equal(frame.seq, later, "the connected old session gets the message");
  } finally {
    await closeAll([socket]);
  }
  // The second login's session survives too.
  assert.equal((await status(chain.url, second.credential!)).view.uid, uid);
});

// ---- 4. every announced deadline, several sessions at once ----

interface Tracked {
  label: string;
  credential: string;
  socket: TestSocket;
  reason: DisconnectReason;
  /** The last deadline the session was told (state or pong frame). */
  announced: number;
}

Deno.test("crash: every deadline announced before kill -9 fires at or after its time (6 sessions)", async () => {
  // DEADLINE_BOUND_MS at its default (5 s).
  await using chain = await GatewayChain.start(BASE_ENV);
  const bound = 5_000;
  const tracked: Tracked[] = [];
  try {
    for (let i = 1; i <= 5; i++) {
      const { credential } = await devLogin(chain.url, `superhero${i}`, "manual");
      const socket = await connectSocket(chain.current, credential);
      tracked.push({
        label: `manual superhero${i}`,
        credential,
        socket,
        reason: "liveness_timeout",
        announced: 0,
      });
    }
    const auto = await devLogin(chain.url, "superhero1", "auto");
    const autoSocket = await connectSocket(chain.current, auto.credential);
    tracked.push({
      label: "auto superhero1 (background service)",
      credential: auto.credential,
      socket: autoSocket,
      reason: "background_timeout",
      announced: 0,
    });

    // All to background; the auto session with its background service on.
    for (const [i, t] of tracked.entries()) {
      t.socket.send({ type: "app_state", state: "background", backgroundService: i === 5 });
      const state = await t.socket.next("state");
      assert.ok(state.backgroundDeadline !== null, t.label);
      t.announced = state.backgroundDeadline;
    }
    const autoDeadline = tracked[5].announced;

    // Manual session i pings every 250 + 150·i ms; session 5 (i = 4) never pings. The auto
    // session's heartbeats do not move its deadline.
    const crashAt = Date.now() + 2_000;
    let stop = false;
    /** The next pong, or null when the crash came first (that deadline was never announced). */
    const pongOf = async (socket: TestSocket, id: number) => {
      try {
        const pong = await socket.until("pong", 2_000);
        assert.equal(pong.id, id);
        return pong;
      } catch (error) {
        if (socket.ws.readyState === WebSocket.CLOSED) return null;
        throw error;
      }
    };
    const pinger = async (t: Tracked, everyMs: number) => {
      for (let id = 1; !stop; id++) {
        await delay(everyMs);
        if (stop) return;
        t.socket.send({ type: "ping", source: "app", id });
        const pong = await pongOf(t.socket, id);
        if (pong === null) return;
        assert.ok(pong.backgroundDeadline !== null && pong.backgroundDeadline >= t.announced);
        t.announced = pong.backgroundDeadline;
      }
    };
    const heartbeats = async () => {
      for (let id = 1; !stop; id++) {
        await delay(400);
        if (stop) return;
        autoSocket.send({ type: "ping", source: "heartbeat", id });
        const pong = await pongOf(autoSocket, id);
        if (pong === null) return;
        assert.equal(pong.backgroundDeadline, autoDeadline, "a heartbeat never extends it");
      }
    };
    const pinging = allToTheEnd([
      ...tracked.slice(0, 4).map((t, i) => pinger(t, 250 + 150 * i)),
      heartbeats(),
    ]);
    let killedAt: number;
    try {
      await delay(crashAt - Date.now());
      // The worst moment: pings in flight, some pongs just sent.
      killedAt = await chain.crash();
    } finally {
      stop = true;
      await pinging;
    }
    await closeAll(tracked.map((t) => t.socket));
    for (const t of tracked) assert.ok(t.announced > killedAt, `${t.label}: inside its window`);

    await chain.restart();
    const lines = await allToTheEnd(tracked.map(async (t) => {
      const { view, sawConnectedBeforeDeadline } = await pollUntilDisconnected(
        chain.url,
        t.credential,
        t.announced,
        t.announced - Date.now() + bound + 5_000,
        t.label,
      );
      assert.equal(view.lastDisconnectReason, t.reason, `${t.label}: ${JSON.stringify(view)}`);
      const closedAt = view.lastDisconnectAt!;
      assert.ok(
        closedAt >= t.announced,
        `${t.label}: closed ${t.announced - closedAt} ms BEFORE its announced deadline`,
      );
      assert.ok(
        closedAt <= t.announced + bound + LATE_SLACK_MS,
        `${t.label}: closed ${closedAt - t.announced} ms after its announced deadline`,
      );
      return `${t.label}: announced killed+${t.announced - killedAt} ms, closed ` +
        `${closedAt - t.announced} ms after it (${sawConnectedBeforeDeadline} reads said ` +
        `connected before it)`;
    }));
    console.log(lines.join("\n"));
  } finally {
    await closeAll(tracked.map((t) => t.socket));
  }
});

// ---- 5. SIGTERM drains with 1012 ----

Deno.test("SIGTERM: sockets get closing server_shutdown and 1012, exit 0, sessions survive", async () => {
  await using chain = await GatewayChain.start(BASE_ENV);
  const manual = await devLogin(chain.url, "superhero1", "manual");
  const auto = await devLogin(chain.url, "superhero2", "auto");
  const sockets = [
    await connectSocket(chain.current, manual.credential),
    await connectSocket(chain.current, auto.credential),
  ];
  try {
    const exit = await chain.current.terminate();
    for (const socket of sockets) {
      const closing = await socket.until("closing");
      assert.equal(closing.reason, "server_shutdown");
      assert.equal(closing.code, closeCodeTable.server_shutdown);
      const closed = await socket.closed;
      assert.equal(closed.code, 1012);
    }
    assert.equal(exit.code, 0, chain.output());
    assert.equal(exit.success, true);
  } finally {
    await closeAll(sockets);
  }
  await chain.restart();
  for (const credential of [manual.credential, auto.credential]) {
    const { view } = await status(chain.url, credential);
    assert.equal(view.status, "disconnected");
    assert.equal(view.lastDisconnectReason, "server_shutdown");
  }
  // And they connect again.
  const again = await connectSocket(chain.current, manual.credential);
  await closeAll([again]);
  const exit = await chain.current.terminate();
  assert.equal(exit.code, 0);
});

// ---- 6. auth tokens are stored hashed ----

async function storeBytesContain(kvPath: string, needle: string): Promise<string[]> {
  const bytes = new TextEncoder().encode(needle);
  const found: string[] = [];
  let scanned = 0;
  for (const path of [kvPath, `${kvPath}-wal`, `${kvPath}-shm`, `${kvPath}-journal`]) {
    let data: Uint8Array;
    try {
      data = await Deno.readFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw error;
    }
    scanned++;
    if (indexOf(data, bytes) >= 0) found.push(path);
  }
  assert.ok(scanned > 0, `no store file at ${kvPath}`);
  return found;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

Deno.test("auth tokens are stored hashed: the store's bytes never hold the token", async () => {
  await using chain = await GatewayChain.start(BASE_ENV);
  const uid = "crash_user_token";
  await createUser(chain.url, uid);
  const authToken = await createToken(chain.url, uid);
  const uidBytesFound = async () => (await storeBytesContain(chain.kvPath, uid)).length > 0;

  // Right after a kill -9 (the write-ahead log holds the latest writes) ...
  await chain.crash();
  assert.ok(await uidBytesFound(), "the scan sees what the store holds (the uid is there)");
  assert.deepEqual(await storeBytesContain(chain.kvPath, authToken), [], "token in the store");
  await chain.restart();
  const login = await tokenLogin(chain.url, authToken);
  assert.equal(login.status, 200, "the token logs in after the restart");
  assert.equal(login.uid, uid);

  // ... and after a graceful stop.
  const second = await createToken(chain.url, uid);
  const exit = await chain.current.terminate();
  assert.equal(exit.code, 0);
  for (const token of [authToken, second]) {
    assert.deepEqual(await storeBytesContain(chain.kvPath, token), [], "token in the store");
  }
  await chain.restart();
  assert.equal((await tokenLogin(chain.url, second)).status, 200);
  assert.equal((await tokenLogin(chain.url, authToken)).status, 200);
});
