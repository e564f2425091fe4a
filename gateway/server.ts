/**
 * Starting and stopping a gateway process: open the store, revive the users that held a
 * connection, serve HTTP + WebSocket through the configured transport, and on stop refuse new
 * work, close every socket with 1012, write everything and close the store.
 */
import { type Clock, systemClock } from "./clock.ts";
import { ConfigError, type GatewayConfig, loadConfig, timingOf } from "./config.ts";
import { closingFrame, Connection, type ConnectionContext, socketAuthOf } from "./connection.ts";
import { CredentialSigner } from "./credential.ts";
import { GatewayError } from "./errors.ts";
import { login, resolveCredential } from "./login.ts";
import { createLogger, type Logger } from "./log.ts";
import { type ConnectionSample, EventLoopLagSampler, GatewayMetrics } from "./metrics.ts";
import { DeadlineWheel } from "./deadline_wheel.ts";
import { createApp } from "./app.ts";
import { KeyedRateLimiter } from "./rate_limit.ts";
import { Messaging, type RemoteItem } from "./messaging.ts";
import { PresenceHub } from "./presence.ts";
import type { LiveRelays } from "./relays.ts";
import type { GatewayServices } from "./services.ts";
import { answerForwarded, forwardHttp } from "./cluster/forward.ts";
import { OwnedElsewhere } from "./cluster/port.ts";
import { SocketRelays } from "./cluster/relay.ts";
import { closeCodeTable } from "../contract/mod.ts";
import { KvStore } from "./store/kv.ts";
import { answerUnavailableWhileAway } from "./store/guard.ts";
import type { GatewayStore } from "./store/types.ts";
import { serveDeno } from "./transport/deno.ts";
import { serveNode } from "./transport/node.ts";
import { type TypingFrameType, TypingRelay } from "./typing.ts";
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
  /** With STORE=redis: this node's id in its cluster. */
  nodeId?: string;
  /** Graceful stop: new work refused, 1012 to every socket, state written, store closed. */
  stop(): Promise<void>;
}

