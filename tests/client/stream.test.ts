/**
 * The client's real-time events against the in-process fake gateway and a fake clock: the
 * stream position in every connect frame and in storage, replay and history catch-up with the
 * live events buffered meanwhile, each event handed over once and in seq order, sends with
 * their retries, typing and presence. The fake decides exactly when a page is answered and
 * when a live frame arrives, which the real gateway can't promise; `events.test.ts` runs the
 * same behaviour against the real one.
 */
import assert from "node:assert/strict";
import {
  AppSettingsBuilder,
  backoffDelay,
  GatewayClient,
  type GatewayClientOptions,
  type Message,
  type StorageAdapter,
  type StreamPosition,
  type TypingIndicator,
} from "../../client/mod.ts";
import { FAKE_TIMING, FakeGateway, textMessage } from "./fake_server.ts";
import { devSettings, FakeClock, InspectableStorage, Recorder, rejectsWith } from "./helpers.ts";

const BASE = "http://gateway.test";
/**
 * The fake's timing with heartbeats an hour apart: these tests move the fake clock by whole
 * backoff delays, and a heartbeat due meanwhile would wait for a pong that can't arrive while
 * the clock jumps (heartbeats have their own tests in state_machine.test.ts).
 */
const QUIET_TIMING = { ...FAKE_TIMING, heartbeatIntervalMs: 3_600_000 };
const POSITION_KEY = `liveness.v1:${BASE}:demo:stream:superhero1`;

/** Lets fake sockets, fake fetches and the client's promise chains run to their end. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 0));
}

function setup(
  options: Partial<GatewayClientOptions> = {},
  server = new FakeGateway(QUIET_TIMING),
) {
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
  const got: string[] = [];
  client.addMessageListener("got", {
    onTextMessageReceived: (message, seq) => got.push(`${seq}:${message.text}`),
    onCustomMessageReceived: (message, seq) => got.push(`${seq}:${message.customType}`),
  });
  return { server, clock, client, rec, got };
}

async function loggedIn(
  mode: "auto" | "manual",
  options: Partial<GatewayClientOptions> = {},
  server?: FakeGateway,
) {
  const ctx = setup(options, server);
  await ctx.client.init("demo", devSettings(mode));
  await ctx.client.login("superhero1", "dev_auth_key__not_secret");
  if (mode === "manual") await ctx.client.connect();
  await settle();
  return ctx;
}

/** A storage that already holds a stream position for superhero1 (an earlier run's). */
function storageWith(position: StreamPosition): InspectableStorage {
  const storage = new InspectableStorage();
  storage.setItem(POSITION_KEY, JSON.stringify({ v: 1, ...position }));
  return storage;
}

function storedPosition(storage: InspectableStorage): StreamPosition | null {
  const raw = storage.getItem(POSITION_KEY);
  if (raw === null) return null;
  const { epoch, seq } = JSON.parse(raw);
  return { epoch, seq };
}

/** A server whose stream already holds `texts` (seq 1, 2, …). */
function serverWith(...texts: string[]): FakeGateway {
  const server = new FakeGateway(QUIET_TIMING);
  for (const text of texts) server.append(textMessage(text));
  return server;
}

function historyRequests(server: FakeGateway): string[] {
  return server.requests.filter((r) => r.startsWith("GET /v1/session/events"))
    .map((r) => r.slice("GET /v1/session/events".length));
}

/** Waits until a history request has been read and is held, then returns. */
async function heldPage(server: FakeGateway): Promise<void> {
  for (let i = 0; i < 50 && server.heldHistory === 0; i++) await settle();
  assert.equal(server.heldHistory, 1, "a history page is held");
}

/** Lets the backoff timer open the next socket (the clock moves by exactly its delay). */
async function reconnect(client: GatewayClient, clock: FakeClock): Promise<void> {
  const delay = client.getConnectionInfo().lastDisconnect?.reconnectInMs;
  assert.ok(typeof delay === "number", "a reconnection is scheduled");
  clock.advance(delay);
  await settle();
}

