/** What route handlers and the WebSocket endpoint share. */
import type { Clock } from "./clock.ts";
import type { AppConfig, GatewayConfig } from "./config.ts";
import type { ConnectionContext } from "./connection.ts";
import type { CredentialSigner } from "./credential.ts";
import type { KeyedRateLimiter } from "./rate_limit.ts";
import type { GatewayStore } from "./store/types.ts";
import type { UserStates } from "./user_state.ts";

export interface GatewayServices {
  config: GatewayConfig;
  clock: Clock;
  apps: ReadonlyMap<string, AppConfig>;
  store: GatewayStore;
  users: UserStates;
  signer: CredentialSigner;
  connections: ConnectionContext;
  httpLimiter: KeyedRateLimiter;
}

/** Hono environment: the client address comes from `Deno.serve`'s info, before any upgrade. */
export type GatewayEnv = { Bindings: { remoteAddr?: string } };
