/** Configuration: defaults, environment, apps, and start-up refusals that say what to fix. */
import assert from "node:assert/strict";
import { ConfigError, DEFAULTS, DEV_APP, loadConfig } from "../gateway/mod.ts";
import {
  DEV_SESSION_SECRET,
  ENV_VARS,
  type GatewayConfig,
  maxConnectionsFor,
} from "../gateway/config.ts";
import { CONFIG_DOCS_FILE, renderConfigDocs } from "../gateway/config_docs.ts";
import { GatewayProcess, runGatewayToExit } from "./support/process.ts";

const SECRET = { SESSION_SECRET: "s".repeat(32) };
const APPS = JSON.stringify([{ appId: "shop", region: "eu", apiKey: "shop_api_key_123" }]);

Deno.test("config: defaults, the window in one place, and --dev adds the demo app", () => {
  const config = loadConfig({}, { dev: true });
  assert.equal(config.port, 8000);
  assert.equal(config.livenessWindowMs, 30_000);
  assert.equal(config.livenessWindowMs, DEFAULTS.livenessWindowMs);
  assert.equal(config.heartbeatIntervalMs, 15_000);
  assert.equal(config.pongTimeoutMs, 3_000);
  assert.deepEqual(config.apps, [DEV_APP]);
  assert.equal(config.kvPath, "./data/gateway.kv");
});

Deno.test("config: environment variables and apps JSON", () => {
  const config = loadConfig({
    ...SECRET,
    PORT: "9000",
    LIVENESS_WINDOW_MS: "5000",
    HEARTBEAT_INTERVAL_MS: "2000",
    IDLE_TIMEOUT_MS: "9000",
    KV_PATH: "platform",
    APPS_JSON: APPS,
  });
  assert.equal(config.port, 9000);
  assert.equal(config.livenessWindowMs, 5000);
  assert.equal(config.kvPath, undefined, "platform KV: Deno.openKv() without a path");
  assert.deepEqual(config.apps.map((a) => a.appId), ["shop"]);
  assert.equal(config.dev, false);
});

/** A `readFile` that serves these files and fails for any other path, like the real one. */
function files(contents: Record<string, string>): (path: string) => string {
  return (path) => {
    if (path in contents) return contents[path];
    throw new Deno.errors.NotFound(`no such file: ${path}`);
  };
}

Deno.test("config: apps from a file", () => {
  const config = loadConfig({ ...SECRET, APPS_FILE: "/etc/apps.json" }, {
    readFile: files({ "/etc/apps.json": APPS }),
  });
  assert.equal(config.apps[0].region, "eu");
});

Deno.test("config: the transport, connection, timeout and logging variables", () => {
  const defaults = loadConfig({}, { dev: true });
  assert.equal(defaults.transport, "node");
  assert.equal(defaults.maxConnections, 768, "auto, the open-file limit taken as 1024");
  assert.equal(defaults.maxConnectionsPerIp, 256);
  assert.equal(defaults.connectRatePerIp, 100);
  assert.equal(defaults.headersTimeoutMs, 10_000);
  assert.equal(defaults.requestTimeoutMs, 30_000);
  assert.equal(defaults.keepAliveTimeoutMs, 5_000);
  assert.equal(defaults.maxHeaderBytes, 16_384);
  assert.equal(defaults.handshakeTimeoutMs, 10_000);
  assert.equal(defaults.closeTimeoutMs, 5_000);
  assert.equal(defaults.deadlineBoundMs, 5_000);
  assert.equal(defaults.userEvictAfterMs, 60_000);
  assert.equal(defaults.logLevel, "info");
  assert.equal(defaults.metricsToken, undefined);

  const set = loadConfig({
    TRANSPORT: "deno",
    MAX_CONNECTIONS: "500",
    MAX_CONNECTIONS_PER_IP: "20",
    RATE_LIMIT_CONNECTS_PER_SEC: "7",
    HEADERS_TIMEOUT_MS: "2000",
    REQUEST_TIMEOUT_MS: "4000",
    KEEP_ALIVE_TIMEOUT_MS: "1000",
    MAX_HEADER_BYTES: "8192",
    HANDSHAKE_TIMEOUT_MS: "3000",
    CLOSE_TIMEOUT_MS: "2500",
    DEADLINE_BOUND_MS: "0",
    USER_EVICT_AFTER_MS: "1000",
    LOG_LEVEL: "debug",
    METRICS_TOKEN: "scrape-me",
    OPEN_FILE_LIMIT: "1024",
  }, { dev: true });
  assert.equal(set.transport, "deno");
  assert.equal(set.maxConnections, 500);
  assert.equal(set.maxConnectionsPerIp, 20);
  assert.equal(set.connectRatePerIp, 7);
  assert.equal(set.headersTimeoutMs, 2_000);
  assert.equal(set.requestTimeoutMs, 4_000);
  assert.equal(set.keepAliveTimeoutMs, 1_000);
  assert.equal(set.maxHeaderBytes, 8_192);
  assert.equal(set.handshakeTimeoutMs, 3_000);
  assert.equal(set.closeTimeoutMs, 2_500);
  assert.equal(set.deadlineBoundMs, 0);
  assert.equal(set.userEvictAfterMs, 1_000);
  assert.equal(set.logLevel, "debug");
  assert.equal(set.metricsToken, "scrape-me");
});

