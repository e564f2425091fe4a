/**
 * Every HTTP route, as one ts-rest router. The gateway's Hono routes and the OpenAPI
 * document are derived from this object; the typed REST client is `initClient(contract)`.
 */
import { initContract } from "@ts-rest/core";
import { z } from "zod";
import { ErrorPayloadSchema } from "./errors.ts";
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

/** Error responses of a route, all with the one error payload. */
function errorResponses<const S extends readonly number[]>(
  ...statuses: S
): { [K in S[number]]: typeof ErrorPayloadSchema } {
  return Object.fromEntries(statuses.map((s) => [s, ErrorPayloadSchema])) as {
    [K in S[number]]: typeof ErrorPayloadSchema;
  };
}

/** Errors any route may answer with. */
const common = [400, 413, 429, 500] as const;

export const AppPathSchema = z.object({ appId: AppIdSchema });
export const UserPathSchema = z.object({ appId: AppIdSchema, uid: UidSchema });

/** The session credential from login, as `Authorization: Bearer <credential>`. */
export const SessionHeadersSchema = z.object({
  authorization: z.string().regex(/^Bearer \S+$/, {
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
  roles: z.array(z.string().min(1).max(64)).max(100).optional(),
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
    responses: { 200: OkReplySchema, ...errorResponses(401, ...common) },
    summary: "End the session and close its connection",
  },
  ping: {
    method: "POST",
    path: "/v1/session/ping",
    headers: SessionHeadersSchema,
    body: c.noBody(),
    responses: { 200: PingReplySchema, ...errorResponses(401, 409, ...common) },
    summary: "Manual mode: tell the server the app is still active (HTTP form of ping)",
    description: "Moves a manual-mode background deadline to now + liveness window. Refused with " +
      "ERR_NOT_MANUAL_MODE in auto mode, NO_WEBSOCKET_CONNECTION when the session is not connected.",
  },
  disconnect: {
    method: "POST",
    path: "/v1/session/disconnect",
    headers: SessionHeadersSchema,
    body: c.noBody(),
    responses: { 200: SessionViewSchema, ...errorResponses(401, 409, ...common) },
    summary: "Manual mode: close the session's connection; nothing is maintained afterwards",
  },
  status: {
    method: "GET",
    path: "/v1/session",
    headers: SessionHeadersSchema,
    responses: { 200: SessionViewSchema, ...errorResponses(401, ...common) },
    summary: "The server's view of this session",
  },
});

const serverRoutes = c.router({
  createUser: {
    method: "POST",
    path: "/v1/apps/:appId/users",
    pathParams: AppPathSchema,
    headers: ApiKeyHeadersSchema,
    body: CreateUserBodySchema,
    responses: { 201: UserSchema, ...errorResponses(401, 404, 409, ...common) },
    summary: "Create a user",
  },
  createAuthToken: {
    method: "POST",
    path: "/v1/apps/:appId/users/:uid/auth_tokens",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    body: CreateAuthTokenBodySchema,
    responses: { 201: AuthTokenSchema, ...errorResponses(401, 404, ...common) },
    summary: "Create an auth token for a user",
  },
  revokeAuthToken: {
    method: "DELETE",
    path: "/v1/apps/:appId/users/:uid/auth_tokens/:authToken",
    pathParams: UserPathSchema.extend({ authToken: z.string().min(1).max(512) }),
    headers: ApiKeyHeadersSchema,
    body: c.noBody(),
    responses: { 200: OkReplySchema, ...errorResponses(401, 404, ...common) },
    summary: "Revoke an auth token (sessions it created stay until logout)",
  },
  getPresence: {
    method: "GET",
    path: "/v1/apps/:appId/users/:uid/presence",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    responses: { 200: PresenceSchema, ...errorResponses(401, 404, ...common) },
    summary: "Read a user's presence",
  },
  getSessions: {
    method: "GET",
    path: "/v1/apps/:appId/users/:uid/sessions",
    pathParams: UserPathSchema,
    headers: ApiKeyHeadersSchema,
    responses: { 200: UserSessionsSchema, ...errorResponses(401, 404, ...common) },
    summary: "Read a user's sessions",
  },
  sendMessage: {
    method: "POST",
    path: "/v1/apps/:appId/messages",
    pathParams: AppPathSchema,
    headers: ApiKeyHeadersSchema,
    body: SendMessageBodySchema,
    responses: { 200: SendMessageReplySchema, ...errorResponses(401, 404, ...common) },
    summary: "Send a message to one or more users (delivered to their connected sessions)",
  },
});

export const contract = c.router({
  init: {
    method: "POST",
    path: "/v1/apps/:appId/init",
    pathParams: AppPathSchema,
    body: InitBodySchema,
    responses: { 200: InitReplySchema, ...errorResponses(404, ...common) },
    summary: "Validate the appId and region and return the effective settings",
  },
  login: {
    method: "POST",
    path: "/v1/apps/:appId/login",
    pathParams: AppPathSchema,
    body: LoginBodySchema,
    responses: { 200: LoginReplySchema, ...errorResponses(401, 404, ...common) },
    summary: "Create a session from an auth token (or uid + dev authKey)",
  },
  session: sessionRoutes,
  server: serverRoutes,
});

export type Contract = typeof contract;

/** Path of the WebSocket endpoint. Credential: `?credential=` or a `cred.<credential>` protocol. */
export const WEBSOCKET_PATH = "/v1/ws";
