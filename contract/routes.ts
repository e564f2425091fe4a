/**
 * Every HTTP route, as one ts-rest router. The gateway's Hono routes and the OpenAPI
 * document are derived from this object; the typed REST client is `initClient(contract)`.
 */
import { initContract } from "@ts-rest/core";
import { z } from "zod";
import { errorCatalog, type ErrorCode, ErrorPayloadSchema } from "./errors.ts";
import {
  AddMembersBodySchema,
  CreateGroupBodySchema,
  FriendsBodySchema,
  GroupSchema,
  GroupSendBodySchema,
  GuidSchema,
  HistoryPageSchema,
  HistoryQuerySchema,
  MAX_ROLES,
  RolesBodySchema,
  UserProfileSchema,
  UserSendBodySchema,
  UserSendReplySchema,
} from "./events.ts";
import { SendMessageBodySchema, SendMessageReplySchema } from "./messages.ts";
import {
  AppIdSchema,
  AppStateSchema,
  EpochMsSchema,
  ModeSchema,
  SessionViewSchema,
  SubscriptionTypeSchema,
  TimingSchema,
  UidSchema,
  UserSchema,
} from "./models.ts";

const c = initContract();

/** The HTTP status an error code is answered with. */
type StatusOf<C extends ErrorCode> = (typeof errorCatalog)[C]["status"];
/** The codes of `C` answered with status `S`. */
type CodesWithStatus<C extends ErrorCode, S extends number> = C extends ErrorCode
  ? StatusOf<C> extends S ? C : never
  : never;

/** The error payload narrowed to some codes: what one status of one route can carry. */
export function errorPayloadOf<const C extends readonly [ErrorCode, ...ErrorCode[]]>(codes: C) {
  return ErrorPayloadSchema.extend({ errorCode: z.enum(codes) });
}
type ErrorPayloadSchemaOf<C extends ErrorCode> = ReturnType<typeof errorPayloadOf<[C]>>;

/**
 * The error responses of a route, from the codes it can answer with: one response per status,
 * whose schema names exactly the codes of that status. The OpenAPI document, the typed client
 * and the tests read the codes back from these schemas; nothing lists them twice.
 */
