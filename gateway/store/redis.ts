/**
 * Redis engine of the store (`STORE=redis`), for gateways that share state. Keys
 * (`redis_keys.ts`; every part percent-encoded, all under the configured prefix):
 *   user:<app>:<uid>             string  User (JSON), created with SET NX
 *   token:<hash>                 string  AuthTokenRecord (JSON), PXAT its `expiresAt` when set
 *   meta:<app>:<uid>             string  UserMetaRecord (JSON)
 *   sess:<app>:<uid>             hash    sessionId → SessionRecord (JSON)
 *   held                         set     `["<app>","<uid>"]` (JSON) of users holding a connection
 *   ev:<app>:<uid>               zset    the user's stream: score = seq, member = `<seq> <at> <body>`
 *   sent:<app>:<uid>:<clientId>  string  SendRecord (JSON), PX the stream's retention
 *   group:<app>:<guid>           string  Group (JSON)
 *   prof:<app>:<uid>             string  ProfileRecord (JSON)
 *   own:<app>:<uid>              string  `<node> <fence>`: the cluster's claim (written by
 *                                        gateway/cluster/, read here to fence commits)
 *
 * Unlike the Deno KV engine, Redis needs no write log: a group commit (`saveUserStates`) is ONE
 * Lua script call (`SAVE_STATES`) that gets every change in its arguments, so Redis applies it
 * as one unit: no other client sees half of it, and with `appendonly yes` Redis 7 writes the
 * script's effects to the append-only file inside MULTI/EXEC, which a restart after a crash
 * replays whole or not at all (a cut transaction at the end of the file is dropped). The script
 * first checks every claim (`owner`) and writes nothing when one is stale. Arguments, not a
 * staged copy: a single call with a few MB of arguments is cheap for Redis (measured with
 * redis-server 7.0 on loopback, median of 20: 600 users with a session each, 0.2 MB of
 * arguments, 9 ms; 1 500 events of 2 KB, 3 MB, 23 ms, or 32 ms with `appendfsync always`), so
 * no commit is split.
 *
 * Round trips: a commit is one EVALSHA (one round trip; after a Redis restart has emptied the
 * script cache, one more: NOSCRIPT, then EVAL). `loadUserState` is one MULTI/EXEC of two reads
 * (one round trip, and a consistent snapshot of meta and sessions). Every other call is one
 * command, except `updateGroup` (a read and a compare-and-set script, again on a concurrent
 * change) and `listHeldUsers` (SSCAN pages).
 *
 * Retention by age: readers (UserState) ignore events older than the retention, so the engine
 * only frees memory: a commit that appends to a stream removes up to `TRIM_PER_APPEND` of its
 * oldest events that are older than the retention measured back from the newest appended event
 * (the writer's clock, as readers measure), and sets the stream key to expire the retention
 * after the last append. Send records expire after the retention (PX).
 *
 * When Redis is away, commands fail at once instead of waiting in a queue (no offline queue; a
 * command in flight when the connection drops is rejected, never sent again by the client): the
 * gateway's StateWriter retries failed commits and acknowledges nothing that was not stored. A
 * commit that did land although its reply was lost is retried with the same content, which
 * writes the same values again. ioredis reconnects with capped exponential backoff;
 * `connected` says whether Redis is usable now (for readiness).
 *
 * Choices that differ from the plain model, and why:
 * - A stream's events are removed by `dropEvents` from -inf, not from `from`: the KV engine drops
 *   everything below `below` too, and nothing below `from` should be left anyway.
 * - The age cutoff counts back from the newest event the commit appends, not from this
 *   process's clock: readers measure with the writer's clock, which is past that event's `at`,
 *   so what the cutoff removes is ignored by every reader already.
 * - An appended seq that the stream holds already replaces that event (a retried commit, or a
 *   change to it): members are unique by their text, so the old member is removed by score.
 * - `loadUserState` reads meta and sessions in one MULTI/EXEC: one round trip, and a snapshot
 *   that no commit lands in the middle of.
 *
 * Requires Redis ≥ 7.0 (script flags, ZRANGE BYSCORE) and a single primary: a commit spans many
 * users' keys, which Redis Cluster cannot update in one script. Keys under the prefix hold only
 * what this engine (and the cluster) writes: a key of another type would fail a script half-way.
 */
