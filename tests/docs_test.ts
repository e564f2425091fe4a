/**
 * The docs say what the code does. The tables of docs/protocol.md that restate the contract
 * (routes, frames, close codes, error codes) are compared with it both ways: every entry of
 * the contract is documented once, and nothing documented is unknown to it. The testing
 * page lists every test file and every task. Every relative link of README.md and docs/
 * resolves, anchors included; every environment variable they name exists; and their prose
 * speaks about the project, not about the day it was written (no diary words, no commit
 * hashes).
 *
 * Environment variables are documented once, in the generated docs/configuration.md; other
 * pages link there instead of tabulating defaults (checked below).
 */
import assert from "node:assert/strict";
import {
  ApiKeyHeadersSchema,
  ClientFrameSchema,
  closeCodeTable,
  contract,
  errorCatalog,
  type ErrorCode,
  errorCodes,
  ServerFrameSchema,
  SessionHeadersSchema,
} from "../contract/mod.ts";
import { ENV_VARS } from "../gateway/config.ts";

const ROOT = new URL("../", import.meta.url);

/** The pages a reader of the repository reads: README.md and every page under docs/. */
function pages(): string[] {
  const docs = [...Deno.readDirSync(new URL("docs/", ROOT))]
    .filter((entry) => entry.isFile && entry.name.endsWith(".md"))
    .map((entry) => `docs/${entry.name}`)
    .sort();
  return ["README.md", ...docs];
}

function read(path: string): string {
  return Deno.readTextFileSync(new URL(path, ROOT));
}

function exists(path: string): boolean {
  try {
    Deno.statSync(new URL(path, ROOT));
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// A little Markdown: enough for the pages of this repository (ATX headings, pipe tables,
// fenced code blocks, inline links).

/** The text with fenced code blocks blanked out (line count kept, so line numbers hold). */
function withoutFences(text: string): string {
  let inFence = false;
  return text.split("\n").map((line) => {
    if (/^\s*(```|~~~)/.test(line)) {
      inFence = !inFence;
      return "";
    }
    return inFence ? "" : line;
  }).join("\n");
}

/** Inline code spans replaced by a placeholder, so what they quote is not read as Markdown. */
function withoutCodeSpans(text: string): string {
  return text.replace(/`[^`\n]+`/g, "`code`");
}

/** The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, "")
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

/** Every anchor of a page, with GitHub's -1, -2 … suffixes for repeated headings. */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const line of withoutFences(text).split("\n")) {
    const match = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!match) continue;
    const base = slug(match[1]);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  return result;
}

/** The lines under a heading (its exact text), up to the next heading of its level or above. */
function section(text: string, heading: string): string {
  const lines = text.split("\n");
  const start = lines.findIndex((line) => line === heading);
  assert.ok(start >= 0, `no heading "${heading}"`);
  const level = heading.indexOf(" ");
  const end = lines.findIndex((line, i) =>
    i > start && /^#{1,6} /.test(line) && line.indexOf(" ") <= level
  );
  return lines.slice(start + 1, end === -1 ? undefined : end).join("\n");
}

/** The cells of one table row; `\|` stays inside its cell. */
function cells(row: string): string[] {
  return row.trim().replace(/^\|/, "").replace(/\|$/, "").split(/(?<!\\)\|/).map((cell) =>
    cell.trim().replaceAll("\\|", "|")
  );
}

/** The tables of a piece of Markdown: header cells and body rows. */
function tables(text: string): Array<{ header: string[]; rows: string[][] }> {
  const result: Array<{ header: string[]; rows: string[][] }> = [];
  const lines = withoutFences(text).split("\n");
  for (let i = 0; i + 1 < lines.length; i++) {
    if (!lines[i].startsWith("|") || !/^\|(\s*:?-{3,}:?\s*\|)+\s*$/.test(lines[i + 1])) continue;
    const header = cells(lines[i]);
    const rows: string[][] = [];
    let j = i + 2;
    for (; j < lines.length && lines[j].startsWith("|"); j++) rows.push(cells(lines[j]));
    result.push({ header, rows });
    i = j;
  }
  return result;
}

/** The one table under a heading. */
function tableUnder(text: string, heading: string): { header: string[]; rows: string[][] } {
  const found = tables(section(text, heading));
  assert.equal(found.length, 1, `expected one table under "${heading}", found ${found.length}`);
  return found[0];
}

/** The text of the first inline code span of a cell, if any. */
function firstCode(cell: string): string | undefined {
  return /`([^`]+)`/.exec(cell)?.[1];
}

/** Every value that occurs more than once. */
function repeated<T>(values: T[]): T[] {
  return [...new Set(values.filter((value, i) => values.indexOf(value) !== i))];
}

// ---------------------------------------------------------------------------------------------
// The Markdown helpers, on inputs whose answers are known (GitHub's anchors, a table with an
// escaped pipe), so that the checks below cannot pass because a helper reads nothing.

Deno.test("docs helpers: anchors and tables read the way GitHub renders them", () => {
  const page = [
    "# The client",
    "## Bundle for browsers and Node",
    "## Auto and manual mode",
    "### `RUN_SLOW`, CI",
    "## Errors",
    "## Errors",
    "```md",
    "## not a heading",
    "```",
    "| a | b |",
    "| --- | --- |",
    "| `x \\| y` | 2 |",
  ].join("\n");
  assert.deepEqual(
    [...anchors(page)],
    [
      "the-client",
      "bundle-for-browsers-and-node",
      "auto-and-manual-mode",
      "run_slow-ci",
      "errors",
      "errors-1",
    ],
  );
  assert.deepEqual(tables(page), [{ header: ["a", "b"], rows: [["`x | y`", "2"]] }]);
});

