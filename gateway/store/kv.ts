/**
 * Deno KV engine of the store. Keys:
 *   ["user", appId, uid]                  → User
 *   ["token", tokenHash]                  → AuthTokenRecord (the hash only, never the token)
 *   ["meta", appId, uid]                  → UserMetaRecord
 *   ["session", appId, uid, sessionId]    → SessionRecord (one key each: KV values max 64 KiB)
 *   ["held", appId, uid]                  → true while the user holds a connection
 *   ["event", appId, uid, firstSeq]       → { pack: StoredEvent[] }: consecutive events of the
 *                                           user's stream from firstSeq on (older stores hold
 *                                           one `{ at, body }` per seq; both are read)
 *   ["sent", appId, uid, clientMessageId] → SendRecord (idempotent sends)
 *   ["group", appId, guid]                → Group
 *   ["profile", appId, uid]               → ProfileRecord (roles, friends)
 *   ["redo", time, n]                     → { chunks }: marks a redo log as written (it counts)
 *   ["redo_log", time, n, i]              → chunk i of that log: one group commit's changes
 *
 * The write path is a log, as in an LSM tree: a group commit writes its changes, encoded, as a
 * few large values under ["redo_log"] and a marker (`saveUserStates`), and nothing else. One
 * row per event and per user instead costs a SQLite B-tree page per user: a send to 1 000 users
 * touches 1 000 pages, several times the log's cost (bench/comparisons.md has the figures).
 * What the logs hold and the keyed rows do not yet is also kept in memory (`Pending`), and every
 * read merges it in. Once the logs since the last compaction pass `compactAfterBytes`, or writes
 * pause for `compactWhenIdleMs`, a compaction writes their changes to the keyed rows, each user's
 * new events packed into one row, and removes those logs; a start-up first does the same with the
 * logs it finds. A crash anywhere loses nothing a write acknowledged: until a log is removed, the
 * next start-up applies it again, and applying is idempotent.
 *
 * Events and send records are written with `expireIn` = the retention; KV deletes them some
 * time after that, and readers skip older ones meanwhile.
 */
import type { Group, User } from "../../contract/mod.ts";
import { authTokenHash } from "../credential.ts";
import type {
  AuthTokenRecord,
  GatewayStore,
  ProfileRecord,
  SendRecord,
  SessionRecord,
  StoredEvent,
  UserMetaRecord,
  UserStateChange,
  UserStateRecord,
} from "./types.ts";

/** Deno KV allows at most 1000 mutations in one atomic operation; keep a margin. */
const MAX_MUTATIONS_PER_COMMIT = 800;
/** Deno KV limits the total size of one atomic operation (800 KiB); keep a margin. */
const MAX_BYTES_PER_COMMIT = 500_000;
/**
 * A compaction's commits stay small: the log writes of live traffic queue behind each one
 * (SQLite has one writer), and a send waits for its log write.
 */
const COMPACTION_MUTATIONS_PER_COMMIT = 100;
/** What a mutation costs besides its value: its key and bookkeeping (an estimate). */
const MUTATION_OVERHEAD_BYTES = 200;
/** A redo log is stored in chunks of this many bytes (a KV value holds at most 64 KiB). */
const REDO_CHUNK_BYTES = 60_000;
/** An event pack's budget, counting 2 bytes per character (V8 stores some strings so). */
const PACK_BYTES = 60_000;

/** Log bytes written since the last compaction that start the next one (64 MiB). */
export const DEFAULT_COMPACT_AFTER_BYTES = 64 * 1024 * 1024;

const utf8 = new TextEncoder();

export interface KvStoreOptions {
  /** See `DEFAULT_COMPACT_AFTER_BYTES`; 0 compacts after every write. */
  compactAfterBytes?: number;
  /** A compaction also starts once no write has come for this long (default 1 s; 0: never). */
  compactWhenIdleMs?: number;
}

/** One user's changes that a redo log holds and the keyed rows may not yet. */
interface PendingUser {
  readonly appId: string;
  readonly uid: string;
  meta: UserMetaRecord;
  /** Sessions written (the record) or deleted (null): the last change of each. */
  sessions: Map<string, SessionRecord | null>;
  /**
   * Appended events, in seq order, as columns (one object per event would be copied by every
   * young-generation collection it survives).
   */
  events: { seqs: number[]; ats: number[]; bodies: string[] };
  sendRecords: Map<string, SendRecord>;
  /** Events below this seq are dropped (retention by count); 0: none. */
  dropBelow: number;
  retentionMs?: number;
}

