/**
 * Every lifecycle rule over real WebSockets against a real gateway on a random port, with a
 * short window (FAST: 400 ms). Asserts frames, close codes and the server's status read.
 */
import assert from "node:assert/strict";
import { DEFAULTS, DEV_APP } from "../gateway/mod.ts";
import { closeCodeTable, type SessionView } from "../contract/mod.ts";
import {
  API_KEY,
  delay,
  FAST,
  login,
  startTestGateway,
  type TestGateway,
  TestSocket,
} from "./support/harness.ts";

const WINDOW = FAST.livenessWindowMs!;

async function status(gateway: TestGateway, credential: string): Promise<SessionView> {
  const res = await gateway.rest.session.status({
    headers: { authorization: `Bearer ${credential}` },
  });
  assert.equal(res.status, 200);
  return res.body as SessionView;
}

async function expectClose(
  socket: TestSocket,
  reason: keyof typeof closeCodeTable,
): Promise<{ at: number }> {
  const closing = await socket.until("closing", WINDOW * 5);
  assert.equal(closing.reason, reason);
  assert.equal(closing.code, closeCodeTable[reason]);
  const closed = await socket.closed;
  assert.equal(closed.code, closeCodeTable[reason]);
  return { at: closed.at };
}

Deno.test("auto/foreground: connected, heartbeats answered, status connected", async () => {
  await using gateway = await startTestGateway();
  const { credential, sessionId } = await login(gateway, "auto");
  const { socket, connected } = await TestSocket.connect(gateway, credential);
  await using _ = socket;
  assert.equal(connected.sessionId, sessionId);
  assert.equal(connected.mode, "auto");
  assert.deepEqual(connected.timing, {
    livenessWindowMs: WINDOW,
    heartbeatIntervalMs: FAST.heartbeatIntervalMs,
    pongTimeoutMs: FAST.pongTimeoutMs,
    idleTimeoutMs: FAST.idleTimeoutMs,
    typingTimeoutMs: DEFAULTS.typingTimeoutMs,
    presenceIntervalMs: DEFAULTS.presenceIntervalMs,
  });
  socket.send({ type: "ping", id: 7 });
  const pong = await socket.next("pong");
  assert.equal(pong.id, 7);
  assert.equal(pong.backgroundDeadline, null);
  await delay(WINDOW * 1.5);
  assert.equal(socket.ws.readyState, WebSocket.OPEN);
  const view = await status(gateway, credential);
  assert.equal(view.status, "connected");
  assert.equal(view.appState, "foreground");
  assert.ok(view.lastPingAt !== null);
});

Deno.test("auto/background without background service: closed at once (4001)", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  const { socket } = await TestSocket.connect(gateway, credential);
  socket.send({ type: "app_state", state: "background", backgroundService: false });
  await expectClose(socket, "background");
  const view = await status(gateway, credential);
  assert.equal(view.status, "disconnected");
  assert.equal(view.lastDisconnectReason, "background");
});

Deno.test("auto/background with service: closed one window after entering background; heartbeats don't extend", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  const { socket } = await TestSocket.connect(gateway, credential);
  socket.send({ type: "app_state", id: "bg", state: "background", backgroundService: true });
  const state = await socket.next("state");
  assert.equal(state.id, "bg");
  assert.ok(state.backgroundDeadline !== null);
  // Heartbeats keep coming but never move the deadline.
  const beat = setInterval(() => socket.send({ type: "ping" }), WINDOW / 5);
  try {
    const { at } = await expectClose(socket, "background_timeout");
    assert.ok(at >= state.backgroundDeadline!, "never early");
  } finally {
    clearInterval(beat);
  }
  const pongs = socket.frames.filter((f) => f.type === "pong");
  assert.ok(pongs.length >= 2);
  for (const pong of pongs) {
    assert.equal(pong.type === "pong" && pong.backgroundDeadline, state.backgroundDeadline);
  }
  assert.equal((await status(gateway, credential)).lastDisconnectReason, "background_timeout");
});

