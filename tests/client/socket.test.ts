/**
 * `client/socket.ts` on its own: one WebSocket's handshake, heartbeat and pong timeout,
 * replies matched to their request by frame id, and the one end it reports to its owner
 * however it ends. Against the in-process fake gateway with a fake clock (exact timing and
 * event order), then against the real gateway with the real clock and real WebSockets, where
 * the test sanitizers catch any timer or socket left behind after the end.
 */
import assert from "node:assert/strict";
import {
  closeCodeTable,
  createRestClient,
  GatewayError,
  type Message,
  type ServerFrame,
  type ServerFrameOf,
  systemClock,
  type WebSocketConstructor,
} from "../../client/mod.ts";
import {
  GatewaySocket,
  socketAddress,
  type SocketEndReport,
  type SocketEvents,
  type SocketOptions,
} from "../../client/socket.ts";
import { FAKE_TIMING, FakeGateway, flush } from "./fake_server.ts";
import {
  DEV,
  devSettings,
  FakeClock,
  rejectsWith,
  TcpProxy,
  TEST_TIMING,
  waitUntil,
  withGateway,
} from "./helpers.ts";

const HANDSHAKE_TIMEOUT_MS = 1_000;

/** Everything a socket told its owner, in order. */
class Owner implements SocketEvents {
  readonly connected: ServerFrameOf<"connected">[] = [];
  readonly deadlines: (number | null)[] = [];
  readonly messages: { message: Message; seq: number }[] = [];
  /** `sent`, `typing_started`, `typing_ended` and `presence` frames, in order. */
  readonly events: ServerFrame[] = [];
  readonly errors: { error: GatewayError; id: string | number | undefined }[] = [];
  readonly ends: SocketEndReport[] = [];

  onConnected = (frame: ServerFrameOf<"connected">): void => void this.connected.push(frame);
  onBackgroundDeadline = (deadline: number | null): void => void this.deadlines.push(deadline);
  onMessage = (message: Message, seq: number): void => void this.messages.push({ message, seq });
  onSent = (frame: ServerFrame): void => void this.events.push(frame);
  onTyping = (frame: ServerFrame): void => void this.events.push(frame);
  onPresence = (frame: ServerFrame): void => void this.events.push(frame);
  onError = (error: GatewayError, id: string | number | undefined): void =>
    void this.errors.push({ error, id });
  onEnd = (end: SocketEndReport): void => void this.ends.push(end);

  /** The one end; fails the test unless exactly one was reported. */
  onlyEnd(): SocketEndReport {
    assert.equal(this.ends.length, 1, `ends reported: ${JSON.stringify(this.ends)}`);
    return this.ends[0];
  }
}

/** A socket to the fake gateway, opened and (by default) handshaken. */
async function fakeSocket(options: Partial<SocketOptions> = {}, handshake = true) {
  const server = new FakeGateway();
  server.autoHandshake = handshake;
  const clock = new FakeClock();
  const owner = new Owner();
  const socket = new GatewaySocket({
    ...socketAddress({
      baseUrl: "http://gateway.test",
      path: "/v1/ws",
      credential: "cred1",
      credentialIn: "protocol",
    }),
    WebSocket: server.WebSocket,
    clock,
    timing: FAKE_TIMING,
    handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
    appState: "foreground",
    backgroundService: false,
    ...options,
  }, owner);
  await flush();
  return { server, wire: server.last, clock, owner, socket };
}

/** Waits until the socket's WebSocket has closed; then no timer of it may be pending. */
async function assertNothingLeft(socket: GatewaySocket, clock: FakeClock): Promise<void> {
  await flush();
  await socket.closed;
  assert.deepEqual(clock.pending(), [], "no timer of the socket is left");
  assert.equal(socket.handshaken, false);
}

Deno.test("socket: the address carries the credential as a sub-protocol or a query parameter", () => {
  const input = { baseUrl: "https://gw.example/", path: "/v1/ws", credential: "a b" };
  assert.deepEqual(socketAddress({ ...input, credentialIn: "protocol" }), {
    url: "wss://gw.example/v1/ws",
    protocols: ["liveness.v1", "cred.a b"],
  });
  assert.deepEqual(socketAddress({ ...input, credentialIn: "query" }), {
    url: "wss://gw.example/v1/ws?credential=a%20b",
    protocols: ["liveness.v1"],
  });
});

