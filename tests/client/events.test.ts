/**
 * The client's real-time events against the real gateway, in this process, on a random loopback
 * port, with real WebSockets and a real (in-memory) Deno KV: messages reach the listeners once
 * and in stream order — live, replayed on connect, and paged from the history route past the
 * replay limit —, sends resolve with their seq and are not echoed to their own client, retries
 * by clientMessageId make one message, the stream position survives a restart, and typing and
 * presence reach their listeners.
 */
import assert from "node:assert/strict";
import {
  AppSettingsBuilder,
  createRestClient,
  fileStorage,
  type GatewayClient,
  type GatewayClientOptions,
  type MessageContent,
} from "../../client/mod.ts";
import {
  DEV,
  devSettings,
  newClient,
  rejectsWith,
  sleep,
  TEST_TIMING,
  waitUntil,
  withGateway,
} from "./helpers.ts";

/** A client of `uid` that records every message its listeners get, as `seq:text`. */
async function chatter(
  baseUrl: string,
  uid: string,
  mode: "auto" | "manual" = "auto",
  options: Partial<GatewayClientOptions> = {},
) {
  const { client, rec } = newClient(baseUrl, options);
  const got: string[] = [];
  client.addMessageListener("got", {
    onTextMessageReceived: (message, seq) => got.push(`${seq}:${message.text}`),
    onCustomMessageReceived: (message, seq) =>
      got.push(`${seq}:${message.customType}:${JSON.stringify(message.data)}`),
  });
  await client.init(DEV.appId, devSettings(mode));
  await client.login(uid, DEV.authKey);
  if (mode === "manual") await client.connect();
  else await rec.waitFor("connected");
  return { client, rec, got };
}

/** The server API: a message to `to` from `from`. */
function serverSend(baseUrl: string, to: string, message: MessageContent, from = "superhero2") {
  return createRestClient({ baseUrl }).server.sendMessage({
    params: { appId: DEV.appId },
    headers: { apikey: DEV.apiKey },
    body: { to: [to], from, message },
  }).then((reply) => {
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
  });
}

const text = (t: string): MessageContent => ({ kind: "text", text: t });

/** `1:t1`, `2:t2`, … : texts t1…tn at seq first…first+n-1. */
function expected(first: number, count: number, prefix = "t"): string[] {
  return Array.from({ length: count }, (_, i) => `${first + i}:${prefix}${first + i}`);
}

Deno.test("events: listeners get text, custom and group messages once, in stream order", async () => {
  await withGateway(async (gw) => {
    const receiver = await chatter(gw.url, "superhero1");
    const sender = await chatter(gw.url, "superhero2");
    const rest = createRestClient({ baseUrl: gw.url });
    const created = await rest.server.createGroup({
      params: { appId: DEV.appId },
      headers: { apikey: DEV.apiKey },
      body: { guid: "team", members: ["superhero1", "superhero2"] },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));

    await serverSend(gw.url, "superhero1", text("from the server"), "superhero3");
    await sender.client.sendMessage({ receiverType: "user", receiver: "superhero1", text: "hi" });
    await sender.client.sendCustomMessage({
      receiverType: "user",
      receiver: "superhero1",
      customType: "poll",
      data: { q: "lunch?" },
    });
    await sender.client.sendMessage({ receiverType: "group", receiver: "team", text: "all" });
    await waitUntil(() => receiver.got.length >= 4);
    await sleep(100); // nothing more comes
    assert.deepEqual(receiver.got, [
      "1:from the server",
      "2:hi",
      '3:poll:{"q":"lunch?"}',
      "4:all",
    ]);
    assert.deepEqual(receiver.client.getStreamPosition()?.seq, 4);
    assert.deepEqual(sender.got, [], "the sender's client is not given its own messages");
    await receiver.client.destroy();
    await sender.client.destroy();
  });
});

Deno.test("events: sendMessage resolves with its seq; the sender's other session gets it, its own client not", async () => {
  await withGateway(async (gw) => {
    const phone = await chatter(gw.url, "superhero1");
    const laptop = await chatter(gw.url, "superhero1"); // a second session of the same user
    const friend = await chatter(gw.url, "superhero2");
    const first = await phone.client.sendMessage({
      receiverType: "user",
      receiver: "superhero2",
      text: "one",
    });
    const second = await phone.client.sendMessage({
      receiverType: "user",
      receiver: "superhero2",
      text: "two",
    });
    assert.deepEqual([first.seq, second.seq], [1, 2], "seqs in the sender's own stream");
    assert.equal(first.message.from, "superhero1");
    assert.equal(first.message.to, "superhero2");
    assert.equal(first.message.receiverType, "user");
    assert.match(first.message.clientMessageId ?? "", /^[0-9a-f-]{36}$/);
    await waitUntil(() => laptop.got.length >= 2 && friend.got.length >= 2);
    await sleep(100);
    assert.deepEqual(laptop.got, ["1:one", "2:two"], "same seqs: the same stream");
    assert.deepEqual(friend.got, ["1:one", "2:two"]);
    assert.deepEqual(phone.got, []);
    assert.deepEqual(phone.client.getStreamPosition()?.seq, 2, "its `sent` frames moved it");
    for (const c of [phone, laptop, friend]) await c.client.destroy();
  });
});

