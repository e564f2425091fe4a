/**
 * `/openapi.json` and the interactive docs at `/docs`. Swagger UI's assets are imported as
 * text from the npm package and served by the gateway itself, so the page works offline.
 * The WebSocket protocol's page (AsyncAPI) is mounted with them: `./asyncapi_docs.ts`.
 */
import type { Hono } from "hono";
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "text" };
import swaggerBundle from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "text" };
import { buildOpenApiDocument } from "../openapi.ts";
import type { GatewayEnv } from "../services.ts";
import { ASYNCAPI_DOCS_PATH, mountAsyncApiDocs } from "./asyncapi_docs.ts";

const page = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Liveness gateway — API docs</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <nav style="font: 14px sans-serif; padding: 8px 16px; border-bottom: 1px solid #ddd">
    <strong>HTTP API (OpenAPI)</strong> ·
    <a href="${ASYNCAPI_DOCS_PATH}">WebSocket protocol (AsyncAPI)</a>
  </nav>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>`;

const init = `window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  tryItOutEnabled: true,
});`;

export function mountDocs(app: Hono<GatewayEnv>): void {
  const document = buildOpenApiDocument();
  const cache = { "cache-control": "public, max-age=3600" };
  app.get("/openapi.json", (c) => c.json(document));
  app.get("/docs", (c) => c.html(page));
  app.get("/docs/", (c) => c.redirect("/docs"));
  app.get(
    "/docs/swagger-ui.css",
    (c) => c.body(swaggerCss, 200, { ...cache, "content-type": "text/css; charset=utf-8" }),
  );
  app.get(
    "/docs/swagger-ui-bundle.js",
    (c) =>
      c.body(swaggerBundle, 200, { ...cache, "content-type": "text/javascript; charset=utf-8" }),
  );
  app.get(
    "/docs/init.js",
    (c) => c.body(init, 200, { "content-type": "text/javascript; charset=utf-8" }),
  );
  mountAsyncApiDocs(app);
}
