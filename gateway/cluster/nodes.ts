/**
 * The nodes of a cluster and their claims on users ([cluster.md](../../docs/cluster.md)).
 *
 * - **Liveness.** A node is alive while its key `node:<id>` exists: it sets the key with a TTL
 *   of `NODE_TTL_MS` every `NODE_HEARTBEAT_MS`. A node that dies (`kill -9`) stops refreshing
 *   it, and Redis drops it at most `NODE_TTL_MS` after the last heartbeat.
 * - **Claims.** The node that writes a user now holds a claim on it: `own:<app>:<uid>` is
 *   `"<node> <fence>"`, where the fence is drawn from one counter, so every new claim has a
 *   larger one. A claim is taken only when there is none or its node is dead, in one script, so
 *   two nodes never both hold one. The store checks the claim in the same script as each write
 *   (`UserStateChange.owner`), so a node that lost a user (paused past its TTL, cut off from
 *   Redis) cannot write it any more: its write is refused whole.
 * - **Reaping.** Every node looks for dead nodes on each heartbeat. One of them (a short lock
 *   decides which) takes over a dead node's claims, user by user, and brings each user back as
 *   a restart would: sessions that were connected lose their connection (the user goes offline
 *   for everyone), and background deadlines are armed again at their persisted bound, never
 *   earlier. A reaper that dies midway leaves the rest to the next one.
 */
import type { Redis } from "ioredis";
import type { UserClaim } from "../store/types.ts";
import type { RedisKeys } from "../store/redis_keys.ts";

/** Takes a claim on a user unless a live node holds one. Returns [node, fence]; fence -1: not ours. */
const CLAIM = `
local current = redis.call('GET', KEYS[1])
if current then
  local node, fence = string.match(current, '^(%S+) (%d+)$')
  if node == ARGV[1] then return {node, tonumber(fence)} end
  if ARGV[4] ~= '1' or redis.call('EXISTS', ARGV[2] .. node) == 1 then return {node, -1} end
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence)
redis.call('SADD', KEYS[3], ARGV[3])
return {ARGV[1], fence}
`;

/** Gives a claim up, if it is still the one given. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
`;

/** The claim script as a command of the connection (ioredis `defineCommand`: EVALSHA). */
interface ClaimCommands {
  claimUser(...args: string[]): Promise<unknown>;
}

export interface NodeRegistryOptions {
  redis: Redis;
  keys: RedisKeys;
  nodeId: string;
  /** A node is dead once this long has passed without its heartbeat. */
  ttlMs: number;
  heartbeatMs: number;
}

/** A user, as a member of a node's claim set. */
export interface UserRef {
  appId: string;
  uid: string;
}

export class NodeRegistry {
  readonly nodeId: string;
  readonly #redis: Redis;
  readonly #keys: RedisKeys;
  readonly #ttlMs: number;

  constructor(options: NodeRegistryOptions) {
    this.nodeId = options.nodeId;
    this.#redis = options.redis;
    this.#keys = options.keys;
    this.#ttlMs = options.ttlMs;
    if (!("claimUser" in this.#redis)) {
      this.#redis.defineCommand("claimUser", { numberOfKeys: 3, lua: CLAIM });
    }
  }

  nodeKey(nodeId: string): string {
    return `${this.#keys.prefix}node:${nodeId}`;
  }

  #nodesKey(): string {
    return `${this.#keys.prefix}nodes`;
  }

  claimsKey(nodeId: string): string {
    return `${this.#keys.prefix}claims:${nodeId}`;
  }

