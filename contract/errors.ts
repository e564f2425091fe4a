/**
 * The closed set of error codes and the one error payload every failed call returns,
 * over HTTP and over the WebSocket alike (SPEC §3).
 *
 * Codes the reference mobile SDKs use keep their spelling (including
 * `ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE`) so an app can move over with few changes.
 */
import { z } from "zod";

/** Every error code, with the HTTP status it maps to and its default description. */
export const errorCatalog = {
  ERR_INVALID_APP_ID: { status: 404, description: "No app with this appId exists." },
  ERR_INVALID_REGION: { status: 400, description: "The region does not match the app's region." },
  ERR_BAD_REQUEST: { status: 400, description: "The request failed validation." },
  ERR_INVALID_API_KEY: { status: 401, description: "A valid apikey header is required." },
  AUTH_ERR_AUTH_TOKEN_NOT_FOUND: {
    status: 401,
    description: "The auth token or session credential is unknown, revoked or expired.",
  },
  ERR_UID_NOT_FOUND: { status: 404, description: "No user with this uid exists." },
  ERR_UID_ALREADY_EXISTS: { status: 409, description: "A user with this uid already exists." },
  ERR_GUID_NOT_FOUND: { status: 404, description: "No group with this guid exists." },
  ERR_GUID_ALREADY_EXISTS: { status: 409, description: "A group with this guid already exists." },
  ERR_NOT_A_MEMBER: {
    status: 403,
    description: "Only a member of the group can send or type to it.",
  },
  ERR_GROUP_MEMBER_LIMIT: {
    status: 409,
    description: "The group would have more members than the limit.",
  },
  NOT_INITIALIZED: { status: 400, description: "init() must be called first." },
  ERR_INVALID_AUTH_KEY: { status: 401, description: "The authKey is not valid for this app." },
  LOGIN_IN_PROGRESS: { status: 409, description: "A login is already under way." },
  ERROR_USER_NOT_LOGGED_IN: { status: 401, description: "No user is logged in." },
  ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE: {
    status: 409,
    description: "Web sockets connect called while web sockets are already connected",
  },
  NO_WEBSOCKET_CONNECTION: { status: 409, description: "There is no WebSocket connection." },
  ERR_NOT_MANUAL_MODE: {
    status: 409,
    description: "connect(), disconnect() and ping() are only for manual mode.",
  },
  ERR_TOO_MANY_REQUESTS: { status: 429, description: "Too many requests or frames." },
  ERR_PAYLOAD_TOO_LARGE: { status: 413, description: "The frame or body is over the size limit." },
  ERR_REQUEST_TIMEOUT: {
    status: 408,
    description: "The request did not arrive in time.",
  },
  ERR_HEADERS_TOO_LARGE: {
    status: 431,
    description: "The request head is over the size limit.",
  },
  ERR_SERVICE_UNAVAILABLE: {
    status: 503,
    description:
      "The gateway is shutting down, at its connection limit, or its store is unreachable; retry shortly.",
  },
  ERR_NOT_FOUND: { status: 404, description: "No such route or resource." },
  ERR_METHOD_NOT_ALLOWED: { status: 405, description: "The route does not accept this method." },
  ERR_INTERNAL: { status: 500, description: "An unexpected error happened." },
} as const satisfies Record<string, { status: number; description: string }>;

export type ErrorCode = keyof typeof errorCatalog;

export const errorCodes = Object.keys(errorCatalog) as [ErrorCode, ...ErrorCode[]];

export const ErrorCodeSchema = z.enum(errorCodes).meta({
  id: "ErrorCode",
  description: "The closed set of error codes (SPEC §3).",
});

/** One validation issue, as listed in `details.issues` of `ERR_BAD_REQUEST`. */
export const ValidationIssueSchema = z.object({
  path: z.string().meta({ description: "Dotted path of the offending field; empty for the root." }),
  message: z.string(),
});
export type ValidationIssue = z.infer<typeof ValidationIssueSchema>;

export const ErrorPayloadSchema = z.object({
  errorCode: ErrorCodeSchema,
  errorDescription: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
}).meta({ id: "ErrorPayload", description: "The payload of every failed call." });
export type ErrorPayload = z.infer<typeof ErrorPayloadSchema>;

/** HTTP status for an error code. */
export function statusOf(code: ErrorCode): (typeof errorCatalog)[ErrorCode]["status"] {
  return errorCatalog[code].status;
}

/** Builds the error payload for `code`, with its default description unless one is given. */
export function errorPayload(
  code: ErrorCode,
  description?: string,
  details?: Record<string, unknown>,
): ErrorPayload {
  const payload: ErrorPayload = {
    errorCode: code,
    errorDescription: description ?? errorCatalog[code].description,
  };
  if (details !== undefined) payload.details = details;
  return payload;
}

/** The part of a zod issue the details are made of (a union's issue also has its branches'). */
export interface IssueLike {
  readonly path: ReadonlyArray<PropertyKey>;
  readonly message: string;
  readonly code?: string;
  /** For `invalid_union`: the issues of each alternative, paths relative to the union. */
  readonly errors?: ReadonlyArray<ReadonlyArray<IssueLike>>;
  /** For `unrecognized_keys`: the keys, each reported at its own path. */
  readonly keys?: ReadonlyArray<string>;
}

/**
 * Turns zod issues into the `details` of an `ERR_BAD_REQUEST` payload. A value that matches
 * none of a union's alternatives is explained field by field for each alternative (zod's own
 * issue only says "Invalid input" at the union's path), so a login body `{}` names `authToken`,
 * or `uid` and `authKey`.
 */
export function validationDetails(
  issues: ReadonlyArray<IssueLike>,
  where?: string,
): { issues: ValidationIssue[]; where?: string } {
  const list: ValidationIssue[] = [];
  const seen = new Set<string>();
  for (const issue of issues) {
    for (const item of flattenIssue(issue, [], "")) {
      const key = `${item.path}\u0000${item.message}`;
      if (!seen.has(key)) list.push(item), seen.add(key);
    }
  }
  return where === undefined ? { issues: list } : { where, issues: list };
}

function flattenIssue(
  issue: IssueLike,
  prefix: ReadonlyArray<PropertyKey>,
  suffix: string,
): ValidationIssue[] {
  const path = [...prefix, ...issue.path];
  const branches = issue.code === "invalid_union" ? issue.errors ?? [] : [];
  if (branches.length > 0 && branches.every((branch) => branch.length > 0)) {
    return branches.flatMap((branch, i) =>
      branch.flatMap((inner) =>
        flattenIssue(inner, path, `${suffix} (alternative ${i + 1} of ${branches.length})`)
      )
    );
  }
  const dotted = (keys: ReadonlyArray<PropertyKey>) => keys.map((p) => String(p)).join(".");
  if (issue.code === "unrecognized_keys" && issue.keys !== undefined && issue.keys.length > 0) {
    return issue.keys.map((key) => ({
      path: dotted([...path, key]),
      message: "Unknown field" + suffix,
    }));
  }
  return [{ path: dotted(path), message: issue.message + suffix }];
}
