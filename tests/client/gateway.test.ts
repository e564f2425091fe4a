/**
 * The client against the real gateway, in this process, on a random loopback port, with a
 * 600 ms liveness window: every row of SPEC §4 from the client's side, network loss through
 * a TCP proxy, close reasons, stored sessions, and the errors of wrong calls.
 */
import assert from "node:assert/strict";
import {
  createRestClient,
  fileStorage,
  GatewayClient,
  type SessionView,
} from "../../client/mod.ts";
import {
  DEV,
  devSettings,
  InspectableStorage,
  newClient,
  rejectsWith,
  sleep,
  TcpProxy,
  TEST_TIMING,
  waitUntil,
  withGateway,
} from "./helpers.ts";

const WINDOW = TEST_TIMING.livenessWindowMs;
/** Scheduling slack on a loaded 2-core machine; the gateway itself promises +250 ms. */
const LATE = 1_000;

async function loggedIn(baseUrl: string, mode: "auto" | "manual", uid = "superhero1") {
  const { client, rec } = newClient(baseUrl);
  await client.init(DEV.appId, devSettings(mode));
  await client.login(uid, DEV.authKey);
  if (mode === "manual") await client.connect();
  else await rec.waitFor("connected");
  return { client, rec };
}

Deno.test("auto: login connects; background closes at once; foreground reconnects", async () => {
  await withGateway(async (gw) => {
    const { client, rec } = await loggedIn(gw.url, "auto");
    assert.equal(client.getConnectionStatus(), "connected");
    assert.deepEqual(rec.log, ["connecting", "connected"]);

    await client.setAppState("background");
    await rec.waitFor("disconnected:background");
    const info = rec.lastDisconnect();
    assert.equal(info.code, 4001);
    assert.equal(info.source, "server");
    assert.equal(info.reconnect, "when_foreground");
    assert.equal(client.getConnectionStatus(), "disconnected");
    await sleep(300);
    assert.equal(rec.count("connecting"), 1, "no reconnection in background");

    await client.setAppState("foreground");
    await rec.waitFor("connected", 2);
    assert.deepEqual(rec.log, [
      "connecting",
      "connected",
      "disconnected:background",
      "connecting",
      "connected",
    ]);
    const view = await client.getSessionView();
    assert.equal(view.status, "connected");
    assert.equal(view.lastDisconnectReason, "background");
    await client.logout();
    assert.equal(rec.lastDisconnect().reason, "logged_out");
    await client.destroy();
  });
});

Deno.test("auto: background service keeps it one window, then background_timeout", async () => {
  await withGateway(async (gw) => {
    const { client, rec } = await loggedIn(gw.url, "auto");
    await client.configureServices("willResignActive");
    assert.equal(client.backgroundTaskEnabled(), true);
    const start = Date.now();
    await client.setAppState("background");
    await rec.waitFor("disconnected:background_timeout", 1, WINDOW + LATE + 1_000);
    const elapsed = Date.now() - start;
    assert.ok(elapsed >= WINDOW - 5, `closed after ${elapsed} ms, before the window`);
    assert.ok(elapsed <= WINDOW + LATE, `closed after ${elapsed} ms`);
    assert.equal(rec.lastDisconnect().code, 4002);
    assert.equal(rec.lastDisconnect().reconnect, "when_foreground");
    await client.setAppState("foreground");
    await rec.waitFor("connected", 2);
    await client.destroy();
  });
});

Deno.test("any mode: back to foreground before the deadline cancels it", async () => {
  await withGateway(async (gw) => {
    for (const mode of ["auto", "manual"] as const) {
      const { client, rec } = await loggedIn(gw.url, mode);
      await client.setAppState("background", { backgroundService: true });
      await sleep(WINDOW / 2);
      await client.setAppState("foreground");
      await sleep(WINDOW + 300);
      assert.equal(client.getConnectionStatus(), "connected", mode);
      assert.equal(rec.disconnects.length, 0, mode);
      const view = await client.getSessionView();
      assert.equal(view.backgroundDeadline, null);
      await client.destroy();
    }
  });
});

