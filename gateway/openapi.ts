/**
 * The OpenAPI 3.1 document, derived from the contract: each ts-rest route is mapped onto a
 * `createRoute` config of @hono/zod-openapi, whose generator turns the zod schemas into JSON
 * Schema. Nothing here restates a shape.
 */
import { createRoute, OpenAPIHono } from "@hono/zod-openapi";
import type { AppRoute, AppRouter } from "@ts-rest/core";
import { z } from "zod";
import {
  ClientFrameSchema,
  closeCodeTable,
  contract,
  errorCatalog,
  ErrorPayloadSchema,
  ServerFrameSchema,
  WEBSOCKET_PATH,
} from "../contract/mod.ts";

type RouteConfig = Parameters<typeof createRoute>[0];
type ZodObjectLike = Extract<NonNullable<NonNullable<RouteConfig["request"]>["params"]>, object>;

function isSchema(value: unknown): value is z.ZodType {
  return typeof value === "object" && value !== null && "safeParse" in value;
}

/** `/v1/apps/:appId` → `/v1/apps/{appId}`. */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

/** Maps one contract route onto a `createRoute` config. */
export function toRouteConfig(route: AppRoute, operationId: string, tag: string): RouteConfig {
  const request: NonNullable<RouteConfig["request"]> = {};
  if (isSchema(route.pathParams)) request.params = route.pathParams as unknown as ZodObjectLike;
  if (isSchema(route.query)) request.query = route.query as unknown as ZodObjectLike;
  if (isSchema(route.headers)) request.headers = route.headers as unknown as ZodObjectLike;
  if ("body" in route && isSchema(route.body)) {
    request.body = { required: true, content: { "application/json": { schema: route.body } } };
  }
  const responses: RouteConfig["responses"] = {};
  for (const [status, schema] of Object.entries(route.responses)) {
    const isError = schema === ErrorPayloadSchema;
    responses[status] = {
      description: isError ? errorStatusDescription(Number(status)) : "Success",
      content: isSchema(schema) ? { "application/json": { schema } } : undefined,
    };
  }
  return createRoute({
    method: route.method.toLowerCase() as RouteConfig["method"],
    path: openApiPath(route.path),
    operationId,
    tags: [tag],
    summary: route.summary,
    description: route.description,
    request,
    responses,
  });
}

function errorStatusDescription(status: number): string {
  const codes = Object.entries(errorCatalog).filter(([, e]) => e.status === status).map(([c]) => c);
  return `Error payload; errorCode one of: ${codes.join(", ")}`;
}

/** Walks a (nested) ts-rest router, yielding each route with a dotted operation id. */
export function* contractRoutes(
  router: AppRouter = contract,
  prefix = "",
): Generator<{ name: string; route: AppRoute }> {
  for (const [key, value] of Object.entries(router)) {
    const name = prefix === "" ? key : `${prefix}.${key}`;
    if (typeof value === "object" && value !== null && "method" in value && "path" in value) {
      yield { name, route: value as AppRoute };
    } else {
      yield* contractRoutes(value as AppRouter, name);
    }
  }
}

const tagOf = (name: string) =>
  name.startsWith("server.") ? "Server API" : name.startsWith("session.") ? "Session" : "Client";

/** Builds the OpenAPI 3.1 document of the gateway. */
export function buildOpenApiDocument(): Record<string, unknown> {
  const docs = new OpenAPIHono();
  for (const { name, route } of contractRoutes()) {
    docs.openAPIRegistry.registerPath(toRouteConfig(route, name, tagOf(name)));
  }
  // Frames are not HTTP bodies: their JSON Schema (zod's own) is added as components.
  for (
    const [name, schema] of [["ClientFrame", ClientFrameSchema], [
      "ServerFrame",
      ServerFrameSchema,
    ]] as const
  ) {
    docs.openAPIRegistry.registerComponent(
      "schemas",
      `WebSocket${name}`,
      // An empty metadata registry inlines the shared parts (ids would make dangling `$ref`s).
      z.toJSONSchema(schema, { metadata: z.registry(), unrepresentable: "any" }) as Record<
        string,
        unknown
      >,
    );
  }
  const closeCodes = Object.entries(closeCodeTable).map(([r, c]) => `\`${c}\` ${r}`).join(", ");
  docs.openAPIRegistry.registerPath({
    method: "get",
    path: WEBSOCKET_PATH,
    operationId: "websocket",
    tags: ["WebSocket"],
    summary: "Open the session's WebSocket (frames: ClientFrame in, ServerFrame out)",
    description: "Authenticate with `?credential=<session credential>` or the sub-protocols " +
      "`liveness.v1, cred.<credential>`. The first frame must be `connect`. " +
      `Close codes: ${closeCodes}. The whole protocol (every frame, with schemas and ` +
      "examples): [/docs/asyncapi](/docs/asyncapi), AsyncAPI 3.0 at `/asyncapi.json`.",
    responses: { 101: { description: "Switching Protocols" } },
  });
  return docs.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "Liveness gateway",
      version: "1.0.0",
      description: "Real-time connection gateway with the mobile-SDK connection lifecycle.",
    },
  }) as unknown as Record<string, unknown>;
}
