/** The README's two examples (examples/*.ts) run against a real gateway and say what they should. */
import assert from "node:assert/strict";
import { startTestGateway } from "./support/harness.ts";

async function runExample(file: string, gatewayUrl: string): Promise<string[]> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", file],
    env: { GATEWAY_URL: gatewayUrl, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(stdout);
  assert.equal(code, 0, new TextDecoder().decode(stderr) + out);
  return out.trim().split("\n");
}

Deno.test("example: auto mode connects, is closed in background, reconnects in foreground", async () => {
  await using gateway = await startTestGateway();
  const lines = await runExample("examples/auto_mode.ts", gateway.url);
  assert.ok(lines.includes("logged in as superhero1"), lines.join("\n"));
  const order = [
    "disconnected: background (4001)",
    "status: connected",
    "message #1 from the app's server: hello",
    "disconnected: logged_out (4006)",
  ];
  assert.deepEqual(lines.filter((l) => order.includes(l)), order);
  assert.equal(lines.filter((l) => l.startsWith("connected (session")).length, 2);
});

Deno.test("example: manual mode connect, ping in background, disconnect", async () => {
  await using gateway = await startTestGateway();
  const lines = await runExample("examples/manual_mode.ts", gateway.url);
  const window = gateway.config.livenessWindowMs;
  for (
    const expected of [
      "after login: disconnected",
      "connect again: ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE",
      `ping: deadline is now ping + ${window} ms`,
      "disconnected: client_disconnect (1000)",
      "after disconnect: disconnected",
      "ping when disconnected: NO_WEBSOCKET_CONNECTION",
    ]
  ) assert.ok(lines.includes(expected), `missing "${expected}" in\n${lines.join("\n")}`);
});
