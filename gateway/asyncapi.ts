/**
 * The AsyncAPI 3.0 document of the WebSocket protocol, derived from the contract as the OpenAPI
 * document is: every payload is zod's own JSON Schema of a frame (client frames as zod *input*,
 * so that fields with defaults are optional; server frames as output), the close codes and
 * their meanings come from the contract's table, the paths and sub-protocol from its
 * constants. What is written here is prose and examples; the examples are typed by the
 * contract, and the tests parse them with its schemas.
 *
 * The document describes the gateway, as AsyncAPI documents of WebSocket servers do: it
 * *receives* the client's frames (and replies to them) and *sends* its own.
 */
import { z } from "zod";
import denoJson from "../deno.json" with { type: "json" };
import {
  type ClientFrameInput,
  ClientFrameSchema,
  closeCodeTable,
  closeReasonDescriptions,
  closeReasons,
  type ServerFrame,
  type ServerFrameOf,
  ServerFrameSchema,
  WEBSOCKET_PATH,
  WS_CREDENTIAL_PROTOCOL_PREFIX,
  WS_PROTOCOL,
} from "../contract/mod.ts";
import { DEFAULTS, DEV_APP, timingOf } from "./config.ts";

type JsonObject = Record<string, unknown>;

export type ClientFrameType = ClientFrameInput["type"];
export type ServerFrameType = ServerFrame["type"];
type ClientFrameInputOf<T extends ClientFrameType> = Extract<ClientFrameInput, { type: T }>;

/** The prose and examples of one frame's message; the shape comes from the contract. */
export interface FrameDoc<Frame> {
  /** One line, shown next to the message's name. */
  summary: string;
  /** Markdown. */
  description: string;
  /** At least one; each must parse with the frame's schema (tests/asyncapi_test.ts). */
  examples: readonly [FrameExample<Frame>, ...FrameExample<Frame>[]];
}

export interface FrameExample<Frame> {
  name: string;
  summary: string;
  payload: Frame;
}

/** The channel's key in the document; messages and operations point at it. */
const CHANNEL = "socket";
const channelRef = { $ref: `#/channels/${CHANNEL}` };
const messageRef = (type: ClientFrameType | ServerFrameType) => ({
  $ref: `#/channels/${CHANNEL}/messages/${type}`,
});

/** How a browser passes the credential: as a second sub-protocol. */
const credentialProtocols = `\`${WS_PROTOCOL}, ${WS_CREDENTIAL_PROTOCOL_PREFIX}<credential>\``;
const credentialQuery = "`?credential=<credential>`";

/** `unauthorized` → "`unauthorized` (4007)", for the prose. */
const closeCode = (reason: keyof typeof closeCodeTable) =>
  `\`${reason}\` (${closeCodeTable[reason]})`;

// Example values, consistent across the frames of one conversation.
const NOW = 1767225600000;
const CREDENTIAL = "eyJhcHBJZCI6ImRlbW8iLCJ1aWQiOiJzdXBlcmhlcm8xIiwi….Q2hlY2tzdW0…";
const SESSION_ID = "0b9e5c1e-6a8f-4d47-9a53-4f1e2a7c3d10";
const TIMING = timingOf(DEFAULTS);
const EPOCH = "k3Jd9xQe2mPa";
/** `connected` in foreground, the answer most examples build on. */
const CONNECTED = {
  type: "connected",
  id: 1,
  sessionId: SESSION_ID,
  uid: "superhero1",
  mode: "auto",
  appState: "foreground",
  backgroundService: false,
  backgroundDeadline: null,
  serverTime: NOW,
  timing: TIMING,
  stream: { epoch: EPOCH, seq: 42, recovered: false, reason: "no_position", replayed: 0 },
} as const;

/** A message from superhero2 to superhero1, as both see it. */
const TEXT_MESSAGE = {
  kind: "text",
  text: "See you at 6?",
  id: "msg_01",
  from: "superhero2",
  receiverType: "user",
  to: "superhero1",
  clientMessageId: "c-7f3a",
  sentAt: NOW,
} as const;

