/** The examples (examples/*.ts) run against a real gateway and say what they should. */
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

Deno.test("example: the quick start connects, logs out and exits by itself", async () => {
  await using gateway = await startTestGateway();
  const started = Date.now();
  const lines = await runExample("examples/quickstart.ts", gateway.url);
  assert.ok(Date.now() - started < 20_000, "it exits (nothing keeps the process alive)");
  assert.equal(lines[0], "connecting");
  assert.match(lines[1], /^connected [0-9a-f-]{36}$/);
  assert.deepEqual(lines.slice(2), ["status connected", "disconnected logged_out 4006 never"]);
});

Deno.test("example: chat: each message once and in order, also those sent while disconnected", async () => {
  await using gateway = await startTestGateway();
  const lines = await runExample("examples/chat.ts", gateway.url);
  assert.equal(lines[0], "superhero1 is typing…", "typing reaches superhero2 before the message");
  const stopped = lines.indexOf("superhero1 stopped typing");
  assert.ok(
    stopped > 0 &&
      stopped < lines.indexOf('superhero2 got "are you there?" from superhero1 (seq 3)'),
  );
  assert.deepEqual(lines.filter((l) => l.startsWith("superhero2 got")), [
    'superhero2 got "hello" from superhero1 (seq 1)',
    'superhero2 got a location: {"lat":48.85,"lon":2.35} (seq 2)',
    'superhero2 got "are you there?" from superhero1 (seq 3)',
    'superhero2 got "call me" from superhero1 (seq 4)',
  ]);
  assert.ok(lines.includes('superhero1 sent "hello" (seq 1 in its own stream)'), lines.join("\n"));
});

Deno.test("examples say that they read GATEWAY_URL", async () => {
  for await (const entry of Deno.readDir(new URL("../examples/", import.meta.url))) {
    const source = await Deno.readTextFile(new URL(`../examples/${entry.name}`, import.meta.url));
    assert.match(source, /Deno\.env\.get\("GATEWAY_URL"\)/, entry.name);
    const header = source.slice(0, source.search(/^import /m));
    assert.match(header, /GATEWAY_URL/, `${entry.name} says so before its code`);
    // The port appears only as the documented default of GATEWAY_URL.
    const hardCoded = source.split("\n").filter((line) =>
      /:8000/.test(line) && !/GATEWAY_URL|default/.test(line)
    );
    assert.deepEqual(hardCoded, [], entry.name);
  }
});

Deno.test("docs/client.md shows examples/quickstart.ts as it is", async () => {
  const guide = await Deno.readTextFile(new URL("../docs/client.md", import.meta.url));
  const source = await Deno.readTextFile(new URL("../examples/quickstart.ts", import.meta.url));
  assert.ok(guide.includes("```ts\n" + source + "```\n"), "the quick start block drifted");
});
