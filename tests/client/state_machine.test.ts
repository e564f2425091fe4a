/**
 * The client's state machine against the in-process fake gateway and a fake clock:
 * transitions and listener calls in order, heartbeats, pong timeout, backoff, transport ids,
 * every close reason, app state, stored sessions, and the errors of wrong calls.
 */
import assert from "node:assert/strict";
import {
  backoffDelay,
  closeCodeTable,
  closeReasons,
  DEFAULT_BACKOFF,
  GatewayClient,
  type GatewayClientOptions,
  type VisibilitySource,
} from "../../client/mod.ts";
import { FAKE_TIMING, FakeGateway, flush } from "./fake_server.ts";
import { devSettings, FakeClock, InspectableStorage, Recorder, rejectsWith } from "./helpers.ts";

const BASE = "http://gateway.test";

function setup(options: Partial<GatewayClientOptions> = {}) {
  const server = new FakeGateway();
  const clock = new FakeClock();
  const client = new GatewayClient({
    baseUrl: BASE,
    fetch: server.fetch,
    WebSocket: server.WebSocket,
    clock,
    random: () => 0.5,
    trackVisibility: false,
    ...options,
  });
  const rec = new Recorder();
  client.addConnectionListener("rec", rec);
  return { server, clock, client, rec };
}

async function loggedIn(mode: "auto" | "manual", options: Partial<GatewayClientOptions> = {}) {
  const ctx = setup(options);
  await ctx.client.init("demo", devSettings(mode));
  await ctx.client.login("superhero1", "dev_auth_key__not_secret");
  if (mode === "manual") await ctx.client.connect();
  await flush();
  return ctx;
}

Deno.test("fake: auto mode connects on login; one inConnecting then one onConnected", async () => {
  const { server, client, rec } = await loggedIn("auto");
  assert.deepEqual(rec.log, ["connecting", "connected"]);
  assert.equal(client.getConnectionStatus(), "connected");
  const socket = server.last;
  assert.equal(socket.url, "ws://gateway.test/v1/ws");
  assert.deepEqual(socket.protocols, ["liveness.v1", "cred.cred1"]);
  assert.deepEqual(socket.sent[0], {
    type: "connect",
    id: socket.sent[0].id,
    appState: "foreground",
    backgroundService: false,
    presence: { subscriptionType: "allUsers" }, // devSettings() subscribes to all users
  });
  await client.destroy();
  assert.deepEqual(rec.log, ["connecting", "connected", "disconnected:destroyed"]);
});

Deno.test("fake: credential as a query parameter when asked", async () => {
  const { server, client } = await loggedIn("auto", { credentialIn: "query" });
  assert.equal(server.last.url, "ws://gateway.test/v1/ws?credential=cred1");
  assert.deepEqual(server.last.protocols, ["liveness.v1"]);
  await client.destroy();
});

Deno.test("fake: heartbeats every interval; a missing pong is a dead link, then backoff", async () => {
  const { server, clock, client, rec } = await loggedIn("auto");
  const first = server.last;
  clock.advance(FAKE_TIMING.heartbeatIntervalMs);
  await flush();
  assert.equal(first.sentOf("ping").length, 1);
  assert.equal(first.sentOf("ping")[0].source, "heartbeat");
  clock.advance(FAKE_TIMING.heartbeatIntervalMs);
  await flush();
  assert.equal(first.sentOf("ping").length, 2);

  server.autoPong = false;
  clock.advance(FAKE_TIMING.heartbeatIntervalMs);
  clock.advance(FAKE_TIMING.pongTimeoutMs - 1);
  assert.equal(client.getConnectionStatus(), "connected");
  clock.advance(1);
  assert.equal(client.getConnectionStatus(), "disconnected");
  const info = rec.lastDisconnect();
  assert.equal(info.reason, "pong_timeout");
  assert.equal(info.source, "client");
  assert.equal(info.reconnect, "retry");
  assert.equal(info.reconnectInMs, backoffDelay(0, () => 0.5, DEFAULT_BACKOFF));
  assert.ok(first.closedByClient !== null, "the dead socket is closed");

  server.autoPong = true;
  clock.advance(info.reconnectInMs! - 1);
  assert.equal(server.sockets.length, 1);
  clock.advance(1);
  assert.equal(server.sockets.length, 2);
  await flush();
  assert.deepEqual(rec.log, [
    "connecting",
    "connected",
    "disconnected:pong_timeout",
    "connecting",
    "connected",
  ]);
  await client.destroy();
});

