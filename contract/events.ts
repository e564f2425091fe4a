/**
 * Real-time events beyond the lifecycle (SPEC §6): the durable per-user event stream and its
 * resume, messages sent by users, groups, typing and presence.
 *
 * The stream: every event a user must not miss (a message to them or to one of their groups,
 * and the copy of a message they sent, for their other sessions) is appended to their stream
 * with the next `seq` (1, 2, 3, … with no gaps) and the stream's `epoch`, and is on disk before
 * anyone sees it or the sender is acknowledged. A client remembers the last `{ epoch, seq }` it
 * processed and puts it in its `connect` frame; the gateway replays what followed, then goes
 * live. Typing and presence are live only: never stored, never replayed.
 */
import { z } from "zod";
import { MessageContentSchema, MessageSchema, ReceiverTypeSchema, SeqSchema } from "./messages.ts";
import { EpochMsSchema, SubscriptionTypeSchema, UidSchema } from "./models.ts";

/** A group's id: the same alphabet as a uid. */
export const GuidSchema = z.string().min(1).max(100).regex(/^[A-Za-z0-9_.@-]+$/, {
  message: "guid may hold letters, digits and _ . @ - only",
}).meta({ id: "Guid" });

/** Most members of one group (also the most recipients of one send). */
export const MAX_GROUP_MEMBERS = 1_000;
/** Most roles of one user, and most roles one subscription names. */
export const MAX_ROLES = 20;
/** Most entries of one user's friend list. */
export const MAX_FRIENDS = 1_000;
/** Most events one page of the history route returns. */
export const MAX_HISTORY_PAGE = 500;

/**
 * The stream's identity: it changes only when the stream is reset (a wiped or replaced store),
 * so a position taken in another epoch says nothing about this one.
 */
export const EpochSchema = z.string().min(1).max(64).meta({ id: "Epoch" });

/** A place in a user's stream: the last event a client processed (`seq: 0` = none yet). */
export const StreamPositionSchema = z.object({
  epoch: EpochSchema,
  seq: z.number().int().nonnegative(),
}).strict().meta({ id: "StreamPosition" });
export type StreamPosition = z.infer<typeof StreamPositionSchema>;

/**
 * Why a `connect` that asked to resume was not recovered:
 * - `no_position`: the connect frame carried no `resume` (nothing to recover);
 * - `epoch_changed`: the stream was reset since the position was taken;
 * - `ahead_of_stream`: the position is past the stream's last event (it is not this stream's);
 * - `retention`: some events after the position are past retention (count or age) and gone;
 * - `replay_limit`: more events followed than the gateway replays on connect.
 * In every case the live events that follow start after `stream.seq`; the history route
 * serves what is still retained of the gap.
 */
export const ResumeFailureSchema = z.enum([
  "no_position",
  "epoch_changed",
  "ahead_of_stream",
  "retention",
  "replay_limit",
]).meta({ id: "ResumeFailure" });
export type ResumeFailure = z.infer<typeof ResumeFailureSchema>;

/** The stream part of `connected`: where the stream stands and whether the resume worked. */
export const StreamStatusSchema = z.object({
  epoch: EpochSchema,
  /** The last seq of the stream when the connection went live: replayed events end here. */
  seq: z.number().int().nonnegative(),
  /** True when every event after the `resume` position follows as `message` frames now. */
  recovered: z.boolean(),
  /** Set when `recovered` is false. */
  reason: ResumeFailureSchema.optional(),
  /** How many `message` frames are replayed before the live ones. */
  replayed: z.number().int().nonnegative(),
}).strict().meta({ id: "StreamStatus" });
export type StreamStatus = z.infer<typeof StreamStatusSchema>;

/** Whose presence a connection receives (the client's init settings). */
export const PresenceSubscriptionSchema = z.object({
  subscriptionType: SubscriptionTypeSchema,
  /** With `roles`: the roles whose users' presence is received. */
  roles: z.array(z.string().min(1).max(64)).max(MAX_ROLES).optional(),
}).strict().meta({ id: "PresenceSubscription" });
export type PresenceSubscription = z.infer<typeof PresenceSubscriptionSchema>;

/**
 * A client's own id for one send: a retry with the same id (after a reconnect, a timeout)
 * answers with the first result and never creates a second message. Unique per sending user.
 */
export const ClientMessageIdSchema = z.string().min(1).max(64).meta({ id: "ClientMessageId" });

