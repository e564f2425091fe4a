/**
 * One test per error code the gateway emits, over HTTP and over the WebSocket, asserting the
 * status, the exact payload shape (no stack, nothing extra) and that nothing else broke.
 * The last test checks that every code of the contract is covered here or is client-only.
 */
import assert from "node:assert/strict";
import { type ErrorCode, errorCodes, statusOf } from "../contract/mod.ts";
import { DEV_APP, KvStore } from "../gateway/mod.ts";
import type { GatewayStore } from "../gateway/store/types.ts";
import {
  API_KEY,
  delay,
  login,
  OffsetClock,
  startTestGateway,
  type TestGateway,
  TestSocket,
} from "./support/harness.ts";

/** Codes only the client raises (SPEC §3: "raised by the client"). */
const CLIENT_ONLY: ErrorCode[] = ["NOT_INITIALIZED", "LOGIN_IN_PROGRESS"];
const seen = new Set<ErrorCode>();

/** Asserts an HTTP error reply: status, and a payload of exactly the contract's fields. */
async function expectHttpError(
  response: Response | Promise<Response>,
  code: ErrorCode,
): Promise<Record<string, unknown>> {
  const res = await response;
  const body = await res.json();
  assert.equal(res.status, statusOf(code), JSON.stringify(body));
  assert.equal(body.errorCode, code);
  assert.equal(typeof body.errorDescription, "string");
  for (const key of Object.keys(body)) {
    assert.ok(["errorCode", "errorDescription", "details"].includes(key), `unexpected ${key}`);
  }
  assert.ok(!JSON.stringify(body).includes("    at "), "no stack trace");
  assert.equal(res.headers.get("content-type")?.startsWith("application/json"), true);
  seen.add(code);
  return body;
}