Deno.test("fake: failed attempts back off within the documented bounds, then reset", async () => {
  const randoms = [0.1, 0.9, 0.3, 0.7, 0.99, 0];
  let i = 0;
  const random = () => randoms[i++ % randoms.length];
  const { server, clock, client, rec } = await loggedIn("auto", { random });
  server.autoHandshake = false;
  server.last.drop();
  const delays: number[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const info = rec.lastDisconnect();
    assert.equal(info.reason, "network_lost");
    delays.push(info.reconnectInMs!);
    clock.advance(info.reconnectInMs!);
    await flush();
    server.last.drop(); // The attempt fails before the handshake.
  }
  assert.deepEqual(delays, randoms.slice(0, 5).map((r, n) => backoffDelay(n, () => r)));
  assert.ok(rec.errors.every((e) => e.errorCode === "NO_WEBSOCKET_CONNECTION"));
  assert.equal(rec.errors.length, 5, "each failed attempt reports onConnectionError");
  // A success resets the attempt counter.
  server.autoHandshake = true;
  clock.advance(rec.lastDisconnect().reconnectInMs!);
  await flush();
  assert.equal(client.getConnectionStatus(), "connected");
  server.last.drop();
  assert.equal(rec.lastDisconnect().reconnectInMs, backoffDelay(0, () => randoms[(i - 1) % 6]));
  await client.destroy();
});

Deno.test("fake: a closing frame and its close give one onDisconnected", async () => {
  const { server, client, rec } = await loggedIn("auto");
  const socket = server.last;
  socket.deliver({
    type: "closing",
    reason: "idle_timeout",
    code: 4004,
    errorDescription: "Nothing received.",
  });
  socket.serverClose(4004, "idle_timeout");
  await flush();
  assert.equal(rec.count("disconnected:idle_timeout"), 1);
  assert.equal(rec.lastDisconnect().errorDescription, "Nothing received.");
  assert.equal(rec.lastDisconnect().code, 4004);
  await client.destroy();
});

Deno.test("fake: a late close of an old socket can't act on the new one", async () => {
  const { server, clock, client, rec } = await loggedIn("auto");
  const old = server.last;
  old.autoCloseOnClientClose = false;
  server.autoPong = false;
  clock.advance(FAKE_TIMING.heartbeatIntervalMs + FAKE_TIMING.pongTimeoutMs);
  server.autoPong = true;
  clock.advance(rec.lastDisconnect().reconnectInMs!);
  await flush();
  assert.equal(client.getConnectionStatus(), "connected");
  assert.notEqual(server.last, old);
  // The old socket now reports a close and even a frame: nothing changes.
  old.readyState = 1;
  old.deliver({ type: "closing", reason: "replaced", code: 4005, errorDescription: "x" });
  old.serverClose(4005, "replaced");
  await flush();
  assert.equal(client.getConnectionStatus(), "connected");
  assert.equal(rec.count("disconnected:replaced"), 0);
  assert.deepEqual(rec.log.slice(-2), ["connecting", "connected"]);
  await client.destroy();
});

Deno.test("fake: every close code of the contract reaches onDisconnected typed", async () => {
  for (const reason of closeReasons) {
    const { server, client, rec } = await loggedIn("auto");
    server.last.serverClose(closeCodeTable[reason], reason);
    await flush();
    const info = rec.lastDisconnect();
    assert.equal(info.reason, reason);
    assert.equal(info.code, closeCodeTable[reason]);
    assert.equal(info.source, "server");
    assert.equal(client.getConnectionStatus(), "disconnected");
    assert.equal(client.getConnectionInfo().lastDisconnect, info);
    const terminal = ["client_disconnect", "logged_out", "unauthorized", "replaced"];
    assert.equal(info.reconnect, terminal.includes(reason) ? "never" : "retry", reason);
    await client.destroy();
  }
});

