/**
 * The Redis engine against a real `redis-server` (tests/support/redis_server.ts): the shared
 * conformance suite, each test under a prefix of its own, then what is Redis's own: fencing,
 * one round trip per commit, crashes of Redis (kill -9 with the append-only file), Redis away
 * and back, a Redis that stops answering, token expiry, retention, paging of held users.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { RedisStore, type RedisStoreOptions } from "../gateway/store/redis.ts";
import { RedisKeys } from "../gateway/store/redis_keys.ts";
import { FencedWriteError, type UserStateChange } from "../gateway/store/types.ts";
import { storeConformance } from "./store_conformance.ts";
import { delay } from "./support/process.ts";
import { redisTest, sharedRedis, startRedis } from "./support/redis_server.ts";

const shared = await sharedRedis();

function sharedUrl(): string {
  if (shared === null) throw new Error("redis-server is not on the PATH");
  return shared.url;
}

const newPrefix = () => `test:${crypto.randomUUID()}:`;
const openShared = (options: RedisStoreOptions = {}) =>
  RedisStore.open(sharedUrl(), { prefix: newPrefix(), ...options });

if (shared !== null) storeConformance("redis", () => openShared());
else redisTest("store redis: the conformance suite", () => Promise.resolve());

/** A raw connection, for looking under the store (and writing claims, as the cluster does). */
async function rawClient(url: string): Promise<Redis & AsyncDisposable> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  redis.on("error", () => {});
  await redis.connect();
  return Object.assign(redis, {
    async [Symbol.asyncDispose]() {
      const ended = new Promise((resolve) => redis.once("end", resolve));
      await redis.quit();
      await ended;
    },
  });
}

/** One user's change: meta, and optionally one event `seq` with `body`. */
function change(uid: string, seq: number, extra: Partial<UserStateChange> = {}): UserStateChange {
  return {
    appId: "app",
    uid,
    meta: { lastSeenAt: null, held: true, seqReservedTo: seq, epoch: "e1" },
    putSessions: [],
    deleteSessions: [],
    appendEvents: [{ seq, at: Date.now(), body: `{"seq":${seq},"uid":"${uid}"}` }],
    ...extra,
  };
}

/** Resolves when `predicate` holds, polling; fails after `ms`. */
async function until(predicate: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await delay(20);
  }
}

redisTest(
  "redis: a stale claim refuses the whole commit, other users' changes too; current claims write",
  async () => {
    const store = await openShared();
    await using raw = await rawClient(sharedUrl());
    try {
      const { keys } = store;
      await raw.set(keys.owner("app", "u1"), "node-a 7");
      await raw.set(keys.owner("app", "u2"), "node-b 8");
      const claim = { node: "node-a", fence: 7 };

      // u2 now belongs to node-b: node-a's commit with u1 (its own), u2 (lost) and u3 (no claim)
      // writes nothing at all.
      const error = await store.saveUserStates([
        change("u1", 1, { owner: claim }),
        change("u2", 1, { owner: { node: "node-a", fence: 6 } }),
        change("u3", 1),
      ]).then(() => null, (e: unknown) => e);
      assert.ok(error instanceof FencedWriteError, `refused: ${error}`);
      assert.deepEqual(error.users, [{ appId: "app", uid: "u2" }]);
      for (const uid of ["u1", "u2", "u3"]) {
        assert.equal(await store.loadUserState("app", uid), null, `${uid} not written`);
        assert.deepEqual(await store.readEvents("app", uid, 0, 10), []);
      }
      assert.deepEqual(await store.listHeldUsers(), []);

      // A claim on a user nobody claimed is stale as well; so is the right node with an old fence.
      const unclaimed = await store.saveUserStates([change("u9", 1, { owner: claim })])
        .then(() => null, (e: unknown) => e);
      assert.ok(unclaimed instanceof FencedWriteError);
      await assert.rejects(
        store.saveUserStates([change("u2", 1, { owner: { node: "node-b", fence: 7 } })]),
        FencedWriteError,
      );

      // Current claims write, with changes that carry none.
      await store.saveUserStates([
        change("u1", 1, { owner: claim }),
        change("u2", 1, { owner: { node: "node-b", fence: 8 } }),
        change("u3", 1),
      ]);
      for (const uid of ["u1", "u2", "u3"]) {
        assert.equal((await store.loadUserState("app", uid))?.meta.seqReservedTo, 1);
        assert.equal((await store.readEvents("app", uid, 0, 10)).length, 1);
      }
    } finally {
      await store.close();
    }
  },
);

