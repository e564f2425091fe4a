/**
 * The conformance suite every store engine passes (as hono runs one router test file against
 * every router). `tests/store_kv_test.ts` runs it on Deno KV; a Redis engine adds one line.
 */
import assert from "node:assert/strict";
import { initialLiveness } from "../gateway/liveness.ts";
import type { GatewayStore, SessionRecord } from "../gateway/store/types.ts";

export function storeConformance(engine: string, open: () => Promise<GatewayStore>): void {
  const test = (name: string, fn: (store: GatewayStore) => Promise<void>) =>
    Deno.test(`store ${engine}: ${name}`, async () => {
      const store = await open();
      try {
        await fn(store);
      } finally {
        store.close();
      }
    });

  test("users are created once and read back", async (store) => {
    const user = { uid: "u1", name: "One", createdAt: 1 };
    assert.equal(await store.createUser("app", user), true);
    assert.equal(await store.createUser("app", { ...user, name: "Other" }), false);
    assert.deepEqual(await store.getUser("app", "u1"), user);
    assert.equal(await store.getUser("other-app", "u1"), null);
  });

  test("auth tokens are stored, read and deleted only by their owner", async (store) => {
    const record = { appId: "app", uid: "u1", tokenHash: "h_1", createdAt: 1, expiresAt: null };
    await store.putAuthToken(record);
    assert.deepEqual(await store.getAuthToken("h_1"), record);
    assert.equal(await store.deleteAuthToken("app", "u2", "h_1"), false);
    assert.equal(await store.deleteAuthToken("app", "u1", "h_1"), true);
    assert.equal(await store.getAuthToken("h_1"), null);
    assert.equal(await store.deleteAuthToken("app", "u1", "h_1"), false);
  });

  test("user states: sessions put and deleted; held users listed", async (store) => {
    const session = (id: string): SessionRecord => ({
      sessionId: id,
      mode: "manual",
      createdAt: 5,
      lastPingAt: 4,
      liveness: { ...initialLiveness("manual"), connected: true, deadline: 99 },
    });
    assert.equal(await store.loadUserState("app", "u1"), null);
    await store.saveUserStates([
      {
        appId: "app",
        uid: "u1",
        meta: { lastSeenAt: null, held: true },
        putSessions: [session("s1"), session("s2")],
        deleteSessions: [],
      },
      {
        appId: "app",
        uid: "u2",
        meta: { lastSeenAt: 3, held: false },
        putSessions: [],
        deleteSessions: [],
      },
    ]);
    const loaded = await store.loadUserState("app", "u1");
    assert.deepEqual(loaded?.sessions.map((s) => s.sessionId).sort(), ["s1", "s2"]);
    assert.equal(loaded?.sessions[0].liveness.deadline, 99);
    assert.deepEqual(await store.listHeldUsers(), [{ appId: "app", uid: "u1" }]);

    await store.saveUserStates([{
      appId: "app",
      uid: "u1",
      meta: { lastSeenAt: 7, held: false },
      putSessions: [],
      deleteSessions: ["s1"],
    }]);
    const after = await store.loadUserState("app", "u1");
    assert.deepEqual(after?.sessions.map((s) => s.sessionId), ["s2"]);
    assert.equal(after?.meta.lastSeenAt, 7);
    assert.deepEqual(await store.listHeldUsers(), []);
  });

  test("a group commit larger than one engine batch is written whole", async (store) => {
    const changes = Array.from({ length: 600 }, (_, i) => ({
      appId: "app",
      uid: `bulk${i}`,
      meta: { lastSeenAt: null, held: true },
      putSessions: [{
        sessionId: `s${i}`,
        mode: "auto" as const,
        createdAt: i,
        lastPingAt: null,
        liveness: initialLiveness("auto"),
      }],
      deleteSessions: [],
    }));
    await store.saveUserStates(changes);
    assert.equal((await store.listHeldUsers()).length, 600);
    assert.equal((await store.loadUserState("app", "bulk599"))?.sessions[0].createdAt, 599);
  });
}
