/**
 * Property-based fuzzing of a gateway process (fast-check), in every CI run: generated and
 * mutated WebSocket frames (text before the handshake with and without a credential, text after
 * it in auto and manual mode, binary and control frames) and HTTP requests to every route of the
 * contract (generated and mutated bodies, path params, methods, headers, content types). It
 * asserts that
 *
 * 1. the gateway only answers with the contract: every frame parses with `ServerFrameSchema`,
 *    every HTTP answer is a success of its route or the error payload with the status of its
 *    code, nothing is `ERR_INTERNAL` (an unexpected exception), no answer holds a stack trace or
 *    echoes internals, and the process logs no error;
 * 2. the process stays up (`alive()` and `/healthz` after each phase);
 * 3. its RSS returns near the baseline measured after a warm-up;
 * 4. a well-behaved client, connected meanwhile from its own login, gets every pong in time.
 *
 * Each fast-check run is a batch (frames on one fresh socket, or HTTP requests on a few
 * keep-alive connections), so that inputs are pipelined and a failure still shrinks to a
 * minimal batch. Within a batch the replies are matched to the frames in order (one reply per
 * frame, carrying the frame's id when the contract lets it be echoed); frames that end a socket
 * (a valid `connect` before the handshake, a `disconnect`, a frame over MAX_FRAME_BYTES, …) only
 * come last in a batch, so that the frames before them are all processed.
 *
 * Size and time: ~125 000 inputs (~100 000 frames, ~25 000 HTTP requests). On a 2-core machine
 * the file takes ~40-47 s: ~28 s of fuzzing, then 7-13 s for the idle gateway to give its memory
 * back (see RSS_GROWTH_BOUND); ~64 s with both cores kept busy by other work. Throughput: ~5 000
 * text frames/s (a fresh socket per batch), ~10 000 binary frames/s, ~3 500 HTTP requests/s; the
 * test process (generating, masking, checking every reply with zod) and the gateway use about
 * the same CPU. The file ends with the gateway bugs this test found, as minimal cases.
 *
 * Replay: the run prints `fuzz seed <n>` first; `FUZZ_SEED=<n>` generates the same inputs again
 * (a failure also names fast-check's own seed and path of the failing phase). `FUZZ_SCALE=0.1`
 * runs a tenth of the inputs, to try a change quickly.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import type { AppRoute } from "@ts-rest/core";
import {
  ClientFrameSchema,
  closeCodeTable,
  contract,
  type ErrorCode,
  ErrorPayloadSchema,
  FrameIdSchema,
  type Mode,
  type ServerFrame,
  ServerFrameSchema,
  statusOf,
  WEBSOCKET_PATH,
} from "../contract/mod.ts";
import { DEFAULTS, DEV_APP } from "../gateway/config.ts";
import { startTestGateway } from "./support/harness.ts";
import { delay, devLogin, GatewayProcess } from "./support/process.ts";
import {
  clientFrame,
  closeCodeOf,
  OPCODE,
  type RawEnd,
  type RawFrame,
  RawWebSocket,
  textFrame,
  textOf,
  writeAll,
} from "./support/raw_ws.ts";

const SCALE = Number(Deno.env.get("FUZZ_SCALE") ?? 1);
/** One seed for the whole run (each property gets its own, derived from it); printed first. */
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 31));
/** The warm-up before the RSS baseline (compiled code, first allocations), in each phase's runs. */
const WARM_UP = 0.05;
/** Inputs per run that the test must reach (at FUZZ_SCALE=1). */
const MIN_INPUTS = 100_000;

const MAX_FRAME = DEFAULTS.maxFrameBytes;
const MAX_BODY = DEFAULTS.maxBodyBytes;
const MB = 1024 * 1024;
/**
 * RSS growth allowed between the baseline (after the warm-up) and the end, once the gateway has
 * been idle long enough to give memory back. Under the fuzzing the gateway's RSS climbs by
 * ~100-150 MB (V8 grows its heap under a high allocation rate; heap in use swings by 60 MB
 * between collections), and stays there for a while once idle: V8's memory reducer collects
 * some 7-25 s later, and RSS falls back to within ~10 MB of the baseline (measured: +3 to +9 MB).
 * Sampled without waiting for that, the same two points differ by 25-45 MB of heap that is merely
 * not given back yet. What a leak retains cannot be given back: 64 MB is past the noise with
 * margin, and a leak of ~500 bytes per input (one small object per frame or request), or ~40 KB
 * per socket opened (~1 600), over ~125 000 inputs stays above it.
 */
const RSS_GROWTH_BOUND = 64 * MB;
/** How long the gateway may take, idle, to give its memory back. */
const RSS_SETTLE_MS = 40_000;
/** The well-behaved client pings this often and wants each pong within PONG_WITHIN_MS. */
const PING_EVERY_MS = 100;
const PONG_WITHIN_MS = 2_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** How `ws` (Buffer#toString) decodes a text frame: a leading BOM is kept. */
const frameDecoder = new TextDecoder("utf-8", { ignoreBOM: true });
const SEED_UIDS = ["superhero1", "superhero2", "superhero3", "superhero4"];
/** The well-behaved client's user: made for this test, never named by a generated input. */
const CALM_UID = "calm-client";

// =============================================================================================
// JSON with holes: objects as entry lists (duplicate keys, `__proto__`), raw tokens (NaN,
// 1e400, truncated text), and references to values known only at send time.

/** A session credential, an auth token, a uid, or the uid an auth token is for. */
type RefKind = "cred" | "token" | "uid" | "tokenUid";
type J =
  | { k: "lit"; v: null | boolean | number | string }
  | { k: "raw"; text: string }
  | { k: "ref"; ref: RefKind; i: number }
  | { k: "arr"; items: J[] }
  | { k: "obj"; entries: Array<[string, J]> };

const lit = (v: null | boolean | number | string): J => ({ k: "lit", v });
const raw = (text: string): J => ({ k: "raw", text });
const obj = (entries: Array<[string, J]>): J => ({ k: "obj", entries });

type Resolve = (ref: RefKind, i: number) => string;

function render(j: J, resolve: Resolve): string {
  switch (j.k) {
    case "lit":
      return typeof j.v === "number" && !Number.isFinite(j.v) ? String(j.v) : JSON.stringify(j.v);
    case "raw":
      return j.text;
    case "ref":
      return JSON.stringify(resolve(j.ref, j.i));
    case "arr":
      return `[${j.items.map((item) => render(item, resolve)).join(",")}]`;
    case "obj":
      return `{${
        j.entries.map(([key, value]) => `${JSON.stringify(key)}:${render(value, resolve)}`).join(
          ",",
        )
      }}`;
  }
}

function fromValue(value: unknown): J {
  if (value === null || typeof value === "boolean" || typeof value === "string") return lit(value);
  if (typeof value === "number") return lit(value);
  if (Array.isArray(value)) return { k: "arr", items: value.map(fromValue) };
  if (typeof value === "object") {
    return obj(Object.entries(value).map(([key, v]) => [key, fromValue(v)]));
  }
  return lit(null);
}

/** Values the generators refer to; they change while the HTTP phase runs. */
class Pools {
  readonly uids: string[] = [...SEED_UIDS];
  readonly tokens: Array<{ token: string; uid: string }> = [];
  readonly creds: string[] = [];
  resolve: Resolve = (ref, i) => {
    if (ref === "token" || ref === "tokenUid") {
      const entry = this.tokens[i % Math.max(1, this.tokens.length)];
      return entry === undefined ? "none" : ref === "token" ? entry.token : entry.uid;
    }
    const list = ref === "uid" ? this.uids : this.creds;
    return list.length === 0 ? "none" : list[i % list.length];
  };
}
const pools = new Pools();

// =============================================================================================
// arbitraries: values

const printable = (max: number, min = 0) =>
  fc.string({
    unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
    minLength: min,
    maxLength: max,
  });
const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));

const weirdString: fc.Arbitrary<string> = fc.oneof(
  { withCrossShrink: true },
  { weight: 4, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 3, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  {
    weight: 2,
    arbitrary: fc.array(fc.oneof(loneSurrogate, fc.string({ unit: "binary", maxLength: 3 })), {
      maxLength: 8,
    }).map((parts) => parts.join("")),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "",
      " ",
      "\u0000",
      "\u2028\u2029",
      "\ufeff",
      "💥💥",
      "../../../etc/passwd",
      "%00",
      "%ff",
      "${jndi:ldap://x/a}",
      "<script>alert(1)</script>",
      "\\u0000",
      "null",
      "undefined",
      "NaN",
      "__proto__",
      "constructor",
      "foreground ",
      "FOREGROUND",
      "heartbeat\u0000",
      "a".repeat(64),
      "a".repeat(65),
    ),
  },
  { weight: 1, arbitrary: fc.integer({ min: 65, max: 3_000 }).map((n) => "x".repeat(n)) },
  {
    weight: 1,
    arbitrary: fc.tuple(
      fc.integer({ min: 1, max: 1_200 }),
      fc.constantFrom("é", "€", "💥", "\ud800"),
    )
      .map(([n, c]) => c.repeat(n)),
  },
);

const weirdNumber: fc.Arbitrary<J> = fc.oneof(
  fc.constantFrom(
    raw("NaN"),
    raw("Infinity"),
    raw("-Infinity"),
    raw("1e400"),
    raw("-1e400"),
    raw("1e-400"),
    raw("-0"),
    raw("0x10"),
    raw("01"),
    raw("1."),
    raw(".5"),
    raw("+1"),
    raw("9007199254740993"),
    raw("123456789012345678901234567890"),
    lit(2 ** 53),
    lit(2 ** 53 + 2),
    lit(-(2 ** 53)),
    lit(2 ** 64),
    lit(Number.MAX_VALUE),
    lit(-Number.MAX_VALUE),
    lit(Number.MIN_VALUE),
    lit(1.5),
    lit(-1),
    lit(0),
  ),
  fc.integer().map(lit),
  fc.double().map((d) => Number.isFinite(d) ? lit(d) : raw(String(d))),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map((b) => raw(String(b))),
);

const weirdKey: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "__proto__",
    "constructor",
    "prototype",
    "toString",
    "valueOf",
    "hasOwnProperty",
    "type",
    "id",
    "login",
    "state",
    "source",
    "appState",
    "backgroundService",
    "mode",
    "uid",
    "authKey",
    "authToken",
    "appId",
    "",
    " ",
    "\u0000",
    "ID",
    "Type",
  ),
  fc.string({ maxLength: 16 }),
);

/** Nesting far deeper than any parser should recurse, kept under the frame size. */
const deepNest: fc.Arbitrary<J> = fc.tuple(fc.integer({ min: 2, max: 3_800 }), fc.boolean()).map((
  [depth, arrays],
) =>
  arrays
    ? raw("[".repeat(depth) + "]".repeat(depth))
    : raw('{"a":'.repeat(Math.min(depth, 1_300)) + "1" + "}".repeat(Math.min(depth, 1_300)))
);

const weirdValue: fc.Arbitrary<J> = fc.letrec<{ value: J }>((tie) => ({
  value: fc.oneof(
    { maxDepth: 3 },
    { weight: 3, arbitrary: weirdString.map(lit) },
    { weight: 3, arbitrary: weirdNumber },
    { weight: 2, arbitrary: fc.constantFrom(lit(null), lit(true), lit(false)) },
    {
      weight: 1,
      arbitrary: fc.array(tie("value"), { maxLength: 4 }).map((items): J => ({ k: "arr", items })),
    },
    { weight: 1, arbitrary: fc.array(fc.tuple(weirdKey, tie("value")), { maxLength: 4 }).map(obj) },
    { weight: 1, arbitrary: deepNest },
  ),
})).value;

// =============================================================================================
// arbitraries: client frames, valid (from the contract's shapes) and mutated

const Field = (key: string, arb: fc.Arbitrary<J>, optional = false) => ({ key, arb, optional });
type FieldSpec = ReturnType<typeof Field>;

