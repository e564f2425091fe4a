/**
 * The contract: the single source of truth for every wire shape of the gateway.
 * @module
 */
export * from "./errors.ts";
export * from "./close_codes.ts";
export * from "./models.ts";
export * from "./messages.ts";
export * from "./events.ts";
export * from "./frames.ts";
export * from "./routes.ts";