/** Drops the current socket and lets the backoff timer open the next one. */
async function dropAndReconnect(server: FakeGateway, client: GatewayClient, clock: FakeClock) {
  server.last.drop();
  await settle();
  await reconnect(client, clock);
}

// ---- the stream position ----------------------------------------------------------------

Deno.test("stream: nothing stored: starts at the head, pages nothing, stores the position", async () => {
  const storage = new InspectableStorage();
  const { server, client, got } = await loggedIn("auto", { storage }, serverWith("a", "b"));
  assert.equal(server.last.sentOf("connect")[0].resume, undefined, "no position to resume");
  assert.deepEqual(historyRequests(server), [], "the user's history is not fetched");
  assert.deepEqual(got, []);
  assert.deepEqual(client.getStreamPosition(), { epoch: "epoch-1", seq: 2 });
  server.push(textMessage("c"));
  await settle();
  assert.deepEqual(got, ["3:c"]);
  assert.deepEqual(storedPosition(storage), { epoch: "epoch-1", seq: 3 });
  await client.destroy();
});

Deno.test("stream: every connect frame resumes from the last event handed over (both modes)", async () => {
  // Auto mode: each reconnection resumes from where the listeners are.
  const auto = await loggedIn("auto");
  auto.server.push(textMessage("a"));
  auto.server.push(textMessage("b"));
  await auto.client.setAppState("background"); // no reconnection in background
  auto.server.last.serverClose(4001);
  await settle();
  auto.server.append(textMessage("c")); // while disconnected
  auto.server.append(textMessage("d"));
  await auto.client.setAppState("foreground");
  await settle();
  assert.deepEqual(auto.server.last.sentOf("connect")[0].resume, { epoch: "epoch-1", seq: 2 });
  assert.deepEqual(auto.got, ["1:a", "2:b", "3:c", "4:d"], "replayed once, in order");
  await dropAndReconnect(auto.server, auto.client, auto.clock);
  assert.deepEqual(auto.server.last.sentOf("connect")[0].resume, { epoch: "epoch-1", seq: 4 });
  assert.equal(auto.server.sockets.length, 3, JSON.stringify(auto.rec.log));
  await auto.client.destroy();

  // Manual mode: connect() after disconnect() resumes too.
  const manual = await loggedIn("manual");
  manual.server.push(textMessage("a"));
  await settle();
  const disconnected = manual.client.disconnect();
  manual.server.last.serverClose(1000);
  await disconnected;
  manual.server.append(textMessage("b"));
  await manual.client.connect();
  await settle();
  assert.deepEqual(manual.server.last.sentOf("connect")[0].resume, { epoch: "epoch-1", seq: 1 });
  assert.deepEqual(manual.got, ["1:a", "2:b"]);
  await manual.client.destroy();
});

Deno.test("stream: frames at or below the position are ignored: each seq once, in order", async () => {
  const { server, client, got } = await loggedIn("auto");
  const [a, b, c] = ["a", "b", "c"].map((t) => server.append(textMessage(t)));
  for (const event of [a, b, b, a, c, c]) server.last.deliver(event);
  await settle();
  assert.deepEqual(got, ["1:a", "2:b", "3:c"]);
  await client.destroy();
});

Deno.test("stream: stored after the listeners had the event; a restarted client resumes from it", async () => {
  const storage = new InspectableStorage();
  const first = await loggedIn("auto", { storage });
  const seenInStorage: (number | undefined)[] = [];
  first.client.addMessageListener("check", {
    onTextMessageReceived: () => seenInStorage.push(storedPosition(storage)?.seq),
  });
  first.server.push(textMessage("a"));
  first.server.push(textMessage("b"));
  await settle();
  assert.deepEqual(seenInStorage, [0, 0], "not stored before the listeners ran");
  assert.deepEqual(storedPosition(storage), { epoch: "epoch-1", seq: 2 });
  await first.client.destroy();

  // The app restarts; meanwhile two more messages came.
  first.server.append(textMessage("c"));
  first.server.append(textMessage("d"));
  const again = setup({ storage }, first.server);
  await again.client.init("demo", devSettings("auto"));
  await settle();
  assert.deepEqual(first.server.last.sentOf("connect")[0].resume, { epoch: "epoch-1", seq: 2 });
  assert.deepEqual(again.got, ["3:c", "4:d"]);
  assert.deepEqual(storedPosition(storage), { epoch: "epoch-1", seq: 4 });
  // Logging out forgets it: a next login of this user starts afresh.
  await again.client.logout();
  await settle();
  assert.equal(storage.getItem(POSITION_KEY), null);
  await again.client.destroy();
});