Deno.test("manual/background without ping: closed at the deadline (liveness_timeout, 4003)", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual");
  const { socket } = await TestSocket.connect(gateway, credential);
  socket.send({ type: "app_state", state: "background" });
  const state = await socket.next("state");
  const deadline = state.backgroundDeadline!;
  const during = await status(gateway, credential);
  assert.equal(during.backgroundDeadline, deadline);
  assert.equal(during.appState, "background");
  const { at } = await expectClose(socket, "liveness_timeout");
  assert.ok(at >= deadline, `closed ${deadline - at} ms early`);
  const after = await status(gateway, credential);
  assert.equal(after.status, "disconnected");
  assert.equal(after.lastDisconnectReason, "liveness_timeout");
  assert.equal(after.backgroundDeadline, null);
});

Deno.test("manual/background: each ping (socket or HTTP) moves the deadline to ping + window", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual");
  const { socket } = await TestSocket.connect(gateway, credential);
  await using _ = socket;
  socket.send({ type: "app_state", state: "background" });
  const first = (await socket.next("state")).backgroundDeadline!;
  // Keep it alive for three windows with pings at 60 % of the window, alternating transports.
  let last = first;
  for (let i = 0; i < 5; i++) {
    await delay(WINDOW * 0.6);
    if (i % 2 === 0) {
      socket.send({ type: "ping", id: i, source: "app" });
      const pong = await socket.next("pong");
      assert.ok(pong.backgroundDeadline! > last);
      assert.equal(pong.backgroundDeadline, pong.serverTime + WINDOW);
      last = pong.backgroundDeadline!;
    } else {
      const res = await gateway.rest.session.ping({
        headers: { authorization: `Bearer ${credential}` },
      });
      assert.equal(res.status, 200);
      if (res.status !== 200) return;
      assert.equal(res.body.backgroundDeadline, res.body.serverTime + WINDOW);
      last = res.body.backgroundDeadline!;
    }
  }
  assert.equal(socket.ws.readyState, WebSocket.OPEN, "pings kept it open past the first window");
  assert.ok(Date.now() > first);
  const { at } = await expectClose(socket, "liveness_timeout");
  assert.ok(at >= last);
});

Deno.test("manual/foreground: connected until disconnect(), then nothing is maintained", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual");
  const { socket } = await TestSocket.connect(gateway, credential);
  await delay(WINDOW * 1.5);
  assert.equal(socket.ws.readyState, WebSocket.OPEN);
  socket.send({ type: "disconnect" });
  await expectClose(socket, "client_disconnect");
  const view = await status(gateway, credential);
  assert.equal(view.status, "disconnected");
  assert.equal(view.lastDisconnectReason, "client_disconnect");
  const ping = await gateway.rest.session.ping({
    headers: { authorization: `Bearer ${credential}` },
  });
  assert.equal(ping.status, 409);
  assert.equal((ping.body as { errorCode: string }).errorCode, "NO_WEBSOCKET_CONNECTION");
});

Deno.test("manual: HTTP disconnect closes the socket (1000) and returns the status", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual");
  const { socket } = await TestSocket.connect(gateway, credential);
  socket.send({ type: "app_state", state: "background" });
  await socket.next("state");
  const res = await gateway.rest.session.disconnect({
    headers: { authorization: `Bearer ${credential}` },
  });
  assert.equal(res.status, 200);
  assert.equal((res.body as SessionView).status, "disconnected");
  assert.equal((res.body as SessionView).backgroundDeadline, null);
  await expectClose(socket, "client_disconnect");
});