/** What a logged-in user sends; the sender is the session's user (there is no `from`). */
export const UserSendSchema = z.object({
  clientMessageId: ClientMessageIdSchema,
  receiverType: ReceiverTypeSchema,
  /** A uid (`receiverType: "user"`) or a guid (`"group"`). */
  receiver: z.string().min(1).max(100),
  message: MessageContentSchema,
}).strict();
export const UserSendBodySchema = UserSendSchema.meta({ id: "UserSendBody" });
export type UserSend = z.infer<typeof UserSendSchema>;

/** The outcome of a user's send, on the sending session. */
export const UserSendReplySchema = z.object({
  /** The message as its receivers see it. */
  message: MessageSchema,
  /** Its seq in the sender's own stream (the copy for the sender's other sessions). */
  seq: SeqSchema,
  /** True when this answers a retry: the message was created by an earlier send. */
  duplicate: z.boolean(),
}).meta({ id: "UserSendReply" });
export type UserSendReply = z.infer<typeof UserSendReplySchema>;

/** An event of a user's stream, as replayed, delivered live and paged by the history route. */
export const StreamEventSchema = z.object({
  type: z.literal("message"),
  seq: SeqSchema,
  message: MessageSchema,
}).strict().meta({ id: "StreamEvent" });
export type StreamEvent = z.infer<typeof StreamEventSchema>;

export const HistoryQuerySchema = z.object({
  /** Events after this seq (0 = from the oldest retained). */
  after: z.coerce.number().int().nonnegative().default(0),
  limit: z.coerce.number().int().min(1).max(MAX_HISTORY_PAGE).default(100),
}).strict();

/** One page of a user's stream. */
export const HistoryPageSchema = z.object({
  epoch: EpochSchema,
  /** In seq order; seqs missing between `after` and the first one are past retention. */
  events: z.array(StreamEventSchema),
  /** The stream's last seq when the page was read. */
  lastSeq: z.number().int().nonnegative(),
  /** The `after` of the next page; equal to `lastSeq` when this page reaches the end. */
  nextAfter: z.number().int().nonnegative(),
  hasMore: z.boolean(),
}).meta({ id: "HistoryPage" });
export type HistoryPage = z.infer<typeof HistoryPageSchema>;

/** Typing is aimed at a user or a group, like a message. */
export const TypingTargetSchema = z.object({
  receiverType: ReceiverTypeSchema,
  receiver: z.string().min(1).max(100),
});

/** A typing indicator as its receivers see it. */
export const TypingIndicatorSchema = z.object({
  from: UidSchema,
  receiverType: ReceiverTypeSchema,
  /** The uid the indicator is for, or the group's guid. */
  receiver: z.string(),
  at: EpochMsSchema,
});

/** One user's presence change, as subscribers receive it. */
export const PresenceChangeSchema = z.object({
  uid: UidSchema,
  online: z.boolean(),
  /** When the change happened (the last one, when several were coalesced). */
  at: EpochMsSchema,
}).meta({ id: "PresenceChange" });
export type PresenceChange = z.infer<typeof PresenceChangeSchema>;

// ---- server API shapes ----

export const GroupSchema = z.object({
  guid: GuidSchema,
  name: z.string().max(200),
  members: z.array(UidSchema),
  createdAt: EpochMsSchema,
}).meta({ id: "Group" });
export type Group = z.infer<typeof GroupSchema>;

const Members = z.array(UidSchema).max(MAX_GROUP_MEMBERS).refine(
  (uids) => new Set(uids).size === uids.length,
  { message: "each uid may appear once" },
);

export const CreateGroupBodySchema = z.object({
  guid: GuidSchema,
  name: z.string().min(1).max(200).optional(),
  members: Members.optional(),
}).strict().meta({ id: "CreateGroupBody" });

export const AddMembersBodySchema = z.object({
  members: Members.min(1),
}).strict().meta({ id: "AddMembersBody" });

export const GroupSendBodySchema = z.object({
  /** Send on behalf of this member; left out, the message is from the app's server. */
  from: UidSchema.optional(),
  message: MessageContentSchema,
}).strict().meta({ id: "GroupSendBody" });

export const RolesBodySchema = z.object({
  roles: z.array(z.string().min(1).max(64)).max(MAX_ROLES),
}).strict().meta({ id: "RolesBody" });

export const FriendsBodySchema = z.object({
  friends: z.array(UidSchema).max(MAX_FRIENDS),
}).strict().meta({ id: "FriendsBody" });

/** A user's roles and friends: whose presence reaches whom (SPEC §4, presence). */
export const UserProfileSchema = z.object({
  uid: UidSchema,
  roles: z.array(z.string()),
  friends: z.array(UidSchema),
}).meta({ id: "UserProfile" });
export type UserProfile = z.infer<typeof UserProfileSchema>;