Deno.test("fake: an unknown close code is a network loss", async () => {
  const { server, client, rec } = await loggedIn("auto");
  server.last.serverClose(1011, "boom");
  await flush();
  assert.equal(rec.lastDisconnect().reason, "network_lost");
  assert.equal(rec.lastDisconnect().code, 1011);
  await client.destroy();
});

Deno.test("fake: auto mode in background: no heartbeat, no reconnect until foreground", async () => {
  const { server, clock, client, rec } = await loggedIn("auto");
  const socket = server.last;
  await client.setAppState("background");
  assert.deepEqual(socket.sentOf("app_state").map((f) => [f.state, f.backgroundService]), [[
    "background",
    false,
  ]]);
  assert.deepEqual(clock.pending(), [], "no heartbeat in background");
  socket.serverClose(4001, "background");
  await flush();
  assert.equal(rec.lastDisconnect().reason, "background");
  assert.equal(rec.lastDisconnect().reconnect, "when_foreground");
  clock.advance(60_000);
  assert.equal(server.sockets.length, 1, "no reconnection in background");
  await client.setAppState("foreground");
  await flush();
  assert.equal(server.sockets.length, 2);
  assert.equal(client.getConnectionStatus(), "connected");
  assert.deepEqual(rec.log, [
    "connecting",
    "connected",
    "disconnected:background",
    "connecting",
    "connected",
  ]);
  await client.destroy();
});

Deno.test("fake: configureServices turns the background service on", async () => {
  const { server, client } = await loggedIn("auto");
  assert.equal(client.backgroundTaskEnabled(), false);
  await client.configureServices("willResignActive");
  assert.equal(client.backgroundTaskEnabled(), true);
  assert.equal(client.getConnectionInfo().appState, "foreground");
  await client.configureServices("didBackground");
  assert.equal(client.getConnectionInfo().appState, "background");
  const frames = server.last.sentOf("app_state").map((f) => [f.state, f.backgroundService]);
  assert.deepEqual(frames, [["foreground", true], ["background", true]]);
  await client.destroy();
});

Deno.test("fake: manual mode reconnects after network loss in foreground only", async () => {
  const { server, clock, client, rec } = await loggedIn("manual");
  server.last.drop();
  assert.equal(rec.lastDisconnect().reconnect, "retry");
  clock.advance(rec.lastDisconnect().reconnectInMs!);
  await flush();
  assert.equal(client.getConnectionStatus(), "connected");

  await client.setAppState("background");
  server.last.drop();
  assert.equal(rec.lastDisconnect().reconnect, "never");
  await client.setAppState("foreground");
  clock.advance(60_000);
  await flush();
  assert.equal(
    client.getConnectionStatus(),
    "disconnected",
    "background loss: app calls connect()",
  );

  await client.connect();
  const done = client.disconnect();
  server.last.serverClose(1000, "client_disconnect");
  await done;
  assert.equal(rec.lastDisconnect().reason, "client_disconnect");
  assert.equal(rec.lastDisconnect().reconnect, "never");
  clock.advance(60_000);
  assert.equal(client.getConnectionStatus(), "disconnected");
  await client.destroy();
});

Deno.test("fake: a loss in foreground, then background before the retry: retried in foreground", async () => {
  const { server, clock, client, rec } = await loggedIn("manual");
  server.last.drop();
  await client.setAppState("background");
  clock.advance(60_000);
  assert.equal(server.sockets.length, 1);
  await client.setAppState("foreground");
  await flush();
  assert.equal(server.sockets.length, 2);
  assert.equal(client.getConnectionStatus(), "connected");
  assert.equal(rec.count("connected"), 2);
  await client.destroy();
});