redisTest("redis: a commit of many users is one command (one round trip)", async () => {
  const store = await openShared();
  const proto = Redis.prototype as unknown as { sendCommand(command: { name: string }): unknown };
  const original = proto.sendCommand;
  const sent: string[] = [];
  proto.sendCommand = function (this: unknown, command: { name: string }, ...rest: unknown[]) {
    sent.push(command.name.toLowerCase());
    return (original as (...args: unknown[]) => unknown).call(this, command, ...rest);
  };
  try {
    await store.saveUserStates(Array.from({ length: 50 }, (_, i) => change(`u${i}`, 1)));
    assert.deepEqual(sent, ["evalsha"]);
    sent.length = 0;
    await store.loadUserState("app", "u1");
    assert.deepEqual(sent, ["multi", "get", "hvals", "exec"], "one pipeline, written at once");
  } finally {
    proto.sendCommand = original;
    await store.close();
  }
});

redisTest(
  "redis: every commit that resolved survives kill -9 (appendonly, fsync always); the one in flight is all or nothing",
  async () => {
    const server = await startRedis({ appendOnly: true });
    try {
      const prefix = newPrefix();
      const users = Array.from({ length: 40 }, (_, i) => `u${i}`);
      const body = (seq: number, uid: string) =>
        JSON.stringify({ seq, uid, pad: "é".repeat(2_000) });
      const commit = (seq: number) =>
        users.map((uid) => ({
          ...change(uid, seq),
          appendEvents: [{ seq, at: seq, body: body(seq, uid) }],
        }));

      let acknowledged = 0;
      let failedAfterKill = -1;
      const store = await RedisStore.open(server.url, { prefix });
      try {
        const writer = (async () => {
          for (let seq = 1;; seq++) {
            try {
              await store.saveUserStates(commit(seq));
            } catch {
              return;
            }
            acknowledged = seq;
          }
        })();
        await until(() => acknowledged >= 20, 10_000, "20 commits");
        const killedAt = performance.now();
        await server.kill();
        await writer;
        failedAfterKill = performance.now() - killedAt;
      } finally {
        await store.close();
      }
      assert.ok(failedAfterKill < 1_000, `the commit in flight failed ${failedAfterKill} ms after`);

      await server.restart();
      const reopened = await RedisStore.open(server.url, { prefix });
      try {
        const seqs = new Set<number>();
        for (const uid of users) {
          const state = await reopened.loadUserState("app", uid);
          const last = state?.meta.seqReservedTo ?? 0;
          seqs.add(last);
          const events = await reopened.readEvents("app", uid, 0, 10_000);
          assert.deepEqual(events.map((e) => e.seq), Array.from({ length: last }, (_, i) => i + 1));
          events.forEach((event) => assert.equal(event.body, body(event.seq, uid)));
        }
        assert.equal(seqs.size, 1, `every user ends at the same commit: ${[...seqs]}`);
        const [last] = seqs;
        assert.ok(
          last === acknowledged || last === acknowledged + 1,
          `acknowledged ${acknowledged}, found ${last}`,
        );
      } finally {
        await reopened.close();
      }
    } finally {
      await server.stop();
    }
  },
);

