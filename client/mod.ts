/**
 * The typed client of the liveness gateway: `GatewayClient` (auto and manual mode; messages
 * delivered exactly once in stream order, sends, typing and presence), `AppSettingsBuilder`,
 * `GatewayError`, the storage adapters, and every contract type an app needs. Runs in Deno,
 * browsers and Node 22+.
 *
 * ```ts
 * import { AppSettingsBuilder, GatewayClient } from "./client/mod.ts";
 *
 * const client = new GatewayClient({ baseUrl: "http://127.0.0.1:8000" });
 * await client.init("demo", new AppSettingsBuilder().setRegion("us").build());
 * client.addConnectionListener("app", {
 *   onConnected: () => console.log("connected"),
 *   onDisconnected: (info) => console.log("disconnected:", info.reason),
 * });
 * await client.login("superhero1", "dev_auth_key__not_secret");
 * ```
 * @module
 */
export {
  type ConnectedInfo,
  type ConnectionInfo,
  type ConnectionListener,
  type CustomMessage,
  type CustomMessageInput,
  type DisconnectInfo,
  GatewayClient,
  type GatewayClientOptions,
  type KeepAlive,
  type MessageListener,
  type PingResult,
  type SentMessage,
  type Session,
  type TextMessage,
  type TextMessageInput,
  type TypingIndicator,
  type TypingTarget,
  type UserListener,
} from "./client.ts";
export { type AppSettings, AppSettingsBuilder } from "./settings.ts";
export { GatewayError, isGatewayError } from "./errors.ts";
export {
  defaultStorage,
  fileStorage,
  memoryStorage,
  type StorageAdapter,
  type TextFileSystem,
} from "./storage.ts";
export {
  type Clock,
  systemClock,
  type VisibilitySource,
  type WebSocketConstructor,
} from "./platform.ts";
export { backoffCeiling, backoffDelay, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.ts";
export {
  type ConnectionEndReason,
  decideReconnect,
  endsSession,
  type LocalDisconnectReason,
  type ReconnectDecision,
} from "./policy.ts";
export { createRestClient, type RestClient, type RestClientOptions } from "./rest.ts";
export {
  decodeClientFrame,
  type DecodeResult,
  decodeServerFrame,
  encodeClientFrame,
  encodeServerFrame,
} from "./codec.ts";
export * from "../contract/mod.ts";
