/** Structured logs: level filtering, one JSON object per line, redaction, defensive rendering. */
import assert from "node:assert/strict";
import { createLogger, isLogLevel, type LogLevel } from "../gateway/log.ts";

/** A logger writing into an array, and the lines parsed back. */
function capture(level: LogLevel) {
  const lines: { line: string; level: LogLevel }[] = [];
  const logger = createLogger(level, (line, lineLevel) => lines.push({ line, level: lineLevel }));
  const records = () => lines.map(({ line }) => JSON.parse(line) as Record<string, unknown>);
  return { logger, lines, records };
}

Deno.test("log: lines below the level are dropped without reading their fields", () => {
  const { logger, lines } = capture("info");
  const fields = {
    get costly(): string {
      throw new Error("a dropped line's fields must not be read");
    },
  };
  logger.debug("cache.miss", fields);
  assert.equal(lines.length, 0);
  assert.equal(logger.enabled("debug"), false);
  assert.equal(logger.enabled("info"), true);
  assert.equal(logger.enabled("error"), true);

  const warnOnly = capture("warn");
  warnOnly.logger.info("x", fields);
  warnOnly.logger.debug("x", fields);
  warnOnly.logger.warn("kept");
  warnOnly.logger.error("kept too");
  assert.deepEqual(warnOnly.lines.map((l) => l.level), ["warn", "error"]);
});

