/**
 * Structured logs: one JSON object per line, `{"time","level","event",...fields}`.
 *
 * Two promises callers rely on:
 * - a line below the logger's level costs one comparison: its fields are never read;
 * - logging never throws, whatever the fields hold (cycles, BigInt, throwing getters, deep
 *   nesting), and never writes a credential: secret-looking keys are written as "[redacted]".
 * @module
 */

export type LogLevel = "debug" | "info" | "warn" | "error";

/** Every level, least severe first. */
export const logLevels: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** Fields of a log line; any value is accepted and rendered defensively. */
export type LogFields = Record<string, unknown>;

/** Where finished lines go. `line` is one JSON object, without a trailing newline. */
export type LogSink = (line: string, level: LogLevel) => void;

export interface Logger {
  /** The lowest level this logger writes. */
  readonly level: LogLevel;
  debug(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line (a line's own fields win on a clash). */
  child(fields: LogFields): Logger;
  /** Whether a line at `level` would be written: check it before building costly fields. */
  enabled(level: LogLevel): boolean;
}

/** Whether a string (an environment variable, say) names a level. */
export function isLogLevel(value: string): value is LogLevel {
  return (logLevels as readonly string[]).includes(value);
}

/**
 * A logger writing lines at `level` and above to `sink`; by default debug and info go to
 * `console.log` (stdout), warn and error to `console.error` (stderr).
 */
export function createLogger(level: LogLevel, sink: LogSink = consoleSink): Logger {
  return new JsonLogger(level, sink, {});
}

const severity: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

function consoleSink(line: string, level: LogLevel): void {
  if (level === "warn" || level === "error") console.error(line);
  else console.log(line);
}

/** The keys every line starts with; a field of the same name is written as `_<name>`. */
const RESERVED_KEYS = new Set(["time", "level", "event"]);

class JsonLogger implements Logger {
  readonly level: LogLevel;
  readonly #threshold: number;
  readonly #sink: LogSink;
  /** The child's fields, rendered once when the child is made (a snapshot, never re-read). */
  readonly #bound: Record<string, JsonValue>;

  constructor(level: LogLevel, sink: LogSink, bound: Record<string, JsonValue>) {
    this.level = level;
    this.#threshold = severity[level];
    this.#sink = sink;
    this.#bound = bound;
  }

  enabled(level: LogLevel): boolean {
    return severity[level] >= this.#threshold;
  }

  debug(event: string, fields?: LogFields): void {
    if (this.#threshold <= 0) this.#write("debug", event, fields);
  }

  info(event: string, fields?: LogFields): void {
    if (this.#threshold <= 1) this.#write("info", event, fields);
  }

  warn(event: string, fields?: LogFields): void {
    if (this.#threshold <= 2) this.#write("warn", event, fields);
  }

  error(event: string, fields?: LogFields): void {
    this.#write("error", event, fields);
  }

  child(fields: LogFields): Logger {
    const own = renderFields(fields, this.#threshold === 0);
    return new JsonLogger(this.level, this.#sink, { ...this.#bound, ...own });
  }

  #write(level: LogLevel, event: string, fields: LogFields | undefined): void {
    let line: string;
    try {
      const record: Record<string, JsonValue> = {
        time: new Date().toISOString(),
        level,
        event: String(event),
      };
      const own = fields === undefined ? {} : renderFields(fields, this.#threshold === 0);
      for (const source of [this.#bound, own]) {
        for (const key of Object.keys(source)) {
          record[RESERVED_KEYS.has(key) ? `_${key}` : key] = source[key];
        }
      }
      line = JSON.stringify(record);
    } catch (error) {
      // Unreachable by design (fields are rendered to plain JSON first); kept so that a bug
      // in the renderer still yields a line rather than an exception in the caller.
      line = JSON.stringify({
        time: new Date().toISOString(),
        level,
        event: safeString(event),
        logError: safeString(error),
      });
    }
    try {
      this.#sink(line, level);
    } catch {
      // A broken sink (closed stdout) must not take the gateway down with it.
    }
  }
}

// ---- rendering fields to plain JSON ----

type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Nesting beyond this many levels below a field is written as "[truncated]". */
const MAX_DEPTH = 6;
/** Longer strings are cut: a log line is not the place for a request body. */
const MAX_STRING_CHARS = 4096;
/** At most this many array items or object keys are written per container. */
const MAX_ENTRIES = 100;

const REDACTED = "[redacted]";

/**
 * Credential-looking keys, compared lower-cased with `-`/`_` removed, as a whole key or its
 * ending (`sessionToken`, `x-api-key`, `clientSecret`, `adminPassword`) and with an optional
 * plural `s`. Endings catch compound names without touching `tokenCount` or `secretary`.
 */
const SECRET_KEY =
  /(?:credential|authtoken|token|apikey|authkey|secret|sessionsecret|authorization|password)s?$/;

function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key.toLowerCase().replace(/[-_]/g, ""));
}

function renderFields(fields: LogFields, withStack: boolean): Record<string, JsonValue> {
  const rendered = renderValue(fields, 0, [], withStack);
  return typeof rendered === "object" && rendered !== null && !Array.isArray(rendered)
    ? rendered
    : { fields: rendered };
}

/**
 * `value` as plain JSON. Every property read is guarded (getters and proxies may throw),
 * `ancestors` catches cycles (a shared object that is not its own ancestor is written twice,
 * as JSON would), and depth, string length and entry counts are capped.
 */
function renderValue(
  value: unknown,
  depth: number,
  ancestors: object[],
  withStack: boolean,
): JsonValue {
  switch (typeof value) {
    case "string":
      return value.length > MAX_STRING_CHARS
        ? `${value.slice(0, MAX_STRING_CHARS)}…[+${value.length - MAX_STRING_CHARS} chars]`
        : value;
    case "number":
      // JSON has no NaN or Infinity (JSON.stringify would write null).
      return Number.isFinite(value) ? value : String(value);
    case "boolean":
      return value;
    case "bigint":
      return value.toString();
    case "undefined":
      return null;
    case "symbol":
      return value.toString();
    case "function":
      return `[function ${safeString(readProperty(value, "name")) || "anonymous"}]`;
  }
  if (value === null) return null;
  const object = value as object;
  if (ancestors.includes(object)) return "[circular]";
  if (depth >= MAX_DEPTH) return "[truncated]";
  ancestors.push(object);
  try {
    return renderObject(object, depth, ancestors, withStack);
  } catch {
    return "[unrenderable]";
  } finally {
    ancestors.pop();
  }
}

function renderObject(
  object: object,
  depth: number,
  ancestors: object[],
  withStack: boolean,
): JsonValue {
  const next = (item: unknown) => renderValue(item, depth + 1, ancestors, withStack);
  if (object instanceof Error) {
    const rendered: Record<string, JsonValue> = {
      name: safeString(readProperty(object, "name")),
      message: safeString(readProperty(object, "message")),
    };
    if (withStack) rendered.stack = safeString(readProperty(object, "stack"));
    return rendered;
  }
  if (object instanceof Date) {
    return Number.isNaN(object.getTime()) ? "Invalid Date" : object.toISOString();
  }
  if (ArrayBuffer.isView(object) || object instanceof ArrayBuffer) {
    return `[${object.constructor.name} ${object.byteLength} bytes]`;
  }
  if (Array.isArray(object) || object instanceof Set) {
    const size = Array.isArray(object) ? object.length : object.size;
    const rendered = firstEntries(object).map(next);
    if (size > MAX_ENTRIES) rendered.push(`[+${size - MAX_ENTRIES} more]`);
    return rendered;
  }
  // URL, Temporal and the like have no own keys but say what they are through toJSON; what
  // it returns is rendered (and redacted) like any other value.
  const toJSON = readProperty(object, "toJSON");
  if (typeof toJSON === "function" && !(object instanceof Map)) {
    return renderValue(toJSON.call(object), depth + 1, ancestors, withStack);
  }
  let size: number;
  let entries: [string, unknown][];
  if (object instanceof Map) {
    size = object.size;
    entries = firstEntries(object).map(([key, item]) => [safeString(key), item]);
  } else {
    const keys = Object.keys(object);
    size = keys.length;
    entries = keys.slice(0, MAX_ENTRIES).map((key) => [key, readProperty(object, key)]);
  }
  const rendered: Record<string, JsonValue> = {};
  for (const [key, item] of entries) {
    if (item === undefined) continue; // as JSON.stringify: an absent value, not a null
    rendered[key] = isSecretKey(key) ? REDACTED : next(item);
  }
  if (size > MAX_ENTRIES) rendered["[more]"] = size - MAX_ENTRIES;
  return rendered;
}

/** The first MAX_ENTRIES items, without copying a large collection whole. */
function firstEntries<T>(items: Iterable<T>): T[] {
  const taken: T[] = [];
  for (const item of items) {
    if (taken.length === MAX_ENTRIES) break;
    taken.push(item);
  }
  return taken;
}

function readProperty(object: object, key: string): unknown {
  try {
    return (object as Record<string, unknown>)[key];
  } catch {
    return "[unreadable]";
  }
}

/** `String(value)` that cannot throw (a symbol, or an object whose toString throws). */
function safeString(value: unknown): string {
  try {
    return typeof value === "string" ? value : String(value);
  } catch {
    return "[unprintable]";
  }
}