/** An object with these fields in order, optional ones sometimes left out. */
function objectOf(fields: FieldSpec[]): fc.Arbitrary<J> {
  return fc.tuple(
    ...fields.map((f) =>
      f.optional ? fc.option(f.arb, { nil: undefined }) : f.arb.map((v): J | undefined => v)
    ),
  ).map((values) =>
    obj(fields.flatMap((f, i): Array<[string, J]> => {
      const v = values[i];
      return v === undefined ? [] : [[f.key, v]];
    }))
  );
}

const frameId: fc.Arbitrary<J> = fc.oneof(
  fc.integer().map(lit),
  fc.maxSafeInteger().map(lit),
  fc.string({ maxLength: 64 }).map(lit),
  // The limit counts code points (zod's count), not UTF-16 code units: 33 and 64 emoji are
  // valid ids, 65 are not.
  fc.constantFrom("💥".repeat(33), "💥".repeat(64), "💥".repeat(65)).map(lit),
);
const appState = fc.constantFrom("foreground", "background").map(lit);
const mode = fc.constantFrom("auto", "manual").map(lit);
const validUid: fc.Arbitrary<J> = fc.oneof(
  { weight: 3, arbitrary: fc.nat().map((i): J => ({ k: "ref", ref: "uid", i })) },
  {
    weight: 1,
    arbitrary: fc.stringMatching(/^[A-Za-z0-9_.@-]{1,24}$/).filter((u) => u !== CALM_UID).map(lit),
  },
);
const appId: fc.Arbitrary<J> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(lit(DEV_APP.appId)) },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/).map(lit) },
);
const authKey: fc.Arbitrary<J> = fc.oneof(
  fc.constant(lit(DEV_APP.authKey!)),
  fc.string({ minLength: 1, maxLength: 40 }).map(lit),
);
const authToken: fc.Arbitrary<J> = fc.oneof(
  fc.nat().map((i): J => ({ k: "ref", ref: "token", i })),
  fc.string({ minLength: 1, maxLength: 60 }).map(lit),
);

const tokenLoginFields = [Field("authToken", authToken), Field("mode", mode, true)];
const keyLoginFields = [
  Field("uid", validUid),
  Field("authKey", authKey),
  Field("mode", mode, true),
];
const socketLogin = fc.oneof(
  objectOf([...tokenLoginFields, Field("appId", appId)]),
  objectOf([...keyLoginFields, Field("appId", appId)]),
);

const validFrames = {
  connect: objectOf([
    Field("type", fc.constant(lit("connect"))),
    Field("id", frameId, true),
    Field("appState", appState, true),
    Field("backgroundService", fc.boolean().map(lit), true),
    Field("login", socketLogin, true),
  ]),
  ping: objectOf([
    Field("type", fc.constant(lit("ping"))),
    Field("id", frameId, true),
    Field("source", fc.constantFrom("heartbeat", "app").map(lit), true),
  ]),
  app_state: objectOf([
    Field("type", fc.constant(lit("app_state"))),
    Field("id", frameId, true),
    Field("state", appState),
    Field("backgroundService", fc.boolean().map(lit), true),
  ]),
  disconnect: objectOf([Field("type", fc.constant(lit("disconnect"))), Field("id", frameId, true)]),
};
const validFrame: fc.Arbitrary<J> = fc.oneof(
  { weight: 2, arbitrary: validFrames.connect },
  { weight: 4, arbitrary: validFrames.ping },
  { weight: 2, arbitrary: validFrames.app_state },
  { weight: 1, arbitrary: validFrames.disconnect },
);

type JMutation =
  | { op: "drop"; at: number }
  | { op: "add"; key: string; value: J }
  | { op: "set"; at: number; value: J }
  | { op: "dup"; at: number; value: J }
  | { op: "rename"; at: number; key: string };
type TextMutation =
  | { op: "truncate"; at: number }
  | { op: "splice"; at: number; text: string }
  | { op: "wrap"; before: string; after: string };

const jMutation: fc.Arbitrary<JMutation> = fc.oneof(
  fc.record({ op: fc.constant("drop" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("add" as const), key: weirdKey, value: weirdValue }),
  fc.record({ op: fc.constant("set" as const), at: fc.nat(), value: weirdValue }),
  fc.record({ op: fc.constant("dup" as const), at: fc.nat(), value: weirdValue }),
  fc.record({ op: fc.constant("rename" as const), at: fc.nat(), key: weirdKey }),
);
const textMutation: fc.Arbitrary<TextMutation> = fc.oneof(
  fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({
    op: fc.constant("splice" as const),
    at: fc.nat(),
    text: fc.oneof(weirdString, fc.constantFrom(",", "}", "]", '"', "\\", ":", "{", "[")),
  }),
  fc.constantFrom(
    ["[", "]"],
    ['"', '"'],
    ["[", ",1]"],
    ['{"frame":', "}"],
    ["\ufeff", ""],
    [" \n\t", "\r\n"],
    ["", "x"],
    ["", ","],
    ["", "{}"],
    ["/*", "*/"],
  ).map(([before, after]) => ({ op: "wrap" as const, before, after })),
);

function applyJ(frame: J, m: JMutation): J {
  if (frame.k !== "obj") return frame;
  const entries = [...frame.entries];
  if (m.op === "add") return obj([...entries, [m.key, m.value]]);
  if (entries.length === 0) return frame;
  const at = m.at % entries.length;
  switch (m.op) {
    case "drop":
      entries.splice(at, 1);
      break;
    case "set":
      entries[at] = [entries[at][0], m.value];
      break;
    case "dup":
      entries.push([entries[at][0], m.value]);
      break;
    case "rename":
      entries[at] = [m.key, entries[at][1]];
      break;
  }
  return obj(entries);
}

function applyText(text: string, m: TextMutation): string {
  switch (m.op) {
    case "truncate":
      return text.slice(0, m.at % Math.max(1, text.length));
    case "splice": {
      const at = m.at % (text.length + 1);
      return text.slice(0, at) + m.text + text.slice(at);
    }
    case "wrap":
      return m.before + text + m.after;
  }
}

/** A valid frame with fields dropped, added, retyped, renamed or duplicated, then its text cut. */
const mutatedFrame: fc.Arbitrary<string> = fc.tuple(
  validFrame,
  fc.array(jMutation, { minLength: 1, maxLength: 3 }),
  fc.option(textMutation, { nil: undefined, freq: 3 }),
).map(([frame, jms, tm]) => {
  const text = render(jms.reduce(applyJ, frame), pools.resolve);
  return tm === undefined ? text : applyText(text, tm);
});

const garbageText: fc.Arbitrary<string> = fc.oneof(
  { withCrossShrink: true },
  fc.uint8Array({ maxLength: 300 }).map((bytes) => decoder.decode(bytes)),
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? "null"),
  weirdValue.map((j) => render(j, pools.resolve)),
  fc.constantFrom(
    "",
    " ",
    "{",
    "}",
    "[]",
    "{}",
    "null",
    "true",
    "0",
    '"ping"',
    '[{"type":"ping"}]',
    '{"type":"ping"',
    "\ufeff{}",
    "{'type':'ping'}",
    '{"type":"ping",}',
    '{"type":"ping"}\u0000',
    '{"type":"ping"}{"type":"ping"}',
    '{"type":"PING"}',
    '{"type":" ping"}',
    '{"type":null}',
    '{"type":["ping"]}',
    '{"type":"teleport","id":1}',
    '{"type":"ping","type":"connect"}',
    '{"__proto__":{"type":"ping"}}',
    '{"constructor":{"prototype":{"type":"ping"}},"type":"ping"}',
  ),
);

/** A frame padded to about `size` bytes (ASCII or 3-byte characters). */
function padded(size: number, wide: boolean): string {
  const head = '{"type":"ping","pad":"';
  const tail = '"}';
  let room = size - head.length - tail.length;
  let pad = "";
  if (wide) {
    pad = "€".repeat(Math.max(0, Math.floor(room / 3)));
    room -= pad.length * 3;
  }
  return head + pad + "x".repeat(Math.max(0, room)) + tail;
}
const nearLimit = fc.tuple(fc.integer({ min: MAX_FRAME - 8, max: MAX_FRAME + 8 }), fc.boolean())
  .map(([size, wide]) => padded(size, wide));
const overLimit: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(fc.integer({ min: MAX_FRAME + 1, max: 3 * MAX_FRAME }), fc.boolean()).map((
    [size, wide],
  ) => padded(size, wide)),
  // Fewer characters than the limit, more bytes.
  fc.integer({ min: Math.ceil(MAX_FRAME / 3) + 1, max: MAX_FRAME - 100 }).map((n) =>
    JSON.stringify({ type: "ping", id: "€".repeat(n) })
  ),
);

const anyText: fc.Arbitrary<string> = fc.oneof(
  { withCrossShrink: true },
  { weight: 3, arbitrary: validFrame.map((j) => render(j, pools.resolve)) },
  { weight: 5, arbitrary: mutatedFrame },
  { weight: 2, arbitrary: garbageText },
  { weight: 1, arbitrary: nearLimit },
);

/** Bytes from a small PRNG: random payloads of any length without generating them byte by byte. */
function prngBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
const randomBytes = (max: number) =>
  fc.tuple(
    fc.oneof(fc.nat(64), fc.nat(1_024), fc.nat(max)),
    fc.integer(),
  ).map(([n, seed]) => prngBytes(n, seed));

// =============================================================================================
// WebSocket inputs, and how the gateway must answer each

/**
 * A text frame may be sent as a fragmented message (cut at these byte offsets, maybe inside a
 * character), with a control ping between its first two fragments.
 */
interface Fragments {
  cuts: number[];
  pingInside: boolean;
}
type WsInput =
  | { kind: "text"; text: string; fragments?: Fragments }
  | { kind: "binary"; bytes: Uint8Array }
  | { kind: "ping"; bytes: Uint8Array }
  | { kind: "badUtf8"; bytes: Uint8Array };

function wireOf(input: WsInput): Uint8Array {
  switch (input.kind) {
    case "text":
      return input.fragments === undefined
        ? textFrame(input.text)
        : fragmented(encoder.encode(input.text), input.fragments);
    case "binary":
      return clientFrame(OPCODE.binary, input.bytes);
    case "ping":
      return clientFrame(OPCODE.ping, input.bytes);
    case "badUtf8":
      return clientFrame(OPCODE.text, input.bytes);
  }
}

function fragmented(bytes: Uint8Array, { cuts, pingInside }: Fragments): Uint8Array {
  const at = [...new Set(cuts.map((c) => c % (bytes.byteLength + 1)))].sort((a, b) => a - b);
  const bounds = [0, ...at, bytes.byteLength];
  const frames: Uint8Array[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    frames.push(
      clientFrame(
        i === 0 ? OPCODE.text : OPCODE.continuation,
        bytes.subarray(bounds[i], bounds[i + 1]),
        {
          fin: i + 2 === bounds.length,
        },
      ),
    );
    if (i === 0 && pingInside) frames.push(clientFrame(OPCODE.ping, encoder.encode("inside")));
  }
  return concat(frames);
}

/** Control pings an input carries (each answered by a control pong). */
function controlPings(input: WsInput): number {
  if (input.kind === "ping") return 1;
  return input.kind === "text" && input.fragments?.pingInside === true ? 1 : 0;
}

function payloadBytes(input: WsInput): number {
  return input.kind === "text" ? encoder.encode(input.text).byteLength : input.bytes.byteLength;
}

/** A frame that answers a client frame. */
type Reply = Extract<ServerFrame, { type: "pong" | "state" | "error" | "connected" | "sent" }>;

type LaneKind = "anonymous" | "credentialed" | "connected";

/** The frame as the gateway reads it (text → UTF-8 → text: lone surrogates become U+FFFD). */
function parsedByGateway(text: string): { json: true; value: unknown } | { json: false } {
  try {
    return { json: true, value: JSON.parse(frameDecoder.decode(encoder.encode(text))) };
  } catch {
    return { json: false };
  }
}