Deno.test("stream: logout leaves nothing of the user in storage, also when the gateway's close comes first", async () => {
  // A storage whose writes take a while (a file, IndexedDB behind an adapter).
  const items = new Map<string, string>();
  const later = () => new Promise((resolve) => setTimeout(resolve, 5));
  const storage: StorageAdapter = {
    getItem: (key) => items.get(key) ?? null,
    setItem: async (key, value) => void (await later(), items.set(key, value)),
    removeItem: async (key) => void (await later(), items.delete(key)),
  };
  const { server, client, rec } = await loggedIn("auto", { storage });
  server.push(textMessage("a"));
  await settle();
  assert.deepEqual([...items.keys()].length, 2, "the session and the position");
  server.closeOnLogout = true;
  await client.logout();
  assert.equal(rec.lastDisconnect().source, "server", "the gateway's close came first");
  assert.deepEqual([...items.keys()], []);
  await client.destroy();
});

// ---- catching up through the history route ------------------------------------------

Deno.test("stream: past the replay limit: pages the history, buffers live events, hands each over once", async () => {
  const server = serverWith("1");
  server.replayLimit = 3;
  const storage = storageWith({ epoch: "epoch-1", seq: 1 });
  for (let i = 2; i <= 8; i++) server.append(textMessage(String(i)));
  server.holdHistory = true;
  const { client, got } = await loggedIn("auto", { storage, historyPageSize: 3 }, server);
  const connected = client.getConnectionInfo();
  assert.equal(connected.status, "connected");

  await heldPage(server); // page after=1 read (2, 3, 4); a live event comes meanwhile
  server.push(textMessage("9"));
  await settle();
  assert.deepEqual(got, [], "nothing before the history");
  server.releaseHistory();
  await heldPage(server); // after=4: 5, 6, 7
  server.releaseHistory();
  await heldPage(server); // after=7: 8, 9 (the last page), and one more live event
  server.push(textMessage("10"));
  server.releaseHistory();
  await settle();
  assert.deepEqual(got, ["2:2", "3:3", "4:4", "5:5", "6:6", "7:7", "8:8", "9:9", "10:10"]);
  assert.deepEqual(historyRequests(server), [
    "?after=1&limit=3",
    "?after=4&limit=3",
    "?after=7&limit=3",
  ]);
  assert.deepEqual(storedPosition(storage), { epoch: "epoch-1", seq: 10 });
  server.push(textMessage("11"));
  await settle();
  assert.deepEqual(got.slice(-1), ["11:11"], "live again");
  await client.destroy();
});

Deno.test("stream: a position of another epoch, or ahead of the stream, restarts at seq 0", async () => {
  for (
    const [position, reason] of [
      [{ epoch: "epoch-0", seq: 5 }, "epoch_changed"],
      [{ epoch: "epoch-1", seq: 50 }, "ahead_of_stream"],
    ] as const
  ) {
    const storage = storageWith(position);
    const connected: string[] = [];
    const { server, client, got } = setup({ storage }, serverWith("a", "b", "c"));
    client.addConnectionListener("reason", {
      onConnected: (info) => connected.push(info.stream.reason ?? "recovered"),
    });
    await client.init("demo", devSettings("auto"));
    await client.login("superhero1", "dev_auth_key__not_secret");
    await settle();
    assert.deepEqual(server.last.sentOf("connect")[0].resume, position);
    assert.deepEqual(connected, [reason]);
    assert.deepEqual(historyRequests(server), ["?after=0&limit=100"], reason);
    assert.deepEqual(got, ["1:a", "2:b", "3:c"], reason);
    assert.deepEqual(storedPosition(storage), { epoch: "epoch-1", seq: 3 }, reason);
    await client.destroy();
  }
});