/** Every client frame: a mapped type, so a frame added to the contract must be documented. */
export const clientFrameDocs: { [T in ClientFrameType]: FrameDoc<ClientFrameInputOf<T>> } = {
  connect: {
    summary: "The handshake: the first frame after the upgrade.",
    description: [
      "Attaches the socket to its session, with the app's state: `appState` (default",
      "`foreground`) and `backgroundService` (iOS configureServices; default `false`). Until it",
      "is answered, nothing else is acted on.",
      "",
      "On a socket opened **without** a credential it must carry `login`: the body of",
      "`POST /v1/apps/{appId}/login` (an auth token from the server API, or `uid` + the app's",
      "dev `authKey`) plus the `appId`. The gateway creates the session, connects it and",
      "answers `connected` with `login` (the user and the new session credential): one round",
      "trip instead of an HTTP login and an upgrade.",
      "",
      "Replies: `connected`; or `error` — `ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE` for a",
      "second `connect`, `ERR_BAD_REQUEST` for `login` on a socket that has a credential (the",
      "socket stays open). A refused login, or a `connect` with neither credential nor `login`",
      `(\`ERROR_USER_NOT_LOGGED_IN\`), answers \`error\` and closes with ${
        closeCode("unauthorized")
      }.`,
      "In auto mode, connecting in background without the background service is closed at",
      `once: ${closeCode("background")}.`,
      "",
      "`resume` is the last stream position the client processed (`{ epoch, seq }`): the",
      "gateway replays every event after it as `message` frames right after `connected`, then",
      "goes live, with no gap, duplicate or reordering between the two. `connected.stream`",
      "says whether it could (`recovered`) and why not. `presence` is whose presence this",
      "connection receives (the client's init settings); left out, none.",
    ].join("\n"),
    examples: [
      {
        name: "resume",
        summary: "Resume after the last event processed, and receive everyone's presence",
        payload: {
          type: "connect",
          id: 1,
          resume: { epoch: EPOCH, seq: 39 },
          presence: { subscriptionType: "allUsers" },
        },
      },
      {
        name: "withCredential",
        summary: "On a socket opened with a credential",
        payload: { type: "connect", id: 1, appState: "foreground", backgroundService: false },
      },
      {
        name: "devLogin",
        summary: "Log in inside the handshake with uid + the dev authKey",
        payload: {
          type: "connect",
          id: 1,
          login: {
            appId: DEV_APP.appId,
            uid: "superhero1",
            authKey: DEV_APP.authKey!,
            mode: "auto",
          },
        },
      },
      {
        name: "tokenLogin",
        summary: "Log in inside the handshake with an auth token from the server API",
        payload: { type: "connect", login: { appId: DEV_APP.appId, authToken: "at_…" } },
      },
    ],
  },
  ping: {
    summary: "A heartbeat (automatic, in foreground) or the app's ping() (manual mode).",
    description: [
      '`source: "heartbeat"` (the default) is the client\'s automatic foreground heartbeat, every',
      '`timing.heartbeatIntervalMs`, in both modes; `source: "app"` is the app calling `ping()`',
      "(manual mode only). In manual mode both count as liveness and restart the background",
      "window; in auto mode a heartbeat never extends a background deadline, and an app ping is",
      "refused with `ERR_NOT_MANUAL_MODE`.",
      "",
      "Reply: `pong`, with the deadline after this ping; or `error`.",
    ].join("\n"),
    examples: [
      { name: "heartbeat", summary: "The client's heartbeat", payload: { type: "ping", id: 7 } },
      {
        name: "appPing",
        summary: "The app's ping() in manual mode",
        payload: { type: "ping", id: "ping-8", source: "app" },
      },
    ],
  },
  app_state: {
    summary: "The app moved to foreground or background.",
    description: [
      "`backgroundService` is iOS configureServices (default `false`).",
      "",
      "Reply: `state`, with the deadline the change set; or `error`. In auto mode, background",
      `without the background service closes the socket at once (${closeCode("background")}); with`,
      `it, one liveness window, then ${
        closeCode("background_timeout")
      }. In manual mode, background`,
      "starts the liveness window: a ping must arrive within it, or",
      `${closeCode("liveness_timeout")}.`,
    ].join("\n"),
    examples: [
      {
        name: "background",
        summary: "To background, with the background service",
        payload: { type: "app_state", id: 3, state: "background", backgroundService: true },
      },
      {
        name: "foreground",
        summary: "Back to foreground",
        payload: { type: "app_state", id: 4, state: "foreground" },
      },
    ],
  },
  disconnect: {
    summary: "Manual mode: the app called disconnect().",
    description: [
      `The gateway answers \`closing\` and closes the socket: ${closeCode("client_disconnect")}, a`,
      "normal close; the client does not reconnect. In auto mode it is refused with",
      "`ERR_NOT_MANUAL_MODE` and the socket stays open.",
    ].join("\n"),
    examples: [{
      name: "disconnect",
      summary: "Disconnect",
      payload: { type: "disconnect", id: 5 },
    }],
  },
  send: {
    summary: "A message from the session's user to a user or a group.",
    description: [
      "The sender is the session's user (there is no `from`). The message is appended to the",
      "stream of every receiver (each member, for a group) and of the sender (for the sender's",
      "other sessions) and is on disk before anyone sees it. `clientMessageId` makes it",
      "idempotent: a retry with the same id (after a reconnect or a timeout) answers with the",
      "first result (`duplicate: true`) and creates nothing.",
      "",
      "Reply: `sent` (at the message's place in the sender's stream); or `error` —",
      "`ERR_UID_NOT_FOUND`, `ERR_GUID_NOT_FOUND`, `ERR_NOT_A_MEMBER` (a group the user is not",
      "in), `ERR_BAD_REQUEST`, `ERR_PAYLOAD_TOO_LARGE`.",
    ].join("\n"),
    examples: [
      {
        name: "toUser",
        summary: "A text to another user",
        payload: {
          type: "send",
          id: 9,
          clientMessageId: "c-7f3a",
          receiverType: "user",
          receiver: "superhero1",
          message: { kind: "text", text: "See you at 6?" },
        },
      },
      {
        name: "toGroup",
        summary: "A custom message to a group",
        payload: {
          type: "send",
          id: 10,
          clientMessageId: "c-7f3b",
          receiverType: "group",
          receiver: "team-red",
          message: { kind: "custom", customType: "poll", data: { question: "Pizza?" } },
        },
      },
    ],
  },
  start_typing: {
    summary: "The user started typing to a user or a group.",
    description: [
      "Relayed at once as `typing_started` to the receiver's connected sessions (each",
      "member's, for a group, except the sender's own); never stored or replayed. The",
      "indicator lasts `timing.typingTimeoutMs` after the last `start_typing`: send it again",
      "while the user keeps typing. No reply unless refused (`error`, as for `send`).",
    ].join("\n"),
    examples: [{
      name: "startTyping",
      summary: "Typing to a user",
      payload: { type: "start_typing", receiverType: "user", receiver: "superhero1" },
    }],
  },
  end_typing: {
    summary: "The user stopped typing.",
    description:
      "Relayed as `typing_ended`. An indicator also ends by itself after the typing timeout, and when the sender's connection closes.",
    examples: [{
      name: "endTyping",
      summary: "Stopped typing to a group",
      payload: { type: "end_typing", receiverType: "group", receiver: "team-red" },
    }],
  },
};

