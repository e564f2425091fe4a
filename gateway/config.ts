/**
 * Configuration: environment variables, optionally an apps file, and `--dev`.
 *
 * `EnvSchema` is the one description of the environment. The `GatewayConfig` type, `DEFAULTS`,
 * `ENV_VARS` (the names `main.ts` reads) and docs/configuration.md (`deno task config:docs`) are
 * all derived from it, so a variable is added, changed or removed in that one place.
 * Every value is validated once at start-up; a bad one stops the gateway with a message that
 * names the variable and what to fix.
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

/** Development-only values. Labelled so no one mistakes them for secrets. */
export const DEV_APP: AppConfig = {
  appId: "demo",
  region: "us",
  apiKey: "dev_api_key__not_secret",
  authKey: "dev_auth_key__not_secret",
  seedUsers: [1, 2, 3, 4, 5].map((n) => ({ uid: `superhero${n}`, name: `Superhero ${n}` })),
};
export const DEV_SESSION_SECRET = "dev_session_secret__not_secret__change_me";

/** Documentation of one variable, kept in the schema's metadata (zod `.meta`). */
interface VariableMeta {
  /** One line: what the variable controls. */
  description: string;
  /** How the docs show the default when its raw value means something else (0 → "auto"). */
  defaultLabel?: string;
}

/**
 * One environment variable that fills the config field `field`. The field name is a typed
 * property of the returned schema (not only metadata) so that `GatewayConfig` can be derived
 * from `EnvSchema` by a mapped type.
 */
function fills<const Field extends string, Schema extends z.ZodType>(
  field: Field,
  schema: Schema,
  description: string,
  options: Omit<VariableMeta, "description"> = {},
): Schema & { readonly configField: Field } {
  return Object.assign(schema.meta({ description, ...options }), { configField: field });
}

/** An integer written in decimal (the environment holds text), at least `min`. */
const integer = (min: number) => z.coerce.number().int().min(min);

