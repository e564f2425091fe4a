/** The OpenAPI document and the docs page: derived from the contract, committed, offline. */
import assert from "node:assert/strict";
import { contractRoutes, openApiPath } from "../gateway/openapi.ts";
import { OPENAPI_FILE, renderOpenApi } from "../gateway/openapi_write.ts";
import { startTestGateway } from "./support/harness.ts";

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
  const sources = [...page.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
  assert.ok(sources.length >= 3);
  for (const source of sources) {
    assert.ok(source.startsWith("/"), `${source} is served locally`);
    const res = await fetch(`${gateway.url}${source}`);
    assert.equal(res.status, 200, source);
    assert.ok((await res.text()).length > 10);
  }
});