Deno.test("fake: disconnect() cancels a pending reconnection", async () => {
  const { server, clock, client } = await loggedIn("manual");
  server.last.drop();
  await client.disconnect();
  clock.advance(60_000);
  assert.equal(server.sockets.length, 1);
  await rejectsWith(client.disconnect(), "NO_WEBSOCKET_CONNECTION");
  await client.destroy();
});

Deno.test("fake: disconnect() closes from this side when the gateway does not", async () => {
  const { server, clock, client, rec } = await loggedIn("manual");
  const done = client.disconnect();
  assert.equal(server.last.sentOf("disconnect").length, 1);
  clock.advance(2_000);
  await done;
  assert.equal(rec.lastDisconnect().reason, "client_disconnect");
  assert.equal(rec.lastDisconnect().source, "client");
  await client.destroy();
});

Deno.test("fake: manual ping resolves with the pong; error frames reject it", async () => {
  const { server, client } = await loggedIn("manual");
  const result = await client.ping();
  assert.deepEqual(result, { serverTime: 0, backgroundDeadline: null });
  assert.equal(server.last.sentOf("ping").at(-1)!.source, "app");
  server.autoPong = false;
  const pending = client.ping();
  const id = server.last.sentOf("ping").at(-1)!.id;
  server.last.deliver({
    type: "error",
    id,
    errorCode: "ERR_TOO_MANY_REQUESTS",
    errorDescription: "slow down",
  });
  await rejectsWith(pending, "ERR_TOO_MANY_REQUESTS");
  assert.equal(client.getConnectionStatus(), "connected");
  await client.destroy();
});

Deno.test("fake: keepAliveInBackground pings inside the window while in background", async () => {
  const { server, clock, client } = await loggedIn("manual");
  const keepAlive = await client.keepAliveInBackground();
  const advance = async (ms: number) => {
    for (let t = 0; t < ms; t += 10) {
      clock.advance(10); // Small steps, so that each pong (a microtask) arrives in time.
      await flush();
    }
  };
  await advance(FAKE_TIMING.livenessWindowMs); // foreground: heartbeats only
  assert.equal(server.last.sentOf("ping").filter((p) => p.source === "app").length, 0);
  assert.ok(server.last.sentOf("ping").length >= 2);
  await client.setAppState("background");
  await advance(FAKE_TIMING.livenessWindowMs * 2);
  assert.equal(client.getConnectionStatus(), "connected");
  assert.equal(server.sockets.length, 1);
  const appPings = server.last.sentOf("ping").filter((p) => p.source === "app");
  assert.ok(appPings.length >= 3, `${appPings.length} app pings in two windows`);
  keepAlive.stop();
  await client.destroy();
  assert.deepEqual(clock.pending(), []);
});

Deno.test("fake: a stored user reconnects at init in auto mode, not in manual", async () => {
  const storage = new InspectableStorage();
  const first = await loggedIn("auto", { storage });
  const login = `liveness.v1:${BASE}:demo`;
  const position = `${login}:stream:superhero1`;
  assert.deepEqual([...storage.items.keys()], [login, position]);
  await first.client.destroy();
  assert.deepEqual(
    [...storage.items.keys()],
    [login, position],
    "destroy() keeps the stored session and stream position",
  );

  const again = setup({ storage });
  await again.client.init("demo", devSettings("auto"));
  await flush();
  assert.equal(again.client.getConnectionStatus(), "connected");
  assert.equal((await again.client.getLoggedInUser())?.uid, "superhero1");
  assert.deepEqual(again.server.last.protocols, ["liveness.v1", "cred.cred1"]);
  await again.client.destroy();

  // The stored session is an auto-mode one: a manual init drops it (log in again).
  const manual = setup({ storage });
  await manual.client.init("demo", devSettings("manual"));
  assert.equal(await manual.client.getLoggedInUser(), null);
  // The user's stream position stays: the same user logging in again resumes from it.
  assert.deepEqual([...storage.items.keys()], [position]);
  await manual.client.destroy();
});