import { Redis } from "ioredis";
import type { Group, User } from "../../contract/mod.ts";
import { heldMember, parseHeldMember, RedisKeys } from "./redis_keys.ts";
import {
  type AuthTokenRecord,
  FencedWriteError,
  type GatewayStore,
  type ProfileRecord,
  type SendRecord,
  type SessionRecord,
  type StoredEvent,
  type UserMetaRecord,
  type UserStateChange,
  type UserStateRecord,
} from "./types.ts";

/** Oldest events a commit removes from a stream it appends to, at most (retention by age). */
export const TRIM_PER_APPEND = 100;

export interface RedisStoreOptions {
  /** Put before every key, so that one Redis can hold several gateways (default `lg:`). */
  prefix?: string;
  /**
   * A command waiting this long for any reply from Redis drops the connection (and fails, with
   * every command in flight): a Redis that stopped answering counts as away (default 10 s).
   */
  commandTimeoutMs?: number;
  /** How long one connection attempt may take (default 5 s). */
  connectTimeoutMs?: number;
  /** Shown by CLIENT LIST. */
  connectionName?: string;
  /** Every connection error (refused, reset, timed out); they are not printed otherwise. */
  onError?: (error: Error) => void;
  /**
   * Called when the connection is lost (with the error that came with it; none when Redis
   * closed it) and when it is ready again: once per change, where `onError` repeats for every
   * reconnect attempt.
   */
  onConnectedChange?: (connected: boolean, error: Error | undefined) => void;
}

/**
 * The group commit. Arguments (a change's keys and values follow one another):
 *
 * KEYS: [1] the held set; [2 .. 1+C] the owner key of each of the C claims to check; then per
 *       change: its meta, sessions and stream keys, then the keys of its S send records.
 * ARGV: [1] C; [2 .. 1+C] the value each owner key must hold; [2+C] the number of changes N;
 *       then per change:
 *         heldMember, held ("1" | "0"), meta JSON,
 *         P, P × (sessionId, session JSON),   sessions written
 *         D, D × sessionId,                   sessions deleted
 *         retention (ms, or "" for none),
 *         E, E × (seq, member),               events appended, member = `<seq> <at> <body>`
 *         cutoff (`at` below which events are old, or "" for none),
 *         dropBelow (seq, or "" for none),
 *         S, S × record JSON                  send records (keys in KEYS)
 *
 * Returns the (1-based) numbers of the stale claims; empty when the commit was written. The
 * checks come before any write, so a refused commit writes nothing. Every argument is checked
 * in TypeScript before the call (`encodeChanges`), so no command in the script fails on input:
 * a script that fails half-way keeps its first writes, Redis has no rollback.
 *
 * `#!lua` (no `no-writes` flag) makes Redis refuse the whole script up front when it is out of
 * memory, rather than at its first write.
 */
const SAVE_STATES = `#!lua
local claims = tonumber(ARGV[1])
local stale = {}
for i = 1, claims do
  if redis.call('GET', KEYS[1 + i]) ~= ARGV[1 + i] then stale[#stale + 1] = i end
end
if #stale > 0 then return stale end
local a = 2 + claims
local k = 2 + claims
local changes = tonumber(ARGV[a]); a = a + 1
for _ = 1, changes do
  local metaKey, sessionsKey, eventsKey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  if ARGV[a + 1] == '1' then
    redis.call('SADD', KEYS[1], ARGV[a])
  else
    redis.call('SREM', KEYS[1], ARGV[a])
  end
  redis.call('SET', metaKey, ARGV[a + 2])
  a = a + 3
  local n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    redis.call('HSET', sessionsKey, ARGV[a], ARGV[a + 1]); a = a + 2
  end
  n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    redis.call('HDEL', sessionsKey, ARGV[a]); a = a + 1
  end
  local retention = ARGV[a]; a = a + 1
  n = tonumber(ARGV[a]); a = a + 1
  if n > 0 then
    -- A seq is one event: one written again (a retried commit) replaces the one stored. Only
    -- seqs up to the stream's last need the look-up.
    local last = redis.call('ZRANGE', eventsKey, -1, -1, 'WITHSCORES')
    local top = last[2] and tonumber(last[2])
    for _ = 1, n do
      if top and tonumber(ARGV[a]) <= top then
        redis.call('ZREMRANGEBYSCORE', eventsKey, ARGV[a], ARGV[a])
      end
      redis.call('ZADD', eventsKey, ARGV[a], ARGV[a + 1]); a = a + 2
    end
  end
  local cutoff = ARGV[a]; a = a + 1
  if n > 0 and cutoff ~= '' then
    cutoff = tonumber(cutoff)
    local function old(member)
      local at = tonumber(string.match(member, '^%S+ (%S+)'))
      return at ~= nil and at < cutoff
    end
    local first = redis.call('ZRANGE', eventsKey, 0, 0)
    if first[1] and old(first[1]) then
      local count = 0
      for _, member in ipairs(redis.call('ZRANGE', eventsKey, 0, ${TRIM_PER_APPEND - 1})) do
        if not old(member) then break end
        count = count + 1
      end
      redis.call('ZREMRANGEBYRANK', eventsKey, 0, count - 1)
    end
  end
  if n > 0 and retention ~= '' then redis.call('PEXPIRE', eventsKey, retention) end
  local below = ARGV[a]; a = a + 1
  if below ~= '' then redis.call('ZREMRANGEBYSCORE', eventsKey, '-inf', '(' .. below) end
  n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    if retention ~= '' then
      redis.call('SET', KEYS[k], ARGV[a], 'PX', retention)
    else
      redis.call('SET', KEYS[k], ARGV[a])
    end
    k = k + 1; a = a + 1
  end
end
return stale
`;

