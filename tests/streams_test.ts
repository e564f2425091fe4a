/**
 * The durable per-user stream over real sockets, against a real gateway and a real Deno KV:
 * delivery to every session of a receiver in seq order, user sends (no echo, no `from`,
 * idempotent retries), resume after a deadline close, a restart, a slow-consumer close and
 * through the store, every reason a resume is not recovered with the history route that
 * catches up, and groups.
 *
 * A check that nothing else arrived sends a marker message and expects it as the very next
 * frame: a duplicate, an echo or a gap would come before it.
 */
import assert from "node:assert/strict";
import {
  closeCodeTable,
  type HistoryPage,
  type Message,
  type SendMessageReply,
  type ServerFrameOf,
  type StreamPosition,
  type UserSendReply,
} from "../contract/mod.ts";
import { DEV_APP, KvStore } from "../gateway/mod.ts";
import type { GatewayStore } from "../gateway/store/types.ts";
import {
  API_KEY,
  login,
  OffsetClock,
  openStalledPeer,
  startTestGateway,
  type TestGateway,
  TestSocket,
} from "./support/harness.ts";

const APP = { appId: DEV_APP.appId };

type MessageFrame = ServerFrameOf<"message">;

const bearer = (credential: string) => ({ authorization: `Bearer ${credential}` });

const text = (value: string) => ({ kind: "text" as const, text: value });

function textOf(message: Message): string {
  return message.kind === "text" ? message.text : `custom:${message.customType}`;
}

/** A user's send to one user (or a group), as the `send` frame and the HTTP body carry it. */
function userSend(
  receiver: string,
  clientMessageId: string,
  value: string,
  receiverType: "user" | "group" = "user",
) {
  return { clientMessageId, receiverType, receiver, message: text(value) };
}

