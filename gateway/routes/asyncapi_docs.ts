/**
 * `/asyncapi.json` and the WebSocket protocol's docs page at `/docs/asyncapi`, rendered by
 * `@asyncapi/react-component`'s standalone bundle, served by the gateway itself (offline, no
 * CDN). The bundle (~3 MB, the AsyncAPI parser inside) is read from the npm package on the
 * first request for it, so a gateway whose docs nobody opens does not hold it in memory, and
 * gzipped once then (~0.8 MB on the wire).
 */
import type { Hono } from "hono";
import { buildAsyncApiDocument } from "../asyncapi.ts";
import { GatewayError } from "../errors.ts";
import type { GatewayEnv } from "../services.ts";

export const ASYNCAPI_DOCS_PATH = "/docs/asyncapi";

const page = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Liveness gateway — WebSocket protocol</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="${ASYNCAPI_DOCS_PATH}/default.min.css">
</head>
<body>
  <nav style="font: 14px sans-serif; padding: 8px 16px; border-bottom: 1px solid #ddd">
    <a href="/docs">HTTP API (OpenAPI)</a> · <strong>WebSocket protocol (AsyncAPI)</strong> ·
    <a href="/asyncapi.json">asyncapi.json</a>
  </nav>
  <div id="asyncapi"></div>
  <script src="${ASYNCAPI_DOCS_PATH}/standalone.js"></script>
  <script src="${ASYNCAPI_DOCS_PATH}/init.js"></script>
</body>
</html>`;

// The document describes the gateway (it receives the client's frames, sends its own): the
// labels say which way each operation goes, for a reader who writes the client. (No-break
// spaces: a label stays on one line in the narrow sidebar.)
const init = `AsyncApiStandalone.render({
  schema: { url: "/asyncapi.json", options: { method: "GET" } },
  config: {
    show: { sidebar: true },
    receiveLabel: "FROM\\u00a0CLIENT",
    replyLabel: "FROM\\u00a0CLIENT\\u00a0⇄",
    sendLabel: "TO\\u00a0CLIENT",
  },
}, document.getElementById("asyncapi"));`;

interface Assets {
  script: string;
  scriptGzip: Uint8Array<ArrayBuffer>;
  css: string;
}

/** The bundle and its style sheet, imported as text once, on first use. */
let assets: Promise<Assets> | undefined;
function loadAssets(): Promise<Assets> {
  assets ??= (async () => {
    const [script, css] = await Promise.all([
      import("@asyncapi/react-component/browser/standalone/index.js", { with: { type: "text" } }),
      import("@asyncapi/react-component/styles/default.min.css", { with: { type: "text" } }),
    ]);
    const gzip = new Blob([script.default]).stream().pipeThrough(new CompressionStream("gzip"));
    return {
      script: script.default,
      scriptGzip: await new Response(gzip).bytes(),
      css: css.default,
    };
  })();
  return assets;
}

export function mountAsyncApiDocs(app: Hono<GatewayEnv>): void {
  const document = buildAsyncApiDocument();
  const cache = { "cache-control": "public, max-age=3600" };
  app.get("/asyncapi.json", (c) => c.json(document));
  app.all("/asyncapi.json", () => {
    throw new GatewayError("ERR_METHOD_NOT_ALLOWED");
  });
  app.get(ASYNCAPI_DOCS_PATH, (c) => c.html(page));
  app.get(`${ASYNCAPI_DOCS_PATH}/`, (c) => c.redirect(ASYNCAPI_DOCS_PATH));
  app.get(`${ASYNCAPI_DOCS_PATH}/standalone.js`, async (c) => {
    const { script, scriptGzip } = await loadAssets();
    const headers = {
      ...cache,
      "content-type": "text/javascript; charset=utf-8",
      vary: "accept-encoding",
    };
    if (/\bgzip\b/.test(c.req.header("accept-encoding") ?? "")) {
      return c.body(scriptGzip, 200, { ...headers, "content-encoding": "gzip" });
    }
    return c.body(script, 200, headers);
  });
  app.get(`${ASYNCAPI_DOCS_PATH}/default.min.css`, async (c) => {
    const { css } = await loadAssets();
    return c.body(css, 200, { ...cache, "content-type": "text/css; charset=utf-8" });
  });
  app.get(
    `${ASYNCAPI_DOCS_PATH}/init.js`,
    (c) => c.body(init, 200, { "content-type": "text/javascript; charset=utf-8" }),
  );
}