/**
 * The id the gateway echoes on an error to an invalid frame: a safe integer, or a string the
 * contract's `FrameIdSchema` accepts (at most 64 characters as zod counts them: code points, so
 * 33 emoji — 66 UTF-16 code units — are echoed).
 */
function echoableId(value: unknown): string | number | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const id = (value as { id?: unknown }).id;
  if (Number.isSafeInteger(id)) return id as number;
  return typeof id === "string" && FrameIdSchema.safeParse(id).success ? id : undefined;
}

/**
 * Whether `input` may end the socket (or, before the handshake, complete it) in this lane: such
 * inputs only come last in a batch.
 */
function endsSocket(input: WsInput, lane: LaneKind, laneMode: Mode): boolean {
  if (input.kind === "badUtf8") return true;
  if (input.kind === "ping") return false;
  if (payloadBytes(input) > MAX_FRAME) return true;
  if (input.kind === "binary") return false;
  const parsed = parsedByGateway(input.text);
  if (!parsed.json) return false;
  const frame = ClientFrameSchema.safeParse(parsed.value);
  if (!frame.success) return false;
  const f = frame.data;
  if (lane !== "connected") return f.type === "connect";
  if (f.type === "disconnect") return laneMode === "manual";
  if (f.type === "app_state") {
    return f.state === "background" && !f.backgroundService && laneMode === "auto";
  }
  return false;
}

/** What the reply to a frame that does not end the socket must be. */
interface Expected {
  id: string | number | undefined;
  /** Allowed reply types, and error codes when the reply is an error. */
  types: ReadonlyArray<ServerFrame["type"]>;
  codes: ReadonlyArray<ErrorCode>;
}

function expectedReply(input: WsInput, lane: LaneKind, laneMode: Mode): Expected | "pong" {
  if (input.kind === "ping") return "pong";
  const bad: Expected = { id: undefined, types: ["error"], codes: ["ERR_BAD_REQUEST"] };
  if (input.kind !== "text") return bad;
  const parsed = parsedByGateway(input.text);
  if (!parsed.json) return bad;
  const frame = ClientFrameSchema.safeParse(parsed.value);
  // A valid frame's id is echoed as it is (zod counts a string's length in code points); an
  // invalid frame's only when the gateway can tell it is one the contract accepts.
  const id = frame.success ? frame.data.id : echoableId(parsed.value);
  // Before the handshake nothing but `connect` is acted on (and those come last).
  if (!frame.success || lane !== "connected") return { ...bad, id };
  const f = frame.data;
  switch (f.type) {
    case "connect":
      return { id, types: ["error"], codes: ["ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE"] };
    case "ping":
      // The automatic heartbeat is always accepted; an app ping only in manual mode.
      return f.source === "app" && laneMode === "auto"
        ? { id, types: ["error"], codes: ["ERR_NOT_MANUAL_MODE"] }
        : { id, types: ["pong"], codes: [] };
    case "app_state":
      return { id, types: ["state"], codes: [] };
    case "disconnect":
      return { id, types: ["error"], codes: ["ERR_NOT_MANUAL_MODE"] };
    case "send":
      // Generated receivers rarely exist; a valid one is answered by `sent`.
      return {
        id,
        types: ["sent", "error"],
        codes: ["ERR_UID_NOT_FOUND", "ERR_GUID_NOT_FOUND", "ERR_NOT_A_MEMBER"],
      };
    case "start_typing":
    case "end_typing":
      // No reply, unless refused.
      return { id, types: ["error"], codes: ["ERR_UID_NOT_FOUND", "ERR_GUID_NOT_FOUND"] };
  }
}

// =============================================================================================
// checks shared by frames and HTTP answers

const ROOT = new URL("../", import.meta.url).pathname;
/** What must never leave the gateway: stack traces, source positions, internals. */
const LEAKS: RegExp[] = [
  /\n\s+at /,
  / {4}at /,
  /\.[cm]?[jt]sx?:\d+/,
  /file:\/\//,
  /node_modules/,
  /ext:(core|deno_|node)/,
  /\b(TypeError|RangeError|ReferenceError|SyntaxError|AggregateError|GatewayError|ZodError)\b/,
  /dev_session_secret/,
  /gateway_proc_/,
  new RegExp(ROOT.replaceAll("/", "\\/")),
];

/** A leak pattern found in `answer` that the input did not put there itself. */
function leakIn(answer: string, input: string): string | null {
  for (const pattern of LEAKS) {
    if (pattern.test(answer) && !pattern.test(input)) return String(pattern);
  }
  return null;
}

const knownCloseCodes = new Set<number>(Object.values(closeCodeTable));

/** Counters for the report. */
class Stats {
  readonly inputs = new Map<string, number>();
  readonly replies = new Map<string, number>();
  readonly errorCodes = new Map<string, number>();
  readonly closes = new Map<string, number>();
  readonly httpStatuses = new Map<string, number>();
  /** Successes (2xx/3xx checked against the route's schema) per contract route. */
  readonly successes = new Map<string, number>();
  socketsOpened = 0;
  /** Message frames the recipients connected during the HTTP phase got. */
  messages = 0;

  add(map: Map<string, number>, key: string, n = 1): void {
    map.set(key, (map.get(key) ?? 0) + n);
  }
  total(prefix: string): number {
    let n = 0;
    for (const [key, value] of this.inputs) if (key.startsWith(prefix)) n += value;
    return n;
  }
}

function short(text: string, max = 300): string {
  return text.length <= max
    ? JSON.stringify(text)
    : `${JSON.stringify(text.slice(0, max))}…(${text.length})`;
}

// =============================================================================================
// the WebSocket fuzzer: one fresh socket per batch, in the lane's state

interface WsBatch {
  body: WsInput[];
  last: WsInput | null;
}

class WsFuzzer {
  #sentinel = 0;
  constructor(
    readonly proc: GatewayProcess,
    readonly sessions: Record<"credentialed" | "connected", Record<Mode, string>>,
    readonly stats: Stats,
  ) {}

  /** Runs one batch in `lane`; throws (an assertion) on the first answer outside the contract. */
  async run(lane: LaneKind, laneMode: Mode, batch: WsBatch, phase: string): Promise<void> {
    const ws = await this.#open(lane, laneMode);
    try {
      const closed = await this.#exchange(ws, lane, laneMode, batch.body, phase, false);
      if (closed !== null) {
        throw new assert.AssertionError({
          message: `${phase}: the socket ended (${closed}) before the frames that do not end it ` +
            "were all answered",
        });
      }
      if (batch.last !== null) {
        await this.#exchange(ws, lane, laneMode, [batch.last], phase, true);
      }
    } finally {
      await ws[Symbol.asyncDispose]();
    }
  }

  async #open(lane: LaneKind, laneMode: Mode): Promise<RawWebSocket> {
    const path = lane === "anonymous"
      ? WEBSOCKET_PATH
      : `${WEBSOCKET_PATH}?credential=${encodeURIComponent(this.sessions[lane][laneMode])}`;
    const ws = await RawWebSocket.open(this.proc.port, path);
    this.stats.socketsOpened++;
    if (ws.status !== 101) {
      await ws[Symbol.asyncDispose]();
      throw new assert.AssertionError({ message: `upgrade refused: ${ws.responseHead}` });
    }
    if (lane !== "connected") return ws;
    await ws.sendText(JSON.stringify({ type: "connect", id: "handshake" }));
    const { frames, end } = await readUntil(ws, (f) => f.opcode === OPCODE.text, 5_000);
    const first = frames.find((f) => f.opcode === OPCODE.text);
    const parsed = first === undefined
      ? null
      : ServerFrameSchema.safeParse(JSON.parse(textOf(first)));
    if (parsed === null || !parsed.success || parsed.data.type !== "connected") {
      await ws[Symbol.asyncDispose]();
      throw new assert.AssertionError({
        message: `the ${laneMode} session did not connect (${end}): ${
          first === undefined ? "no frame" : textOf(first)
        }`,
      });
    }
    return ws;
  }

  /**
   * Writes `inputs` and a sentinel ping, reads up to the sentinel's reply (or the socket's end)
   * and checks every frame. Returns how the socket ended, or null when it is still open.
   */
  async #exchange(
    ws: RawWebSocket,
    lane: LaneKind,
    laneMode: Mode,
    inputs: WsInput[],
    phase: string,
    last: boolean,
  ): Promise<string | null> {
    const sentinel = `~sentinel~${++this.#sentinel}`;
    const chunks = inputs.map(wireOf);
    chunks.push(textFrame(JSON.stringify({ type: "ping", id: sentinel })));
    const isSentinel = (f: RawFrame) => {
      if (f.opcode !== OPCODE.text || !textOf(f).includes(sentinel)) return false;
      try {
        return (JSON.parse(textOf(f)) as { id?: unknown }).id === sentinel;
      } catch {
        return false;
      }
    };
    const reading = readUntil(ws, isSentinel, 15_000);
    let written = true;
    try {
      await ws.write(concat(chunks));
    } catch {
      written = false; // the gateway ended the socket: what it answered is still read
    }
    const got = await reading;
    let frames = got.frames;
    let end: string = got.end;
    if (!written && end === "timeout") end = "write failed";
    const describeInput = () =>
      inputs.length === 1 ? describe(inputs[0]) : `${inputs.length} frames`;
    this.stats.add(this.stats.inputs, `ws ${phase}`, inputs.length);

    // The login inside a handshake completes after the sentinel's reply: read its outcome.
    const only = inputs.length === 1 ? inputs[0] : undefined;
    const loginConnect = last && lane === "anonymous" && only?.kind === "text" &&
      /"login"/.test(only.text) && endsSocket(only, lane, laneMode);
    if (loginConnect && end === "stop") {
      const more = await readUntil(
        ws,
        (f) => f.opcode === OPCODE.text && /^\{"type":"connected"/.test(textOf(f)),
        10_000,
      );
      frames = [...frames, ...more.frames];
      end = more.end === "stop" ? "connected" : more.end;
    }

    // Every frame against the contract.
    const replies: Reply[] = [];
    let pongs = 0;
    let closing: ServerFrame | undefined;
    let closeCode: number | null = null;
    const inputText = inputs.map((i) => i.kind === "text" ? i.text : "").join("\n");
    for (const frame of frames) {
      const fail = (why: string): never => {
        throw new assert.AssertionError({
          message: `${phase}: ${why} (after ${describeInput()})`,
        });
      };
      if (!frame.fin) fail("a fragmented frame");
      if (frame.opcode === OPCODE.pong) {
        pongs++;
        continue;
      }
      if (frame.opcode === OPCODE.close) {
        closeCode = closeCodeOf(frame);
        if (!knownCloseCodes.has(closeCode)) {
          fail(`close code ${closeCode} is not in the contract's table`);
        }
        if (
          closeCode === closeCodeTable.invalid_utf8 && !inputs.some((i) => i.kind === "badUtf8")
        ) {
          fail("closed for invalid UTF-8 without any");
        }
        this.stats.add(this.stats.closes, String(closeCode));
        continue;
      }
      if (frame.opcode !== OPCODE.text) fail(`a frame with opcode ${frame.opcode}`);
      const text = textOf(frame);
      const leak = leakIn(text, inputText);
      if (leak !== null) fail(`a frame leaks ${leak}: ${short(text)}`);
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        fail(`a frame that is not JSON: ${short(text)}`);
      }
      const parsed = ServerFrameSchema.safeParse(value);
      if (!parsed.success) fail(`a frame outside ServerFrameSchema: ${short(text)}`);
      const f = parsed.data!;
      this.stats.add(this.stats.replies, f.type);
      if (f.type === "error") {
        this.stats.add(this.stats.errorCodes, f.errorCode);
        if (f.errorCode === "ERR_INTERNAL") fail(`ERR_INTERNAL: ${short(text)}`);
        if (f.errorCode === "ERR_TOO_MANY_REQUESTS") {
          fail("a frame was refused by the frame budget (lifted for this test)");
        }
      }
      if (f.type === "closing") {
        closing = f;
        if (closeCodeTable[f.reason] !== f.code) fail(`closing ${f.reason} with code ${f.code}`);
        continue;
      }
      if (
        f.type === "message" || f.type === "connected" || f.type === "typing_started" ||
        f.type === "typing_ended" || f.type === "presence"
      ) continue;
      if (f.id === sentinel) continue;
      replies.push(f);
    }
    if (closing?.type === "closing" && closeCode !== null && closing.code !== closeCode) {
      throw new assert.AssertionError({
        message: `${phase}: closing said ${closing.code}, the close frame ${closeCode}`,
      });
    }

    if (!last) {
      // One reply per frame, in order, with the frame's id and an allowed type and code.
      if (end === "timeout") {
        throw new assert.AssertionError({
          message: `${phase}: no reply to the sentinel within 15 s (${replies.length} replies to ` +
            `${inputs.length} frames)`,
        });
      }
      const expected = inputs.map((i) => expectedReply(i, lane, laneMode));
      const textExpected = expected.filter((e): e is Expected => e !== "pong");
      const open = end === "stop";
      if (open && replies.length !== textExpected.length) {
        throw new assert.AssertionError({
          message: `${phase}: ${replies.length} replies to ${textExpected.length} frames`,
        });
      }
      for (const [i, reply] of replies.entries()) {
        const want = textExpected[i];
        if (want === undefined) break;
        const got = reply.type === "error" ? `${reply.type} ${reply.errorCode}` : reply.type;
        const ok = reply.id === want.id && want.types.includes(reply.type) &&
          (reply.type !== "error" || want.codes.includes(reply.errorCode));
        if (!ok) {
          const input = inputs.filter((x) => expectedReply(x, lane, laneMode) !== "pong")[i];
          throw new assert.AssertionError({
            message: `${phase}: reply #${i} is ${got} id=${JSON.stringify(reply.id)}, expected ` +
              `${want.types.join("|")} ${want.codes.join("|")} id=${JSON.stringify(want.id)} ` +
              `to ${describe(input)}`,
          });
        }
      }
      const pingsSent = inputs.reduce((n, i) => n + controlPings(i), 0);
      if (open && pongs !== pingsSent) {
        throw new assert.AssertionError({
          message: `${phase}: ${pongs} control pongs to ${pingsSent} control pings`,
        });
      }
      return open ? null : end;
    }

    // The last frame: over the size limit it ends the socket with 1009, otherwise not with 1009.
    const input = inputs[0];
    const over = input.kind !== "ping" && payloadBytes(input) > MAX_FRAME;
    if (over && closeCode !== closeCodeTable.payload_too_large) {
      throw new assert.AssertionError({
        message: `${phase}: a frame of ${payloadBytes(input)} bytes (limit ${MAX_FRAME}) ended ` +
          `with ${closeCode ?? end}, not 1009`,
      });
    }
    if (!over && closeCode === closeCodeTable.payload_too_large) {
      throw new assert.AssertionError({
        message: `${phase}: a frame of ${payloadBytes(input)} bytes was refused as too large`,
      });
    }
    if (end === "timeout" && closeCode === null) {
      throw new assert.AssertionError({
        message: `${phase}: no reply and no close within 15 s after ${describe(input)}`,
      });
    }
    return closeCode === null ? null : String(closeCode);
  }
}