/** Environment variable → parsed value. Unset and empty variables take the default. */
export const EnvSchema = z.object({
  PORT: fills("port", integer(0).default(8000), "port to listen on (0 picks a free one)"),
  // Not HOSTNAME: Docker and many shells export that as the machine's name.
  HOST: fills(
    "hostname",
    z.string().default(""),
    "address to bind: 0.0.0.0 (every interface), 127.0.0.1, ::, or a name of this machine; " +
      "unset means 0.0.0.0, and 127.0.0.1 under --dev (its keys are public)",
    { defaultLabel: "0.0.0.0 (--dev: 127.0.0.1)" },
  ),
  TRANSPORT: fills(
    "transport",
    z.enum(["node", "deno"]).default("node"),
    "how connections are served: node = node:http and the ws package (self-hosting: " +
      "connection caps, timeouts, oversized frames refused from their header); deno = " +
      "Deno.serve and Deno.upgradeWebSocket (edge platforms that front connections themselves)",
  ),
  LIVENESS_WINDOW_MS: fills(
    "livenessWindowMs",
    integer(1).default(30_000),
    "the liveness window",
  ),
  HEARTBEAT_INTERVAL_MS: fills(
    "heartbeatIntervalMs",
    integer(1).default(15_000),
    "client foreground heartbeat interval (sent to clients in the init reply)",
  ),
  PONG_TIMEOUT_MS: fills(
    "pongTimeoutMs",
    integer(1).default(3_000),
    "a ping not answered within this is a dead link (for clients)",
  ),
  IDLE_TIMEOUT_MS: fills(
    "idleTimeoutMs",
    integer(1).default(45_000),
    "a connection that sends nothing for this long is closed (idle_timeout)",
  ),
  HANDSHAKE_TIMEOUT_MS: fills(
    "handshakeTimeoutMs",
    integer(1).default(10_000),
    "a socket that has not sent its connect frame within this is closed",
  ),
  CLOSE_TIMEOUT_MS: fills(
    "closeTimeoutMs",
    integer(1).default(5_000),
    "a peer that does not answer the close frame within this loses its TCP connection",
  ),
  DEADLINE_TICK_MS: fills(
    "deadlineTickMs",
    integer(1).default(10),
    "deadline wheel granularity: closes happen at most this much after a deadline",
  ),
  DEADLINE_BOUND_MS: fills(
    "deadlineBoundMs",
    integer(0).default(5_000),
    "how far ahead of every announced background deadline the persisted bound runs; after a " +
      "crash a deadline fires no earlier than announced and at most this much later",
  ),
  STREAM_RETENTION_MS: fills(
    "streamRetentionMs",
    integer(1_000).default(24 * 3600_000),
    "how long an event stays in a user's stream (resume and history); older events are gone",
  ),
  STREAM_MAX_EVENTS: fills(
    "streamMaxEvents",
    integer(1).default(10_000),
    "most events kept per user stream; the oldest go first",
  ),
  REPLAY_LIMIT: fills(
    "replayLimit",
    integer(0).default(1_000),
    "most events replayed on connect; a longer gap connects with recovered: false and the " +
      "client pages the history route",
  ),
  STREAM_CACHE_EVENTS: fills(
    "streamCacheEvents",
    integer(0).default(512),
    "most recent events of each user held in memory so that a resume replays " +
      "without reading the store",
  ),
  STREAM_CACHE_BYTES: fills(
    "streamCacheBytes",
    integer(0).default(256 * 1024),
    "most characters of message JSON of each user held in memory for resume (so that " +
      "STREAM_CACHE_EVENTS large messages do not): the cache's memory stays below about twice " +
      "this times the users in memory",
  ),
  TYPING_TIMEOUT_MS: fills(
    "typingTimeoutMs",
    integer(100).default(5_000),
    "a typing indicator ends by itself this long after its last start_typing",
  ),
  PRESENCE_INTERVAL_MS: fills(
    "presenceIntervalMs",
    integer(1).default(250),
    "presence changes are coalesced per connection over this interval (one frame per interval)",
  ),
  RESTART_GRACE_MS: fills(
    "restartGraceMs",
    integer(0).default(10_000),
    "after a crash, a session that was connected in foreground stays connected (online) this " +
      "long for its client to reconnect; then it is closed (server_shutdown) and its user's " +
      "offline is published",
  ),
  PERSIST_DELAY_MS: fills(
    "persistDelayMs",
    integer(0).default(1),
    "state write coalescing delay (group commit)",
  ),
  USER_EVICT_AFTER_MS: fills(
    "userEvictAfterMs",
    integer(1_000).default(60_000),
    "an in-memory user state with no connection, no pending deadline and no pending write is " +
      "dropped after this long unused",
  ),
  KV_PATH: fills(
    "kvPath",
    z.string().default("./data/gateway.kv").transform((path) =>
      path === "platform" ? undefined : path
    ),
    "Deno KV file; ':memory:' for a throwaway store; 'platform' for Deno.openKv() without a path",
  ),
  KV_COMPACT_AFTER_BYTES: fills(
    "kvCompactAfterBytes",
    integer(0).default(64 * 1024 * 1024),
    "Deno KV: bytes of write log (group commits) after which their changes are compacted " +
      "into per-user rows; until then they are also held in memory, and a start-up reads " +
      "them back",
  ),
  KV_COMPACT_IDLE_MS: fills(
    "kvCompactIdleMs",
    integer(0).default(1_000),
    "Deno KV: the write log is also compacted once writes pause this long (0: only by size)",
  ),
  MAX_CONNECTIONS: fills(
    "maxConnections",
    integer(0).default(0),
    "open connections the gateway accepts; 0 (auto) derives it from OPEN_FILE_LIMIT",
    { defaultLabel: "auto" },
  ),
  OPEN_FILE_LIMIT: fills(
    "openFileLimit",
    z.union([z.literal("unlimited").transform(() => 1 << 20), integer(64)]).optional(),
    "the process's open-file limit (`ulimit -Hn`; Deno raises its soft limit to it), for " +
      "MAX_CONNECTIONS auto; `deno task serve` sets it. Deno does not let a program read its " +
      "own limit without --allow-all",
  ),
  MAX_CONNECTIONS_PER_IP: fills(
    "maxConnectionsPerIp",
    integer(1).default(256),
    "open connections per client address",
  ),
  RATE_LIMIT_CONNECTS_PER_SEC: fills(
    "connectRatePerIp",
    integer(1).default(100),
    "new TCP connections per client address per second (token bucket, burst of twice this)",
  ),
  HEADERS_TIMEOUT_MS: fills(
    "headersTimeoutMs",
    integer(1).default(10_000),
    "time to receive a request's head",
  ),
  REQUEST_TIMEOUT_MS: fills(
    "requestTimeoutMs",
    integer(1).default(30_000),
    "time to receive a whole request",
  ),
  KEEP_ALIVE_TIMEOUT_MS: fills(
    "keepAliveTimeoutMs",
    integer(1).default(5_000),
    "how long an idle HTTP keep-alive connection stays open",
  ),
  MAX_HEADER_BYTES: fills(
    "maxHeaderBytes",
    integer(1024).default(16 * 1024),
    "largest accepted HTTP request head",
  ),
  // Deno's WebSocket read buffer is 8 KiB per connection and grows, for good, to the largest
  // frame received (fastwebsockets): one 60 KB frame leaves ~65 KB more native memory on that
  // connection. A limit near the buffer's size keeps accepted frames from growing it, and a
  // larger frame closes the connection, which frees it. Protocol frames are far smaller.
  // (bench/ws_memory_probe.ts measures it.)
  MAX_FRAME_BYTES: fills(
    "maxFrameBytes",
    integer(64).default(8 * 1024),
    "largest accepted WebSocket frame",
  ),
  MAX_BODY_BYTES: fills(
    "maxBodyBytes",
    integer(64).default(64 * 1024),
    "largest accepted HTTP body",
  ),
  MAX_BUFFERED_BYTES: fills(
    "maxBufferedBytes",
    integer(1024).default(1024 * 1024),
    "bytes waiting to be sent to one connection before it is closed as slow (slow_consumer), " +
      "instead of growing the gateway's memory",
  ),
  RATE_LIMIT_FRAMES_PER_SEC: fills(
    "frameRatePerSec",
    integer(1).default(100),
    "frames per connection per second (token bucket, burst of twice this)",
  ),
  RATE_LIMIT_HTTP_PER_SEC: fills(
    "httpRatePerSec",
    integer(1).default(200),
    "HTTP requests per client address per second (token bucket, burst of twice this)",
  ),
  SESSION_TTL_MS: fills(
    "sessionTtlMs",
    integer(1000).default(30 * 24 * 3600 * 1000),
    "session credential lifetime",
  ),
  CORS_ORIGINS: fills(
    "corsOrigins",
    z.string().default("*").transform((list) =>
      list.split(",").map((origin) => origin.trim()).filter((origin) => origin !== "")
    ),
    "comma-separated origins allowed to call the HTTP API from a browser; `*` for any",
  ),
  // The empty default stands for "not set": --dev replaces it with DEV_SESSION_SECRET and
  // `validate` refuses it otherwise, with a message that says what to set.
  SESSION_SECRET: fills(
    "sessionSecret",
    z.string().default(""),
    "secret signing session credentials, at least 32 characters (required unless --dev)",
  ),
  METRICS_TOKEN: fills(
    "metricsToken",
    z.string().optional(),
    "when set, /metrics requires the header `Authorization: Bearer <token>`",
  ),
  STORE: fills(
    "store",
    z.enum(["kv", "redis"]).default("kv"),
    "storage engine: 'kv' (Deno KV at KV_PATH, one process) or 'redis' (REDIS_URL; any number " +
      "of nodes sharing it form a cluster, docs/cluster.md)",
  ),
  REDIS_URL: fills(
    "redisUrl",
    z.string().default("redis://127.0.0.1:6379"),
    "with STORE=redis: the Redis server (the default is a development default: a local Redis)",
  ),
  REDIS_PREFIX: fills(
    "redisPrefix",
    z.string().default("lg:"),
    "with STORE=redis: prefix of every key and channel, so that one Redis can serve several " +
      "gateways (clusters)",
  ),
  NODE_ID: fills(
    "nodeId",
    z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).optional(),
    "with STORE=redis: this node's name in the cluster (logs, metrics); a random one per " +
      "process when unset. Two running nodes must never share one",
  ),
  NODE_TTL_MS: fills(
    "nodeTtlMs",
    integer(1_000).default(6_000),
    "with STORE=redis: a node whose heartbeat has not reached Redis for this long is dead; " +
      "within this plus NODE_HEARTBEAT_MS another node takes its users over (their sessions " +
      "go offline, their background deadlines are kept)",
  ),
  NODE_HEARTBEAT_MS: fills(
    "nodeHeartbeatMs",
    integer(100).default(1_000),
    "with STORE=redis: how often a node renews its liveness in Redis and looks for dead nodes",
  ),
  CLUSTER_REQUEST_TIMEOUT_MS: fills(
    "clusterRequestTimeoutMs",
    integer(100).default(3_000),
    "with STORE=redis: a request forwarded to the node holding a user fails (503) after this",
  ),
  LOG_LEVEL: fills(
    "logLevel",
    z.enum(["debug", "info", "warn", "error"]).default("info"),
    "least severe log level written",
  ),
  // The two sources of the `apps` field: `loadConfig` reads the file or the inline text and
  // checks it against AppConfigSchema, so these carry no `configField` of their own.
  APPS_FILE: z.string().optional().meta({ description: "JSON file with an array of apps" }),
  APPS_JSON: z.string().optional().meta({
    description: "the same array, inline (takes precedence over APPS_FILE)",
  }),
});