const closeCodeTableMarkdown = [
  "| code | reason | meaning |",
  "| ---- | ------ | ------- |",
  ...closeCodeRows().map((row) => `| ${row.code} | \`${row.reason}\` | ${row.description} |`),
].join("\n");

/** Every server frame: a mapped type, so a frame added to the contract must be documented. */
export const serverFrameDocs: { [T in ServerFrameType]: FrameDoc<ServerFrameOf<T>> } = {
  connected: {
    summary: "The handshake's answer: the session, its mode and timing, the deadline in force.",
    description: [
      "`timing` is what the gateway enforces (liveness window, heartbeat interval, pong",
      "timeout, idle timeout). `backgroundDeadline` is when the gateway closes the connection",
      "unless something extends or cancels it, or `null` in foreground; `serverTime` lets the",
      "client measure its clock offset. When the `connect` frame logged in, `login` is the",
      "login's reply: the user and the session, with the credential for later sockets.",
      "",
      "`stream` is the user's event stream: its `epoch`, its last `seq`, and whether the",
      "`resume` position was `recovered`. When it was, `replayed` `message` frames follow at",
      "once (the events after the position, up to `seq`), then live events. When it was not,",
      "`reason` says why (`no_position`, `epoch_changed`, `ahead_of_stream`, `retention`,",
      "`replay_limit`); live events still start after `seq`, and `GET /v1/session/events`",
      "pages through what is retained of the gap.",
    ].join("\n"),
    examples: [
      {
        name: "connected",
        summary: "Connected in foreground (no position to resume from)",
        payload: CONNECTED,
      },
      {
        name: "recovered",
        summary: "Resumed after seq 39: three events follow, then live ones",
        payload: {
          ...CONNECTED,
          stream: { epoch: EPOCH, seq: 42, recovered: true, replayed: 3 },
        },
      },
      {
        name: "connectedAfterLogin",
        summary: "Connected by a `connect` frame that logged in",
        payload: {
          ...CONNECTED,
          login: {
            user: { uid: "superhero1", name: "Superhero 1", createdAt: NOW - 86_400_000 },
            session: {
              sessionId: SESSION_ID,
              credential: CREDENTIAL,
              mode: "auto",
              createdAt: NOW,
            },
          },
        },
      },
    ],
  },
  pong: {
    summary: "The reply to `ping`.",
    description: "`backgroundDeadline` is the deadline after this ping, or `null` in foreground.",
    examples: [
      {
        name: "foreground",
        summary: "In foreground",
        payload: { type: "pong", id: 7, serverTime: NOW + 15_000, backgroundDeadline: null },
      },
      {
        name: "manualBackground",
        summary: "Manual mode in background: the window starts again",
        payload: {
          type: "pong",
          id: "ping-8",
          serverTime: NOW + 20_000,
          backgroundDeadline: NOW + 50_000,
        },
      },
    ],
  },
  state: {
    summary: "The reply to `app_state`: the state and the deadline it set.",
    description: "`backgroundDeadline` is `null` in foreground.",
    examples: [{
      name: "background",
      summary: "Background with the background service: one window",
      payload: {
        type: "state",
        id: 3,
        appState: "background",
        backgroundService: true,
        backgroundDeadline: NOW + 40_000,
      },
    }],
  },
  error: {
    summary: "A frame was refused: the error payload of the HTTP API, with the frame's `id`.",
    description: [
      "The reply to a frame the gateway refuses (it carries that frame's `id`), or sent on its",
      "own: `ERR_BAD_REQUEST` for a frame that is not JSON, not a known frame, or binary (with",
      "`details.issues` when validation failed); `ERR_TOO_MANY_REQUESTS` over the frame budget",
      `(repeated, the socket is closed: ${closeCode("rate_limited")}); \`ERR_PAYLOAD_TOO_LARGE\``,
      `(then ${closeCode("payload_too_large")}). The socket stays open unless \`closing\` follows.`,
    ].join("\n"),
    examples: [
      {
        name: "notManualMode",
        summary: "An app ping in auto mode",
        payload: {
          type: "error",
          id: "ping-8",
          errorCode: "ERR_NOT_MANUAL_MODE",
          errorDescription: "connect(), disconnect() and ping() are only for manual mode.",
        },
      },
      {
        name: "badFrame",
        summary: "A frame that failed validation",
        payload: {
          type: "error",
          id: 4,
          errorCode: "ERR_BAD_REQUEST",
          errorDescription: "The request failed validation.",
          details: { issues: [{ path: "state", message: "Invalid option" }] },
        },
      },
    ],
  },
  closing: {
    summary: "Sent right before the gateway closes the socket for a rule; the close code follows.",
    description: [
      "Whenever the gateway closes a socket, it says why first: `reason` and the WebSocket",
      "close `code` that follows (also the close frame's reason text). The codes:",
      "",
      closeCodeTableMarkdown,
    ].join("\n"),
    examples: [
      {
        name: "livenessTimeout",
        summary: "Manual mode: no ping within the window",
        payload: {
          type: "closing",
          reason: "liveness_timeout",
          code: closeCodeTable.liveness_timeout,
          errorDescription: "No ping arrived within the liveness window.",
        },
      },
      {
        name: "clientDisconnect",
        summary: "The answer to `disconnect`",
        payload: {
          type: "closing",
          reason: "client_disconnect",
          code: closeCodeTable.client_disconnect,
          errorDescription: "Disconnected by the app.",
        },
      },
    ],
  },
  message: {
    summary: "An event of the user's stream: a message to the user, to one of their groups, " +
      "or one the user sent from another session.",
    description: [
      "Written to every connected session of each receiver once it is on disk, and replayed",
      "after `connected` to a `connect` that resumes. `seq` is the event's place in the user's",
      "stream: 1, 2, 3, … with no gaps, across restarts and crashes too. A client stores the",
      "last `seq` it processed (with the stream's `epoch`) and resumes from it.",
      "`receiverType` and `to` name the receiver: a uid, or a group's guid.",
    ].join("\n"),
    examples: [
      {
        name: "text",
        summary: "A text from another user",
        payload: { type: "message", seq: 42, message: TEXT_MESSAGE },
      },
      {
        name: "group",
        summary: "A message to one of the user's groups",
        payload: {
          type: "message",
          seq: 43,
          message: {
            kind: "text",
            text: "Standup in 5",
            id: "msg_03",
            from: "superhero3",
            receiverType: "group",
            to: "team-red",
            clientMessageId: "c-91",
            sentAt: NOW + 500,
          },
        },
      },
      {
        name: "custom",
        summary: "The app's own JSON object, from the app's server",
        payload: {
          type: "message",
          seq: 44,
          message: {
            kind: "custom",
            customType: "order_status",
            data: { orderId: "o-1001", status: "shipped" },
            id: "msg_02",
            from: null,
            receiverType: "user",
            to: "superhero1",
            sentAt: NOW + 1_000,
          },
        },
      },
    ],
  },
  sent: {
    summary: "The sending session's own message, at its place in the stream.",
    description: [
      "The answer to `send` (with its `id`), written when the message is on disk, in stream",
      "order: the sending session gets this instead of a `message` frame (a message is not",
      "echoed to the session that sent it). A message the session sent over HTTP shows up",
      "the same way, without an `id`. `duplicate: true` answers a retry.",
    ].join("\n"),
    examples: [{
      name: "sent",
      summary: "superhero2's message, in superhero2's stream",
      payload: { type: "sent", id: 9, seq: 17, message: TEXT_MESSAGE, duplicate: false },
    }],
  },
  typing_started: {
    summary: "Someone started typing to this user or to one of their groups (live only).",
    description:
      "It lasts `timing.typingTimeoutMs` unless renewed; `typing_ended` follows when it ends.",
    examples: [{
      name: "typingStarted",
      summary: "superhero2 is typing",
      payload: {
        type: "typing_started",
        from: "superhero2",
        receiverType: "user",
        receiver: "superhero1",
        at: NOW,
      },
    }],
  },
  typing_ended: {
    summary: "A typing indicator ended.",
    description: "By `end_typing`, by the typing timeout, or because the sender's connection " +
      "closed.",
    examples: [{
      name: "typingEnded",
      summary: "superhero2 stopped typing",
      payload: {
        type: "typing_ended",
        from: "superhero2",
        receiverType: "user",
        receiver: "superhero1",
        at: NOW + 2_000,
      },
    }],
  },
  presence: {
    summary: "Presence changes of the users this connection subscribes to.",
    description: [
      "Per the `presence` subscription of the `connect` frame: `allUsers`, `roles` (users",
      "with one of the roles, set by the server API), `friends` (the user's friend list, set",
      "by the server API) or `none`. A user is online while at least one of their sessions",
      "holds a connection; offline is published for every kind of close, a deadline or a",
      "crash discovered at restart included. Changes are coalesced per connection: at most",
      "one frame per `timing.presenceIntervalMs`, each user once with their latest state, so",
      "n users coming online together cost O(n) frames, not O(n²).",
    ].join("\n"),
    examples: [{
      name: "presence",
      summary: "Two users came online, one went offline",
      payload: {
        type: "presence",
        users: [
          { uid: "superhero2", online: true, at: NOW },
          { uid: "superhero3", online: true, at: NOW + 40 },
          { uid: "superhero4", online: false, at: NOW + 120 },
        ],
      },
    }],
  },
};

