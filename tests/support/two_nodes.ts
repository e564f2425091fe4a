/**
 * A `redis-server` of the test's own and two gateway processes on it (docs/cluster.md);
 * disposing kills them all. Used by the cluster tests.
 */
import { GatewayProcess } from "./process.ts";
import { type RedisServer, startRedis } from "./redis_server.ts";

export interface TwoNodesOptions {
  /** Redis with its append-only file, fsync always (default: no persistence). */
  appendOnly?: boolean;
  /** The nodes' environment on top of `STORE=redis` and `REDIS_URL`. */
  env?: Record<string, string>;
  /** NODE_ID of each node (default: a random one each). */
  ids?: [string, string];
}

export class TwoNodes implements AsyncDisposable {
  private constructor(
    readonly redis: RedisServer,
    readonly a: GatewayProcess,
    readonly b: GatewayProcess,
  ) {}

  static async start(options: TwoNodesOptions = {}): Promise<TwoNodes> {
    const redis = await startRedis({ appendOnly: options.appendOnly });
    const env = (i: 0 | 1) => ({
      STORE: "redis",
      REDIS_URL: redis.url,
      ...options.env,
      ...(options.ids === undefined ? {} : { NODE_ID: options.ids[i] }),
    });
    const [a, b] = await Promise.all([
      GatewayProcess.start({ env: env(0) }),
      GatewayProcess.start({ env: env(1) }),
    ]);
    return new TwoNodes(redis, a, b);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const node of [this.a, this.b]) {
      if (await node.alive()) await node.crash();
      await node.cleanup();
    }
    await this.redis.stop();
  }
}
