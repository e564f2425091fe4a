/**
 * Deno KV engine of the store. Keys:
 *   ["user", appId, uid]                  → User
 *   ["token", tokenHash]                  → AuthTokenRecord (the hash only, never the token)
 *   ["meta", appId, uid]                  → UserMetaRecord
 *   ["session", appId, uid, sessionId]    → SessionRecord (one key each: KV values max 64 KiB)
 *   ["held", appId, uid]                  → true while the user holds a connection
 */
import type { User } from "../../contract/mod.ts";
import { authTokenHash } from "../credential.ts";
import type {
  AuthTokenRecord,
  GatewayStore,
  SessionRecord,
  UserMetaRecord,
  UserStateChange,
  UserStateRecord,
} from "./types.ts";

/** Deno KV allows at most 1000 mutations in one atomic operation; keep a margin. */
const MAX_MUTATIONS_PER_COMMIT = 800;

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
    const add = async (count: number) => {
      if (mutations + count <= MAX_MUTATIONS_PER_COMMIT) return;
      await commit(op);
      op = this.#kv.atomic();
      mutations = 0;
    };
    for (const change of changes) {
      await add(2);
      op.set(["meta", change.appId, change.uid], change.meta);
      if (change.meta.held) op.set(["held", change.appId, change.uid], true);
      else op.delete(["held", change.appId, change.uid]);
      mutations += 2;
      for (const session of change.putSessions) {
        await add(1);
        op.set(["session", change.appId, change.uid, session.sessionId], session);
        mutations++;
      }
      for (const sessionId of change.deleteSessions) {
        await add(1);
        op.delete(["session", change.appId, change.uid, sessionId]);
        mutations++;
      }
    }
    if (mutations > 0) await commit(op);
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
