/**
 * `/asyncapi.json` and the WebSocket protocol's docs page at `/docs/asyncapi`: one HTML page
 * rendered from the document at start-up (gateway/asyncapi_page.ts), served by the gateway
 * itself, no script and nothing from another site.
 */
import type { Hono } from "hono";
import { buildAsyncApiDocument } from "../asyncapi.ts";
import { renderAsyncApiPage } from "../asyncapi_page.ts";
import { GatewayError } from "../errors.ts";
import type { GatewayEnv } from "../services.ts";

export const ASYNCAPI_DOCS_PATH = "/docs/asyncapi";

export function mountAsyncApiDocs(app: Hono<GatewayEnv>): void {
  const document = buildAsyncApiDocument();
  const page = renderAsyncApiPage(document);
  app.get("/asyncapi.json", (c) => c.json(document));
  app.all("/asyncapi.json", () => {
    throw new GatewayError("ERR_METHOD_NOT_ALLOWED");
  });
  app.get(ASYNCAPI_DOCS_PATH, (c) => c.html(page));
  app.get(`${ASYNCAPI_DOCS_PATH}/`, (c) => c.redirect(ASYNCAPI_DOCS_PATH));
}
