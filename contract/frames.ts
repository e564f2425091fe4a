/**
 * WebSocket frames, both directions, as two discriminated unions on `type`.
 * Every frame is one JSON text message.
 */
import { z } from "zod";
import { CloseReasonSchema } from "./close_codes.ts";
import { ErrorCodeSchema } from "./errors.ts";
import {
  PresenceChangeSchema,
  PresenceSubscriptionSchema,
  StreamPositionSchema,
  StreamStatusSchema,
  TypingIndicatorSchema,
  TypingTargetSchema,
  UserSendSchema,
} from "./events.ts";
import { MessageSchema, SeqSchema } from "./messages.ts";
import {
  AppIdSchema,
  AppStateSchema,
  EpochMsSchema,
  ModeSchema,
  TimingSchema,
  UidSchema,
} from "./models.ts";
import { KeyLoginSchema, LoginReplySchema, TokenLoginSchema } from "./routes.ts";

/** Optional correlation id a client puts on a frame; the reply carries it back. (Number first:
 * clients mostly count, and zod tries union members in order. zod's `int()` is a safe integer:
 * an id the gateway cannot echo exactly is refused.) */
export const FrameIdSchema = z.union([z.number().int(), z.string().max(64)]);
const FrameId = FrameIdSchema.optional();

// ---- client → server ----

/**
 * A login inside the handshake: the login body plus the appId. It creates a session as
 * `POST /v1/apps/{appId}/login` does and connects it, in one round trip (a socket opened
 * without a credential).
 */
export const SocketLoginSchema = z.union([
  TokenLoginSchema.extend({ appId: AppIdSchema }),
  KeyLoginSchema.extend({ appId: AppIdSchema }),
]);
export type SocketLogin = z.infer<typeof SocketLoginSchema>;

/** The handshake: the first frame after the upgrade. Until it arrives nothing else is read. */
export const ConnectFrameSchema = z.object({
  type: z.literal("connect"),
  id: FrameId,
  appState: AppStateSchema.default("foreground"),
  backgroundService: z.boolean().default(false),
  /** Only on a socket opened without a credential: log in, then connect. */
  login: SocketLoginSchema.optional(),
  /**
   * The last stream position the client processed: the gateway replays what followed before
   * any live event (`connected.stream` says whether it could).
   */
  resume: StreamPositionSchema.optional(),
  /** Whose presence this connection receives; left out, none. */
  presence: PresenceSubscriptionSchema.optional(),
}).strict();

/**
 * A ping. `source: "heartbeat"` is the client's automatic foreground heartbeat (both modes);
 * `source: "app"` is the app calling ping() (manual mode only). In manual mode both count as
 * liveness; in auto mode a heartbeat never extends a background deadline and an app ping is
 * refused with ERR_NOT_MANUAL_MODE.
 */
export const PingFrameSchema = z.object({
  type: z.literal("ping"),
  id: FrameId,
  source: z.enum(["heartbeat", "app"]).default("heartbeat"),
}).strict();

/** The app moved to foreground or background; `backgroundService` is iOS configureServices. */
export const AppStateFrameSchema = z.object({
  type: z.literal("app_state"),
  id: FrameId,
  state: AppStateSchema,
  backgroundService: z.boolean().default(false),
}).strict();

/** Manual mode: the app called disconnect(). */
export const DisconnectFrameSchema = z.object({
  type: z.literal("disconnect"),
  id: FrameId,
}).strict();

/**
 * A message from the session's user to a user or a group. Answered by `sent` (also for a
 * retry with the same `clientMessageId`, which creates nothing new) or by `error`.
 */
export const SendFrameSchema = UserSendSchema.extend({
  type: z.literal("send"),
  id: FrameId,
}).strict();

/**
 * The user started typing to a user or a group: relayed to the receivers' connected sessions,
 * never stored. It lasts the typing timeout (`timing.typingTimeoutMs`) after the last
 * `start_typing`, unless `end_typing` ends it first. No reply unless refused.
 */
export const StartTypingFrameSchema = TypingTargetSchema.extend({
  type: z.literal("start_typing"),
  id: FrameId,
}).strict();

export const EndTypingFrameSchema = TypingTargetSchema.extend({
  type: z.literal("end_typing"),
  id: FrameId,
}).strict();

