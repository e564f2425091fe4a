/**
 * Operational endpoints for orchestrators and scrapers: liveness (`/healthz`), readiness
 * (`/readyz`) and Prometheus metrics (`/metrics`). They are not part of the typed client
 * contract (no zod schema, not in the OpenAPI document): plain JSON and plain text.
 */
import type { Hono } from "hono";
import { GatewayError } from "../errors.ts";
import type { GatewayMetrics } from "../metrics.ts";
import type { GatewayEnv } from "../services.ts";

/** Whether the gateway should receive traffic, and the checks that decided it. */
export interface Readiness {
  ready: boolean;
  /** Each check by name, true when it passes (such as `store`, `accepting`). */
  checks: Record<string, boolean>;
}

export interface OpsOptions {
  /** Rendered on each `GET /metrics`. */
  metrics: Pick<GatewayMetrics, "render">;
  /** Asked on each `GET /readyz`. */
  ready(): Readiness;
  /**
   * When set, `GET /metrics` requires `Authorization: Bearer <metricsToken>`. Must not be
   * empty (an empty token is a configuration mistake, refused at mount).
   */
  metricsToken?: string;
}

/** Probes and scrapes must never be answered from a cache. */
const NO_STORE = { "cache-control": "no-store" };

/**
 * Mounts `GET /healthz`, `GET /readyz` and `GET /metrics` on `app`.
 *
 * A refused `/metrics` call throws `GatewayError("ERR_INVALID_API_KEY")`: the app's `onError`
 * (as in `app.ts`) turns it into the gateway's 401 error payload.
 */
export function mountOps(app: Hono<GatewayEnv>, ops: OpsOptions): void {
  const { metricsToken } = ops;
  if (metricsToken === "") throw new Error("metricsToken must not be empty when set");

  // Liveness: answering at all is the signal; it checks nothing else, so that a store outage
  // makes the gateway unready (out of the load balancer) rather than restarted.
  app.get("/healthz", (c) => c.json({ status: "ok" }, 200, NO_STORE));

  app.get("/readyz", (c) => {
    const { ready, checks } = ops.ready();
    return ready
      ? c.json({ status: "ready", checks }, 200, NO_STORE)
      : c.json({ status: "not_ready", checks }, 503, NO_STORE);
  });

  app.get("/metrics", async (c) => {
    if (metricsToken !== undefined && !bearerMatches(c.req.header("authorization"), metricsToken)) {
      throw new GatewayError(
        "ERR_INVALID_API_KEY",
        "The metrics endpoint requires `Authorization: Bearer <metrics token>`.",
      );
    }
    const { contentType, body } = await ops.metrics.render();
    return c.body(body, 200, { ...NO_STORE, "content-type": contentType });
  });
}

const utf8 = new TextEncoder();

/** Whether `header` is `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1). */
function bearerMatches(header: string | undefined, token: string): boolean {
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header.trim());
  return match !== null && constantTimeEqual(match[1], token);
}

/**
 * Byte comparison whose time depends only on the expected token's length, never on how much
 * of it the caller guessed right.
 */
function constantTimeEqual(given: string, expected: string): boolean {
  const a = utf8.encode(given);
  const b = utf8.encode(expected);
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i] ?? 0) ^ b[i];
  return diff === 0;
}