Deno.test("socket: connect → connected; heartbeats then run on the connected frame's timing", async () => {
  // The socket starts with a slower timing than the gateway's: the connected frame wins.
  const slow = { ...FAKE_TIMING, heartbeatIntervalMs: 60_000 };
  const { wire, clock, owner, socket } = await fakeSocket({ timing: slow });
  assert.equal(wire.url, "ws://gateway.test/v1/ws");
  assert.deepEqual(wire.protocols, ["liveness.v1", "cred.cred1"]);
  assert.deepEqual(wire.sent, [
    { type: "connect", id: 1, appState: "foreground", backgroundService: false },
  ]);
  assert.equal(owner.connected.length, 1);
  assert.equal(owner.connected[0].id, 1, "the reply to the connect frame");
  assert.equal(socket.handshaken, true);
  assert.deepEqual(clock.pending(), [FAKE_TIMING.heartbeatIntervalMs], "handshake timer gone");

  clock.advance(FAKE_TIMING.heartbeatIntervalMs);
  await flush();
  assert.deepEqual(wire.sentOf("ping").map((p) => p.source), ["heartbeat"]);
  // The pong arrived (a microtask): the next heartbeat is due one interval later.
  assert.deepEqual(clock.pending(), [FAKE_TIMING.heartbeatIntervalMs]);
  assert.deepEqual(owner.ends, []);
  socket.close({ reason: "destroyed", source: "client", code: 1000 });
  await assertNothingLeft(socket, clock);
});

Deno.test("socket: an app state set during the handshake is sent once connected", async () => {
  const { wire, clock, owner, socket } = await fakeSocket({}, false);
  assert.equal(socket.setAppState("background", true), undefined, "nothing sent yet");
  assert.deepEqual(wire.sentOf("app_state"), []);
  wire.deliver({
    type: "connected",
    id: wire.sent[0].id,
    sessionId: "s1",
    uid: "superhero1",
    mode: "auto",
    appState: "foreground",
    backgroundService: false,
    backgroundDeadline: null,
    serverTime: 0,
    timing: FAKE_TIMING,
    stream: { epoch: "e1", seq: 0, recovered: false, reason: "no_position", replayed: 0 },
  });
  assert.equal(owner.connected.length, 1);
  assert.deepEqual(
    wire.sentOf("app_state").map((f) => [f.state, f.backgroundService]),
    [["background", true]],
  );
  assert.deepEqual(clock.pending(), [], "no heartbeat in background");
  socket.close({ reason: "destroyed", source: "client", code: 1000 });
  await assertNothingLeft(socket, clock);
});

Deno.test("socket: each pong answers the ping with its id, in whatever order they come", async () => {
  const { server, wire, clock, owner, socket } = await fakeSocket();
  server.autoPong = false;
  const first = socket.ping();
  const second = socket.ping();
  const [a, b] = wire.sentOf("ping").map((p) => p.id);
  assert.notEqual(a, b);
  wire.deliver({ type: "pong", id: 999, serverTime: 9, backgroundDeadline: null });
  wire.deliver({ type: "pong", id: b, serverTime: 2, backgroundDeadline: 20 });
  wire.deliver({ type: "pong", id: a, serverTime: 1, backgroundDeadline: 10 });
  assert.equal((await first).serverTime, 1);
  assert.equal((await second).serverTime, 2);
  assert.deepEqual(owner.deadlines, [null, 20, 10], "every pong carries the deadline");

  // An error reply rejects its own ping only; an error no request waits for goes to the owner.
  const refused = socket.ping();
  const third = socket.ping();
  const [c, d] = wire.sentOf("ping").slice(-2).map((p) => p.id);
  wire.deliver({ type: "error", id: c, errorCode: "ERR_TOO_MANY_REQUESTS", errorDescription: "x" });
  await rejectsWith(refused, "ERR_TOO_MANY_REQUESTS");
  wire.deliver({ type: "error", id: 777, errorCode: "ERR_BAD_REQUEST", errorDescription: "y" });
  assert.deepEqual(owner.errors.map((e) => [e.error.errorCode, e.id]), [["ERR_BAD_REQUEST", 777]]);
  wire.deliver({ type: "pong", id: d, serverTime: 4, backgroundDeadline: null });
  assert.equal((await third).serverTime, 4);

  // A state reply settles its app_state and reports its deadline.
  const acknowledged = socket.setAppState("background", true);
  const stateId = wire.sentOf("app_state")[0].id;
  wire.deliver({
    type: "state",
    id: stateId,
    appState: "background",
    backgroundService: true,
    backgroundDeadline: 1234,
  });
  await acknowledged;
  assert.equal(owner.deadlines.at(-1), 1234);
  assert.deepEqual(owner.ends, [], "no reply ended the socket");
  socket.close({ reason: "destroyed", source: "client", code: 1000 });
  await assertNothingLeft(socket, clock);
});