/** The changes of a run of redo logs, merged per user, and those logs. */
class Pending {
  /** By app, then uid (no key string to build per change). */
  readonly #apps = new Map<string, Map<string, PendingUser>>();
  readonly logs: Array<{ id: Deno.KvKeyPart[]; chunks: number }> = [];
  bytes = 0;

  get(appId: string, uid: string): PendingUser | undefined {
    return this.#apps.get(appId)?.get(uid);
  }

  *users(): Generator<PendingUser> {
    for (const users of this.#apps.values()) yield* users.values();
  }

  merge(change: UserStateChange): void {
    let users = this.#apps.get(change.appId);
    if (users === undefined) this.#apps.set(change.appId, users = new Map());
    let user = users.get(change.uid);
    if (user === undefined) {
      user = {
        appId: change.appId,
        uid: change.uid,
        meta: change.meta,
        sessions: new Map(),
        events: { seqs: [], ats: [], bodies: [] },
        sendRecords: new Map(),
        dropBelow: 0,
      };
      users.set(change.uid, user);
    }
    user.meta = change.meta;
    if (change.retentionMs !== undefined) user.retentionMs = change.retentionMs;
    for (const session of change.putSessions) user.sessions.set(session.sessionId, session);
    for (const sessionId of change.deleteSessions) user.sessions.set(sessionId, null);
    const { seqs, ats, bodies } = user.events;
    for (const event of change.appendEvents ?? []) {
      seqs.push(event.seq);
      ats.push(event.at);
      bodies.push(event.body);
    }
    if (change.dropEvents !== undefined) {
      user.dropBelow = Math.max(user.dropBelow, change.dropEvents.below);
    }
    for (const record of change.sendRecords ?? []) {
      user.sendRecords.set(record.clientMessageId, record);
    }
  }
}

export class KvStore implements GatewayStore {
  readonly #kv: Deno.Kv;
  readonly #compactAfterBytes: number;
  readonly #compactWhenIdleMs: number;
  /** When the last write landed, and the timer that compacts once writes pause. */
  #lastWriteAt = 0;
  #idleTimer: ReturnType<typeof setTimeout> | null = null;
  /** Changes in logs written since the last compaction began. */
  #live = new Pending();
  /** Changes the running (or a failed) compaction writes; reads see them until it is done. */
  #compacting: Pending | null = null;
  #compaction: Promise<void> | null = null;
  #redoCount = 0;
  #closed = false;
  /**
   * The buffer logs are encoded into, reused: a fresh array per write (tens of MB per second
   * under load) counts as external memory, which makes V8 collect garbage more often.
   */
  #buffer = new Uint8Array(256 * 1024);
  /** A write is under way (and holds `#buffer`). */
  #saving = false;
  /**
   * Users whose `held` row is on disk, as far as this process knows: a compaction skips
   * writing it again. Bounded by the users holding a connection.
   */
  readonly #heldOnDisk = new Set<string>();

  private constructor(kv: Deno.Kv, options: KvStoreOptions) {
    this.#kv = kv;
    this.#compactAfterBytes = options.compactAfterBytes ?? DEFAULT_COMPACT_AFTER_BYTES;
    this.#compactWhenIdleMs = options.compactWhenIdleMs ?? 1_000;
  }

  /** Opens the store; without a path, the platform's own KV (Deno Deploy). */
  static async open(path: string | undefined, options: KvStoreOptions = {}): Promise<KvStore> {
    const store = new KvStore(await Deno.openKv(path), options);
    for await (const entry of store.#kv.list({ prefix: ["held"] })) {
      store.#heldOnDisk.add(userKey(String(entry.key[1]), String(entry.key[2])));
    }
    await store.#recoverRedo();
    await store.#hashLegacyTokens(authTokenHash);
    return store;
  }

  async createUser(appId: string, user: User): Promise<boolean> {
    const key = ["user", appId, user.uid];
    const result = await this.#kv.atomic().check({ key, versionstamp: null }).set(key, user)
      .commit();
    return result.ok;
  }