redisTest(
  "redis: while Redis is down a commit fails within 1 s; the store reconnects when it is back",
  async () => {
    const server = await startRedis({ appendOnly: true });
    try {
      const changes: Array<[boolean, string | undefined]> = [];
      const store = await RedisStore.open(server.url, {
        prefix: newPrefix(),
        onConnectedChange: (connected, error) => changes.push([connected, error?.message]),
      });
      try {
        await store.saveUserStates([change("before", 1)]);
        assert.equal(store.connected, true);
        await server.kill();
        await until(() => !store.connected, 1_000, "connected turns false");

        const started = performance.now();
        let resolved = false;
        const attempt = store.saveUserStates([change("during", 1)]).then(() => resolved = true);
        await assert.rejects(attempt);
        assert.equal(resolved, false);
        assert.ok(performance.now() - started < 1_000, "failed at once");
        await assert.rejects(store.readEvents("app", "before", 0, 10));

        await server.restart();
        await until(() => store.connected, 5_000, "reconnected");
        await store.saveUserStates([change("after", 1)]);
        assert.equal((await store.loadUserState("app", "before"))?.meta.seqReservedTo, 1);
        assert.equal((await store.loadUserState("app", "after"))?.meta.seqReservedTo, 1);
        assert.equal(await store.loadUserState("app", "during"), null, "the failed commit is not");
        assert.deepEqual(changes.map(([connected]) => connected), [false, true], "lost, back");

        // Closing while Redis is away ends the reconnect attempts (no timer is left).
        await server.kill();
        await until(() => !store.connected, 1_000, "connected turns false");
      } finally {
        await store.close();
      }
    } finally {
      await server.stop();
    }
  },
);

redisTest(
  "redis: a Redis that stops answering fails commits after commandTimeoutMs, and works once it answers again",
  async () => {
    const server = await startRedis();
    const pid = server.pid;
    try {
      const store = await RedisStore.open(server.url, {
        prefix: newPrefix(),
        commandTimeoutMs: 300,
      });
      try {
        await store.saveUserStates([change("u1", 1)]);
        Deno.kill(pid, "SIGSTOP");
        const started = performance.now();
        await assert.rejects(store.saveUserStates([change("u1", 2)]));
        const waited = performance.now() - started;
        assert.ok(waited >= 250 && waited < 1_500, `failed after ${waited} ms`);
        Deno.kill(pid, "SIGCONT");
        await until(() => store.connected, 5_000, "answering again");
        await store.saveUserStates([change("u1", 3)]);
        const seqs = (await store.readEvents("app", "u1", 0, 10)).map((e) => e.seq);
        // The commit that timed out may have landed once Redis went on: never half of it.
        assert.ok(
          JSON.stringify(seqs) === "[1,3]" || JSON.stringify(seqs) === "[1,2,3]",
          `${seqs}`,
        );
      } finally {
        await store.close();
      }
    } finally {
      try {
        Deno.kill(pid, "SIGCONT");
      } catch {
        // Exited.
      }
      await server.stop();
    }
  },
);

redisTest("redis: a commit Redis has no memory for is refused whole", async () => {
  const server = await startRedis();
  try {
    const store = await RedisStore.open(server.url, { prefix: newPrefix() });
    await using raw = await rawClient(server.url);
    try {
      await store.saveUserStates([change("u1", 1)]);
      await raw.config("SET", "maxmemory-policy", "noeviction");
      await raw.config("SET", "maxmemory", "1");
      await assert.rejects(
        store.saveUserStates([change("u1", 2), change("u2", 1, { sendRecords: [] })]),
        /OOM/,
      );
      await raw.config("SET", "maxmemory", "0");
      assert.equal((await store.loadUserState("app", "u1"))?.meta.seqReservedTo, 1);
      assert.deepEqual((await store.readEvents("app", "u1", 0, 10)).map((e) => e.seq), [1]);
      assert.equal(await store.loadUserState("app", "u2"), null);
    } finally {
      await store.close();
    }
  } finally {
    await server.stop();
  }
});

redisTest("redis: open fails at once, leaving nothing open, when no Redis is there", async () => {
  const server = await startRedis();
  const url = server.url;
  await server.stop();
  const started = performance.now();
  await assert.rejects(
    RedisStore.open(url),
    /cannot open the Redis store at redis:\/\/127\.0\.0\.1/,
  );
  assert.ok(performance.now() - started < 2_000);
  await assert.rejects(
    RedisStore.open(url.replace("redis://", "redis://user:hunter2@")),
    (error: Error) => !error.message.includes("hunter2"),
  );
});