Deno.test("socket: a heartbeat without its pong ends the socket once, with pong_timeout", async () => {
  const { server, wire, clock, owner, socket } = await fakeSocket();
  server.autoPong = false;
  const ping = socket.ping();
  const acknowledged = socket.setAppState("foreground", true); // restarts the heartbeat
  clock.advance(FAKE_TIMING.pongTimeoutMs - 1);
  assert.deepEqual(owner.ends, []);
  clock.advance(1); // The app ping's pong timeout.
  const end = owner.onlyEnd();
  assert.deepEqual(end, {
    reason: "pong_timeout",
    source: "client",
    code: 1006,
    handshakeError: null,
  });
  assert.deepEqual(wire.closedByClient, { code: 1000, reason: "pong_timeout" });
  const error = await rejectsWith(ping, "NO_WEBSOCKET_CONNECTION");
  assert.deepEqual(error.details, { reason: "pong_timeout" });
  await acknowledged; // Settled by the end, not left hanging.

  // Whatever the old socket does now, nothing more is reported.
  wire.readyState = 1;
  wire.deliver({ type: "closing", reason: "idle_timeout", code: 4004, errorDescription: "late" });
  wire.serverClose(4004, "idle_timeout");
  clock.advance(60_000);
  owner.onlyEnd();
  await assertNothingLeft(socket, clock);

  // The heartbeat's own pong timeout, on a fresh socket.
  const again = await fakeSocket();
  again.server.autoPong = false;
  again.clock.advance(FAKE_TIMING.heartbeatIntervalMs + FAKE_TIMING.pongTimeoutMs - 1);
  assert.equal(again.wire.sentOf("ping").length, 1);
  assert.deepEqual(again.owner.ends, []);
  again.clock.advance(1);
  assert.equal(again.owner.onlyEnd().reason, "pong_timeout");
  await flush();
  again.owner.onlyEnd();
  await assertNothingLeft(again.socket, again.clock);
});

Deno.test("socket: a closing frame and its close code end the socket once, with that reason", async () => {
  const { server, wire, clock, owner, socket } = await fakeSocket();
  server.autoPong = false;
  const ping = socket.ping();
  wire.deliver({
    type: "closing",
    reason: "idle_timeout",
    code: 4004,
    errorDescription: "Nothing received.",
  });
  wire.serverClose(4004, "idle_timeout");
  await flush();
  assert.deepEqual(owner.onlyEnd(), {
    reason: "idle_timeout",
    source: "server",
    code: 4004,
    errorDescription: "Nothing received.",
    handshakeError: null,
  });
  await rejectsWith(ping, "NO_WEBSOCKET_CONNECTION");
  await assertNothingLeft(socket, clock);
});

Deno.test("socket: a close code alone names the reason; an unknown one is a network loss", async () => {
  for (
    const [code, expected] of [[closeCodeTable.background, "background"], [
      1011,
      "network_lost",
    ]] as const
  ) {
    const { wire, clock, owner, socket } = await fakeSocket();
    wire.serverClose(code, "Said the gateway.");
    wire.serverClose(code, "Twice.");
    const end = owner.onlyEnd();
    assert.equal(end.reason, expected);
    assert.equal(end.code, code);
    assert.equal(end.source, expected === "network_lost" ? "client" : "server");
    await assertNothingLeft(socket, clock);
  }
});

Deno.test("socket: a failed handshake ends once and carries the gateway's error", async () => {
  const { wire, clock, owner, socket } = await fakeSocket({}, false);
  wire.deliver({
    type: "error",
    errorCode: "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
    errorDescription: "Unknown credential.",
  });
  assert.deepEqual(owner.errors, [], "kept for the end, not reported on its own");
  wire.serverClose(closeCodeTable.unauthorized, "unauthorized");
  const end = owner.onlyEnd();
  assert.equal(end.reason, "unauthorized");
  assert.equal(end.handshakeError?.errorCode, "AUTH_ERR_AUTH_TOKEN_NOT_FOUND");
  assert.equal(owner.connected.length, 0);
  await assertNothingLeft(socket, clock);

  // No answer at all: the handshake timeout ends it.
  const silent = await fakeSocket({}, false);
  silent.clock.advance(HANDSHAKE_TIMEOUT_MS - 1);
  assert.deepEqual(silent.owner.ends, []);
  silent.clock.advance(1);
  assert.deepEqual(silent.owner.onlyEnd(), {
    reason: "handshake_timeout",
    source: "client",
    code: 1006,
    handshakeError: null,
  });
  await assertNothingLeft(silent.socket, silent.clock);
});