export const ClientFrameSchema = z.discriminatedUnion("type", [
  ConnectFrameSchema,
  PingFrameSchema,
  AppStateFrameSchema,
  DisconnectFrameSchema,
  SendFrameSchema,
  StartTypingFrameSchema,
  EndTypingFrameSchema,
]).meta({ id: "ClientFrame" });
export type ClientFrame = z.infer<typeof ClientFrameSchema>;
export type ClientFrameOf<T extends ClientFrame["type"]> = Extract<ClientFrame, { type: T }>;
/** What a client may write (defaults may be left out). */
export type ClientFrameInput = z.input<typeof ClientFrameSchema>;

// ---- server → client ----

export const ConnectedFrameSchema = z.object({
  type: z.literal("connected"),
  id: FrameId,
  sessionId: z.string(),
  uid: UidSchema,
  mode: ModeSchema,
  appState: AppStateSchema,
  backgroundService: z.boolean(),
  backgroundDeadline: EpochMsSchema.nullable(),
  serverTime: EpochMsSchema,
  timing: TimingSchema,
  /** The login's reply (user, session credential) when the connect frame logged in. */
  login: LoginReplySchema.optional(),
  /** The user's event stream: its position, and whether the `resume` position was recovered. */
  stream: StreamStatusSchema,
}).strict();

export const PongFrameSchema = z.object({
  type: z.literal("pong"),
  id: FrameId,
  serverTime: EpochMsSchema,
  /** The background deadline after this ping, or null in foreground. */
  backgroundDeadline: EpochMsSchema.nullable(),
}).strict();

/** Acknowledges an app_state frame with the deadline it set. */
export const StateFrameSchema = z.object({
  type: z.literal("state"),
  id: FrameId,
  appState: AppStateSchema,
  backgroundService: z.boolean(),
  backgroundDeadline: EpochMsSchema.nullable(),
}).strict();

export const ErrorFrameSchema = z.object({
  type: z.literal("error"),
  id: FrameId,
  errorCode: ErrorCodeSchema,
  errorDescription: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
}).strict();

/** Sent right before the server closes the socket for a rule; the close code follows. */
export const ClosingFrameSchema = z.object({
  type: z.literal("closing"),
  reason: CloseReasonSchema,
  code: z.number().int(),
  errorDescription: z.string(),
}).strict();

/**
 * An event of this user's stream: a message to the user, to one of their groups, or one the
 * user sent from another session. `seq` is its place in the user's stream; replayed events and
 * live ones are the same frame.
 */
export const MessageFrameSchema = z.object({
  type: z.literal("message"),
  seq: SeqSchema,
  message: MessageSchema,
}).strict();

/**
 * The sending session's own message, at its place in the stream (instead of a `message`
 * frame: a message is not echoed to the session that sent it). The answer to a `send` frame
 * (with its `id`), and also how a message sent over HTTP by this session shows up on its
 * socket. `duplicate` is true when it answers a retry.
 */
export const SentFrameSchema = z.object({
  type: z.literal("sent"),
  id: FrameId,
  seq: SeqSchema,
  message: MessageSchema,
  duplicate: z.boolean(),
}).strict();

/** Someone started typing to this user or to one of their groups (live only). */
export const TypingStartedFrameSchema = TypingIndicatorSchema.extend({
  type: z.literal("typing_started"),
}).strict();

/**
 * A typing indicator ended: by `end_typing`, by the typing timeout, or because the sender's
 * connection closed.
 */
export const TypingEndedFrameSchema = TypingIndicatorSchema.extend({
  type: z.literal("typing_ended"),
}).strict();

/**
 * Presence changes of the users this connection subscribes to, coalesced: at most one frame
 * per presence interval (`timing.presenceIntervalMs`), each user once with their latest state.
 */
export const PresenceFrameSchema = z.object({
  type: z.literal("presence"),
  users: z.array(PresenceChangeSchema).min(1),
}).strict();

export const ServerFrameSchema = z.discriminatedUnion("type", [
  ConnectedFrameSchema,
  PongFrameSchema,
  StateFrameSchema,
  ErrorFrameSchema,
  ClosingFrameSchema,
  MessageFrameSchema,
  SentFrameSchema,
  TypingStartedFrameSchema,
  TypingEndedFrameSchema,
  PresenceFrameSchema,
]).meta({ id: "ServerFrame" });
export type ServerFrame = z.infer<typeof ServerFrameSchema>;
export type ServerFrameOf<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;

/** The WebSocket sub-protocol; the credential may ride along as a second one (browsers). */
export const WS_PROTOCOL = "liveness.v1";
/** Prefix of the sub-protocol entry that carries the session credential. */
export const WS_CREDENTIAL_PROTOCOL_PREFIX = "cred.";