/** Deletes a token when it is the user's: KEYS[1] the token; ARGV appId, uid. 1 if deleted. */
const DELETE_TOKEN = `#!lua
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local record = cjson.decode(value)
if record.appId ~= ARGV[1] or record.uid ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`;

/** Sets KEYS[1] to ARGV[2] if it still holds ARGV[1]: 1 if set. */
const COMPARE_AND_SET = `#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`;

const SCRIPTS = {
  saveStates: SAVE_STATES,
  deleteToken: DELETE_TOKEN,
  compareAndSet: COMPARE_AND_SET,
};
type ScriptName = keyof typeof SCRIPTS;

/** Reconnect delays: 100 ms, doubling, at most 2 s (ioredis counts attempts from 1). */
export function reconnectDelayMs(attempt: number): number {
  return Math.min(100 * 2 ** Math.max(0, attempt - 1), 2_000);
}

export class RedisStore implements GatewayStore {
  readonly keys: RedisKeys;
  readonly #redis: Redis;
  /** SHA1 of each script, as SCRIPT LOAD answered at open. */
  readonly #shas: Record<ScriptName, string>;
  #closing: Promise<void> | null = null;

  private constructor(redis: Redis, keys: RedisKeys, shas: Record<ScriptName, string>) {
    this.#redis = redis;
    this.keys = keys;
    this.#shas = shas;
  }

  /**
   * Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS) and
   * loads the scripts; fails, leaving nothing open, when Redis cannot be reached.
   */
  static async open(url: string, options: RedisStoreOptions = {}): Promise<RedisStore> {
    const redis = new Redis(url, {
      lazyConnect: true,
      // Fail at once while Redis is away, instead of queueing until it is back: the caller
      // retries (the StateWriter) or answers with an error.
      enableOfflineQueue: false,
      // A command in flight when the connection drops fails then, and is not sent again.
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      retryStrategy: reconnectDelayMs,
      socketTimeout: options.commandTimeoutMs ?? 10_000,
      connectTimeout: options.connectTimeoutMs ?? 5_000,
      connectionName: options.connectionName,
      // `disconnect()` arms a timer that only the socket's close clears, even when the socket
      // closed long before (Redis away): at 0 it ends at once (see `disconnectNow`).
      disconnectTimeout: 0,
    });
    // Changes are reported from the first loss on (the connect at open is not one).
    let opened = false;
    let wasReady = false;
    let lastError: Error | undefined;
    // Without a listener, ioredis prints every connection error to stderr itself.
    redis.on("error", (error: Error) => {
      lastError = error;
      options.onError?.(error);
    });
    redis.on("ready", () => {
      if (!wasReady && opened) options.onConnectedChange?.(true, undefined);
      wasReady = true;
      lastError = undefined;
    });
    redis.on("close", () => {
      if (wasReady && opened) options.onConnectedChange?.(false, lastError);
      wasReady = false;
    });
    try {
      await redis.connect();
      const names = Object.keys(SCRIPTS) as ScriptName[];
      const pipeline = redis.pipeline();
      for (const name of names) pipeline.script("LOAD", SCRIPTS[name]);
      const loaded = await pipeline.exec();
      const shas = {} as Record<ScriptName, string>;
      names.forEach((name, i) => {
        const [error, sha] = loaded?.[i] ?? [new Error("no reply")];
        if (error) throw error;
        shas[name] = String(sha);
      });
      opened = true;
      return new RedisStore(redis, new RedisKeys(options.prefix ?? "lg:"), shas);
    } catch (error) {
      await disconnectNow(redis);
      throw new Error(`cannot open the Redis store at ${redacted(url)}: ${messageOf(error)}`, {
        cause: error,
      });
    }
  }