Deno.test("any: back to foreground before the deadline cancels it", async () => {
  await using gateway = await startTestGateway();
  for (const mode of ["auto", "manual"] as const) {
    const { credential } = await login(gateway, mode);
    const { socket } = await TestSocket.connect(gateway, credential);
    await using _ = socket;
    socket.send({ type: "app_state", state: "background", backgroundService: true });
    assert.ok((await socket.next("state")).backgroundDeadline !== null);
    await delay(WINDOW * 0.7);
    socket.send({ type: "app_state", state: "foreground" });
    assert.equal((await socket.next("state")).backgroundDeadline, null);
    await delay(WINDOW * 0.8);
    assert.equal(socket.ws.readyState, WebSocket.OPEN, `${mode}: still open past the old deadline`);
    assert.equal((await status(gateway, credential)).backgroundDeadline, null);
  }
});

Deno.test("a second connection of a session replaces the first (4005); two sessions are independent", async () => {
  await using gateway = await startTestGateway();
  const a = await login(gateway, "auto");
  const b = await login(gateway, "auto");
  const { socket: first } = await TestSocket.connect(gateway, a.credential);
  const { socket: other } = await TestSocket.connect(gateway, b.credential);
  await using _other = other;
  const { socket: second } = await TestSocket.connect(gateway, a.credential);
  await using _second = second;
  await expectClose(first, "replaced");
  second.send({ type: "ping", id: 1 });
  assert.equal((await second.next("pong")).id, 1);
  other.send({ type: "ping", id: 2 });
  assert.equal((await other.next("pong")).id, 2);
  assert.equal((await status(gateway, a.credential)).status, "connected");
});

Deno.test("a replacement inside a background window keeps its deadline (4005, then 4002) and the user online", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto", "superhero3");
  const { socket: first } = await TestSocket.connect(gateway, credential);
  first.send({ type: "app_state", state: "background", backgroundService: true });
  const deadline = (await first.next("state")).backgroundDeadline!;
  await delay(WINDOW * 0.5);
  // Auto mode: a ping cannot extend the window, and neither can a new socket.
  const { socket: second, connected } = await TestSocket.connect(gateway, credential, {
    appState: "background",
    backgroundService: true,
  });
  assert.equal(connected.backgroundDeadline, deadline, "the new socket took over the window");
  await expectClose(first, "replaced");
  const presence = await gateway.rest.server.getPresence({
    params: { appId: DEV_APP.appId, uid: "superhero3" },
    headers: API_KEY,
  });
  assert.equal(presence.status, 200);
  assert.equal((presence.body as { online: boolean }).online, true, "no offline in between");
  const view = await status(gateway, credential);
  assert.equal(view.status, "connected");
  assert.equal(view.backgroundDeadline, deadline);
  const { at } = await expectClose(second, "background_timeout");
  assert.ok(at >= deadline, `closed ${deadline - at} ms early`);
  assert.ok(at < deadline + WINDOW * 0.5, "the window did not restart at the replacement");
});

Deno.test("dead peer: a connection that sends nothing is closed after the idle timeout (4004)", async () => {
  await using gateway = await startTestGateway({ idleTimeoutMs: 600 });
  const { credential } = await login(gateway, "auto");
  const { socket } = await TestSocket.connect(gateway, credential);
  const openedAt = Date.now();
  const { at } = await expectClose(socket, "idle_timeout");
  assert.ok(at - openedAt >= 600 - 20);
  assert.equal((await status(gateway, credential)).lastDisconnectReason, "idle_timeout");
});

Deno.test("logout closes the socket (4006) and revokes the credential", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  const { socket } = await TestSocket.connect(gateway, credential);
  const res = await gateway.rest.session.logout({
    headers: { authorization: `Bearer ${credential}` },
  });
  assert.equal(res.status, 200);
  await expectClose(socket, "logged_out");
  const after = await gateway.rest.session.status({
    headers: { authorization: `Bearer ${credential}` },
  });
  assert.equal(after.status, 401);
  assert.equal((after.body as { errorCode: string }).errorCode, "AUTH_ERR_AUTH_TOKEN_NOT_FOUND");
});