type EnvShape = typeof EnvSchema.shape;
export type EnvVarName = keyof EnvShape;
type FieldOf<Name extends EnvVarName> = EnvShape[Name] extends
  { readonly configField: infer Field extends string } ? Field : never;

/** The config fields that one environment variable each fills, with their parsed types. */
export type EnvironmentConfig = {
  [Name in EnvVarName as FieldOf<Name>]: z.output<EnvShape[Name]>;
};

export interface GatewayConfig extends EnvironmentConfig {
  /** From APPS_FILE or APPS_JSON, plus DEV_APP under `--dev`. */
  apps: AppConfig[];
  /** The `--dev` flag. */
  dev: boolean;
}

/** Field → the value the field has when its variable is unset (MAX_CONNECTIONS: 0 = auto). */
export const DEFAULTS: Readonly<EnvironmentConfig> = Object.freeze(
  fieldsOf(EnvSchema.parse({})),
);

/** Environment variable → one-line description (every variable the gateway reads). */
export const ENV_VARS: Readonly<Record<EnvVarName, string>> = Object.freeze(
  Object.fromEntries(
    describeEnvironment().map((variable) => [variable.name, variable.description]),
  ) as Record<EnvVarName, string>,
);

/** One row of docs/configuration.md, read off `EnvSchema`. */
export interface EnvVarDoc {
  name: EnvVarName;
  description: string;
  /** The default as written in the environment; undefined when there is none. */
  defaultValue: string | number | undefined;
  /** A word shown instead of `defaultValue` when that value stands for something ("auto"). */
  defaultLabel: string | undefined;
  /** What the variable accepts, for docs and error messages: "an integer ≥ 1". */
  accepts: string | undefined;
}

