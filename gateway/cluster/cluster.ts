/**
 * This node's membership of a cluster on Redis ([cluster.md](../../docs/cluster.md)): its
 * heartbeat, its claims on users, the reaping of dead nodes, and the bus to the other nodes.
 * The gateway (`server.ts`) wires it to the state objects, the HTTP app and the presence hub.
 */
import { Redis } from "ioredis";
import { GatewayError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { isConnectionError } from "../store/guard.ts";
import { RedisKeys } from "../store/redis_keys.ts";
import type { UserClaim } from "../store/types.ts";
import { Bus } from "./bus.ts";
import { NodeRegistry, type UserRef } from "./nodes.ts";
import { type ClusterPort, type HandoffAnswer, HolderUnanswered, OwnedElsewhere } from "./port.ts";

export interface ClusterOptions {
  redisUrl: string;
  prefix: string;
  /** This node's id; a new random one per process by default (a restarted node is a new node). */
  nodeId?: string;
  /** NODE_TTL_MS: a node is dead once this long has passed without a heartbeat. */
  ttlMs: number;
  /** NODE_HEARTBEAT_MS. */
  heartbeatMs: number;
  /** CLUSTER_REQUEST_TIMEOUT_MS: a request to another node fails after this. */
  requestTimeoutMs: number;
  log: Logger;
}

/** What the gateway does for the cluster. */
export interface ClusterHandlers {
  /** A dead node's user is claimed by this node: load it, as a restart would. */
  adopt(user: UserRef): Promise<void>;
  /** Redis came back empty: every user in memory is dropped (what they held is gone). */
  redisReset(): void;
  /** Nodes this node relays sockets with (gateway/cluster/relay.ts). */
  peers(): Iterable<string>;
  /** One of `peers` is dead. */
  nodeGone(node: string): void;
  /**
   * This node went a TTL without renewing its key (paused, or cut off from Redis): the others
   * may have taken its users over. Drops every user whose claim is no longer this node's.
   */
  verifyClaims(): Promise<void>;
}

const REDIS_AWAY = "Redis, which this cluster shares its state through, is unreachable; " +
  "nothing was changed: try again.";

/** Users taken over per reaping round trip. */
const REAP_BATCH = 100;

export class Cluster implements ClusterPort {
  readonly nodeId: string;
  readonly bus: Bus;
  readonly registry: NodeRegistry;
  readonly #redis: Redis;
  readonly #sub: Redis;
  readonly #options: ClusterOptions;
  /** The Redis incarnation this node works with (see `NodeRegistry.heartbeat`). */
  #redisIncarnation: string | null = null;
  #lastHeartbeatAt = 0;
  /**
   * Since when Redis has answered every heartbeat. Nobody is reaped until that is a TTL ago:
   * after an outage every live node's key has expired, and each must get the time to renew it
   * before the others take it for dead.
   */
  #reachableSince: number | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #handlers: ClusterHandlers | null = null;
  #reaping = false;
  #stopped = false;

  private constructor(redis: Redis, sub: Redis, bus: Bus, nodeId: string, options: ClusterOptions) {
    this.#redis = redis;
    this.#sub = sub;
    this.bus = bus;
    this.nodeId = nodeId;
    this.#options = options;
    this.registry = new NodeRegistry({
      redis,
      keys: new RedisKeys(options.prefix),
      nodeId,
      ttlMs: options.ttlMs,
      heartbeatMs: options.heartbeatMs,
    });
  }

  /** Connects, joins (first heartbeat) and listens on the bus. */
  static async join(options: ClusterOptions): Promise<Cluster> {
    const nodeId = options.nodeId ?? `node-${crypto.randomUUID().slice(0, 8)}`;
    const connect = async () => {
      const redis = new Redis(options.redisUrl, {
        lazyConnect: true,
        // Fail fast while Redis is away: callers refuse or retry, nothing waits in a queue.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        // ioredis's own resubscribe after a reconnect leaves its promise unhandled: a drop right
        // after the reconnect then rejects it and ends the process. The bus resubscribes itself.
        autoResubscribe: false,
        retryStrategy: (attempt) => Math.min(100 * 2 ** attempt, 2_000),
      });
      redis.on("error", () => {/* reported through failed commands and readiness */});
      await redis.connect();
      return redis;
    };
    const redis = await connect();
    const sub = await connect();
    const bus = await Bus.start(redis, sub, {
      prefix: options.prefix,
      nodeId,
      timeoutMs: options.requestTimeoutMs,
    });
    const cluster = new Cluster(redis, sub, bus, nodeId, options);
    await cluster.#heartbeat();
    return cluster;
  }

  /** Starts the heartbeat and the reaping, with the gateway's handlers. */
  start(handlers: ClusterHandlers): void {
    this.#handlers = handlers;
    this.#arm();
  }

  /**
   * Whether this node can work as a member: its connection to Redis is up, and its last
   * heartbeat is within the TTL (it can prove it is alive).
   */
  get ready(): boolean {
    return this.#redis.status === "ready" &&
      performance.now() - this.#lastHeartbeatAt < this.#options.ttlMs;
  }

  async claim(appId: string, uid: string): Promise<UserClaim | { owner: string }> {
    try {
      // Users of nodes whose key is gone are taken only once this node has seen Redis answer
      // for a TTL (as the reaping): after an outage every live node gets to renew its key.
      return await this.registry.claim({ appId, uid }, this.#settled());
    } catch (error) {
      // Redis is away: the caller is answered 503 at once, and nothing was changed.
      if (this.#redis.status !== "ready" || isConnectionError(error)) {
        throw new GatewayError("ERR_SERVICE_UNAVAILABLE", REDIS_AWAY);
      }
      throw error;
    }
  }

  async requestHandoff(node: string, appId: string, uid: string): Promise<HandoffAnswer> {
    try {
      return await this.bus.request(node, "handoff", { appId, uid }) === true ? "done" : "refused";
    } catch {
      // No answer: the node may be dead; its claim goes once its TTL runs out.
      return "unanswered";
    }
  }

  async release(appId: string, uid: string, claim: UserClaim): Promise<void> {
    await this.registry.release({ appId, uid }, claim);
  }

  /** Leaves the cluster (graceful stop) and closes the connections. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.bus.close();
    await this.registry.leave().catch(() => {});
    await Promise.allSettled([this.#redis.quit(), this.#sub.quit()]);
  }

  /** Stops without a word to the others (tests: as a node cut off, or killed). */
  abandon(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.bus.close();
    this.#redis.disconnect();
    this.#sub.disconnect();
  }

  #arm(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(async () => {
      await this.#heartbeat().catch((error) => {
        this.#reachableSince = null;
        this.#options.log.warn("cluster.heartbeat_failed", { error: String(error) });
      });
      const settled = this.#settled();
      if (this.#reachableSince !== null) await this.#watchPeers();
      if (settled && !this.#reaping) void this.#reap();
      this.#arm();
    }, this.#options.heartbeatMs);
  }

  async #heartbeat(): Promise<void> {
    // A fresh id each time: only an empty Redis takes it (SET NX), so after a reset the
    // marker differs from the one every node remembers, whoever writes it first.
    const incarnation = await this.registry.heartbeat(
      { node: this.nodeId, at: Date.now() },
      crypto.randomUUID(),
    );
    const previous = this.#lastHeartbeatAt;
    this.#lastHeartbeatAt = performance.now();
    // Taken for dead meanwhile? Now that the key is renewed no node takes a user from this one
    // any more, so one look at the claims finds every user it lost, and no socket of such a user
    // stays here as a ghost (its writes would be fenced, but a foreground socket writes nothing).
    if (previous > 0 && this.#lastHeartbeatAt - previous >= this.#options.ttlMs) {
      this.#options.log.warn("cluster.heartbeat_gap", {
        node: this.nodeId,
        gapMs: Math.round(this.#lastHeartbeatAt - previous),
      });
      await this.#handlers?.verifyClaims();
    }
    this.#reachableSince ??= this.#lastHeartbeatAt;
    if (this.#redisIncarnation !== null && incarnation !== this.#redisIncarnation) {
      this.#options.log.warn("cluster.redis_reset", { node: this.nodeId });
      this.#handlers?.redisReset();
    }
    this.#redisIncarnation = incarnation;
  }

  /** Redis has answered every heartbeat for a TTL: every live node has renewed its key. */
  #settled(): boolean {
    return this.#reachableSince !== null &&
      performance.now() - this.#reachableSince >= this.#options.ttlMs;
  }

  /** Ends the relays with peers whose key is gone (they died, or were cut off for a TTL). */
  async #watchPeers(): Promise<void> {
    const peers = [...this.#handlers?.peers() ?? []];
    if (peers.length === 0) return;
    try {
      const live = new Set(await this.registry.liveNodes());
      for (const peer of peers) if (!live.has(peer)) this.#handlers!.nodeGone(peer);
    } catch {
      // Redis is away: the next heartbeat looks again.
    }
  }

  /** Takes over the users of dead nodes (one reaper per dead node, by a lock). */
  async #reap(): Promise<void> {
    if (this.#handlers === null) return;
    this.#reaping = true;
    try {
      for (const dead of await this.registry.deadNodes()) {
        if (this.#stopped) return;
        // The lock outlives a round of adoption; a reaper that dies leaves it to the next.
        if (!await this.registry.lockReap(dead, 4 * this.#options.ttlMs)) continue;
        let adopted = 0;
        for (;;) {
          const users = await this.registry.claimsOf(dead, REAP_BATCH);
          if (users.length === 0) break;
          await Promise.all(users.map(async (user) => {
            try {
              await this.#handlers!.adopt(user);
            } catch (error) {
              // Held by another live node now (its client came back there), answering or not:
              // nothing to take over (should that node die, its own reaping takes the user).
              // Any other failure leaves the claim for the next round.
              if (!(error instanceof OwnedElsewhere || error instanceof HolderUnanswered)) {
                throw error;
              }
            }
            await this.registry.forgetClaim(dead, user);
          }));
          adopted += users.length;
        }
        await this.registry.forgetNode(dead);
        this.#options.log.info("cluster.node_reaped", { dead, adopted, by: this.nodeId });
      }
    } catch (error) {
      this.#options.log.warn("cluster.reap_failed", { error: String(error) });
    } finally {
      this.#reaping = false;
    }
  }
}
