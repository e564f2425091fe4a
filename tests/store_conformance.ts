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
        await store.close();
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

  const streamChange = (uid: string, from: number, count: number, extra: object = {}) => ({
    appId: "app",
    uid,
    meta: { lastSeenAt: null, held: false, seqReservedTo: from + count - 1, epoch: "e1" },
    putSessions: [],
    deleteSessions: [],
    appendEvents: Array.from({ length: count }, (_, i) => ({
      seq: from + i,
      at: 1_000 + from + i,
      body: JSON.stringify({ n: from + i }),
    })),
    retentionMs: 3_600_000,
    ...extra,
  });

  test("streams: events are read back after a seq, in order, a page at a time", async (store) => {
    await store.saveUserStates([streamChange("u1", 1, 5), streamChange("u2", 1, 2)]);
    await store.saveUserStates([streamChange("u1", 6, 3)]);
    const all = await store.readEvents("app", "u1", 0, 100);
    assert.deepEqual(all.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(all[6], { seq: 7, at: 1_007, body: '{"n":7}' });
    assert.deepEqual((await store.readEvents("app", "u1", 3, 2)).map((e) => e.seq), [4, 5]);
    assert.deepEqual(await store.readEvents("app", "u1", 8, 10), []);
    assert.deepEqual((await store.readEvents("app", "u2", 0, 10)).map((e) => e.seq), [1, 2]);
    assert.deepEqual(await store.readEvents("other", "u1", 0, 10), []);
    const state = await store.loadUserState("app", "u1");
    assert.equal(state?.meta.seqReservedTo, 8);
    assert.equal(state?.meta.epoch, "e1");
  });

  test("streams: dropped events are gone; the rest stay", async (store) => {
    await store.saveUserStates([streamChange("u1", 1, 6)]);
    await store.saveUserStates([streamChange("u1", 7, 1, { dropEvents: { from: 1, below: 4 } })]);
    assert.deepEqual((await store.readEvents("app", "u1", 0, 10)).map((e) => e.seq), [4, 5, 6, 7]);
  });

  test("streams: a burst larger than one engine batch is written whole", async (store) => {
    const body = "x".repeat(2_000);
    const change = streamChange("u1", 1, 1_500);
    change.appendEvents.forEach((e) => e.body = body);
    await store.saveUserStates([change]);
    const read = await store.readEvents("app", "u1", 0, 2_000);
    assert.equal(read.length, 1_500);
    assert.equal(read[1_499].seq, 1_500);
  });

  test("every field comes back as written: any event body, sessions, meta, send records", async (store) => {
    const bodies = [
      '{"a":1}',
      "",
      " ",
      "two words",
      "1 2 3",
      "line\nbreak\r\n",
      "tab\there",
      "!bang",
      "=3",
      "ünï €😀 中文",
      '"json"',
      "x".repeat(30_000),
    ];
    const session: SessionRecord = {
      sessionId: "s 1:ü",
      mode: "manual",
      createdAt: 3,
      lastPingAt: 4,
      liveness: { ...initialLiveness("manual"), connected: true, deadline: 1_234 },
      deadlineBound: 5_000,
    };
    const record = { clientMessageId: "c\n 1", body: '{"x":"y\\n ü"}', seq: 2, at: 101 };
    const meta = { lastSeenAt: 5, held: true, seqReservedTo: bodies.length, epoch: "e 1" };
    await store.saveUserStates([{
      appId: "app",
      uid: "u1",
      meta,
      putSessions: [session],
      deleteSessions: ["never-written"],
      appendEvents: bodies.map((body, i) => ({ seq: i + 1, at: 100 + i, body })),
      sendRecords: [record],
      retentionMs: 3_600_000,
    }]);
    const events = await store.readEvents("app", "u1", 0, 100);
    assert.deepEqual(events, bodies.map((body, i) => ({ seq: i + 1, at: 100 + i, body })));
    assert.deepEqual(await store.loadUserState("app", "u1"), {
      appId: "app",
      uid: "u1",
      meta,
      sessions: [session],
    });
    assert.deepEqual(await store.getSendRecord("app", "u1", "c\n 1"), record);
  });

  test("a commit written twice (retried after a lost reply) keeps one event per seq", async (store) => {
    const change = streamChange("u1", 1, 4);
    await store.saveUserStates([change]);
    await store.saveUserStates([change, streamChange("u2", 1, 1)]);
    await store.saveUserStates([streamChange("u1", 3, 3)]);
    const events = await store.readEvents("app", "u1", 0, 100);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5]);
    assert.deepEqual(events[2], { seq: 3, at: 1_003, body: '{"n":3}' });
    assert.equal((await store.loadUserState("app", "u1"))?.meta.seqReservedTo, 5);
  });

  test("send records are kept per user and client id", async (store) => {
    const record = { clientMessageId: "c-1", body: '{"id":"m1"}', seq: 3, at: 9 };
    await store.saveUserStates([streamChange("u1", 1, 3, { sendRecords: [record] })]);
    assert.deepEqual(await store.getSendRecord("app", "u1", "c-1"), record);
    assert.equal(await store.getSendRecord("app", "u2", "c-1"), null);
    assert.equal(await store.getSendRecord("app", "u1", "c-2"), null);
  });

  test("groups: created once, changed by compare-and-set, refusals change nothing", async (store) => {
    const group = { guid: "g1", name: "G", members: ["a"], createdAt: 1 };
    assert.equal(await store.createGroup("app", group), true);
    assert.equal(await store.createGroup("app", { ...group, name: "again" }), false);
    assert.deepEqual(await store.getGroup("app", "g1"), group);
    assert.equal(await store.getGroup("other", "g1"), null);
    // Concurrent updates: none is lost.
    await Promise.all(
      ["b", "c", "d"].map((uid) =>
        store.updateGroup("app", "g1", (g) => ({ group: { ...g, members: [...g.members, uid] } }))
      ),
    );
    assert.deepEqual((await store.getGroup("app", "g1"))?.members.sort(), ["a", "b", "c", "d"]);
    const refused = await store.updateGroup("app", "g1", () => ({ refuse: "full" }));
    assert.deepEqual(refused, { refuse: "full" });
    assert.equal((await store.getGroup("app", "g1"))?.members.length, 4);
    assert.equal(await store.updateGroup("app", "nope", (g) => ({ group: g })), null);
  });

  test("profiles: roles and friends are stored per user", async (store) => {
    assert.equal(await store.getProfile("app", "u1"), null);
    await store.putProfile("app", "u1", { roles: ["admin"], friends: ["u2"] });
    assert.deepEqual(await store.getProfile("app", "u1"), { roles: ["admin"], friends: ["u2"] });
    assert.equal(await store.getProfile("other", "u1"), null);
  });
}