// ---------------------------------------------------------------------------------------------
// docs/protocol.md against the contract.

const PROTOCOL = "docs/protocol.md";

interface ContractRoute {
  method: string;
  path: string;
  headers?: unknown;
}

/** Every route of the ts-rest router, however deeply nested. */
function contractRoutes(router: object = contract): ContractRoute[] {
  return Object.values(router).flatMap((entry) =>
    typeof entry === "object" && entry !== null && "method" in entry && "path" in entry
      ? [entry as ContractRoute]
      : contractRoutes(entry as object)
  );
}

/** How a route is authenticated, in the words of the table's auth column. */
function authOf(route: ContractRoute): "bearer" | "apikey" | "none" {
  if (route.headers === SessionHeadersSchema) return "bearer";
  if (route.headers === ApiKeyHeadersSchema) return "apikey";
  assert.equal(route.headers, undefined, `${route.path}: headers the docs test does not know`);
  return "none";
}

Deno.test("docs/protocol.md: the route table lists every contract route once, with its auth", () => {
  const { rows } = tableUnder(read(PROTOCOL), "## HTTP routes");
  const documented = rows.map(([, route, auth]) => {
    const text = firstCode(route);
    assert.ok(text && /^(GET|POST|PUT|PATCH|DELETE) \/\S+$/.test(text), `not a route: ${route}`);
    const kind = /bearer/i.test(auth) ? "bearer" : /apikey/.test(auth) ? "apikey" : auth;
    return `${text} ${kind === "—" ? "none" : kind}`;
  });
  const expected = contractRoutes().map((route) =>
    `${route.method} ${route.path.replace(/:(\w+)/g, "{$1}")} ${authOf(route)}`
  );
  assert.deepEqual(repeated(documented), [], "a route documented twice");
  assert.deepEqual(documented.toSorted(), expected.toSorted());
});

Deno.test("docs/protocol.md: the frame table lists every frame type of both directions", () => {
  const { header, rows } = tableUnder(read(PROTOCOL), "## The WebSocket");
  assert.deepEqual(header, ["client → server", "server → client"]);
  const column = (i: number) => rows.map((row) => firstCode(row[i])).filter((t) => t !== undefined);
  const typesOf = (union: typeof ClientFrameSchema | typeof ServerFrameSchema) =>
    union.options.map((option) => option.shape.type.value as string);
  assert.deepEqual(column(0), typesOf(ClientFrameSchema));
  assert.deepEqual(column(1), typesOf(ServerFrameSchema));
});

