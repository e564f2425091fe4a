/**
 * `deno task bench:group-storage [--reps=n] [--quick]`: what a group message costs in Deno KV
 * under two storage designs, in process, on a fresh KV file:
 *
 * - copies (what the gateway does, gateway/messaging.ts): the message is written into every
 *   member's stream, N events of the message's size;
 * - group stream + references: the message is written once into the group's stream, and every
 *   member's stream gets a small reference (group, group seq) to it.
 *
 * Writes: `messages` group messages back to back, the mutations cut into commits the way the
 * gateway's group commit cuts them under load (gateway/store/kv.ts: ≤ 800 mutations and about
 * 500 KB per atomic operation), with the streams' `expireIn`. Per message: wall time, CPU time
 * of the whole process (all threads: KV's SQLite work runs off the main thread), and bytes of
 * keys and values. The per-member metadata the gateway writes with each change (the stream's
 * reserved seq, the `held` flag) is the same under both designs and is left out, except in the
 * last column, "as the gateway writes them": changes through `KvStore.saveUserStates`, with that
 * metadata, in flushes of about one commit's worth of copies, which the store writes to its log
 * (a group message once per log) and then compacts into per-member rows (copies): the column
 * counts the compaction too.
 *
 * Reads: a member resuming after `REPLAY` group messages. Copies: one range read of the
 * member's stream. References: the range read of the references, then the messages, either
 * by key (`getMany`, 10 keys at a time: the general case, references into many groups) or by
 * one range read of the group stream (the best case: every reference into one group, in order).
 * As the gateway reads them: `KvStore.readEvents` of the per-member packs compaction writes.
 *
 * Arms run interleaved, repeated; the table shows medians.
 */
import { KvStore } from "../gateway/store/kv.ts";
import type { UserStateChange } from "../gateway/store/types.ts";

const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const QUICK = Deno.args.includes("--quick");
const REPS = Number(arg("reps") ?? (QUICK ? 1 : 5));
/** Group sizes, and group messages written per run for each (about 30 000 copies or more). */
const GROUPS: Array<{ members: number; messages: number }> = QUICK
  ? [{ members: 10, messages: 50 }, { members: 100, messages: 20 }]
  : [
    { members: 10, messages: 3_000 },
    { members: 100, messages: 300 },
    { members: 1_000, messages: 30 },
  ];
/** Message texts: a chat line, and a large message (the limit is 60 000 bytes of JSON). */
const TEXTS = [100, 4_000];
/** Events a resuming member reads back (within REPLAY_LIMIT, 1 000). */
const REPLAY = 300;
/** Members whose resume is timed. */
const READERS = QUICK ? 5 : 20;

const RETENTION_MS = 24 * 3600_000;
const MAX_MUTATIONS_PER_COMMIT = 800;
const MAX_BYTES_PER_COMMIT = 500_000;
const MUTATION_OVERHEAD_BYTES = 200;
const GUID = "bench_group";

/** A group message as the gateway stores it (the Message envelope, JSON). */
function messageBody(textLength: number, k: number): string {
  return JSON.stringify({
    kind: "text",
    text: "x".repeat(textLength),
    id: `msg_${String(k).padStart(24, "0")}`,
    from: "member_0",
    receiverType: "group",
    to: GUID,
    sentAt: 1_790_000_000_000 + k,
  });
}

const uid = (i: number) => `member_${i}`;

interface Mutation {
  key: Deno.KvKey;
  value: unknown;
  bytes: number;
}

/** Commits `mutations` in order, cut the way gateway/store/kv.ts cuts a group commit. */
async function commitAll(kv: Deno.Kv, mutations: Iterable<Mutation>): Promise<void> {
  let op = kv.atomic();
  let count = 0;
  let bytes = 0;
  for (const m of mutations) {
    const cost = m.bytes + MUTATION_OVERHEAD_BYTES;
    if (count + 1 > MAX_MUTATIONS_PER_COMMIT || bytes + cost > MAX_BYTES_PER_COMMIT) {
      if (!(await op.commit()).ok) throw new Error("commit failed");
      op = kv.atomic();
      count = bytes = 0;
    }
    op.set(m.key, m.value, { expireIn: RETENTION_MS });
    count++;
    bytes += cost;
  }
  if (count > 0 && !(await op.commit()).ok) throw new Error("commit failed");
}

const keyBytes = (key: Deno.KvKey) =>
  key.reduce<number>((n, part) => n + String(part).length + 2, 0);