Deno.test("stream: events gone to retention are skipped; the position moves past them", async () => {
  // By count: the history starts later than the position.
  const server = serverWith("1", "2", "3", "4", "5", "6");
  server.retainedFrom = 4;
  const storage = storageWith({ epoch: "epoch-1", seq: 1 });
  const { client, got } = await loggedIn("auto", { storage }, server);
  assert.deepEqual(got, ["4:4", "5:5", "6:6"]);
  assert.deepEqual(client.getStreamPosition(), { epoch: "epoch-1", seq: 6 });
  await client.destroy();

  // By age: a whole page of expired events comes back empty, and `nextAfter` moves on.
  const aged = serverWith("1", "2", "3", "4", "5", "6");
  for (const seq of [2, 3, 4]) aged.expired.add(seq);
  const again = await loggedIn("auto", {
    storage: storageWith({ epoch: "epoch-1", seq: 1 }),
    historyPageSize: 3,
  }, aged);
  assert.deepEqual(historyRequests(aged), ["?after=1&limit=3", "?after=4&limit=3"]);
  assert.deepEqual(again.got, ["5:5", "6:6"]);
  await again.client.destroy();
});

Deno.test("stream: a live seq past a gap pages the gap before it is handed over", async () => {
  const { server, client, got } = await loggedIn("auto");
  server.push(textMessage("a"));
  server.append(textMessage("b")); // never sent live
  server.append(textMessage("c"));
  server.holdHistory = true;
  server.push(textMessage("d")); // seq 4 after 1: a gap
  await heldPage(server);
  server.push(textMessage("e")); // buffered behind the gap
  assert.deepEqual(got, ["1:a"]);
  server.releaseHistory();
  await settle();
  assert.deepEqual(got, ["1:a", "2:b", "3:c", "4:d", "5:e"]);
  assert.deepEqual(historyRequests(server), ["?after=1&limit=100"]);
  await client.destroy();
});

Deno.test("stream: a gap the history can't fill is paged once, not forever", async () => {
  const { server, client, got } = await loggedIn("auto", {}, serverWith("a"));
  // A live seq 4 the stream does not hold (a gateway that broke its promise): no busy loop.
  server.last.deliver({ type: "message", seq: 4, message: textMessage("d") });
  await settle();
  assert.deepEqual(historyRequests(server), ["?after=1&limit=100"]);
  assert.deepEqual(got, ["4:d"]);
  assert.deepEqual(client.getStreamPosition(), { epoch: "epoch-1", seq: 4 });
  await client.destroy();
});

Deno.test("stream: a failed page is retried after a backoff; a dropped connection stops the catch-up", async () => {
  const server = serverWith("1", "2", "3");
  server.replayLimit = 0;
  server.failHistory = 2;
  const storage = storageWith({ epoch: "epoch-1", seq: 1 });
  const { client, clock, rec, got } = await loggedIn("auto", { storage }, server);
  assert.deepEqual(rec.errors.map((e) => e.errorCode), ["ERR_INTERNAL"], "told to the listeners");
  assert.deepEqual(got, []);
  clock.advance(backoffDelay(0, () => 0.5) - 1);
  await settle();
  assert.equal(historyRequests(server).length, 1, "not before the backoff");
  clock.advance(1);
  await settle();
  assert.equal(historyRequests(server).length, 2);
  clock.advance(backoffDelay(1, () => 0.5));
  await settle();
  assert.deepEqual(got, ["2:2", "3:3"]);

  // A page that comes back after its connection ended is not used: the next connection
  // resumes from the position and gets everything from there.
  server.append(textMessage("4"));
  server.append(textMessage("5"));
  server.holdHistory = true;
  server.last.deliver(server.events[4]); // 5 after 3: a gap
  await heldPage(server);
  server.last.drop();
  server.releaseHistory();
  await settle();
  assert.deepEqual(got, ["2:2", "3:3"], "the abandoned page was not handed over");
  server.holdHistory = false;
  server.replayLimit = 1_000;
  await reconnect(client, clock);
  assert.deepEqual(server.last.sentOf("connect")[0].resume, { epoch: "epoch-1", seq: 3 });
  assert.deepEqual(got, ["2:2", "3:3", "4:4", "5:5"]);
  await client.destroy();
});