/** The close-code table of the contract, by code, with what each reason means. */
export function closeCodeRows(): { code: number; reason: string; description: string }[] {
  return closeReasons
    .map((reason) => ({
      code: closeCodeTable[reason],
      reason,
      description: closeReasonDescriptions[reason],
    }))
    .sort((a, b) => a.code - b.code);
}

/** `connect` → `ConnectFrame`, `app_state` → `AppStateFrame`: the payload schema's name. */
export function frameSchemaName(type: string): string {
  return type.split("_").map((w) => w[0].toUpperCase() + w.slice(1)).join("") + "Frame";
}

/**
 * zod's JSON Schema of a frame, as AsyncAPI's default schema format (a superset of draft-07).
 * The parts the contract names (`.meta({ id })`) become shared components: their `$ref`s are
 * pointed at `#/components/schemas`, so that every frame using them refers to one definition.
 */
function frameJsonSchema(
  schema: z.ZodType,
  io: "input" | "output",
  shared: Record<string, JsonObject>,
): JsonObject {
  const { $schema: _, definitions, ...root } = z.toJSONSchema(schema, {
    io,
    target: "draft-7",
    unrepresentable: "any",
  }) as JsonObject & { definitions?: Record<string, JsonObject> };
  for (const [id, definition] of Object.entries(definitions ?? {})) {
    const component = toComponentRefs(definition) as JsonObject;
    const known = shared[id];
    // One name, one shape: the input and output forms of a named part must not differ.
    if (known !== undefined && JSON.stringify(known) !== JSON.stringify(component)) {
      throw new Error(`schema '${id}' differs between client and server frames`);
    }
    shared[id] = component;
  }
  return toComponentRefs(root) as JsonObject;
}

