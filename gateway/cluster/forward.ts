/**
 * HTTP requests for a user held by another node ([cluster.md](../../docs/cluster.md)): the
 * node that received one sends it whole over the bus to the node holding the user, which
 * answers it as its own, and the answer goes back to the client as it is. One hop only: a
 * forwarded request that finds the user moved again is answered with 503 (the client retries).
 */
import type { Hono } from "hono";
import type { GatewayEnv } from "../services.ts";
import type { Bus } from "./bus.ts";

/** A request or an answer, as it crosses the bus. */
interface WireHttp {
  method?: string;
  url?: string;
  status?: number;
  headers: Array<[string, string]>;
  body: string | null;
}

/** Sends `request` to `node` and returns its answer. */
export async function forwardHttp(bus: Bus, node: string, request: Request): Promise<Response> {
  const sent: WireHttp = {
    method: request.method,
    url: request.url,
    headers: [...request.headers],
    body: request.body === null ? null : await request.text(),
  };
  const answer = await bus.request(node, "http", sent) as WireHttp;
  return new Response(answer.body, { status: answer.status, headers: answer.headers });
}

/** Answers a request forwarded by another node. */
export async function answerForwarded(app: Hono<GatewayEnv>, body: unknown): Promise<WireHttp> {
  const wire = body as WireHttp;
  const request = new Request(wire.url!, {
    method: wire.method,
    headers: wire.headers,
    body: wire.body,
  });
  const response = await app.fetch(request, { forwarded: true });
  return { status: response.status, headers: [...response.headers], body: await response.text() };
}