  #incarnationKey(): string {
    return `${this.#keys.prefix}incarnation`;
  }

  /**
   * One heartbeat: this node is alive for another TTL. Returns the Redis incarnation (a random
   * id written once into an empty Redis), so that a Redis that restarted empty is noticed.
   */
  async heartbeat(info: Record<string, unknown>, incarnation: string): Promise<string> {
    const results = await this.#redis.multi()
      .set(this.nodeKey(this.nodeId), JSON.stringify(info), "PX", this.#ttlMs)
      .sadd(this.#nodesKey(), this.nodeId)
      .set(this.#incarnationKey(), incarnation, "NX")
      .get(this.#incarnationKey())
      .exec();
    const [error, value] = results?.[3] ?? [new Error("heartbeat: no reply"), null];
    if (error) throw error;
    return String(value);
  }

  /** Nodes in the index whose key is gone: dead, to be reaped. */
  async deadNodes(): Promise<string[]> {
    const nodes = await this.#redis.smembers(this.#nodesKey());
    const others = nodes.filter((node) => node !== this.nodeId);
    if (others.length === 0) return [];
    const pipeline = this.#redis.pipeline();
    for (const node of others) pipeline.exists(this.nodeKey(node));
    const results = await pipeline.exec();
    return others.filter((_, i) => results?.[i]?.[1] === 0);
  }

  /** Live nodes (for the bus's broadcasts and the docs' status). */
  async liveNodes(): Promise<string[]> {
    const nodes = await this.#redis.smembers(this.#nodesKey());
    const pipeline = this.#redis.pipeline();
    for (const node of nodes) pipeline.exists(this.nodeKey(node));
    const results = await pipeline.exec();
    return nodes.filter((_, i) => results?.[i]?.[1] === 1);
  }

  /** Takes the reaping of a dead node for `leaseMs`; false when another node has it. */
  async lockReap(deadNode: string, leaseMs: number): Promise<boolean> {
    const ok = await this.#redis.set(
      `${this.#keys.prefix}reaping:${deadNode}`,
      this.nodeId,
      "PX",
      leaseMs,
      "NX",
    );
    return ok === "OK";
  }

  /** Up to `count` users a dead node still holds a claim on. */
  async claimsOf(deadNode: string, count: number): Promise<UserRef[]> {
    const members = await this.#redis.srandmember(this.claimsKey(deadNode), count);
    return members.map(decodeUser);
  }

  /** Forgets a user in a dead node's claim set (taken over, or claimed by a third node). */
  async forgetClaim(deadNode: string, user: UserRef): Promise<void> {
    await this.#redis.srem(this.claimsKey(deadNode), encodeUser(user));
  }

  /** The dead node is fully reaped: it leaves the index. */
  async forgetNode(deadNode: string): Promise<void> {
    await this.#redis.multi()
      .srem(this.#nodesKey(), deadNode)
      .del(this.claimsKey(deadNode))
      .del(`${this.#keys.prefix}reaping:${deadNode}`)
      .exec();
  }

  /**
   * Claims a user for this node, unless a live node has it: then that node's id. With `steal`
   * false, a user held by a node whose key is gone is not taken either (that node's id is
   * answered): right after Redis comes back from an outage every key may be gone, and a live
   * node that has not renewed its key yet must not lose its users to whoever asks first.
   */
  async claim(user: UserRef, steal = true): Promise<UserClaim | { owner: string }> {
    // EVALSHA (the script is sent once per connection, not with every claim).
    const [node, fence] = await (this.#redis as unknown as ClaimCommands).claimUser(
      this.#keys.owner(user.appId, user.uid),
      this.#keys.fenceCounter(),
      this.claimsKey(this.nodeId),
      this.nodeId,
      this.nodeKey(""),
      encodeUser(user),
      steal ? "1" : "0",
    ) as [string, number];
    return fence < 0 ? { owner: node } : { node, fence };
  }

  /** Gives up a claim (a handoff); false when it was not the current one any more. */
  async release(user: UserRef, claim: UserClaim): Promise<boolean> {
    const released = await this.#redis.eval(
      RELEASE,
      2,
      this.#keys.owner(user.appId, user.uid),
      this.claimsKey(claim.node),
      `${claim.node} ${claim.fence}`,
      encodeUser(user),
    );
    return released === 1;
  }

  /** Who holds the claim on a user now, if anyone. */
  async ownerOf(user: UserRef): Promise<string | null> {
    const value = await this.#redis.get(this.#keys.owner(user.appId, user.uid));
    return value === null ? null : value.slice(0, value.indexOf(" "));
  }

  /** The raw claims (`"<node> <fence>"`, or null) of these users, in order. */
  async claimsOfUsers(users: readonly UserRef[]): Promise<Array<string | null>> {
    const values: Array<string | null> = [];
    for (let i = 0; i < users.length; i += 500) {
      const keys = users.slice(i, i + 500).map((u) => this.#keys.owner(u.appId, u.uid));
      values.push(...await this.#redis.mget(...keys));
    }
    return values;
  }

  /** This node leaves the cluster (graceful stop, after releasing its users). */
  async leave(): Promise<void> {
    await this.#redis.multi()
      .del(this.nodeKey(this.nodeId))
      .srem(this.#nodesKey(), this.nodeId)
      .exec();
  }
}

function encodeUser(user: UserRef): string {
  return JSON.stringify([user.appId, user.uid]);
}

function decodeUser(member: string): UserRef {
  const [appId, uid] = JSON.parse(member) as [string, string];
  return { appId, uid };
}