export async function startGateway(options: StartOptions = {}): Promise<RunningGateway> {
  const config = loadConfig(options.env ?? {}, {}, options.config);
  const log = options.logger ?? createLogger(config.logLevel);
  const clock = options.clock ?? systemClock;
  /** The store's connection closes because the gateway stops: not an incident. */
  let storeClosing = false;
  // Redis's modules (ioredis, node:net) are loaded only for STORE=redis: the default and the
  // edge path stay free of them.
  const redisStore = options.store === undefined && config.store === "redis"
    ? await (await import("./store/redis.ts")).RedisStore.open(config.redisUrl, {
      prefix: config.redisPrefix,
      connectionName: "gateway-store",
      onConnectedChange: (connected, error) => {
        if (connected) log.info("store.redis_connected");
        else if (!storeClosing) log.error("store.redis_lost", { error });
      },
    })
    : null;
  const store = options.store ??
    (redisStore !== null
      ? answerUnavailableWhileAway(redisStore, () => redisStore.connected)
      : await KvStore.open(config.kvPath, {
        compactAfterBytes: config.kvCompactAfterBytes,
        compactWhenIdleMs: config.kvCompactIdleMs,
      }));
  // On Redis every node is a member of a cluster (of one, or many sharing REDIS_URL).
  const cluster = config.store === "redis"
    ? await (await import("./cluster/cluster.ts")).Cluster.join({
      redisUrl: config.redisUrl,
      prefix: config.redisPrefix,
      nodeId: config.nodeId,
      ttlMs: config.nodeTtlMs,
      heartbeatMs: config.nodeHeartbeatMs,
      requestTimeoutMs: config.clusterRequestTimeoutMs,
      log,
    }).catch(async (error) => {
      await store.close();
      throw error;
    })
    : null;

  // Not ready while the last write failed, or while Redis is away (known before any write).
  let lastCommitOk = true;
  const health = {
    draining: false,
    get storeOk() {
      return lastCommitOk && (redisStore?.connected ?? true);
    },
    set storeOk(ok: boolean) {
      lastCommitOk = ok;
    },
    clusterOk: cluster === null ? undefined : () => cluster.ready,
  };
  const open = new Set<Connection>();
  const metrics = new GatewayMetrics({
    connections: () => connectionSamples(open),
    usersInMemory: () => users.size,
    storeReady: () => health.storeOk,
    relayedSockets: cluster === null ? undefined : () => ({
      edge: relaysOfSockets?.edgeCount ?? 0,
      holder: relaysOfSockets?.remoteCount ?? 0,
    }),
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
      presenceChanged: (user, online, at) => {
        presence.presenceChanged(user, online, at);
        // The other nodes' subscribers hear of it too (live only, like presence itself).
        cluster?.bus.broadcast("presence", { appId: user.appId, uid: user.uid, online, at })
          .catch(() => {});
      },
      claimLost: (user) => {
        log.warn("cluster.claim_lost", { appId: user.appId, uid: user.uid });
        users.drop(user);
      },
    },
  });
  const users = new UserStates(runtime, {
    evictAfterMs: config.userEvictAfterMs,
    cluster: cluster ?? undefined,
  });
  const seedUsers = async () => {
    for (const app of config.apps) {
      for (const seed of app.seedUsers ?? []) {
        await store.createUser(app.appId, {
          uid: seed.uid,
          name: seed.name ?? seed.uid,
          createdAt: clock.now(),
        });
      }
    }
  };
  await seedUsers();
  // A cluster's nodes do not revive at start: a dead node's users are taken over by the
  // reaping (cluster.ts), whoever does it; a restarted node is a new node.
  const revived = cluster === null ? await users.revive() : 0;

  const messaging = new Messaging(store, users, clock);
  const typing = new TypingRelay({
    clock,
    users,
    messaging,
    timeoutMs: config.typingTimeoutMs,
    log,
    // Receivers held by other nodes: every node writes the frame to those it holds (typing is
    // live only, like presence: a node that misses it misses nothing stored).
    elsewhere: cluster === null
      ? undefined
      : (appId, uids, text, type) =>
        void cluster.bus.broadcast("typing", { appId, uids, text, type }).catch(() => {}),
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
      // A socket logs in here: in a cluster, its user comes to this node.
      return login(services, appId, body, "here");
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
  let relaysOfSockets: SocketRelays | null = null;
  if (cluster !== null) {
    users.writable = () => cluster.ready && (redisStore?.connected ?? true);
    users.confirmWithinMs = config.clusterRequestTimeoutMs;
    services.forward = (node, request) => forwardHttp(cluster.bus, node, request);
  }
  const app = createApp(services);
  if (cluster !== null) {
    cluster.bus.handle("http", (body) => answerForwarded(app, body));
    messaging.remote = async (node, appId, items) =>
      await cluster.bus.request(node, "append", { appId, items }) as Array<[number, number]>;
    cluster.bus.handle("append", (body) => {
      const { appId, items } = body as { appId: string; items: RemoteItem[] };
      return messaging.appendHere(appId, items);
    });
    cluster.bus.handle("handoff", (body) => {
      const { appId, uid } = body as { appId: string; uid: string };
      return users.handOff(appId, uid);
    });
    const socketRelays = new SocketRelays(cluster.bus, {
      nodeId: cluster.nodeId,
      log,
      clock,
      idleTimeoutMs: config.idleTimeoutMs,
      heartbeatAnswered: () => metrics.pings.heartbeat++,
      maxBufferedBytes: config.maxBufferedBytes,
      closing: (reason) => ({ code: closeCodeTable[reason], text: closingFrame(reason) }),
      // A socket at another node whose user is held here: its connection runs here.
      accept: async (request, wire) => {
        let found = null;
        if (request.credential !== undefined) {
          try {
            found = await resolveCredential(services, request.credential, "here");
          } catch (error) {
            if (error instanceof OwnedElsewhere) return "moved";
            throw error;
          }
        }
        const auth = socketAuthOf(request.credential, found);
        new Connection(wire, connections, auth, request.remoteAddr);
        wire.open();
        if (request.first !== undefined) wire.deliver(["t", request.rid, request.first]);
        return "ok";
      },
    });
    relaysOfSockets = socketRelays;
    services.relaySocket = async (node, request) => {
      const opened = await socketRelays.open(node, request).catch(() => null);
      if (opened === null || opened.answer !== "ok") {
        throw new GatewayError("ERR_SERVICE_UNAVAILABLE", RELAY_REFUSED);
      }
      return opened;
    };
    connections.relayTo = async (node, wire, first, remoteAddr) => {
      const opened = await socketRelays.open(node, { remoteAddr, first });
      if (opened.answer !== "ok") return false;
      // The socket went while the holder was asked: so does its connection there.
      if (!wire.writable) {
        opened.abort();
        return false;
      }
      opened.attach(wire, true);
      return true;
    };
    // Frames published while this node's subscription was down are lost: relays start over.
    cluster.bus.onSubscriptionLost(() => socketRelays.allGone());
    cluster.bus.on("typing", (body) => {
      const { appId, uids, text, type } = body as {
        appId: string;
        uids: string[];
        text: string;
        type: TypingFrameType;
      };
      for (const uid of uids) typing.deliverHere(appId, uid, text, type);
    });
    cluster.bus.on("presence", (body) => {
      const { appId, uid, online, at } = body as {
        appId: string;
        uid: string;
        online: boolean;
        at: number;
      };
      presence.presenceChanged({ appId, uid }, online, at);
    });
    cluster.start({
      adopt: async ({ appId, uid }) => void await users.get(appId, uid),
      peers: () => socketRelays.peers(),
      verifyClaims: async () => {
        const held = users.claimed();
        const claims = await cluster.registry.claimsOfUsers(held);
        held.forEach((user, i) => {
          const claim = user.claim;
          if (claim === null || claims[i] === `${claim.node} ${claim.fence}`) return;
          log.warn("cluster.claim_lost", { appId: user.appId, uid: user.uid });
          // Lost first: nothing more of it is written (the store would refuse it anyway).
          user.lost = true;
          users.drop(user);
        });
      },
      nodeGone: (node) => socketRelays.nodeGone(node),
      redisReset: () => {
        // Users, tokens, sessions and streams are gone: every client logs in again, and each
        // stream starts over under a new epoch (a resume gets recovered: false,
        // epoch_changed). The configured seed users come back.
        users.dropAll();
        seedUsers().catch((error) => log.error("cluster.reseed_failed", { error }));
      },
    });
  }

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
    await cluster?.stop();
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
      relaysOfSockets?.close();
      lag.stop();
      // Sockets get the close timeout to answer their 1012, then the transport lets go.
      await transport.close();
      // Leaving the cluster makes this node dead at once: another node takes its users over
      // and runs their background deadlines.
      await cluster?.stop();
      storeClosing = true;
      await store.close();
    })();

  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${transport.port}`,
    port: transport.port,
    config,
    services,
    transport,
    revived,
    nodeId: cluster?.nodeId,
    stop,
  };
}

const RELAY_REFUSED = "The user's socket could not be relayed to the node of the cluster that " +
  "holds the user: try again.";

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
