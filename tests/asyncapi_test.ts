/**
 * The AsyncAPI document of the WebSocket protocol: valid AsyncAPI 3.0 (the official parser),
 * complete (every frame of the contract is a message), its examples and the README's frames
 * valid against the published schemas, committed, and rendered offline at `/docs/asyncapi`.
 */
import { Ajv } from "ajv";
import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import {
  ClientFrameSchema,
  closeCodeTable,
  closeReasonDescriptions,
  closeReasons,
  ServerFrameSchema,
  WEBSOCKET_PATH,
  WS_CREDENTIAL_PROTOCOL_PREFIX,
  WS_PROTOCOL,
} from "../contract/mod.ts";
import { buildAsyncApiDocument, frameSchemaName } from "../gateway/asyncapi.ts";
import { ASYNCAPI_FILE, renderAsyncApi } from "../gateway/asyncapi_write.ts";
import { startTestGateway } from "./support/harness.ts";

// deno-lint-ignore no-explicit-any -- a JSON document walked by path in assertions
type Json = any;

const CHROMIUM = "/usr/bin/chromium";
const exists = (path: string) => {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
};

/** The `type` literal of each frame of a union, in the union's order. */
function frameTypes(union: typeof ClientFrameSchema | typeof ServerFrameSchema): string[] {
  return union.options.map((option) => option.shape.type.value);
}

/** Validates a value against a schema of the document's `components.schemas`. */
function schemaValidator(doc: Json) {
  // The document's own `$ref`s (`#/components/schemas/…`) resolve against this root.
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addSchema({ $id: "asyncapi", components: doc.components }, "asyncapi");
  return (schemaName: string, value: unknown): string[] => {
    const validate = ajv.getSchema(`asyncapi#/components/schemas/${schemaName}`);
    assert.ok(validate, `schema ${schemaName} exists`);
    return validate(value)
      ? []
      : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
  };
}

Deno.test("asyncapi.json in the repo matches the live document (run `deno task asyncapi`)", async () => {
  await using gateway = await startTestGateway();
  const res = await fetch(`${gateway.url}/asyncapi.json`);
  assert.equal(res.status, 200);
  const live = await res.json();
  const committed = JSON.parse(await Deno.readTextFile(ASYNCAPI_FILE));
  assert.deepEqual(
    committed,
    live,
    "asyncapi.json drifted from the contract: run `deno task asyncapi` and commit it",
  );
  assert.equal(renderAsyncApi(), await Deno.readTextFile(ASYNCAPI_FILE));
  assert.equal(live.info.version, denoJson.version);
});

Deno.test("the official AsyncAPI parser accepts the document without errors or warnings", async () => {
  // @asyncapi/parser runs as its own Deno project (tests/asyncapi_parser/): its ~160 packages
  // stay out of the root lockfile, which every first `deno task serve` downloads.
  const run = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--config",
      "tests/asyncapi_parser/deno.json",
      "--allow-read",
      "--allow-env",
      "tests/asyncapi_parser/validate.ts",
      ASYNCAPI_FILE.pathname,
    ],
    cwd: new URL("..", import.meta.url),
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(run.stdout);
  assert.equal(run.code, 0, new TextDecoder().decode(run.stderr) + stdout);
  type OperationSeen = { action: string; messages: string[]; reply: string[] };
  const seen: {
    parsed: boolean;
    diagnostics: { severity: number; code: string; message: string; path: string[] }[];
    operations: Record<string, OperationSeen>;
  } = JSON.parse(stdout.trim().split("\n").at(-1)!);
  // The published text, as a consumer's tooling reads it. The document targets 3.0.0 on
  // purpose; the parser only suggests 3.1.0 (an information).
  const findings = seen.diagnostics
    .filter((d) => d.code !== "asyncapi-latest-version")
    .map((d) => `${d.severity} ${d.code}: ${d.message} at ${d.path.join(".")}`);
  assert.deepEqual(findings, []);
  assert.ok(seen.parsed, "parsed");
  // And it reads the request/reply pairs as meant (refs resolved by the parser, not by us).
  const replies = seen.operations;
  assert.deepEqual(replies.receiveConnect, {
    action: "receive",
    messages: ["connect"],
    reply: ["connected", "error"],
  });
  assert.deepEqual(replies.receivePing.reply, ["pong", "error"]);
  assert.deepEqual(replies.receiveAppState.reply, ["state", "error"]);
  assert.deepEqual(replies.receiveDisconnect.reply, ["closing", "error"]);
  // Each client frame is received by one operation; each server frame is sent or replied.
  const received = Object.values(replies).filter((r) => r.action === "receive")
    .flatMap((r) => r.messages);
  assert.deepEqual(received.sort(), frameTypes(ClientFrameSchema).sort());
  const fromGateway = new Set(
    Object.values(replies).flatMap((r) => r.action === "send" ? r.messages : r.reply),
  );
  assert.deepEqual([...fromGateway].sort(), frameTypes(ServerFrameSchema).sort());
});