function describe(input: WsInput | undefined): string {
  if (input === undefined) return "?";
  if (input.kind === "text") return `text ${short(input.text, 200)}`;
  return `${input.kind} of ${input.bytes.byteLength} bytes`;
}

async function readUntil(
  ws: RawWebSocket,
  stop: (frame: RawFrame) => boolean,
  timeoutMs: number,
): Promise<{ frames: RawFrame[]; end: "stop" | "close" | RawEnd | "timeout" }> {
  const deadline = Date.now() + timeoutMs;
  const frames: RawFrame[] = [];
  for (;;) {
    const got = await ws.next(Math.max(0, deadline - Date.now()));
    if (typeof got === "string") return { frames, end: got };
    frames.push(got);
    if (got.opcode === OPCODE.close) return { frames, end: "close" };
    if (stop(got)) return { frames, end: "stop" };
  }
}

function concat(chunks: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

/** A batch for a lane: frames that keep the socket as it is, then maybe one that may end it. */
function wsBatch(
  lane: LaneKind,
  laneMode: Mode,
  input: fc.Arbitrary<WsInput>,
  lastInput: fc.Arbitrary<WsInput>,
  maxLength: number,
  noLastWeight: number,
): fc.Arbitrary<WsBatch> {
  return fc.record({
    body: fc.array(input.filter((i) => !endsSocket(i, lane, laneMode)), {
      minLength: 1,
      maxLength,
      size: "max",
    }),
    last: fc.oneof(
      { weight: noLastWeight, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: lastInput },
    ),
  });
}

/** Inputs print short in fast-check's counterexamples (binary payloads: length and head). */
function printed<T extends object>(value: T, text: string): T {
  Object.defineProperty(value, fc.toStringMethod, { value: () => text });
  return value;
}
function wsInput(input: WsInput): WsInput {
  return printed(
    input,
    input.kind === "text"
      ? `text(${
        JSON.stringify(input.text.length > 2_000 ? input.text.slice(0, 2_000) + "…" : input.text)
      }${input.fragments === undefined ? "" : `, fragments ${JSON.stringify(input.fragments)}`})`
      : `${input.kind}(${input.bytes.byteLength} bytes: ${hexHead(input.bytes)})`,
  );
}
function hexHead(bytes: Uint8Array): string {
  const head = [...bytes.subarray(0, 24)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return bytes.byteLength > 24 ? head + "…" : head;
}

const wholeText = anyText.map((text) => wsInput({ kind: "text", text }));
const fragmentedText = fc.tuple(
  anyText,
  fc.array(fc.nat(), { minLength: 1, maxLength: 3 }),
  fc.boolean(),
).map(([text, cuts, pingInside]) =>
  wsInput({ kind: "text", text, fragments: { cuts, pingInside } })
);
const textInput: fc.Arbitrary<WsInput> = fc.oneof(
  { withCrossShrink: true },
  { weight: 9, arbitrary: wholeText },
  { weight: 1, arbitrary: fragmentedText },
);
/** What may end a socket: handshakes, the lifecycle's closing calls, oversized frames, any text. */
const lastTextInput: fc.Arbitrary<WsInput> = fc.oneof(
  { weight: 4, arbitrary: validFrames.connect.map((j) => render(j, pools.resolve)) },
  { weight: 1, arbitrary: validFrames.disconnect.map((j) => render(j, pools.resolve)) },
  { weight: 1, arbitrary: validFrames.app_state.map((j) => render(j, pools.resolve)) },
  { weight: 2, arbitrary: overLimit },
  { weight: 1, arbitrary: nearLimit },
  { weight: 2, arbitrary: anyText },
).map((text) => wsInput({ kind: "text", text }));

const binaryInput: fc.Arbitrary<WsInput> = fc.oneof(
  { withCrossShrink: true },
  {
    weight: 8,
    arbitrary: randomBytes(MAX_FRAME).map((bytes) => wsInput({ kind: "binary", bytes })),
  },
  {
    weight: 1,
    arbitrary: randomBytes(125).map((bytes) =>
      wsInput({ kind: "ping", bytes: bytes.slice(0, 125) })
    ),
  },
  { weight: 1, arbitrary: fragmentedText },
  { weight: 1, arbitrary: wholeText },
);
const lastBinaryInput: fc.Arbitrary<WsInput> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.tuple(fc.integer({ min: MAX_FRAME + 1, max: 3 * MAX_FRAME }), fc.integer()).map((
      [n, seed],
    ) => wsInput({ kind: "binary", bytes: prngBytes(n, seed) })),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(randomBytes(512), fc.nat(), fc.constantFrom(0xff, 0xc0, 0xed, 0x80)).map((
      [bytes, at, bad],
    ): WsInput => {
      const out = new Uint8Array(bytes.byteLength + 1);
      const i = at % out.byteLength;
      out.set(bytes.subarray(0, i));
      out[i] = bad;
      out.set(bytes.subarray(i), i + 1);
      // 0xed 0xa0 … is an encoded surrogate, 0x80 a lone continuation byte: invalid UTF-8 too.
      if (bad === 0xed && i + 1 < out.byteLength) out[i + 1] = 0xa0;
      return wsInput({ kind: "badUtf8", bytes: out });
    }),
  },
  { weight: 1, arbitrary: binaryInput },
);

// =============================================================================================
// HTTP: every route of the contract, with generated and mutated requests

interface RouteInfo {
  name: string;
  route: AppRoute;
  segments: string[];
}

function isRoute(value: unknown): value is AppRoute {
  return typeof value === "object" && value !== null && "method" in value &&
    typeof (value as { path?: unknown }).path === "string";
}

function routesOf(router: object, prefix = ""): RouteInfo[] {
  const out: RouteInfo[] = [];
  for (const [key, value] of Object.entries(router)) {
    if (isRoute(value)) {
      out.push({ name: prefix + key, route: value, segments: value.path.split("/") });
    } else if (typeof value === "object" && value !== null) {
      out.push(...routesOf(value, `${prefix}${key}.`));
    }
  }
  return out;
}
const ROUTES = routesOf(contract);

interface SafeParser {
  safeParse(value: unknown): { success: boolean };
}
function isSchema(value: unknown): value is SafeParser {
  return typeof value === "object" && value !== null && "safeParse" in value;
}
function hasBody(route: AppRoute): boolean {
  return route.method !== "GET" && "body" in route && isSchema(route.body);
}

const uidRef = fc.nat().map((i): J => ({ k: "ref", ref: "uid", i }));
const messageContent: fc.Arbitrary<J> = fc.oneof(
  objectOf([
    Field("kind", fc.constant(lit("text"))),
    Field("text", fc.string({ minLength: 1, maxLength: 200 }).map(lit)),
  ]),
  objectOf([
    Field("kind", fc.constant(lit("custom"))),
    Field("customType", fc.string({ minLength: 1, maxLength: 64 }).map(lit)),
    Field(
      "data",
      fc.oneof(
        fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), {
          maxKeys: 4,
        }).map(fromValue),
        deepNest.map((d): J => obj([["a", d]])),
      ),
    ),
  ]),
);
const guidLit = fc.constantFrom("g1", "g2", "no-such-group").map(lit);
const uidList = (min: number) =>
  fc.uniqueArray(fc.nat(SEED_UIDS.length - 1), { minLength: min, maxLength: 4 }).map((
    ids,
  ): J => ({ k: "arr", items: ids.map((i): J => ({ k: "ref", ref: "uid", i })) }));

