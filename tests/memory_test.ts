/**
 * Memory is bounded: the state objects of users seen once (a login and logout, a presence
 * read, a message to an offline user) leave memory after USER_EVICT_AFTER_MS; the users whose
 * sessions hold a connection stay.
 */
import assert from "node:assert/strict";
import { API_KEY, delay, login, startTestGateway, TestSocket } from "./support/harness.ts";

Deno.test("users churned through logins, presence reads and messages are evicted; connected ones stay", async () => {
  await using gateway = await startTestGateway({ userEvictAfterMs: 1_000, idleTimeoutMs: 30_000 });
  const users = gateway.services.users;
  const post = (path: string, body: unknown) =>
    fetch(`${gateway.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...API_KEY },
      body: JSON.stringify(body),
    }).then(async (res) => {
      assert.ok(res.status < 300, `${path}: ${res.status} ${await res.text()}`);
    });

  const { credential } = await login(gateway, "auto", "superhero1");
  await using held = (await TestSocket.connect(gateway, credential)).socket;

  const CHURN = 200;
  for (let i = 0; i < CHURN; i++) await post("/v1/apps/demo/users", { uid: `churn${i}` });
  // A message to each (offline: loaded for its seq), a presence read of each (not loaded).
  for (let i = 0; i < CHURN; i += 50) {
    await post("/v1/apps/demo/messages", {
      to: Array.from({ length: 50 }, (_, k) => `churn${i + k}`),
      message: { kind: "text", text: "hi" },
    });
  }
  for (let i = 0; i < CHURN; i++) {
    const res = await fetch(`${gateway.url}/v1/apps/demo/users/churn${i}/presence`, {
      headers: API_KEY,
    });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).online, false);
  }
  assert.ok(users.size > CHURN, `loaded by the sends: ${users.size}`);

  // One idle period, then two sweeps (every max(1 s, idle / 4)): the first gives back unused
  // seqs, the second evicts.
  await delay(3_500);
  assert.equal(users.size, 1, "only the connected user stays in memory");
  assert.ok(users.peek("demo", "superhero1") !== undefined);

  // An evicted user comes back from the store as it was: its seq continues.
  await post("/v1/apps/demo/messages", {
    to: ["churn0"],
    message: { kind: "text", text: "again" },
  });
  assert.equal((await users.get("demo", "churn0")).lastSeq, 2);
  held.send({ type: "ping", id: 1 });
  assert.equal((await held.until("pong")).id, 1, "the connected user's socket is untouched");
});
