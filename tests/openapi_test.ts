/** The OpenAPI document and the docs page: derived from the contract, committed, offline. */
import assert from "node:assert/strict";
import type { AppRoute } from "@ts-rest/core";
import { Ajv2020 } from "ajv/dist/2020.js";
import denoJson from "../deno.json" with { type: "json" };
import {
  ClientFrameSchema,
  contract,
  errorCatalog,
  type ErrorCode,
  ErrorPayloadSchema,
  SessionHeadersSchema,
} from "../contract/mod.ts";
import { contractRoutes, openApiPath, SECURITY_SCHEMES } from "../gateway/openapi.ts";
import { OPENAPI_FILE, renderOpenApi } from "../gateway/openapi_write.ts";
import { API_KEY, login, startTestGateway } from "./support/harness.ts";

Deno.test("openapi.json in the repo matches the live document (run `deno task openapi`)", async () => {
  await using gateway = await startTestGateway();
  const live = await (await fetch(`${gateway.url}/openapi.json`)).json();
  const committed = JSON.parse(await Deno.readTextFile(OPENAPI_FILE));
  assert.deepEqual(
    committed,
    live,
    "openapi.json drifted from the contract: run `deno task openapi` and commit it",
  );
  assert.equal(renderOpenApi(), await Deno.readTextFile(OPENAPI_FILE));
});

Deno.test("every contract route is in the document with its error payload responses", async () => {
  await using gateway = await startTestGateway();
  const doc = await (await fetch(`${gateway.url}/openapi.json`)).json();
  assert.equal(doc.openapi, "3.1.0");
  for (const { name, route } of contractRoutes()) {
    const operation = doc.paths[openApiPath(route.path)]?.[route.method.toLowerCase()];
    assert.ok(operation, `${name} is documented`);
    assert.equal(operation.operationId, name);
    for (const status of Object.keys(route.responses)) {
      assert.ok(operation.responses[status], `${name} documents ${status}`);
    }
  }
  assert.ok(doc.components.schemas.ErrorPayload);
  assert.ok(doc.components.schemas.WebSocketClientFrame);
  assert.ok(doc.components.schemas.WebSocketServerFrame);
  assert.ok(doc.paths["/v1/ws"].get.description.includes("4003"));
});

Deno.test("the docs page and its assets are served by the gateway itself (no CDN)", async () => {
  await using gateway = await startTestGateway();
  const page = await (await fetch(`${gateway.url}/docs`)).text();
  const sources = [...page.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1])
    .filter((source) => !source.startsWith("data:")); // the empty icon: no /favicon.ico 404
  assert.ok(sources.length >= 3);
  for (const source of sources) {
    assert.ok(source.startsWith("/"), `${source} is served locally`);
    const res = await fetch(`${gateway.url}${source}`);
    assert.equal(res.status, 200, source);
    assert.ok((await res.text()).length > 10);
  }
});

// ---- what the document promises, per route, against what the gateway answers ----

type Operation = {
  security?: Array<Record<string, string[]>>;
  parameters?: Array<{ name: string; in: string }>;
  responses: Record<
    string,
    { content?: { "application/json": { schema: unknown; examples?: Record<string, Example> } } }
  >;
};
type Example = { summary: string; value: unknown };

async function liveDocument(): Promise<Record<string, Record<string, Record<string, Operation>>>> {
  await using gateway = await startTestGateway();
  return await (await fetch(`${gateway.url}/openapi.json`)).json();
}

function operationOf(doc: Awaited<ReturnType<typeof liveDocument>>, route: AppRoute): Operation {
  return doc.paths[openApiPath(route.path)][route.method.toLowerCase()];
}

/** Error code → status, as the operation's examples document them. */
function documentedCodes(operation: Operation): Map<string, number> {
  const codes = new Map<string, number>();
  for (const [status, response] of Object.entries(operation.responses)) {
    for (const code of Object.keys(response.content?.["application/json"].examples ?? {})) {
      codes.set(code, Number(status));
    }
  }
  return codes;
}

Deno.test("openapi: Bearer and apikey routes declare security schemes, not header parameters", async () => {
  const doc = await liveDocument();
  const components = doc.components as unknown as { securitySchemes: Record<string, unknown> };
  assert.deepEqual(components.securitySchemes.sessionCredential, {
    ...SECURITY_SCHEMES.sessionCredential,
  });
  assert.deepEqual(components.securitySchemes.apiKey, { ...SECURITY_SCHEMES.apiKey });
  for (const { name, route } of contractRoutes()) {
    const operation = operationOf(doc, route);
    const expected = name.startsWith("session.")
      ? [{ sessionCredential: [] }]
      : name.startsWith("server.")
      ? [{ apiKey: [] }]
      : [];
    assert.deepEqual(operation.security ?? [], expected, name);
    const headers = (operation.parameters ?? []).filter((p) => p.in === "header");
    assert.deepEqual(headers, [], `${name}: credentials are not header parameters`);
  }
});