function toComponentRefs(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toComponentRefs);
  if (typeof value !== "object" || value === null) return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, inner]) => [
      key,
      key === "$ref" && typeof inner === "string"
        ? inner.replace(/^#\/definitions\//, "#/components/schemas/")
        : toComponentRefs(inner),
    ]),
  );
}

function sortedByKey<T>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => a.localeCompare(b)));
}

/** The document's introduction: what holds for every frame, opening, handshake and closing. */
function protocolOverview(): string {
  return [
    "The gateway's WebSocket: one socket per session, one JSON text message per frame, both",
    "ways (binary frames are refused). The HTTP API (login, sessions, the server API) is",
    "described by the OpenAPI document: [/docs](/docs), [/openapi.json](/openapi.json).",
    "",
    "This document describes the gateway: its operations *receive* the client's frames (and",
    "reply to them) and *send* its own. A client frame may carry an `id`; its reply,",
    "or the `error` it causes, carries the same `id`.",
    "",
    "### Opening",
    "",
    `Open \`${WEBSOCKET_PATH}\` in one of three ways:`,
    "",
    `1. ${credentialQuery}: the session credential from login (\`session.credential\``,
    "   of `POST /v1/apps/{appId}/login`).",
    `2. The sub-protocols ${credentialProtocols}, for browsers, which cannot set headers on`,
    `   a WebSocket. The gateway echoes only \`${WS_PROTOCOL}\`, never the credential.`,
    "3. No credential: the `connect` frame carries `login`, and the `connected` answer carries",
    "   the new session's credential for later sockets.",
    "",
    "An unknown, revoked or expired credential gets an `error` frame",
    `(\`AUTH_ERR_AUTH_TOKEN_NOT_FOUND\`), then the close ${closeCode("unauthorized")}.`,
    "",
    "### The handshake",
    "",
    "The first frame must be `connect`; until `connected` answers it, any other frame gets",
    "`ERR_BAD_REQUEST`. A socket that sends no `connect` within the handshake timeout is",
    `closed: ${closeCode("handshake_timeout")}.`,
    "",
    "### Liveness",
    "",
    "Any frame counts as activity; a socket that sends nothing (not even a heartbeat) for",
    `\`timing.idleTimeoutMs\` is closed: ${
      closeCode("idle_timeout")
    }. What background means depends`,
    "on the session's mode: see `app_state` and `ping`.",
    "",
    "### Closing",
    "",
    "Before the gateway closes a socket it sends `closing` with the reason; the close code",
    "follows. The codes (also in `x-close-codes` on the channel):",
    "",
    closeCodeTableMarkdown,
  ].join("\n");
}

