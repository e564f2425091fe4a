/**
 * Typing indicators over real sockets (SPEC §6): relayed live to the receivers' connected
 * sessions (never to the sender's own), to a group's members only, refused with the frame's id
 * for an unknown user or group or a sender outside the group, ended by themselves after
 * TYPING_TIMEOUT_MS (short here) and when the sender's connection closes, and never replayed.
 *
 * "Nothing arrived" is checked with a fence: a ping answered by a pong with no frame before it,
 * on a socket that would already have been written to.
 */
import assert from "node:assert/strict";
import type { GatewayConfig } from "../gateway/config.ts";
import { DEV_APP } from "../gateway/mod.ts";
import { MAX_TYPING_PER_CONNECTION } from "../gateway/typing.ts";
import {
  API_KEY,
  delay,
  login,
  startTestGateway,
  type TestGateway,
  TestSocket,
} from "./support/harness.ts";

const APP = { appId: DEV_APP.appId };
const A = "superhero1";
const B = "superhero2";
const C = "superhero3";
const D = "superhero4";
const GROUP = "team";

async function gatewayWithGroup(config: Partial<GatewayConfig> = {}): Promise<TestGateway> {
  const gateway = await startTestGateway(config);
  const res = await gateway.rest.server.createGroup({
    params: APP,
    headers: API_KEY,
    body: { guid: GROUP, members: [A, B, C] },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return gateway;
}

/** A new session of `uid`, connected. */
async function connect(gateway: TestGateway, uid: string): Promise<TestSocket> {
  const { credential } = await login(gateway, "auto", uid);
  return (await TestSocket.connect(gateway, credential)).socket;
}

let fences = 0;
/** Nothing arrived on `socket` (beyond what was read): its next frame is the pong to a ping. */
async function nothingMore(socket: TestSocket, what: string): Promise<void> {
  const id = `fence-${++fences}`;
  socket.send({ type: "ping", id });
  const frame = await socket.next();
  assert.deepEqual(
    { type: frame.type, id: "id" in frame ? frame.id : undefined },
    { type: "pong", id },
    `${what}: got ${JSON.stringify(frame)}`,
  );
}

Deno.test("typing to a user reaches every session of the receiver, and no session of the sender", async () => {
  await using gateway = await gatewayWithGroup();
  await using a1 = await connect(gateway, A);
  await using a2 = await connect(gateway, A);
  await using b1 = await connect(gateway, B);
  await using b2 = await connect(gateway, B);
  await using c = await connect(gateway, C);

  const before = Date.now();
  a1.send({ type: "start_typing", id: 1, receiverType: "user", receiver: B });
  const started = [await b1.next("typing_started"), await b2.next("typing_started")];
  for (const frame of started) {
    assert.deepEqual(frame, {
      type: "typing_started",
      from: A,
      receiverType: "user",
      receiver: B,
      at: started[0].at,
    });
  }
  assert.ok(started[0].at >= before && started[0].at <= Date.now());
  await nothingMore(a1, "the sender (no reply unless refused)");
  await nothingMore(a2, "the sender's other session");
  await nothingMore(c, "a bystander");

  a1.send({ type: "end_typing", id: 2, receiverType: "user", receiver: B });
  for (const socket of [b1, b2]) {
    const ended = await socket.next("typing_ended");
    assert.equal(ended.from, A);
    assert.equal(ended.receiver, B);
    assert.ok(ended.at >= started[0].at);
  }

  // An end with no indicator running relays nothing. (The sender's frames are handled in order:
  // once C sees the next start, the end before it is done.)
  a1.send({ type: "end_typing", receiverType: "user", receiver: B });
  a1.send({ type: "start_typing", receiverType: "user", receiver: C });
  assert.equal((await c.next("typing_started")).receiver, C);
  await nothingMore(b1, "an end_typing with no indicator");
  await nothingMore(a1, "an end_typing with no indicator is not an error");
});

Deno.test("typing to a group reaches its members' sessions only, not the sender's other session", async () => {
  await using gateway = await gatewayWithGroup();
  await using a1 = await connect(gateway, A);
  await using a2 = await connect(gateway, A);
  await using b = await connect(gateway, B);
  await using c = await connect(gateway, C);
  await using d = await connect(gateway, D);

  a1.send({ type: "start_typing", receiverType: "group", receiver: GROUP });
  for (const socket of [b, c]) {
    const frame = await socket.next("typing_started");
    assert.deepEqual(frame, {
      type: "typing_started",
      from: A,
      receiverType: "group",
      receiver: GROUP,
      at: frame.at,
    });
  }
  await nothingMore(a2, "the sender's other session");
  await nothingMore(d, "a user outside the group");

  a1.send({ type: "end_typing", receiverType: "group", receiver: GROUP });
  for (const socket of [b, c]) assert.equal((await socket.next("typing_ended")).receiver, GROUP);
  await nothingMore(a2, "the sender's other session, at the end");
  await nothingMore(d, "a user outside the group, at the end");
});

Deno.test("refused typing: unknown uid or guid, not a member — the error carries the frame's id", async () => {
  await using gateway = await gatewayWithGroup();
  await using a = await connect(gateway, A);
  await using b = await connect(gateway, B);
  await using d = await connect(gateway, D);

  const refusals = [
    { socket: a, receiverType: "user", receiver: "nobody", code: "ERR_UID_NOT_FOUND" },
    { socket: a, receiverType: "group", receiver: "ghosts", code: "ERR_GUID_NOT_FOUND" },
    { socket: d, receiverType: "group", receiver: GROUP, code: "ERR_NOT_A_MEMBER" },
  ] as const;
  let id = 0;
  for (const { socket, receiverType, receiver, code } of refusals) {
    for (const type of ["start_typing", "end_typing"] as const) {
      const frameId = `${type}-${++id}`;
      socket.send({ type, id: frameId, receiverType, receiver });
      const error = await socket.next("error");
      assert.equal(error.id, frameId, JSON.stringify(error));
      assert.equal(error.errorCode, code, JSON.stringify(error));
    }
  }
  await nothingMore(b, "a member, when a non-member's typing is refused");
  // A number id comes back as a number.
  a.send({ type: "start_typing", id: 99, receiverType: "user", receiver: "nobody" });
  assert.equal((await a.next("error")).id, 99);
});

Deno.test("an indicator ends by itself TYPING_TIMEOUT_MS after its last start_typing", async () => {
  const TIMEOUT = 1_000;
  // (No heartbeats here: the idle timeout is out of the way.)
  await using gateway = await gatewayWithGroup({ typingTimeoutMs: TIMEOUT, idleTimeoutMs: 30_000 });
  await using a = await connect(gateway, A);
  await using b = await connect(gateway, B);

  a.send({ type: "start_typing", receiverType: "user", receiver: B });
  const started = await b.next("typing_started");
  const ended = await b.next("typing_ended", 5 * TIMEOUT);
  assert.ok(ended.at >= started.at + TIMEOUT, `ended ${ended.at - started.at} ms after start`);

  // A start_typing inside the indicator extends it; repeated within half the timeout it is not
  // relayed again (the receiver already shows it).
  a.send({ type: "start_typing", receiverType: "user", receiver: B });
  const again = await b.next("typing_started");
  await delay(TIMEOUT / 4);
  const extendedAt = Date.now();
  a.send({ type: "start_typing", receiverType: "user", receiver: B });
  const extendedEnd = await b.next("typing_ended", 5 * TIMEOUT);
  assert.ok(
    extendedEnd.at >= extendedAt + TIMEOUT,
    `ended ${extendedEnd.at - extendedAt} ms after the extending start_typing`,
  );
  assert.ok(extendedEnd.at >= again.at + TIMEOUT + TIMEOUT / 4);

  // Repeated after half the timeout or more, it is relayed again (a receiver that connected
  // meanwhile learns of it).
  a.send({ type: "start_typing", receiverType: "user", receiver: B });
  await b.next("typing_started");
  await delay(TIMEOUT / 2 + 20);
  a.send({ type: "start_typing", receiverType: "user", receiver: B });
  await b.next("typing_started");
  a.send({ type: "end_typing", receiverType: "user", receiver: B });
  await b.next("typing_ended");
});

Deno.test("the sender's connection closing ends each of its indicators", async () => {
  await using gateway = await gatewayWithGroup();
  await using a = await connect(gateway, A);
  await using b = await connect(gateway, B);
  await using c = await connect(gateway, C);

  a.send({ type: "start_typing", receiverType: "user", receiver: B });
  a.send({ type: "start_typing", receiverType: "group", receiver: GROUP });
  const startedForB = [await b.next("typing_started"), await b.next("typing_started")];
  assert.deepEqual(startedForB.map((f) => f.receiverType).sort(), ["group", "user"]);
  assert.equal((await c.next("typing_started")).receiverType, "group");

  const closedAt = Date.now();
  a.close();
  const endedForB = [await b.next("typing_ended"), await b.next("typing_ended")];
  assert.deepEqual(
    endedForB.map((f) => `${f.receiverType}:${f.receiver}`).sort(),
    [`group:${GROUP}`, `user:${B}`],
  );
  const endedForC = await c.next("typing_ended");
  assert.equal(endedForC.receiver, GROUP);
  // Well before the 5 s timeout: the close ended them.
  for (const frame of [...endedForB, endedForC]) assert.ok(frame.at < closedAt + 2_000);
});

Deno.test("typing is never stored: a resume replays the messages only", async () => {
  await using gateway = await gatewayWithGroup();
  await using a = await connect(gateway, A);
  await using c = await connect(gateway, C);
  const { credential } = await login(gateway, "auto", B);
  const first = await TestSocket.connect(gateway, credential);
  const position = { epoch: first.connected.stream.epoch, seq: first.connected.stream.seq };
  a.send({ type: "start_typing", receiverType: "user", receiver: B });
  await first.socket.next("typing_started");
  first.socket.close();
  await first.socket.closed;

  // While B is away: a message, and typing (started, ended, started again).
  const sent = await gateway.rest.server.sendMessage({
    params: APP,
    headers: API_KEY,
    body: { to: [B], message: { kind: "text", text: "while you were away" } },
  });
  assert.equal(sent.status, 200);
  a.send({ type: "end_typing", receiverType: "user", receiver: B });
  a.send({ type: "start_typing", receiverType: "user", receiver: B });
  a.send({ type: "start_typing", receiverType: "group", receiver: GROUP });
  // A's frames are handled in order: once C sees this one, those before it are done.
  await c.until("typing_started"); // the group's
  a.send({ type: "start_typing", receiverType: "user", receiver: C });
  assert.equal((await c.next("typing_started")).receiverType, "user");

  const { socket: back, connected } = await TestSocket.connect(gateway, credential, {
    resume: position,
  });
  await using _ = back;
  assert.equal(connected.stream.recovered, true);
  assert.equal(connected.stream.replayed, 1);
  const replayed = await back.next("message");
  assert.equal(replayed.message.kind === "text" && replayed.message.text, "while you were away");
  await nothingMore(back, "after the replay");
});

Deno.test(`a connection keeps at most ${MAX_TYPING_PER_CONNECTION} indicators: the oldest ends`, async () => {
  await using gateway = await gatewayWithGroup({ frameRatePerSec: 1_000 });
  const targets = Array.from({ length: MAX_TYPING_PER_CONNECTION + 1 }, (_, i) => `typed${i}`);
  for (const uid of targets) {
    const res = await gateway.rest.server.createUser({
      params: APP,
      headers: API_KEY,
      body: { uid },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
  }
  await using a = await connect(gateway, A);
  await using oldest = await connect(gateway, targets[0]);
  await using second = await connect(gateway, targets[1]);
  await using newest = await connect(gateway, targets.at(-1)!);

  for (const uid of targets.slice(0, -1)) {
    a.send({ type: "start_typing", receiverType: "user", receiver: uid });
  }
  await oldest.next("typing_started");
  await second.next("typing_started");
  // Refreshing the first makes the second the least recently started.
  a.send({ type: "start_typing", receiverType: "user", receiver: targets[0] });
  a.send({ type: "start_typing", receiverType: "user", receiver: targets.at(-1)! });
  assert.equal((await newest.next("typing_started")).receiver, targets.at(-1));
  const ended = await second.next("typing_ended");
  assert.equal(ended.from, A);
  await nothingMore(oldest, "the refreshed indicator keeps running");
  await nothingMore(a, "no error for the sender");
});