Deno.test("docs/protocol.md: the close-code table is contract/close_codes.ts, each reason once", () => {
  const { rows } = tableUnder(read(PROTOCOL), "## Close codes");
  const documented = rows.map(([reason, code]) => [firstCode(reason) ?? reason, Number(code)]);
  assert.deepEqual(repeated(documented.map(([reason]) => reason)), [], "a reason documented twice");
  assert.deepEqual(
    Object.fromEntries(documented),
    { ...closeCodeTable },
    "docs/protocol.md's close codes differ from closeCodeTable",
  );
});

/** Codes the gateway never sends: no file under gateway/ names them; only the client raises them. */
async function clientOnlyCodes(): Promise<Set<ErrorCode>> {
  const sources: string[] = [];
  const walk = async (dir: URL) => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await walk(new URL(`${entry.name}/`, dir));
      else if (entry.name.endsWith(".ts")) {
        sources.push(await Deno.readTextFile(new URL(entry.name, dir)));
      }
    }
  };
  await walk(new URL("gateway/", ROOT));
  return new Set(
    errorCodes.filter((code) => !sources.some((source) => source.includes(`"${code}"`))),
  );
}

Deno.test("docs/protocol.md: the error table is errorCatalog (code, HTTP status, description)", async () => {
  const { header, rows } = tableUnder(read(PROTOCOL), "## Errors");
  assert.deepEqual(header, ["errorCode", "HTTP", "when", "default `errorDescription`"]);
  const clientOnly = await clientOnlyCodes();
  const documented = rows.map(([code, status, , description]) => ({
    code: firstCode(code) ?? code,
    status,
    description,
  }));
  assert.deepEqual(repeated(documented.map((row) => row.code)), [], "a code documented twice");
  assert.deepEqual(
    documented.map((row) => row.code).toSorted(),
    [...errorCodes].sort(),
    "every code of contract/errors.ts is documented, and no other",
  );
  for (const { code, status, description } of documented) {
    const entry = errorCatalog[code as ErrorCode];
    // A code only the client raises never reaches HTTP, whatever status the catalog gives it.
    const expected = clientOnly.has(code as ErrorCode) ? "—" : String(entry.status);
    assert.equal(status, expected, `${code}: HTTP status`);
    assert.equal(description, entry.description, `${code}: errorDescription`);
  }
});

// ---------------------------------------------------------------------------------------------
// docs/testing.md against the repository.

Deno.test("docs/testing.md links every test file", () => {
  const testing = read("docs/testing.md");
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(new URL(dir, ROOT))) {
      if (entry.isDirectory) walk(`${dir}${entry.name}/`);
      else if (/(_test|\.test)\.ts$/.test(entry.name)) files.push(`${dir}${entry.name}`);
    }
  };
  walk("tests/");
  const missing = files.filter((file) => !testing.includes(`](../${file})`));
  assert.deepEqual(missing, [], "test files docs/testing.md does not describe");
});

Deno.test("docs/testing.md: the task table lists every task of deno.json", () => {
  const { tasks } = JSON.parse(read("deno.json")) as { tasks: Record<string, string> };
  const { rows } = tableUnder(read("docs/testing.md"), "## Tasks");
  const documented = rows.map(([task]) => firstCode(task)?.replace(/^deno task /, ""));
  assert.deepEqual(documented.toSorted(), Object.keys(tasks).sort());
});

// ---------------------------------------------------------------------------------------------
// Every page.

/** Every inline link of a page outside code: its target and the line it is on. */
function links(text: string): Array<{ target: string; line: number }> {
  const found: Array<{ target: string; line: number }> = [];
  withoutCodeSpans(withoutFences(text)).split("\n").forEach((line, i) => {
    for (const match of line.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      found.push({ target: match[1], line: i + 1 });
    }
  });
  return found;
}