Deno.test("events: a retry with the same clientMessageId is one message (socket and HTTP)", async () => {
  await withGateway(async (gw) => {
    const sender = await chatter(gw.url, "superhero1", "manual");
    const receiver = await chatter(gw.url, "superhero2");
    const send = { receiverType: "user", receiver: "superhero2", text: "once" } as const;
    const first = await sender.client.sendMessage({ ...send, clientMessageId: "outbox-1" });
    const again = await sender.client.sendMessage({ ...send, clientMessageId: "outbox-1" });
    await sender.client.disconnect();
    const overHttp = await sender.client.sendMessage({ ...send, clientMessageId: "outbox-1" });
    assert.deepEqual([again.seq, overHttp.seq], [first.seq, first.seq]);
    assert.deepEqual([again.message.id, overHttp.message.id], [first.message.id, first.message.id]);
    const next = await sender.client.sendMessage({ ...send, text: "new id" });
    assert.equal(next.seq, first.seq + 1);
    await waitUntil(() => receiver.got.length >= 2);
    await sleep(100);
    assert.deepEqual(receiver.got, ["1:once", "2:new id"]);
    // The sender's own copies come back in the replay: they are not incoming.
    await sender.client.connect();
    await sleep(100);
    assert.deepEqual(sender.got, []);
    assert.equal(sender.client.getStreamPosition()?.seq, 2);
    await rejectsWith(
      sender.client.sendMessage({ receiverType: "user", receiver: "nobody", text: "x" }),
      "ERR_UID_NOT_FOUND",
    );
    await rejectsWith(
      sender.client.sendMessage({ receiverType: "group", receiver: "no-group", text: "x" }),
      "ERR_GUID_NOT_FOUND",
    );
    await sender.client.destroy();
    await receiver.client.destroy();
  });
});

Deno.test("events: manual mode: sent while disconnected, delivered once and in order on connect()", async () => {
  await withGateway(async (gw) => {
    const { client, got } = await chatter(gw.url, "superhero1", "manual");
    const streams: string[] = [];
    client.addConnectionListener("stream", {
      onConnected: (info) =>
        streams.push(`${info.stream.recovered}:${info.stream.replayed}:${info.stream.seq}`),
    });
    await serverSend(gw.url, "superhero1", text("t1"));
    await waitUntil(() => got.length === 1);

    // disconnect(), then messages, then connect(): replayed.
    await client.disconnect();
    for (let i = 2; i <= 4; i++) await serverSend(gw.url, "superhero1", text(`t${i}`));
    await client.connect();
    await waitUntil(() => got.length >= 4);

    // Background without pings: the gateway closes after one window; messages meanwhile.
    await client.setAppState("background");
    await waitUntil(
      () => client.getConnectionInfo().lastDisconnect?.reason === "liveness_timeout",
      TEST_TIMING.livenessWindowMs + 3_000,
    );
    for (let i = 5; i <= 7; i++) await serverSend(gw.url, "superhero1", text(`t${i}`));
    await client.setAppState("foreground");
    await client.connect();
    await waitUntil(() => got.length >= 7);
    await sleep(100);
    assert.deepEqual(got, expected(1, 7));
    assert.deepEqual(streams, ["true:3:4", "true:3:7"], "recovered: replayed by the gateway");
    await client.destroy();
  });
});

Deno.test("events: a gap past the replay limit is paged from the history, with live events meanwhile", async () => {
  await withGateway(async (gw) => {
    const { client, got } = await chatter(gw.url, "superhero1", "manual", {
      historyPageSize: 4,
    });
    const streams: string[] = [];
    client.addConnectionListener("stream", {
      onConnected: (info) => streams.push(`${info.stream.recovered}:${info.stream.reason}`),
    });
    await serverSend(gw.url, "superhero1", text("t1"));
    await waitUntil(() => got.length === 1);
    await client.disconnect();
    for (let i = 2; i <= 13; i++) await serverSend(gw.url, "superhero1", text(`t${i}`));
    // Live messages race with the catch-up: each still comes once and in order.
    const connecting = client.connect();
    const live = (async () => {
      for (let i = 14; i <= 20; i++) await serverSend(gw.url, "superhero1", text(`t${i}`));
    })();
    await connecting;
    await live;
    await waitUntil(() => got.length >= 20);
    await sleep(100);
    assert.deepEqual(streams, ["false:replay_limit"]);
    assert.deepEqual(got, expected(1, 20));
    assert.deepEqual(client.getStreamPosition()?.seq, 20);
    await client.destroy();
  }, { replayLimit: 3 });
});