Deno.test("fake: logout closes, forgets the user and the stored session", async () => {
  const storage = new InspectableStorage();
  const { client, rec, clock } = await loggedIn("auto", { storage });
  await client.logout();
  assert.equal(rec.lastDisconnect().reason, "logged_out");
  assert.equal(rec.lastDisconnect().reconnect, "never");
  assert.equal(await client.getLoggedInUser(), null);
  assert.equal(storage.items.size, 0);
  clock.advance(60_000);
  assert.equal(client.getConnectionStatus(), "disconnected");
  await client.destroy();
});

Deno.test("fake: wrong calls reject with the contract's codes", async () => {
  const { client } = setup();
  for (
    const call of [
      () => client.login("superhero1", "k"),
      () => client.logout(),
      () => client.connect(),
      () => client.disconnect(),
      () => client.ping(),
      () => client.getLoggedInUser(),
      () => client.keepAliveInBackground(),
    ]
  ) await rejectsWith(call(), "NOT_INITIALIZED");

  await client.init("demo", devSettings("auto"));
  await rejectsWith(client.connect(), "ERROR_USER_NOT_LOGGED_IN");
  await rejectsWith(client.logout(), "ERROR_USER_NOT_LOGGED_IN");
  const login = client.login("superhero1", "k");
  await rejectsWith(client.login("superhero2", "k"), "LOGIN_IN_PROGRESS");
  await login;
  await rejectsWith(client.connect(), "ERR_NOT_MANUAL_MODE");
  await rejectsWith(client.disconnect(), "ERR_NOT_MANUAL_MODE");
  await rejectsWith(client.ping(), "ERR_NOT_MANUAL_MODE");
  await rejectsWith(client.keepAliveInBackground(), "ERR_NOT_MANUAL_MODE");
  await client.destroy();

  const manual = setup();
  await manual.client.init("demo", devSettings("manual"));
  await manual.client.login("superhero1", "k");
  await rejectsWith(manual.client.ping(), "NO_WEBSOCKET_CONNECTION");
  await rejectsWith(manual.client.disconnect(), "NO_WEBSOCKET_CONNECTION");
  await manual.client.connect();
  await rejectsWith(manual.client.connect(), "ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE");
  await manual.client.destroy();
});

Deno.test("fake: a throwing listener does not stop the others", async () => {
  const { client, rec } = setup();
  const original = console.error;
  const logged: unknown[] = [];
  console.error = (...args: unknown[]) => void logged.push(args);
  try {
    client.addConnectionListener("bad", {
      onConnected: () => {
        throw new Error("listener bug");
      },
    });
    const rec2 = new Recorder();
    client.addConnectionListener("z", rec2);
    await client.init("demo", devSettings("auto"));
    await client.login("superhero1", "k");
    await flush();
    assert.equal(rec2.count("connected"), 1);
    assert.equal(rec.count("connected"), 1);
    assert.equal(logged.length, 1);
    client.removeConnectionListener("z");
    await client.destroy();
    assert.equal(rec2.count("disconnected:destroyed"), 0, "removed listeners hear nothing");
  } finally {
    console.error = original;
  }
});

Deno.test("fake: document visibility drives the app state, and can be turned off", async () => {
  const listeners = new Set<() => void>();
  const doc: VisibilitySource & { visibilityState: string } = {
    visibilityState: "visible",
    addEventListener: (_type, listener) => void listeners.add(listener),
    removeEventListener: (_type, listener) => void listeners.delete(listener),
  };
  const { server, client } = await loggedIn("auto", { document: doc, trackVisibility: true });
  doc.visibilityState = "hidden";
  for (const l of listeners) l();
  await flush();
  assert.equal(client.getConnectionInfo().appState, "background");
  assert.equal(server.last.sentOf("app_state").at(-1)!.state, "background");
  doc.visibilityState = "visible";
  for (const l of listeners) l();
  await flush();
  assert.equal(client.getConnectionInfo().appState, "foreground");
  await client.destroy();
  assert.equal(listeners.size, 0, "destroy() removes the visibility listener");

  const off = setup({ document: doc, trackVisibility: false });
  assert.equal(listeners.size, 0);
  await off.client.destroy();
});
