/**
 * The OpenAPI 3.1 document, derived from the contract: each ts-rest route is mapped onto a
 * `createRoute` config of @hono/zod-openapi, whose generator turns the zod schemas into JSON
 * Schema. Nothing here restates a shape.
 */
import { createRoute, OpenAPIHono } from "@hono/zod-openapi";
import type { AppRoute, AppRouter } from "@ts-rest/core";
import { z } from "zod";
import denoJson from "../deno.json" with { type: "json" };
import { DEFAULTS } from "./config.ts";
import {
  ApiKeyHeadersSchema,
  ClientFrameSchema,
  closeCodeTable,
  contract,
  errorCatalog,
  type ErrorCode,
  errorPayload,
  ErrorPayloadSchema,
  HTTP_LAYER_ERRORS,
  ServerFrameSchema,
  SessionHeadersSchema,
  WEBSOCKET_PATH,
  WS_CREDENTIAL_PROTOCOL_PREFIX,
  WS_PROTOCOL,
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

/** The security schemes of the document: how the two kinds of caller authenticate. */
export const SECURITY_SCHEMES = {
  sessionCredential: {
    type: "http",
    scheme: "bearer",
    description: "The session credential from login (`session.credential`), as " +
      "`Authorization: Bearer <credential>` (the scheme is case-insensitive).",
  },
  apiKey: {
    type: "apiKey",
    in: "header",
    name: "apikey",
    description: "The app's server API key (the development app's is `dev_api_key__not_secret`).",
  },
} as const;

/** The security requirement a route's headers schema stands for (none: a public route). */
function securityOf(route: AppRoute): Array<Record<keyof typeof SECURITY_SCHEMES, string[]>> {
  if (route.headers === SessionHeadersSchema) return [{ sessionCredential: [] } as never];
  if (route.headers === ApiKeyHeadersSchema) return [{ apiKey: [] } as never];
  return [];
}

/** The codes an error response schema of the contract names, or undefined for a success. */
export function errorCodesOf(schema: unknown): ErrorCode[] | undefined {
  if (!(schema instanceof z.ZodObject) || !("errorDescription" in schema.shape)) return undefined;
  const code = schema.shape.errorCode;
  return code instanceof z.ZodEnum ? code.options as ErrorCode[] : undefined;
}

/** One example per error code: what the gateway answers with it. */
function exampleOf(code: ErrorCode): { summary: string; value: unknown } {
  const details: Partial<Record<ErrorCode, Record<string, unknown>>> = {
    ERR_BAD_REQUEST: {
      where: "body",
      issues: [{ path: "region", message: "Invalid input: expected string, received undefined" }],
    },
    ERR_PAYLOAD_TOO_LARGE: { limitBytes: DEFAULTS.maxBodyBytes },
  };
  return {
    summary: errorCatalog[code].description,
    value: errorPayload(code, undefined, details[code]),
  };
}

function errorResponse(status: number, codes: readonly ErrorCode[], schema: z.ZodType) {
  return {
    description: `${statusText(status)}: ${codes.map((c) => `\`${c}\``).join(", ")}`,
    content: {
      "application/json": {
        schema,
        examples: Object.fromEntries(codes.map((code) => [code, exampleOf(code)])),
      },
    },
  };
}

function statusText(status: number): string {
  const texts: Record<number, string> = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Payload too large",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal error",
    503: "Service unavailable",
  };
  return texts[status] ?? `HTTP ${status}`;
}

/** Maps one contract route onto a `createRoute` config. */
export function toRouteConfig(route: AppRoute, operationId: string, tag: string): RouteConfig {
  const request: NonNullable<RouteConfig["request"]> = {};
  if (isSchema(route.pathParams)) request.params = route.pathParams as unknown as ZodObjectLike;
  if (isSchema(route.query)) request.query = route.query as unknown as ZodObjectLike;
  const security = securityOf(route);
  // The credential headers are security schemes (so Swagger UI's "Authorize" fills them), not
  // parameters; any other header schema is documented as parameters.
  if (isSchema(route.headers) && security.length === 0) {
    request.headers = route.headers as unknown as ZodObjectLike;
  }
  if ("body" in route && isSchema(route.body)) {
    request.body = { required: true, content: { "application/json": { schema: route.body } } };
  }
  const responses: RouteConfig["responses"] = {};
  for (const [status, schema] of Object.entries(route.responses)) {
    const codes = errorCodesOf(schema);
    responses[status] = codes !== undefined
      ? errorResponse(Number(status), codes, schema as z.ZodType)
      : {
        description: "Success",
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
    security,
    request,
    responses,
  });
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
      // Client frames are what a client writes (fields with defaults may be left out); server
      // frames are what it reads (every field with a default is there).
      z.toJSONSchema(schema, {
        metadata: z.registry(),
        unrepresentable: "any",
        io: name === "ClientFrame" ? "input" : "output",
      }) as Record<
        string,
        unknown
      >,
    );
  }
  const closeCodes = Object.entries(closeCodeTable).map(([r, c]) => `\`${c}\` ${r}`).join(", ");
  const upgradeErrors = ["ERR_BAD_REQUEST", ...HTTP_LAYER_ERRORS] as const;
  const upgradeResponses: RouteConfig["responses"] = {
    101: {
      description: "Switching Protocols: the socket is open; its first frame must be `connect`.",
    },
  };
  for (const status of new Set(upgradeErrors.map((c) => errorCatalog[c].status))) {
    const codes = upgradeErrors.filter((c) => errorCatalog[c].status === status);
    upgradeResponses[status] = errorResponse(status, codes, ErrorPayloadSchema);
  }
  docs.openAPIRegistry.registerPath({
    method: "get",
    path: WEBSOCKET_PATH,
    operationId: "websocket",
    tags: ["WebSocket"],
    summary: "Open the session's WebSocket (frames: ClientFrame in, ServerFrame out)",
    description: "A WebSocket upgrade (it cannot be tried from this page). Authenticate with " +
      `\`?credential=<session credential>\`, or the sub-protocols \`${WS_PROTOCOL}, ` +
      `${WS_CREDENTIAL_PROTOCOL_PREFIX}<credential>\` (browsers cannot set headers), or open it ` +
      "without a credential and log in with the `connect` frame's `login`. A credential that is " +
      "unknown, revoked or expired is refused after the upgrade, with close code 4007 " +
      "`unauthorized`. The first frame must be `connect`. Every frame, with the replies and the " +
      "close codes, is in the AsyncAPI document (`/asyncapi.json`, rendered at " +
      `[/docs/asyncapi](/docs/asyncapi)). Close codes: ${closeCodes}.`,
    request: {
      query: z.object({
        credential: z.string().optional().meta({
          description: "The session credential from login (or use the sub-protocol).",
        }),
      }),
      headers: z.object({
        upgrade: z.literal("websocket"),
        "sec-websocket-protocol": z.string().optional().meta({
          description: `\`${WS_PROTOCOL}\`, optionally followed by ` +
            `\`${WS_CREDENTIAL_PROTOCOL_PREFIX}<session credential>\`.`,
          example: `${WS_PROTOCOL}, ${WS_CREDENTIAL_PROTOCOL_PREFIX}<credential>`,
        }),
      }),
    },
    responses: upgradeResponses,
  });
  docs.openAPIRegistry.registerComponent("securitySchemes", "sessionCredential", {
    ...SECURITY_SCHEMES.sessionCredential,
  });
  docs.openAPIRegistry.registerComponent("securitySchemes", "apiKey", {
    ...SECURITY_SCHEMES.apiKey,
  });
  return docs.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "Liveness gateway",
      version: denoJson.version,
      description: "Real-time connection gateway with the mobile-SDK connection lifecycle.\n\n" +
        "- **Try it**: call `init` and `login` (the development app: appId `demo`, uid " +
        "`superhero1`, authKey `dev_auth_key__not_secret`), then **Authorize** with " +
        "`session.credential` as `sessionCredential`, and the server API key as `apiKey`.\n" +
        "- **Errors**: every failed call answers the one error payload; each route lists its " +
        "codes, one example each. A path of this document called with a method it does not " +
        "list answers `405` `ERR_METHOD_NOT_ALLOWED`; an unknown path `404` `ERR_NOT_FOUND`.\n" +
        "- **The WebSocket protocol**: [AsyncAPI document](/docs/asyncapi) " +
        "(`/asyncapi.json`).",
    },
  }) as unknown as Record<string, unknown>;
}