  /** Whether Redis answers now: false while the connection is down or being set up again. */
  get connected(): boolean {
    return this.#redis.status === "ready";
  }

  async createUser(appId: string, user: User): Promise<boolean> {
    const key = this.keys.user(appId, user.uid);
    return await this.#redis.set(key, JSON.stringify(user), "NX") === "OK";
  }

  async getUser(appId: string, uid: string): Promise<User | null> {
    return parsed<User>(await this.#redis.get(this.keys.user(appId, uid)));
  }

  async putAuthToken(record: AuthTokenRecord): Promise<void> {
    const key = this.keys.token(record.tokenHash);
    const value = JSON.stringify(record);
    // Redis forgets the token when it expires; login checks `expiresAt` against its own clock.
    if (record.expiresAt === null) await this.#redis.set(key, value);
    else await this.#redis.set(key, value, "PXAT", Math.ceil(record.expiresAt));
  }

  async getAuthToken(tokenHash: string): Promise<AuthTokenRecord | null> {
    return parsed<AuthTokenRecord>(await this.#redis.get(this.keys.token(tokenHash)));
  }

  async deleteAuthToken(appId: string, uid: string, tokenHash: string): Promise<boolean> {
    return await this.#script("deleteToken", [this.keys.token(tokenHash)], [appId, uid]) === 1;
  }

  async loadUserState(appId: string, uid: string): Promise<UserStateRecord | null> {
    const replies = await this.#redis.multi()
      .get(this.keys.meta(appId, uid))
      .hvals(this.keys.sessions(appId, uid))
      .exec();
    const [meta, sessions] = results(replies, 2) as [string | null, string[]];
    if (meta === null && sessions.length === 0) return null;
    const records = sessions.map((json) => JSON.parse(json) as SessionRecord);
    // In sessionId order, as the KV engine lists them (a hash has no order of its own).
    records.sort((a, b) => a.sessionId < b.sessionId ? -1 : a.sessionId > b.sessionId ? 1 : 0);
    return {
      appId,
      uid,
      // Every commit writes meta with its sessions: sessions without it are not expected, and
      // read as a user never seen offline.
      meta: parsed<UserMetaRecord>(meta) ?? { lastSeenAt: null, held: false },
      sessions: records,
    };
  }

  /**
   * One group commit, as one script call: all of it or none, also across a crash of the
   * gateway or of Redis (with `appendonly yes`; see docs/operations.md). Throws
   * `FencedWriteError`, having written nothing, when a change's claim is no longer its user's.
   */
  async saveUserStates(changes: UserStateChange[]): Promise<void> {
    if (changes.length === 0) return;
    if (this.#closing !== null) throw new Error("the store is closed");
    const { keys, args, claimed } = encodeChanges(this.keys, changes);
    let stale: unknown;
    try {
      stale = await this.#script("saveStates", keys, args);
    } catch (error) {
      // ioredis's words name its options ("max retries per request", "offline queue"): the
      // log says what happened instead. A commit whose reply was lost may have been written.
      const what = this.connected ? "failed" : "failed: Redis is not connected";
      throw new Error(`Redis commit ${what} (${messageOf(error)})`, { cause: error });
    }
    if (!Array.isArray(stale)) throw new Error(`unexpected reply to a commit: ${String(stale)}`);
    if (stale.length > 0) {
      throw new FencedWriteError(
        stale.map((n) => {
          const { appId, uid } = claimed[Number(n) - 1];
          return { appId, uid };
        }),
      );
    }
  }

  async listHeldUsers(): Promise<Array<{ appId: string; uid: string }>> {
    // SSCAN, not SMEMBERS: one reply per page, however many users are held. A member can come
    // twice (the set may change between pages), hence the map.
    const held = new Map<string, { appId: string; uid: string }>();
    let cursor = "0";
    do {
      const [next, members] = await this.#redis.sscan(this.keys.held(), cursor, "COUNT", 1_000);
      for (const member of members) {
        const user = parseHeldMember(member);
        if (user !== null) held.set(member, user);
      }
      cursor = next;
    } while (cursor !== "0");
    return [...held.values()];
  }

  async readEvents(
    appId: string,
    uid: string,
    afterSeq: number,
    limit: number,
  ): Promise<StoredEvent[]> {
    if (limit <= 0) return [];
    const members = await this.#redis.zrange(
      this.keys.events(appId, uid),
      Number.isFinite(afterSeq) ? `(${afterSeq}` : "-inf",
      "+inf",
      "BYSCORE",
      "LIMIT",
      0,
      Math.floor(limit),
    );
    return members.map(parseEvent);
  }

  async getSendRecord(
    appId: string,
    uid: string,
    clientMessageId: string,
  ): Promise<SendRecord | null> {
    return parsed<SendRecord>(await this.#redis.get(this.keys.sent(appId, uid, clientMessageId)));
  }

  async createGroup(appId: string, group: Group): Promise<boolean> {
    const key = this.keys.group(appId, group.guid);
    return await this.#redis.set(key, JSON.stringify(group), "NX") === "OK";
  }

  async getGroup(appId: string, guid: string): Promise<Group | null> {
    return parsed<Group>(await this.#redis.get(this.keys.group(appId, guid)));
  }

  async updateGroup<R>(
    appId: string,
    guid: string,
    update: (group: Group) => { group: Group } | { refuse: R },
  ): Promise<{ group: Group } | { refuse: R } | null> {
    const key = this.keys.group(appId, guid);
    for (;;) {
      const read = await this.#redis.get(key);
      if (read === null) return null;
      const outcome = update(JSON.parse(read) as Group);
      if ("refuse" in outcome) return outcome;
      // Set only if nobody changed it since the read; otherwise read again and redo.
      const set = await this.#script("compareAndSet", [key], [read, JSON.stringify(outcome.group)]);
      if (set === 1) return outcome;
    }
  }

  async getProfile(appId: string, uid: string): Promise<ProfileRecord | null> {
    return parsed<ProfileRecord>(await this.#redis.get(this.keys.profile(appId, uid)));
  }

  async putProfile(appId: string, uid: string, profile: ProfileRecord): Promise<void> {
    await this.#redis.set(this.keys.profile(appId, uid), JSON.stringify(profile));
  }

  /**
   * Closes the connection: commands already sent are answered first (QUIT), and it resolves
   * once the socket is closed. While Redis is away, stops reconnecting instead.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const redis = this.#redis;
    const ended = endOf(redis);
    let socket = false;
    if (redis.status === "ready") {
      try {
        await redis.quit();
        socket = true;
      } catch {
        // The connection was lost meanwhile: ended below.
      }
    }
    if (!socket) {
      // A socket being set up is closed; one that is gone leaves a reconnect timer to stop.
      socket = redis.status === "connecting" || redis.status === "connect" ||
        redis.status === "ready";
      await disconnectNow(redis);
    }
    if (socket) await ended.promise;
    else ended.cancel();
  }

  /** Runs a script by its SHA1; one that Redis forgot (a restart) is sent whole. */
  async #script(name: ScriptName, keys: string[], args: string[]): Promise<unknown> {
    // An array, not spread arguments: a large commit has tens of thousands of them.
    const rest: Array<string | number> = [keys.length, ...keys, ...args];
    try {
      return await this.#redis.call("EVALSHA", [this.#shas[name], ...rest]);
    } catch (error) {
      if (!messageOf(error).startsWith("NOSCRIPT")) throw error;
      return await this.#redis.call("EVAL", [SCRIPTS[name], ...rest]);
    }
  }
}

/** The script's arguments for `changes` (see `SAVE_STATES`), and the changes with a claim. */
export function encodeChanges(
  keyNames: RedisKeys,
  changes: readonly UserStateChange[],
): { keys: string[]; args: string[]; claimed: UserStateChange[] } {
  const claimed = changes.filter((change) => change.owner !== undefined);
  const keys = [keyNames.held()];
  const args = [String(claimed.length)];
  for (const change of claimed) {
    const { node, fence } = change.owner!;
    if (!Number.isSafeInteger(fence)) throw new TypeError(`fence ${fence} is not an integer`);
    keys.push(keyNames.owner(change.appId, change.uid));
    args.push(`${node} ${fence}`);
  }
  args.push(String(changes.length));
  for (const change of changes) {
    const { appId, uid } = change;
    keys.push(
      keyNames.meta(appId, uid),
      keyNames.sessions(appId, uid),
      keyNames.events(appId, uid),
    );
    args.push(heldMember(appId, uid), change.meta.held ? "1" : "0", JSON.stringify(change.meta));
    args.push(String(change.putSessions.length));
    for (const session of change.putSessions) {
      args.push(session.sessionId, JSON.stringify(session));
    }
    args.push(String(change.deleteSessions.length), ...change.deleteSessions);
    // PX/PEXPIRE refuse 0, negative and fractional times: anything else means "keep".
    const retention = change.retentionMs !== undefined && change.retentionMs >= 1
      ? String(Math.round(change.retentionMs))
      : "";
    args.push(retention);
    const events = change.appendEvents ?? [];
    args.push(String(events.length));
    let newest = -Infinity;
    for (const { seq, at, body } of events) {
      if (!Number.isFinite(seq) || !Number.isFinite(at)) {
        throw new TypeError(`event ${seq} of ${appId}/${uid}: seq and at must be numbers`);
      }
      args.push(String(seq), `${seq} ${at} ${body}`);
      newest = Math.max(newest, at);
    }
    // Older than the retention, counted back from the newest event appended: readers, whose
    // clock is past that event's, ignore them already.
    args.push(retention !== "" && events.length > 0 ? String(newest - Number(retention)) : "");
    const below = change.dropEvents?.below;
    if (below !== undefined && !Number.isFinite(below)) {
      throw new TypeError(`dropEvents.below of ${appId}/${uid} must be a number`);
    }
    args.push(below === undefined ? "" : String(below));
    const records = change.sendRecords ?? [];
    args.push(String(records.length));
    for (const record of records) {
      keys.push(keyNames.sent(appId, uid, record.clientMessageId));
      args.push(JSON.stringify(record));
    }
  }
  return { keys, args, claimed };
}

/**
 * Stops a connection and its reconnect attempts. ioredis's `disconnect()` leaves a timer of
 * `disconnectTimeout` (0 here) behind when the socket is closed already; it has run once a
 * timer set after it has.
 */
async function disconnectNow(redis: Redis): Promise<void> {
  redis.disconnect();
  await new Promise((resolve) => setTimeout(resolve, 1));
}

/**
 * Resolves once the client has ended (its socket closed, no reconnect to come), or after 2 s:
 * closing never hangs on a socket that does not report its close.
 */
function endOf(redis: Redis): { promise: Promise<void>; cancel(): void } {
  let cancel = () => {};
  const promise = new Promise<void>((resolve) => {
    const timer = setTimeout(() => cancel(), 2_000);
    cancel = () => {
      clearTimeout(timer);
      redis.off("end", cancel);
      resolve();
    };
    redis.once("end", cancel);
  });
  return { promise, cancel };
}

/** `<seq> <at> <body>` → the event (the body is the rest, whatever it holds). */
export function parseEvent(member: string): StoredEvent {
  const first = member.indexOf(" ");
  const second = member.indexOf(" ", first + 1);
  return {
    seq: Number(member.slice(0, first)),
    at: Number(member.slice(first + 1, second)),
    body: member.slice(second + 1),
  };
}

function parsed<T>(json: string | null): T | null {
  return json === null ? null : JSON.parse(json) as T;
}

/** The results of a MULTI/EXEC, or the first error in it. */
function results(replies: Array<[Error | null, unknown]> | null, count: number): unknown[] {
  if (replies === null || replies.length !== count) throw new Error("transaction aborted");
  return replies.map(([error, value]) => {
    if (error) throw error;
    return value;
  });
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A Redis URL without its password, for messages. */
function redacted(url: string): string {
  try {
    const parsedUrl = new URL(url);
    if (parsedUrl.password !== "") parsedUrl.password = "***";
    return parsedUrl.toString();
  } catch {
    return "(an invalid URL)";
  }
}
