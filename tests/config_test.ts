/** Configuration: defaults, environment, apps, and start-up refusals that say what to fix. */
import assert from "node:assert/strict";
import { ConfigError, DEFAULTS, DEV_APP, loadConfig } from "../gateway/mod.ts";

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

Deno.test("config: apps from a file", () => {
  const config = loadConfig({ ...SECRET, APPS_FILE: "/etc/apps.json" }, {
    readFile: (path) => {
      assert.equal(path, "/etc/apps.json");
      return APPS;
    },
  });
  assert.equal(config.apps[0].region, "eu");
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

Deno.test("config: the gateway process stops at start-up on a bad value (exit 2, message)", async () => {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-write",
      "gateway/main.ts",
      "--dev",
    ],
    env: { LIVENESS_WINDOW_MS: "thirty", KV_PATH: ":memory:" },
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(code, 2);
  const text = new TextDecoder().decode(stderr);
  assert.match(text, /configuration error: LIVENESS_WINDOW_MS=thirty is invalid/);
  assert.ok(!text.includes("    at "), "no stack trace");
});
