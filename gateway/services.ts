/** What route handlers and the WebSocket endpoint share. */
import type { Clock } from "./clock.ts";
import type { AppConfig, GatewayConfig } from "./config.ts";
import type { ConnectionContext } from "./connection.ts";
import type { CredentialSigner } from "./credential.ts";
import type { Logger } from "./log.ts";
import type { Messaging } from "./messaging.ts";
import type { GatewayMetrics } from "./metrics.ts";
import type { KeyedRateLimiter } from "./rate_limit.ts";
import type { GatewayStore } from "./store/types.ts";
import type { Upgrade, WireSocket } from "./transport/types.ts";
import type { UserStates } from "./user_state.ts";

export interface GatewayServices {
  config: GatewayConfig;
  clock: Clock;
  apps: ReadonlyMap<string, AppConfig>;
  store: GatewayStore;
  users: UserStates;
  /** The one write path of messages (server API, user sends). */
  messaging: Messaging;
  signer: CredentialSigner;
  connections: ConnectionContext;
  httpLimiter: KeyedRateLimiter;
  metrics: GatewayMetrics;
  log: Logger;
  /** A user's roles or friends changed (presence subscriptions follow). */
  profileChanged?: (appId: string, uid: string) => void;
  /**
   * What `/readyz` reports; `draining` also refuses new requests (503) during a stop;
   * `clusterOk`: this node's heartbeat reaches Redis (always true on one node without Redis).
   */
  health: { draining: boolean; storeOk: boolean; clusterOk?: () => boolean };
  /** In a cluster: sends a request to the node holding its user, and returns the answer. */
  forward?: (node: string, request: Request) => Promise<Response>;
  /**
   * In a cluster: a socket whose user is held by `node` (which has a socket of it) is relayed
   * there (gateway/cluster/relay.ts). Resolves once that node runs its connection: `attach`
   * the upgraded socket, or `abort` when the upgrade fails. Throws ERR_SERVICE_UNAVAILABLE when
   * the node did not take it.
   */
  relaySocket?: (
    node: string,
    open: { credential: string; remoteAddr: string },
  ) => Promise<{ attach(wire: WireSocket, opened: boolean): void; abort(): void }>;
}

/**
 * Hono environment, filled by the transport for each request: the client address (read before
 * any upgrade) and the WebSocket upgrade of this request.
 */
export type GatewayEnv = {
  Bindings: {
    remoteAddr?: string;
    upgrade?: Upgrade;
    /** Set on a request another node of the cluster forwarded (it was rate limited there). */
    forwarded?: boolean;
  };
};