/** Valid bodies, by hand from each body schema. */
const validBodies: Record<string, fc.Arbitrary<J>> = {
  init: objectOf([
    Field(
      "region",
      fc.oneof(fc.constantFrom("us", "US", "eu"), fc.string({ minLength: 1, maxLength: 32 })).map(
        lit,
      ),
    ),
    Field(
      "subscriptionType",
      fc.constantFrom("allUsers", "roles", "friends", "none").map(lit),
      true,
    ),
    Field(
      "roles",
      fc.array(fc.string({ minLength: 1, maxLength: 64 }), { maxLength: 5 }).map(fromValue),
      true,
    ),
    Field("autoEstablishSocketConnection", fc.boolean().map(lit), true),
  ]),
  login: fc.oneof(objectOf(tokenLoginFields), objectOf(keyLoginFields)),
  "server.createUser": objectOf([
    Field(
      "uid",
      fc.oneof(
        uidRef,
        fc.stringMatching(/^[A-Za-z0-9_.@-]{1,40}$/).filter((u) => u !== CALM_UID).map(lit),
      ),
    ),
    Field("name", fc.string({ minLength: 1, maxLength: 200 }).map(lit), true),
  ]),
  "server.createAuthToken": objectOf([
    Field("ttlSeconds", fc.integer({ min: 1, max: 365 * 24 * 3600 }).map(lit), true),
  ]),
  "server.sendMessage": objectOf([
    Field(
      "to",
      fc.oneof(
        fc.uniqueArray(fc.nat(SEED_UIDS.length - 1), { minLength: 1, maxLength: 4 }).map((
          ids,
        ): J => ({ k: "arr", items: ids.map((i): J => ({ k: "ref", ref: "uid", i })) })),
        fc.uniqueArray(fc.stringMatching(/^[A-Za-z0-9_.@-]{1,20}$/), { minLength: 1, maxLength: 3 })
          .map(fromValue),
      ),
    ),
    Field("from", uidRef, true),
    Field("message", messageContent),
  ]),
  "session.send": objectOf([
    Field("clientMessageId", fc.string({ minLength: 1, maxLength: 64 }).map(lit)),
    Field("receiverType", fc.constantFrom("user", "group").map(lit)),
    Field("receiver", fc.oneof(uidRef, guidLit)),
    Field("message", messageContent),
  ]),
  "server.setRoles": objectOf([
    Field(
      "roles",
      fc.array(fc.string({ minLength: 1, maxLength: 64 }), { maxLength: 5 }).map(
        fromValue,
      ),
    ),
  ]),
  "server.setFriends": objectOf([Field("friends", uidList(0))]),
  "server.createGroup": objectOf([
    Field("guid", guidLit),
    Field("name", fc.string({ minLength: 1, maxLength: 200 }).map(lit), true),
    Field("members", uidList(0), true),
  ]),
  "server.addMembers": objectOf([Field("members", uidList(1))]),
  "server.sendGroupMessage": objectOf([
    Field("from", uidRef, true),
    Field("message", messageContent),
  ]),
};
for (const { name, route } of ROUTES) {
  if (hasBody(route) && validBodies[name] === undefined) {
    throw new Error(`no body arbitrary for the contract route '${name}': add one to validBodies`);
  }
}

/** A header value, or a session credential (maybe with one character changed) after a prefix. */
type HeaderValue = string | { ref: "cred"; i: number; tamper: number | null; prefix: string };
type HttpBody =
  | { kind: "none" }
  | { kind: "json"; j: J; textMutation?: TextMutation }
  | { kind: "text"; text: string }
  | { kind: "bytes"; bytes: Uint8Array }
  /** A JSON body of this many bytes, over MAX_BODY_BYTES. */
  | { kind: "huge"; size: number };
type PathPart = string | { ref: RefKind; i: number };
interface HttpInput {
  route: number;
  method: string;
  path: PathPart[];
  query: PathPart[];
  headers: Array<[string, HeaderValue]>;
  body: HttpBody;
  /** Sent with `transfer-encoding: chunked` (in two chunks) instead of a content-length. */
  chunked: boolean;
}

const garbageSegment: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "..",
    ".",
    "%2e%2e",
    "%2E%2E%2F..",
    "..%2f..%2f",
    "../../../../etc/passwd",
    "..\\..\\windows",
    "%00",
    "%",
    "%zz",
    "%ff%fe",
    "%C0%AE",
    "a%2Fb",
    "%3F",
    "%23",
    ";",
    "demo;x=1",
    "demo%20",
    "de%6Do",
    "%64emo",
    "superhero1%00",
    "superhero1/",
    "",
    "*",
    "~",
  ),
  fc.string({ unit: "binary", maxLength: 30 }).map(encodeURIComponent),
  fc.string({ maxLength: 20 }).map((s) => s.replaceAll(/[\s#?]/g, "")),
  fc.integer({ min: 65, max: 6_000 }).map((n) => "a".repeat(n)),
);

function paramArb(name: string): fc.Arbitrary<PathPart> {
  const valid: fc.Arbitrary<PathPart> = name === "appId"
    ? fc.constant(DEV_APP.appId)
    : name === "uid"
    ? fc.nat().map((i): PathPart => ({ ref: "uid", i }))
    : name === "guid"
    ? fc.constantFrom<PathPart>("g1", "g2", "no-such-group")
    : fc.nat().map((i): PathPart => ({ ref: "token", i }));
  const lookalike = name === "appId"
    ? fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/)
    : fc.stringMatching(/^[A-Za-z0-9_.@-]{1,40}$/);
  return fc.oneof(
    { weight: 6, arbitrary: valid },
    { weight: 2, arbitrary: lookalike },
    { weight: 3, arbitrary: garbageSegment },
  );
}

const headerName = fc.oneof(
  fc.constantFrom(
    "origin",
    "x-forwarded-for",
    "accept",
    "accept-encoding",
    "cookie",
    "sec-websocket-protocol",
    "upgrade",
    "connection",
    "x-request-id",
  ),
  fc.stringMatching(/^x-[a-z0-9-]{1,20}$/),
);

const authorizationValue: fc.Arbitrary<HeaderValue> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.nat().map((i): HeaderValue => ({
      ref: "cred",
      i,
      tamper: null,
      prefix: "Bearer ",
    })),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.nat(), fc.nat(), fc.constantFrom("Bearer ", "bearer ", "Bearer\t"))
      .map(([i, t, prefix]): HeaderValue => ({ ref: "cred", i, tamper: t, prefix })),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "Bearer",
      "Bearer ",
      "Bearer  x",
      "Basic dXNlcjpwYXNz",
      "bearer x.y.z",
      "Bearer a b",
      "Bearer " + "a".repeat(4_000),
      "",
    ),
  },
  { weight: 1, arbitrary: printable(60) },
);
const apikeyValue: fc.Arbitrary<HeaderValue> = fc.oneof(
  { weight: 6, arbitrary: fc.constant(DEV_APP.apiKey) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("", " ", DEV_APP.apiKey + " ", DEV_APP.apiKey.toUpperCase()),
  },
  { weight: 2, arbitrary: printable(60) },
);
const contentType = fc.oneof(
  { weight: 6, arbitrary: fc.constant("application/json") },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "application/json; charset=utf-8",
      "text/plain",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "application/jsonx",
      "application/json; charset=latin1",
      "*/*",
      "",
    ),
  },
  { weight: 1, arbitrary: printable(40) },
);
const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];

function httpInputFor(index: number): fc.Arbitrary<HttpInput> {
  const { route, name } = ROUTES[index];
  const bodySchema = hasBody(route) ? validBodies[name] : null;
  const body: fc.Arbitrary<HttpBody> = bodySchema !== null
    ? fc.oneof(
      { weight: 20, arbitrary: bodySchema.map((j): HttpBody => ({ kind: "json", j })) },
      {
        weight: 20,
        arbitrary: fc.tuple(
          bodySchema,
          fc.array(jMutation, { minLength: 1, maxLength: 3 }),
          fc.option(textMutation, { nil: undefined, freq: 3 }),
        ).map(([j, jms, tm]): HttpBody => ({
          kind: "json",
          j: jms.reduce(applyJ, j),
          textMutation: tm,
        })),
      },
      { weight: 5, arbitrary: garbageText.map((text): HttpBody => ({ kind: "text", text })) },
      { weight: 5, arbitrary: fc.constant<HttpBody>({ kind: "none" }) },
      {
        weight: 1,
        arbitrary: fc.integer({ min: MAX_BODY + 1, max: MAX_BODY + 4_096 }).map((
          size,
        ): HttpBody => ({ kind: "huge", size })),
      },
      {
        weight: 5,
        arbitrary: randomBytes(2_048).map((bytes): HttpBody =>
          printed({ kind: "bytes", bytes }, `bytes(${bytes.byteLength}: ${hexHead(bytes)})`)
        ),
      },
    )
    : fc.oneof(
      { weight: 6, arbitrary: fc.constant<HttpBody>({ kind: "none" }) },
      { weight: 1, arbitrary: weirdValue.map((j): HttpBody => ({ kind: "json", j })) },
      { weight: 1, arbitrary: garbageText.map((text): HttpBody => ({ kind: "text", text })) },
    );
  const needsKey = name.startsWith("server.");
  const needsSession = name.startsWith("session.");
  return fc.record({
    route: fc.constant(index),
    method: fc.oneof(
      { weight: 8, arbitrary: fc.constant(route.method) },
      { weight: 2, arbitrary: fc.constantFrom(...METHODS) },
    ),
    path: fc.oneof(
      fc.tuple(
        ...route.path.split("/").map((segment): fc.Arbitrary<PathPart> =>
          segment.startsWith(":") ? paramArb(segment.slice(1)) : fc.constant(segment)
        ),
      ),
      // An auth token with the uid it is for (the other path params as above).
      ...(route.path.includes(":authToken")
        ? [
          fc.tuple(paramArb("appId"), fc.nat()).map(([appId, i]) =>
            route.path.split("/").map((segment): PathPart =>
              segment === ":appId"
                ? appId
                : segment === ":uid"
                ? { ref: "tokenUid", i }
                : segment === ":authToken"
                ? { ref: "token", i }
                : segment
            )
          ),
        ]
        : []),
    ),
    query: fc.oneof(
      { weight: 8, arbitrary: fc.constant<PathPart[]>([]) },
      {
        weight: 1,
        arbitrary: fc.constantFrom("?", "?credential=x", "?a=%zz&b", "?" + "q".repeat(3_000)).map((
          q,
        ): PathPart[] => [q]),
      },
    ),
    headers: fc.tuple(
      fc.option(apikeyValue, { nil: undefined, freq: needsKey ? 6 : 2 }),
      fc.option(authorizationValue, { nil: undefined, freq: needsSession ? 6 : 2 }),
      fc.option(contentType, { nil: undefined, freq: 6 }),
      fc.option(fc.tuple(headerName, printable(40)), { nil: undefined, freq: 2 }),
    ).map(([apikey, authorization, type, extra]) => {
      const headers: Array<[string, HeaderValue]> = [];
      if (apikey !== undefined) headers.push(["apikey", apikey]);
      if (authorization !== undefined) headers.push(["authorization", authorization]);
      if (type !== undefined) headers.push(["content-type", type]);
      if (extra !== undefined) headers.push(extra);
      return headers;
    }),
    body,
    chunked: fc.boolean().map((b) => b && bodySchema !== null),
  });
}

/** Paths no route of the contract has (the WebSocket endpoint, probes, garbage). */
const strayInput: fc.Arbitrary<HttpInput> = fc.record({
  route: fc.constant(-1),
  method: fc.constantFrom(...METHODS),
  path: fc.oneof(
    fc.constantFrom("/", "/healthz", "/v1/ws", "/v1", "/v1/apps", "/v1/apps/demo", "/v1/session/"),
    fc.array(garbageSegment, { minLength: 1, maxLength: 4 }).map((s) => "/" + s.join("/")),
    fc.constantFrom(
      "/v1/apps/demo/../../healthz",
      "/v1/apps/%2e%2e/%2e%2e/healthz",
      "//v1/session",
      "http://gateway.invalid/healthz",
      "https://elsewhere.example/v1/apps/demo/users/superhero1/presence",
      "*",
    ),
  ).map((p): PathPart[] => [p]),
  query: fc.constant<PathPart[]>([]),
  headers: fc.constant<Array<[string, HeaderValue]>>([]),
  body: fc.constant<HttpBody>({ kind: "none" }),
  chunked: fc.constant(false),
});

const credentialRef = (prefix: string) =>
  fc.tuple(fc.nat(), fc.option(fc.nat(), { nil: null })).map((
    [i, tamper],
  ): HeaderValue => ({ ref: "cred", i, tamper, prefix }));
