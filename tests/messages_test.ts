/**
 * Messages from the server API to connected sessions over real WebSockets: delivery, per-user
 * sequence numbers, refused sends that deliver nothing, and the outbound buffer limit that
 * closes a peer which stops reading (`slow_consumer`).
 */
import assert from "node:assert/strict";
import { closeCodeTable, type SendMessageReply, type SessionView } from "../contract/mod.ts";
import { DEV_APP } from "../gateway/mod.ts";
import {
  API_KEY,
  delay,
  login,
  openStalledPeer,
  startTestGateway,
  type TestGateway,
  TestSocket,
} from "./support/harness.ts";

const APP = { appId: DEV_APP.appId };

async function send(
  gateway: TestGateway,
  body: Record<string, unknown>,
  headers: Record<string, string> = API_KEY,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${gateway.url}/v1/apps/${DEV_APP.appId}/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

Deno.test("a message reaches every connected session of each recipient, with its seq", async () => {
  await using gateway = await startTestGateway();
  const phone = await login(gateway, "auto", "superhero1");
  const laptop = await login(gateway, "manual", "superhero1");
  const other = await login(gateway, "auto", "superhero2");
  await login(gateway, "auto", "superhero3"); // logged in, never connected
  await using a = (await TestSocket.connect(gateway, phone.credential)).socket;
  await using b = (await TestSocket.connect(gateway, laptop.credential)).socket;
  await using c = (await TestSocket.connect(gateway, other.credential)).socket;

  const res = await gateway.rest.server.sendMessage({
    params: APP,
    headers: API_KEY,
    body: {
      to: ["superhero1", "superhero2", "superhero3"],
      from: "superhero4",
      message: { kind: "text", text: "hello" },
    },
  });
  assert.equal(res.status, 200);
  const reply = res.body as SendMessageReply;
  assert.match(reply.id, /^msg_/);
  assert.deepEqual(reply.recipients, [
    { uid: "superhero1", seq: 1, deliveredTo: 2 },
    { uid: "superhero2", seq: 1, deliveredTo: 1 },
    { uid: "superhero3", seq: 1, deliveredTo: 0 },
  ]);
  for (const [socket, to] of [[a, "superhero1"], [b, "superhero1"], [c, "superhero2"]] as const) {
    const frame = await socket.next("message");
    assert.deepEqual(frame, {
      type: "message",
      seq: 1,
      message: {
        kind: "text",
        text: "hello",
        id: reply.id,
        from: "superhero4",
        receiverType: "user",
        to,
        sentAt: reply.sentAt,
      },
    });
  }

  // The next message to superhero1 is seq 2; superhero2's stream is its own.
  const custom = await gateway.rest.server.sendMessage({
    params: APP,
    headers: API_KEY,
    body: {
      to: ["superhero1"],
      message: { kind: "custom", customType: "order", data: { orderId: 42, lines: [1, 2] } },
    },
  });
  assert.equal(custom.status, 200);
  const frame = await a.next("message");
  assert.equal(frame.seq, 2);
  assert.deepEqual(frame.message, {
    kind: "custom",
    customType: "order",
    data: { orderId: 42, lines: [1, 2] },
    id: (custom.body as SendMessageReply).id,
    from: null,
    receiverType: "user",
    to: "superhero1",
    sentAt: (custom.body as SendMessageReply).sentAt,
  });
  assert.equal((await b.next("message")).seq, 2);
  assert.deepEqual(c.unread(), []);
});

Deno.test("a refused send delivers nothing and uses no seq", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto", "superhero1");
  await using socket = (await TestSocket.connect(gateway, credential)).socket;
  const text = { kind: "text", text: "hi" };

  const unknown = await send(gateway, { to: ["superhero1", "nobody", "ghost"], message: text });
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.errorCode, "ERR_UID_NOT_FOUND");
  assert.deepEqual(unknown.body.details, { uids: ["nobody", "ghost"] });

  const unknownSender = await send(gateway, { to: ["superhero1"], from: "ghost", message: text });
  assert.equal(unknownSender.status, 404);
  assert.deepEqual(unknownSender.body.details, { uids: ["ghost"] });

  for (const headers of [{}, { apikey: "wrong" }] as Record<string, string>[]) {
    const res = await send(gateway, { to: ["superhero1"], message: text }, headers);
    assert.equal(res.status, 401);
    assert.equal(res.body.errorCode, "ERR_INVALID_API_KEY");
  }

  const bad: Array<[string, Record<string, unknown>, string]> = [
    ["duplicate recipient", { to: ["superhero1", "superhero1"], message: text }, "to"],
    ["no recipient", { to: [], message: text }, "to"],
    ["too many", { to: Array.from({ length: 1001 }, (_, i) => `u${i}`), message: text }, "to"],
    ["empty text", { to: ["superhero1"], message: { kind: "text", text: "" } }, "message"],
    ["unknown kind", { to: ["superhero1"], message: { kind: "video" } }, "message"],
    ["extra field", { to: ["superhero1"], message: text, priority: 1 }, ""],
    ["data not an object", {
      to: ["superhero1"],
      message: { kind: "custom", customType: "x", data: [1] },
    }, "message"],
  ];
  for (const [name, body, path] of bad) {
    const res = await send(gateway, body);
    assert.equal(res.status, 400, name);
    assert.equal(res.body.errorCode, "ERR_BAD_REQUEST", name);
    const issues = (res.body.details as { issues: Array<{ path: string }> }).issues;
    assert.ok(issues.some((i) => i.path.startsWith(path)), `${name}: ${JSON.stringify(issues)}`);
    assert.equal(JSON.stringify(res.body).includes("    at "), false, "no stack trace");
  }

  await delay(50);
  assert.deepEqual(socket.unread(), [], "nothing was delivered");
  const ok = await send(gateway, { to: ["superhero1"], message: text });
  assert.equal(ok.status, 200);
  assert.equal((await socket.next("message")).seq, 1, "refused sends took no seq");
});

