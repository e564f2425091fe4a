/**
 * `deno task serve`: the gateway as a process. Configuration comes from the environment
 * (gateway/config.ts, docs/configuration.md); `--dev` adds the labelled development app.
 */
import { ConfigError, DEV_APP, ENV_VARS, type GatewayConfig } from "./config.ts";
import { startGateway } from "./server.ts";

const dev = Deno.args.includes("--dev");
const env = Object.fromEntries(
  Object.keys(ENV_VARS).map((name) => [name, Deno.env.get(name)]),
);

try {
  const kvPath = env.KV_PATH;
  if (env.STORE === "redis") {
    // Nothing on local disk.
  } else if (kvPath !== undefined && kvPath !== ":memory:" && kvPath !== "platform") {
    await ensureDir(kvPath);
  } else if (kvPath === undefined) await ensureDir("./data/gateway.kv");

  const gateway = await startGateway({ env, config: { dev } });
  const { url, config } = gateway;
  console.log(`liveness gateway listening on ${url}`);
  console.log(`  docs:      ${url}/docs   (OpenAPI: ${url}/openapi.json)`);
  console.log(`  protocol:  ${url}/docs/asyncapi   (AsyncAPI: ${url}/asyncapi.json)`);
  console.log(`  websocket: ${url.replace(/^http/, "ws")}/v1/ws`);
  console.log(
    `  liveness window ${config.livenessWindowMs} ms, heartbeat ${config.heartbeatIntervalMs} ms, ` +
      `idle timeout ${config.idleTimeoutMs} ms, store ${storeOf(config, gateway.nodeId)}`,
  );
  console.log(
    `  transport ${config.transport}, at most ${config.maxConnections} connections ` +
      `(${config.maxConnectionsPerIp} per address), frames ≤ ${config.maxFrameBytes} bytes`,
  );
  if (gateway.revived > 0) console.log(`  revived ${gateway.revived} user(s) from the store`);
  if (env.MAX_CONNECTIONS === undefined && config.openFileLimit === undefined) {
    gateway.services.log.warn("config.open_file_limit_unknown", {
      maxConnections: config.maxConnections,
      hint: "OPEN_FILE_LIMIT is not set, so MAX_CONNECTIONS assumes an open-file limit of " +
        "1024; set OPEN_FILE_LIMIT=$(ulimit -Hn) or MAX_CONNECTIONS (deno task serve sets it).",
    });
  }
  if (config.dev) {
    console.log("  DEVELOPMENT APP (not for production; these keys are public):");
    console.log(`    appId ${DEV_APP.appId}, region ${DEV_APP.region}`);
    console.log(`    apiKey  ${DEV_APP.apiKey}`);
    console.log(`    authKey ${DEV_APP.authKey}`);
    console.log(`    users   ${DEV_APP.seedUsers!.map((u) => u.uid).join(", ")}`);
  }

  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    gateway.services.log.info("gateway.stopping", {
      note: "new requests get 503, sockets get 1012, state is written",
    });
    await gateway.stop();
    gateway.services.log.info("gateway.stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`configuration error: ${error.message}`);
    Deno.exit(2);
  }
  throw error;
}

/** The store line of the banner (a Redis URL without its credentials). */
function storeOf(config: GatewayConfig, nodeId: string | undefined): string {
  if (config.store !== "redis") return config.kvPath ?? "platform KV";
  let where = config.redisUrl;
  try {
    const url = new URL(config.redisUrl);
    url.username = url.password = "";
    where = url.href;
  } catch {
    // Shown as configured.
  }
  return `Redis ${where} (prefix ${config.redisPrefix}), cluster node ${nodeId}`;
}

async function ensureDir(filePath: string): Promise<void> {
  const dir = filePath.replace(/[/\\][^/\\]*$/, "");
  if (dir !== "" && dir !== filePath) await Deno.mkdir(dir, { recursive: true });
}