/** The documented facts of every variable, in schema order. */
export function describeEnvironment(): EnvVarDoc[] {
  // The input side of the JSON Schema is what an operator writes: defaults before transforms
  // (KV_PATH's path, CORS_ORIGINS' text), integer minimums and enum values.
  const json = z.toJSONSchema(EnvSchema, { io: "input", unrepresentable: "any" });
  const properties = (json.properties ?? {}) as Record<string, JsonProperty>;
  return (Object.keys(EnvSchema.shape) as EnvVarName[]).map((name) => {
    const property = properties[name];
    return {
      name,
      description: property.description ?? "",
      // SESSION_SECRET's empty default means "not set" (see its entry).
      defaultValue: property.default === "" ? undefined : property.default,
      defaultLabel: property.defaultLabel,
      accepts: acceptsOf(property),
    };
  });
}

/** The part of a JSON Schema property that the docs read (zod copies `.meta` into it). */
interface JsonProperty {
  type?: string;
  description?: string;
  default?: string | number;
  defaultLabel?: string;
  minimum?: number;
  enum?: string[];
}

function acceptsOf(property: JsonProperty): string | undefined {
  if (property.enum) return `one of ${property.enum.join(", ")}`;
  if (property.type === "integer") return `an integer ≥ ${property.minimum ?? 0}`;
  return undefined;
}

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
  const parsed = parseEnvironment(env);
  const fromEnv = fieldsOf(parsed);
  if (fromEnv.sessionSecret === "" && dev) fromEnv.sessionSecret = DEV_SESSION_SECRET;
  // The empty default stands for "not set": the dev app's keys are public, so --dev stays
  // on this machine unless HOST says otherwise.
  if (fromEnv.hostname === "") fromEnv.hostname = dev ? "127.0.0.1" : "0.0.0.0";

  let apps = parseApps(parsed.APPS_JSON, parsed.APPS_FILE, options.readFile);
  if (dev && !apps.some((a) => a.appId === DEV_APP.appId)) apps = [DEV_APP, ...apps];

  const config: GatewayConfig = { ...fromEnv, apps, dev, ...overrides };

  const { openFileLimit } = config;
  if (config.maxConnections === 0) {
    config.maxConnections = maxConnectionsFor(openFileLimit);
  } else if (openFileLimit !== undefined && config.maxConnections > openFileLimit) {
    throw new ConfigError(
      `MAX_CONNECTIONS (${config.maxConnections}) exceeds OPEN_FILE_LIMIT (${openFileLimit}): ` +
        "every connection holds a file descriptor. Raise the limit (ulimit -n) or lower " +
        "MAX_CONNECTIONS, or leave it unset for auto.",
    );
  }

  // A default bounded by another value gives way when that value is set low, so lowering
  // IDLE_TIMEOUT_MS (say) does not also require setting HANDSHAKE_TIMEOUT_MS; a value that was
  // set and breaks the bound is refused by `validate` instead.
  const unset = (name: EnvVarName, field: keyof GatewayConfig) =>
    present(env[name]) === undefined && !(field in overrides);
  if (unset("HANDSHAKE_TIMEOUT_MS", "handshakeTimeoutMs")) {
    config.handshakeTimeoutMs = Math.min(config.handshakeTimeoutMs, config.idleTimeoutMs - 1);
  }
  if (unset("MAX_CONNECTIONS_PER_IP", "maxConnectionsPerIp")) {
    config.maxConnectionsPerIp = Math.min(config.maxConnectionsPerIp, config.maxConnections);
  }
  if (unset("HEADERS_TIMEOUT_MS", "headersTimeoutMs")) {
    config.headersTimeoutMs = Math.min(config.headersTimeoutMs, config.requestTimeoutMs);
  }

  validate(config);
  return config;
}

