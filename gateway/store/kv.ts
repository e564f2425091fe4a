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

export class KvStore implements GatewayStore {
  readonly #kv: Deno.Kv;

  private constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** Opens the store; without a path, the platform's own KV (Deno Deploy). */
  static async open(path: string | undefined): Promise<KvStore> {
    const store = new KvStore(await Deno.openKv(path));
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

  async saveUserStates(changes: UserStateChange[]): Promise<void> {
    let op = this.#kv.atomic();
    let mutations = 0;
    let bytes = 0;
    /** Makes room for `count` more mutations of `size` bytes, committing what is queued. */
    const add = async (count: number, size = 0) => {
      const cost = size + count * MUTATION_OVERHEAD_BYTES;
      if (mutations + count <= MAX_MUTATIONS_PER_COMMIT && bytes + cost <= MAX_BYTES_PER_COMMIT) {
        mutations += count;
        bytes += cost;
        return;
      }
      if (mutations > 0) await commit(op);
      op = this.#kv.atomic();
      mutations = count;
      bytes = cost;
    };
    // Changes that carry send records go last: a crash between two commits of one group write
    // can leave a send half-appended, but never remembered as done (a retry completes it).
    const ordered = [
      ...changes.filter((c) => (c.sendRecords?.length ?? 0) === 0),
      ...changes.filter((c) => (c.sendRecords?.length ?? 0) > 0),
    ];
    for (const change of ordered) {
      const { appId, uid } = change;
      const expireIn = change.retentionMs;
      // Events before the meta that says the stream reaches them: within one commit the order
      // does not matter, across commits (a large write) the meta never runs ahead of them.
      for (const event of change.appendEvents ?? []) {
        await add(1, event.body.length);
        op.set(["event", appId, uid, event.seq], { at: event.at, body: event.body }, { expireIn });
      }
      const drop = change.dropEvents;
      if (drop !== undefined) {
        for (let seq = drop.from; seq < drop.below; seq++) {
          await add(1);
          op.delete(["event", appId, uid, seq]);
        }
      }
      await add(2, 100);
      op.set(["meta", appId, uid], change.meta);
      if (change.meta.held) op.set(["held", appId, uid], true);
      else op.delete(["held", appId, uid]);
      for (const session of change.putSessions) {
        await add(1, 300);
        op.set(["session", appId, uid, session.sessionId], session);
      }
      for (const sessionId of change.deleteSessions) {
        await add(1);
        op.delete(["session", appId, uid, sessionId]);
      }
      for (const record of change.sendRecords ?? []) {
        await add(1, record.body.length);
        op.set(["sent", appId, uid, record.clientMessageId], record, { expireIn });
      }
    }
    if (mutations > 0) await commit(op);
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

async function commit(op: Deno.AtomicOperation): Promise<void> {
  const result = await op.commit();
  if (!result.ok) throw new Error("KV commit of user states failed");
}