Deno.test("config: the loaded config is a plain object with exactly the GatewayConfig fields", () => {
  const config = loadConfig({}, { dev: true });
  assert.equal(Object.getPrototypeOf(config), Object.prototype);
  const fields: Array<keyof GatewayConfig> = [
    ...(Object.keys(DEFAULTS) as Array<keyof typeof DEFAULTS>),
    "apps",
    "dev",
  ];
  assert.deepEqual(Object.keys(config).sort(), fields.sort());
  assert.ok(!("persistLazyMs" in config), "PERSIST_LAZY_MS is gone");
  assert.ok(!("PERSIST_LAZY_MS" in ENV_VARS));
  for (const name of ["TRANSPORT", "MAX_CONNECTIONS", "METRICS_TOKEN", "APPS_FILE", "APPS_JSON"]) {
    assert.ok(name in ENV_VARS, `${name} is read from the environment`);
  }
});

Deno.test("config: overrides win over the environment and are validated", () => {
  const config = loadConfig({ PORT: "9000", LIVENESS_WINDOW_MS: "5000" }, {}, {
    port: 0,
    kvPath: ":memory:",
    dev: true,
    livenessWindowMs: 400,
    heartbeatIntervalMs: 150,
    pongTimeoutMs: 100,
    idleTimeoutMs: 2_000,
  });
  assert.equal(config.port, 0);
  assert.equal(config.livenessWindowMs, 400);
  assert.equal(config.kvPath, ":memory:");
  assert.throws(
    () => loadConfig({}, {}, { dev: true, heartbeatIntervalMs: 40_000 }),
    /HEARTBEAT_INTERVAL_MS \(40000\) must be below LIVENESS_WINDOW_MS/,
  );
});

Deno.test("config: --dev alone signs with the labelled dev secret", () => {
  assert.equal(loadConfig({}, { dev: true }).sessionSecret, DEV_SESSION_SECRET);
  const withSecret = loadConfig({ ...SECRET, APPS_JSON: APPS }, { dev: true });
  assert.equal(withSecret.sessionSecret, SECRET.SESSION_SECRET);
  assert.deepEqual(withSecret.apps.map((a) => a.appId), ["demo", "shop"]);
});

Deno.test("config: MAX_CONNECTIONS auto leaves the backlog and a reserve under OPEN_FILE_LIMIT", () => {
  assert.equal(maxConnectionsFor(1024), 768, "1024 − 128 (listen backlog) − 128 (reserve)");
  assert.equal(maxConnectionsFor(65_536), 65_280);
  assert.equal(maxConnectionsFor(64), 16, "never below 16");
  assert.equal(maxConnectionsFor(undefined), 768, "unknown: Linux's default 1024 is assumed");
  const load = (env: Record<string, string>) => loadConfig(env, { dev: true });
  assert.equal(load({ OPEN_FILE_LIMIT: "20000" }).maxConnections, 19_744);
  assert.equal(load({ OPEN_FILE_LIMIT: "unlimited" }).maxConnections, (1 << 20) - 256);
  assert.equal(load({ OPEN_FILE_LIMIT: "1024", MAX_CONNECTIONS: "1000" }).maxConnections, 1000);
  assert.equal(load({ MAX_CONNECTIONS: "5000" }).maxConnections, 5000, "no limit known: as set");
});

Deno.test("config: unset bounded defaults shrink to fit a lower bound instead of refusing", () => {
  const fast = loadConfig({ REQUEST_TIMEOUT_MS: "5000", OPEN_FILE_LIMIT: "420" }, {}, {
    dev: true,
    livenessWindowMs: 400,
    heartbeatIntervalMs: 150,
    pongTimeoutMs: 100,
    idleTimeoutMs: 600,
  });
  assert.equal(fast.handshakeTimeoutMs, 599, "below IDLE_TIMEOUT_MS");
  assert.equal(fast.maxConnections, 164, "420 − 256");
  assert.equal(fast.maxConnectionsPerIp, 164, "at most MAX_CONNECTIONS");
  assert.equal(fast.headersTimeoutMs, 5_000, "at most REQUEST_TIMEOUT_MS");
});