redisTest(
  "redis: auth tokens expire at expiresAt (PXAT); tokens without one are kept",
  async () => {
    const store = await openShared();
    await using raw = await rawClient(sharedUrl());
    try {
      const now = Date.now();
      const token = (hash: string, expiresAt: number | null) => ({
        appId: "app",
        uid: "u1",
        tokenHash: hash,
        createdAt: now,
        expiresAt,
      });
      await store.putAuthToken(token("soon", now + 300));
      await store.putAuthToken(token("never", null));
      await store.putAuthToken(token("past", now - 1));
      assert.deepEqual(await store.getAuthToken("soon"), token("soon", now + 300));
      assert.equal(await store.getAuthToken("past"), null);
      const ttl = await raw.pttl(store.keys.token("soon"));
      assert.ok(ttl > 0 && ttl <= 300, `ttl ${ttl}`);
      assert.equal(await raw.pttl(store.keys.token("never")), -1);
      await delay(400);
      assert.equal(await store.getAuthToken("soon"), null);
      assert.equal(await store.deleteAuthToken("app", "u1", "soon"), false);
      assert.deepEqual(await store.getAuthToken("never"), token("never", null));
    } finally {
      await store.close();
    }
  },
);

redisTest(
  "redis: appends free events older than the retention, a bounded number at a time, and the stream expires",
  async () => {
    const store = await openShared();
    await using raw = await rawClient(sharedUrl());
    try {
      const hour = 3_600_000;
      const at = 10 * hour;
      const events = (from: number, count: number, eventAt: number) =>
        Array.from(
          { length: count },
          (_, i) => ({ seq: from + i, at: eventAt, body: `{"n":${i}}` }),
        );
      const save = (from: number, count: number, eventAt: number) =>
        store.saveUserStates([{
          ...change("u1", from + count - 1),
          appendEvents: events(from, count, eventAt),
          retentionMs: hour,
        }]);
      await save(1, 250, at);
      const key = store.keys.events("app", "u1");
      const ttl = await raw.pttl(key);
      assert.ok(
        ttl > hour - 60_000 && ttl <= hour,
        `the stream expires after the retention: ${ttl}`,
      );
      // An hour and a bit later: each append frees up to 100 of the 250 old events.
      await save(251, 1, at + hour + 1);
      assert.equal(await raw.zcard(key), 151);
      await save(252, 1, at + hour + 2);
      await save(253, 1, at + hour + 3);
      assert.equal(await raw.zcard(key), 3);
      assert.deepEqual((await store.readEvents("app", "u1", 0, 10)).map((e) => e.seq), [
        251,
        252,
        253,
      ]);
      // Within the retention nothing goes.
      await save(254, 1, at + hour + 4);
      assert.equal(await raw.zcard(key), 4);
    } finally {
      await store.close();
    }
  },
);

redisTest("redis: held users are listed page by page (SSCAN), however many", async () => {
  const store = await openShared();
  try {
    const changes = Array.from({ length: 2_500 }, (_, i) => ({
      appId: i % 2 === 0 ? "app" : "other:app",
      uid: `u${i}`,
      meta: { lastSeenAt: null, held: true },
      putSessions: [],
      deleteSessions: [],
    }));
    await store.saveUserStates(changes);
    await store.saveUserStates(
      changes.slice(0, 500).map((c) => ({ ...c, meta: { ...c.meta, held: false } })),
    );
    const held = await store.listHeldUsers();
    assert.equal(held.length, 2_000);
    assert.deepEqual(
      new Set(held.map((user) => `${user.appId}/${user.uid}`)),
      new Set(changes.slice(500).map((c) => `${c.appId}/${c.uid}`)),
    );
  } finally {
    await store.close();
  }
});

redisTest("redis: prefixes and encoded key parts keep apps, users and gateways apart", async () => {
  const prefix = newPrefix();
  const a = await RedisStore.open(sharedUrl(), { prefix });
  const b = await RedisStore.open(sharedUrl(), { prefix: `${prefix}other:` });
  try {
    const user = (uid: string) => ({ uid, name: uid, createdAt: 1 });
    assert.equal(await a.createUser("a:b", user("c")), true);
    assert.equal(await a.createUser("a", user("b:c")), true);
    assert.equal(await b.createUser("a:b", user("c")), true, "another prefix: another store");
    assert.equal((await a.getUser("a", "b:c"))?.uid, "b:c");
    const keys = new RedisKeys("p:");
    assert.notEqual(keys.events("a:b", "c"), keys.events("a", "b:c"));
    assert.notEqual(keys.sent("a", "b", "c:d"), keys.sent("a", "b:c", "d"));
  } finally {
    await a.close();
    await b.close();
  }
});
