/**
 * Logging in inside the WebSocket handshake: a socket opened without a credential sends
 * `connect` with `login` and gets `connected` with the login's reply, in one round trip.
 * Over real sockets against a real gateway.
 */
import assert from "node:assert/strict";
import { closeCodeTable, type SessionView } from "../contract/mod.ts";
import { DEV_APP } from "../gateway/mod.ts";
import {
  API_KEY,
  login,
  startTestGateway,
  type TestGateway,
  TestSocket,
} from "./support/harness.ts";

const devLogin = { appId: DEV_APP.appId, uid: "superhero1", authKey: DEV_APP.authKey! };

async function anonymous(gateway: TestGateway): Promise<TestSocket> {
  const socket = new TestSocket(gateway.wsUrl);
  await socket.opened;
  return socket;
}

async function expectRefused(socket: TestSocket, errorCode: string) {
  const error = await socket.next("error");
  assert.equal(error.errorCode, errorCode);
  assert.equal(error.id, 1);
  assert.equal((await socket.next("closing")).reason, "unauthorized");
  assert.equal((await socket.closed).code, closeCodeTable.unauthorized);
}

Deno.test("socket login: connect with login creates the session and connects it", async () => {
  await using gateway = await startTestGateway();
  await using socket = await anonymous(gateway);
  socket.send({ type: "connect", id: 1, login: { ...devLogin, mode: "manual" } });
  const connected = await socket.next("connected");
  assert.equal(connected.id, 1);
  assert.equal(connected.mode, "manual");
  assert.equal(connected.uid, "superhero1");
  assert.equal(connected.login?.user.uid, "superhero1");
  assert.equal(connected.login?.session.sessionId, connected.sessionId);

  // The credential is a real one: the session routes accept it and see the connection.
  const credential = connected.login!.session.credential;
  const view = await gateway.rest.session.status({
    headers: { authorization: `Bearer ${credential}` },
  });
  assert.equal(view.status, 200);
  assert.equal((view.body as SessionView).status, "connected");
  socket.send({ type: "ping", id: 2, source: "app" });
  assert.equal((await socket.next("pong")).id, 2);

  // …and a later socket reconnects with it, replacing this one.
  const again = await TestSocket.connect(gateway, credential);
  await using _ = again.socket;
  assert.equal(again.connected.sessionId, connected.sessionId);
  assert.equal(again.connected.login, undefined);
  assert.equal((await socket.next("closing")).reason, "replaced");
});

Deno.test("socket login: with an auth token from the server API", async () => {
  await using gateway = await startTestGateway();
  const token = await gateway.rest.server.createAuthToken({
    params: { appId: DEV_APP.appId, uid: "superhero2" },
    headers: API_KEY,
    body: {},
  });
  assert.equal(token.status, 201);
  await using socket = await anonymous(gateway);
  const authToken = (token.body as { authToken: string }).authToken;
  socket.send({ type: "connect", login: { appId: DEV_APP.appId, authToken } });
  const connected = await socket.next("connected");
  assert.equal(connected.uid, "superhero2");
  assert.equal(connected.mode, "auto");
});

Deno.test("socket login: refused logins answer the login's error code, then close 4007", async () => {
  await using gateway = await startTestGateway();
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ ...devLogin, authKey: "wrong" }, "ERR_INVALID_AUTH_KEY"],
    [{ ...devLogin, appId: "nope" }, "ERR_INVALID_APP_ID"],
    [{ ...devLogin, uid: "ghost" }, "ERR_UID_NOT_FOUND"],
    [{ appId: DEV_APP.appId, authToken: "at_unknown" }, "AUTH_ERR_AUTH_TOKEN_NOT_FOUND"],
  ];
  for (const [body, code] of cases) {
    await using socket = await anonymous(gateway);
    socket.sendRaw(JSON.stringify({ type: "connect", id: 1, login: body }));
    await expectRefused(socket, code);
  }
  // Without a credential, a connect without login: no logged-in user (SPEC §3).
  await using bare = await anonymous(gateway);
  bare.send({ type: "connect", id: 1 });
  await expectRefused(bare, "ERROR_USER_NOT_LOGGED_IN");
});

Deno.test("socket login: malformed or misplaced logins get ERR_BAD_REQUEST and the socket stays", async () => {
  await using gateway = await startTestGateway();
  await using socket = await anonymous(gateway);
  socket.sendRaw(JSON.stringify({ type: "connect", id: 1, login: { uid: "superhero1" } }));
  const error = await socket.next("error");
  assert.equal(error.errorCode, "ERR_BAD_REQUEST");
  socket.send({ type: "connect", id: 2, login: devLogin });
  assert.equal((await socket.next("connected")).id, 2);

  // A socket opened with a credential must not log in again.
  const { credential } = await login(gateway, "auto", "superhero3");
  await using withCredential = await TestSocket.open(gateway, credential);
  withCredential.send({ type: "connect", id: 3, login: devLogin });
  const refused = await withCredential.next("error");
  assert.equal(refused.errorCode, "ERR_BAD_REQUEST");
  assert.equal(refused.id, 3);
  withCredential.send({ type: "connect", id: 4 });
  assert.equal((await withCredential.next("connected")).uid, "superhero3");
});