Deno.test("openapi: each route lists the codes it can answer, one example each, none it cannot", async () => {
  const doc = await liveDocument();
  for (const { name, route } of contractRoutes()) {
    const operation = operationOf(doc, route);
    const codes = documentedCodes(operation);
    for (const [code, status] of codes) {
      assert.equal(status, errorCatalog[code as ErrorCode]?.status, `${name}: ${code} → ${status}`);
    }
    for (const [status, response] of Object.entries(operation.responses)) {
      if (Number(status) < 400) continue;
      const { schema, examples } = response.content!["application/json"];
      const enumerated = (schema as { properties: { errorCode: { enum: string[] } } }).properties
        .errorCode.enum;
      assert.deepEqual(
        Object.keys(examples ?? {}),
        enumerated,
        `${name} ${status}: one example per code`,
      );
      for (const [code, example] of Object.entries(examples!)) {
        const payload = ErrorPayloadSchema.parse(example.value);
        assert.equal(payload.errorCode, code);
      }
    }
    // Raised by the client, never answered by the gateway.
    assert.ok(!codes.has("NOT_INITIALIZED") && !codes.has("LOGIN_IN_PROGRESS"), name);
    if (name.startsWith("session.")) assert.ok(!codes.has("ERR_INVALID_API_KEY"), name);
    if (route.method === "GET") assert.ok(!codes.has("ERR_PAYLOAD_TOO_LARGE"), name);
    assert.equal(codes.get("ERR_INTERNAL"), 500, name);
    assert.deepEqual(
      [...codes].filter(([, status]) => status === 500).map(([code]) => code),
      ["ERR_INTERNAL"],
      `${name}: the example of a 500 is ERR_INTERNAL`,
    );
  }
  assert.ok(!documentedCodes(operationOf(doc, contract.init)).has("ERR_INVALID_API_KEY"));
});

Deno.test("openapi: the gateway answers each route only with codes the document lists for it", async () => {
  await using gateway = await startTestGateway({ httpRatePerSec: 100_000 });
  const doc = await (await fetch(`${gateway.url}/openapi.json`)).json();
  const { credential } = await login(gateway, "manual");
  const auths: Record<string, string>[] = [
    {},
    { authorization: "Bearer nope" },
    { authorization: "Basic abc" },
    { authorization: `Bearer ${credential}` },
    { apikey: "wrong" },
    { apikey: API_KEY.apikey },
  ];
  const paramSets = [
    { appId: "demo", uid: "superhero2", authToken: "at_nope" },
    { appId: "nope", uid: "superhero2", authToken: "at_nope" },
    { appId: "demo", uid: "ghost", authToken: "at_nope" },
    { appId: "demo", uid: "bad uid!", authToken: "at_nope" },
  ];
  const bodies = [undefined, "{", "{}", "[]", '{"region":"us"}', '{"uid":"fresh1"}'];
  const unlisted: string[] = [];
  for (const { name, route } of contractRoutes()) {
    const listed = documentedCodes(operationOf(doc, route));
    for (const params of paramSets) {
      const path = route.path.replace(
        /:([A-Za-z]+)/g,
        (_, key: keyof typeof params) => encodeURIComponent(params[key]),
      );
      for (const headers of auths) {
        for (const body of route.method === "GET" ? [undefined] : bodies) {
          const res = await fetch(`${gateway.url}${path}`, { method: route.method, headers, body });
          const answer = await res.json();
          if (res.status < 400) continue;
          const payload = ErrorPayloadSchema.parse(answer);
          if (listed.get(payload.errorCode) !== res.status) {
            unlisted.push(
              `${name} ${path} ${
                JSON.stringify(headers)
              } ${body}: ${res.status} ${payload.errorCode}`,
            );
          }
        }
      }
    }
  }
  assert.deepEqual(unlisted, []);
});

Deno.test("openapi: GET /v1/ws declares its 400 and its credential query parameter", async () => {
  const doc = await liveDocument();
  const ws = doc.paths["/v1/ws"].get;
  assert.ok(ws.parameters?.some((p) => p.in === "query" && p.name === "credential"));
  assert.deepEqual([...documentedCodes(ws)].find(([code]) => code === "ERR_BAD_REQUEST"), [
    "ERR_BAD_REQUEST",
    400,
  ]);
  await using gateway = await startTestGateway();
  const res = await fetch(`${gateway.url}/v1/ws?credential=x`);
  assert.equal(res.status, 400);
  assert.equal((await res.json()).errorCode, "ERR_BAD_REQUEST");
});