Deno.test("manual: connected only between connect() and disconnect()", async () => {
  await withGateway(async (gw) => {
    const { client, rec } = newClient(gw.url);
    await client.init(DEV.appId, devSettings("manual"));
    await client.login("superhero2", DEV.authKey);
    await sleep(200);
    assert.equal(client.getConnectionStatus(), "disconnected", "login does not connect");
    assert.deepEqual(rec.log, []);
    await client.connect();
    assert.equal(client.getConnectionStatus(), "connected");
    await rejectsWith(client.connect(), "ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE");
    await client.disconnect();
    assert.equal(client.getConnectionStatus(), "disconnected");
    const info = rec.lastDisconnect();
    assert.equal(info.reason, "client_disconnect");
    assert.equal(info.code, 1000);
    assert.equal(info.reconnect, "never");
    await sleep(WINDOW);
    assert.deepEqual(rec.log, ["connecting", "connected", "disconnected:client_disconnect"]);
    await rejectsWith(client.ping(), "NO_WEBSOCKET_CONNECTION");
    await rejectsWith(client.disconnect(), "NO_WEBSOCKET_CONNECTION");
    // The server agrees that nothing is maintained.
    const view: SessionView = await client.getSessionView();
    assert.equal(view.status, "disconnected");
    assert.equal(view.lastDisconnectReason, "client_disconnect");
    await rejectsWith(client.ping({ via: "http" }), "NO_WEBSOCKET_CONNECTION");
    await client.destroy();
  });
});

Deno.test("manual: background without pings is closed after one window (liveness_timeout)", async () => {
  await withGateway(async (gw) => {
    const { client, rec } = await loggedIn(gw.url, "manual");
    const start = Date.now();
    await client.setAppState("background");
    await rec.waitFor("disconnected:liveness_timeout", 1, WINDOW + LATE + 1_000);
    const elapsed = Date.now() - start;
    assert.ok(elapsed >= WINDOW - 5 && elapsed <= WINDOW + LATE, `closed after ${elapsed} ms`);
    assert.equal(rec.lastDisconnect().code, 4003);
    assert.equal(rec.lastDisconnect().reconnect, "never");
    await client.setAppState("foreground");
    await sleep(300);
    assert.equal(client.getConnectionStatus(), "disconnected", "manual needs connect()");
    await client.connect();
    await client.destroy();
  });
});

Deno.test("manual: pings in background move the deadline; the HTTP ping too", async () => {
  await withGateway(async (gw) => {
    const { client, rec } = await loggedIn(gw.url, "manual");
    await client.setAppState("background");
    const start = Date.now();
    while (Date.now() - start < WINDOW * 2.5) {
      await sleep(WINDOW / 3);
      const result = await client.ping();
      assert.ok(result.backgroundDeadline !== null);
      assert.equal(result.backgroundDeadline, result.serverTime + WINDOW);
    }
    const viaHttp = await client.ping({ via: "http" });
    assert.ok(viaHttp.backgroundDeadline !== null);
    assert.equal(client.getConnectionStatus(), "connected");
    assert.equal(rec.disconnects.length, 0);
    await rec.waitFor("disconnected:liveness_timeout", 1, WINDOW + LATE + 1_000);
    await client.destroy();
  });
});

Deno.test("manual: keepAliveInBackground keeps it up; stopping it lets the window close it", async () => {
  await withGateway(async (gw) => {
    const { client, rec } = await loggedIn(gw.url, "manual");
    const keepAlive = await client.keepAliveInBackground();
    await client.setAppState("background");
    await sleep(WINDOW * 3);
    assert.equal(client.getConnectionStatus(), "connected");
    keepAlive.stop();
    await rec.waitFor("disconnected:liveness_timeout", 1, WINDOW + LATE + 1_000);
    await client.destroy();
  });
});