// ---- sends ------------------------------------------------------------------------------

Deno.test("send: over the socket; resolves with its seq; not handed to this client's listeners", async () => {
  const { server, client, got } = await loggedIn("auto");
  const sent = await client.sendMessage({
    receiverType: "user",
    receiver: "superhero2",
    text: "hi",
  });
  const frame = server.last.sentOf("send")[0];
  assert.match(frame.clientMessageId, /^[0-9a-f-]{36}$/, "a UUID");
  assert.deepEqual(
    [frame.receiverType, frame.receiver, frame.message],
    ["user", "superhero2", { kind: "text", text: "hi" }],
  );
  assert.equal(sent.seq, 1);
  assert.equal(sent.message.kind === "text" && sent.message.text, "hi");
  assert.equal(sent.message.clientMessageId, frame.clientMessageId);
  const custom = await client.sendCustomMessage({
    receiverType: "group",
    receiver: "team",
    customType: "poll",
    data: { q: 1 },
  });
  assert.equal(custom.seq, 2);
  assert.deepEqual(server.last.sentOf("send")[1].message, {
    kind: "custom",
    customType: "poll",
    data: { q: 1 },
  });
  assert.deepEqual(got, [], "the sender's own messages are not incoming");
  assert.deepEqual(client.getStreamPosition(), { epoch: "epoch-1", seq: 2 }, "`sent` moves it");
  // A retry's answer carries the first seq, at no place in the stream: the position stays.
  server.last.deliver({ type: "sent", seq: 1, message: sent.message, duplicate: true });
  server.last.deliver({ type: "sent", seq: 7, message: sent.message, duplicate: true });
  await settle();
  assert.deepEqual(client.getStreamPosition(), { epoch: "epoch-1", seq: 2 });
  assert.deepEqual(historyRequests(server), [], "no gap seen");
  server.push(textMessage("next"));
  await settle();
  assert.deepEqual(got, ["3:next"]);
  await client.destroy();
});

Deno.test("send: the socket drops before the answer: sent again over HTTP with the same id, once", async () => {
  const { server, client } = await loggedIn("auto");
  server.autoAnswerSends = false;
  const sending = client.sendMessage({ receiverType: "user", receiver: "superhero2", text: "x" });
  await settle();
  const socket = server.last;
  const frame = socket.sentOf("send")[0];
  socket.drop();
  server.answerSend(socket, frame); // the gateway had it, but its answer is lost
  const sent = await sending;
  assert.equal(sent.seq, 1);
  assert.ok(server.requests.includes("POST /v1/session/messages"), "retried over HTTP");
  assert.equal(server.events.length, 1, "one message");
  await client.destroy();
});

Deno.test("send: when the gateway can't be reached it waits; the next connection sends it with the same id", async () => {
  const { server, client, clock, got } = await loggedIn("auto");
  server.autoAnswerSends = false;
  server.failHttpSends = true;
  let settled = false;
  const sending = client.sendMessage({ receiverType: "user", receiver: "superhero2", text: "x" });
  void sending.then(() => settled = true);
  await settle();
  const cid = server.last.sentOf("send")[0].clientMessageId;
  server.last.drop();
  await settle();
  assert.equal(settled, false, "waits for a connection");
  server.autoAnswerSends = true;
  await reconnect(client, clock);
  assert.deepEqual(server.last.sentOf("send").map((f) => f.clientMessageId), [cid]);
  assert.equal((await sending).seq, 1);
  assert.deepEqual(got, []);
  await client.destroy();
});

