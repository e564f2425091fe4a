/**
 * Messages (SPEC §6): what the server API sends and what a connected session receives.
 *
 * A message is appended to each recipient's durable event stream (contract/events.ts) with the
 * recipient's own sequence number, and delivered to every connected session of the recipient as
 * a `message` frame; a recipient that is offline gets it when it connects again (resume).
 */
import { z } from "zod";
import { EpochMsSchema, UidSchema } from "./models.ts";

/** Longest text of a text message, in characters. */
export const MAX_MESSAGE_TEXT = 10_000;
/** Most recipients of one send. */
export const MAX_RECIPIENTS = 1_000;
/**
 * Deepest nesting of a custom message's `data` (the object itself is level 1). Deeper data
 * is refused where it is validated, so encoding a message can never exhaust the stack.
 */
export const MAX_CUSTOM_DATA_DEPTH = 32;

/** Whether `value` nests at most `max` levels of objects and arrays (checked without recursion). */
export function nestsAtMost(value: unknown, max: number): boolean {
  const stack: Array<{ value: unknown; depth: number }> = [{ value, depth: 1 }];
  while (stack.length > 0) {
    const { value: current, depth } = stack.pop()!;
    if (typeof current !== "object" || current === null) continue;
    if (depth > max) return false;
    for (const child of Object.values(current)) stack.push({ value: child, depth: depth + 1 });
  }
  return true;
}

const TextContent = z.object({
  kind: z.literal("text"),
  text: z.string().min(1).max(MAX_MESSAGE_TEXT),
});

const CustomContent = z.object({
  kind: z.literal("custom"),
  /** The app's own name for what `data` holds. */
  customType: z.string().min(1).max(64),
  data: z.record(z.string(), z.unknown()).refine(
    (data) => nestsAtMost(data, MAX_CUSTOM_DATA_DEPTH),
    { message: `nests deeper than ${MAX_CUSTOM_DATA_DEPTH} levels` },
  ),
});

/** What a sender supplies: a text, or the app's own JSON object. */
export const MessageContentSchema = z.discriminatedUnion("kind", [
  TextContent.strict(),
  CustomContent.strict(),
]).meta({ id: "MessageContent" });
export type MessageContent = z.infer<typeof MessageContentSchema>;

/** A message goes to a user or to a group (every member). */
export const ReceiverTypeSchema = z.enum(["user", "group"]).meta({ id: "ReceiverType" });
export type ReceiverType = z.infer<typeof ReceiverTypeSchema>;

const Envelope = {
  /** One id per send: every recipient of a multi-recipient send sees the same id. */
  id: z.string(),
  /** The sending user, or null when the app's server sent it. */
  from: UidSchema.nullable(),
  /** `user`: `to` is a uid; `group`: `to` is the group's guid. */
  receiverType: ReceiverTypeSchema,
  /**
   * The receiver: the user this copy is for (a server send to several users gives each its
   * own), the user a user wrote to (also on the sender's own copy), or the group.
   */
  to: z.string().min(1).max(100),
  /** The sender's id for a send by a user (idempotent retries); absent on server sends. */
  clientMessageId: z.string().optional(),
  sentAt: EpochMsSchema,
};

/** A message as a recipient sees it. */
export const MessageSchema = z.discriminatedUnion("kind", [
  TextContent.extend(Envelope).strict(),
  CustomContent.extend(Envelope).strict(),
]).meta({ id: "Message" });
export type Message = z.infer<typeof MessageSchema>;

/** Per-user event sequence numbers start at 1 and only increase, across restarts too. */
export const SeqSchema = z.number().int().positive();

export const SendMessageBodySchema = z.object({
  to: z.array(UidSchema).min(1).max(MAX_RECIPIENTS).refine(
    (uids) => new Set(uids).size === uids.length,
    { message: "each uid may appear once" },
  ),
  /** Send on behalf of this user; left out, the message is from the app's server. */
  from: UidSchema.optional(),
  message: MessageContentSchema,
}).strict().meta({ id: "SendMessageBody" });

export const SendMessageReplySchema = z.object({
  id: z.string(),
  sentAt: EpochMsSchema,
  recipients: z.array(z.object({
    uid: UidSchema,
    /** The sequence number the message got in this recipient's stream. */
    seq: SeqSchema,
    /** Connections it was written to now; 0 when the recipient was offline. */
    deliveredTo: z.number().int().nonnegative(),
  })),
}).meta({ id: "SendMessageReply" });
export type SendMessageReply = z.infer<typeof SendMessageReplySchema>;
