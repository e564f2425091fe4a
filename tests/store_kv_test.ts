import assert from "node:assert/strict";
import { authTokenHash } from "../gateway/credential.ts";
import { KvStore } from "../gateway/store/kv.ts";
import type { UserStateChange } from "../gateway/store/types.ts";
import { storeConformance } from "./store_conformance.ts";

storeConformance("deno-kv (memory)", () => KvStore.open(":memory:"));

// The same on a real file on disk, as `deno task serve` uses it.
let dir: string | undefined;
storeConformance("deno-kv (file)", async () => {
  dir ??= await Deno.makeTempDir();
  return KvStore.open(`${dir}/${crypto.randomUUID()}.kv`);
});

Deno.test("deno-kv: a store written before tokens were hashed is rehashed once at open", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/legacy.kv`;
    // The old layout: the token itself was the key, and the record held it.
    const kv = await Deno.openKv(path);
    await kv.set(["token", "at_legacy_token"], {
      appId: "demo",
      uid: "u1",
      authToken: "at_legacy_token",
      createdAt: 1,
      expiresAt: null,
    });
    kv.close();

    const store = await KvStore.open(path);
    try {
      assert.deepEqual(await store.getAuthToken(authTokenHash("at_legacy_token")), {
        appId: "demo",
        uid: "u1",
        tokenHash: authTokenHash("at_legacy_token"),
        createdAt: 1,
        expiresAt: null,
      });
    } finally {
      store.close();
    }
    const raw = await Deno.openKv(path);
    try {
      assert.equal((await raw.get(["token", "at_legacy_token"])).value, null, "old key gone");
      for await (const entry of raw.list({ prefix: ["token"] })) {
        assert.ok(!JSON.stringify(entry).includes("at_legacy_token"), "no plain token left");
      }
    } finally {
      raw.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** 12 users × one 50 KB event: more than one KV commit holds, so the write takes several. */
function largeWrite(seq: number): UserStateChange[] {
  return Array.from({ length: 12 }, (_, i) => ({
    appId: "app",
    uid: `u${i}`,
    meta: { lastSeenAt: null, held: false, seqReservedTo: seq, epoch: "e1" },
    putSessions: [],
    deleteSessions: [],
    appendEvents: [{ seq, at: seq, body: JSON.stringify({ seq, pad: "x".repeat(50_000) }) }],
  }));
}

/** Makes every KV commit that writes a `meta` key fail while `failing` says so. */
function failMetaCommits(failing: () => boolean): () => void {
  const proto = Deno.AtomicOperation.prototype;
  const { set, commit } = proto;
  const metaOps = new WeakSet<Deno.AtomicOperation>();
  proto.set = function (this: Deno.AtomicOperation, key, value, options) {
    if (key[0] === "meta") metaOps.add(this);
    return set.call(this, key, value, options);
  };
  proto.commit = function (this: Deno.AtomicOperation) {
    if (failing() && metaOps.has(this)) return Promise.reject(new Error("disk gone"));
    return commit.call(this);
  };
  return () => Object.assign(proto, { set, commit });
}

async function seqsOf(store: KvStore): Promise<number[]> {
  const seqs: number[] = [];
  for (let i = 0; i < 12; i++) {
    seqs.push((await store.loadUserState("app", `u${i}`))?.meta.seqReservedTo ?? 0);
  }
  return seqs;
}

Deno.test("deno-kv: a write too large for one commit that fails half-way lands whole, by the next write or the next open", async () => {
  const dir = await Deno.makeTempDir();
  let failing = false;
  const restore = failMetaCommits(() => failing);
  try {
    const path = `${dir}/redo.kv`;
    const store = await KvStore.open(path);
    try {
      await store.saveUserStates(largeWrite(1));
      failing = true;
      await assert.rejects(store.saveUserStates(largeWrite(2)), /disk gone/);
      // Past its commit point, the failed write is written before the next one.
      failing = false;
      await store.saveUserStates([]);
      assert.deepEqual(await seqsOf(store), Array(12).fill(2));
      failing = true;
      await assert.rejects(store.saveUserStates(largeWrite(3)), /disk gone/);
    } finally {
      store.close();
    }
    // A crash right there: the next open completes the write before anything reads.
    failing = false;
    const reopened = await KvStore.open(path);
    try {
      assert.deepEqual(await seqsOf(reopened), Array(12).fill(3));
      const events = await reopened.readEvents("app", "u11", 0, 10);
      assert.deepEqual(events.map((event) => event.seq), [1, 2, 3]);
    } finally {
      reopened.close();
    }
    // The redo logs are gone once written.
    const raw = await Deno.openKv(path);
    try {
      for (const prefix of ["redo", "redo_log"]) {
        for await (const entry of raw.list({ prefix: [prefix] })) assert.fail(`left: ${entry.key}`);
      }
    } finally {
      raw.close();
    }
  } finally {
    restore();
    await Deno.remove(dir, { recursive: true });
  }
});
