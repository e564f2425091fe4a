/**
 * Configuration: environment variables, optionally an apps file, and `--dev`.
 * Every value is validated once at start-up; a bad one stops the gateway with a message
 * that names the variable and what to fix.
 */
import { z } from "zod";
import { AppIdSchema, UidSchema } from "../contract/mod.ts";

export const AppConfigSchema = z.object({
  appId: AppIdSchema,
  region: z.string().min(1),
  /** Server API key (the `apikey` header). */
  apiKey: z.string().min(8),
  /** Development login with (uid, authKey); leave out in production. */
  authKey: z.string().min(8).optional(),
  /** Users created at start-up if missing (development convenience). */
  seedUsers: z.array(z.object({ uid: UidSchema, name: z.string().optional() })).optional(),
}).strict();
export type AppConfig = z.infer<typeof AppConfigSchema>;

export interface GatewayConfig {
  port: number;
  hostname: string;
  /** The liveness window; the single place its default lives. */
  livenessWindowMs: number;
  /** How often clients heartbeat in foreground (sent to clients in the init reply). */
  heartbeatIntervalMs: number;
  /** A ping not answered within this is a dead link (for clients). */
  pongTimeoutMs: number;
  /** A connection that sends nothing for this long is closed (`idle_timeout`). */
  idleTimeoutMs: number;
  /** Granularity of the deadline wheel: closes happen at most this much after a deadline. */
  deadlineTickMs: number;
  /** Coalescing delay of state writes (group commit). */
  persistDelayMs: number;
  /** Delay of writes that only move a background deadline later (manual-mode pings). */
  persistLazyMs: number;
  /** Deno KV path; `:memory:` for a throwaway store; undefined for the platform's own KV. */
  kvPath: string | undefined;
  maxFrameBytes: number;
  maxBodyBytes: number;
  /**
   * Bytes that may wait to be sent to one connection; a connection that falls further behind
   * is closed (`slow_consumer`) instead of growing the gateway's memory.
   */
  maxBufferedBytes: number;
  /** Frames a connection may send per second (token bucket, burst of twice this). */
  frameRatePerSec: number;
  /** HTTP requests per client address per second (token bucket, burst of twice this). */
  httpRatePerSec: number;
  /** Lifetime of a session credential. */
  sessionTtlMs: number;
  /** Origins allowed by CORS (`*` for any). */
  corsOrigins: string[];
  /** Secret that signs session credentials. */
  sessionSecret: string;
  apps: AppConfig[];
  dev: boolean;
}

/** Development-only values. Labelled so no one mistakes them for secrets. */
export const DEV_APP: AppConfig = {
  appId: "demo",
  region: "us",
  apiKey: "dev_api_key__not_secret",
  authKey: "dev_auth_key__not_secret",
  seedUsers: [1, 2, 3, 4, 5].map((n) => ({ uid: `superhero${n}`, name: `Superhero ${n}` })),
};
export const DEV_SESSION_SECRET = "dev_session_secret__not_secret__change_me";

export const DEFAULTS = {
  port: 8000,
  hostname: "0.0.0.0",
  livenessWindowMs: 30_000,
  heartbeatIntervalMs: 15_000,
  pongTimeoutMs: 3_000,
  idleTimeoutMs: 45_000,
  deadlineTickMs: 10,
  persistDelayMs: 1,
  persistLazyMs: 1_000,
  kvPath: "./data/gateway.kv",
  // Deno's WebSocket read buffer is 8 KiB per connection and grows, for good, to the largest
  // frame received (fastwebsockets): one 60 KB frame leaves ~65 KB more native memory on that
  // connection. A limit near the buffer's size keeps accepted frames from growing it, and a
  // larger frame closes the connection, which frees it. Protocol frames are far smaller.
  // (bench/ws_memory_probe.ts measures it.)
  maxFrameBytes: 8 * 1024,
  maxBodyBytes: 64 * 1024,
  maxBufferedBytes: 1024 * 1024,
  frameRatePerSec: 100,
  httpRatePerSec: 200,
  sessionTtlMs: 30 * 24 * 3600 * 1000,
} as const;

/** Environment variable → config field, with its documentation (README lists these). */
export const ENV_VARS = {
  PORT: "port to listen on (0 picks a free one)",
  HOSTNAME: "address to bind",
  LIVENESS_WINDOW_MS: "the liveness window",
  HEARTBEAT_INTERVAL_MS: "client foreground heartbeat interval",
  PONG_TIMEOUT_MS: "client pong timeout",
  IDLE_TIMEOUT_MS: "dead-peer idle timeout",
  DEADLINE_TICK_MS: "deadline wheel granularity",
  PERSIST_DELAY_MS: "state write coalescing delay (group commit)",
  PERSIST_LAZY_MS: "delay of writes that only move a background deadline later",
  KV_PATH: "Deno KV file; ':memory:' for none; 'platform' for Deno.openKv() without a path",
  MAX_FRAME_BYTES: "largest accepted WebSocket frame",
  MAX_BODY_BYTES: "largest accepted HTTP body",
  MAX_BUFFERED_BYTES: "bytes waiting to be sent to one connection before it is closed as slow",
  RATE_LIMIT_FRAMES_PER_SEC: "frames per connection per second",
  RATE_LIMIT_HTTP_PER_SEC: "HTTP requests per client address per second",
  SESSION_TTL_MS: "session credential lifetime",
  CORS_ORIGINS: "comma-separated origins allowed to call the HTTP API from a browser; * for any",
  SESSION_SECRET: "secret signing session credentials (required unless --dev)",
  APPS_FILE: "JSON file with an array of apps",
  APPS_JSON: "the same array, inline",
} as const;