/** WebSocket upgrades, well-formed or not, with or without a (valid, changed, garbage) credential. */
const upgradeInput: fc.Arbitrary<HttpInput> = fc.record({
  route: fc.constant(-1),
  method: fc.oneof(
    { weight: 6, arbitrary: fc.constant("GET") },
    { weight: 1, arbitrary: fc.constantFrom(...METHODS) },
  ),
  path: fc.oneof(
    { weight: 6, arbitrary: fc.constant(WEBSOCKET_PATH) },
    {
      weight: 1,
      arbitrary: fc.constantFrom("/healthz", "/v1/apps/demo/init", "/v1/session", "/v1/wss", "/"),
    },
  ).map((path): PathPart[] => [path]),
  query: fc.oneof(
    fc.constant<PathPart[]>([]),
    fc.nat().map((i): PathPart[] => ["?credential=", { ref: "cred", i }]),
    garbageSegment.map((g): PathPart[] => ["?credential=", g]),
  ),
  headers: fc.tuple(
    fc.option(fc.constantFrom("websocket", "WebSocket", "h2c", "websocket, h2c", ""), {
      nil: undefined,
      freq: 8,
    }),
    fc.option(fc.constantFrom("Upgrade", "keep-alive, Upgrade", "close"), {
      nil: undefined,
      freq: 8,
    }),
    fc.option(
      fc.oneof(
        {
          weight: 4,
          arbitrary: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) =>
            btoa(String.fromCharCode(...b))
          ),
        },
        { weight: 1, arbitrary: printable(30) },
      ),
      { nil: undefined, freq: 8 },
    ),
    fc.option(fc.constantFrom("13", "8", "12", "", "13, 8", "abc"), { nil: undefined, freq: 8 }),
    fc.array(
      fc.oneof(
        fc.constant<HeaderValue>("liveness.v1"),
        credentialRef("cred."),
        printable(20).map((p): HeaderValue => p.replaceAll(",", "")),
      ),
      { maxLength: 3 },
    ),
  ).map(([upgrade, connection, key, version, protocols]) => {
    const headers: Array<[string, HeaderValue]> = [];
    if (upgrade !== undefined) headers.push(["upgrade", upgrade]);
    if (connection !== undefined) headers.push(["connection", connection]);
    if (key !== undefined) headers.push(["sec-websocket-key", key]);
    if (version !== undefined) headers.push(["sec-websocket-version", version]);
    for (const protocol of protocols) headers.push(["sec-websocket-protocol", protocol]);
    return headers;
  }),
  body: fc.constant<HttpBody>({ kind: "none" }),
  chunked: fc.constant(false),
});

const httpInput: fc.Arbitrary<HttpInput> = fc.oneof(
  ...ROUTES.map((_, i) => ({ weight: 10, arbitrary: httpInputFor(i) })),
  { weight: 3, arbitrary: strayInput },
  { weight: 4, arbitrary: upgradeInput },
);

interface EncodedRequest {
  bytes: Uint8Array;
  method: string;
  target: string;
  /** The request as text, for messages and the leak check. */
  text: string;
}

function tampered(credential: string, at: number): string {
  if (credential.length === 0) return "x";
  const i = at % credential.length;
  const c = credential[i] === "A" ? "B" : "A";
  return credential.slice(0, i) + c + credential.slice(i + 1);
}

function encodeRequest(input: HttpInput): EncodedRequest {
  const part = (p: PathPart) =>
    typeof p === "string" ? p : encodeURIComponent(pools.resolve(p.ref, p.i));
  const target = input.path.map(part).join("/") + input.query.map(part).join("");
  let head = `${input.method} ${target} HTTP/1.1\r\nHost: gateway\r\n`;
  for (const [name, value] of input.headers) {
    const v = typeof value === "string"
      ? value
      : value.prefix + (value.tamper === null
        ? pools.resolve("cred", value.i)
        : tampered(pools.resolve("cred", value.i), value.tamper));
    head += `${name}: ${v}\r\n`;
  }
  let body: Uint8Array | null = null;
  switch (input.body.kind) {
    case "none":
      break;
    case "json": {
      const text = render(input.body.j, pools.resolve);
      body = encoder.encode(
        input.body.textMutation === undefined ? text : applyText(text, input.body.textMutation),
      );
      break;
    }
    case "text":
      body = encoder.encode(input.body.text);
      break;
    case "bytes":
      body = input.body.bytes;
      break;
    case "huge":
      body = encoder.encode(`{"pad":"${"x".repeat(input.body.size - 10)}"}`);
      break;
  }
  if (body !== null && input.chunked) {
    head += "transfer-encoding: chunked\r\n";
    const half = body.byteLength >> 1;
    const chunk = (bytes: Uint8Array) =>
      bytes.byteLength === 0
        ? []
        : [encoder.encode(`${bytes.byteLength.toString(16)}\r\n`), bytes, encoder.encode("\r\n")];
    body = concat([
      ...chunk(body.subarray(0, half)),
      ...chunk(body.subarray(half)),
      encoder.encode("0\r\n\r\n"),
    ]);
  } else if (body !== null) head += `content-length: ${body.byteLength}\r\n`;
  head += "\r\n";
  const headBytes = encoder.encode(head);
  return {
    bytes: body === null ? headBytes : concat([headBytes, body]),
    method: input.method,
    target,
    text: head + (body === null ? "" : decoder.decode(body)),
  };
}

interface HttpAnswer {
  status: number;
  headers: Map<string, string>;
  body: Uint8Array;
  raw: string;
}

/** One keep-alive HTTP/1.1 connection; requests one at a time. */
class HttpConnection {
  #conn: Deno.Conn | null = null;
  #buffer = new Uint8Array(0);
  readonly #chunk = new Uint8Array(64 * 1024);
  constructor(readonly port: number) {}

  async exchange(request: Uint8Array, method: string): Promise<HttpAnswer> {
    for (let attempt = 0;; attempt++) {
      const reused = this.#conn !== null;
      if (this.#conn === null) {
        this.#conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
        this.#buffer = new Uint8Array(0);
      }
      const conn = this.#conn;
      let received = false;
      const timer = setTimeout(() => this.close(), 10_000);
      try {
        try {
          await writeAll(conn, request);
        } catch { /* refused while writing: the answer is still read */ }
        const answer = await this.#read(conn, method, () => (received = true));
        // After a `connection: close` answer, or a 101 (the connection is a WebSocket now).
        if (answer.status === 101 || answer.headers.get("connection")?.toLowerCase() === "close") {
          this.close();
        }
        return answer;
      } catch (error) {
        this.close();
        // A keep-alive connection the server had just closed: once more on a new one.
        if (reused && !received && attempt === 0) continue;
        throw error;
      } finally {
        clearTimeout(timer);
      }
    }
  }