/** Empty variables count as unset (an `X=` line in an env file means "not configured"). */
function present(value: string | undefined): string | undefined {
  return value === "" ? undefined : value;
}

function parseEnvironment(env: Env): z.output<typeof EnvSchema> {
  const input = Object.fromEntries(
    Object.keys(EnvSchema.shape).map((name) => [name, present(env[name])]),
  );
  const result = EnvSchema.safeParse(input);
  if (result.success) return result.data;
  const name = String(result.error.issues[0].path[0]) as EnvVarName;
  const accepts = describeEnvironment().find((variable) => variable.name === name)?.accepts;
  throw new ConfigError(
    `${name}=${env[name]} is invalid` + (accepts ? `: expected ${accepts}.` : "."),
  );
}

/** The config fields of the parsed environment: each variable's value under its `configField`. */
function fieldsOf(parsed: z.output<typeof EnvSchema>): EnvironmentConfig {
  const fields: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(EnvSchema.shape)) {
    if ("configField" in schema) fields[schema.configField] = parsed[name as EnvVarName];
  }
  // The loop follows `configField` exactly as the EnvironmentConfig mapped type does.
  return fields as EnvironmentConfig;
}

function parseApps(
  appsJson: string | undefined,
  appsFile: string | undefined,
  readFile?: (path: string) => string,
): AppConfig[] {
  const text = appsJson ?? (appsFile !== undefined ? readApps(appsFile, readFile) : undefined);
  if (text === undefined) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ConfigError(
      `${appsJson !== undefined ? "APPS_JSON" : `APPS_FILE (${appsFile})`} is not valid JSON.`,
    );
  }
  const result = z.array(AppConfigSchema).safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new ConfigError(
      `apps configuration is invalid at [${issue.path.join(".")}]: ${issue.message}`,
    );
  }
  return result.data;
}