Deno.test("every frame of the contract is a message whose examples parse and validate", () => {
  const doc: Json = buildAsyncApiDocument();
  const validate = schemaValidator(doc);
  const sides = [
    { union: ClientFrameSchema, parseAs: "input" },
    { union: ServerFrameSchema, parseAs: "output" },
  ] as const;
  let frames = 0;
  for (const { union, parseAs } of sides) {
    for (const option of union.options) {
      frames++;
      const type = option.shape.type.value;
      const message = doc.components.messages[type];
      assert.ok(message, `frame '${type}' has a message`);
      assert.ok(doc.channels.socket.messages[type], `the channel carries '${type}'`);
      assert.ok(message.description.length > 0 && message.summary.length > 0);
      const schemaName = frameSchemaName(type);
      assert.equal(message.payload.$ref, `#/components/schemas/${schemaName}`);
      assert.equal(doc.components.schemas[schemaName].properties.type.const, type);
      assert.ok(message.examples.length >= 1, `'${type}' has an example`);
      for (const example of message.examples) {
        const parsed = option.safeParse(example.payload);
        assert.ok(parsed.success, `${type}/${example.name}: ${parsed.error?.message}`);
        // A server frame's example is exactly what the gateway would send.
        if (parseAs === "output") assert.deepEqual(parsed.data, example.payload);
        assert.deepEqual(validate(schemaName, example.payload), [], `${type}/${example.name}`);
      }
    }
  }
  assert.equal(Object.keys(doc.components.messages).length, frames, "no message without a frame");
});

Deno.test("client frames are published as zod input: defaults may be left out", () => {
  const validate = schemaValidator(buildAsyncApiDocument());
  // The README's logins inside the handshake, verbatim.
  const readme = [
    { type: "connect", login: { appId: "demo", uid: "superhero1", authKey: "…", mode: "auto" } },
    { type: "connect", login: { appId: "demo", authToken: "at_…" } },
  ];
  for (const frame of readme) assert.deepEqual(validate("ConnectFrame", frame), []);
  assert.deepEqual(validate("ConnectFrame", { type: "connect" }), []);
  assert.deepEqual(validate("PingFrame", { type: "ping" }), []);
  assert.deepEqual(validate("AppStateFrame", { type: "app_state", state: "background" }), []);
  // The published schemas are strict, like the contract: wrong frames do not pass.
  assert.notDeepEqual(validate("ConnectFrame", { type: "connect", extra: 1 }), []);
  assert.notDeepEqual(validate("ConnectFrame", { type: "connect", login: { appId: "demo" } }), []);
  assert.notDeepEqual(validate("AppStateFrame", { type: "app_state" }), []);
  // Server frames are output: what the gateway always sends is required.
  assert.notDeepEqual(validate("PongFrame", { type: "pong" }), []);
});

Deno.test("the close codes, the handshake's options and the server come from the contract", () => {
  const doc: Json = buildAsyncApiDocument();
  const channel = doc.channels.socket;
  assert.equal(channel.address, WEBSOCKET_PATH);
  assert.deepEqual(
    [...channel["x-close-codes"]].sort((a: Json, b: Json) => a.reason.localeCompare(b.reason)),
    [...closeReasons].sort().map((reason) => ({
      code: closeCodeTable[reason],
      reason,
      description: closeReasonDescriptions[reason],
    })),
  );
  for (const reason of closeReasons) {
    const row = `| ${closeCodeTable[reason]} | \`${reason}\` |`;
    assert.ok(doc.components.messages.closing.description.includes(row), row);
    assert.ok(doc.info.description.includes(row), row);
  }

  const ws = channel.bindings.ws;
  assert.equal(ws.method, "GET");
  assert.equal(ws.query.properties.credential.type, "string");
  assert.deepEqual(ws.headers.properties["Sec-WebSocket-Protocol"].examples, [
    `${WS_PROTOCOL}, ${WS_CREDENTIAL_PROTOCOL_PREFIX}<credential>`,
  ]);
  assert.deepEqual(doc.components.securitySchemes.credentialQuery, {
    ...doc.components.securitySchemes.credentialQuery,
    type: "httpApiKey",
    in: "query",
    name: "credential",
  });
  assert.equal(doc.components.securitySchemes.credentialSubprotocol.in, "header");
  assert.match(doc.info.description, /No credential: the `connect` frame carries `login`/);

  assert.equal(doc.asyncapi, "3.0.0");
  assert.equal(doc.servers.gateway.protocol, "ws");
  assert.equal(doc.servers.gateway.host, "{host}");
  assert.equal(doc.servers.gateway.variables.host.default, "localhost:8000");
});

