/**
 * Starting and stopping a gateway process: open the store, revive the users that held a
 * connection, serve HTTP + WebSocket through the configured transport, and on stop refuse new
 * work, close every socket with 1012, write everything and close the store.
 */
import { type Clock, systemClock } from "./clock.ts";
import { ConfigError, type GatewayConfig, loadConfig, timingOf } from "./config.ts";
import type { Connection, ConnectionContext } from "./connection.ts";
import { CredentialSigner } from "./credential.ts";
import { GatewayError } from "./errors.ts";
import { login } from "./login.ts";
import { createLogger, type Logger } from "./log.ts";
import { type ConnectionSample, EventLoopLagSampler, GatewayMetrics } from "./metrics.ts";
import { DeadlineWheel } from "./deadline_wheel.ts";
import { createApp } from "./app.ts";
import { KeyedRateLimiter } from "./rate_limit.ts";
import { Messaging } from "./messaging.ts";
import { PresenceHub } from "./presence.ts";
import type { LiveRelays } from "./relays.ts";
import type { GatewayServices } from "./services.ts";
import { KvStore } from "./store/kv.ts";
import type { GatewayStore } from "./store/types.ts";
import { serveDeno } from "./transport/deno.ts";
import { serveNode } from "./transport/node.ts";
import { TypingRelay } from "./typing.ts";
import type { RunningTransport, TransportLimits } from "./transport/types.ts";
import { UserStateRuntime, UserStates } from "./user_state.ts";

/**
 * Connects of its address's connect budget that a connection closed for abuse costs: at the
 * default budget (100 a second) a client whose every connection is closed for abuse gets about
 * nine a second.
 */
const ABUSE_CONNECT_COST = 10;

export interface StartOptions {
  /** Overrides on top of the environment (tests pass everything here). */
  config?: Partial<GatewayConfig>;
  /** Read configuration from these variables (default: none, so tests are hermetic). */
  env?: Record<string, string | undefined>;
  clock?: Clock;
  /** A store to use instead of opening Deno KV at `config.kvPath`. */
  store?: GatewayStore;
  /** Where logs go (default: JSON lines at the configured level). */
  logger?: Logger;
  /** Called once listening. */
  onListen?: (address: { hostname: string; port: number }) => void;
}

export interface RunningGateway {
  /** HTTP origin, e.g. `http://127.0.0.1:49152`. */
  url: string;
  port: number;
  config: GatewayConfig;
  services: GatewayServices;
  transport: RunningTransport;
  /** Users revived from the store at start. */
  revived: number;
  /** Graceful stop: new work refused, 1012 to every socket, state written, store closed. */
  stop(): Promise<void>;
}

