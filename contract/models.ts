/** Shapes shared by HTTP routes and WebSocket frames. */
import { z } from "zod";
import { closeReasons } from "./close_codes.ts";

export const ModeSchema = z.enum(["auto", "manual"]).meta({
  id: "Mode",
  description:
    "auto: the client manages the socket; manual: the app calls connect/disconnect/ping.",
});
export type Mode = z.infer<typeof ModeSchema>;

export const AppStateSchema = z.enum(["foreground", "background"]).meta({ id: "AppState" });
export type AppState = z.infer<typeof AppStateSchema>;

export const SubscriptionTypeSchema = z.enum(["allUsers", "roles", "friends", "none"]).meta({
  id: "SubscriptionType",
  description: "Whose presence the users of the app receive.",
});
export type SubscriptionType = z.infer<typeof SubscriptionTypeSchema>;

export const ConnectionStatusSchema = z.enum(["connecting", "connected", "disconnected"]).meta({
  id: "ConnectionStatus",
});
export type ConnectionStatus = z.infer<typeof ConnectionStatusSchema>;

const Uid = z.string().min(1).max(100).regex(/^[A-Za-z0-9_.@-]+$/, {
  message: "uid may hold letters, digits and _ . @ - only",
});
export const UidSchema = Uid.meta({ id: "Uid" });
export const AppIdSchema = z.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/, {
  message: "appId may hold letters, digits, _ and - only",
}).meta({ id: "AppId" });

/** Milliseconds since the Unix epoch, on the server's clock. */
export const EpochMsSchema = z.number().int().nonnegative();

export const UserSchema = z.object({
  uid: UidSchema,
  name: z.string().max(200),
  createdAt: EpochMsSchema,
}).meta({ id: "User" });
export type User = z.infer<typeof UserSchema>;

/** Timing parameters the server enforces; the client takes them from the init reply. */
export const TimingSchema = z.object({
  livenessWindowMs: z.number().int().positive(),
  heartbeatIntervalMs: z.number().int().positive(),
  pongTimeoutMs: z.number().int().positive(),
  idleTimeoutMs: z.number().int().positive(),
  /** A typing indicator ends by itself this long after its last `start_typing`. */
  typingTimeoutMs: z.number().int().positive(),
  /** Presence changes are coalesced per connection over this interval. */
  presenceIntervalMs: z.number().int().positive(),
}).meta({ id: "Timing" });
export type Timing = z.infer<typeof TimingSchema>;

/**
 * Why a session last lost its connection: a server close reason, or `connection_lost` when the
 * socket went away without one (network loss, the client closed it).
 */
export const DisconnectReasonSchema = z.enum([...closeReasons, "connection_lost"]).meta({
  id: "DisconnectReason",
});
export type DisconnectReason = z.infer<typeof DisconnectReasonSchema>;

/** The server's view of one session (SPEC §3 "connection status"). */
export const SessionViewSchema = z.object({
  sessionId: z.string(),
  uid: UidSchema,
  mode: ModeSchema,
  status: z.enum(["connected", "disconnected"]),
  appState: AppStateSchema,
  backgroundService: z.boolean(),
  /** When the server will close the connection unless something cancels or extends it. */
  backgroundDeadline: EpochMsSchema.nullable(),
  lastPingAt: EpochMsSchema.nullable(),
  lastDisconnectReason: DisconnectReasonSchema.nullable(),
  lastDisconnectAt: EpochMsSchema.nullable(),
  createdAt: EpochMsSchema,
}).meta({ id: "SessionView" });
export type SessionView = z.infer<typeof SessionViewSchema>;
