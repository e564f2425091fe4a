/**
 * Deno KV engine of the store. Keys:
 *   ["user", appId, uid]                  → User
 *   ["token", tokenHash]                  → AuthTokenRecord (the hash only, never the token)
 *   ["meta", appId, uid]                  → UserMetaRecord
 *   ["session", appId, uid, sessionId]    → SessionRecord (one key each: KV values max 64 KiB)
 *   ["held", appId, uid]                  → true while the user holds a connection
 *   ["event", appId, uid, seq]            → { at, body }: the user's stream, one key per event
 *   ["sent", appId, uid, clientMessageId] → SendRecord (idempotent sends)
 *   ["group", appId, guid]                → Group
 *   ["profile", appId, uid]               → ProfileRecord (roles, friends)
 *   ["redo", time, n]                     → { chunks }: a large write's redo log counts
 *   ["redo_log", time, n, i]              → chunk i of that log (see `saveUserStates`)
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
/** What a mutation costs besides its value: its key and bookkeeping (an estimate). */
const MUTATION_OVERHEAD_BYTES = 200;
/** A redo log is stored in chunks of this many bytes (a KV value holds at most 64 KiB). */
const REDO_CHUNK_BYTES = 60_000;

const utf8 = new TextEncoder();

export class KvStore implements GatewayStore {
  readonly #kv: Deno.Kv;
  /** Redo logs past their commit point whose write has not landed yet (it failed). */
  readonly #unfinished: Array<{ id: Deno.KvKeyPart[]; chunks: number; mutations: Mutation[] }> = [];
  #redoCount = 0;

  private constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** Opens the store; without a path, the platform's own KV (Deno Deploy). */
  static async open(path: string | undefined): Promise<KvStore> {
    const store = new KvStore(await Deno.openKv(path));
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
    const meta = (await this.#kv.get<UserMetaRecord>(["meta", appId, uid])).value;
    if (meta === null) return null;
    const sessions: SessionRecord[] = [];
    for await (const entry of this.#kv.list<SessionRecord>({ prefix: ["session", appId, uid] })) {
      sessions.push(entry.value);
    }
    return { appId, uid, meta, sessions };
  }

  /**
   * One group commit. A write that fits one KV commit is one atomic commit. A larger one (a send
   * to a large group, a burst of sends) takes several, and a crash between two of them would
   * leave part of it: a user's send whose receivers have the message while its send record is
   * missing, so that the client's retry sends it again. So it goes through a redo log: the
   * changes, encoded, are written first, then a marker makes the log count (the commit point),
   * then the write itself, then the log is removed. A start-up (`open`) finds a marker left by
   * a crash and writes its changes again, before anything is read: all of the write or none.
   */
  async saveUserStates(changes: UserStateChange[]): Promise<void> {
    // A write that failed after its commit point goes first: nothing newer may land under it.
    await this.#finishRedo();
    const mutations = mutationsOf(changes);
    if (fitsOneCommit(mutations)) return await this.#commitAll(mutations);
    const id = [Date.now(), ++this.#redoCount];
    const log = utf8.encode(JSON.stringify(changes));
    const chunks = Math.ceil(log.length / REDO_CHUNK_BYTES);
    await this.#commitAll(Array.from({ length: chunks }, (_, i) => {
      const chunk = log.subarray(i * REDO_CHUNK_BYTES, (i + 1) * REDO_CHUNK_BYTES);
      return { key: ["redo_log", ...id, i], value: chunk, size: chunk.length };
    }));
    await commit(this.#kv.atomic().set(["redo", ...id], { chunks }));
    this.#unfinished.push({ id, chunks, mutations });
    await this.#finishRedo();
  }