function readApps(path: string, readFile?: (path: string) => string): string {
  try {
    return (readFile ?? Deno.readTextFileSync)(path);
  } catch (error) {
    throw new ConfigError(`APPS_FILE (${path}) cannot be read: ${(error as Error).message}`);
  }
}

/**
 * Descriptors kept out of MAX_CONNECTIONS auto: the listen backlog (Deno's accept loop takes a
 * whole backlog at once, and an accept that fails with EMFILE stops its listener for good) and
 * a reserve for the store, logs and outgoing connections.
 */
export const RESERVED_DESCRIPTORS = 128 + 128;
/** The limit assumed when OPEN_FILE_LIMIT is not given: Linux's default soft limit. */
export const ASSUMED_OPEN_FILE_LIMIT = 1024;

/**
 * The auto MAX_CONNECTIONS: the open-file limit less RESERVED_DESCRIPTORS, never below 16.
 * An unknown limit is taken as ASSUMED_OPEN_FILE_LIMIT: a low cap is a warning at start-up,
 * a cap above the real limit would stop the listener under load.
 */
export function maxConnectionsFor(openFileLimit: number | undefined): number {
  return Math.max(16, (openFileLimit ?? ASSUMED_OPEN_FILE_LIMIT) - RESERVED_DESCRIPTORS);
}

/** An app other than the labelled dev app: its credentials are not public. */
function isDevApp(app: AppConfig): boolean {
  return app.appId === DEV_APP.appId && app.apiKey === DEV_APP.apiKey &&
    app.authKey === DEV_APP.authKey;
}

/** A rule relating configured values; `validate` checks them and the docs list them. */
export interface ConfigRule {
  /** The rule in one sentence, for docs/configuration.md. */
  rule: string;
  /** What to fix, naming the variables and their values; undefined when the rule holds. */
  brokenBy(config: GatewayConfig): string | undefined;
}

export const CONFIG_RULES: readonly ConfigRule[] = [
  {
    rule: "At least one app is configured: APPS_FILE or APPS_JSON, or --dev for the demo app.",
    brokenBy: (c) =>
      c.apps.length === 0
        ? "No app is configured: set APPS_FILE or APPS_JSON, or start with --dev for the demo app."
        : undefined,
  },
  {
    rule: "Every appId is configured once.",
    brokenBy: (c) => {
      const ids = new Set<string>();
      for (const app of c.apps) {
        if (ids.has(app.appId)) return `appId '${app.appId}' is configured twice.`;
        ids.add(app.appId);
      }
      return undefined;
    },
  },
  {
    rule: "SESSION_SECRET has at least 32 characters; only --dev has a default.",
    brokenBy: (c) =>
      c.sessionSecret.length < 32
        ? "SESSION_SECRET must be set to at least 32 characters (only --dev has a default)."
        : undefined,
  },
  {
    rule: "The dev secret is public, so it never signs credentials of an app other than the " +
      "dev app: with --dev and APPS_FILE or APPS_JSON, SESSION_SECRET is required.",
    brokenBy: (c) =>
      c.sessionSecret === DEV_SESSION_SECRET && c.apps.some((app) => !isDevApp(app))
        ? "SESSION_SECRET is required when apps other than the dev app are configured: the " +
          "dev secret is public, and anyone could sign credentials for them with it."
        : undefined,
  },
  {
    rule: "HEARTBEAT_INTERVAL_MS is below LIVENESS_WINDOW_MS, so that heartbeats arrive " +
      "inside the window.",
    brokenBy: (c) =>
      c.heartbeatIntervalMs >= c.livenessWindowMs
        ? `HEARTBEAT_INTERVAL_MS (${c.heartbeatIntervalMs}) must be below LIVENESS_WINDOW_MS ` +
          `(${c.livenessWindowMs}) so that heartbeats arrive inside the window.`
        : undefined,
  },
  {
    rule: "IDLE_TIMEOUT_MS exceeds HEARTBEAT_INTERVAL_MS + PONG_TIMEOUT_MS, so that live " +
      "clients are not closed as idle.",
    brokenBy: (c) =>
      c.idleTimeoutMs <= c.heartbeatIntervalMs + c.pongTimeoutMs
        ? `IDLE_TIMEOUT_MS (${c.idleTimeoutMs}) must exceed HEARTBEAT_INTERVAL_MS + ` +
          `PONG_TIMEOUT_MS (${c.heartbeatIntervalMs + c.pongTimeoutMs}), or live clients ` +
          "would be closed as idle."
        : undefined,
  },
  {
    rule: "HANDSHAKE_TIMEOUT_MS is below IDLE_TIMEOUT_MS, so that a slow handshake is " +
      "reported as one.",
    brokenBy: (c) =>
      c.handshakeTimeoutMs >= c.idleTimeoutMs
        ? `HANDSHAKE_TIMEOUT_MS (${c.handshakeTimeoutMs}) must be below IDLE_TIMEOUT_MS ` +
          `(${c.idleTimeoutMs}), or sockets would be closed as idle before their handshake ` +
          "times out."
        : undefined,
  },
  {
    rule: "MAX_CONNECTIONS_PER_IP is at most MAX_CONNECTIONS (after auto is resolved).",
    brokenBy: (c) =>
      c.maxConnectionsPerIp > c.maxConnections
        ? `MAX_CONNECTIONS_PER_IP (${c.maxConnectionsPerIp}) must not exceed MAX_CONNECTIONS ` +
          `(${c.maxConnections}).`
        : undefined,
  },
  {
    rule: "REQUEST_TIMEOUT_MS is at least HEADERS_TIMEOUT_MS, since the head is part of the " +
      "request.",
    brokenBy: (c) =>
      c.requestTimeoutMs < c.headersTimeoutMs
        ? `REQUEST_TIMEOUT_MS (${c.requestTimeoutMs}) must be at least HEADERS_TIMEOUT_MS ` +
          `(${c.headersTimeoutMs}), since the head is part of the request.`
        : undefined,
  },
];

