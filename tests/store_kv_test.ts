import assert from "node:assert/strict";
import { authTokenHash } from "../gateway/credential.ts";
import { initialLiveness } from "../gateway/liveness.ts";
import { KvStore } from "../gateway/store/kv.ts";
import type { UserStateChange } from "../gateway/store/types.ts";
import { storeConformance } from "./store_conformance.ts";

storeConformance("deno-kv (memory)", () => KvStore.open(":memory:"));

// The same on a real file on disk, as `deno task serve` uses it.
let dir: string | undefined;
const newFile = async () => `${dir ??= await Deno.makeTempDir()}/${crypto.randomUUID()}.kv`;
storeConformance("deno-kv (file)", async () => KvStore.open(await newFile()));

// Every write is compacted before the next call: every read comes from the keyed rows.
storeConformance("deno-kv (file, compacted after each write)", async () => {
  const store = await KvStore.open(await newFile());
  const save = store.saveUserStates.bind(store);
  store.saveUserStates = async (changes) => {
    await save(changes);
    await store.compact();
  };
  return store;
});

// Every write starts a compaction in the background: reads run while logs move to rows.
storeConformance("deno-kv (file, compacting in the background)", async () => {
  return KvStore.open(await newFile(), { compactAfterBytes: 0 });
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
      await store.close();
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

Deno.test("deno-kv: a compaction that fails half-way loses nothing; the next one, or the next open, writes it whole", async () => {
  const dir = await Deno.makeTempDir();
  let failing = false;
  const restore = failMetaCommits(() => failing);
  try {
    const path = `${dir}/redo.kv`;
    const store = await KvStore.open(path);
    try {
      await store.saveUserStates(largeWrite(1));
      await store.compact();
      await store.saveUserStates(largeWrite(2));
      failing = true;
      // Its commits fail: the logs stay, and the reads see everything.
      await assert.rejects(store.compact(), /disk gone/);
      assert.deepEqual(await seqsOf(store), Array(12).fill(2));
      await store.saveUserStates(largeWrite(3));
      assert.deepEqual(await seqsOf(store), Array(12).fill(3));
      assert.deepEqual((await store.readEvents("app", "u5", 0, 10)).map((e) => e.seq), [1, 2, 3]);
      // The failed compaction goes first; the newer write stays pending, and is read.
      failing = false;
      await store.compact();
      assert.deepEqual(await seqsOf(store), Array(12).fill(3));
      await store.saveUserStates(largeWrite(4));
      failing = true;
      await assert.rejects(store.compact(), /disk gone/);
    } finally {
      await store.close();
    }
    // A crash right there: the next open writes every log left before anything reads.
    failing = false;
    const reopened = await KvStore.open(path);
    try {
      assert.deepEqual(await seqsOf(reopened), Array(12).fill(4));
      const events = await reopened.readEvents("app", "u11", 0, 10);
      assert.deepEqual(events.map((event) => event.seq), [1, 2, 3, 4]);
    } finally {
      await reopened.close();
    }
    // The logs are gone once compacted, and each user's events are rows of their own.
    const raw = await Deno.openKv(path);
    try {
      for (const prefix of ["redo", "redo_log"]) {
        for await (const entry of raw.list({ prefix: [prefix] })) assert.fail(`left: ${entry.key}`);
      }
      const rows = await Array.fromAsync(raw.list({ prefix: ["event", "app", "u11"] }));
      assert.deepEqual(rows.map((row) => row.key[3]), [1, 2, 3, 4]);
    } finally {
      raw.close();
    }
  } finally {
    restore();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno-kv: the write log brings any event body back after a restart", async () => {
  const dir = await Deno.makeTempDir();
  const long = JSON.stringify({ text: "a group message for every member ".repeat(40) });
  const session = {
    sessionId: "s1",
    mode: "manual" as const,
    createdAt: 3,
    lastPingAt: 4,
    liveness: initialLiveness("manual"),
    deadlineBound: null,
  };
  const bodies = ['{"a":1}', "", "line\nbreak", "!bang", "=3", "ünï €😀", '"json"', long, long];
  try {
    const path = `${dir}/log.kv`;
    const store = await KvStore.open(path);
    try {
      await store.saveUserStates([{
        appId: "app",
        uid: "u1",
        meta: { lastSeenAt: 5, held: true, seqReservedTo: bodies.length, epoch: "e1" },
        putSessions: [session],
        deleteSessions: ["gone"],
        appendEvents: bodies.map((body, i) => ({ seq: i + 1, at: 100 + i, body })),
        sendRecords: [{ clientMessageId: "c\n1", body: '{"x":"y\\n"}', seq: 2, at: 101 }],
        dropEvents: { from: 1, below: 2 },
        retentionMs: 60_000,
      }, {
        appId: "app",
        uid: "u2",
        meta: { lastSeenAt: null, held: false, seqReservedTo: 1, epoch: "e2" },
        putSessions: [],
        deleteSessions: [],
        appendEvents: [{ seq: 1, at: 7, body: long }],
      }]);
    } finally {
      await store.close();
    }
    // Not compacted: the next open reads the log back.
    const reopened = await KvStore.open(path);
    try {
      const events = await reopened.readEvents("app", "u1", 0, 100);
      assert.deepEqual(events.map((event) => event.body), bodies.slice(1));
      assert.deepEqual(events.map((event) => event.at), bodies.slice(1).map((_, i) => 101 + i));
      assert.deepEqual((await reopened.getSendRecord("app", "u1", "c\n1"))?.body, '{"x":"y\\n"}');
      const state = await reopened.loadUserState("app", "u1");
      assert.deepEqual(state?.meta, {
        lastSeenAt: 5,
        held: true,
        seqReservedTo: bodies.length,
        epoch: "e1",
      });
      assert.deepEqual(state?.sessions, [session]);
      assert.deepEqual(await reopened.listHeldUsers(), [{ appId: "app", uid: "u1" }]);
      assert.deepEqual(await reopened.readEvents("app", "u2", 0, 10), [{
        seq: 1,
        at: 7,
        body: long,
      }]);
    } finally {
      await reopened.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno-kv: once writes pause, the write log is compacted into per-user rows", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/idle.kv`;
    const store = await KvStore.open(path, { compactWhenIdleMs: 50 });
    const raw = await Deno.openKv(path);
    try {
      const keys = async (prefix: string) =>
        (await Array.fromAsync(raw.list({ prefix: [prefix] }))).map((entry) => entry.key);
      const small = (seq: number) =>
        largeWrite(seq).map((change) => ({
          ...change,
          appendEvents: [{ seq, at: seq, body: `{"seq":${seq}}` }],
        }));
      await store.saveUserStates(small(1));
      await store.saveUserStates(small(2));
      assert.equal((await keys("redo")).length, 2, "two logs, not compacted yet");
      assert.deepEqual(await keys("event"), []);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(await keys("redo"), []);
      assert.deepEqual(await keys("redo_log"), []);
      assert.deepEqual(
        (await keys("event")).filter((key) => key[2] === "u3"),
        [["event", "app", "u3", 1]],
        "one pack holds both events",
      );
      assert.deepEqual((await store.readEvents("app", "u3", 0, 10)).map((e) => e.seq), [1, 2]);
    } finally {
      raw.close();
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno-kv: a compaction that failed on a pause is tried again a pause later, with no new write", async () => {
  const dir = await Deno.makeTempDir();
  let failing = true;
  const restore = failMetaCommits(() => failing);
  try {
    const path = `${dir}/retry.kv`;
    const store = await KvStore.open(path, { compactWhenIdleMs: 100 });
    const raw = await Deno.openKv(path);
    try {
      const logs = async () => (await Array.fromAsync(raw.list({ prefix: ["redo"] }))).length;
      await store.saveUserStates(largeWrite(1));
      await new Promise((resolve) => setTimeout(resolve, 250));
      assert.equal(await logs(), 1, "the compaction failed: the log stays");
      failing = false;
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(await logs(), 0, "tried again by itself");
      assert.deepEqual(await seqsOf(store), Array(12).fill(1));
    } finally {
      raw.close();
      await store.close();
    }
  } finally {
    restore();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno-kv: logs applied at start-up replace the rows a cut compaction left, so no rows overlap", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/overlap.kv`;
    const change = (from: number, to: number) => ({
      appId: "app",
      uid: "u1",
      meta: { lastSeenAt: null, held: false, seqReservedTo: to, epoch: "e1" },
      putSessions: [],
      deleteSessions: [],
      appendEvents: Array.from({ length: to - from + 1 }, (_, i) => ({
        seq: from + i,
        at: 1_000 + from + i,
        body: `{"n":${from + i}}`,
      })),
    });
    const store = await KvStore.open(path);
    await store.saveUserStates([change(1, 3)]);
    await store.compact();
    await store.saveUserStates([change(4, 5)]);
    await store.compact();
    await store.saveUserStates([change(6, 10)]);
    await store.close();
    // What a crash inside compactions can leave beside the log of 6..10: a row that took 6 in
    // already (its compaction's removal of that log was cut), and a row of 7..8 cut elsewhere.
    const raw = await Deno.openKv(path);
    const line = (seq: number) => `${seq} ${1_000 + seq} {"n":${seq}}\n`;
    await raw.set(["event", "app", "u1", 4], line(4) + line(5) + line(6));
    await raw.set(["event", "app", "u1", 7], line(7) + line(8));
    raw.close();

    const reopened = await KvStore.open(path);
    try {
      const seqs = async (after: number) =>
        (await reopened.readEvents("app", "u1", after, 100)).map((event) => event.seq);
      assert.deepEqual(await seqs(0), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      for (let after = 1; after < 10; after++) {
        assert.deepEqual(
          await seqs(after),
          Array.from({ length: 10 - after }, (_, i) => after + 1 + i),
        );
      }
    } finally {
      await reopened.close();
    }
    const check = await Deno.openKv(path);
    try {
      const rows = await Array.fromAsync(check.list<string>({ prefix: ["event", "app", "u1"] }));
      const seqsOfRow = rows.map((row) =>
        row.value.trim().split("\n").map((l) => Number(l.split(" ")[0]))
      );
      assert.deepEqual(seqsOfRow.flat(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "each event in one row");
    } finally {
      check.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno-kv: reads during a compaction see every event, whichever rows land between their reads", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const store = await KvStore.open(`${dir}/race.kv`, { compactWhenIdleMs: 0 });
    try {
      // One event per row (each too large to share a pack): a compaction lands them 100 at a time.
      const pad = "x".repeat(31_000);
      for (let from = 1; from <= 400; from += 20) {
        await store.saveUserStates([{
          appId: "app",
          uid: "u1",
          meta: { lastSeenAt: null, held: false, seqReservedTo: from + 19, epoch: "e1" },
          putSessions: [],
          deleteSessions: [],
          appendEvents: Array.from({ length: 20 }, (_, i) => ({
            seq: from + i,
            at: from + i,
            body: JSON.stringify({ n: from + i, pad }),
          })),
        }]);
      }
      let done = false;
      const compaction = store.compact().finally(() => (done = true));
      let reads = 0;
      for (let after = 0; !done || reads < 50; after = (after + 37) % 390, reads++) {
        const seqs = (await store.readEvents("app", "u1", after, 5)).map((event) => event.seq);
        assert.deepEqual(
          seqs,
          [after + 1, after + 2, after + 3, after + 4, after + 5],
          `after ${after}`,
        );
      }
      await compaction;
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