/** The mutations of `messages` group messages to `members` members, under each design. */
function* copies(app: string, members: number, messages: number, text: number, seq0 = 0) {
  for (let k = 0; k < messages; k++) {
    const body = messageBody(text, k);
    const at = Date.now();
    for (let i = 0; i < members; i++) {
      const key = ["event", app, uid(i), seq0 + k + 1];
      yield { key, value: { at, body }, bytes: keyBytes(key) + body.length + 12 };
    }
  }
}
function* references(app: string, members: number, messages: number, text: number, seq0 = 0) {
  for (let k = 0; k < messages; k++) {
    const body = messageBody(text, k);
    const at = Date.now();
    const gseq = seq0 + k + 1;
    const groupKey = ["group_event", app, GUID, gseq];
    yield { key: groupKey, value: { at, body }, bytes: keyBytes(groupKey) + body.length + 12 };
    for (let i = 0; i < members; i++) {
      const key = ["event", app, uid(i), seq0 + k + 1];
      const value = { at, group: GUID, gseq };
      yield { key, value, bytes: keyBytes(key) + GUID.length + 24 };
    }
  }
}

/** CPU time of this process, all threads, in ms (scheduler statistics, nanoseconds). */
function processCpuMs(): number {
  let ns = 0;
  for (const task of Deno.readDirSync(`/proc/${Deno.pid}/task`)) {
    try {
      ns += Number(
        Deno.readTextFileSync(`/proc/${Deno.pid}/task/${task.name}/schedstat`)
          .split(" ")[0],
      );
    } catch { /* the thread ended meanwhile */ }
  }
  return ns / 1e6;
}

interface WriteResult {
  msPerMessage: number;
  cpuMsPerMessage: number;
  bytesPerMessage: number;
}

type Design = "copies" | "references" | "gateway";

async function timeWrites(
  kv: Deno.Kv,
  store: KvStore,
  design: Design,
  app: string,
  members: number,
  messages: number,
  text: number,
): Promise<WriteResult> {
  let bytes = 0;
  const counted = function* (mutations: Iterable<Mutation>) {
    for (const m of mutations) {
      bytes += m.bytes;
      yield m;
    }
  };
  const [t0, c0] = [performance.now(), processCpuMs()];
  if (design === "gateway") {
    // Group commits as saveUserStates receives them under load: one change per member per
    // flush, each with that member's new events and the stream's metadata; a flush holds
    // about as many copies as one commit of the other rows.
    const perFlush = Math.max(1, Math.floor(MAX_MUTATIONS_PER_COMMIT / members));
    for (let first = 0; first < messages; first += perFlush) {
      const flush = Array.from(
        { length: Math.min(perFlush, messages - first) },
        (_, j) => ({ seq: first + j + 1, at: Date.now(), body: messageBody(text, first + j) }),
      );
      const changes: UserStateChange[] = [];
      for (let i = 0; i < members; i++) {
        changes.push({
          appId: app,
          uid: uid(i),
          meta: {
            lastSeenAt: null,
            held: true,
            seqReservedTo: first + flush.length,
            epoch: "bench_epoch_",
          },
          putSessions: [],
          deleteSessions: [],
          retentionMs: RETENTION_MS,
          appendEvents: flush,
        });
        bytes += flush.reduce((n, e) => n + e.body.length + 40, 0) + 120;
      }
      await store.saveUserStates(changes);
    }
    await store.compact();
  } else {
    await commitAll(
      kv,
      counted((design === "copies" ? copies : references)(app, members, messages, text)),
    );
  }
  const [t1, c1] = [performance.now(), processCpuMs()];
  return {
    msPerMessage: (t1 - t0) / messages,
    cpuMsPerMessage: (c1 - c0) / messages,
    bytesPerMessage: bytes / messages,
  };
}

type ReadDesign = "copies" | "refs_getmany" | "refs_range" | "gateway";

/** Median ms of a resume read of REPLAY events by each of READERS members. */
async function timeReads(
  kv: Deno.Kv,
  store: KvStore,
  design: ReadDesign,
  app: string,
): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < READERS; i++) {
    const t0 = performance.now();
    if (design === "gateway") {
      const events = await store.readEvents(app, uid(i), 0, REPLAY);
      if (events.length !== REPLAY) throw new Error(`${design}: read ${events.length} events`);
      times.push(performance.now() - t0);
      continue;
    }
    const prefix = ["event", app, uid(i)];
    const entries = await Array.fromAsync(
      kv.list<{ at: number; body?: string; group?: string; gseq?: number }>(
        { prefix, start: [...prefix, 1] },
        { limit: REPLAY, batchSize: REPLAY },
      ),
    );
    let bodies: string[];
    if (design === "copies") {
      bodies = entries.map((e) => e.value.body!);
    } else if (design === "refs_getmany") {
      bodies = [];
      for (let j = 0; j < entries.length; j += 10) {
        const keys = entries.slice(j, j + 10).map((
          e,
        ) => ["group_event", app, e.value.group!, e.value.gseq!]);
        for (const got of await kv.getMany<{ body: string }[]>(keys)) bodies.push(got.value!.body);
      }
    } else {
      const first = entries[0].value.gseq!;
      const groupPrefix = ["group_event", app, GUID];
      const group = await Array.fromAsync(
        kv.list<{ body: string }>(
          { start: [...groupPrefix, first], end: [...groupPrefix, first + entries.length] },
          { batchSize: REPLAY },
        ),
      );
      bodies = group.map((e) => e.value.body);
    }
    if (bodies.length !== REPLAY) throw new Error(`${design}: read ${bodies.length} events`);
    times.push(performance.now() - t0);
  }
  return median(times);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