/** The server API's send to users; the test fails unless it is accepted. */
async function serverSend(
  gateway: TestGateway,
  to: string[],
  value: string,
  from?: string,
): Promise<SendMessageReply> {
  const res = await gateway.rest.server.sendMessage({
    params: APP,
    headers: API_KEY,
    body: { to, message: text(value), ...(from === undefined ? {} : { from }) },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as SendMessageReply;
}

/** `POST /v1/session/messages` with any body, also ones the contract refuses. */
async function httpSend(
  gateway: TestGateway,
  credential: string,
  body: Record<string, unknown>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${gateway.url}/v1/session/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", ...bearer(credential) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** A user's HTTP send that must be accepted. */
async function httpSendOk(
  gateway: TestGateway,
  credential: string,
  body: Record<string, unknown>,
): Promise<UserSendReply> {
  const res = await httpSend(gateway, credential, body);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as unknown as UserSendReply;
}

async function history(
  gateway: TestGateway,
  credential: string,
  after: number,
  limit: number,
): Promise<HistoryPage> {
  const res = await gateway.rest.session.history({
    headers: bearer(credential),
    query: { after, limit },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as HistoryPage;
}

/** `[seq, text]` of a page's events. */
const pageOf = (page: HistoryPage) => page.events.map((e) => [e.seq, textOf(e.message)]);

/** The next frames are `message` frames with exactly these seqs and texts, in this order. */
async function expectMessages(
  socket: TestSocket,
  expected: Array<[number, string]>,
): Promise<MessageFrame[]> {
  const frames: MessageFrame[] = [];
  for (const _ of expected) frames.push(await socket.next("message"));
  assert.deepEqual(frames.map((f) => [f.seq, textOf(f.message)]), expected);
  return frames;
}

/**
 * Sends a marker to `uid` with the server API and checks that it is the next frame of every
 * socket, at `seq`: nothing (an echo, a duplicate, a second copy) arrived before it.
 */
async function expectMarkerNext(
  gateway: TestGateway,
  uid: string,
  sockets: TestSocket[],
  seq: number,
): Promise<void> {
  const value = `marker ${seq}`;
  const reply = await serverSend(gateway, [uid], value);
  assert.equal(reply.recipients[0].seq, seq, `${uid}'s stream continues at ${seq}`);
  for (const socket of sockets) await expectMessages(socket, [[seq, value]]);
}

async function connectResume(
  gateway: TestGateway,
  credential: string,
  resume?: StreamPosition,
) {
  return await TestSocket.connect(gateway, credential, resume === undefined ? {} : { resume });
}

/** Connects, reads the stream position, and closes: where a client would start from. */
async function positionOf(gateway: TestGateway, credential: string): Promise<StreamPosition> {
  const { socket, connected } = await connectResume(gateway, credential);
  await using _ = socket;
  return { epoch: connected.stream.epoch, seq: connected.stream.seq };
}

async function withKvFile<T>(run: (kvPath: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "streams_test_" });
  try {
    return await run(`${dir}/gateway.kv`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---- delivery and user sends ----

Deno.test("every session of a receiver gets each message in seq order; a sender's own session gets `sent`, not an echo", async () => {
  await using gateway = await startTestGateway();
  const phone = await login(gateway, "auto", "superhero1");
  const laptop = await login(gateway, "manual", "superhero1");
  const senderPhone = await login(gateway, "auto", "superhero2");
  const senderLaptop = await login(gateway, "auto", "superhero2");
  await using a1 = (await TestSocket.connect(gateway, phone.credential)).socket;
  await using a2 = (await TestSocket.connect(gateway, laptop.credential)).socket;
  await using b1 = (await TestSocket.connect(gateway, senderPhone.credential)).socket;
  await using b2 = (await TestSocket.connect(gateway, senderLaptop.credential)).socket;

  // From the server API.
  const server = await serverSend(gateway, ["superhero1"], "from the server");
  assert.deepEqual(server.recipients, [{ uid: "superhero1", seq: 1, deliveredTo: 2 }]);
  for (const socket of [a1, a2]) await expectMessages(socket, [[1, "from the server"]]);

  // A `send` frame: the sending session gets `sent` with the frame's id, at its place in the
  // sender's stream; the sender's other session gets the message; the receiver's sessions too.
  b1.send({ type: "send", id: "f1", ...userSend("superhero1", "c1", "over the socket") });
  const sent = await b1.next("sent");
  assert.deepEqual(sent, {
    type: "sent",
    id: "f1",
    seq: 1,
    duplicate: false,
    message: {
      kind: "text",
      text: "over the socket",
      id: sent.message.id,
      from: "superhero2",
      receiverType: "user",
      to: "superhero1",
      clientMessageId: "c1",
      sentAt: sent.message.sentAt,
    },
  });
  assert.deepEqual(await b2.next("message"), { type: "message", seq: 1, message: sent.message });
  for (const socket of [a1, a2]) {
    assert.deepEqual(await socket.next("message"), {
      type: "message",
      seq: 2,
      message: sent.message,
    });
  }

  // The HTTP send of the same session: answered over HTTP, and its socket gets `sent` without
  // an id (no frame asked for it).
  const reply = await httpSendOk(
    gateway,
    senderPhone.credential,
    userSend("superhero1", "c2", "over http"),
  );
  assert.equal(reply.seq, 2);
  assert.equal(reply.duplicate, false);
  assert.equal(reply.message.from, "superhero2");
  assert.equal(reply.message.clientMessageId, "c2");
  assert.deepEqual(await b1.next("sent"), {
    type: "sent",
    seq: 2,
    message: reply.message,
    duplicate: false,
  });
  assert.deepEqual(await b2.next("message"), { type: "message", seq: 2, message: reply.message });
  for (const socket of [a1, a2]) {
    assert.deepEqual(await socket.next("message"), {
      type: "message",
      seq: 3,
      message: reply.message,
    });
  }

  // No echo and no second copy anywhere.
  await expectMarkerNext(gateway, "superhero1", [a1, a2], 4);
  await expectMarkerNext(gateway, "superhero2", [b1, b2], 3);
});

Deno.test("a user's send cannot name its sender: `from` is refused over the socket and HTTP", async () => {
  await using gateway = await startTestGateway();
  const receiver = await login(gateway, "auto", "superhero1");
  const sender = await login(gateway, "auto", "superhero2");
  await using a = (await TestSocket.connect(gateway, receiver.credential)).socket;
  await using b = (await TestSocket.connect(gateway, sender.credential)).socket;
  const claimed = { ...userSend("superhero1", "c1", "forged"), from: "superhero3" };

  b.sendRaw(JSON.stringify({ type: "send", id: 7, ...claimed }));
  const error = await b.next("error");
  assert.equal(error.id, 7);
  assert.equal(error.errorCode, "ERR_BAD_REQUEST");
  assert.match(JSON.stringify(error.details), /from/);

  const refused = await httpSend(gateway, sender.credential, claimed);
  assert.equal(refused.status, 400);
  assert.equal(refused.body.errorCode, "ERR_BAD_REQUEST");
  assert.match(JSON.stringify(refused.body.details), /from/);

  // Neither created a message nor remembered its client id: the same id without `from` is a
  // first send, and takes the first seq of both streams.
  b.send({ type: "send", id: 8, ...userSend("superhero1", "c1", "genuine") });
  const sent = await b.next("sent");
  assert.equal(sent.duplicate, false);
  assert.equal(sent.seq, 1);
  assert.equal(sent.message.from, "superhero2");
  await expectMessages(a, [[1, "genuine"]]);
  await expectMarkerNext(gateway, "superhero1", [a], 2);
});

Deno.test("a send to oneself reaches one's other sessions; a refused send creates nothing and leaves its clientMessageId free", async () => {
  await using gateway = await startTestGateway();
  const phone = await login(gateway, "auto", "superhero1");
  const laptop = await login(gateway, "auto", "superhero1");
  await using s1 = (await TestSocket.connect(gateway, phone.credential)).socket;
  await using s2 = (await TestSocket.connect(gateway, laptop.credential)).socket;

  // One copy in the stream: `sent` on the sending session, `message` on the other.
  s1.send({ type: "send", id: 1, ...userSend("superhero1", "self", "note to self") });
  const sent = await s1.next("sent");
  assert.equal(sent.seq, 1);
  assert.deepEqual(await s2.next("message"), { type: "message", seq: 1, message: sent.message });

  // Refused: an unknown receiver (over the socket and HTTP), a message over 60 000 bytes.
  s1.send({ type: "send", id: 2, ...userSend("ghost", "refused-1", "hello?") });
  const unknown = await s1.next("error");
  assert.equal(unknown.id, 2);
  assert.equal(unknown.errorCode, "ERR_UID_NOT_FOUND");
  assert.deepEqual(unknown.details, { uids: ["ghost"] });
  assertError(
    await httpSend(gateway, phone.credential, userSend("ghost", "refused-2", "hello?")),
    404,
    "ERR_UID_NOT_FOUND",
  );
  assertError(
    await httpSend(gateway, phone.credential, {
      clientMessageId: "refused-3",
      receiverType: "user",
      receiver: "superhero2",
      message: { kind: "custom", customType: "blob", data: { blob: "x".repeat(60_500) } },
    }),
    413,
    "ERR_PAYLOAD_TOO_LARGE",
  );

  // None of them took a seq or kept its client id: each id now sends for the first time.
  for (const [i, clientMessageId] of ["refused-1", "refused-2", "refused-3"].entries()) {
    const reply = await httpSendOk(
      gateway,
      phone.credential,
      userSend("superhero2", clientMessageId, `retry ${i}`),
    );
    assert.equal(reply.duplicate, false);
    assert.equal(reply.seq, i + 2);
    assert.deepEqual(await s1.next("sent"), {
      type: "sent",
      seq: i + 2,
      message: reply.message,
      duplicate: false,
    });
  }
  await expectMessages(s2, [[2, "retry 0"], [3, "retry 1"], [4, "retry 2"]]);
  await expectMarkerNext(gateway, "superhero1", [s1, s2], 5);
});

Deno.test("a retried send (same clientMessageId over the socket and HTTP, also concurrently) creates one message", async () => {
  await using gateway = await startTestGateway();
  const receiver = await login(gateway, "auto", "superhero1");
  const sender = await login(gateway, "auto", "superhero2");
  await using a = (await TestSocket.connect(gateway, receiver.credential)).socket;
  await using b = (await TestSocket.connect(gateway, sender.credential)).socket;

  b.send({ type: "send", id: 1, ...userSend("superhero1", "retry-1", "once") });
  const first = await b.next("sent");
  assert.equal(first.duplicate, false);
  assert.equal(first.seq, 1);
  // The retry answers with the first result, whatever it carries this time.
  const overHttp = await httpSendOk(
    gateway,
    sender.credential,
    userSend("superhero1", "retry-1", "changed my mind"),
  );
  assert.deepEqual(overHttp, { message: first.message, seq: 1, duplicate: true });
  b.send({ type: "send", id: 2, ...userSend("superhero1", "retry-1", "once") });
  assert.deepEqual(await b.next("sent"), {
    type: "sent",
    id: 2,
    seq: 1,
    message: first.message,
    duplicate: true,
  });
  await expectMessages(a, [[1, "once"]]);

  // Three at once: one creates the message, the others answer with it.
  const body = userSend("superhero1", "retry-2", "raced");
  b.send({ type: "send", id: 3, ...body });
  const [h1, h2] = await Promise.all([
    httpSendOk(gateway, sender.credential, body),
    httpSendOk(gateway, sender.credential, body),
  ]);
  const onSocket: ServerFrameOf<"sent">[] = [];
  while (!onSocket.some((f) => f.id === 3)) onSocket.push(await b.next("sent"));
  const answers = [h1, h2, onSocket.find((f) => f.id === 3)!];
  assert.equal(answers.filter((r) => !r.duplicate).length, 1, JSON.stringify(answers));
  for (const answer of answers) {
    assert.equal(answer.seq, 2);
    assert.deepEqual(answer.message, h1.message);
  }
  // The sending socket shows the message once as new (its own `sent`, or the frame's answer).
  assert.equal(onSocket.filter((f) => !f.duplicate).length, 1, JSON.stringify(onSocket));
  await expectMessages(a, [[2, "raced"]]);

  // A client id is the sender's own: another user's send with the same id is a new message.
  const other = await login(gateway, "auto", "superhero3");
  const theirs = await httpSendOk(
    gateway,
    other.credential,
    userSend("superhero1", "retry-1", "another sender"),
  );
  assert.equal(theirs.duplicate, false);
  assert.notEqual(theirs.message.id, first.message.id);
  await expectMessages(a, [[3, "another sender"]]);
  await expectMarkerNext(gateway, "superhero1", [a], 4);
  await expectMarkerNext(gateway, "superhero2", [b], 3);
});

Deno.test("a send retried after a restart answers duplicate: true and creates nothing", async () => {
  await withKvFile(async (kvPath) => {
    const receiver = { credential: "", position: { epoch: "", seq: 0 } };
    const sender = { credential: "", position: { epoch: "", seq: 0 } };
    let first: ServerFrameOf<"sent">;
    {
      await using gateway = await startTestGateway({ kvPath });
      receiver.credential = (await login(gateway, "auto", "superhero1")).credential;
      sender.credential = (await login(gateway, "auto", "superhero2")).credential;
      const a = await connectResume(gateway, receiver.credential);
      const b = await connectResume(gateway, sender.credential);
      b.socket.send({ type: "send", id: 1, ...userSend("superhero1", "kept", "before the stop") });
      first = await b.socket.next("sent");
      await expectMessages(a.socket, [[1, "before the stop"]]);
      receiver.position = { epoch: a.connected.stream.epoch, seq: 1 };
      sender.position = { epoch: b.connected.stream.epoch, seq: 1 };
      await gateway.stop();
      assert.equal((await a.socket.closed).code, closeCodeTable.server_shutdown);
      assert.equal((await b.socket.closed).code, closeCodeTable.server_shutdown);
    }
    await using gateway = await startTestGateway({ kvPath });
    const retry = await httpSendOk(
      gateway,
      sender.credential,
      userSend("superhero1", "kept", "before the stop"),
    );
    assert.deepEqual(retry, { message: first.message, seq: 1, duplicate: true });

    const b = await connectResume(gateway, sender.credential, sender.position);
    await using _b = b.socket;
    assert.deepEqual(b.connected.stream, { ...sender.position, recovered: true, replayed: 0 });
    b.socket.send({ type: "send", id: 2, ...userSend("superhero1", "kept", "before the stop") });
    assert.deepEqual(await b.socket.next("sent"), {
      type: "sent",
      id: 2,
      seq: 1,
      message: first.message,
      duplicate: true,
    });
    const a = await connectResume(gateway, receiver.credential, receiver.position);
    await using _a = a.socket;
    assert.deepEqual(a.connected.stream, { ...receiver.position, recovered: true, replayed: 0 });
    await expectMarkerNext(gateway, "superhero1", [a.socket], 2);
  });
});

// ---- resume ----

Deno.test("a manual-mode user closed by its deadline resumes: what was sent meanwhile arrives once, in order, then live", async () => {
  // A 1 s liveness window: short, with room for a send inside it on a busy machine.
  await using gateway = await startTestGateway({ livenessWindowMs: 1_000 });
  const receiver = await login(gateway, "manual", "superhero1");
  const sender = await login(gateway, "auto", "superhero2");
  const first = await connectResume(gateway, receiver.credential);
  const epoch = first.connected.stream.epoch;
  assert.deepEqual(first.connected.stream, {
    epoch,
    seq: 0,
    recovered: false,
    reason: "no_position",
    replayed: 0,
  });
  await serverSend(gateway, ["superhero1"], "before");
  await expectMessages(first.socket, [[1, "before"]]);
  first.socket.send({ type: "app_state", id: 1, state: "background" });
  assert.notEqual((await first.socket.next("state")).backgroundDeadline, null);
  // Inside the background window the connection still gets messages live.
  await serverSend(gateway, ["superhero1"], "in background");
  await expectMessages(first.socket, [[2, "in background"]]);
  assert.equal((await first.socket.next("closing")).reason, "liveness_timeout");
  assert.equal((await first.socket.closed).code, closeCodeTable.liveness_timeout);

  await serverSend(gateway, ["superhero1"], "offline 1");
  await httpSendOk(gateway, sender.credential, userSend("superhero1", "u1", "offline 2"));
  await serverSend(gateway, ["superhero1"], "offline 3", "superhero3");

  const { socket, connected } = await connectResume(gateway, receiver.credential, {
    epoch,
    seq: 2,
  });
  await using _ = socket;
  assert.deepEqual(connected.stream, { epoch, seq: 5, recovered: true, replayed: 3 });
  const replayed = await expectMessages(socket, [[3, "offline 1"], [4, "offline 2"], [
    5,
    "offline 3",
  ]]);
  assert.equal(replayed[1].message.from, "superhero2");
  assert.equal(replayed[2].message.from, "superhero3");
  await expectMarkerNext(gateway, "superhero1", [socket], 6);
});

/**
 * Connects with `resume` while messages to superhero1 keep being sent, alternately by the
 * server API and by superhero2 over HTTP: from before the connect starts until `liveAfter`
 * sends after `connected` arrived. Returns the handshake and the texts sent, in order.
 */
async function resumeWhileSending(
  gateway: TestGateway,
  credential: string,
  senderCredential: string,
  resume: StreamPosition,
  options: { sentBefore: number; liveAfter: number },
): Promise<{ socket: TestSocket; connected: ServerFrameOf<"connected">; texts: string[] }> {
  const texts: string[] = [];
  let connectedAfter: number | null = null;
  let wakeConnect!: () => void;
  const readyToConnect = new Promise<void>((resolve) => wakeConnect = resolve);
  const sending = (async () => {
    for (let i = 0; connectedAfter === null || i < connectedAfter + options.liveAfter; i++) {
      const value = `racing ${i}`;
      if (i % 2 === 0) await serverSend(gateway, ["superhero1"], value);
      else await httpSendOk(gateway, senderCredential, userSend("superhero1", `race-${i}`, value));
      texts.push(value);
      if (i + 1 === options.sentBefore) wakeConnect();
    }
  })();
  await readyToConnect;
  const { socket, connected } = await connectResume(gateway, credential, resume);
  connectedAfter = texts.length;
  await sending;
  return { socket, connected, texts };
}

/**
 * A manual-mode connection that goes to background and sends no ping: the liveness deadline
 * closes it. Returns the position it had (nothing received: seq 0).
 */
async function closedByDeadline(
  gateway: TestGateway,
  credential: string,
): Promise<StreamPosition> {
  const { socket, connected } = await connectResume(gateway, credential);
  socket.send({ type: "app_state", state: "background" });
  assert.notEqual((await socket.next("state")).backgroundDeadline, null);
  assert.equal((await socket.next("closing")).reason, "liveness_timeout");
  assert.equal((await socket.closed).code, closeCodeTable.liveness_timeout);
  return { epoch: connected.stream.epoch, seq: connected.stream.seq };
}

Deno.test("messages sent while a resume connects: the replay and the live frames meet with no gap and no duplicate", async () => {
  await using gateway = await startTestGateway(); // 400 ms liveness window
  const receiver = await login(gateway, "manual", "superhero1");
  const sender = await login(gateway, "auto", "superhero2");
  const position = await closedByDeadline(gateway, receiver.credential);
  assert.equal(position.seq, 0);
  for (let i = 1; i <= 3; i++) await serverSend(gateway, ["superhero1"], `offline ${i}`);

  const { socket, connected, texts } = await resumeWhileSending(
    gateway,
    receiver.credential,
    sender.credential,
    position,
    { sentBefore: 3, liveAfter: 5 },
  );
  await using _ = socket;
  const head = connected.stream.seq;
  assert.equal(connected.stream.recovered, true);
  assert.equal(connected.stream.replayed, head);
  assert.ok(head >= 3 + 3, `the replay holds the sends made before the connect (head ${head})`);
  const expected = ["offline 1", "offline 2", "offline 3", ...texts].map(
    (value, i): [number, string] => [i + 1, value],
  );
  assert.ok(expected.length >= head + 5, "some arrived live, after the replay");
  await expectMessages(socket, expected);
  await expectMarkerNext(gateway, "superhero1", [socket], expected.length + 1);
});

Deno.test("a resume that reaches past the stream cache reads the store, also while messages keep coming", async () => {
  await using gateway = await startTestGateway({ streamCacheEvents: 4 });
  const receiver = await login(gateway, "auto", "superhero1");
  const sender = await login(gateway, "auto", "superhero2");
  const position = await positionOf(gateway, receiver.credential);
  const offline = Array.from({ length: 20 }, (_, i) => `offline ${i + 1}`);
  for (const value of offline) await serverSend(gateway, ["superhero1"], value);

  // From the store alone.
  {
    const { socket, connected } = await connectResume(gateway, receiver.credential, {
      ...position,
      seq: 1,
    });
    await using _ = socket;
    assert.deepEqual(connected.stream, { ...position, seq: 20, recovered: true, replayed: 19 });
    await expectMessages(socket, offline.slice(1).map((value, i) => [i + 2, value]));
    await expectMarkerNext(gateway, "superhero1", [socket], 21);
  }

  // From the store while the stream moves on.
  const { socket, connected, texts } = await resumeWhileSending(
    gateway,
    receiver.credential,
    sender.credential,
    { ...position, seq: 1 },
    { sentBefore: 2, liveAfter: 5 },
  );
  await using _ = socket;
  assert.equal(connected.stream.recovered, true);
  assert.equal(connected.stream.replayed, connected.stream.seq - 1);
  const all = [...offline, "marker 21", ...texts];
  await expectMessages(socket, all.slice(1).map((value, i) => [i + 2, value]));
  await expectMarkerNext(gateway, "superhero1", [socket], all.length + 1);
});

Deno.test("resume after a graceful restart on the same store: recovered, then the stream continues", async () => {
  await withKvFile(async (kvPath) => {
    let credential: string;
    let position: StreamPosition;
    {
      await using gateway = await startTestGateway({ kvPath });
      credential = (await login(gateway, "manual", "superhero1")).credential;
      const { socket, connected } = await connectResume(gateway, credential);
      await serverSend(gateway, ["superhero1"], "seen");
      await expectMessages(socket, [[1, "seen"]]);
      position = { epoch: connected.stream.epoch, seq: 1 };
      // Sent while connected but not yet processed by the client, then while it is gone.
      await serverSend(gateway, ["superhero1"], "unread");
      socket.close();
      await socket.closed;
      await serverSend(gateway, ["superhero1"], "offline");
      await gateway.stop();
    }
    await using gateway = await startTestGateway({ kvPath });
    const { socket, connected } = await connectResume(gateway, credential, position);
    await using _ = socket;
    assert.deepEqual(connected.stream, { ...position, seq: 3, recovered: true, replayed: 2 });
    await expectMessages(socket, [[2, "unread"], [3, "offline"]]);
    await expectMarkerNext(gateway, "superhero1", [socket], 4);
  });
});

Deno.test("resume inside a login handshake, and in a background connect: the replay follows `connected`", async () => {
  // No stream cache: each replay is read from the store.
  await using gateway = await startTestGateway({ streamCacheEvents: 0 });
  const position = await positionOf(gateway, (await login(gateway, "manual")).credential);
  for (let i = 1; i <= 3; i++) await serverSend(gateway, ["superhero1"], `m${i}`);

  // A socket opened without a credential logs in with its connect frame, and resumes.
  const socket = new TestSocket(gateway.wsUrl);
  await using _ = socket;
  await socket.opened;
  socket.send({
    type: "connect",
    login: { appId: DEV_APP.appId, uid: "superhero1", authKey: DEV_APP.authKey!, mode: "manual" },
    resume: { ...position, seq: 1 },
  });
  const connected = await socket.next("connected");
  assert.notEqual(connected.login, undefined);
  assert.deepEqual(connected.stream, { ...position, seq: 3, recovered: true, replayed: 2 });
  await expectMessages(socket, [[2, "m2"], [3, "m3"]]);
  await expectMarkerNext(gateway, "superhero1", [socket], 4);

  // A manual-mode connect in background announces a deadline: the replay waits behind the
  // same output gate as `connected`, and keeps its order.
  const { credential } = await login(gateway, "manual");
  const background = await TestSocket.open(gateway, credential);
  await using _background = background;
  background.send({ type: "connect", appState: "background", resume: { ...position, seq: 2 } });
  const bgConnected = await background.next("connected");
  assert.notEqual(bgConnected.backgroundDeadline, null);
  assert.deepEqual(bgConnected.stream, { ...position, seq: 4, recovered: true, replayed: 2 });
  await expectMessages(background, [[3, "m3"], [4, "marker 4"]]);
  await expectMarkerNext(gateway, "superhero1", [socket, background], 5);
});

Deno.test("a connection closed as slow_consumer resumes: every event arrives exactly once", async () => {
  await using gateway = await startTestGateway({
    maxBufferedBytes: 256 * 1024,
    maxBodyBytes: 1024 * 1024,
    // The stalled peer sends nothing: it must be closed for not reading, not as idle.
    idleTimeoutMs: 60_000,
  });
  const { credential } = await login(gateway, "auto", "superhero1");
  const peer = await StalledPeer.open(gateway, credential);
  try {
    // 50 KB per message: the kernel's socket buffers fill first, then the gateway's.
    const data = { blob: "x".repeat(50_000) };
    let last: SendMessageReply["recipients"][number];
    do {
      const res = await gateway.rest.server.sendMessage({
        params: APP,
        headers: API_KEY,
        body: { to: ["superhero1"], message: { kind: "custom", customType: "blob", data } },
      });
      assert.equal(res.status, 200);
      last = (res.body as SendMessageReply).recipients[0];
      assert.ok(last.seq < 1_000, "the peer is cut off");
    } while (last.deliveredTo === 1);
    await serverSend(gateway, ["superhero1"], "after the close");
    const head = last.seq + 1;

    const received = await peer.readToClose();
    assert.equal(received.code, closeCodeTable.slow_consumer);
    const connected = received.frames[0] as ServerFrameOf<"connected">;
    assert.equal(connected.type, "connected");
    const seen = received.frames.flatMap((f) => f.type === "message" ? [f.seq] : []);
    assert.deepEqual(seen, seen.map((_, i) => i + 1), "in order, no gap, before the close");
    assert.ok(seen.length >= 1 && seen.length < head, `saw ${seen.length} of ${head}`);
    assert.equal(received.frames.at(-1)?.type, "closing");

    const position = { epoch: connected.stream.epoch, seq: seen.length };
    const resumed = await connectResume(gateway, credential, position);
    await using _ = resumed.socket;
    assert.deepEqual(resumed.connected.stream, {
      ...position,
      seq: head,
      recovered: true,
      replayed: head - seen.length,
    });
    const rest = [];
    for (let seq = seen.length + 1; seq <= head; seq++) rest.push(await resumed.socket.next());
    assert.deepEqual(
      rest.map((f) => f.type === "message" ? [f.seq, textOf(f.message)] : f.type),
      [
        ...Array.from({ length: head - 1 - seen.length }, (_, i) => [
          seen.length + 1 + i,
          "custom:blob",
        ]),
        [head, "after the close"],
      ],
    );
    await expectMarkerNext(gateway, "superhero1", [resumed.socket], head + 1);
  } finally {
    peer.close();
  }
});

// ---- resumes that are not recovered, and the history route ----

/**
 * STREAM_MAX_EVENTS = 5 after 8 messages. With a large stream cache the dropped events are
 * still in memory, so only the retention rule keeps them out; with a small one the resume and
 * the history read the store.
 */
async function retentionByCount(streamCacheEvents: number): Promise<void> {
  await using gateway = await startTestGateway({ streamMaxEvents: 5, streamCacheEvents });
  const { credential } = await login(gateway, "auto", "superhero1");
  const position = await positionOf(gateway, credential);
  for (let i = 1; i <= 8; i++) await serverSend(gateway, ["superhero1"], `m${i}`);

  const { socket, connected } = await connectResume(gateway, credential, { ...position, seq: 1 });
  await using _ = socket;
  assert.deepEqual(connected.stream, {
    ...position,
    seq: 8,
    recovered: false,
    reason: "retention",
    replayed: 0,
  });

  // The 5 newest are retained; m2 and m3 are gone, and paging steps past them.
  const page1 = await history(gateway, credential, 1, 2);
  assert.deepEqual(pageOf(page1), [[4, "m4"], [5, "m5"]]);
  assert.deepEqual({ ...page1, events: [] }, {
    epoch: position.epoch,
    events: [],
    lastSeq: 8,
    nextAfter: 5,
    hasMore: true,
  });
  const page2 = await history(gateway, credential, page1.nextAfter, 2);
  assert.deepEqual(pageOf(page2), [[6, "m6"], [7, "m7"]]);
  assert.equal(page2.hasMore, true);
  const page3 = await history(gateway, credential, page2.nextAfter, 2);
  assert.deepEqual(pageOf(page3), [[8, "m8"]]);
  assert.equal(page3.nextAfter, 8);
  assert.equal(page3.hasMore, false);
  // From the start: the oldest retained first.
  assert.deepEqual(pageOf(await history(gateway, credential, 0, 100)), [
    [4, "m4"],
    [5, "m5"],
    [6, "m6"],
    [7, "m7"],
    [8, "m8"],
  ]);

  // Live events follow the stream's seq; a resume inside the retained part is recovered.
  await expectMarkerNext(gateway, "superhero1", [socket], 9);
  const inside = await connectResume(gateway, credential, { ...position, seq: 6 });
  await using _inside = inside.socket;
  assert.deepEqual(inside.connected.stream, { ...position, seq: 9, recovered: true, replayed: 3 });
  await expectMessages(inside.socket, [[7, "m7"], [8, "m8"], [9, "marker 9"]]);
}

Deno.test("resume past STREAM_MAX_EVENTS: recovered false (retention); the history pages what is retained", async () => {
  await retentionByCount(512);
});

Deno.test("resume past STREAM_MAX_EVENTS, read from the store: the same answers", async () => {
  await retentionByCount(2);
});

Deno.test("resume past STREAM_RETENTION_MS: recovered false (retention); the history leaves out expired events", async () => {
  const clock = new OffsetClock();
  await using gateway = await startTestGateway({ streamRetentionMs: 60_000 }, { clock });
  const { credential } = await login(gateway, "auto", "superhero1");
  const position = await positionOf(gateway, credential);
  await serverSend(gateway, ["superhero1"], "old 1");
  await serverSend(gateway, ["superhero1"], "old 2");
  clock.offset += 90_000;
  await serverSend(gateway, ["superhero1"], "fresh");

  const gone = await connectResume(gateway, credential, position);
  await using _gone = gone.socket;
  assert.deepEqual(gone.connected.stream, {
    ...position,
    seq: 3,
    recovered: false,
    reason: "retention",
    replayed: 0,
  });
  const page = await history(gateway, credential, 0, 100);
  assert.deepEqual(pageOf(page), [[3, "fresh"]]);
  assert.equal(page.nextAfter, 3);
  assert.equal(page.hasMore, false);
  await expectMarkerNext(gateway, "superhero1", [gone.socket], 4);

  // Only the events the resume needs count: after "old 2", everything is still retained.
  const kept = await connectResume(gateway, credential, { ...position, seq: 2 });
  await using _kept = kept.socket;
  assert.deepEqual(kept.connected.stream, { ...position, seq: 4, recovered: true, replayed: 2 });
  await expectMessages(kept.socket, [[3, "fresh"], [4, "marker 4"]]);
});

Deno.test("resume past REPLAY_LIMIT: recovered false (replay_limit); the history returns the whole gap", async () => {
  await using gateway = await startTestGateway({ replayLimit: 3 });
  const { credential } = await login(gateway, "auto", "superhero1");
  const position = await positionOf(gateway, credential);
  for (let i = 1; i <= 5; i++) await serverSend(gateway, ["superhero1"], `m${i}`);

  const far = await connectResume(gateway, credential, position);
  await using _far = far.socket;
  assert.deepEqual(far.connected.stream, {
    ...position,
    seq: 5,
    recovered: false,
    reason: "replay_limit",
    replayed: 0,
  });
  const page = await history(gateway, credential, 0, 100);
  assert.deepEqual(pageOf(page), [[1, "m1"], [2, "m2"], [3, "m3"], [4, "m4"], [5, "m5"]]);
  assert.deepEqual({ ...page, events: [] }, {
    epoch: position.epoch,
    events: [],
    lastSeq: 5,
    nextAfter: 5,
    hasMore: false,
  });
  await expectMarkerNext(gateway, "superhero1", [far.socket], 6);

  // A gap of exactly the limit is replayed.
  const near = await connectResume(gateway, credential, { ...position, seq: 3 });
  await using _near = near.socket;
  assert.deepEqual(near.connected.stream, { ...position, seq: 6, recovered: true, replayed: 3 });
  await expectMessages(near.socket, [[4, "m4"], [5, "m5"], [6, "marker 6"]]);
});

Deno.test("a gap over the replay byte budget (half of MAX_BUFFERED_BYTES): recovered false (replay_limit)", async () => {
  // 32 KB of replay at most; each message is about 15 KB.
  await using gateway = await startTestGateway({ maxBufferedBytes: 64 * 1024 });
  const { credential } = await login(gateway, "auto");
  const position = await positionOf(gateway, credential);
  for (let i = 1; i <= 3; i++) {
    const res = await gateway.rest.server.sendMessage({
      params: APP,
      headers: API_KEY,
      body: {
        to: ["superhero1"],
        message: { kind: "custom", customType: `blob${i}`, data: { blob: "x".repeat(15_000) } },
      },
    });
    assert.equal(res.status, 200);
  }
  const far = await connectResume(gateway, credential, position);
  await using _far = far.socket;
  assert.deepEqual(far.connected.stream, {
    ...position,
    seq: 3,
    recovered: false,
    reason: "replay_limit",
    replayed: 0,
  });
  const page = await history(gateway, credential, 0, 100);
  assert.deepEqual(pageOf(page), [[1, "custom:blob1"], [2, "custom:blob2"], [3, "custom:blob3"]]);
  await expectMarkerNext(gateway, "superhero1", [far.socket], 4);

  const near = await connectResume(gateway, credential, { ...position, seq: 2 });
  await using _near = near.socket;
  assert.deepEqual(near.connected.stream, { ...position, seq: 4, recovered: true, replayed: 2 });
  await expectMessages(near.socket, [[3, "custom:blob3"], [4, "marker 4"]]);
});

Deno.test("resume with another epoch or a position past the stream: not recovered, live from the head", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto", "superhero1");
  const position = await positionOf(gateway, credential);
  await serverSend(gateway, ["superhero1"], "m1");
  await serverSend(gateway, ["superhero1"], "m2");

  // Each case takes the head it meets (its marker moves the head on).
  const cases: Array<[(head: number) => StreamPosition, string]> = [
    [() => ({ epoch: "another-epoch", seq: 1 }), "epoch_changed"],
    [() => ({ epoch: "another-epoch", seq: 0 }), "epoch_changed"],
    [(head) => ({ ...position, seq: head + 1 }), "ahead_of_stream"],
  ];
  let head = 2;
  for (const [resumeAt, reason] of cases) {
    const resume = resumeAt(head);
    const { socket, connected } = await connectResume(gateway, credential, resume);
    await using _ = socket;
    assert.deepEqual(connected.stream, {
      ...position,
      seq: head,
      recovered: false,
      reason,
      replayed: 0,
    }, JSON.stringify(resume));
    await expectMarkerNext(gateway, "superhero1", [socket], ++head);
  }
});

// ---- groups ----

/** A server API call that must answer `status`; returns its body. */
async function serverCall(
  gateway: TestGateway,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${gateway.url}/v1/apps/${DEV_APP.appId}${path}`, {
    method,
    headers: { "content-type": "application/json", ...API_KEY },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

function assertError(
  res: { status: number; body: Record<string, unknown> },
  status: number,
  errorCode: string,
): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.errorCode, errorCode, JSON.stringify(res.body));
}

Deno.test("groups: create, read, add and remove members, with each refusal", async () => {
  await using gateway = await startTestGateway();
  const created = await serverCall(gateway, "POST", "/groups", {
    guid: "team",
    name: "The team",
    members: ["superhero1", "superhero2"],
  });
  assert.equal(created.status, 201);
  assert.deepEqual(created.body, {
    guid: "team",
    name: "The team",
    members: ["superhero1", "superhero2"],
    createdAt: created.body.createdAt,
  });
  assert.deepEqual((await serverCall(gateway, "GET", "/groups/team")).body, created.body);

  assertError(
    await serverCall(gateway, "POST", "/groups", { guid: "team" }),
    409,
    "ERR_GUID_ALREADY_EXISTS",
  );
  const unknownMember = await serverCall(gateway, "POST", "/groups", {
    guid: "other",
    members: ["superhero1", "ghost"],
  });
  assertError(unknownMember, 404, "ERR_UID_NOT_FOUND");
  assert.deepEqual(unknownMember.body.details, { uids: ["ghost"] });
  assertError(await serverCall(gateway, "GET", "/groups/other"), 404, "ERR_GUID_NOT_FOUND");

  // Adding: members already in are left as they are; unknown users and groups are refused.
  const added = await serverCall(gateway, "POST", "/groups/team/members", {
    members: ["superhero2", "superhero3"],
  });
  assert.equal(added.status, 200);
  assert.deepEqual(added.body.members, ["superhero1", "superhero2", "superhero3"]);
  assertError(
    await serverCall(gateway, "POST", "/groups/team/members", { members: ["ghost"] }),
    404,
    "ERR_UID_NOT_FOUND",
  );
  assertError(
    await serverCall(gateway, "POST", "/groups/nowhere/members", { members: ["superhero1"] }),
    404,
    "ERR_GUID_NOT_FOUND",
  );

  const removed = await serverCall(gateway, "DELETE", "/groups/team/members/superhero2");
  assert.equal(removed.status, 200);
  assert.deepEqual(removed.body.members, ["superhero1", "superhero3"]);
  const notMember = await serverCall(gateway, "DELETE", "/groups/team/members/superhero2");
  assertError(notMember, 403, "ERR_NOT_A_MEMBER");
  assertError(
    await serverCall(gateway, "DELETE", "/groups/nowhere/members/superhero1"),
    404,
    "ERR_GUID_NOT_FOUND",
  );
  assert.deepEqual((await serverCall(gateway, "GET", "/groups/team")).body.members, [
    "superhero1",
    "superhero3",
  ]);

  // Sends to a group that does not exist, or on behalf of a non-member.
  assertError(
    await serverCall(gateway, "POST", "/groups/nowhere/messages", { message: text("x") }),
    404,
    "ERR_GUID_NOT_FOUND",
  );
  assertError(
    await serverCall(gateway, "POST", "/groups/team/messages", {
      from: "superhero2",
      message: text("x"),
    }),
    403,
    "ERR_NOT_A_MEMBER",
  );
});

Deno.test("groups: at most 1000 members (ERR_GROUP_MEMBER_LIMIT)", async () => {
  const uids = Array.from({ length: 1_001 }, (_, i) => `member${i}`);
  await using gateway = await startTestGateway({
    apps: [{ ...DEV_APP, seedUsers: uids.map((uid) => ({ uid })) }],
  });
  const full = await serverCall(gateway, "POST", "/groups", {
    guid: "big",
    members: uids.slice(0, 1_000),
  });
  assert.equal(full.status, 201);
  assert.equal((full.body.members as string[]).length, 1_000);

  const over = await serverCall(gateway, "POST", "/groups/big/members", {
    members: [uids[1_000]],
  });
  assertError(over, 409, "ERR_GROUP_MEMBER_LIMIT");
  assert.deepEqual(over.body.details, { limit: 1_000 });
  // At the limit, adding a member already in changes nothing and is accepted.
  const again = await serverCall(gateway, "POST", "/groups/big/members", { members: [uids[0]] });
  assert.equal(again.status, 200);
  assert.equal((again.body.members as string[]).length, 1_000);
  // A group cannot be created over the limit either.
  assertError(
    await serverCall(gateway, "POST", "/groups", { guid: "bigger", members: uids }),
    400,
    "ERR_BAD_REQUEST",
  );
});

Deno.test("group messages reach every member's sessions with each member's own seq; a sender's session gets `sent`; members resume them", async () => {
  await using gateway = await startTestGateway();
  const created = await serverCall(gateway, "POST", "/groups", {
    guid: "team",
    members: ["superhero1", "superhero2", "superhero3"],
  });
  assert.equal(created.status, 201);
  const a1 = await login(gateway, "auto", "superhero1");
  const a2 = await login(gateway, "manual", "superhero1");
  const b1 = await login(gateway, "auto", "superhero2");
  const b2 = await login(gateway, "auto", "superhero2");
  const c = await login(gateway, "auto", "superhero3"); // offline: resumes later
  const outsider = await login(gateway, "auto", "superhero4");
  const cPosition = await positionOf(gateway, c.credential);
  await using socketA1 = (await TestSocket.connect(gateway, a1.credential)).socket;
  const socketA2 = await connectResume(gateway, a2.credential);
  await using socketB1 = (await TestSocket.connect(gateway, b1.credential)).socket;
  await using socketB2 = (await TestSocket.connect(gateway, b2.credential)).socket;
  await using socketOut = (await TestSocket.connect(gateway, outsider.credential)).socket;

  // superhero1's stream is ahead: each member's copy takes that member's own next seq.
  await serverSend(gateway, ["superhero1"], "direct 1");
  await serverSend(gateway, ["superhero1"], "direct 2");
  for (const socket of [socketA1, socketA2.socket]) {
    await expectMessages(socket, [[1, "direct 1"], [2, "direct 2"]]);
  }

  const fromServer = await serverCall(gateway, "POST", "/groups/team/messages", {
    message: text("to the team"),
  });
  assert.equal(fromServer.status, 200);
  const reply = fromServer.body as unknown as SendMessageReply;
  assert.deepEqual(reply.recipients, [
    { uid: "superhero1", seq: 3, deliveredTo: 2 },
    { uid: "superhero2", seq: 1, deliveredTo: 2 },
    { uid: "superhero3", seq: 1, deliveredTo: 0 },
  ]);
  const groupMessage = {
    kind: "text",
    text: "to the team",
    id: reply.id,
    from: null,
    receiverType: "group",
    to: "team",
    sentAt: reply.sentAt,
  };
  for (
    const [socket, seq] of [[socketA1, 3], [socketA2.socket, 3], [socketB1, 1], [
      socketB2,
      1,
    ]] as const
  ) {
    assert.deepEqual(await socket.next("message"), { type: "message", seq, message: groupMessage });
  }

  // superhero1's laptop goes away after seq 3, and resumes after the member's send below.
  socketA2.socket.close();
  await socketA2.socket.closed;

  // A member's send: its own session gets `sent`, its other session and every other member
  // get the message.
  socketB1.send({ type: "send", id: "g1", ...userSend("team", "g-1", "hi team", "group") });
  const sent = await socketB1.next("sent");
  assert.equal(sent.id, "g1");
  assert.equal(sent.seq, 2);
  assert.equal(sent.duplicate, false);
  assert.equal(sent.message.receiverType, "group");
  assert.equal(sent.message.to, "team");
  assert.equal(sent.message.from, "superhero2");
  assert.deepEqual(await socketB2.next("message"), {
    type: "message",
    seq: 2,
    message: sent.message,
  });
  assert.deepEqual(await socketA1.next("message"), {
    type: "message",
    seq: 4,
    message: sent.message,
  });

  // A non-member's send is refused, over the socket and over HTTP, and reaches nobody.
  socketOut.send({ type: "send", id: 5, ...userSend("team", "x-1", "let me in", "group") });
  const refused = await socketOut.next("error");
  assert.equal(refused.id, 5);
  assert.equal(refused.errorCode, "ERR_NOT_A_MEMBER");
  assertError(
    await httpSend(gateway, outsider.credential, userSend("team", "x-2", "let me in", "group")),
    403,
    "ERR_NOT_A_MEMBER",
  );
  assertError(
    await httpSend(gateway, outsider.credential, userSend("nowhere", "x-3", "hello?", "group")),
    404,
    "ERR_GUID_NOT_FOUND",
  );

  // The server API on behalf of a member: every session of every member gets a `message`
  // (no session sent it), and the reply lists the other members.
  const onBehalf = await serverCall(gateway, "POST", "/groups/team/messages", {
    from: "superhero2",
    message: text("on behalf of superhero2"),
  });
  assert.deepEqual(
    (onBehalf.body as unknown as SendMessageReply).recipients.map((r) => [r.uid, r.seq]),
    [["superhero1", 5], ["superhero3", 3]],
  );
  for (const [socket, seq] of [[socketA1, 5], [socketB1, 3], [socketB2, 3]] as const) {
    const frame = await socket.next("message");
    assert.deepEqual([frame.seq, textOf(frame.message), frame.message.from], [
      seq,
      "on behalf of superhero2",
      "superhero2",
    ]);
  }

  // A removed member no longer receives the group's messages.
  assert.equal(
    (await serverCall(gateway, "DELETE", "/groups/team/members/superhero2")).status,
    200,
  );
  const afterRemoval = await serverCall(gateway, "POST", "/groups/team/messages", {
    message: text("without superhero2"),
  });
  assert.deepEqual(
    (afterRemoval.body as unknown as SendMessageReply).recipients.map((r) => [r.uid, r.seq]),
    [["superhero1", 6], ["superhero3", 4]],
  );
  await expectMessages(socketA1, [[6, "without superhero2"]]);
  socketB1.send({ type: "send", id: "g2", ...userSend("team", "g-2", "still here?", "group") });
  const removedSend = await socketB1.next("error");
  assert.equal(removedSend.id, "g2");
  assert.equal(removedSend.errorCode, "ERR_NOT_A_MEMBER");
  await expectMarkerNext(gateway, "superhero2", [socketB1, socketB2], 4);
  await expectMarkerNext(gateway, "superhero4", [socketOut], 1);

  // Each member recovers the group's messages through its own stream.
  const laptop = await connectResume(gateway, a2.credential, {
    epoch: socketA2.connected.stream.epoch,
    seq: 3,
  });
  await using _laptop = laptop.socket;
  assert.equal(laptop.connected.stream.recovered, true);
  await expectMessages(laptop.socket, [
    [4, "hi team"],
    [5, "on behalf of superhero2"],
    [6, "without superhero2"],
  ]);
  const offline = await connectResume(gateway, c.credential, cPosition);
  await using _offline = offline.socket;
  assert.deepEqual(offline.connected.stream, {
    ...cPosition,
    seq: 4,
    recovered: true,
    replayed: 4,
  });
  const replayed = await expectMessages(offline.socket, [
    [1, "to the team"],
    [2, "hi team"],
    [3, "on behalf of superhero2"],
    [4, "without superhero2"],
  ]);
  assert.deepEqual(replayed[0].message, groupMessage);
  assert.deepEqual(replayed[1].message, sent.message);
  await expectMarkerNext(gateway, "superhero1", [socketA1, laptop.socket], 7);
});

// ---- a peer that stops reading ----

/**
 * A WebSocket peer on raw TCP that completes the handshake and then reads nothing until told
 * to, so what the gateway sends piles up in its buffers (`openStalledPeer`).
 */
class StalledPeer {
  readonly #conn: Deno.TcpConn;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async open(gateway: TestGateway, credential: string): Promise<StalledPeer> {
    return new StalledPeer(await openStalledPeer(gateway, credential));
  }

  /**
   * Reads everything the gateway wrote, up to its close frame: the text frames, decoded, and
   * the close code. (The gateway waits for the peer's own close frame before it ends the TCP
   * connection, so the stream itself does not end.)
   */
  async readToClose(): Promise<{
    frames: Array<ServerFrameOf<"message" | "connected" | "closing">>;
    code: number;
  }> {
    const frames: Array<ServerFrameOf<"message" | "connected" | "closing">> = [];
    const decoder = new TextDecoder();
    let buffer = new Uint8Array(1 << 20);
    let length = 0;
    let at = -1; // where the next frame starts, once the HTTP head is skipped
    const chunk = new Uint8Array(1 << 16);
    for (;;) {
      const n = await this.#conn.read(chunk);
      if (n === null) throw new Error("the connection ended before a close frame");
      if (length + n > buffer.length) {
        const grown = new Uint8Array(Math.max(buffer.length * 2, length + n));
        grown.set(buffer.subarray(0, length));
        buffer = grown;
      }
      buffer.set(chunk.subarray(0, n), length);
      length += n;
      if (at < 0) {
        const head = findHeadEnd(buffer, length);
        if (head < 0) continue;
        at = head;
      }
      for (;;) {
        if (at + 2 > length) break;
        const opcode = buffer[at] & 0x0f;
        let size = buffer[at + 1] & 0x7f;
        const header = size === 126 ? 4 : size === 127 ? 10 : 2;
        if (at + header > length) break;
        if (size === 126) size = (buffer[at + 2] << 8) | buffer[at + 3];
        else if (size === 127) {
          size = Number(new DataView(buffer.buffer, at + 2, 8).getBigUint64(0));
        }
        if (at + header + size > length) break;
        const payload = buffer.subarray(at + header, at + header + size);
        if (opcode === 0x8) return { frames, code: (payload[0] << 8) | payload[1] };
        if (opcode === 0x1) frames.push(JSON.parse(decoder.decode(payload)));
        at += header + size;
      }
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed already */ }
  }
}

/** The offset just past the `\r\n\r\n` that ends an HTTP head, or -1. */
function findHeadEnd(data: Uint8Array, length: number): number {
  for (let k = 0; k + 3 < length; k++) {
    if (data[k] === 13 && data[k + 1] === 10 && data[k + 2] === 13 && data[k + 3] === 10) {
      return k + 4;
    }
  }
  return -1;
}

Deno.test("a sender without a connection stays in memory until its send is appended: no seq is handed out twice", async () => {
  await using slow = await StallingSendLookups.open();
  await using gateway = await startTestGateway({}, { store: slow.store });
  const receiver = await login(gateway, "auto", "superhero1");
  const sender = await login(gateway, "auto", "superhero2");
  await using inbox = (await TestSocket.connect(gateway, receiver.credential)).socket;
  // Its position from the history route: the sender never connects, so nothing of it is left
  // to write when the sweep runs.
  const start = await history(gateway, sender.credential, 0, 1);
  const position = { epoch: start.epoch, seq: start.lastSeq };

  // The send waits on its idempotency lookup while the sender holds no connection; meanwhile
  // the eviction sweep runs (as if the sender had been idle for an hour) and the server API
  // sends to the sender.
  const stalled = slow.stallNext();
  const sending = httpSendOk(
    gateway,
    sender.credential,
    userSend("superhero1", "c1", "by the user"),
  );
  await stalled;
  gateway.services.users.evictIdle(Date.now() + 3_600_000);
  const acknowledged = await serverSend(gateway, ["superhero2"], "by the server");
  slow.release();
  const sent = await sending;
  await expectMessages(inbox, [[1, "by the user"]]);

  // Two messages, two seqs: the replay and the stored history agree on both.
  assert.equal(acknowledged.recipients[0].seq, 1);
  assert.equal(sent.seq, 2);
  const { socket, connected } = await connectResume(gateway, sender.credential, position);
  await using _ = socket;
  assert.deepEqual(connected.stream, { ...position, seq: 2, recovered: true, replayed: 2 });
  const replayed = await expectMessages(socket, [[1, "by the server"], [2, "by the user"]]);
  assert.deepEqual((await history(gateway, sender.credential, 0, 10)).events, replayed);
});

/**
 * A real Deno KV store whose idempotency lookup (`getSendRecord`) can be held: a send then
 * waits in the middle, as it would on a slow store.
 */
class StallingSendLookups implements AsyncDisposable {
  readonly store: GatewayStore;
  /** Set by `stallNext` until a lookup takes it. */
  #hold: { entered: () => void; gate: Promise<void> } | null = null;
  #release: () => void = () => {};

  private constructor(kv: KvStore) {
    const lookup = kv.getSendRecord.bind(kv);
    this.store = new Proxy(kv, {
      get: (target, prop) => {
        if (prop === "getSendRecord") {
          return async (...args: Parameters<GatewayStore["getSendRecord"]>) => {
            const hold = this.#hold;
            if (hold !== null) {
              this.#hold = null;
              hold.entered();
              await hold.gate;
            }
            return await lookup(...args);
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  static async open(): Promise<StallingSendLookups> {
    return new StallingSendLookups(await KvStore.open(":memory:"));
  }

  /** Holds the next lookup until `release`; resolves once a send waits on it. */
  stallNext(): Promise<void> {
    let entered!: () => void;
    const waiting = new Promise<void>((resolve) => entered = resolve);
    const gate = new Promise<void>((resolve) => this.#release = resolve);
    this.#hold = { entered, gate };
    return waiting;
  }

  release(): void {
    this.#release();
  }

  /** Lets a held lookup go (the gateway closes the store itself when it stops). */
  [Symbol.asyncDispose](): Promise<void> {
    this.release();
    return Promise.resolve();
  }
}