  async getUser(appId: string, uid: string): Promise<User | null> {
    return (await this.#kv.get<User>(["user", appId, uid])).value;
  }

  async putAuthToken(record: AuthTokenRecord): Promise<void> {
    await this.#kv.set(["token", record.tokenHash], record);
  }

  async getAuthToken(tokenHash: string): Promise<AuthTokenRecord | null> {
    return (await this.#kv.get<AuthTokenRecord>(["token", tokenHash])).value;
  }

  async deleteAuthToken(appId: string, uid: string, tokenHash: string): Promise<boolean> {
    const entry = await this.#kv.get<AuthTokenRecord>(["token", tokenHash]);
    if (entry.value === null || entry.value.appId !== appId || entry.value.uid !== uid) {
      return false;
    }
    const result = await this.#kv.atomic().check(entry).delete(["token", tokenHash]).commit();
    return result.ok;
  }

  /**
   * Stores written before tokens were hashed keep the token itself as the key: each such
   * entry is rewritten under its hash, once, at open.
   */
  async #hashLegacyTokens(hash: (token: string) => string): Promise<number> {
    let moved = 0;
    for await (
      const entry of this.#kv.list<AuthTokenRecord & { authToken?: string }>({
        prefix: ["token"],
      })
    ) {
      const legacy = entry.value.authToken;
      if (legacy === undefined) continue;
      const { authToken: _dropped, ...rest } = entry.value;
      const record: AuthTokenRecord = { ...rest, tokenHash: hash(legacy) };
      await this.#kv.atomic().check(entry).delete(entry.key).set(
        ["token", record.tokenHash],
        record,
      )
        .commit();
      moved++;
    }
    return moved;
  }

  async loadUserState(appId: string, uid: string): Promise<UserStateRecord | null> {
    const pending = this.#pendingOf(appId, uid);
    const stored = (await this.#kv.get<UserMetaRecord>(["meta", appId, uid])).value;
    const meta = pending.at(-1)?.meta ?? stored;
    if (meta === null) return null;
    const sessions = new Map<string, SessionRecord>();
    if (stored !== null) {
      for await (
        const entry of this.#kv.list<SessionRecord>({ prefix: ["session", appId, uid] })
      ) {
        sessions.set(entry.value.sessionId, entry.value);
      }
    }
    for (const user of pending) {
      for (const [sessionId, session] of user.sessions) {
        if (session === null) sessions.delete(sessionId);
        else sessions.set(sessionId, session);
      }
    }
    return { appId, uid, meta, sessions: [...sessions.values()] };
  }

  /**
   * One group commit: its changes, encoded, as a redo log and its marker. A log that fits one
   * KV commit is one atomic commit. A larger one (a send to a large group, a burst of sends)
   * takes several, and the marker comes last: it is the commit point, so a crash before it
   * leaves chunks that never count (the next start-up removes them), never part of a write.
   */
  async saveUserStates(changes: UserStateChange[]): Promise<void> {
    if (changes.length === 0) return;
    if (this.#closed) throw new Error("the store is closed");
    const id = [Date.now(), ++this.#redoCount];
    const text = encodeLog(changes);
    // Writes are serial (the state writer's flushes); one that is not gets a buffer of its own.
    let buffer = this.#saving ? new Uint8Array(text.length * 3) : this.#buffer;
    if (buffer.length < text.length * 3) buffer = this.#buffer = new Uint8Array(text.length * 3);
    const log = buffer.subarray(0, utf8.encodeInto(text, buffer).written);
    const chunks = Math.ceil(log.length / REDO_CHUNK_BYTES);
    const parts: Mutation[] = Array.from({ length: chunks }, (_, i) => {
      const chunk = log.subarray(i * REDO_CHUNK_BYTES, (i + 1) * REDO_CHUNK_BYTES);
      return { key: ["redo_log", ...id, i], value: chunk, size: chunk.length };
    });
    const marker: Mutation = { key: ["redo", ...id], value: { chunks }, size: 20 };
    const ownsBuffer = buffer === this.#buffer;
    if (ownsBuffer) this.#saving = true;
    try {
      if (fitsOneCommit([...parts, marker])) await this.#commitAll([...parts, marker]);
      else {
        await this.#commitAll(parts);
        await this.#commitAll([marker]);
      }
    } finally {
      if (ownsBuffer) this.#saving = false;
    }
    for (const change of changes) this.#live.merge(change);
    this.#live.logs.push({ id, chunks });
    this.#live.bytes += log.length;
    this.#lastWriteAt = performance.now();
    if (this.#live.bytes >= this.#compactAfterBytes) this.#compactInBackground();
    else if (this.#idleTimer === null && this.#compactWhenIdleMs > 0) this.#armIdle();
  }

  /** Starts a compaction unless one runs; its failure leaves the logs for the next one. */
  #compactInBackground(): void {
    if (this.#compaction !== null || this.#closed) return;
    this.#compaction = this.compact().catch(() => {
      // The logs stay: the next write past the threshold, a pause, or a start-up tries again
      // (a pause counts from now: a failing disk is not retried in a loop).
      this.#lastWriteAt = performance.now();
    }).finally(() => {
      this.#compaction = null;
      // Logs that landed meanwhile wait for the next pause, even if no write comes to arm it.
      const waiting = (this.#live.logs.length > 0 || this.#compacting !== null) &&
        this.#idleTimer === null;
      if (waiting && this.#compactWhenIdleMs > 0 && !this.#closed) this.#armIdle();
    });
  }

  /**
   * Compacts once writes pause for `compactWhenIdleMs`: what a burst left is written out when it
   * ends, instead of waiting in memory for the next `compactAfterBytes` of logs.
   */
  #armIdle(): void {
    const due = this.#lastWriteAt + this.#compactWhenIdleMs;
    const timer = setTimeout(() => {
      this.#idleTimer = null;
      if (performance.now() < this.#lastWriteAt + this.#compactWhenIdleMs) this.#armIdle();
      else this.#compactInBackground();
    }, Math.max(0, due - performance.now()));
    // A store waiting to compact does not keep the process alive.
    Deno.unrefTimer(timer);
    this.#idleTimer = timer;
  }

  /**
   * Writes what the logs hold to the keyed rows, then removes the logs. Writes that land
   * meanwhile go to the next round. The store calls it by itself; public for tests and tools.
   */
  async compact(): Promise<void> {
    await this.#compact(false);
  }

  /**
   * `recovering`: the logs were found at start-up, and a compaction cut by a crash may have
   * written some of their events already, in packs cut elsewhere. Those rows are replaced, so
   * that no two rows of a stream overlap (readers rely on it).
   */
  async #compact(recovering: boolean): Promise<void> {
    // A compaction that failed is finished first: newer changes may not land under it.
    if (this.#compacting === null) {
      if (this.#live.logs.length === 0) return;
      this.#compacting = this.#live;
      this.#live = new Pending();
    }
    const pending = this.#compacting;
    const rows: Mutation[] = [];
    for (const user of pending.users()) rows.push(...await this.#rowsOf(user, recovering));
    // In key order: consecutive writes land on the same B-tree pages (a key is written once
    // per compaction, so the order is free).
    rows.sort((a, b) => compareKeys(a.key, b.key));
    // A key both deleted (an overlapping row) and written (a new pack) is only written.
    const written = rows.filter((row, i) =>
      !(!("value" in row) && i + 1 < rows.length && compareKeys(row.key, rows[i + 1].key) === 0)
    );
    try {
      await this.#commitAll(written, COMPACTION_MUTATIONS_PER_COMMIT);
    } catch (error) {
      // Which `held` rows landed is not known now: the next compaction writes them.
      for (const user of pending.users()) this.#heldOnDisk.delete(userKey(user.appId, user.uid));
      throw error;
    }
    for (const user of pending.users()) {
      const key = userKey(user.appId, user.uid);
      if (user.meta.held) this.#heldOnDisk.add(key);
      else this.#heldOnDisk.delete(key);
    }
    // The markers first: chunks of a log whose marker is gone are removed at the next open.
    await this.#commitAll(
      pending.logs.flatMap(({ id, chunks }) => [
        { key: ["redo", ...id], size: 0 },
        ...Array.from({ length: chunks }, (_, i) => ({ key: ["redo_log", ...id, i], size: 0 })),
      ]),
      COMPACTION_MUTATIONS_PER_COMMIT,
    );
    this.#compacting = null;
  }

  /** The keyed rows of one user's pending changes (idempotent: a crash may write them twice). */
  async #rowsOf(user: PendingUser, recovering: boolean): Promise<Mutation[]> {
    const { appId, uid } = user;
    const rows: Mutation[] = [];
    const first = user.events.seqs[0];
    if (recovering && first !== undefined) rows.push(...await this.#overlapRows(user, first));
    const expireIn = user.retentionMs;
    if (user.dropBelow > 0) {
      rows.push(...await this.#dropRows(appId, uid, user.dropBelow, expireIn));
    }
    let pack: StoredEvent[] = [];
    let bytes = 0;
    const flush = () => {
      if (pack.length === 0) return;
      rows.push(packRow(["event", appId, uid], pack, expireIn));
      pack = [];
      bytes = 0;
    };
    for (const event of eventsOfPending(user)) {
      if (event.seq < user.dropBelow) continue;
      const cost = packCost(event);
      if (bytes + cost > PACK_BYTES) flush();
      pack.push(event);
      bytes += cost;
    }
    flush();
    rows.push({ key: ["meta", appId, uid], value: user.meta, size: 100 });
    if (!user.meta.held) rows.push({ key: ["held", appId, uid], size: 0 });
    else if (!this.#heldOnDisk.has(userKey(appId, uid))) {
      rows.push({ key: ["held", appId, uid], value: true, size: 0 });
    }
    for (const [sessionId, session] of user.sessions) {
      rows.push(
        session === null
          ? { key: ["session", appId, uid, sessionId], size: 0 }
          : { key: ["session", appId, uid, sessionId], value: session, size: 300 },
      );
    }
    for (const record of user.sendRecords.values()) {
      rows.push({
        key: ["sent", appId, uid, record.clientMessageId],
        value: record,
        expireIn,
        size: record.body.length,
      });
    }
    return rows;
  }

  /**
   * Rows of a user's stream from `first` on (they hold events the pending ones repeat) go; a row
   * across `first` keeps its part below it. The pending events are written again after.
   */
  async #overlapRows(user: PendingUser, first: number): Promise<Mutation[]> {
    const rows: Mutation[] = [];
    const prefix = ["event", user.appId, user.uid];
    const before = await this.#kv.list<StoredRow>(
      { prefix, end: [...prefix, first] },
      { reverse: true, limit: 1 },
    ).next();
    if (!before.done) {
      const events = eventsOf(before.value);
      if (events.at(-1)!.seq >= first) {
        const kept = events.filter((event) => event.seq < first);
        rows.push(packRow(prefix, kept, user.retentionMs));
      }
    }
    for await (const entry of this.#kv.list<StoredRow>({ prefix, start: [...prefix, first] })) {
      rows.push({ key: entry.key, size: 0 });
    }
    return rows;
  }

  /** Deletes a user's stored events below `below`; a pack across it keeps its upper part. */
  async #dropRows(
    appId: string,
    uid: string,
    below: number,
    expireIn: number | undefined,
  ): Promise<Mutation[]> {
    const rows: Mutation[] = [];
    const prefix = ["event", appId, uid];
    for await (const entry of this.#kv.list<StoredRow>({ prefix, end: [...prefix, below] })) {
      rows.push({ key: entry.key, size: 0 });
      const kept = eventsOf(entry).filter((event) => event.seq >= below);
      if (kept.length > 0) rows.push(packRow(prefix, kept, expireIn));
    }
    return rows;
  }

  /**
   * Start-up: the logs a crash (or a stop) left are applied, in write order, before anything
   * is read; chunks of logs that never reached their commit point are removed.
   */
  async #recoverRedo(): Promise<void> {
    const markers: Array<Deno.KvEntry<{ chunks: number }>> = [];
    for await (const entry of this.#kv.list<{ chunks: number }>({ prefix: ["redo"] })) {
      markers.push(entry);
    }
    const counted = new Set<string>();
    for (const marker of markers) {
      const id = marker.key.slice(1);
      const parts: Uint8Array[] = [];
      for await (const entry of this.#kv.list<Uint8Array>({ prefix: ["redo_log", ...id] })) {
        parts.push(entry.value);
      }
      if (parts.length !== marker.value.chunks) {
        throw new Error(
          `redo log ${id.join("/")} holds ${parts.length} of ${marker.value.chunks} chunks`,
        );
      }
      const log = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
      parts.reduce((at, part) => (log.set(part, at), at + part.length), 0);
      const changes = decodeLog(new TextDecoder().decode(log));
      for (const change of changes) this.#live.merge(change);
      this.#live.logs.push({ id, chunks: marker.value.chunks });
      this.#live.bytes += log.length;
      counted.add(JSON.stringify(id));
    }
    await this.#compact(true);
    const leftovers: Mutation[] = [];
    for await (const entry of this.#kv.list({ prefix: ["redo_log"] })) {
      if (!counted.has(JSON.stringify(entry.key.slice(1, -1)))) {
        leftovers.push({ key: entry.key, size: 0 });
      }
    }
    await this.#commitAll(leftovers);
  }

  /** Writes `mutations` in order, in as few commits as the limits (and `perCommit`) allow. */
  async #commitAll(
    mutations: readonly Mutation[],
    perCommit = MAX_MUTATIONS_PER_COMMIT,
  ): Promise<void> {
    let op = this.#kv.atomic();
    let count = 0;
    let bytes = 0;
    for (const mutation of mutations) {
      const cost = mutation.size + MUTATION_OVERHEAD_BYTES;
      if (count > 0 && (count >= perCommit || bytes + cost > MAX_BYTES_PER_COMMIT)) {
        await commit(op);
        op = this.#kv.atomic();
        count = 0;
        bytes = 0;
      }
      if (!("value" in mutation)) op.delete(mutation.key);
      else op.set(mutation.key, mutation.value, { expireIn: mutation.expireIn });
      count++;
      bytes += cost;
    }
    if (count > 0) await commit(op);
  }

  /** A user's pending changes, oldest first (the compaction's, then the live ones). */
  #pendingOf(appId: string, uid: string): PendingUser[] {
    const found: PendingUser[] = [];
    const compacting = this.#compacting?.get(appId, uid);
    if (compacting !== undefined) found.push(compacting);
    const live = this.#live.get(appId, uid);
    if (live !== undefined) found.push(live);
    return found;
  }

  async readEvents(
    appId: string,
    uid: string,
    afterSeq: number,
    limit: number,
  ): Promise<StoredEvent[]> {
    if (limit <= 0) return [];
    // Taken before the rows are read: what a compaction moves meanwhile is in one or the other.
    // So the two are merged by seq, not taken in turn (a row can land between two reads).
    const pending = this.#pendingOf(appId, uid);
    const from = Math.max(afterSeq + 1, ...pending.map((user) => user.dropBelow));
    const found = new Map<number, StoredEvent>();
    const add = (event: StoredEvent) => {
      if (event.seq >= from && !found.has(event.seq)) found.set(event.seq, event);
    };
    for (const user of pending) eventsOfPending(user, from).forEach(add);
    const prefix = ["event", appId, uid];
    // The row that holds `from` may start below it.
    const first = await this.#kv.list<StoredRow>(
      { prefix, end: [...prefix, from + 1] },
      { reverse: true, limit: 1 },
    ).next();
    let stored = 0;
    if (!first.done) {
      for (const event of eventsOf(first.value)) if (event.seq >= from) add(event), stored++;
    }
    if (stored < limit) {
      for await (
        const entry of this.#kv.list<StoredRow>(
          { prefix, start: [...prefix, from + 1] },
          { batchSize: Math.min(limit, 100) },
        )
      ) {
        for (const event of eventsOf(entry)) add(event), stored++;
        if (stored >= limit) break;
      }
    }
    // The first `limit` by seq (retention may have removed some below the rest).
    return [...found.values()].sort((a, b) => a.seq - b.seq).slice(0, limit);
  }

  async getSendRecord(
    appId: string,
    uid: string,
    clientMessageId: string,
  ): Promise<SendRecord | null> {
    for (const user of this.#pendingOf(appId, uid).reverse()) {
      const record = user.sendRecords.get(clientMessageId);
      if (record !== undefined) return record;
    }
    return (await this.#kv.get<SendRecord>(["sent", appId, uid, clientMessageId])).value;
  }

  async createGroup(appId: string, group: Group): Promise<boolean> {
    const key = ["group", appId, group.guid];
    const result = await this.#kv.atomic().check({ key, versionstamp: null }).set(key, group)
      .commit();
    return result.ok;
  }

  async getGroup(appId: string, guid: string): Promise<Group | null> {
    return (await this.#kv.get<Group>(["group", appId, guid])).value;
  }

  async updateGroup<R>(
    appId: string,
    guid: string,
    update: (group: Group) => { group: Group } | { refuse: R },
  ): Promise<{ group: Group } | { refuse: R } | null> {
    const key = ["group", appId, guid];
    for (;;) {
      const entry = await this.#kv.get<Group>(key);
      if (entry.value === null) return null;
      const outcome = update(entry.value);
      if ("refuse" in outcome) return outcome;
      const result = await this.#kv.atomic().check(entry).set(key, outcome.group).commit();
      if (result.ok) return outcome;
    }
  }

  async getProfile(appId: string, uid: string): Promise<ProfileRecord | null> {
    return (await this.#kv.get<ProfileRecord>(["profile", appId, uid])).value;
  }

  async putProfile(appId: string, uid: string, profile: ProfileRecord): Promise<void> {
    await this.#kv.set(["profile", appId, uid], profile);
  }

  async listHeldUsers(): Promise<Array<{ appId: string; uid: string }>> {
    const held = new Map<string, { appId: string; uid: string }>();
    for await (const entry of this.#kv.list<true>({ prefix: ["held"] })) {
      const [appId, uid] = [String(entry.key[1]), String(entry.key[2])];
      held.set(userKey(appId, uid), { appId, uid });
    }
    for (const pending of [this.#compacting, this.#live]) {
      for (const user of pending?.users() ?? []) {
        const key = userKey(user.appId, user.uid);
        if (user.meta.held) held.set(key, { appId: user.appId, uid: user.uid });
        else held.delete(key);
      }
    }
    return [...held.values()];
  }

  /**
   * Closes the store. Logs not compacted yet stay on disk (the next open applies them); a
   * compaction under way ends first (the store closes when it has).
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
    if (this.#compaction !== null) await this.#compaction;
    this.#kv.close();
  }
}

function userKey(appId: string, uid: string): string {
  return `${appId}\u0000${uid}`;
}

/**
 * A redo log's text. JSON-encoding the changes whole would escape every message body again (they
 * are JSON already), so each change is a line of JSON without its events, followed by one line
 * per event: `seq at body`. Bodies are JSON text, which has no raw line break; any other body
 * is written JSON-encoded, after a "!". A large body already in the log (a group message, once
 * per member) is written as "=" and the number of the event line that holds it; small ones are
 * not looked up (hashing every body costs more than writing small ones again).
 */
function encodeLog(changes: readonly UserStateChange[]): string {
  let text = LOG_FORMAT;
  const written = new Map<string, number>();
  let line = 0;
  for (const change of changes) {
    const events = change.appendEvents ?? [];
    const { meta } = change;
    const header: LogHeader = [
      change.appId,
      change.uid,
      meta.lastSeenAt,
      meta.held ? 1 : 0,
      meta.seqReservedTo ?? null,
      meta.epoch ?? null,
      change.putSessions.length > 0 ? change.putSessions : 0,
      change.deleteSessions.length > 0 ? change.deleteSessions : 0,
      change.dropEvents ?? 0,
      change.sendRecords ?? 0,
      change.retentionMs ?? null,
      events.length,
    ];
    text += JSON.stringify(header) + "\n";
    for (const { seq, at, body } of events) {
      const shared = body.length >= SHARED_BODY_CHARS;
      const earlier = shared ? written.get(body) : undefined;
      if (earlier !== undefined) text += `${seq} ${at} =${earlier}\n`;
      else {
        text += `${seq} ${at} ${eventBody(body)}\n`;
        if (shared) written.set(body, line);
      }
      line++;
    }
  }
  return text;
}

/** Bodies of at least this many characters are written once per log. */
const SHARED_BODY_CHARS = 1_024;

/** The first line of a log in the format of `encodeLog` (older logs are a JSON array). */
const LOG_FORMAT = "log/2\n";

/**
 * A change's line in a log: an array, so that no field name is repeated in every line (the
 * headers were a third of a fan-out's log). Empty lists and absent parts are 0.
 */
type LogHeader = [
  appId: string,
  uid: string,
  lastSeenAt: number | null,
  held: 0 | 1,
  seqReservedTo: number | null,
  epoch: string | null,
  putSessions: SessionRecord[] | 0,
  deleteSessions: string[] | 0,
  dropEvents: NonNullable<UserStateChange["dropEvents"]> | 0,
  sendRecords: SendRecord[] | 0,
  retentionMs: number | null,
  events: number,
];

/** Fails to compile when the meta record gains a field that `LogHeader` does not carry. */
const _metaInLogHeader: Record<keyof UserMetaRecord, true> = {
  lastSeenAt: true,
  held: true,
  seqReservedTo: true,
  epoch: true,
};

function decodeLog(text: string): UserStateChange[] {
  if (!text.startsWith(LOG_FORMAT)) return JSON.parse(text) as UserStateChange[];
  const lines = text.slice(LOG_FORMAT.length).split("\n");
  const changes: UserStateChange[] = [];
  /** The body of each event line so far. */
  const bodies: string[] = [];
  for (let i = 0; i < lines.length && lines[i] !== "";) {
    const [
      appId,
      uid,
      lastSeenAt,
      held,
      seqReservedTo,
      epoch,
      putSessions,
      deleteSessions,
      drop,
      sendRecords,
      retention,
      count,
    ] = JSON.parse(lines[i++]) as LogHeader;
    const meta: UserMetaRecord = { lastSeenAt, held: held === 1 };
    if (seqReservedTo !== null) meta.seqReservedTo = seqReservedTo;
    if (epoch !== null) meta.epoch = epoch;
    const change: UserStateChange = {
      appId,
      uid,
      meta,
      putSessions: putSessions === 0 ? [] : putSessions,
      deleteSessions: deleteSessions === 0 ? [] : deleteSessions,
    };
    if (drop !== 0) change.dropEvents = drop;
    if (sendRecords !== 0) change.sendRecords = sendRecords;
    if (retention !== null) change.retentionMs = retention;
    if (count > 0) {
      change.appendEvents = lines.slice(i, i += count).map((line) => {
        const [seq, at, rest] = splitEventLine(line);
        const body = rest[0] === "=" ? bodies[Number(rest.slice(1))] : parseEventBody(rest);
        bodies.push(body);
        return { seq, at, body };
      });
    }
    changes.push(change);
  }
  return changes;
}

/** An event row as stored: a pack (`packText`), or in stores written before packs one event. */
type StoredRow = string | { at: number; body: string };

function eventsOf(entry: Deno.KvEntry<StoredRow>): StoredEvent[] {
  const row = entry.value;
  if (typeof row === "string") return eventsOfPack(row);
  return [{ seq: Number(entry.key[3]), at: row.at, body: row.body }];
}

/**
 * A pack of consecutive events as one string of lines `seq at body`, as in a redo log
 * (`encodeLog`): a string is stored as it is, where objects cost V8 serialization per event.
 */
function packText(events: readonly StoredEvent[]): string {
  let text = "";
  for (const { seq, at, body } of events) text += `${seq} ${at} ${eventBody(body)}\n`;
  return text;
}

function eventsOfPack(text: string): StoredEvent[] {
  const lines = text.split("\n");
  lines.pop();
  return lines.map((line) => {
    const [seq, at, body] = splitEventLine(line);
    return { seq, at, body: parseEventBody(body) };
  });
}

/** A body as an event line holds it: itself, or JSON-encoded after "!" (see `encodeLog`). */
function eventBody(body: string): string {
  const raw = !body.includes("\n") && body[0] !== "!" && body[0] !== "=";
  return raw ? body : `!${JSON.stringify(body)}`;
}

function parseEventBody(text: string): string {
  return text[0] === "!" ? JSON.parse(text.slice(1)) as string : text;
}

/** `seq at rest` → [seq, at, rest]. */
function splitEventLine(line: string): [number, number, string] {
  const first = line.indexOf(" ");
  const second = line.indexOf(" ", first + 1);
  return [
    Number(line.slice(0, first)),
    Number(line.slice(first + 1, second)),
    line.slice(second + 1),
  ];
}

/** Deno KV's order of two of the store's keys (their parts are strings or numbers, alike). */
function compareKeys(a: Deno.KvKey, b: Deno.KvKey): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const [x, y] = [a[i], b[i]] as Array<string | number>;
    if (x !== y) return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

/** A user's pending events with seq ≥ `from`. */
function eventsOfPending(user: PendingUser, from = 0): StoredEvent[] {
  const { seqs, ats, bodies } = user.events;
  const events: StoredEvent[] = [];
  for (let i = 0; i < seqs.length; i++) {
    if (seqs[i] >= from) events.push({ seq: seqs[i], at: ats[i], body: bodies[i] });
  }
  return events;
}

/** The row of a pack of consecutive events of the stream under `prefix`, keyed by its first. */
function packRow(
  prefix: Deno.KvKey,
  events: readonly StoredEvent[],
  expireIn: number | undefined,
): Mutation {
  return {
    key: [...prefix, events[0].seq],
    value: packText(events),
    expireIn,
    size: events.reduce((n, event) => n + packCost(event), 0),
  };
}

/** What an event adds to a pack, at most (V8 may store a string with 2 bytes per character). */
function packCost(event: StoredEvent): number {
  return event.body.length * 2 + 40;
}

/** One set (with `value`) or delete of a write, with the size it adds to a commit. */
type Mutation =
  | { key: Deno.KvKey; value: unknown; expireIn?: number; size: number }
  | { key: Deno.KvKey; size: number };

function fitsOneCommit(mutations: readonly Mutation[]): boolean {
  if (mutations.length > MAX_MUTATIONS_PER_COMMIT) return false;
  let bytes = 0;
  for (const mutation of mutations) bytes += mutation.size + MUTATION_OVERHEAD_BYTES;
  return bytes <= MAX_BYTES_PER_COMMIT;
}

async function commit(op: Deno.AtomicOperation): Promise<void> {
  const result = await op.commit();
  if (!result.ok) throw new Error("KV commit of user states failed");
}