/** Builds the AsyncAPI 3.0.0 document of the gateway's WebSocket protocol. */
export function buildAsyncApiDocument(): JsonObject {
  const frameSchemas: Record<string, JsonObject> = {};
  const sharedSchemas: Record<string, JsonObject> = {};
  const messages: Record<string, JsonObject> = {};
  const sides: {
    union: typeof ClientFrameSchema | typeof ServerFrameSchema;
    io: "input" | "output";
    docs: Readonly<Record<string, FrameDoc<unknown>>>;
    direction: string;
  }[] = [
    { union: ClientFrameSchema, io: "input", docs: clientFrameDocs, direction: "client → gateway" },
    {
      union: ServerFrameSchema,
      io: "output",
      docs: serverFrameDocs,
      direction: "gateway → client",
    },
  ];
  for (const { union, io, docs, direction } of sides) {
    for (const option of union.options) {
      const type = option.shape.type.value;
      const doc = docs[type];
      const name = frameSchemaName(type);
      frameSchemas[name] = frameJsonSchema(option, io, sharedSchemas);
      messages[type] = {
        name: type,
        title: type,
        summary: doc.summary,
        description: doc.description,
        contentType: "application/json",
        tags: [{ name: direction }],
        payload: { $ref: `#/components/schemas/${name}` },
        // Frames that may carry an `id` get it back on their reply.
        ...("id" in option.shape
          ? { correlationId: { $ref: "#/components/correlationIds/frameId" } }
          : {}),
        examples: doc.examples.map((e) => ({
          name: e.name,
          summary: e.summary,
          payload: e.payload,
        })),
      };
    }
  }

  const replyOf = (...types: ServerFrameType[]) => ({
    channel: channelRef,
    messages: types.map(messageRef),
  });
  const operations: Record<string, JsonObject> = {
    receiveConnect: {
      action: "receive",
      channel: channelRef,
      title: "Client → gateway: connect",
      summary: "The handshake; the gateway answers `connected`, or `error`.",
      messages: [messageRef("connect")],
      reply: replyOf("connected", "error"),
    },
    receivePing: {
      action: "receive",
      channel: channelRef,
      title: "Client → gateway: ping",
      summary: "A heartbeat or the app's ping; the gateway answers `pong`, or `error`.",
      messages: [messageRef("ping")],
      reply: replyOf("pong", "error"),
    },
    receiveAppState: {
      action: "receive",
      channel: channelRef,
      title: "Client → gateway: app_state",
      summary: "Foreground or background; the gateway answers `state`, or `error`.",
      messages: [messageRef("app_state")],
      reply: replyOf("state", "error"),
    },
    receiveDisconnect: {
      action: "receive",
      channel: channelRef,
      title: "Client → gateway: disconnect",
      summary: "Manual mode; the gateway answers `closing` and closes, or `error`.",
      messages: [messageRef("disconnect")],
      reply: replyOf("closing", "error"),
    },
    receiveSend: {
      action: "receive",
      channel: channelRef,
      title: "Client → gateway: send",
      summary: "A message from the user; the gateway answers `sent`, or `error`.",
      messages: [messageRef("send")],
      reply: replyOf("sent", "error"),
    },
    receiveTyping: {
      action: "receive",
      channel: channelRef,
      title: "Client → gateway: start_typing, end_typing",
      summary: "Typing indicators, relayed live; no reply unless refused (`error`).",
      messages: [messageRef("start_typing"), messageRef("end_typing")],
    },
    sendMessage: {
      action: "send",
      channel: channelRef,
      title: "Gateway → client: message",
      summary: "An event of the user's stream: live, or replayed after `connected`.",
      messages: [messageRef("message")],
    },
    sendSent: {
      action: "send",
      channel: channelRef,
      title: "Gateway → client: sent",
      summary: "The session's own message (sent over HTTP), at its place in the stream.",
      messages: [messageRef("sent")],
    },
    sendTyping: {
      action: "send",
      channel: channelRef,
      title: "Gateway → client: typing_started, typing_ended",
      summary: "Typing indicators of other users (live only).",
      messages: [messageRef("typing_started"), messageRef("typing_ended")],
    },
    sendPresence: {
      action: "send",
      channel: channelRef,
      title: "Gateway → client: presence",
      summary: "Coalesced presence changes of the subscribed users.",
      messages: [messageRef("presence")],
    },
    sendClosing: {
      action: "send",
      channel: channelRef,
      title: "Gateway → client: closing",
      summary: "Why the gateway closes the socket; the close code follows.",
      messages: [messageRef("closing")],
    },
    sendError: {
      action: "send",
      channel: channelRef,
      title: "Gateway → client: error",
      summary: "A refusal that answers no particular frame (a flood, a frame that is not JSON).",
      messages: [messageRef("error")],
    },
  };

  return {
    asyncapi: "3.0.0",
    info: {
      title: "Liveness gateway — WebSocket protocol",
      version: denoJson.version,
      description: protocolOverview(),
    },
    defaultContentType: "application/json",
    servers: {
      gateway: {
        host: "{host}",
        protocol: "ws",
        title: "A gateway",
        description: [
          "Plain `ws` as the gateway itself listens (`HOST`, `PORT`); `wss` behind a TLS",
          "proxy. Authenticate with the session credential from login, in the query or as a",
          `sub-protocol; or open the socket without one and log in inside the \`connect\` frame`,
          "(that one is part of the frame, not of the transport, so it is no security scheme).",
        ].join("\n"),
        variables: {
          host: {
            default: "localhost:8000",
            description: "Host and port of the gateway (`deno task serve` listens on :8000).",
          },
        },
        security: [
          { $ref: "#/components/securitySchemes/credentialQuery" },
          { $ref: "#/components/securitySchemes/credentialSubprotocol" },
        ],
      },
    },
    channels: {
      [CHANNEL]: {
        address: WEBSOCKET_PATH,
        title: "The session's WebSocket",
        description: "One socket per session. Opening it, the handshake and the close codes: " +
          "see the introduction at the top.",
        messages: Object.fromEntries(
          Object.keys(messages).map((type) => [type, { $ref: `#/components/messages/${type}` }]),
        ),
        bindings: {
          ws: {
            method: "GET",
            query: {
              type: "object",
              properties: {
                credential: {
                  type: "string",
                  description: "The session credential from login; or use the sub-protocol.",
                },
              },
            },
            headers: {
              type: "object",
              properties: {
                "Sec-WebSocket-Protocol": {
                  type: "string",
                  description: `\`${WS_PROTOCOL}\`, and for browsers the credential as a second` +
                    ` sub-protocol: ${credentialProtocols}. The gateway answers \`${WS_PROTOCOL}\`.`,
                  examples: [`${WS_PROTOCOL}, ${WS_CREDENTIAL_PROTOCOL_PREFIX}<credential>`],
                },
              },
            },
            bindingVersion: "0.1.0",
          },
        },
        "x-close-codes": closeCodeRows(),
      },
    },
    operations,
    components: {
      schemas: { ...frameSchemas, ...sortedByKey(sharedSchemas) },
      messages,
      securitySchemes: {
        credentialQuery: {
          type: "httpApiKey",
          name: "credential",
          in: "query",
          description: `The session credential from login, as ${credentialQuery}.`,
        },
        credentialSubprotocol: {
          type: "httpApiKey",
          name: "Sec-WebSocket-Protocol",
          in: "header",
          description: `The session credential as a sub-protocol: ${credentialProtocols}` +
            " (browsers, which cannot set other headers on a WebSocket).",
        },
      },
      correlationIds: {
        frameId: {
          description: "The frame's optional `id`, echoed on its reply or error.",
          location: "$message.payload#/id",
        },
      },
    },
  };
}