const refusals: Array<[string, Record<string, string>, RegExp]> = [
  [
    "a non-number",
    { ...SECRET, APPS_JSON: APPS, LIVENESS_WINDOW_MS: "soon" },
    /LIVENESS_WINDOW_MS=soon/,
  ],
  ["a negative port", { ...SECRET, APPS_JSON: APPS, PORT: "-1" }, /PORT=-1/],
  ["no app", { ...SECRET }, /No app is configured.*--dev/],
  ["invalid JSON", { ...SECRET, APPS_JSON: "[{" }, /APPS_JSON is not valid JSON/],
  [
    "an app without apiKey",
    { ...SECRET, APPS_JSON: '[{"appId":"x","region":"us"}]' },
    /apps configuration is invalid at \[0\.apiKey\]/,
  ],
  ["a missing secret", { APPS_JSON: APPS }, /SESSION_SECRET must be set/],
  [
    "a heartbeat outside the window",
    { ...SECRET, APPS_JSON: APPS, LIVENESS_WINDOW_MS: "1000", HEARTBEAT_INTERVAL_MS: "1000" },
    /HEARTBEAT_INTERVAL_MS \(1000\) must be below LIVENESS_WINDOW_MS/,
  ],
  [
    "an idle timeout shorter than a heartbeat",
    { ...SECRET, APPS_JSON: APPS, IDLE_TIMEOUT_MS: "10000" },
    /IDLE_TIMEOUT_MS \(10000\) must exceed/,
  ],
  ["an unknown transport", { ...SECRET, APPS_JSON: APPS, TRANSPORT: "bun" }, /TRANSPORT=bun/],
  ["an unknown log level", { ...SECRET, APPS_JSON: APPS, LOG_LEVEL: "loud" }, /LOG_LEVEL=loud/],
  [
    "a header limit below 1024 bytes",
    { ...SECRET, APPS_JSON: APPS, MAX_HEADER_BYTES: "512" },
    /MAX_HEADER_BYTES=512 is invalid: expected an integer ≥ 1024\./,
  ],
  [
    "an eviction delay below a second",
    { ...SECRET, APPS_JSON: APPS, USER_EVICT_AFTER_MS: "10" },
    /USER_EVICT_AFTER_MS=10/,
  ],
  [
    "a handshake timeout that is not below the idle timeout",
    { ...SECRET, APPS_JSON: APPS, HANDSHAKE_TIMEOUT_MS: "45000" },
    /HANDSHAKE_TIMEOUT_MS \(45000\) must be below IDLE_TIMEOUT_MS \(45000\)/,
  ],
  [
    "a per-address cap above the connection cap",
    { ...SECRET, APPS_JSON: APPS, MAX_CONNECTIONS: "100", MAX_CONNECTIONS_PER_IP: "101" },
    /MAX_CONNECTIONS_PER_IP \(101\) must not exceed MAX_CONNECTIONS \(100\)/,
  ],
  [
    "a request timeout shorter than the headers timeout",
    { ...SECRET, APPS_JSON: APPS, HEADERS_TIMEOUT_MS: "20000", REQUEST_TIMEOUT_MS: "10000" },
    /REQUEST_TIMEOUT_MS \(10000\) must be at least HEADERS_TIMEOUT_MS \(20000\)/,
  ],
];

for (const [name, env, message] of refusals) {
  Deno.test(`config: refuses ${name} with a message that says what to fix`, () => {
    assert.throws(() => loadConfig(env), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, message);
      return true;
    });
  });
}

const devRefusals: Array<[string, Record<string, string>, RegExp]> = [
  [
    "--dev with APPS_JSON and no SESSION_SECRET (the dev secret is public)",
    { APPS_JSON: APPS },
    /SESSION_SECRET is required .*dev secret is public/,
  ],
  [
    "--dev with APPS_FILE and no SESSION_SECRET (the dev secret is public)",
    { APPS_FILE: "/etc/apps.json" },
    /SESSION_SECRET is required .*dev secret is public/,
  ],
  [
    "--dev with the dev secret set by hand for another app",
    { APPS_JSON: APPS, SESSION_SECRET: DEV_SESSION_SECRET },
    /SESSION_SECRET is required/,
  ],
  [
    "a MAX_CONNECTIONS above the open-file limit",
    { MAX_CONNECTIONS: "5000", OPEN_FILE_LIMIT: "1024" },
    /MAX_CONNECTIONS \(5000\) exceeds OPEN_FILE_LIMIT \(1024/,
  ],
];

for (const [name, env, message] of devRefusals) {
  Deno.test(`config: refuses ${name}`, () => {
    const readFile = files({ "/etc/apps.json": APPS });
    assert.throws(() => loadConfig(env, { dev: true, readFile }), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, message);
      return true;
    });
  });
}

