/**
 * Durability: a gateway stopped while a user is inside the background window, and started
 * again on the same Deno KV file, still fires (or records) the deadline.
 */
import assert from "node:assert/strict";
import type { SessionView } from "../contract/mod.ts";
import { delay, login, startTestGateway, type TestGateway, TestSocket } from "./support/harness.ts";

const WINDOW = 1_500;

async function status(gateway: TestGateway, credential: string): Promise<SessionView> {
  const res = await gateway.rest.session.status({
    headers: { authorization: `Bearer ${credential}` },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as SessionView;
}

async function backgroundThenStop(kvPath: string) {
  const gateway = await startTestGateway({ kvPath, livenessWindowMs: WINDOW });
  const manual = await login(gateway, "manual");
  const auto = await login(gateway, "auto", "superhero2");
  const { socket } = await TestSocket.connect(gateway, manual.credential);
  const { socket: foreground } = await TestSocket.connect(gateway, auto.credential);
  socket.send({ type: "app_state", state: "background" });
  const deadline = (await socket.next("state")).backgroundDeadline!;
  await gateway.stop();
  assert.equal((await socket.closed).code, 1012);
  assert.equal((await foreground.closed).code, 1012);
  return { deadline, manual, auto };
}

Deno.test("restart inside the background window: the pending deadline still fires", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const kvPath = `${dir}/gateway.kv`;
    const { deadline, manual, auto } = await backgroundThenStop(kvPath);
    assert.ok(Date.now() < deadline, "restarted inside the window");

    await using gateway = await startTestGateway({ kvPath, livenessWindowMs: WINDOW });
    // Only the user inside a window is held: the stop recorded the foreground session closed.
    assert.equal(gateway.revived, 1);
    const during = await status(gateway, manual.credential);
    assert.equal(during.status, "connected", "the session is held until its deadline");
    assert.equal(during.backgroundDeadline, deadline);
    // A foreground session's socket got 1012: recorded as closed by the shutdown.
    const fg = await status(gateway, auto.credential);
    assert.equal(fg.status, "disconnected");
    assert.equal(fg.lastDisconnectReason, "server_shutdown");

    await delay(Math.max(0, deadline - Date.now()) + 100);
    const after = await status(gateway, manual.credential);
    assert.equal(after.status, "disconnected");
    assert.equal(after.lastDisconnectReason, "liveness_timeout");
    assert.ok(after.lastDisconnectAt! >= deadline, "never early, across a restart too");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restart after the deadline passed: recorded as closed at the deadline", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const kvPath = `${dir}/gateway.kv`;
    const { deadline, manual } = await backgroundThenStop(kvPath);
    await delay(Math.max(0, deadline - Date.now()) + 200);

    await using gateway = await startTestGateway({ kvPath, livenessWindowMs: WINDOW });
    const view = await status(gateway, manual.credential);
    assert.equal(view.status, "disconnected");
    assert.equal(view.lastDisconnectReason, "liveness_timeout");
    assert.equal(view.lastDisconnectAt, deadline);
    assert.equal(view.backgroundDeadline, null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restart: sessions and users survive; a logged-out session stays revoked", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const kvPath = `${dir}/gateway.kv`;
    let kept: string, gone: string;
    {
      await using gateway = await startTestGateway({ kvPath });
      kept = (await login(gateway, "auto")).credential;
      gone = (await login(gateway, "auto")).credential;
      const out = await gateway.rest.session.logout({
        headers: { authorization: `Bearer ${gone}` },
      });
      assert.equal(out.status, 200);
    }
    await using gateway = await startTestGateway({ kvPath });
    assert.equal((await status(gateway, kept)).status, "disconnected");
    const { socket, connected } = await TestSocket.connect(gateway, kept);
    await using _ = socket;
    assert.equal(connected.uid, "superhero1");
    const res = await gateway.rest.session.status({ headers: { authorization: `Bearer ${gone}` } });
    assert.equal(res.status, 401);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