Deno.test("log: one JSON object per line, time, level and event first", () => {
  const { logger, lines, records } = capture("debug");
  logger.info("gateway.listening", { port: 8080, hostname: "0.0.0.0" });
  logger.debug("d");
  assert.equal(lines.length, 2);
  assert.ok(!lines[0].line.includes("\n"));
  assert.equal(lines[0].level, "info");
  assert.deepEqual(Object.keys(records()[0]), ["time", "level", "event", "port", "hostname"]);
  const [first, second] = records();
  assert.match(String(first.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(first.level, "info");
  assert.equal(first.event, "gateway.listening");
  assert.equal(first.port, 8080);
  assert.deepEqual(Object.keys(second), ["time", "level", "event"]);
});

Deno.test("log: a field cannot overwrite time, level or event", () => {
  const { logger, records } = capture("info");
  logger.info("real", { event: "fake", level: "error", time: 0 });
  const [record] = records();
  assert.equal(record.event, "real");
  assert.equal(record.level, "info");
  assert.equal(record._event, "fake");
  assert.equal(record._level, "error");
  assert.equal(record._time, 0);
});

Deno.test("log: child fields are on every line; a line's own fields win", () => {
  const { logger, records } = capture("info");
  const child = logger.child({ connId: "c1", appId: "demo" }).child({ uid: "u1" });
  child.info("socket.open");
  child.info("socket.close", { appId: "other" });
  const [open, close] = records();
  assert.equal(open.connId, "c1");
  assert.equal(open.uid, "u1");
  assert.equal(open.appId, "demo");
  assert.equal(close.appId, "other");
  assert.equal(child.level, "info");
  assert.equal(child.enabled("debug"), false);
});

Deno.test("log: credential-looking keys are redacted at any depth", () => {
  const { logger, lines, records } = capture("info");
  const secrets = {
    credential: "cred-1",
    authToken: "tok-1",
    token: "tok-2",
    apiKey: "key-1",
    apikey: "key-2",
    authKey: "key-3",
    secret: "sec-1",
    sessionSecret: "sec-2",
    Authorization: "Bearer xyz",
    PASSWORD: "hunter2",
    "x-api-key": "key-4",
    refreshToken: "tok-3",
  };
  logger.info("login", {
    ...secrets,
    nested: { deeper: { headers: { authorization: "Bearer abc" }, list: [{ password: "p" }] } },
    map: new Map([["apiKey", "key-5"]]),
    tokenCount: 3,
    uid: "u1",
  });
  const line = lines[0].line;
  for (const value of ["cred-1", "tok-", "key-", "sec-", "xyz", "hunter2", "abc", '"p"']) {
    assert.ok(!line.includes(value), `${value} leaked: ${line}`);
  }
  const [record] = records();
  for (const key of Object.keys(secrets)) assert.equal(record[key], "[redacted]", key);
  assert.deepEqual(record.nested, {
    deeper: { headers: { authorization: "[redacted]" }, list: [{ password: "[redacted]" }] },
  });
  assert.deepEqual(record.map, { apiKey: "[redacted]" });
  assert.equal(record.tokenCount, 3);
  assert.equal(record.uid, "u1");
});

Deno.test("log: child fields are redacted too", () => {
  const { logger, lines } = capture("info");
  logger.child({ sessionSecret: "s3cr3t" }).info("x");
  assert.ok(!lines[0].line.includes("s3cr3t"));
});

Deno.test("log: errors are written as name and message, the stack only at debug", () => {
  const info = capture("info");
  const error = new TypeError("bad input");
  info.logger.error("request.failed", { error, nested: { cause: new RangeError("r") } });
  const [record] = info.records();
  assert.deepEqual(record.error, { name: "TypeError", message: "bad input" });
  assert.deepEqual(record.nested, { cause: { name: "RangeError", message: "r" } });

  const debug = capture("debug");
  debug.logger.error("request.failed", { error });
  const withStack = debug.records()[0].error as Record<string, unknown>;
  assert.equal(withStack.name, "TypeError");
  assert.match(String(withStack.stack), /bad input/);
});

Deno.test("log: cycles, BigInt, throwing getters, deep nesting and odd values never throw", () => {
  const { logger, lines, records } = capture("info");
  const cyclic: Record<string, unknown> = { name: "loop" };
  cyclic.self = cyclic;
  const shared = { n: 1 };
  let deep: Record<string, unknown> = { bottom: true };
  for (let i = 0; i < 50; i++) deep = { down: deep };
  const hostile = {
    get boom(): never {
      throw new Error("getter");
    },
    toString(): never {
      throw new Error("toString");
    },
  };
  const throwingToJSON = {
    toJSON(): never {
      throw new Error("toJSON");
    },
  };
  logger.info("odd", {
    cyclic,
    big: 12345678901234567890n,
    hostile,
    throwingToJSON,
    deep,
    both: [shared, shared],
    notANumber: NaN,
    infinite: -Infinity,
    missing: undefined,
    nothing: null,
    symbol: Symbol("s"),
    fn: function named() {},
    date: new Date(0),
    bytes: new Uint8Array(16),
    set: new Set([1, 2]),
    url: new URL("https://example.com/a?b=c"),
    long: "x".repeat(10_000),
  });
  assert.equal(lines.length, 1);
  const [record] = records();
  assert.deepEqual(record.cyclic, { name: "loop", self: "[circular]" });
  assert.equal(record.big, "12345678901234567890");
  assert.deepEqual(record.hostile, { boom: "[unreadable]", toString: "[function toString]" });
  assert.equal(record.throwingToJSON, "[unrenderable]");
  assert.match(JSON.stringify(record.deep), /\[truncated\]/);
  assert.deepEqual(record.both, [{ n: 1 }, { n: 1 }]);
  assert.equal(record.notANumber, "NaN");
  assert.equal(record.infinite, "-Infinity");
  assert.ok(!("missing" in record));
  assert.equal(record.nothing, null);
  assert.equal(record.symbol, "Symbol(s)");
  assert.equal(record.fn, "[function named]");
  assert.equal(record.date, "1970-01-01T00:00:00.000Z");
  assert.equal(record.bytes, "[Uint8Array 16 bytes]");
  assert.deepEqual(record.set, [1, 2]);
  assert.equal(record.url, "https://example.com/a?b=c");
  assert.ok(String(record.long).length < 5_000);
});

Deno.test("log: a throwing sink does not reach the caller", () => {
  const logger = createLogger("info", () => {
    throw new Error("stdout closed");
  });
  logger.error("still fine");
});

Deno.test("log: the default sink writes info to stdout and errors to stderr", () => {
  const out: unknown[] = [];
  const err: unknown[] = [];
  const { log, error } = console;
  console.log = (...args: unknown[]) => out.push(...args);
  console.error = (...args: unknown[]) => err.push(...args);
  try {
    const logger = createLogger("debug");
    logger.debug("a");
    logger.info("b");
    logger.warn("c");
    logger.error("d");
  } finally {
    console.log = log;
    console.error = error;
  }
  assert.deepEqual(out.map((line) => JSON.parse(String(line)).event), ["a", "b"]);
  assert.deepEqual(err.map((line) => JSON.parse(String(line)).event), ["c", "d"]);
});

Deno.test("log: isLogLevel", () => {
  assert.equal(isLogLevel("warn"), true);
  assert.equal(isLogLevel("verbose"), false);
});