Deno.test("socket: disconnect() asks the gateway, and closes itself once after the timeout", async () => {
  const { wire, clock, owner, socket } = await fakeSocket();
  socket.disconnect(2_000);
  socket.disconnect(2_000); // A second call does not arm a second timer.
  assert.equal(wire.sentOf("disconnect").length, 2);
  assert.deepEqual(clock.pending(), [2_000], "heartbeat stopped; one close timer");
  clock.advance(2_000);
  assert.deepEqual(owner.onlyEnd(), {
    reason: "client_disconnect",
    source: "client",
    code: 1000,
    handshakeError: null,
  });
  await assertNothingLeft(socket, clock);
});

Deno.test("socket: the connect frame carries the handshake asked for when the socket opens", async () => {
  let position = { epoch: "e1", seq: 3 };
  const options: Partial<SocketOptions> = {
    handshake: () => ({ resume: position, presence: { subscriptionType: "friends" } }),
  };
  const opening = fakeSocket(options, false);
  position = { epoch: "e1", seq: 4 }; // moved between the socket's creation and its open
  const { server } = await opening;
  assert.deepEqual(server.last.sentOf("connect")[0], {
    type: "connect",
    id: 1,
    appState: "foreground",
    backgroundService: false,
    resume: { epoch: "e1", seq: 4 },
    presence: { subscriptionType: "friends" },
  });
});

Deno.test("socket: send and typing frames out; sent, typing and presence frames to the owner", async () => {
  const { server, wire, clock, owner, socket } = await fakeSocket();
  server.autoAnswerSends = false;
  const send = {
    clientMessageId: "c1",
    receiverType: "user",
    receiver: "superhero2",
    message: { kind: "text", text: "hi" },
  } as const;
  const id = socket.sendMessage(send);
  assert.deepEqual(wire.sentOf("send"), [{ type: "send", id, ...send }]);
  assert.equal(socket.typing("start_typing", { receiverType: "group", receiver: "g" }), true);
  assert.deepEqual(
    wire.sentOf("start_typing").map((f) => [f.receiverType, f.receiver]),
    [["group", "g"]],
  );
  const message: Message = {
    kind: "text",
    text: "hi",
    id: "m1",
    from: "superhero1",
    receiverType: "user",
    to: "superhero2",
    clientMessageId: "c1",
    sentAt: 0,
  };
  const frames: ServerFrame[] = [
    { type: "sent", id: id!, seq: 1, message, duplicate: false },
    { type: "typing_started", from: "superhero2", receiverType: "user", receiver: "x", at: 1 },
    { type: "typing_ended", from: "superhero2", receiverType: "user", receiver: "x", at: 2 },
    { type: "presence", users: [{ uid: "superhero2", online: true, at: 3 }] },
  ];
  for (const frame of frames) wire.deliver(frame);
  assert.deepEqual(owner.events, frames);
  wire.deliver({ type: "error", id: id!, errorCode: "ERR_NOT_A_MEMBER", errorDescription: "x" });
  assert.deepEqual(owner.errors.map((e) => [e.error.errorCode, e.id]), [["ERR_NOT_A_MEMBER", id]]);
  socket.close({ reason: "destroyed", source: "client", code: 1000 });
  assert.equal(socket.sendMessage(send), null, "nothing is sent once ended");
  assert.equal(socket.typing("end_typing", { receiverType: "group", receiver: "g" }), false);
  await assertNothingLeft(socket, clock);
});