/**
 * Reads the rest of a server → client stream up to the close frame and returns its code.
 * (The gateway waits for the peer's own close frame before it ends the TCP connection, so
 * reading to the end of the stream would wait for ever.)
 */
async function closeCodeOf(conn: Deno.TcpConn): Promise<number | null> {
  let data = new Uint8Array(0);
  let i = -1; // where the next frame starts, once the HTTP head is skipped
  const chunk = new Uint8Array(1 << 16);
  for (;;) {
    const n = await conn.read(chunk);
    if (n === null) return null;
    const grown = new Uint8Array(data.length + n);
    grown.set(data);
    grown.set(chunk.subarray(0, n), data.length);
    data = grown;
    if (i < 0) {
      for (let k = 0; k + 3 < data.length; k++) {
        if (data[k] === 13 && data[k + 1] === 10 && data[k + 2] === 13 && data[k + 3] === 10) {
          i = k + 4;
          break;
        }
      }
      if (i < 0) continue;
    }
    for (;;) {
      if (i + 2 > data.length) break;
      const opcode = data[i] & 0x0f;
      let length = data[i + 1] & 0x7f;
      let head = 2;
      if (i + (length === 126 ? 4 : length === 127 ? 10 : 2) > data.length) break;
      if (length === 126) [length, head] = [(data[i + 2] << 8) | data[i + 3], 4];
      else if (length === 127) {
        length = Number(new DataView(data.buffer, i + 2, 8).getBigUint64(0));
        head = 10;
      }
      if (i + head + length > data.length) break;
      if (opcode === 0x8) return (data[i + head] << 8) | data[i + head + 1];
      i += head + length;
    }
  }
}

Deno.test("a peer that stops reading is closed as slow_consumer; others are unaffected", async () => {
  await using gateway = await startTestGateway({
    maxBufferedBytes: 256 * 1024,
    maxBodyBytes: 1024 * 1024,
    // The reader sends no heartbeats while the sends fill the stalled peer's buffers.
    idleTimeoutMs: 60_000,
  });
  const slow = await login(gateway, "auto", "superhero1");
  const fast = await login(gateway, "auto", "superhero2");
  const conn = await openStalledPeer(gateway, slow.credential);
  await using reader = (await TestSocket.connect(gateway, fast.credential)).socket;
  await delay(50); // the stalled peer's handshake is processed

  // 50 KB per message (a stream stores messages up to 60 KB): the kernel's socket buffers
  // fill first, then the gateway's.
  const data = { blob: "x".repeat(50_000) };
  const delivered: number[] = [];
  for (let i = 0; i < 1_000 && delivered.at(-1) !== 0; i++) {
    const res = await send(gateway, {
      to: ["superhero1", "superhero2"],
      message: { kind: "custom", customType: "blob", data },
    });
    assert.equal(res.status, 200);
    const [toSlow, toFast] = (res.body as SendMessageReply).recipients;
    delivered.push(toSlow.deliveredTo);
    assert.equal(toFast.deliveredTo, 1);
    await reader.next("message");
  }
  assert.equal(delivered.at(-1), 0, "the stalled peer was cut off");
  assert.ok(delivered.length > 1, "it was written to until its buffer filled");

  const view = await gateway.rest.session.status({
    headers: { authorization: `Bearer ${slow.credential}` },
  });
  assert.equal(view.status, 200);
  assert.equal((view.body as SessionView).status, "disconnected");
  assert.equal((view.body as SessionView).lastDisconnectReason, "slow_consumer");
  assert.equal(await closeCodeOf(conn), closeCodeTable.slow_consumer);
  conn.close();
  assert.equal(reader.ws.readyState, WebSocket.OPEN);
});