Deno.test("docs/configuration.md matches the schema (run `deno task config:docs`)", async () => {
  assert.equal(
    await Deno.readTextFile(CONFIG_DOCS_FILE),
    renderConfigDocs(),
    "docs/configuration.md drifted from EnvSchema: run `deno task config:docs` and commit it",
  );
});

Deno.test("the generated configuration page is already as `deno fmt` formats it", async () => {
  const fmt = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--ext=md", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = fmt.stdin.getWriter();
  await writer.write(new TextEncoder().encode(renderConfigDocs()));
  await writer.close();
  const { code, stdout } = await fmt.output();
  assert.equal(code, 0);
  assert.equal(new TextDecoder().decode(stdout), renderConfigDocs());
});

Deno.test("config: the gateway process stops at start-up on a bad value (exit 2, message)", async () => {
  const { code, stderr: text } = await runGatewayToExit({
    LIVENESS_WINDOW_MS: "thirty",
    KV_PATH: ":memory:",
  });
  assert.equal(code, 2);
  assert.match(text, /configuration error: LIVENESS_WINDOW_MS=thirty is invalid/);
  assert.ok(!text.includes("    at "), "no stack trace");
});

Deno.test("config: a port in use or an address not of this machine stops start-up with one line (exit 2)", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = holder.addr as Deno.NetAddr;
  const start = (env: Record<string, string>) => runGatewayToExit({ KV_PATH: ":memory:", ...env });
  try {
    for (const transport of ["node", "deno"]) {
      const inUse = await start({
        PORT: String(port),
        HOST: "127.0.0.1",
        TRANSPORT: transport,
      });
      assert.equal(inUse.code, 2, `${transport}: ${inUse.stderr}`);
      assert.equal(inUse.stdout, "");
      assert.equal(
        inUse.stderr,
        `configuration error: PORT ${port} is already in use on 127.0.0.1: stop what holds it, ` +
          "or choose another PORT.",
      );
      for (const hostname of ["no-such-host.invalid", "192.0.2.1"]) {
        const foreign = await start({ PORT: "0", HOST: hostname, TRANSPORT: transport });
        assert.equal(foreign.code, 2, `${transport} ${hostname}: ${foreign.stderr}`);
        assert.equal(
          foreign.stderr,
          `configuration error: HOST ${hostname} is not an address of this machine (or ` +
            "does not resolve): set HOST to one, for example 127.0.0.1 or 0.0.0.0.",
        );
      }
    }
  } finally {
    holder.close();
  }
});

Deno.test("config: the bind address is HOST (HOSTNAME is the machine's name), and --dev binds loopback", () => {
  // Docker and many shells export HOSTNAME as the machine's name: it never picks the address.
  assert.equal(
    loadConfig({ ...SECRET, APPS_JSON: APPS, HOSTNAME: "box-7f3a" }).hostname,
    "0.0.0.0",
  );
  assert.equal(loadConfig({ ...SECRET, APPS_JSON: APPS, HOST: "::" }).hostname, "::");
  // --dev serves public keys: loopback only, unless HOST says otherwise.
  assert.equal(loadConfig({ HOSTNAME: "box-7f3a" }, { dev: true }).hostname, "127.0.0.1");
  assert.equal(loadConfig({ HOST: "0.0.0.0" }, { dev: true }).hostname, "0.0.0.0");
  assert.ok(!("HOSTNAME" in ENV_VARS), "HOSTNAME is not a configuration variable");
});

Deno.test("config: deno task serve's --dev gateway answers on loopback only, as its banner says", async () => {
  const outside = Object.values(Deno.networkInterfaces())
    .find((i) => i.family === "IPv4" && !i.address.startsWith("127."))?.address;
  await using gateway = await GatewayProcess.start({ env: { HOSTNAME: "box-7f3a" }, host: null });
  assert.ok(
    gateway.output.some((line) => line.includes(`listening on http://127.0.0.1:${gateway.port}`)),
  );
  const health = await fetch(`${gateway.url}/healthz`);
  await health.body?.cancel();
  assert.equal(health.status, 200);
  if (outside === undefined) return; // a machine with loopback only: nothing else to refuse
  await assert.rejects(
    Deno.connect({ hostname: outside, port: gateway.port }),
    Deno.errors.ConnectionRefused,
    `the dev gateway must not be reachable on ${outside}`,
  );
});