Deno.test("send: a replayed copy of its own message answers the send; another session's is incoming", async () => {
  const { server, client, clock, got } = await loggedIn("auto");
  server.autoAnswerSends = false;
  server.failHttpSends = true;
  const sending = client.sendMessage({ receiverType: "user", receiver: "superhero2", text: "x" });
  await settle();
  const socket = server.last;
  const frame = socket.sentOf("send")[0];
  socket.drop();
  server.answerSend(socket, frame); // stored as seq 1; the answer is lost
  // The same user on another device sends a message too (no clientMessageId of this client).
  const fromOtherDevice: Message = {
    ...textMessage("from my phone", "superhero1"),
    clientMessageId: "phone-1",
  };
  server.append(fromOtherDevice);
  await settle();
  await reconnect(client, clock); // the replay holds both
  const sent = await sending;
  assert.equal(sent.seq, 1);
  assert.deepEqual(got, ["2:from my phone"], "only the other session's message is incoming");
  await client.destroy();
});

Deno.test("send: refusals reject it; logout rejects what is still out", async () => {
  const { server, client } = await loggedIn("auto");
  const invalid = await rejectsWith(
    client.sendMessage({ receiverType: "user", receiver: "", text: "x" }),
    "ERR_BAD_REQUEST",
  );
  assert.ok(Array.isArray(invalid.details?.issues));
  assert.deepEqual(server.last.sentOf("send"), [], "an invalid send is not sent");

  server.autoAnswerSends = false;
  const refused = client.sendMessage({ receiverType: "user", receiver: "nobody", text: "x" });
  await settle();
  const frame = server.last.sentOf("send")[0];
  server.last.deliver({
    type: "error",
    id: frame.id,
    errorCode: "ERR_UID_NOT_FOUND",
    errorDescription: "No user 'nobody' exists.",
  });
  await rejectsWith(refused, "ERR_UID_NOT_FOUND");

  const unanswered = client.sendMessage({
    receiverType: "user",
    receiver: "superhero2",
    text: "y",
  });
  await settle();
  const cid = server.last.sentOf("send")[1].clientMessageId;
  const loggedOut = rejectsWith(unanswered, "ERROR_USER_NOT_LOGGED_IN");
  await client.logout();
  assert.equal((await loggedOut).details?.clientMessageId, cid, "the id to send it again with");
  await rejectsWith(
    client.sendMessage({ receiverType: "user", receiver: "superhero2", text: "z" }),
    "ERROR_USER_NOT_LOGGED_IN",
  );
  await client.destroy();
});

Deno.test("send: not connected: over HTTP; an app's own clientMessageId is kept", async () => {
  const { server, client, got } = await loggedIn("manual");
  const disconnected = client.disconnect();
  server.last.serverClose(1000);
  await disconnected;
  const sent = await client.sendMessage({
    receiverType: "user",
    receiver: "superhero2",
    text: "offline",
    clientMessageId: "outbox-7",
  });
  assert.equal(sent.message.clientMessageId, "outbox-7");
  assert.equal(sent.seq, 1);
  await client.connect(); // the copy in the stream is replayed: it is not incoming
  await settle();
  assert.deepEqual(got, []);
  assert.deepEqual(client.getStreamPosition(), { epoch: "epoch-1", seq: 1 });
  await client.destroy();
});

// ---- typing and presence ----------------------------------------------------------------