export async function startGateway(options: StartOptions = {}): Promise<RunningGateway> {
  const config = loadConfig(options.env ?? {}, {}, options.config);
  const log = options.logger ?? createLogger(config.logLevel);
  const clock = options.clock ?? systemClock;
  const store = options.store ?? await KvStore.open(config.kvPath, {
    compactAfterBytes: config.kvCompactAfterBytes,
    compactWhenIdleMs: config.kvCompactIdleMs,
  });

  const health = { draining: false, storeOk: true };
  const open = new Set<Connection>();
  const metrics = new GatewayMetrics({
    connections: () => connectionSamples(open),
    usersInMemory: () => users.size,
    storeReady: () => health.storeOk,
  });
  // Presence changes start with the revival below (a deadline that passed while down).
  const presence = new PresenceHub({ clock, store, intervalMs: config.presenceIntervalMs, log });
  const runtime = new UserStateRuntime(clock, config, store, {
    tickMs: config.deadlineTickMs,
    persistDelayMs: config.persistDelayMs,
    deadlineBoundMs: config.deadlineBoundMs,
    restartGraceMs: config.restartGraceMs,
    stream: {
      retentionMs: config.streamRetentionMs,
      maxEvents: config.streamMaxEvents,
      cacheEvents: config.streamCacheEvents,
      cacheChars: config.streamCacheBytes,
      replayLimit: config.replayLimit,
      // A replay must fit the output limit with room to spare for live frames.
      replayMaxBytes: Math.floor(config.maxBufferedBytes / 2),
    },
    observer: {
      deadlineFired: (ms) => metrics.deadlineFired(ms),
      storeCommit: (ms) => {
        health.storeOk = true;
        metrics.storeCommit(ms);
      },
      storeCommitFailed: (error) => {
        health.storeOk = false;
        metrics.storeCommitFailed();
        log.error("store.commit_failed", { error });
      },
      alarmFailed: (error) => log.error("deadline.handler_failed", { error }),
      presenceChanged: (user, online, at) => presence.presenceChanged(user, online, at),
    },
  });
  const users = new UserStates(runtime, { evictAfterMs: config.userEvictAfterMs });
  for (const app of config.apps) {
    for (const seed of app.seedUsers ?? []) {
      await store.createUser(app.appId, {
        uid: seed.uid,
        name: seed.name ?? seed.uid,
        createdAt: clock.now(),
      });
    }
  }
  const revived = await users.revive();

  const messaging = new Messaging(store, users, clock);
  const typing = new TypingRelay({
    clock,
    users,
    messaging,
    timeoutMs: config.typingTimeoutMs,
    log,
  });
  const relays: LiveRelays = {
    connected: (target, user, _sessionId, subscription) =>
      presence.connected(target, user, subscription),
    disconnected: (target) => {
      typing.disconnected(target);
      presence.disconnected(target);
    },
    typing: (target, user, _sessionId, frame) => typing.typing(target, user, frame),
  };
  const httpLimiter = new KeyedRateLimiter(config.httpRatePerSec, config.httpRatePerSec * 2);
  const connections: ConnectionContext = {
    clock,
    config,
    metrics,
    log,
    open,
    timing: timingOf(config),
    messaging,
    relays,
    store,
    idle: new DeadlineWheel<Connection>(
      clock,
      100,
      (conn, now) => conn.checkIdle(now),
      (error) => log.error("idle_check.failed", { error }),
    ),
    login: (appId, body, remoteAddr) => {
      // A login inside the handshake counts against the same per-address budget as an HTTP
      // login, so a login flood costs the same whichever way it comes.
      if (!httpLimiter.take(remoteAddr, clock.now())) {
        metrics.refusals.http_rate++;
        return Promise.reject(new GatewayError("ERR_TOO_MANY_REQUESTS"));
      }
      return login(services, appId, body);
    },
    // Set once the transport is up (a connection cannot close for abuse before that).
    penalize: () => {},
  };
  const services: GatewayServices = {
    config,
    clock,
    apps: new Map(config.apps.map((a) => [a.appId, a])),
    store,
    users,
    messaging,
    signer: new CredentialSigner(config.sessionSecret),
    connections,
    httpLimiter,
    metrics,
    log,
    health,
    profileChanged: (appId, uid) => presence.profileChanged(appId, uid, users.peek(appId, uid)),
  };
  const app = createApp(services);

  const limits: TransportLimits = {
    maxConnections: config.maxConnections,
    maxConnectionsPerIp: config.maxConnectionsPerIp,
    connectRatePerIp: config.connectRatePerIp,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    keepAliveTimeoutMs: config.keepAliveTimeoutMs,
    maxHeaderBytes: config.maxHeaderBytes,
    maxBodyBytes: config.maxBodyBytes,
    maxFrameBytes: config.maxFrameBytes,
    closeTimeoutMs: config.closeTimeoutMs,
  };
  const serve = config.transport === "deno" ? serveDeno : serveNode;
  const transport = await serve({
    hostname: config.hostname,
    port: config.port,
    limits,
    fetch: (request, info) =>
      app.fetch(request, { remoteAddr: info.remoteAddr, upgrade: info.upgrade }),
    onRefused: (kind) => metrics.refusals[kind]++,
    onError: (event, error) => log.error(event, { error }),
    onWarning: (event, fields) => log.warn(event, fields),
  }).catch(async (error: unknown) => {
    // Nothing is served: give back what was opened, and say which setting to change.
    presence.close();
    typing.close();
    await users.shutdown();
    connections.idle.close();
    await store.close();
    throw listenErrorOf(error, config.hostname, config.port);
  });
  connections.penalize = (address) => transport.penalize(address, ABUSE_CONNECT_COST);
  options.onListen?.({ hostname: transport.hostname, port: transport.port });
  const lag = new EventLoopLagSampler(metrics);
  lag.start();
  const host = transport.hostname === "0.0.0.0" || transport.hostname === "::"
    ? "127.0.0.1"
    : transport.hostname;

  let stopping: Promise<void> | null = null;
  const stop = () =>
    stopping ??= (async () => {
      // New requests get 503 and the listener closes first, so nothing changes state after
      // the final write below.
      health.draining = true;
      await transport.stopAccepting();
      // Every connection closes below: nothing is relayed to them on the way out.
      presence.close();
      typing.close();
      await users.shutdown();
      connections.idle.close();
      for (const conn of [...open]) conn.close("server_shutdown");
      lag.stop();
      // Sockets get the close timeout to answer their 1012, then the transport lets go.
      await transport.close();
      await store.close();
    })();

  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${transport.port}`,
    port: transport.port,
    config,
    services,
    transport,
    revived,
    stop,
  };
}

/**
 * A listen that failed because of the configuration, as a ConfigError naming the variable (the
 * process prints it as one line and exits with 2); anything else as it is.
 */
export function listenErrorOf(error: unknown, hostname: string, port: number): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  const name = (error as { name?: unknown } | null)?.name;
  if (code === "EADDRINUSE" || name === "AddrInUse") {
    return new ConfigError(
      `PORT ${port} is already in use on ${hostname}: stop what holds it, or choose another PORT.`,
    );
  }
  if (code === "EACCES" || name === "PermissionDenied") {
    return new ConfigError(
      `PORT ${port} on ${hostname} needs privileges this process does not have: choose a PORT ` +
        "of 1024 or more.",
    );
  }
  if (
    code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "EADDRNOTAVAIL" ||
    code === "EINVAL" || name === "AddrNotAvailable" ||
    // Deno.serve's resolver failure carries neither a code nor an error class.
    (error instanceof Error && error.message.startsWith("failed to lookup address information"))
  ) {
    return new ConfigError(
      `HOST ${hostname} is not an address of this machine (or does not resolve): set ` +
        "HOST to one, for example 127.0.0.1 or 0.0.0.0.",
    );
  }
  return error;
}

/** The connection gauges: mode and app state of every open connection, read at scrape time. */
function* connectionSamples(open: Iterable<Connection>): Iterable<ConnectionSample> {
  for (const conn of open) {
    const liveness = conn.liveness;
    yield liveness === null
      ? { mode: "none", appState: "foreground" }
      : { mode: liveness.mode, appState: liveness.appState };
  }
}
