/**
 * The Hono app: routes implemented from the contract, the WebSocket endpoint, the docs, and
 * one error handler so that every failure answers with the contract's error payload.
 */
import { Hono } from "hono";
import { cors } from "hono/cors";
import { errorPayload, WEBSOCKET_PATH } from "../contract/mod.ts";
import { limitBody } from "./body_limit.ts";
import { OwnedElsewhere } from "./cluster/port.ts";
import { answerOf, GatewayError } from "./errors.ts";
import { contractRoutes } from "./openapi.ts";
import { clientRoutes } from "./routes/client_routes.ts";
import { mountDocs } from "./routes/docs.ts";
import { mountOps } from "./routes/ops.ts";
import { profileRoutes } from "./routes/profile_routes.ts";
import { serverRoutes } from "./routes/server_routes.ts";
import { mountWebSocket } from "./routes/websocket.ts";
import type { GatewayEnv, GatewayServices } from "./services.ts";

export function createApp(services: GatewayServices): Hono<GatewayEnv> {
  const app = new Hono<GatewayEnv>();

  // Probes and scrapes first: an orchestrator polling from one address must not be rate
  // limited, and a draining gateway still answers them.
  mountOps(app, {
    metrics: services.metrics,
    metricsToken: services.config.metricsToken,
    ready: () => {
      const clusterOk = services.health.clusterOk;
      const checks = {
        store: services.health.storeOk,
        accepting: !services.health.draining,
        // Only in a cluster: this node's heartbeat reaches Redis.
        ...(clusterOk === undefined ? {} : { cluster: clusterOk() }),
      };
      return { ready: Object.values(checks).every((ok) => ok), checks };
    },
  });

  // Browsers on other origins: credentials travel in headers (never cookies), so any origin
  // may be allowed; operators narrow it with CORS_ORIGINS.
  app.use(
    "*",
    cors({
      origin: services.config.corsOrigins.includes("*") ? "*" : services.config.corsOrigins,
      allowHeaders: ["authorization", "apikey", "content-type"],
      allowMethods: ["GET", "POST", "DELETE", "OPTIONS"],
      maxAge: 600,
    }),
  );
  app.use("*", async (c, next) => {
    if (services.health.draining) {
      throw new GatewayError("ERR_SERVICE_UNAVAILABLE", "The gateway is shutting down.");
    }
    const key = c.env?.remoteAddr ?? "unknown";
    if (c.env?.forwarded !== true && !services.httpLimiter.take(key, services.clock.now())) {
      services.metrics.refusals.http_rate++;
      throw new GatewayError("ERR_TOO_MANY_REQUESTS");
    }
    await next();
  });
  app.use(
    "*",
    limitBody(services.config.maxBodyBytes, () => {
      services.metrics.refusals.body_size++;
      throw new GatewayError("ERR_PAYLOAD_TOO_LARGE", undefined, {
        limitBytes: services.config.maxBodyBytes,
      });
    }),
  );

  // In a cluster, a request for a user another node holds is answered by that node.
  const forward = services.forward;
  if (forward !== undefined) {
    app.use("*", async (c, next) => {
      const copy = c.env?.forwarded === true ? null : c.req.raw.clone();
      await next();
      if (!(c.error instanceof OwnedElsewhere)) return;
      if (copy === null || c.req.path === WEBSOCKET_PATH) {
        // Moved again while the request crossed: one hop only, the client tries again.
        const payload = errorPayload(
          "ERR_SERVICE_UNAVAILABLE",
          "The user is moving between nodes.",
        );
        c.res = c.json(payload, 503);
        return;
      }
      try {
        c.res = await forward(c.error.node, copy);
      } catch (error) {
        services.log.warn("cluster.forward_failed", { node: c.error.node, error: String(error) });
        c.res = c.json(
          errorPayload("ERR_SERVICE_UNAVAILABLE", "The node holding this user did not answer."),
          503,
        );
      }
    });
  }

  const implemented = [
    ...clientRoutes(services),
    ...serverRoutes(services),
    ...profileRoutes(services),
  ];
  for (const route of implemented) route.mount(app);
  // Every contract route must be implemented: a route added to the contract without a handler
  // fails here at start-up (and in the tests), not as a 404 in production.
  const mounted = new Set(implemented.map((r) => r.route));
  for (const { name, route } of contractRoutes()) {
    if (!mounted.has(route)) throw new Error(`contract route '${name}' has no handler`);
  }
  mountWebSocket(app, services);
  mountDocs(app);
  app.get("/", (c) => c.redirect("/docs"));

  // A known path with another method: 405 rather than 404.
  const paths = new Set([...implemented.map((r) => r.route.path), "/v1/ws", "/openapi.json"]);
  for (const path of paths) {
    app.all(path, () => {
      throw new GatewayError("ERR_METHOD_NOT_ALLOWED");
    });
  }

  app.notFound((c) => c.json(errorPayload("ERR_NOT_FOUND"), 404));
  app.onError((error, c) => {
    const { status, payload } = answerOf(error, services.log);
    return c.json(payload, status as 400);
  });
  return app;
}