Deno.test("events: the stream position survives a restart (file storage): only what came meanwhile", async () => {
  await withGateway(async (gw) => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/client.json`;
    try {
      const first = await chatter(gw.url, "superhero1", "auto", { storage: fileStorage(path) });
      await serverSend(gw.url, "superhero1", text("t1"));
      await serverSend(gw.url, "superhero1", text("t2"));
      await waitUntil(() => first.got.length === 2);
      await first.client.destroy(); // the app stops (no logout)

      await serverSend(gw.url, "superhero1", text("t3"));
      const { client, rec } = newClient(gw.url, { storage: fileStorage(path) });
      const got: string[] = [];
      client.addMessageListener("got", {
        onTextMessageReceived: (message, seq) => got.push(`${seq}:${message.text}`),
      });
      await client.init(DEV.appId, devSettings("auto"));
      await rec.waitFor("connected");
      await waitUntil(() => got.length >= 1);
      await serverSend(gw.url, "superhero1", text("t4"));
      await waitUntil(() => got.length >= 2);
      await sleep(100);
      assert.deepEqual(got, ["3:t3", "4:t4"]);
      await client.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

async function typingTest(gw: { url: string }) {
  const typist = await chatter(gw.url, "superhero1");
  const reader = await chatter(gw.url, "superhero2");
  const log: string[] = [];
  reader.client.addMessageListener("typing", {
    onTypingStarted: (t) => log.push(`started:${t.from}:${t.receiverType}:${t.receiver}`),
    onTypingEnded: (t) => log.push(`ended:${t.from}:${t.receiverType}:${t.receiver}`),
  });
  const target = { receiverType: "user", receiver: "superhero2" } as const;
  typist.client.startTyping(target);
  await waitUntil(() => log.length === 1);
  typist.client.endTyping(target);
  await waitUntil(() => log.length === 2);
  assert.deepEqual(log, ["started:superhero1:user:superhero2", "ended:superhero1:user:superhero2"]);
  // Renewed while the app keeps calling startTyping: no typing_ended in between (the gateway
  // may relay a renewal as another typing_started, for receivers that connected meanwhile).
  const start = Date.now();
  typist.client.startTyping(target);
  while (Date.now() - start < TEST_TIMING.typingTimeoutMs * 2) {
    await sleep(100);
    typist.client.startTyping(target);
  }
  const renewed = log.slice(2);
  assert.ok(renewed.length >= 1, "started again");
  assert.deepEqual(renewed, renewed.map(() => "started:superhero1:user:superhero2"));
  // Then the app stops: the gateway ends it after the timeout.
  const ended = Date.now();
  await waitUntil(() => log.at(-1)!.startsWith("ended:"), TEST_TIMING.typingTimeoutMs + 2_000);
  // The last start_typing went out at most ~0.6 timeout before `ended` (one per half timeout).
  assert.ok(Date.now() - ended >= TEST_TIMING.typingTimeoutMs / 4, "not before the timeout");
  assert.equal(log.at(-1), "ended:superhero1:user:superhero2");
  await typist.client.destroy();
  await reader.client.destroy();
}

async function presenceTest(gw: { url: string }) {
  const { client: watcher, rec } = newClient(gw.url);
  await watcher.init(
    DEV.appId,
    new AppSettingsBuilder().setRegion(DEV.region).subscribePresenceForAllUsers().build(),
  );
  const log: string[] = [];
  watcher.addUserListener("ui", {
    onUserOnline: (user) => log.push(`online:${user.uid}`),
    onUserOffline: (user) => log.push(`offline:${user.uid}`),
  });
  await watcher.login("superhero2", DEV.authKey);
  await rec.waitFor("connected");
  const other: { client: GatewayClient } = await chatter(gw.url, "superhero1");
  await waitUntil(() => log.includes("online:superhero1"));
  await other.client.logout();
  await waitUntil(() => log.includes("offline:superhero1"));
  assert.deepEqual(log.filter((l) => l.endsWith(":superhero1")), [
    "online:superhero1",
    "offline:superhero1",
  ]);
  assert.ok(!log.some((l) => l.endsWith(":superhero2")), "never one's own presence");
  await other.client.destroy();
  await watcher.destroy();
}

Deno.test(
  "events: typing indicators reach the receiver's listeners; renewed, ended, timed out",
  () => withGateway(typingTest),
);

Deno.test(
  "events: presence of the subscribed users reaches the user listeners",
  () => withGateway(presenceTest),
);