  /** Writes the redo logs past their commit point (oldest first), then removes them. */
  async #finishRedo(): Promise<void> {
    while (this.#unfinished.length > 0) {
      const { id, chunks, mutations } = this.#unfinished[0];
      await this.#commitAll(mutations);
      await this.#removeRedo(id, chunks);
      this.#unfinished.shift();
    }
  }

  /** The marker first: chunks of a log whose marker is gone are removed at the next open. */
  async #removeRedo(id: Deno.KvKeyPart[], chunks: number): Promise<void> {
    await commit(this.#kv.atomic().delete(["redo", ...id]));
    await this.#commitAll(
      Array.from({ length: chunks }, (_, i) => ({ key: ["redo_log", ...id, i], size: 0 })),
    );
  }

  /** Start-up: completes the writes a crash cut after their commit point, in write order. */
  async #recoverRedo(): Promise<void> {
    const markers: Array<Deno.KvEntry<{ chunks: number }>> = [];
    for await (const entry of this.#kv.list<{ chunks: number }>({ prefix: ["redo"] })) {
      markers.push(entry);
    }
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
      const changes = JSON.parse(new TextDecoder().decode(log)) as UserStateChange[];
      await this.#commitAll(mutationsOf(changes));
      await commit(this.#kv.atomic().delete(marker.key));
    }
    // Chunks of logs that never reached their commit point, or whose removal was cut short.
    const leftovers: Mutation[] = [];
    for await (const entry of this.#kv.list({ prefix: ["redo_log"] })) {
      leftovers.push({ key: entry.key, size: 0 });
    }
    await this.#commitAll(leftovers);
  }

  /** Writes `mutations` in order, in as few commits as the limits allow. */
  async #commitAll(mutations: readonly Mutation[]): Promise<void> {
    let op = this.#kv.atomic();
    let count = 0;
    let bytes = 0;
    for (const mutation of mutations) {
      const cost = mutation.size + MUTATION_OVERHEAD_BYTES;
      if (count > 0 && (count >= MAX_MUTATIONS_PER_COMMIT || bytes + cost > MAX_BYTES_PER_COMMIT)) {
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

  async readEvents(
    appId: string,
    uid: string,
    afterSeq: number,
    limit: number,
  ): Promise<StoredEvent[]> {
    const events: StoredEvent[] = [];
    if (limit <= 0) return events;
    const prefix = ["event", appId, uid];
    for await (
      const entry of this.#kv.list<{ at: number; body: string }>(
        { prefix, start: [...prefix, afterSeq + 1] },
        { limit, batchSize: Math.min(limit, 500) },
      )
    ) {
      events.push({ seq: Number(entry.key[3]), at: entry.value.at, body: entry.value.body });
    }
    return events;
  }

  async getSendRecord(
    appId: string,
    uid: string,
    clientMessageId: string,
  ): Promise<SendRecord | null> {
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
    const users: Array<{ appId: string; uid: string }> = [];
    for await (const entry of this.#kv.list<true>({ prefix: ["held"] })) {
      users.push({ appId: String(entry.key[1]), uid: String(entry.key[2]) });
    }
    return users;
  }

  close(): void {
    this.#kv.close();
  }
}

/** One set (with `value`) or delete of a write, with the size it adds to a commit. */
type Mutation =
  | { key: Deno.KvKey; value: unknown; expireIn?: number; size: number }
  | { key: Deno.KvKey; size: number };

/** The keys a group commit writes and deletes. */
function mutationsOf(changes: readonly UserStateChange[]): Mutation[] {
  const mutations: Mutation[] = [];
  for (const change of changes) {
    const { appId, uid } = change;
    const expireIn = change.retentionMs;
    for (const event of change.appendEvents ?? []) {
      mutations.push({
        key: ["event", appId, uid, event.seq],
        value: { at: event.at, body: event.body },
        expireIn,
        size: event.body.length,
      });
    }
    const drop = change.dropEvents;
    if (drop !== undefined) {
      for (let seq = drop.from; seq < drop.below; seq++) {
        mutations.push({ key: ["event", appId, uid, seq], size: 0 });
      }
    }
    mutations.push({ key: ["meta", appId, uid], value: change.meta, size: 100 });
    mutations.push(
      change.meta.held
        ? { key: ["held", appId, uid], value: true, size: 0 }
        : { key: ["held", appId, uid], size: 0 },
    );
    for (const session of change.putSessions) {
      mutations.push({
        key: ["session", appId, uid, session.sessionId],
        value: session,
        size: 300,
      });
    }
    for (const sessionId of change.deleteSessions) {
      mutations.push({ key: ["session", appId, uid, sessionId], size: 0 });
    }
    for (const record of change.sendRecords ?? []) {
      mutations.push({
        key: ["sent", appId, uid, record.clientMessageId],
        value: record,
        expireIn,
        size: record.body.length,
      });
    }
  }
  return mutations;
}

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