function failures<const C extends readonly ErrorCode[]>(
  ...codes: C
): { [S in StatusOf<C[number]>]: ErrorPayloadSchemaOf<CodesWithStatus<C[number], S>> } {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) {
    const status = errorCatalog[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  return Object.fromEntries(
    [...byStatus].map(([status, list]) => [status, errorPayloadOf(list as [ErrorCode])]),
  ) as unknown as {
    [S in StatusOf<C[number]>]: ErrorPayloadSchemaOf<CodesWithStatus<C[number], S>>;
  };
}

/**
 * Answers any route may give before its handler runs: the rate limit, a request head too slow
 * or too large, a gateway shutting down (or at its connection limit, or its store
 * unreachable), and the unexpected.
 */
export const HTTP_LAYER_ERRORS = [
  "ERR_TOO_MANY_REQUESTS",
  "ERR_REQUEST_TIMEOUT",
  "ERR_HEADERS_TOO_LARGE",
  "ERR_SERVICE_UNAVAILABLE",
  "ERR_INTERNAL",
] as const satisfies readonly ErrorCode[];
/** A route that takes a body also refuses one over the size limit. */
const WITH_BODY = [...HTTP_LAYER_ERRORS, "ERR_PAYLOAD_TOO_LARGE"] as const;
/** A route behind `Authorization: Bearer <session credential>`. */
const SESSION_AUTH = ["ERROR_USER_NOT_LOGGED_IN", "AUTH_ERR_AUTH_TOKEN_NOT_FOUND"] as const;
/** A server API route: its app must exist, its `apikey` must be the app's, its path valid. */
const SERVER_AUTH = ["ERR_INVALID_APP_ID", "ERR_INVALID_API_KEY", "ERR_BAD_REQUEST"] as const;

export const AppPathSchema = z.object({ appId: AppIdSchema });
export const UserPathSchema = z.object({ appId: AppIdSchema, uid: UidSchema });
export const GroupPathSchema = z.object({ appId: AppIdSchema, guid: GuidSchema });

/** The session credential from login, as `Authorization: Bearer <credential>`. */
export const SessionHeadersSchema = z.object({
  // Auth schemes are case-insensitive (RFC 9110 §11.1): `bearer` is as good as `Bearer`.
  authorization: z.string().regex(/^bearer\s+\S+$/i, {
    message: "expected 'Bearer <session credential>'",
  }).meta({ description: "`Bearer <session credential>` from login." }),
});

/** The server API key of the app. */
export const ApiKeyHeadersSchema = z.object({
  apikey: z.string().min(1).meta({ description: "The app's server API key." }),
});

export const InitBodySchema = z.object({
  region: z.string().min(1).max(32),
  subscriptionType: SubscriptionTypeSchema.default("allUsers"),
  /** With `roles`: the roles whose users' presence is received (as the connect frame's). */
  roles: z.array(z.string().min(1).max(64)).max(MAX_ROLES).optional(),
  autoEstablishSocketConnection: z.boolean().default(true),
}).strict().meta({ id: "InitBody" });

export const InitReplySchema = z.object({
  appId: AppIdSchema,
  region: z.string(),
  subscriptionType: SubscriptionTypeSchema,
  roles: z.array(z.string()).optional(),
  autoEstablishSocketConnection: z.boolean(),
  mode: ModeSchema,
  timing: TimingSchema,
  /** Whether login(uid, authKey) is enabled for this app (development only). */
  devLoginEnabled: z.boolean(),
  /** Path of the WebSocket endpoint on this gateway. */
  websocketPath: z.string(),
}).meta({ id: "InitReply" });
export type InitReply = z.infer<typeof InitReplySchema>;

/** Login with an auth token from the server API. */
export const TokenLoginSchema = z.object({
  authToken: z.string().min(1).max(512),
  mode: ModeSchema.default("auto"),
}).strict();
/** Login with uid + the app's dev authKey (when the app enables it). */
export const KeyLoginSchema = z.object({
  uid: UidSchema,
  authKey: z.string().min(1).max(512),
  mode: ModeSchema.default("auto"),
}).strict();

export const LoginBodySchema = z.union([TokenLoginSchema, KeyLoginSchema]).meta({
  id: "LoginBody",
  description: "An auth token from the server API, or (when the app enables it) uid + dev authKey.",
});
export type LoginBody = z.input<typeof LoginBodySchema>;

export const LoginReplySchema = z.object({
  user: UserSchema,
  session: z.object({
    sessionId: z.string(),
    /** Bearer credential for the session routes and the WebSocket. */
    credential: z.string(),
    mode: ModeSchema,
    createdAt: EpochMsSchema,
  }),
}).meta({ id: "LoginReply" });
export type LoginReply = z.infer<typeof LoginReplySchema>;

export const PingReplySchema = z.object({
  serverTime: EpochMsSchema,
  appState: AppStateSchema,
  connected: z.boolean(),
  /** The background deadline after this ping, or null in foreground. */
  backgroundDeadline: EpochMsSchema.nullable(),
}).meta({ id: "PingReply" });

export const OkReplySchema = z.object({ ok: z.literal(true) }).meta({ id: "OkReply" });

export const CreateUserBodySchema = z.object({
  uid: UidSchema,
  name: z.string().min(1).max(200).optional(),
}).strict().meta({ id: "CreateUserBody" });

export const CreateAuthTokenBodySchema = z.object({
  /** Lifetime of the token; omitted means it does not expire until revoked. */
  ttlSeconds: z.number().int().positive().max(365 * 24 * 3600).optional(),
}).strict().meta({ id: "CreateAuthTokenBody" });

export const AuthTokenSchema = z.object({
  authToken: z.string(),
  uid: UidSchema,
  createdAt: EpochMsSchema,
  expiresAt: EpochMsSchema.nullable(),
}).meta({ id: "AuthToken" });

export const PresenceSchema = z.object({
  uid: UidSchema,
  online: z.boolean(),
  /** When the user last went offline; null while online or never seen. */
  lastSeenAt: EpochMsSchema.nullable(),
}).meta({ id: "Presence" });

export const UserSessionsSchema = z.object({
  uid: UidSchema,
  online: z.boolean(),
  sessions: z.array(SessionViewSchema),
}).meta({ id: "UserSessions" });

const sessionRoutes = c.router({
  logout: {
    method: "POST",
    path: "/v1/session/logout",
    headers: SessionHeadersSchema,
    body: c.noBody(),
    responses: { 200: OkReplySchema, ...failures(...SESSION_AUTH, ...WITH_BODY) },
    summary: "End the session and close its connection",
  },
  ping: {
    method: "POST",
    path: "/v1/session/ping",
    headers: SessionHeadersSchema,
    body: c.noBody(),
    responses: {
      200: PingReplySchema,
      ...failures(...SESSION_AUTH, "ERR_NOT_MANUAL_MODE", "NO_WEBSOCKET_CONNECTION", ...WITH_BODY),
    },
    summary: "Manual mode: tell the server the app is still active (HTTP form of ping)",
    description: "Moves a manual-mode background deadline to now + liveness window. Refused with " +
      "ERR_NOT_MANUAL_MODE in auto mode, NO_WEBSOCKET_CONNECTION when the session is not connected.",
  },
  disconnect: {
    method: "POST",
    path: "/v1/session/disconnect",
    headers: SessionHeadersSchema,
    body: c.noBody(),
    responses: {
      200: SessionViewSchema,
      ...failures(...SESSION_AUTH, "ERR_NOT_MANUAL_MODE", "NO_WEBSOCKET_CONNECTION", ...WITH_BODY),
    },
    summary: "Manual mode: close the session's connection; nothing is maintained afterwards",
  },
  status: {
    method: "GET",
    path: "/v1/session",
    headers: SessionHeadersSchema,
    responses: { 200: SessionViewSchema, ...failures(...SESSION_AUTH, ...HTTP_LAYER_ERRORS) },
    summary: "The server's view of this session",
  },
  send: {
    method: "POST",
    path: "/v1/session/messages",
    headers: SessionHeadersSchema,
    body: UserSendBodySchema,
    responses: {
      200: UserSendReplySchema,
      ...failures(
        ...SESSION_AUTH,
        "ERR_BAD_REQUEST",
        "ERR_UID_NOT_FOUND",
        "ERR_GUID_NOT_FOUND",
        "ERR_NOT_A_MEMBER",
        ...WITH_BODY,
      ),
    },
    summary: "Send a message as the session's user (idempotent by clientMessageId)",
    description: "The HTTP form of the `send` frame. The message is appended to every " +
      "receiver's stream and to the sender's (for the sender's other sessions) before the " +
      "answer; a retry with the same `clientMessageId` answers with the first result " +
      "(`duplicate: true`) and creates nothing.",
  },
  history: {
    method: "GET",
    path: "/v1/session/events",
    headers: SessionHeadersSchema,
    query: HistoryQuerySchema,
    responses: {
      200: HistoryPageSchema,
      ...failures(...SESSION_AUTH, "ERR_BAD_REQUEST", ...HTTP_LAYER_ERRORS),
    },
    summary: "Page through the user's event stream (the catch-up when a resume was not recovered)",
  },
});

const serverRoutes = c.router({
  createUser: {
    method: "POST",
    path: "/v1/apps/:appId/users",
    pathParams: AppPathSchema,
    headers: ApiKeyHeadersSchema,
    body: CreateUserBodySchema,
    responses: {
      201: UserSchema,
      ...failures(...SERVER_AUTH, "ERR_UID_ALREADY_EXISTS", ...WITH_BODY),
    },
    summary: "Create a user",
  },
  createAuthToken: {
    method: "POST",
    path: "/v1/apps/:appId/users/:uid/auth_tokens",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    body: CreateAuthTokenBodySchema,
    responses: {
      201: AuthTokenSchema,
      ...failures(...SERVER_AUTH, "ERR_UID_NOT_FOUND", ...WITH_BODY),
    },
    summary: "Create an auth token for a user",
  },
  revokeAuthToken: {
    method: "DELETE",
    path: "/v1/apps/:appId/users/:uid/auth_tokens/:authToken",
    pathParams: UserPathSchema.extend({ authToken: z.string().min(1).max(512) }),
    headers: ApiKeyHeadersSchema,
    body: c.noBody(),
    responses: { 200: OkReplySchema, ...failures(...SERVER_AUTH, "ERR_NOT_FOUND", ...WITH_BODY) },
    summary: "Revoke an auth token (sessions it created stay until logout)",
  },
  getPresence: {
    method: "GET",
    path: "/v1/apps/:appId/users/:uid/presence",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    responses: {
      200: PresenceSchema,
      ...failures(...SERVER_AUTH, "ERR_UID_NOT_FOUND", ...HTTP_LAYER_ERRORS),
    },
    summary: "Read a user's presence",
  },
  getSessions: {
    method: "GET",
    path: "/v1/apps/:appId/users/:uid/sessions",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    responses: {
      200: UserSessionsSchema,
      ...failures(...SERVER_AUTH, "ERR_UID_NOT_FOUND", ...HTTP_LAYER_ERRORS),
    },
    summary: "Read a user's sessions",
  },
  sendMessage: {
    method: "POST",
    path: "/v1/apps/:appId/messages",
    pathParams: AppPathSchema,
    headers: ApiKeyHeadersSchema,
    body: SendMessageBodySchema,
    responses: {
      200: SendMessageReplySchema,
      ...failures(...SERVER_AUTH, "ERR_UID_NOT_FOUND", ...WITH_BODY),
    },
    summary: "Send a message to one or more users (stored in their streams, then delivered)",
  },
  setRoles: {
    method: "PUT",
    path: "/v1/apps/:appId/users/:uid/roles",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    body: RolesBodySchema,
    responses: {
      200: UserProfileSchema,
      ...failures(...SERVER_AUTH, "ERR_UID_NOT_FOUND", ...WITH_BODY),
    },
    summary: "Set a user's roles (presence subscriptions by role)",
  },
  setFriends: {
    method: "PUT",
    path: "/v1/apps/:appId/users/:uid/friends",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    body: FriendsBodySchema,
    responses: {
      200: UserProfileSchema,
      ...failures(...SERVER_AUTH, "ERR_UID_NOT_FOUND", ...WITH_BODY),
    },
    summary: "Set the users whose presence this user receives under `friends`",
  },
  getProfile: {
    method: "GET",
    path: "/v1/apps/:appId/users/:uid/profile",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    responses: {
      200: UserProfileSchema,
      ...failures(...SERVER_AUTH, "ERR_UID_NOT_FOUND", ...HTTP_LAYER_ERRORS),
    },
    summary: "Read a user's roles and friends",
  },
  createGroup: {
    method: "POST",
    path: "/v1/apps/:appId/groups",
    pathParams: AppPathSchema,
    headers: ApiKeyHeadersSchema,
    body: CreateGroupBodySchema,
    responses: {
      201: GroupSchema,
      ...failures(...SERVER_AUTH, "ERR_GUID_ALREADY_EXISTS", "ERR_UID_NOT_FOUND", ...WITH_BODY),
    },
    summary: "Create a group, optionally with its first members",
  },
  getGroup: {
    method: "GET",
    path: "/v1/apps/:appId/groups/:guid",
    pathParams: GroupPathSchema,
    headers: ApiKeyHeadersSchema,
    responses: {
      200: GroupSchema,
      ...failures(...SERVER_AUTH, "ERR_GUID_NOT_FOUND", ...HTTP_LAYER_ERRORS),
    },
    summary: "Read a group and its members",
  },
  addMembers: {
    method: "POST",
    path: "/v1/apps/:appId/groups/:guid/members",
    pathParams: GroupPathSchema,
    headers: ApiKeyHeadersSchema,
    body: AddMembersBodySchema,
    responses: {
      200: GroupSchema,
      ...failures(
        ...SERVER_AUTH,
        "ERR_GUID_NOT_FOUND",
        "ERR_UID_NOT_FOUND",
        "ERR_GROUP_MEMBER_LIMIT",
        ...WITH_BODY,
      ),
    },
    summary: "Add members to a group (members already in it are left as they are)",
  },
  removeMember: {
    method: "DELETE",
    path: "/v1/apps/:appId/groups/:guid/members/:uid",
    pathParams: GroupPathSchema.extend({ uid: UidSchema }),
    headers: ApiKeyHeadersSchema,
    body: c.noBody(),
    responses: {
      200: GroupSchema,
      ...failures(...SERVER_AUTH, "ERR_GUID_NOT_FOUND", "ERR_NOT_A_MEMBER", ...WITH_BODY),
    },
    summary: "Remove a member from a group",
  },
  sendGroupMessage: {
    method: "POST",
    path: "/v1/apps/:appId/groups/:guid/messages",
    pathParams: GroupPathSchema,
    headers: ApiKeyHeadersSchema,
    body: GroupSendBodySchema,
    responses: {
      200: SendMessageReplySchema,
      ...failures(...SERVER_AUTH, "ERR_GUID_NOT_FOUND", "ERR_NOT_A_MEMBER", ...WITH_BODY),
    },
    summary: "Send a message to every member of a group (stored in each member's stream)",
  },
});

export const contract = c.router({
  init: {
    method: "POST",
    path: "/v1/apps/:appId/init",
    pathParams: AppPathSchema,
    body: InitBodySchema,
    responses: {
      200: InitReplySchema,
      ...failures("ERR_INVALID_APP_ID", "ERR_INVALID_REGION", "ERR_BAD_REQUEST", ...WITH_BODY),
    },
    summary: "Validate the appId and region and return the effective settings",
  },
  login: {
    method: "POST",
    path: "/v1/apps/:appId/login",
    pathParams: AppPathSchema,
    body: LoginBodySchema,
    responses: {
      200: LoginReplySchema,
      ...failures(
        "ERR_INVALID_APP_ID",
        "ERR_BAD_REQUEST",
        "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
        "ERR_INVALID_AUTH_KEY",
        "ERR_UID_NOT_FOUND",
        ...WITH_BODY,
      ),
    },
    summary: "Create a session from an auth token (or uid + dev authKey)",
  },
  session: sessionRoutes,
  server: serverRoutes,
});

export type Contract = typeof contract;

/** Path of the WebSocket endpoint. Credential: `?credential=` or a `cred.<credential>` protocol. */
export const WEBSOCKET_PATH = "/v1/ws";