Deno.test("/asyncapi.json and /docs/asyncapi are served by the gateway itself (no CDN)", async () => {
  await using gateway = await startTestGateway();
  const res = await fetch(`${gateway.url}/docs/asyncapi`);
  assert.equal(res.status, 200);
  const page = await res.text();
  const sources = [...page.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1])
    .filter((source) => !source.startsWith("data:") && !source.startsWith("#"));
  assert.ok(sources.includes("/docs"), "links back to the OpenAPI page");
  assert.ok(sources.includes("/asyncapi.json"));
  assert.ok(!page.includes("<script"), "a static page: nothing to run, nothing to fetch");
  // Rendered on the server from the document: every message, its fields typed.
  for (const type of [...frameTypes(ClientFrameSchema), ...frameTypes(ServerFrameSchema)]) {
    assert.ok(page.includes(`id="message-${type}"`), `message ${type} is on the page`);
  }
  assert.ok(page.includes('href="#schema-AppState"'), "a referenced type links to its schema");
  assert.ok(!/<td>any\b/.test(page), "every field has a type");
  for (const source of sources) {
    assert.ok(source.startsWith("/"), `${source} is served locally`);
    const asset = await fetch(`${gateway.url}${source}`);
    assert.equal(asset.status, 200, source);
    assert.ok((await asset.text()).length > 10);
  }

  const docs = await (await fetch(`${gateway.url}/docs`)).text();
  assert.ok(docs.includes('href="/docs/asyncapi"'), "the OpenAPI page links here");
  const post = await fetch(`${gateway.url}/asyncapi.json`, { method: "POST" });
  assert.equal(post.status, 405);
  assert.equal((await post.json()).errorCode, "ERR_METHOD_NOT_ALLOWED");
});

Deno.test({
  name: "/docs/asyncapi renders the operations and messages in headless Chromium",
  ignore: !exists(CHROMIUM) && !Deno.env.get("CI"),
  async fn() {
    await using gateway = await startTestGateway();
    const screenshot = await Deno.makeTempFile({ prefix: "asyncapi_docs_", suffix: ".png" });
    const driver = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tests/support/asyncapi_page_driver.ts", gateway.url, screenshot],
      cwd: new URL("..", import.meta.url),
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(driver.stderr);
    assert.equal(driver.code, 0, stderr);
    const seen = JSON.parse(new TextDecoder().decode(driver.stdout).trim().split("\n").at(-1)!);
    assert.deepEqual(seen.errors, [], "no console errors");
    assert.deepEqual(seen.offSite, [], "nothing loaded from another site");
    for (const id of ["receiveConnect", "receivePing", "receiveAppState", "receiveDisconnect"]) {
      assert.ok(seen.operationIds.includes(`operation-reply-${id}`), id);
    }
    for (const id of ["sendMessage", "sendClosing", "sendError"]) {
      assert.ok(seen.operationIds.includes(`operation-send-${id}`), id);
    }
    for (const type of [...frameTypes(ClientFrameSchema), ...frameTypes(ServerFrameSchema)]) {
      assert.ok(seen.messageIds.includes(`message-${type}`), `message ${type} is shown`);
    }
    assert.match(seen.text, /Liveness gateway — WebSocket protocol/);
    assert.match(seen.text, /FROM\sCLIENT\s⇄/);
    assert.match(seen.text, /liveness_timeout/);
    assert.ok(seen.docsLinks.includes("/docs/asyncapi"), "/docs links to the AsyncAPI page");
    assert.ok((await Deno.stat(screenshot)).size > 10_000, "a screenshot was taken");
    await Deno.remove(screenshot);
  },
});
