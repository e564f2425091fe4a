/**
 * The gateway: start one in-process with `startGateway`, or run `gateway/main.ts`.
 * @module
 */
export { type RunningGateway, startGateway, type StartOptions } from "./server.ts";
export {
  ConfigError,
  DEFAULTS,
  DEV_APP,
  ENV_VARS,
  type GatewayConfig,
  loadConfig,
} from "./config.ts";
export { type Clock, ManualClock, systemClock } from "./clock.ts";
export {
  type Decision,
  idleCheck,
  initialLiveness,
  type LivenessConfig,
  type LivenessEvent,
  restore,
  type SessionLiveness,
  step,
} from "./liveness.ts";
export { DeadlineWheel } from "./deadline_wheel.ts";
export { KvStore } from "./store/kv.ts";
export type { GatewayStore } from "./store/types.ts";
export { buildOpenApiDocument } from "./openapi.ts";