export class ConfigError extends Error {
  override name = "ConfigError";
}

type Env = Record<string, string | undefined>;

/** Builds the configuration from the environment, the arguments and explicit overrides. */
export function loadConfig(
  env: Env,
  options: { dev?: boolean; readFile?: (path: string) => string } = {},
  overrides: Partial<GatewayConfig> = {},
): GatewayConfig {
  const dev = overrides.dev ?? options.dev ?? false;
  const int = (name: keyof typeof ENV_VARS, fallback: number, min: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min) {
      throw new ConfigError(`${name}=${raw} is invalid: expected an integer ≥ ${min}.`);
    }
    return value;
  };

  let apps: AppConfig[] = [];
  const appsJson = env.APPS_JSON ??
    (env.APPS_FILE ? readApps(env.APPS_FILE, options.readFile) : undefined);
  if (appsJson !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(appsJson);
    } catch {
      throw new ConfigError(
        `${env.APPS_JSON ? "APPS_JSON" : `APPS_FILE (${env.APPS_FILE})`} is not valid JSON.`,
      );
    }
    const result = z.array(AppConfigSchema).safeParse(parsed);
    if (!result.success) {
      const issue = result.error.issues[0];
      throw new ConfigError(
        `apps configuration is invalid at [${issue.path.join(".")}]: ${issue.message}`,
      );
    }
    apps = result.data;
  }
  if (dev && !apps.some((a) => a.appId === DEV_APP.appId)) apps = [DEV_APP, ...apps];

  const kvRaw = env.KV_PATH;
  const config: GatewayConfig = {
    port: int("PORT", DEFAULTS.port, 0),
    hostname: env.HOSTNAME || DEFAULTS.hostname,
    livenessWindowMs: int("LIVENESS_WINDOW_MS", DEFAULTS.livenessWindowMs, 1),
    heartbeatIntervalMs: int("HEARTBEAT_INTERVAL_MS", DEFAULTS.heartbeatIntervalMs, 1),
    pongTimeoutMs: int("PONG_TIMEOUT_MS", DEFAULTS.pongTimeoutMs, 1),
    idleTimeoutMs: int("IDLE_TIMEOUT_MS", DEFAULTS.idleTimeoutMs, 1),
    deadlineTickMs: int("DEADLINE_TICK_MS", DEFAULTS.deadlineTickMs, 1),
    persistDelayMs: int("PERSIST_DELAY_MS", DEFAULTS.persistDelayMs, 0),
    persistLazyMs: int("PERSIST_LAZY_MS", DEFAULTS.persistLazyMs, 0),
    kvPath: kvRaw === "platform" ? undefined : (kvRaw || DEFAULTS.kvPath),
    maxFrameBytes: int("MAX_FRAME_BYTES", DEFAULTS.maxFrameBytes, 64),
    maxBodyBytes: int("MAX_BODY_BYTES", DEFAULTS.maxBodyBytes, 64),
    maxBufferedBytes: int("MAX_BUFFERED_BYTES", DEFAULTS.maxBufferedBytes, 1024),
    frameRatePerSec: int("RATE_LIMIT_FRAMES_PER_SEC", DEFAULTS.frameRatePerSec, 1),
    httpRatePerSec: int("RATE_LIMIT_HTTP_PER_SEC", DEFAULTS.httpRatePerSec, 1),
    sessionTtlMs: int("SESSION_TTL_MS", DEFAULTS.sessionTtlMs, 1000),
    sessionSecret: env.SESSION_SECRET || (dev ? DEV_SESSION_SECRET : ""),
    corsOrigins: (env.CORS_ORIGINS || "*").split(",").map((o) => o.trim()).filter((o) => o !== ""),
    apps,
    dev,
    ...overrides,
  };
  validate(config);
  return config;
}

function readApps(path: string, readFile?: (path: string) => string): string {
  try {
    return (readFile ?? Deno.readTextFileSync)(path);
  } catch (error) {
    throw new ConfigError(`APPS_FILE (${path}) cannot be read: ${(error as Error).message}`);
  }
}

/** Checks the relations between values. */
export function validate(config: GatewayConfig): void {
  if (config.apps.length === 0) {
    throw new ConfigError(
      "No app is configured: set APPS_FILE or APPS_JSON, or start with --dev for the demo app.",
    );
  }
  const ids = new Set<string>();
  for (const app of config.apps) {
    if (ids.has(app.appId)) throw new ConfigError(`appId '${app.appId}' is configured twice.`);
    ids.add(app.appId);
  }
  if (config.sessionSecret.length < 32) {
    throw new ConfigError(
      "SESSION_SECRET must be set to at least 32 characters (only --dev has a default).",
    );
  }
  if (config.heartbeatIntervalMs >= config.livenessWindowMs) {
    throw new ConfigError(
      `HEARTBEAT_INTERVAL_MS (${config.heartbeatIntervalMs}) must be below LIVENESS_WINDOW_MS ` +
        `(${config.livenessWindowMs}) so that heartbeats arrive inside the window.`,
    );
  }
  if (config.idleTimeoutMs <= config.heartbeatIntervalMs + config.pongTimeoutMs) {
    throw new ConfigError(
      `IDLE_TIMEOUT_MS (${config.idleTimeoutMs}) must exceed HEARTBEAT_INTERVAL_MS + ` +
        `PONG_TIMEOUT_MS (${config.heartbeatIntervalMs + config.pongTimeoutMs}), or live clients ` +
        "would be closed as idle.",
    );
  }
}

/** The timing block of the init reply and the `connected` frame. */
export function timingOf(config: GatewayConfig) {
  return {
    livenessWindowMs: config.livenessWindowMs,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    pongTimeoutMs: config.pongTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
  };
}