Deno.test("logout inside a background window closes as logged_out (4006), not at the deadline, and the user goes offline", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual", "superhero3");
  const { socket } = await TestSocket.connect(gateway, credential);
  socket.send({ type: "app_state", state: "background" });
  const deadline = (await socket.next("state")).backgroundDeadline!;
  const res = await gateway.rest.session.logout({
    headers: { authorization: `Bearer ${credential}` },
  });
  assert.equal(res.status, 200);
  const { at } = await expectClose(socket, "logged_out");
  assert.ok(at < deadline, "closed by the logout, not by the window");
  const presence = await gateway.rest.server.getPresence({
    params: { appId: DEV_APP.appId, uid: "superhero3" },
    headers: API_KEY,
  });
  assert.equal(presence.status, 200);
  if (presence.status !== 200) return;
  assert.equal(presence.body.online, false);
  assert.ok(presence.body.lastSeenAt !== null && presence.body.lastSeenAt <= at);
  const sessions = await gateway.rest.server.getSessions({
    params: { appId: DEV_APP.appId, uid: "superhero3" },
    headers: API_KEY,
  });
  assert.equal(sessions.status, 200);
  if (sessions.status === 200) assert.equal(sessions.body.sessions.length, 0, "session ended");
});

Deno.test("presence: online while a session is connected, offline with lastSeenAt after the deadline", async () => {
  await using gateway = await startTestGateway();
  const presence = () =>
    gateway.rest.server.getPresence({
      params: { appId: DEV_APP.appId, uid: "superhero2" },
      headers: API_KEY,
    });
  const { credential } = await login(gateway, "manual", "superhero2");
  const { socket } = await TestSocket.connect(gateway, credential);
  let res = await presence();
  assert.equal(res.status, 200);
  assert.equal((res.body as { online: boolean }).online, true);
  socket.send({ type: "app_state", state: "background" });
  await expectClose(socket, "liveness_timeout");
  res = await presence();
  assert.equal(res.status, 200);
  if (res.status !== 200) return;
  assert.equal(res.body.online, false);
  assert.ok(typeof res.body.lastSeenAt === "number");
  const sessions = await gateway.rest.server.getSessions({
    params: { appId: DEV_APP.appId, uid: "superhero2" },
    headers: API_KEY,
  });
  assert.equal(sessions.status, 200);
  if (sessions.status === 200) {
    assert.equal(sessions.body.sessions.length, 1);
    assert.equal(sessions.body.sessions[0].lastDisconnectReason, "liveness_timeout");
  }
});

Deno.test("shutdown: sockets get 1012 with a closing frame", async () => {
  const gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  const { socket } = await TestSocket.connect(gateway, credential);
  const stopped = gateway.stop();
  await expectClose(socket, "server_shutdown");
  await stopped;
});

Deno.test("shutdown: a connection that never sent a byte does not hold the stop", async () => {
  const gateway = await startTestGateway(); // close timeout: the default 5 s
  // What a browser's preconnect or an HTTP client pool's spare connection looks like.
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: gateway.port });
  await login(gateway, "auto"); // and one that was used and is idle (keep-alive)
  await delay(50); // accepted by the gateway
  const started = Date.now();
  await gateway.stop();
  const took = Date.now() - started;
  // Held, it takes the close timeout (5 s); half of it leaves room for a loaded machine.
  assert.ok(took < 2_500, `stop took ${took} ms`);
  assert.equal(await silent.read(new Uint8Array(1)).catch(() => null), null, "closed");
  silent.close();
});

Deno.test("browsers: the credential rides in the sub-protocol; the server echoes only liveness.v1", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  const socket = new TestSocket(gateway.wsUrl, ["liveness.v1", `cred.${credential}`]);
  await using _ = socket;
  await socket.opened;
  assert.equal(socket.ws.protocol, "liveness.v1");
  socket.send({ type: "connect" });
  assert.equal((await socket.next("connected")).uid, "superhero1");
});