/**
 * How `loadConfig` resolves values before `validate` runs, for docs/configuration.md; the
 * code it describes is `loadConfig`, `maxConnectionsFor` and `openFileLimitFrom`.
 */
export const RESOLUTION_NOTES: readonly string[] = [
  "MAX_CONNECTIONS=0 (auto) resolves to max(16, OPEN_FILE_LIMIT − " +
  `${RESERVED_DESCRIPTORS}): the listen backlog and a reserve for the store and logs stay ` +
  `free. Without OPEN_FILE_LIMIT the limit is taken as ${ASSUMED_OPEN_FILE_LIMIT} (Linux's ` +
  "default) and the gateway says so at start-up; `deno task serve` sets it from the shell's " +
  "hard limit.",
  "A MAX_CONNECTIONS above OPEN_FILE_LIMIT stops the gateway at start-up, since every " +
  "connection holds a file descriptor.",
  "HANDSHAKE_TIMEOUT_MS, MAX_CONNECTIONS_PER_IP and HEADERS_TIMEOUT_MS, when unset, shrink " +
  "to fit the value they are bounded by (IDLE_TIMEOUT_MS − 1, MAX_CONNECTIONS and " +
  "REQUEST_TIMEOUT_MS); when set, a value that does not fit stops the gateway.",
];

/** Checks the relations between values (CONFIG_RULES); the first broken one is thrown. */
export function validate(config: GatewayConfig): void {
  for (const { brokenBy } of CONFIG_RULES) {
    const problem = brokenBy(config);
    if (problem !== undefined) throw new ConfigError(problem);
  }
}

/** The timing block of the init reply and the `connected` frame. */
export function timingOf(
  config: Pick<
    GatewayConfig,
    | "livenessWindowMs"
    | "heartbeatIntervalMs"
    | "pongTimeoutMs"
    | "idleTimeoutMs"
    | "typingTimeoutMs"
    | "presenceIntervalMs"
  >,
) {
  return {
    livenessWindowMs: config.livenessWindowMs,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    pongTimeoutMs: config.pongTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    typingTimeoutMs: config.typingTimeoutMs,
    presenceIntervalMs: config.presenceIntervalMs,
  };
}