Deno.test("README.md and docs/: every relative link points to a file, and every anchor to a heading", () => {
  const broken: string[] = [];
  for (const page of pages()) {
    const base = new URL(page, ROOT);
    for (const { target, line } of links(read(page))) {
      const where = `${page}:${line}: ${target}`;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      if (target.startsWith("/")) {
        broken.push(`${where} (an absolute path: link files relatively, name URLs as code)`);
        continue;
      }
      const [path, anchor] = target.split("#", 2);
      const file = path === "" ? base : new URL(path, base);
      const relative = decodeURIComponent(file.href.slice(ROOT.href.length));
      if (!exists(relative)) {
        broken.push(`${where} (no such file)`);
        continue;
      }
      if (
        anchor !== undefined && relative.endsWith(".md") && !anchors(read(relative)).has(anchor)
      ) {
        broken.push(`${where} (no such heading in ${relative})`);
      }
    }
  }
  assert.deepEqual(broken, []);
});

/** Upper-case names that are not environment variables of the gateway or error codes. */
const OTHER_NAMES = new Set([
  "RUN_SLOW", // switches on the slow test group
  "NODE_BIN", // the Node the bundle test runs
  "GATEWAY_URL", // where the examples find the gateway
  "EMFILE", // an errno
  "SIGTERM",
  "SIGINT",
  "PATH",
]);

Deno.test("README.md and docs/: every environment variable they name exists", () => {
  const known = new Set<string>([...Object.keys(ENV_VARS), ...errorCodes, ...OTHER_NAMES]);
  const unknown: string[] = [];
  for (const page of pages()) {
    withoutFences(read(page)).split("\n").forEach((line, i) => {
      // Names in code (`PORT`) and names with an underscore anywhere (SESSION_SECRET).
      const names = [
        ...[...line.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]),
        ...[...line.matchAll(/(?<![\w.-])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?![\w-])/g)].map((m) =>
          m[0]
        ),
      ];
      for (const name of names) if (!known.has(name)) unknown.push(`${page}:${i + 1}: ${name}`);
    });
  }
  assert.deepEqual(unknown, [], "not a variable in gateway/config.ts (renamed or removed?)");
});

Deno.test("README.md and docs/: only docs/configuration.md tabulates defaults", () => {
  const offending = pages()
    .filter((page) => page !== "docs/configuration.md")
    .filter((page) =>
      tables(read(page)).some(({ header }) => header.some((cell) => /^defaults?$/i.test(cell)))
    );
  assert.deepEqual(offending, [], "link docs/configuration.md instead of restating defaults");
});

const DIARY = /\b(today|yesterday|last run|previous machine|this session)\b/gi;
/** Lower-case hex of 7 to 40 characters with a letter and a digit: what a commit hash looks like. */
const COMMIT_HASH = /(?<![\w-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w-])/g;

Deno.test("README.md and docs/: the prose speaks about the project, not about a day of work", () => {
  const found: string[] = [];
  for (const page of pages()) {
    withoutFences(read(page)).split("\n").forEach((line, i) => {
      for (const match of line.matchAll(DIARY)) found.push(`${page}:${i + 1}: "${match[0]}"`);
      for (const match of line.matchAll(COMMIT_HASH)) found.push(`${page}:${i + 1}: ${match[0]}`);
    });
  }
  assert.deepEqual(found, []);
});

Deno.test("docs prose checks: they see a diary word and a commit hash", () => {
  // The patterns above, on lines that must trip them and lines that must not.
  assert.equal("Measured today on the previous machine".match(DIARY)?.length, 2);
  assert.equal("at commit 2c581a0, then b770829".match(COMMIT_HASH)?.length, 2);
  assert.equal("2592000000 ms, deadbeef, 0x6d2b79f5, cred-1a2b3c4d5e".match(COMMIT_HASH), null);
});