Deno.test("socket: its owner's close is reported like any end; messages reach the owner", async () => {
  const { wire, clock, owner, socket } = await fakeSocket();
  const message: Message = {
    kind: "text",
    text: "hi",
    id: "m1",
    from: "superhero2",
    receiverType: "user",
    to: "superhero1",
    sentAt: 0,
  };
  wire.deliver({ type: "message", seq: 7, message });
  assert.deepEqual(owner.messages, [{ message, seq: 7 }]);
  wire.autoCloseOnClientClose = false; // The WebSocket never says it closed.
  socket.close({ reason: "logged_out", source: "client", code: 4006 });
  socket.close({ reason: "destroyed", source: "client", code: 1000 });
  assert.equal(owner.onlyEnd().reason, "logged_out");
  assert.deepEqual(wire.closedByClient, { code: 1000, reason: "logged_out" });
  let closed = false;
  void socket.closed.then(() => closed = true);
  await flush();
  assert.equal(closed, false, "still waiting for the WebSocket to close");
  clock.advance(5_000);
  await socket.closed; // Forgotten after the wait anyway.
  await assertNothingLeft(socket, clock);
});

// ---- against the real gateway ---------------------------------------------------------

/**
 * Logs in over REST in `mode` (app pings are for manual mode) and opens a socket with the
 * real clock and WebSocket; with `credential`, opens it with that one instead.
 */
async function realSocket(baseUrl: string, mode: "auto" | "manual", credential?: string) {
  const rest = createRestClient({ baseUrl });
  if (credential === undefined) {
    const init = await rest.init({ params: { appId: DEV.appId }, body: devSettings(mode) });
    assert.equal(init.status, 200);
    const login = await rest.login({
      params: { appId: DEV.appId },
      body: { uid: "superhero1", authKey: DEV.authKey, mode },
    });
    assert.equal(login.status, 200);
    if (login.status !== 200) throw new Error("login failed");
    credential = login.body.session.credential;
  }
  const owner = new Owner();
  const socket = new GatewaySocket({
    ...socketAddress({ baseUrl, path: "/v1/ws", credential, credentialIn: "protocol" }),
    WebSocket: globalThis.WebSocket as WebSocketConstructor,
    clock: systemClock,
    timing: TEST_TIMING,
    handshakeTimeoutMs: 5_000,
    appState: "foreground",
    backgroundService: false,
  }, owner);
  return { owner, socket };
}

Deno.test("socket (real gateway): handshake, heartbeats, a ping; closing leaves nothing behind", async () => {
  await withGateway(async (gw) => {
    const { owner, socket } = await realSocket(gw.url, "manual");
    await waitUntil(() => owner.connected.length === 1 || owner.ends.length > 0);
    assert.equal(owner.connected[0]?.uid, "superhero1");
    // A few heartbeat rounds go by without ending it.
    await new Promise((resolve) => setTimeout(resolve, TEST_TIMING.heartbeatIntervalMs * 3));
    assert.deepEqual(owner.ends, []);
    const pong = await socket.ping();
    assert.equal(typeof pong.serverTime, "number");
    socket.close({ reason: "destroyed", source: "client", code: 1000 });
    await socket.closed;
    assert.equal(owner.onlyEnd().reason, "destroyed");
  });
});

Deno.test("socket (real gateway): background in auto mode: closing frame + 4001, one end", async () => {
  await withGateway(async (gw) => {
    const { owner, socket } = await realSocket(gw.url, "auto");
    await waitUntil(() => owner.connected.length === 1);
    await socket.setAppState("background", false);
    await waitUntil(() => owner.ends.length > 0);
    await socket.closed;
    const end = owner.onlyEnd();
    assert.equal(end.reason, "background");
    assert.equal(end.source, "server");
    assert.equal(end.code, closeCodeTable.background);
  });
});

Deno.test("socket (real gateway): a refused credential ends the handshake with its error", async () => {
  await withGateway(async (gw) => {
    const { owner, socket } = await realSocket(gw.url, "auto", "not-a-credential");
    await waitUntil(() => owner.ends.length > 0);
    await socket.closed;
    const end = owner.onlyEnd();
    assert.equal(end.reason, "unauthorized");
    assert.ok(end.handshakeError instanceof GatewayError, "the error frame before the close");
    assert.equal(owner.connected.length, 0);
  });
});

Deno.test("socket (real gateway): a frozen link is a pong timeout: one end, nothing left", async () => {
  await withGateway(async (gw) => {
    const proxy = new TcpProxy(gw.url);
    try {
      const { owner, socket } = await realSocket(proxy.url, "auto");
      await waitUntil(() => owner.connected.length === 1);
      proxy.freeze();
      await waitUntil(() => owner.ends.length > 0);
      assert.equal(owner.onlyEnd().reason, "pong_timeout");
      proxy.cut(); // The close handshake can't cross a frozen link: the network drops it.
      await socket.closed;
      owner.onlyEnd();
    } finally {
      await proxy.close();
    }
  });
});