Deno.test("typing: start_typing at most once per half timeout; end_typing; nothing when not connected", async () => {
  const { server, client, clock } = await loggedIn("manual");
  const target = { receiverType: "user", receiver: "superhero2" } as const;
  const typingFrames = () =>
    server.last.sent.filter((f) => f.type === "start_typing" || f.type === "end_typing")
      .map((f) => f.type);
  const half = server.timing.typingTimeoutMs / 2;
  client.startTyping(target);
  clock.advance(half - 1);
  client.startTyping(target);
  assert.deepEqual(typingFrames(), ["start_typing"], "one frame while the indicator holds");
  clock.advance(1);
  client.startTyping(target);
  assert.deepEqual(typingFrames(), ["start_typing", "start_typing"], "renewed");
  client.startTyping({ receiverType: "group", receiver: "team" });
  client.endTyping(target);
  client.startTyping(target); // a new indicator after end_typing
  assert.deepEqual(typingFrames(), [
    "start_typing",
    "start_typing",
    "start_typing",
    "end_typing",
    "start_typing",
  ]);
  assert.deepEqual(server.last.sentOf("start_typing")[2], {
    type: "start_typing",
    id: server.last.sentOf("start_typing")[2].id,
    receiverType: "group",
    receiver: "team",
  });
  const disconnected = client.disconnect();
  server.last.serverClose(1000);
  await disconnected;
  const sockets = server.sockets.length;
  client.startTyping(target);
  client.endTyping(target);
  assert.equal(server.sockets.length, sockets);
  await client.connect();
  client.startTyping(target); // the gateway ended the old indicator with the old connection
  assert.deepEqual(server.last.sentOf("start_typing").length, 1);
  await client.destroy();
});

Deno.test("typing: indicators reach the message listeners", async () => {
  const { server, client } = await loggedIn("auto");
  const log: string[] = [];
  client.addMessageListener("typing", {
    onTypingStarted: (t) => log.push(`started:${t.from}:${t.receiverType}:${t.receiver}:${t.at}`),
    onTypingEnded: (t) => log.push(`ended:${t.from}:${t.receiverType}:${t.receiver}`),
  });
  const indicator: TypingIndicator = {
    from: "superhero2",
    receiverType: "user",
    receiver: "superhero1",
    at: 5,
  };
  server.last.deliver({ type: "typing_started", ...indicator });
  server.last.deliver({ type: "typing_ended", ...indicator, receiverType: "group", receiver: "g" });
  assert.deepEqual(log, [
    "started:superhero2:user:superhero1:5",
    "ended:superhero2:group:g",
  ]);
  client.removeMessageListener("typing");
  server.last.deliver({ type: "typing_started", ...indicator });
  assert.equal(log.length, 2);
  await client.destroy();
});

Deno.test("presence: the connect frame subscribes as init said; one call per user of a batch", async () => {
  const server = new FakeGateway(QUIET_TIMING);
  const { client } = setup({}, server);
  const settings = new AppSettingsBuilder().setRegion("us").subscribePresenceForRoles(["vip"])
    .build();
  await client.init("demo", settings);
  await client.login("superhero1", "dev_auth_key__not_secret");
  await settle();
  assert.deepEqual(server.last.sentOf("connect")[0].presence, {
    subscriptionType: "roles",
    roles: ["vip"],
  });
  const log: string[] = [];
  client.addUserListener("ui", {
    onUserOnline: (u) => log.push(`online:${u.uid}:${u.at}`),
    onUserOffline: (u) => log.push(`offline:${u.uid}:${u.at}`),
  });
  client.addUserListener("throws", {
    onUserOnline: () => {
      throw new Error("a throwing listener must not stop the others");
    },
  });
  server.last.deliver({
    type: "presence",
    users: [
      { uid: "superhero2", online: true, at: 1 },
      { uid: "superhero3", online: false, at: 2 },
      { uid: "superhero4", online: true, at: 3 },
    ],
  });
  assert.deepEqual(log, ["online:superhero2:1", "offline:superhero3:2", "online:superhero4:3"]);
  client.removeUserListener("ui");
  server.last.deliver({ type: "presence", users: [{ uid: "superhero2", online: false, at: 4 }] });
  assert.equal(log.length, 3);
  await client.destroy();
});

Deno.test("presence: a subscription the connect frame can't carry is refused at init", async () => {
  const { client } = setup();
  const roles = Array.from({ length: 21 }, (_, i) => `role${i}`);
  const error = await rejectsWith(
    client.init(
      "demo",
      new AppSettingsBuilder().setRegion("us").subscribePresenceForRoles(roles).build(),
    ),
    "ERR_BAD_REQUEST",
  );
  assert.equal(error.details?.where, "presence");
  await client.destroy();
});