  close(): void {
    if (this.#conn === null) return;
    try {
      this.#conn.close();
    } catch { /* closed */ }
    this.#conn = null;
  }

  async #fill(conn: Deno.Conn, onData: () => void): Promise<boolean> {
    const n = await conn.read(this.#chunk);
    if (n === null) return false;
    onData();
    this.#buffer = concat([this.#buffer, this.#chunk.subarray(0, n)]);
    return true;
  }

  async #read(conn: Deno.Conn, method: string, onData: () => void): Promise<HttpAnswer> {
    let end = -1;
    while ((end = headEnd(this.#buffer)) < 0) {
      if (!(await this.#fill(conn, onData))) {
        throw new Error("the connection ended before an answer");
      }
    }
    const head = latin1(this.#buffer.subarray(0, end));
    let rest = this.#buffer.subarray(end + 4);
    const [statusLine, ...lines] = head.split("\r\n");
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? NaN);
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    let body: Uint8Array<ArrayBuffer> = new Uint8Array(0);
    const noBody = method === "HEAD" || status === 204 || status === 304 || status < 200;
    if (!noBody && headers.get("transfer-encoding")?.toLowerCase().includes("chunked")) {
      const parts: Uint8Array[] = [];
      for (;;) {
        let lineEnd: number;
        while ((lineEnd = indexOfCrlf(rest)) < 0) {
          this.#buffer = rest;
          if (!(await this.#fill(conn, onData))) throw new Error("the chunked body ended early");
          rest = this.#buffer;
        }
        const size = parseInt(latin1(rest.subarray(0, lineEnd)), 16);
        while (rest.byteLength < lineEnd + 2 + size + 2) {
          this.#buffer = rest;
          if (!(await this.#fill(conn, onData))) throw new Error("the chunked body ended early");
          rest = this.#buffer;
        }
        parts.push(rest.slice(lineEnd + 2, lineEnd + 2 + size));
        rest = rest.subarray(lineEnd + 2 + size + 2);
        if (size === 0) break;
      }
      body = concat(parts);
    } else if (!noBody && headers.has("content-length")) {
      const length = Number(headers.get("content-length"));
      while (rest.byteLength < length) {
        this.#buffer = rest;
        if (!(await this.#fill(conn, onData))) throw new Error("the body ended early");
        rest = this.#buffer;
      }
      body = rest.slice(0, length);
      rest = rest.subarray(length);
    } else if (!noBody) {
      // Neither: the body runs to the end of the connection.
      this.#buffer = rest;
      while (await this.#fill(conn, onData));
      body = this.#buffer;
      rest = new Uint8Array(0);
      this.close();
    }
    this.#buffer = rest.slice();
    return { status, headers, body, raw: head + "\r\n\r\n" + decoder.decode(body) };
  }
}

function headEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.byteLength; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}
function indexOfCrlf(bytes: Uint8Array): number {
  for (let i = 0; i + 1 < bytes.byteLength; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10) return i;
  }
  return -1;
}
function latin1(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

/** Statuses any request may get from the transport or the middleware, whatever its route. */
const ANY_ROUTE_STATUSES = new Set([400, 405, 408, 413, 429, 431, 503]);
/** Non-contract paths whose successes are not checked against a schema (probes, docs). */
const OTHER_PATHS = new Set([
  "/",
  "/healthz",
  "/readyz",
  "/metrics",
  "/openapi.json",
  "/docs",
  "/docs/",
  "/docs/swagger-ui.css",
  "/docs/swagger-ui-bundle.js",
  "/docs/init.js",
]);

function tryDecode(text: string, decode: (s: string) => string): string {
  return text.replace(/(?:%[0-9A-Fa-f]{2})+/g, (match) => {
    try {
      return decode(match);
    } catch {
      return match;
    }
  });
}

/** The contract route a request reaches (as the gateway's URL parsing and Hono see the path). */
function routeOf(method: string, target: string): { info: RouteInfo | null; path: string } | null {
  let pathname: string;
  try {
    pathname = new URL(target, "http://gateway.invalid").pathname;
  } catch {
    return null;
  }
  const path = tryDecode(pathname.replaceAll("%25", "%2525"), decodeURI);
  const segments = path.split("/");
  const wanted = method === "HEAD" ? "GET" : method;
  for (const info of ROUTES) {
    if (info.route.method !== wanted || info.segments.length !== segments.length) continue;
    const match = info.segments.every((s, i) =>
      s.startsWith(":") ? segments[i] !== "" : s === segments[i]
    );
    if (match) return { info, path };
  }
  return { info: null, path };
}

/** Checks one HTTP answer; returns why it is outside the contract, or null. */
function checkHttp(request: EncodedRequest, answer: HttpAnswer, stats: Stats): string | null {
  const { status } = answer;
  stats.add(stats.httpStatuses, String(status));
  const where = routeOf(request.method, request.target);
  const info = where?.info ?? null;
  if (!Number.isInteger(status)) return `not an HTTP answer: ${short(answer.raw)}`;
  if (status === 500) return `500: ${short(answer.raw)}`;
  const text = decoder.decode(answer.body);
  if (request.method === "HEAD") return null; // no body to check
  if (status === 101) {
    return request.method === "GET" && where?.path === WEBSOCKET_PATH
      ? null
      : `101 for ${request.method} ${where?.path}`;
  }
  if (status < 400) {
    if (request.method === "OPTIONS" && status === 204) return null; // CORS preflight
    if (info === null) {
      if (where !== null && OTHER_PATHS.has(where.path)) return null;
      return `${status} for a path no route has (${where?.path}): ${short(answer.raw)}`;
    }
    const schema = (info.route.responses as Record<number, unknown>)[status];
    if (!isSchema(schema)) {
      return `${status} is not a success of ${info.name}: ${short(answer.raw)}`;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return `${info.name} answered ${status} with a body that is not JSON: ${short(text)}`;
    }
    if (!schema.safeParse(value).success) {
      return `${info.name} answered ${status} outside its schema: ${short(text)}`;
    }
    stats.add(stats.successes, info.name);
    const leak = leakIn(answer.raw, request.text);
    return leak === null ? null : `${info.name} leaks ${leak}: ${short(answer.raw)}`;
  }
  if (!answer.headers.get("content-type")?.startsWith("application/json")) {
    return `${status} without a JSON content type: ${short(answer.raw)}`;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return `${status} with a body that is not JSON: ${short(text)}`;
  }
  const payload = ErrorPayloadSchema.safeParse(value);
  if (!payload.success) return `${status} outside ErrorPayloadSchema: ${short(text)}`;
  const code = payload.data.errorCode;
  stats.add(stats.errorCodes, `http ${code}`);
  if (code === "ERR_INTERNAL") return `ERR_INTERNAL: ${short(answer.raw)}`;
  if (code === "ERR_TOO_MANY_REQUESTS") return "refused by the HTTP budget (lifted for this test)";
  if (statusOf(code) !== status) return `${code} with status ${status}, not ${statusOf(code)}`;
  const leak = leakIn(answer.raw, request.text);
  if (leak !== null) return `the answer leaks ${leak}: ${short(answer.raw)}`;
  if (info !== null && !(status in info.route.responses) && !ANY_ROUTE_STATUSES.has(status)) {
    return `${info.name} answered ${status} ${code}, a status its contract does not list`;
  }
  return null;
}

class HttpFuzzer {
  readonly #connections: HttpConnection[];
  constructor(readonly proc: GatewayProcess, readonly stats: Stats, workers: number) {
    this.#connections = Array.from({ length: workers }, () => new HttpConnection(proc.port));
  }

  async run(batch: HttpInput[]): Promise<void> {
    await this.#refill();
    const failures: string[] = [];
    let next = 0;
    const work = async (connection: HttpConnection) => {
      while (next < batch.length) {
        const input = batch[next++];
        const request = encodeRequest(input);
        let answer: HttpAnswer;
        try {
          answer = await connection.exchange(request.bytes, request.method);
        } catch (error) {
          failures.push(`no answer (${error}) to ${short(request.text, 400)}`);
          continue;
        }
        this.stats.add(this.stats.inputs, "http");
        const problem = checkHttp(request, answer, this.stats);
        if (problem !== null) failures.push(`${problem}\n  request: ${short(request.text, 400)}`);
        else this.#learn(input, answer);
      }
    };
    await Promise.all(this.#connections.map(work));
    if (failures.length > 0) {
      throw new assert.AssertionError({
        message: `${failures.length} HTTP answer(s) outside the contract; the first:\n${
          failures[0]
        }`,
      });
    }
  }

  close(): void {
    for (const c of this.#connections) c.close();
  }

  /** Users, tokens and sessions the requests made, for later requests to use. */
  #learn(input: HttpInput, answer: HttpAnswer): void {
    const name = ROUTES[input.route]?.name;
    if (
      name === undefined || answer.status >= 300 ||
      input.method !== ROUTES[input.route].route.method
    ) {
      return;
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(decoder.decode(answer.body));
    } catch {
      return;
    }
    if (name === "server.createUser" && typeof body.uid === "string" && pools.uids.length < 200) {
      pools.uids.push(body.uid);
    }
    if (
      name === "server.createAuthToken" && typeof body.authToken === "string" &&
      typeof body.uid === "string" && pools.tokens.length < 100
    ) {
      pools.tokens.push({ token: body.authToken, uid: body.uid });
    }
    if (name === "login" && pools.creds.length < 16) {
      const credential = (body.session as { credential?: unknown } | undefined)?.credential;
      if (typeof credential === "string") pools.creds.push(credential);
    }
    if (name === "session.logout") {
      const header = input.headers.find(([n]) => n === "authorization")?.[1];
      if (typeof header === "object" && header.tamper === null && pools.creds.length > 0) {
        pools.creds.splice(header.i % pools.creds.length, 1);
      }
    }
  }

  /** Keeps a few live sessions for the session routes. */
  async #refill(): Promise<void> {
    while (pools.creds.length < 4) {
      const uid = SEED_UIDS[pools.creds.length % SEED_UIDS.length];
      const mode = pools.creds.length % 2 === 0 ? "manual" : "auto";
      pools.creds.push((await devLogin(this.proc.url, uid, mode)).credential);
    }
  }
}

// =============================================================================================
// sockets of the users the HTTP phase sends messages to: every frame they get is checked; their
// sessions are in the pool of the session routes too (pings, disconnects, logouts over HTTP)

class MessageListeners {
  readonly #loops: Promise<void>[] = [];
  readonly failures: string[] = [];
  messages = 0;
  #stopping = false;

  /** Starts one listener per uid (each logs in and connects on its own). */
  static open(proc: GatewayProcess, uids: string[]): MessageListeners {
    const listeners = new MessageListeners();
    for (const [i, uid] of uids.entries()) {
      listeners.#loops.push(listeners.#listen(proc, uid, i % 2 === 0 ? "manual" : "auto"));
    }
    return listeners;
  }

  async #login(proc: GatewayProcess, uid: string, mode: Mode): Promise<string> {
    return (await devLogin(proc.url, uid, mode)).credential;
  }

  async #connect(proc: GatewayProcess, credential: string): Promise<RawWebSocket> {
    const ws = await RawWebSocket.open(
      proc.port,
      `${WEBSOCKET_PATH}?credential=${encodeURIComponent(credential)}`,
    );
    await ws.sendText(JSON.stringify({ type: "connect" }));
    return ws;
  }

  /**
   * Reads and checks every frame. The session is offered to the session routes once connected;
   * after a disconnect over HTTP the socket reconnects, after a logout (also one that raced the
   * reconnect: 4007) it logs in again.
   */
  async #listen(proc: GatewayProcess, uid: string, mode: Mode): Promise<void> {
    let credential = await this.#login(proc, uid, mode);
    let offered = false;
    let ws = await this.#connect(proc, credential);
    try {
      let lastPing = Date.now();
      while (!this.#stopping) {
        if (Date.now() - lastPing > 5_000) {
          lastPing = Date.now();
          await ws.sendText(JSON.stringify({ type: "ping" })).catch(() => {});
        }
        const got = await ws.next(250);
        if (got === "timeout") continue;
        if (typeof got === "string") {
          if (!this.#stopping) this.failures.push(`${uid}'s socket ended (${got}) without a close`);
          return;
        }
        if (got.opcode === OPCODE.close) {
          const code = closeCodeOf(got);
          if (code === closeCodeTable.logged_out || code === closeCodeTable.unauthorized) {
            credential = await this.#login(proc, uid, mode);
            offered = false;
          } else if (code !== closeCodeTable.client_disconnect) {
            this.failures.push(`${uid}'s socket was closed with ${code}`);
            return;
          }
          await ws[Symbol.asyncDispose]();
          ws = await this.#connect(proc, credential);
          continue;
        }
        const text = textOf(got);
        const leak = leakIn(text, "");
        if (leak !== null) {
          this.failures.push(`${uid} got a frame that leaks ${leak}: ${short(text)}`);
        }
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch {
          this.failures.push(`${uid} got a frame that is not JSON: ${short(text)}`);
          continue;
        }
        const parsed = ServerFrameSchema.safeParse(value);
        if (!parsed.success) {
          this.failures.push(`${uid} got a frame outside ServerFrameSchema: ${short(text)}`);
        } else if (parsed.data.type === "message") this.messages++;
        else if (parsed.data.type === "connected" && !offered) {
          offered = true;
          pools.creds.push(credential);
        } else if (
          parsed.data.type === "error" && parsed.data.errorCode !== "AUTH_ERR_AUTH_TOKEN_NOT_FOUND"
        ) {
          this.failures.push(`${uid} got an error: ${short(text)}`);
        }
      }
    } finally {
      await ws[Symbol.asyncDispose]();
    }
  }

  async close(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#loops);
  }
}

// =============================================================================================
// the well-behaved client

class CalmClient {
  readonly #ws: WebSocket;
  readonly #sentAt = new Map<number, number>();
  readonly #closed: Promise<CloseEvent>;
  readonly invalid: string[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #id = 0;
  #closing = false;
  unexpectedClose: number | null = null;
  pings = 0;
  pongs = 0;
  missed = 0;
  maxRttMs = 0;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.#closed = new Promise((resolve) => ws.addEventListener("close", resolve));
    ws.addEventListener("close", (event) => {
      if (!this.#closing) this.unexpectedClose = event.code;
    });
    ws.addEventListener("message", (event) => {
      const parsed = ServerFrameSchema.safeParse(JSON.parse(String(event.data)));
      if (!parsed.success) return void this.invalid.push(String(event.data));
      const frame = parsed.data;
      if (frame.type !== "pong" || typeof frame.id !== "number") return;
      const sent = this.#sentAt.get(frame.id);
      if (sent === undefined) return; // already counted as missed
      this.#sentAt.delete(frame.id);
      const rtt = performance.now() - sent;
      this.maxRttMs = Math.max(this.maxRttMs, rtt);
      if (rtt > PONG_WITHIN_MS) this.missed++;
      else this.pongs++;
    });
  }

  static async connect(wsUrl: string, credential: string): Promise<CalmClient> {
    const ws = new WebSocket(`${wsUrl}?credential=${encodeURIComponent(credential)}`);
    const client = new CalmClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "connect" })), {
        once: true,
      });
      ws.addEventListener("error", () => reject(new Error("the calm client's socket failed")), {
        once: true,
      });
      const onMessage = (event: MessageEvent) => {
        if (String(event.data).startsWith('{"type":"connected"')) {
          ws.removeEventListener("message", onMessage);
          resolve();
        }
      };
      ws.addEventListener("message", onMessage);
    });
    client.#timer = setInterval(() => client.#tick(), PING_EVERY_MS);
    return client;
  }

  #tick(): void {
    const now = performance.now();
    for (const [id, sent] of this.#sentAt) {
      if (now - sent > PONG_WITHIN_MS) {
        this.#sentAt.delete(id);
        this.missed++;
      }
    }
    if (this.#ws.readyState !== WebSocket.OPEN) return;
    const id = ++this.#id;
    this.#sentAt.set(id, now);
    this.pings++;
    this.#ws.send(JSON.stringify({ type: "ping", id }));
  }

  /** Stops pinging, waits for the last pongs, closes. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    const deadline = performance.now() + PONG_WITHIN_MS + 500;
    while (this.#sentAt.size > 0 && performance.now() < deadline) await delay(20);
    this.missed += this.#sentAt.size;
    this.#sentAt.clear();
    this.#closing = true;
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.close(1000);
    await this.#closed;
  }
}

// =============================================================================================
// the test

async function healthz(url: string): Promise<number> {
  const res = await fetch(`${url}/healthz`);
  await res.body?.cancel();
  return res.status;
}

/** A metric of the gateway's /metrics: the sum of its samples (all label sets). */
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ") || line.startsWith(name + "{")) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum;
}

async function createUser(url: string, uid: string): Promise<void> {
  const res = await fetch(`${url}/v1/apps/${DEV_APP.appId}/users`, {
    method: "POST",
    headers: { "content-type": "application/json", apikey: DEV_APP.apiKey },
    body: JSON.stringify({ uid }),
  });
  await res.body?.cancel();
  assert.ok(res.status === 201 || res.status === 409, `create ${uid}: ${res.status}`);
}

async function createToken(url: string, uid: string): Promise<string> {
  const res = await fetch(`${url}/v1/apps/${DEV_APP.appId}/users/${uid}/auth_tokens`, {
    method: "POST",
    headers: { "content-type": "application/json", apikey: DEV_APP.apiKey },
    body: "{}",
  });
  const body = await res.json();
  assert.equal(res.status, 201, JSON.stringify(body));
  return body.authToken;
}

interface Fuzzers {
  ws: WsFuzzer;
  http: HttpFuzzer;
}
interface Phase {
  name: string;
  runs: number;
  /** Runs `fc.assert` of the phase's property `numRuns` times against `fuzzers`. */
  check(fuzzers: Fuzzers, numRuns: number, seed: number): Promise<void>;
}

function wsPhase(
  name: string,
  lane: LaneKind,
  laneMode: Mode | "either",
  input: fc.Arbitrary<WsInput>,
  lastInput: fc.Arbitrary<WsInput>,
  runs: number,
  maxLength: number,
  noLastWeight: number,
): Phase {
  const modes: Mode[] = laneMode === "either" ? ["auto", "manual"] : [laneMode];
  const batches = modes.map((m) => wsBatch(lane, m, input, lastInput, maxLength, noLastWeight));
  const arbitrary = fc.oneof(
    ...modes.map((m, i) => batches[i].map((batch) => ({ mode: m, batch }))),
  );
  return {
    name,
    runs,
    check: (fuzzers, numRuns, seed) =>
      fc.assert(
        fc.asyncProperty(arbitrary, async ({ mode: m, batch }) => {
          await fuzzers.ws.run(lane, m, batch, name);
        }),
        { numRuns, seed },
      ),
  };
}

const runs = (n: number) => Math.max(1, Math.round(n * SCALE));

const PHASES: Phase[] = [
  wsPhase(
    "text before the handshake, no credential",
    "anonymous",
    "either",
    textInput,
    lastTextInput,
    runs(400),
    130,
    1,
  ),
  wsPhase(
    "text before the handshake, with a credential",
    "credentialed",
    "either",
    textInput,
    lastTextInput,
    runs(400),
    130,
    1,
  ),
  wsPhase(
    "text after the handshake (auto)",
    "connected",
    "auto",
    textInput,
    lastTextInput,
    runs(320),
    130,
    2,
  ),
  wsPhase(
    "text after the handshake (manual)",
    "connected",
    "manual",
    textInput,
    lastTextInput,
    runs(320),
    130,
    2,
  ),
  wsPhase(
    "binary before the handshake",
    "anonymous",
    "either",
    binaryInput,
    lastBinaryInput,
    runs(100),
    130,
    1,
  ),
  wsPhase(
    "binary after the handshake",
    "connected",
    "either",
    binaryInput,
    lastBinaryInput,
    runs(100),
    130,
    1,
  ),
  {
    name: "HTTP",
    runs: runs(650),
    async check(fuzzers, numRuns, seed) {
      // The recipients of the messages sent are connected: message frames are checked too.
      const listeners = MessageListeners.open(fuzzers.http.proc, SEED_UIDS);
      try {
        await fc.assert(
          fc.asyncProperty(
            fc.array(httpInput, { minLength: 1, maxLength: 80, size: "max" }),
            async (batch) => {
              await fuzzers.http.run(batch);
            },
          ),
          { numRuns, seed },
        );
      } finally {
        await listeners.close();
        fuzzers.http.stats.messages += listeners.messages;
      }
      assert.deepEqual(listeners.failures.slice(0, 3), [], "frames to the message recipients");
    },
  },
];

Deno.test("fuzz: ≥ 100 000 generated and mutated frames and requests get only contract answers; the process stays up, its RSS flat, a calm client's pongs on time", async (t) => {
  const started = performance.now();
  console.log(`fuzz seed ${SEED} (replay: FUZZ_SEED=${SEED})`);
  const proc = await GatewayProcess.start({
    env: {
      // Inputs must be processed, not refused: the budgets are tested in tests/hostile_test.ts.
      RATE_LIMIT_FRAMES_PER_SEC: "10000000",
      RATE_LIMIT_HTTP_PER_SEC: "10000000",
      RATE_LIMIT_CONNECTS_PER_SEC: "1000000",
      MAX_CONNECTIONS_PER_IP: "512",
      LOG_LEVEL: "warn",
    },
  });
  const stats = new Stats();
  let calm: CalmClient | null = null;
  let http: HttpFuzzer | null = null;
  let warmHttp: HttpFuzzer | null = null;
  try {
    // Sessions: the calm client's own user, one session per lane and mode, auth tokens.
    await createUser(proc.url, CALM_UID);
    const calmLogin = await devLogin(proc.url, CALM_UID, "auto");
    for (const uid of SEED_UIDS) {
      pools.tokens.push({ token: await createToken(proc.url, uid), uid });
    }
    const sessions = {
      credentialed: {
        auto: (await devLogin(proc.url, "superhero1", "auto")).credential,
        manual: (await devLogin(proc.url, "superhero2", "manual")).credential,
      },
      connected: {
        auto: (await devLogin(proc.url, "superhero3", "auto")).credential,
        manual: (await devLogin(proc.url, "superhero4", "manual")).credential,
      },
    };
    const fuzzers: Fuzzers = {
      ws: new WsFuzzer(proc, sessions, stats),
      http: http = new HttpFuzzer(proc, stats, 6),
    };
    calm = await CalmClient.connect(proc.wsUrl, calmLogin.credential);

    // Warm-up: a few runs of each phase (not counted), then the RSS baseline.
    const warmStats = new Stats();
    const warm: Fuzzers = {
      ws: new WsFuzzer(proc, sessions, warmStats),
      http: warmHttp = new HttpFuzzer(proc, warmStats, 6),
    };
    for (const [i, phase] of PHASES.entries()) {
      await phase.check(warm, Math.max(5, Math.round(phase.runs * WARM_UP)), SEED + 100 + i);
    }
    warm.http.close();
    await delay(2_000);
    const rssBefore = proc.rss();
    let rssPeak = rssBefore;
    const fuzzStarted = performance.now();

    for (const [i, phase] of PHASES.entries()) {
      const phaseStarted = performance.now();
      const before = stats.total("");
      await t.step(phase.name, async () => {
        await phase.check(fuzzers, phase.runs, SEED + i);
      });
      assert.ok(
        await proc.alive(),
        `the process died in "${phase.name}":\n${proc.output.slice(-20).join("\n")}`,
      );
      assert.equal(await healthz(proc.url), 200, `/healthz after "${phase.name}"`);
      const rss = proc.rss();
      rssPeak = Math.max(rssPeak, rss);
      console.log(
        `${phase.name}: ${stats.total("") - before} inputs in ${
          Math.round(performance.now() - phaseStarted)
        } ms; RSS ${(rss / MB).toFixed(1)} MB`,
      );
    }
    const fuzzMs = performance.now() - fuzzStarted;
    http.close();
    await calm.stop();
    // Every socket is closed on the client side: the gateway holds none either.
    let held = NaN;
    for (let i = 0; i < 50 && held !== 0; i++) {
      held = await metric(proc.url, "gateway_connections");
      if (held !== 0) await delay(100);
    }

    // Idle (only `ps` asks anything now): a couple of seconds, then until the memory is back
    // within the bound, or RSS_SETTLE_MS.
    const idleSince = performance.now();
    await delay(2_000);
    let rssAfter = proc.rss();
    while (
      rssAfter - rssBefore >= RSS_GROWTH_BOUND && performance.now() - idleSince < RSS_SETTLE_MS
    ) {
      await delay(250);
      rssAfter = proc.rss();
    }
    const settledMs = performance.now() - idleSince;
    const wsInputs = stats.total("ws");
    const httpInputs = stats.total("http");
    const fmt = (m: Map<string, number>) =>
      [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}: ${v}`).join(", ");
    console.log(
      `inputs: ${wsInputs + httpInputs} (${wsInputs} frames, ${httpInputs} HTTP requests) in ` +
        `${(fuzzMs / 1000).toFixed(1)} s; ${stats.socketsOpened} sockets opened\n` +
        `  ${fmt(stats.inputs)}\n` +
        `  replies: ${fmt(stats.replies)}\n  error codes: ${fmt(stats.errorCodes)}\n` +
        `  closes: ${fmt(stats.closes)}\n  HTTP statuses: ${fmt(stats.httpStatuses)}\n` +
        `  successes per route: ${fmt(stats.successes)}\n` +
        `  message frames to the connected recipients: ${stats.messages}; connections the ` +
        `gateway holds at the end: ${held}\n` +
        `RSS: ${(rssBefore / MB).toFixed(1)} MB after the warm-up, peak ${
          (rssPeak / MB).toFixed(1)
        } MB, ${(rssAfter / MB).toFixed(1)} MB after ${(settledMs / 1000).toFixed(1)} s idle ` +
        `(bound: +${RSS_GROWTH_BOUND / MB} MB)\n` +
        `calm client: ${calm.pings} pings, ${calm.pongs} pongs within ${PONG_WITHIN_MS} ms, ` +
        `${calm.missed} missed, slowest ${calm.maxRttMs.toFixed(0)} ms\n` +
        `whole test: ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );

    const errors = proc.output.filter((line) => line.includes('"level":"error"'));
    assert.deepEqual(errors.slice(0, 5), [], "the gateway logged errors");
    assert.ok(
      wsInputs + httpInputs >= MIN_INPUTS * SCALE,
      `${wsInputs + httpInputs} inputs, fewer than ${MIN_INPUTS * SCALE}`,
    );
    assert.ok(
      rssAfter - rssBefore < RSS_GROWTH_BOUND,
      `RSS still ${((rssAfter - rssBefore) / MB).toFixed(1)} MB over its baseline after ` +
        `${RSS_SETTLE_MS / 1000} s idle`,
    );
    assert.equal(held, 0, "connections the gateway still holds after every client closed");
    assert.ok(stats.messages > 0 || SCALE < 1, "no message reached a connected recipient");
    assert.deepEqual(calm.invalid, [], "the calm client got frames outside the contract");
    assert.equal(calm.unexpectedClose, null, "the calm client's socket was closed");
    assert.equal(calm.missed, 0, "pongs missed by the calm client");
    assert.ok(calm.pongs > 0);
  } finally {
    warmHttp?.close();
    http?.close();
    await calm?.stop();
    await proc.terminate();
    await proc.cleanup();
  }
});

// =============================================================================================
// Gateway bugs the fuzzing found (now fixed), as minimal regression cases.

/** Writes a raw request on a new connection and reads the answer until the server ends it. */
async function rawAnswer(port: number, request: string): Promise<HttpAnswer> {
  const connection = new HttpConnection(port);
  try {
    return await connection.exchange(encoder.encode(request), "GET");
  } finally {
    connection.close();
  }
}

Deno.test("fuzz regression: an upgrade with a malformed Sec-WebSocket-Protocol gets the error payload, not ws's text/html", async () => {
  await using gateway = await startTestGateway();
  const port = Number(new URL(gateway.url).port);
  // Empty, an empty element, a space inside a token, a duplicate, a character no token has.
  for (const protocols of ["", "liveness.v1,", "a b", "liveness.v1, liveness.v1", "a@b"]) {
    const answer = await rawAnswer(
      port,
      `GET ${WEBSOCKET_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n" +
        `Sec-WebSocket-Protocol: ${protocols}\r\n\r\n`,
    );
    // Before the fix: `HTTP/1.1 400`, `Content-Type: text/html`, body `Invalid
    // Sec-WebSocket-Protocol header` (ws's abortHandshake).
    assert.equal(
      answer.headers.get("content-type")?.startsWith("application/json"),
      true,
      `Sec-WebSocket-Protocol ${JSON.stringify(protocols)}: ${short(answer.raw)}`,
    );
    const payload = ErrorPayloadSchema.parse(JSON.parse(decoder.decode(answer.body)));
    assert.equal(payload.errorCode, "ERR_BAD_REQUEST");
    assert.equal(answer.status, statusOf("ERR_BAD_REQUEST"));
  }
});