Deno.test("network loss: both modes reconnect in foreground", async () => {
  await withGateway(async (gw) => {
    const proxy = new TcpProxy(gw.url);
    try {
      for (const mode of ["auto", "manual"] as const) {
        const { client, rec } = await loggedIn(proxy.url, mode);
        proxy.cut();
        await rec.waitFor("disconnected:network_lost");
        assert.equal(rec.lastDisconnect().reconnect, "retry");
        await rec.waitFor("connected", 2);
        assert.deepEqual(rec.log, [
          "connecting",
          "connected",
          "disconnected:network_lost",
          "connecting",
          "connected",
        ], mode);
        await client.destroy();
      }
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("network loss: retries while the gateway is unreachable, then gets back", async () => {
  await withGateway(async (gw) => {
    const proxy = new TcpProxy(gw.url);
    const { client, rec } = newClient(proxy.url, { backoff: { minDelayMs: 50, maxDelayMs: 200 } });
    try {
      await client.init(DEV.appId, devSettings("auto"));
      await client.login("superhero1", DEV.authKey);
      await rec.waitFor("connected");
      proxy.block();
      proxy.cut();
      await rec.waitFor("error:NO_WEBSOCKET_CONNECTION", 2);
      assert.ok(rec.disconnects.every((d) => d.reconnectInMs! >= 50 && d.reconnectInMs! <= 200));
      proxy.unblock();
      await rec.waitFor("connected", 2);
      assert.equal(client.getConnectionStatus(), "connected");
    } finally {
      await client.destroy();
      await proxy.close();
    }
  });
});

Deno.test("network loss: a dead link (no pong) is dropped and replaced", async () => {
  await withGateway(async (gw) => {
    const proxy = new TcpProxy(gw.url);
    const { client, rec } = await loggedIn(proxy.url, "auto");
    try {
      proxy.freeze();
      await rec.waitFor("disconnected:pong_timeout", 1, TEST_TIMING.heartbeatIntervalMs * 3);
      assert.equal(rec.lastDisconnect().source, "client");
      await rec.waitFor("connected", 2);
    } finally {
      proxy.cut(); // The frozen socket can't finish its close handshake otherwise.
      await client.destroy();
      await proxy.close();
    }
  });
});

Deno.test("network loss: not reconnected in background (both modes), nor after disconnect()", async () => {
  await withGateway(async (gw) => {
    const proxy = new TcpProxy(gw.url);
    try {
      // Auto mode with the background service: connected in background, then lost.
      const auto = await loggedIn(proxy.url, "auto");
      await auto.client.setAppState("background", { backgroundService: true });
      await sleep(50);
      proxy.cut();
      await auto.rec.waitFor("disconnected:network_lost");
      assert.equal(auto.rec.lastDisconnect().reconnect, "when_foreground");
      // Manual mode in background, then lost.
      const manual = await loggedIn(proxy.url, "manual", "superhero3");
      await manual.client.setAppState("background");
      await sleep(50);
      proxy.cut();
      await manual.rec.waitFor("disconnected:network_lost");
      assert.equal(manual.rec.lastDisconnect().reconnect, "never");
      const accepted = proxy.accepted;
      await sleep(WINDOW);
      assert.equal(proxy.accepted, accepted, "no attempt in background");
      // Back to foreground: auto reconnects by itself; manual waits for connect().
      await auto.client.setAppState("foreground");
      await manual.client.setAppState("foreground");
      await auto.rec.waitFor("connected", 2);
      await sleep(300);
      assert.equal(manual.client.getConnectionStatus(), "disconnected");
      // After disconnect(): nothing comes back.
      await manual.client.connect();
      await manual.client.disconnect();
      const before = proxy.accepted;
      await sleep(WINDOW);
      assert.equal(proxy.accepted, before);
      assert.equal(manual.client.getConnectionStatus(), "disconnected");
      await auto.client.destroy();
      await manual.client.destroy();
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("reasons: replaced, unauthorized, server_shutdown reach the listeners typed", async () => {
  // replaced: a second client with the same stored session takes over.
  await withGateway(async (gw) => {
    const storage = new InspectableStorage();
    const first = newClient(gw.url, { storage });
    await first.client.init(DEV.appId, devSettings("auto"));
    await first.client.login("superhero1", DEV.authKey);
    await first.rec.waitFor("connected");
    const second = newClient(gw.url, { storage });
    await second.client.init(DEV.appId, devSettings("auto"));
    await second.rec.waitFor("connected");
    await first.rec.waitFor("disconnected:replaced");
    assert.equal(first.rec.lastDisconnect().code, 4005);
    assert.equal(first.rec.lastDisconnect().reconnect, "never");
    await sleep(200);
    assert.equal(second.client.getConnectionStatus(), "connected");
    await first.client.destroy();
    await second.client.destroy();
  });

  // unauthorized: a stored session the gateway does not know.
  await withGateway(async (gw) => {
    const storage = new InspectableStorage();
    const { client, rec } = newClient(gw.url, { storage });
    await client.init(DEV.appId, devSettings("auto"));
    await client.login("superhero1", DEV.authKey);
    await rec.waitFor("connected");
    await client.destroy();
    const [key, value] = [...storage.items][0];
    const stored = JSON.parse(value);
    stored.session.credential = "not-a-real-credential";
    storage.items.set(key, JSON.stringify(stored));
    const again = newClient(gw.url, { storage });
    await again.client.init(DEV.appId, devSettings("auto"));
    await again.rec.waitFor("disconnected:unauthorized");
    assert.deepEqual(again.rec.log, [
      "connecting",
      "disconnected:unauthorized",
      "error:AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
    ]);
    assert.equal(again.rec.lastDisconnect().code, 4007);
    await waitUntil(() => storage.items.size === 0);
    assert.equal(await again.client.getLoggedInUser(), null);
    await again.client.destroy();
  });

  // server_shutdown: 1012, and auto mode will retry.
  const { startTestGateway } = await import("./helpers.ts");
  const gw = await startTestGateway();
  const { client, rec } = await loggedIn(gw.url, "auto");
  await gw.stop();
  await rec.waitFor("disconnected:server_shutdown");
  assert.equal(rec.lastDisconnect().code, 1012);
  assert.equal(rec.lastDisconnect().reconnect, "retry");
  await client.destroy();
});

Deno.test("messages: listeners get text and custom messages with their seq; removed ones don't", async () => {
  await withGateway(async (gw) => {
    const { client } = await loggedIn(gw.url, "auto");
    const got: string[] = [];
    client.addMessageListener("a", {
      onTextMessageReceived: (m, seq) => got.push(`a:${seq}:text:${m.text}:${m.from}`),
      onCustomMessageReceived: (m, seq) => got.push(`a:${seq}:${m.customType}:${m.data.n}`),
    });
    client.addMessageListener("b", {
      onTextMessageReceived: () => {
        throw new Error("a throwing listener must not stop the others");
      },
    });
    const rest = createRestClient({ baseUrl: gw.url });
    const send = (
      message: { kind: "text"; text: string } | {
        kind: "custom";
        customType: string;
        data: Record<string, unknown>;
      },
    ) =>
      rest.server.sendMessage({
        params: { appId: DEV.appId },
        headers: { apikey: DEV.apiKey },
        body: { to: ["superhero1"], from: "superhero2", message },
      });
    assert.equal((await send({ kind: "text", text: "hi" })).status, 200);
    assert.equal((await send({ kind: "custom", customType: "poll", data: { n: 3 } })).status, 200);
    await waitUntil(() => got.length === 2);
    assert.deepEqual(got, ["a:1:text:hi:superhero2", "a:2:poll:3"]);

    client.removeMessageListener("a");
    assert.equal((await send({ kind: "text", text: "unheard" })).status, 200);
    await sleep(100);
    assert.equal(got.length, 2);
    await client.destroy();
  });
});

Deno.test("app restart: a stored user reconnects at init (file storage)", async () => {
  await withGateway(async (gw) => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/session.json`;
    try {
      const first = newClient(gw.url, { storage: fileStorage(path) });
      await first.client.init(DEV.appId, devSettings("auto"));
      await first.client.login("superhero4", DEV.authKey);
      await first.rec.waitFor("connected");
      const sessionId = (await first.client.getSessionView()).sessionId;
      await first.client.destroy(); // The process ends without logging out.

      const second = newClient(gw.url, { storage: fileStorage(path) });
      await second.client.init(DEV.appId, devSettings("auto"));
      await second.rec.waitFor("connected");
      assert.equal((await second.client.getLoggedInUser())?.uid, "superhero4");
      assert.equal((await second.client.getSessionView()).sessionId, sessionId);
      await second.client.logout();
      await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
      await second.client.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("errors: the server's codes come back as GatewayError", async () => {
  await withGateway(async (gw) => {
    const client = new GatewayClient({ baseUrl: gw.url, trackVisibility: false });
    await rejectsWith(client.init("no-such-app", devSettings()), "ERR_INVALID_APP_ID");
    await rejectsWith(
      client.init(DEV.appId, { region: "eu" }),
      "ERR_INVALID_REGION",
    );
    const bad = await rejectsWith(
      client.init(DEV.appId, { region: "us", subscriptionType: "everyone" as "none" }),
      "ERR_BAD_REQUEST",
    );
    assert.ok(Array.isArray(bad.details?.issues));
    await client.init(DEV.appId, devSettings("auto"));
    await rejectsWith(client.login("nobody", DEV.authKey), "ERR_UID_NOT_FOUND");
    await rejectsWith(client.login("superhero1", "wrong-key-123"), "ERR_INVALID_AUTH_KEY");
    await rejectsWith(client.login("no-such-token"), "AUTH_ERR_AUTH_TOKEN_NOT_FOUND");

    // An auth token from the server API logs in.
    const server = createRestClient({ baseUrl: gw.url });
    const created = await server.server.createAuthToken({
      headers: { apikey: DEV.apiKey },
      params: { appId: DEV.appId, uid: "superhero5" },
      body: {},
    });
    assert.equal(created.status, 201);
    if (created.status !== 201) return;
    const user = await client.login(created.body.authToken);
    assert.equal(user.uid, "superhero5");
    await client.logout();
    await client.destroy();
  });
});

Deno.test("errors: wrong calls against the real gateway", async () => {
  await withGateway(async (gw) => {
    const auto = newClient(gw.url);
    await rejectsWith(auto.client.connect(), "NOT_INITIALIZED");
    await auto.client.init(DEV.appId, devSettings("auto"));
    await rejectsWith(auto.client.connect(), "ERROR_USER_NOT_LOGGED_IN");
    const login = auto.client.login("superhero1", DEV.authKey);
    await rejectsWith(auto.client.login("superhero1", DEV.authKey), "LOGIN_IN_PROGRESS");
    await login;
    await rejectsWith(auto.client.connect(), "ERR_NOT_MANUAL_MODE");
    await rejectsWith(auto.client.disconnect(), "ERR_NOT_MANUAL_MODE");
    await rejectsWith(auto.client.ping(), "ERR_NOT_MANUAL_MODE");
    await auto.rec.waitFor("connected");
    await auto.client.destroy();

    const manual = newClient(gw.url);
    await manual.client.init(DEV.appId, devSettings("manual"));
    await rejectsWith(manual.client.connect(), "ERROR_USER_NOT_LOGGED_IN");
    await rejectsWith(manual.client.ping(), "ERROR_USER_NOT_LOGGED_IN");
    await manual.client.login("superhero2", DEV.authKey);
    await rejectsWith(manual.client.ping(), "NO_WEBSOCKET_CONNECTION");
    await manual.client.connect();
    await rejectsWith(manual.client.connect(), "ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE");
    await manual.client.destroy();
  });
});
