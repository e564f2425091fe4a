/**
 * Implements a ts-rest route of the contract on Hono: validates path params, query and JSON
 * body with the route's own schemas, calls a handler typed by ts-rest's server inference, and
 * sends what it returns. Failures throw `GatewayError`, answered with the error payload.
 */
import type { AppRoute, ServerInferRequest, ServerInferResponses } from "@ts-rest/core";
import type { Context, Hono } from "hono";
import type { z } from "zod";
import { validationDetails } from "../../contract/mod.ts";
import { GatewayError } from "../errors.ts";
import type { GatewayEnv } from "../services.ts";

export type RouteHandler<R extends AppRoute> = (
  request: ServerInferRequest<R>,
  c: Context<GatewayEnv>,
) => Promise<ServerInferResponses<R>>;

/** A contract route bound to its handler, ready to mount. */
export interface ImplementedRoute {
  route: AppRoute;
  mount(app: Hono<GatewayEnv>): void;
}

/** Hono path syntax for a contract path (`/users/:uid` is the same in both). */
export function honoPath(route: AppRoute): string {
  return route.path;
}

export function implement<R extends AppRoute>(
  route: R,
  handler: RouteHandler<R>,
): ImplementedRoute {
  return {
    route,
    mount(app) {
      app.on(route.method, honoPath(route), async (c) => {
        const request = {
          params: parse(route.pathParams, c.req.param(), "path"),
          query: parse(route.query, c.req.query(), "query"),
          headers: Object.fromEntries(c.req.raw.headers),
          body: "body" in route && isSchema(route.body)
            ? parse(route.body, await readJson(c), "body")
            : undefined,
        } as unknown as ServerInferRequest<R>;
        const response = await handler(request, c) as { status: number; body: unknown };
        return c.json(response.body as object, response.status as 200);
      });
    },
  };
}

function isSchema(value: unknown): value is z.ZodType {
  return typeof value === "object" && value !== null && "safeParse" in value;
}

function parse(schema: unknown, value: unknown, where: string): unknown {
  if (!isSchema(schema)) return value;
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new GatewayError(
    "ERR_BAD_REQUEST",
    `The ${where} failed validation.`,
    validationDetails(result.error.issues, where),
  );
}

async function readJson(c: Context<GatewayEnv>): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") {
    throw new GatewayError("ERR_BAD_REQUEST", "A JSON body is required.", {
      where: "body",
      issues: [{ path: "", message: "missing body" }],
    });
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new GatewayError("ERR_BAD_REQUEST", "The body is not valid JSON.", {
      where: "body",
      issues: [{ path: "", message: "invalid JSON" }],
    });
  }
}