function post(gateway: TestGateway, path: string, body: unknown, headers: HeadersInit = {}) {
  return fetch(`${gateway.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

const bearer = (credential: string) => ({ authorization: `Bearer ${credential}` });

Deno.test("ERR_INVALID_APP_ID: init, login and the server API with an unknown appId (404)", async () => {
  await using gateway = await startTestGateway();
  await expectHttpError(
    post(gateway, "/v1/apps/nope/init", { region: "us" }),
    "ERR_INVALID_APP_ID",
  );
  await expectHttpError(
    post(gateway, "/v1/apps/nope/login", { uid: "superhero1", authKey: "x".repeat(10) }),
    "ERR_INVALID_APP_ID",
  );
  await expectHttpError(
    post(gateway, "/v1/apps/nope/users", { uid: "u1" }, API_KEY),
    "ERR_INVALID_APP_ID",
  );
});

Deno.test("ERR_INVALID_REGION: init with another region (400)", async () => {
  await using gateway = await startTestGateway();
  await expectHttpError(
    post(gateway, "/v1/apps/demo/init", { region: "eu" }),
    "ERR_INVALID_REGION",
  );
  const ok = await post(gateway, "/v1/apps/demo/init", { region: "US" });
  assert.equal(ok.status, 200, "region matching is case-insensitive");
  await ok.body?.cancel();
});

Deno.test("ERR_BAD_REQUEST: validation lists path + message; non-JSON and empty bodies", async () => {
  await using gateway = await startTestGateway();
  const body = await expectHttpError(
    post(gateway, "/v1/apps/demo/init", { region: 5, subscriptionType: "everyone", extra: 1 }),
    "ERR_BAD_REQUEST",
  );
  const issues = (body.details as { issues: Array<{ path: string; message: string }> }).issues;
  const paths = issues.map((i) => i.path).sort();
  // An unknown field is named at its own path, not at the object's.
  assert.deepEqual(paths, ["extra", "region", "subscriptionType"]);
  for (const issue of issues) assert.equal(typeof issue.message, "string");
  await expectHttpError(post(gateway, "/v1/apps/demo/init", "{not json"), "ERR_BAD_REQUEST");
  await expectHttpError(post(gateway, "/v1/apps/demo/init", ""), "ERR_BAD_REQUEST");
  await expectHttpError(
    post(gateway, "/v1/apps/bad%20id!/init", { region: "us" }),
    "ERR_BAD_REQUEST",
  );
  await expectHttpError(fetch(`${gateway.url}/v1/ws`), "ERR_BAD_REQUEST");
  // An upgrade without Sec-WebSocket-Key is malformed: 400, not a 500. (Raw TCP: fetch may
  // not send Upgrade/Connection headers.)
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: gateway.port });
  await conn.write(new TextEncoder().encode(
    "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Connection: close\r\n\r\n",
  ));
  const reply = new TextDecoder().decode(
    (await new Response(conn.readable).arrayBuffer()) as ArrayBuffer,
  );
  assert.match(reply, /^HTTP\/1\.1 400/);
  assert.match(reply, /"errorCode":"ERR_BAD_REQUEST".*upgrade request is malformed/);
  seen.add("ERR_BAD_REQUEST");
});

Deno.test("ERR_BAD_REQUEST over the socket: an error frame, and the connection stays", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual");
  const { socket } = await TestSocket.connect(gateway, credential);
  await using _ = socket;
  socket.sendRaw("{nope");
  let error = await socket.next("error");
  assert.equal(error.errorCode, "ERR_BAD_REQUEST");
  socket.sendRaw(JSON.stringify({ type: "app_state", id: 3, state: "sideways" }));
  error = await socket.next("error");
  assert.equal(error.errorCode, "ERR_BAD_REQUEST");
  assert.equal(error.id, 3, "the reply carries the frame's id back");
  const issues = (error.details as { issues: Array<{ path: string }> }).issues;
  assert.deepEqual(issues.map((i) => i.path), ["state"]);
  socket.sendRaw(JSON.stringify({ type: "teleport" }));
  assert.equal((await socket.next("error")).errorCode, "ERR_BAD_REQUEST");
  socket.sendRaw(new Uint8Array([1, 2, 3]));
  assert.equal((await socket.next("error")).errorCode, "ERR_BAD_REQUEST");
  socket.send({ type: "ping", id: 9 });
  assert.equal((await socket.next("pong")).id, 9, "still connected and working");
  seen.add("ERR_BAD_REQUEST");
});

Deno.test("ERR_BAD_REQUEST before the handshake: only connect is read first", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  await using socket = await TestSocket.open(gateway, credential);
  socket.send({ type: "ping", id: 1 });
  const error = await socket.next("error");
  assert.equal(error.errorCode, "ERR_BAD_REQUEST");
  socket.send({ type: "connect" });
  await socket.next("connected");
});

Deno.test("ERR_INVALID_API_KEY: server API without or with a wrong apikey (401)", async () => {
  await using gateway = await startTestGateway();
  await expectHttpError(post(gateway, "/v1/apps/demo/users", { uid: "u1" }), "ERR_INVALID_API_KEY");
  await expectHttpError(
    post(gateway, "/v1/apps/demo/users", { uid: "u1" }, { apikey: "wrong_key_123" }),
    "ERR_INVALID_API_KEY",
  );
  await expectHttpError(
    fetch(`${gateway.url}/v1/apps/demo/users/superhero1/presence`),
    "ERR_INVALID_API_KEY",
  );
});

Deno.test("AUTH_ERR_AUTH_TOKEN_NOT_FOUND: unknown, revoked and expired tokens; bad credentials (401)", async () => {
  const clock = new OffsetClock();
  await using gateway = await startTestGateway({}, { clock });
  await expectHttpError(
    post(gateway, "/v1/apps/demo/login", { authToken: "at_unknown" }),
    "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
  );

  const created = await gateway.rest.server.createAuthToken({
    params: { appId: "demo", uid: "superhero1" },
    headers: API_KEY,
    body: { ttlSeconds: 60 },
  });
  assert.equal(created.status, 201);
  if (created.status !== 201) return;
  const token = created.body.authToken;
  const loggedIn = await gateway.rest.login({
    params: { appId: "demo" },
    body: { authToken: token },
  });
  assert.equal(loggedIn.status, 200);

  clock.offset = 61_000;
  await expectHttpError(
    post(gateway, "/v1/apps/demo/login", { authToken: token }),
    "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
  );
  clock.offset = 0;
  const revoked = await gateway.rest.server.revokeAuthToken({
    params: { appId: "demo", uid: "superhero1", authToken: token },
    headers: API_KEY,
  });
  assert.equal(revoked.status, 200);
  await expectHttpError(
    post(gateway, "/v1/apps/demo/login", { authToken: token }),
    "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
  );

  // Session credentials: forged, tampered, and expired.
  await expectHttpError(
    fetch(`${gateway.url}/v1/session`, { headers: bearer("forged.credential") }),
    "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
  );
  const { credential } = await login(gateway, "auto");
  const tampered = credential.slice(0, -2) + (credential.endsWith("AA") ? "BB" : "AA");
  await expectHttpError(
    fetch(`${gateway.url}/v1/session`, { headers: bearer(tampered) }),
    "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
  );
  clock.offset = gateway.config.sessionTtlMs + 1;
  await expectHttpError(
    fetch(`${gateway.url}/v1/session`, { headers: bearer(credential) }),
    "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
  );
  clock.offset = 0;
});

Deno.test("AUTH_ERR_AUTH_TOKEN_NOT_FOUND on the socket: error frame, then close 4007", async () => {
  await using gateway = await startTestGateway();
  const socket = await TestSocket.open(gateway, "not-a-credential");
  const error = await socket.next("error");
  assert.equal(error.errorCode, "AUTH_ERR_AUTH_TOKEN_NOT_FOUND");
  const closing = await socket.next("closing");
  assert.equal(closing.reason, "unauthorized");
  assert.equal((await socket.closed).code, 4007);
});

Deno.test("ERR_UID_NOT_FOUND: dev login and token creation for an unknown uid (404)", async () => {
  await using gateway = await startTestGateway();
  await expectHttpError(
    post(gateway, "/v1/apps/demo/login", { uid: "nobody", authKey: DEV_APP.authKey }),
    "ERR_UID_NOT_FOUND",
  );
  await expectHttpError(
    post(gateway, "/v1/apps/demo/users/nobody/auth_tokens", {}, API_KEY),
    "ERR_UID_NOT_FOUND",
  );
});

Deno.test("ERR_UID_ALREADY_EXISTS: creating a user twice (409)", async () => {
  await using gateway = await startTestGateway();
  const first = await post(gateway, "/v1/apps/demo/users", { uid: "dup", name: "Dup" }, API_KEY);
  assert.equal(first.status, 201);
  assert.equal((await first.json()).uid, "dup");
  await expectHttpError(
    post(gateway, "/v1/apps/demo/users", { uid: "dup" }, API_KEY),
    "ERR_UID_ALREADY_EXISTS",
  );
});

Deno.test("group codes: ERR_GUID_NOT_FOUND, ERR_GUID_ALREADY_EXISTS, ERR_NOT_A_MEMBER, ERR_GROUP_MEMBER_LIMIT", async () => {
  // A thousand users to create: the per-address HTTP budget must not get in the way.
  await using gateway = await startTestGateway({ httpRatePerSec: 100_000 });
  const groups = "/v1/apps/demo/groups";
  const created = await post(gateway, groups, { guid: "g1", members: ["superhero1"] }, API_KEY);
  assert.equal(created.status, 201);
  await created.body?.cancel();
  await expectHttpError(post(gateway, groups, { guid: "g1" }, API_KEY), "ERR_GUID_ALREADY_EXISTS");
  await expectHttpError(
    post(gateway, `${groups}/nope/messages`, { message: { kind: "text", text: "hi" } }, API_KEY),
    "ERR_GUID_NOT_FOUND",
  );
  // A user's send to a group they are not in, over HTTP and over the socket.
  const { credential } = await login(gateway, "auto", "superhero2");
  const send = {
    clientMessageId: "c1",
    receiverType: "group",
    receiver: "g1",
    message: { kind: "text", text: "hi" },
  } as const;
  await expectHttpError(
    post(gateway, "/v1/session/messages", send, bearer(credential)),
    "ERR_NOT_A_MEMBER",
  );
  await using socket = (await TestSocket.connect(gateway, credential)).socket;
  socket.send({ type: "send", id: 4, ...send });
  const refused = await socket.next("error");
  assert.deepEqual([refused.id, refused.errorCode], [4, "ERR_NOT_A_MEMBER"]);
  // 1 000 members at most: the 1 001st is refused and the group is unchanged.
  for (let i = 0; i < 1_000; i += 100) {
    const uids = Array.from({ length: 100 }, (_, j) => `m${i + j}`);
    await Promise.all(uids.map(async (uid) => {
      const res = await post(gateway, "/v1/apps/demo/users", { uid }, API_KEY);
      await res.body?.cancel();
    }));
    const res = await post(gateway, `${groups}/g1/members`, { members: uids }, API_KEY);
    assert.equal(res.status, i < 900 ? 200 : 409, `batch ${i}`);
    await (i < 900 ? res.body?.cancel() : expectHttpError(res, "ERR_GROUP_MEMBER_LIMIT"));
  }
  const group = await (await fetch(`${gateway.url}${groups}/g1`, { headers: API_KEY })).json();
  assert.equal(group.members.length, 901);
});

Deno.test("ERR_INVALID_AUTH_KEY: dev login with a wrong authKey (401)", async () => {
  await using gateway = await startTestGateway();
  await expectHttpError(
    post(gateway, "/v1/apps/demo/login", { uid: "superhero1", authKey: "wrong_auth_key" }),
    "ERR_INVALID_AUTH_KEY",
  );
});

Deno.test("ERROR_USER_NOT_LOGGED_IN: session calls without a credential (401)", async () => {
  await using gateway = await startTestGateway();
  for (const path of ["/v1/session/ping", "/v1/session/disconnect", "/v1/session/logout"]) {
    await expectHttpError(post(gateway, path, ""), "ERROR_USER_NOT_LOGGED_IN");
  }
  await expectHttpError(fetch(`${gateway.url}/v1/session`), "ERROR_USER_NOT_LOGGED_IN");
});

Deno.test("ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE: a second connect on a connected socket", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual");
  const { socket } = await TestSocket.connect(gateway, credential);
  await using _ = socket;
  socket.send({ type: "connect", id: "again" });
  const error = await socket.next("error");
  assert.equal(error.errorCode, "ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE");
  assert.equal(
    error.errorDescription,
    "Web sockets connect called while web sockets are already connected",
  );
  assert.equal(error.id, "again");
  socket.send({ type: "ping", id: 1 });
  await socket.next("pong");
  seen.add("ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE");
});

Deno.test("NO_WEBSOCKET_CONNECTION: HTTP ping and disconnect while not connected (409)", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual");
  await expectHttpError(
    post(gateway, "/v1/session/ping", "", bearer(credential)),
    "NO_WEBSOCKET_CONNECTION",
  );
  await expectHttpError(
    post(gateway, "/v1/session/disconnect", "", bearer(credential)),
    "NO_WEBSOCKET_CONNECTION",
  );
});

Deno.test("ERR_NOT_MANUAL_MODE: app ping and disconnect in auto mode, HTTP and socket (409)", async () => {
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "auto");
  const { socket } = await TestSocket.connect(gateway, credential);
  await using _ = socket;
  await expectHttpError(
    post(gateway, "/v1/session/ping", "", bearer(credential)),
    "ERR_NOT_MANUAL_MODE",
  );
  await expectHttpError(
    post(gateway, "/v1/session/disconnect", "", bearer(credential)),
    "ERR_NOT_MANUAL_MODE",
  );
  socket.send({ type: "ping", id: 1, source: "app" });
  assert.equal((await socket.next("error")).errorCode, "ERR_NOT_MANUAL_MODE");
  socket.send({ type: "disconnect", id: 2 });
  assert.equal((await socket.next("error")).errorCode, "ERR_NOT_MANUAL_MODE");
  socket.send({ type: "ping", id: 3 });
  assert.equal((await socket.next("pong")).id, 3, "the automatic heartbeat is accepted as always");
});

Deno.test("ERR_TOO_MANY_REQUESTS: HTTP budget per address (429)", async () => {
  await using gateway = await startTestGateway({ httpRatePerSec: 2 });
  const replies = [];
  for (let i = 0; i < 8; i++) {
    replies.push(await fetch(`${gateway.url}/openapi.json`));
  }
  const statuses = replies.map((r) => r.status);
  for (const r of replies.slice(0, -1)) await r.body?.cancel();
  assert.ok(statuses.slice(0, 4).every((s) => s === 200), String(statuses));
  await expectHttpError(replies.at(-1)!, "ERR_TOO_MANY_REQUESTS");
});

Deno.test("ERR_TOO_MANY_REQUESTS over the socket: error frames, then close 4008 (rate_limited)", async () => {
  await using gateway = await startTestGateway({ frameRatePerSec: 5 });
  const { credential } = await login(gateway, "auto");
  const { socket } = await TestSocket.connect(gateway, credential);
  // Paced by 1 ms: frames the client writes after the server's close frame make Deno drop the
  // TCP connection (the client then sees an abnormal close; the `closing` frame still arrives).
  for (let i = 0; i < 40 && socket.ws.readyState === WebSocket.OPEN; i++) {
    socket.send({ type: "ping", id: i });
    await delay(1);
  }
  const closed = await socket.closed;
  assert.equal(closed.code, 4008);
  const errors = socket.frames.filter((f) => f.type === "error");
  assert.ok(errors.length >= 1);
  assert.ok(errors.every((e) => e.type === "error" && e.errorCode === "ERR_TOO_MANY_REQUESTS"));
  assert.equal(socket.frames.at(-1)?.type, "closing");
  seen.add("ERR_TOO_MANY_REQUESTS");
});

Deno.test("ERR_PAYLOAD_TOO_LARGE: HTTP body (413) and socket frame (error, close 1009)", async () => {
  await using gateway = await startTestGateway({ maxBodyBytes: 1024, maxFrameBytes: 1024 });
  await expectHttpError(
    post(gateway, "/v1/apps/demo/init", { region: "us", pad: "x".repeat(5000) }),
    "ERR_PAYLOAD_TOO_LARGE",
  );
  const { credential } = await login(gateway, "auto");
  const { socket } = await TestSocket.connect(gateway, credential);
  socket.sendRaw(JSON.stringify({ type: "ping", id: "é".repeat(600) })); // 1200+ bytes in UTF-8
  // Refused from the frame's header, before its payload is read: close 1009 at once.
  assert.equal((await socket.closed).code, 1009);
  assert.deepEqual(socket.unread(), []);
  const view = await gateway.rest.session.status({ headers: bearer(credential) });
  assert.equal(
    (view.body as { lastDisconnectReason: string }).lastDisconnectReason,
    "payload_too_large",
  );
});

/** One raw HTTP/1.1 exchange over TCP: what node:http itself answers, before any route. */
async function rawExchange(
  gateway: TestGateway,
  request: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: gateway.port });
  try {
    await conn.write(new TextEncoder().encode(request));
    let text = "";
    const buffer = new Uint8Array(65_536);
    for (;;) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const [head, body] = [
      text.slice(0, text.indexOf("\r\n\r\n")),
      text.slice(text.indexOf("\r\n\r\n") + 4),
    ];
    return { status: Number(head.split(" ")[1]), body: JSON.parse(body) };
  } finally {
    try {
      conn.close();
    } catch { /* closed by the peer */ }
  }
}

function expectRawError(
  answer: { status: number; body: Record<string, unknown> },
  code: ErrorCode,
): void {
  assert.equal(answer.status, statusOf(code), JSON.stringify(answer.body));
  assert.equal(answer.body.errorCode, code);
  assert.equal(typeof answer.body.errorDescription, "string");
  seen.add(code);
}

Deno.test("ERR_HEADERS_TOO_LARGE: a request head over MAX_HEADER_BYTES (431)", async () => {
  await using gateway = await startTestGateway({ maxHeaderBytes: 4096 });
  const headers = Array.from({ length: 200 }, (_, i) => `x-h${i}: ${"v".repeat(30)}\r\n`).join("");
  const answer = await rawExchange(
    gateway,
    `GET /v1/session HTTP/1.1\r\nhost: x\r\n${headers}\r\n`,
  );
  expectRawError(answer, "ERR_HEADERS_TOO_LARGE");
  assert.equal((answer.body.details as { limitBytes: number }).limitBytes, 4096);
});

Deno.test("ERR_REQUEST_TIMEOUT: a request head that never ends (408)", async () => {
  await using gateway = await startTestGateway({ headersTimeoutMs: 300, requestTimeoutMs: 300 });
  const answer = await rawExchange(gateway, "GET / HTTP/1.1\r\nhost: x\r\n");
  expectRawError(answer, "ERR_REQUEST_TIMEOUT");
});

Deno.test("ERR_SERVICE_UNAVAILABLE: requests while the gateway drains (503)", async () => {
  await using gateway = await startTestGateway();
  gateway.services.health.draining = true;
  await expectHttpError(
    post(gateway, "/v1/apps/demo/init", { region: "us" }),
    "ERR_SERVICE_UNAVAILABLE",
  );
  const ready = await fetch(`${gateway.url}/readyz`);
  assert.equal(ready.status, 503);
  assert.equal((await ready.json()).checks.accepting, false);
  gateway.services.health.draining = false;
});

Deno.test("ERR_NOT_FOUND: unknown route, unknown token to revoke (404)", async () => {
  await using gateway = await startTestGateway();
  await expectHttpError(fetch(`${gateway.url}/v2/nothing`), "ERR_NOT_FOUND");
  await expectHttpError(
    fetch(`${gateway.url}/v1/apps/demo/users/superhero1/auth_tokens/at_none`, {
      method: "DELETE",
      headers: API_KEY,
    }),
    "ERR_NOT_FOUND",
  );
});

Deno.test("ERR_METHOD_NOT_ALLOWED: a known path with another method (405)", async () => {
  await using gateway = await startTestGateway();
  await expectHttpError(fetch(`${gateway.url}/v1/apps/demo/init`), "ERR_METHOD_NOT_ALLOWED");
  await expectHttpError(
    fetch(`${gateway.url}/v1/session`, { method: "DELETE" }),
    "ERR_METHOD_NOT_ALLOWED",
  );
});

Deno.test("ERR_INTERNAL: an exception answers 500 with no stack, and the gateway keeps serving", async () => {
  const kv = await KvStore.open(":memory:");
  let failing = true;
  const store = new Proxy(kv, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === "getUser") {
        return (...args: Parameters<GatewayStore["getUser"]>) => {
          if (failing) throw new Error("disk on fire at /secret/path.ts:1");
          return target.getUser(...args);
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await using gateway = await startTestGateway({}, { store });
  const body = await expectHttpError(
    post(gateway, "/v1/apps/demo/login", { uid: "superhero1", authKey: DEV_APP.authKey }),
    "ERR_INTERNAL",
  );
  assert.ok(!JSON.stringify(body).includes("secret"), "the error's text does not leak");
  failing = false;
  const { credential } = await login(gateway, "auto");
  assert.ok(credential.length > 0);
});

Deno.test("every error code of the contract is covered above or raised only by the client", () => {
  const expected = errorCodes.filter((c) => !CLIENT_ONLY.includes(c)).sort();
  assert.deepEqual([...seen].sort(), expected);
});
