/**
 * Starting and stopping a gateway process: open the store, revive the users that held a
 * connection, serve HTTP + WebSocket, and on stop close every socket with 1012, write
 * everything and close the store.
 */
import { type Clock, systemClock } from "./clock.ts";
import { type GatewayConfig, loadConfig, timingOf } from "./config.ts";
import type { Connection, ConnectionContext } from "./connection.ts";
import { CredentialSigner } from "./credential.ts";
import { login } from "./login.ts";
import { DeadlineWheel } from "./deadline_wheel.ts";
import { createApp } from "./app.ts";
import { KeyedRateLimiter } from "./rate_limit.ts";
import type { GatewayServices } from "./services.ts";
import { KvStore } from "./store/kv.ts";
import type { GatewayStore } from "./store/types.ts";
import { UserStateRuntime, UserStates } from "./user_state.ts";

export interface StartOptions {
  /** Overrides on top of the environment (tests pass everything here). */
  config?: Partial<GatewayConfig>;
  /** Read configuration from these variables (default: none, so tests are hermetic). */
  env?: Record<string, string | undefined>;
  clock?: Clock;
  /** A store to use instead of opening Deno KV at `config.kvPath`. */
  store?: GatewayStore;
  /** Called once listening. */
  onListen?: (address: { hostname: string; port: number }) => void;
}

export interface RunningGateway {
  /** HTTP origin, e.g. `http://127.0.0.1:49152`. */
  url: string;
  port: number;
  config: GatewayConfig;
  services: GatewayServices;
  /** Users revived from the store at start. */
  revived: number;
  /** Graceful stop: 1012 to every socket, state written, store closed. */
  stop(): Promise<void>;
}

export async function startGateway(options: StartOptions = {}): Promise<RunningGateway> {
  const config = loadConfig(options.env ?? {}, {}, options.config);
  const clock = options.clock ?? systemClock;
  const store = options.store ?? await KvStore.open(config.kvPath);

  const runtime = new UserStateRuntime(clock, config, store, {
    tickMs: config.deadlineTickMs,
    persistDelayMs: config.persistDelayMs,
    persistLazyMs: config.persistLazyMs,
  });
  const users = new UserStates(runtime);
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

  const open = new Set<Connection>();
  const connections: ConnectionContext = {
    clock,
    config,
    open,
    timing: timingOf(config),
    idle: new DeadlineWheel<Connection>(clock, 100, (conn, now) => conn.checkIdle(now)),
    login: (appId, body) => login(services, appId, body),
  };
  const services: GatewayServices = {
    config,
    clock,
    apps: new Map(config.apps.map((a) => [a.appId, a])),
    store,
    users,
    signer: new CredentialSigner(config.sessionSecret),
    connections,
    httpLimiter: new KeyedRateLimiter(config.httpRatePerSec, config.httpRatePerSec * 2),
  };
  const app = createApp(services);

  const abort = new AbortController();
  let resolveListen: (addr: Deno.NetAddr) => void;
  const listening = new Promise<Deno.NetAddr>((r) => (resolveListen = r));
  const server = Deno.serve(
    {
      port: config.port,
      hostname: config.hostname,
      signal: abort.signal,
      onListen: (addr) => resolveListen(addr as Deno.NetAddr),
    },
    (request, info) =>
      app.fetch(request, { remoteAddr: (info.remoteAddr as Deno.NetAddr).hostname }),
  );
  const addr = await listening;
  options.onListen?.({ hostname: addr.hostname, port: addr.port });
  const host = addr.hostname === "0.0.0.0" ? "127.0.0.1" : addr.hostname;

  let stopping: Promise<void> | null = null;
  const stop = () =>
    stopping ??= (async () => {
      await users.shutdown();
      connections.idle.close();
      for (const conn of [...open]) conn.close("server_shutdown");
      abort.abort();
      await server.finished;
      store.close();
    })();

  return { url: `http://${host}:${addr.port}`, port: addr.port, config, services, revived, stop };
}