async function main() {
  const dir = await Deno.makeTempDir({ prefix: "bench_group_storage_" });
  const store = await KvStore.open(`${dir}/kv.sqlite3`);
  const kv = await Deno.openKv(`${dir}/kv.sqlite3`);
  const writes = new Map<string, WriteResult[]>();
  const reads = new Map<string, number[]>();
  let run = 0;
  try {
    // The streams a resume reads: REPLAY messages to READERS members, under each design.
    for (const text of TEXTS) {
      await commitAll(kv, copies(`read_c_${text}`, READERS, REPLAY, text));
      await commitAll(kv, references(`read_r_${text}`, READERS, REPLAY, text));
      await timeWrites(kv, store, "gateway", `read_g_${text}`, READERS, REPLAY, text);
    }
    // Warm-up: every code path once, before anything is timed.
    for (const design of ["copies", "references", "gateway"] as const) {
      await timeWrites(kv, store, design, "warm_up", 10, 20, TEXTS[0]);
    }
    for (const design of ["copies", "refs_getmany", "refs_range", "gateway"] as const) {
      await timeReads(kv, store, design, readApp(design, TEXTS[0]));
    }
    for (let rep = 0; rep < REPS; rep++) {
      for (const { members, messages } of GROUPS) {
        for (const text of TEXTS) {
          const designs: Design[] = ["copies", "references", "gateway"];
          for (let d = 0; d < designs.length; d++) {
            const design = designs[(d + rep) % designs.length];
            const result = await timeWrites(
              kv,
              store,
              design,
              `w${run++}`,
              members,
              messages,
              text,
            );
            const key = `${design}|${members}|${text}`;
            (writes.get(key) ?? writes.set(key, []).get(key)!).push(result);
          }
        }
      }
      for (const text of TEXTS) {
        const designs: ReadDesign[] = ["copies", "refs_getmany", "refs_range", "gateway"];
        for (let d = 0; d < designs.length; d++) {
          const design = designs[(d + rep) % designs.length];
          const ms = await timeReads(kv, store, design, readApp(design, text));
          const key = `${design}|${text}`;
          (reads.get(key) ?? reads.set(key, []).get(key)!).push(ms);
        }
      }
      console.error(`repetition ${rep + 1} of ${REPS} done`);
    }
  } finally {
    kv.close();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
  console.log(table(writes, reads));
}

/** The app whose streams a read design reads. */
function readApp(design: ReadDesign, text: number): string {
  return `${design === "copies" ? "read_c" : design === "gateway" ? "read_g" : "read_r"}_${text}`;
}

function table(writes: Map<string, WriteResult[]>, reads: Map<string, number[]>): string {
  const med = (key: string, field: keyof WriteResult) =>
    median(writes.get(key)!.map((r) => r[field]));
  const lines = [
    `Writes, per group message (medians of ${REPS}; text of ${TEXTS.join(" / ")} characters):`,
    "",
    "| members | text | copies ms | refs ms | copies CPU ms | refs CPU ms | copies KB | refs KB | copies ÷ refs (CPU) | as the gateway writes them: ms / CPU ms |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const { members } of GROUPS) {
    for (const text of TEXTS) {
      const c = `copies|${members}|${text}`;
      const r = `references|${members}|${text}`;
      const g = `gateway|${members}|${text}`;
      lines.push(
        `| ${members} | ${text} | ${med(c, "msPerMessage").toFixed(2)} | ${
          med(r, "msPerMessage").toFixed(2)
        } | ${med(c, "cpuMsPerMessage").toFixed(2)} | ${med(r, "cpuMsPerMessage").toFixed(2)} | ${
          (med(c, "bytesPerMessage") / 1024).toFixed(1)
        } | ${(med(r, "bytesPerMessage") / 1024).toFixed(1)} | ${
          (med(c, "cpuMsPerMessage") / med(r, "cpuMsPerMessage")).toFixed(1)
        }× | ${med(g, "msPerMessage").toFixed(2)} / ${med(g, "cpuMsPerMessage").toFixed(2)} |`,
      );
    }
  }
  lines.push(
    "",
    `Reads, one member's resume after ${REPLAY} group messages (ms, medians of ${REPS} × ${READERS} members):`,
    "",
    "| text | copies: one range read | refs + getMany (10 keys each) | refs + one range read of the group stream | as the gateway reads them (packs) |",
    "| --- | --- | --- | --- | --- |",
  );
  for (const text of TEXTS) {
    const m = (design: ReadDesign) => median(reads.get(`${design}|${text}`)!).toFixed(2);
    lines.push(
      `| ${text} | ${m("copies")} | ${m("refs_getmany")} | ${m("refs_range")} | ${m("gateway")} |`,
    );
  }
  return lines.join("\n");
}

await main();