Deno.test("openapi: info.version is deno.json's, and 405 / 404 are documented", async () => {
  const doc = await liveDocument();
  const info = doc.info as unknown as { version: string; description: string };
  assert.equal(info.version, denoJson.version);
  assert.match(info.description, /405.*ERR_METHOD_NOT_ALLOWED/);
  assert.match(info.description, /404.*ERR_NOT_FOUND/);
  await using gateway = await startTestGateway();
  const res = await fetch(`${gateway.url}/v1/session`, { method: "DELETE" });
  assert.equal(res.status, 405);
  assert.equal((await res.json()).errorCode, "ERR_METHOD_NOT_ALLOWED");
});

Deno.test("openapi: client frames and bodies are documented as input (defaults may be left out)", async () => {
  const doc = await liveDocument();
  const schemas = (doc.components as unknown as { schemas: Record<string, object> }).schemas;
  const ajv = new Ajv2020({ strict: false });
  const validFrame = ajv.compile(schemas.WebSocketClientFrame);
  const written = [
    {
      type: "connect",
      login: { appId: "demo", uid: "superhero1", authKey: "dev_auth_key__not_secret" },
    },
    { type: "connect" },
    { type: "ping" },
    { type: "app_state", state: "background" },
    { type: "disconnect", id: 7 },
  ];
  for (const frame of written) {
    ClientFrameSchema.parse(frame); // the gateway accepts it…
    assert.ok(
      validFrame(frame),
      `…and so does the published schema: ${JSON.stringify(frame)} ${
        JSON.stringify(validFrame.errors)
      }`,
    );
  }
  assert.ok(
    !validFrame({ type: "ping", source: "nobody" }),
    "it still refuses what the gateway refuses",
  );
  const initBody = schemas.InitBody as { required: string[] };
  assert.deepEqual(initBody.required, ["region"]);
});

Deno.test("validation errors name the field: a login body {} says which fields are missing", async () => {
  await using gateway = await startTestGateway();
  const res = await fetch(`${gateway.url}/v1/apps/demo/login`, { method: "POST", body: "{}" });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.errorCode, "ERR_BAD_REQUEST");
  const paths = body.details.issues.map((i: { path: string }) => i.path);
  assert.deepEqual(paths, ["authToken", "uid", "authKey"]);
  for (const issue of body.details.issues) assert.match(issue.message, /alternative [12] of 2/);
  const extra = await fetch(`${gateway.url}/v1/apps/demo/init`, {
    method: "POST",
    body: '{"region":"us","colour":"red"}',
  });
  assert.deepEqual((await extra.json()).details.issues, [{
    path: "colour",
    message: "Unknown field",
  }]);
});

Deno.test("HTTP auth schemes are case-insensitive: `authorization: bearer …` is accepted", async () => {
  // The published pattern (a client or Swagger UI validates against it) and the gateway agree.
  for (const scheme of ["bearer", "BEARER", "Bearer"]) {
    assert.ok(SessionHeadersSchema.safeParse({ authorization: `${scheme} abc` }).success, scheme);
  }
  await using gateway = await startTestGateway();
  const { credential } = await login(gateway, "manual");
  for (const scheme of ["bearer", "BEARER", "Bearer"]) {
    const res = await fetch(`${gateway.url}/v1/session`, {
      headers: { authorization: `${scheme} ${credential}` },
    });
    assert.equal(res.status, 200, scheme);
    await res.body?.cancel();
  }
});

Deno.test("/docs in Chromium: Authorize with the session credential, execute GET /v1/session → 200", async () => {
  await using gateway = await startTestGateway();
  const { credential, sessionId } = await login(gateway, "manual");
  const driver = new URL("./support/docs_page_driver.ts", import.meta.url).pathname;
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", driver, gateway.url, credential, ""],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  assert.equal(code, 0, text.decode(stderr));
  const seen = JSON.parse(text.decode(stdout).trim().split("\n").at(-1)!);
  assert.equal(seen.status, "200", JSON.stringify(seen));
  assert.equal(JSON.parse(seen.body).sessionId, sessionId);
  assert.match(seen.curl, /Authorization: Bearer /i, "the page sent the credential it was given");
  assert.deepEqual(seen.errors, []);
});
