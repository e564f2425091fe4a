/** Browsers on another origin can call the HTTP API (credentials are headers, not cookies). */
import assert from "node:assert/strict";
import { startTestGateway } from "./support/harness.ts";

Deno.test("CORS: preflight and replies allow any origin by default", async () => {
  await using gateway = await startTestGateway();
  const preflight = await fetch(`${gateway.url}/v1/session/ping`, {
    method: "OPTIONS",
    headers: {
      origin: "https://app.example",
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization",
    },
  });
  await preflight.body?.cancel();
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
  assert.match(preflight.headers.get("access-control-allow-headers") ?? "", /authorization/);
  const reply = await fetch(`${gateway.url}/v1/apps/demo/init`, {
    method: "POST",
    headers: { origin: "https://app.example" },
    body: JSON.stringify({ region: "us" }),
  });
  await reply.body?.cancel();
  assert.equal(reply.headers.get("access-control-allow-origin"), "*");
});

Deno.test("CORS: CORS_ORIGINS narrows the allowed origins", async () => {
  await using gateway = await startTestGateway({ corsOrigins: ["https://ok.example"] });
  const allowed = await fetch(`${gateway.url}/openapi.json`, {
    headers: { origin: "https://ok.example" },
  });
  await allowed.body?.cancel();
  assert.equal(allowed.headers.get("access-control-allow-origin"), "https://ok.example");
  const other = await fetch(`${gateway.url}/openapi.json`, {
    headers: { origin: "https://evil.example" },
  });
  await other.body?.cancel();
  assert.equal(other.headers.get("access-control-allow-origin"), null);
});
