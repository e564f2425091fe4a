/**
 * One writer per user across nodes (docs/cluster.md): claims raced by two nodes on a real
 * Redis, and the fencing that refuses the write of a node that lost its claim.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { NodeRegistry } from "../gateway/cluster/nodes.ts";
import { initialLiveness } from "../gateway/liveness.ts";
import { RedisStore } from "../gateway/store/redis.ts";
import { RedisKeys } from "../gateway/store/redis_keys.ts";
import { FencedWriteError, type UserClaim, type UserStateChange } from "../gateway/store/types.ts";
import { redisTest, startRedis } from "./support/redis_server.ts";

async function withNodes(
  fn: (nodes: NodeRegistry[], store: RedisStore, prefix: string) => Promise<void>,
): Promise<void> {
  const redis = await startRedis();
  const prefix = `t${crypto.randomUUID().slice(0, 8)}:`;
  const connections = [new Redis(redis.url), new Redis(redis.url)];
  const store = await RedisStore.open(redis.url, { prefix });
  try {
    const nodes = connections.map((connection, i) =>
      new NodeRegistry({
        redis: connection,
        keys: new RedisKeys(prefix),
        nodeId: `n${i + 1}`,
        ttlMs: 5_000,
        heartbeatMs: 1_000,
      })
    );
    for (const node of nodes) await node.heartbeat({}, crypto.randomUUID());
    await fn(nodes, store, prefix);
  } finally {
    await store.close();
    for (const connection of connections) await connection.quit();
    await redis.stop();
  }
}

const change = (uid: string, owner: UserClaim, lastSeenAt: number): UserStateChange => ({
  appId: "app",
  uid,
  meta: { lastSeenAt, held: true },
  putSessions: [{
    sessionId: "s1",
    mode: "auto",
    createdAt: 1,
    lastPingAt: null,
    liveness: initialLiveness("auto"),
  }],
  deleteSessions: [],
  owner,
});

redisTest("claims: two nodes racing for 200 users: each user gets exactly one writer", async () => {
  await withNodes(async ([n1, n2]) => {
    const users = Array.from({ length: 200 }, (_, i) => ({ appId: "app", uid: `u${i}` }));
    const results = await Promise.all(
      users.map((user) => Promise.all([n1.claim(user), n2.claim(user)])),
    );
    const fences = new Set<number>();
    for (const [first, second] of results) {
      const winners = [first, second].filter((r) => "fence" in r) as UserClaim[];
      assert.equal(winners.length, 1, JSON.stringify([first, second]));
      const loser = [first, second].find((r) => !("fence" in r)) as { owner: string };
      assert.equal(loser.owner, winners[0].node);
      fences.add(winners[0].fence);
    }
    assert.equal(fences.size, 200, "every claim has its own fencing token");
    // Claiming again gives the holder its own claim back, and the other still nothing.
    const again = await n1.claim(users[0]);
    const holder = results[0].find((r) => "fence" in r) as UserClaim;
    assert.deepEqual(again, holder.node === "n1" ? holder : { owner: "n2" });
  });
});

redisTest(
  "claims: a node that lost its claim (dead, taken over) cannot write the user: the whole commit is refused",
  async () => {
    await withNodes(async ([n1, n2], store) => {
      const old = await n1.claim({ appId: "app", uid: "u1" }) as UserClaim;
      const other = await n1.claim({ appId: "app", uid: "u2" }) as UserClaim;
      await store.saveUserStates([change("u1", old, 1)]);
      // While n1 is alive, n2 cannot take u1.
      assert.deepEqual(await n2.claim({ appId: "app", uid: "u1" }), { owner: "n1" });
      // n1's key goes (it died, or was cut off past its TTL). A node that has not seen Redis
      // answer for a TTL yet (after an outage) does not take u1: n1 may be renewing its key.
      await n1.leave();
      assert.deepEqual(await n2.claim({ appId: "app", uid: "u1" }, false), { owner: "n1" });
      // Past that, n2 takes u1 over, with a larger fence.
      const taken = await n2.claim({ appId: "app", uid: "u1" }) as UserClaim;
      assert.equal(taken.node, "n2");
      assert.ok(taken.fence > old.fence);
      // n1 comes back and writes with its old claim: refused whole, its other user included.
      await assert.rejects(
        store.saveUserStates([change("u2", other, 2), change("u1", old, 2)]),
        (error) => error instanceof FencedWriteError && error.users.length === 1,
      );
      assert.equal((await store.loadUserState("app", "u1"))?.meta.lastSeenAt, 1);
      assert.equal(await store.loadUserState("app", "u2"), null);
      // The holder writes.
      await store.saveUserStates([change("u1", taken, 3)]);
      assert.equal((await store.loadUserState("app", "u1"))?.meta.lastSeenAt, 3);
      // A release by the old holder changes nothing; the holder's own release frees the user.
      assert.equal(await n1.release({ appId: "app", uid: "u1" }, old), false);
      assert.equal(await n2.ownerOf({ appId: "app", uid: "u1" }), "n2");
      assert.equal(await n2.release({ appId: "app", uid: "u1" }, taken), true);
      assert.equal(await n2.ownerOf({ appId: "app", uid: "u1" }), null);
    });
  },
);
