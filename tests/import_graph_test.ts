/**
 * The module graph of gateway/, contract/ and client/, read from the source text: no import
 * cycles, and only the HTTP layer (gateway/routes/) and the app assembly (gateway/app.ts)
 * depend on gateway/routes/, so the core never reaches up into HTTP code.
 *
 * Type-only imports count: they vanish from the emitted JavaScript, which is exactly why a
 * cycle made of them goes unnoticed until someone turns one of them into a value import.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const SCANNED_DIRS = ["gateway", "contract", "client"];
const ROUTES_DIR = "gateway/routes/";
/** Outside routes/, the only module that may mount the HTTP routes. */
const APP_ASSEMBLY = "gateway/app.ts";

/** Every `.ts` file under `dir`, as a path relative to the repository root. */
async function tsFilesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(new URL(dir, ROOT))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...await tsFilesUnder(path));
    else if (entry.isFile && path.endsWith(".ts")) found.push(path);
  }
  return found;
}

/** Removes comments, keeping string literals, so that a code sample in JSDoc is not read. */
function withoutComments(source: string): string {
  let out = "";
  let i = 0;
  while (i < source.length) {
    const c = source[i];
    const next = source[i + 1];
    if (c === "/" && next === "/") {
      while (i < source.length && source[i] !== "\n") i++;
    } else if (c === "/" && next === "*") {
      const end = source.indexOf("*/", i + 2);
      i = end === -1 ? source.length : end + 2;
    } else if (c === '"' || c === "'" || c === "`") {
      // A template's `${…}` may hold nested quotes; imports never sit inside templates, so
      // copying a template to its closing backtick is enough here.
      const start = i++;
      while (i < source.length && source[i] !== c) i += source[i] === "\\" ? 2 : 1;
      out += source.slice(start, ++i);
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/**
 * The specifiers of a module's static imports and re-exports, type-only ones included:
 * `import x from`, `import type { … } from` (over several lines too), `export * from`,
 * `export { … } from`, `export type { … } from`, and side-effect `import "…"`.
 */
function staticSpecifiers(source: string): string[] {
  const code = withoutComments(source);
  const statement =
    /^[ \t]*(?:import|export)\b[^;"'`]*?\bfrom\s*(["'])([^"']+)\1|^[ \t]*import\s*(["'])([^"']+)\3/gm;
  return [...code.matchAll(statement)].map((match) => match[2] ?? match[4]);
}

/** Resolves a relative specifier against the importing file; null for packages (`npm:`, `hono`). */
function resolveRelative(from: string, specifier: string): string | null {
  if (!specifier.startsWith("./") && !specifier.startsWith("../")) return null;
  const url = new URL(specifier, new URL(from, ROOT));
  return url.pathname.slice(ROOT.pathname.length);
}

type Graph = Map<string, string[]>;

async function importGraph(): Promise<Graph> {
  const files = (await Promise.all(SCANNED_DIRS.map(tsFilesUnder))).flat().sort();
  const graph: Graph = new Map();
  for (const file of files) {
    const source = await Deno.readTextFile(new URL(file, ROOT));
    const targets = staticSpecifiers(source)
      .map((specifier) => resolveRelative(file, specifier))
      .filter((target): target is string => target !== null);
    graph.set(file, [...new Set(targets)]);
  }
  return graph;
}

/**
 * One cycle for each back edge met by a depth-first walk, written `a.ts → b.ts → a.ts`.
 * The graph has a cycle exactly when such a walk meets a back edge, so none found means none.
 */
function cyclesOf(graph: Graph): string[] {
  const done = new Set<string>();
  const path: string[] = [];
  const onPath = new Set<string>();
  const cycles = new Set<string>();
  const visit = (node: string) => {
    path.push(node);
    onPath.add(node);
    for (const target of graph.get(node) ?? []) {
      if (onPath.has(target)) {
        cycles.add([...path.slice(path.indexOf(target)), target].join(" → "));
      } else if (!done.has(target) && graph.has(target)) {
        visit(target);
      }
    }
    onPath.delete(node);
    path.pop();
    done.add(node);
  };
  for (const node of graph.keys()) if (!done.has(node)) visit(node);
  return [...cycles];
}

Deno.test("import graph: the parser reads every form of static import, and no comment", () => {
  const source = `
/** Example: import { nope } from "./in_jsdoc.ts"; */
// import { nope } from "./in_line_comment.ts";
import { a } from "./a.ts";
import type { B } from "./b.ts";
import {
  type C,
  d,
} from "../c.ts";
import * as e from "./e.ts";
import f, { g } from './f.ts';
import "./side_effect.ts";
export * from "./g.ts";
export { h } from "./h.ts";
export type { I } from "./i.ts";
import { z } from "zod";
const text = "import { nope } from './in_string.ts'";
`;
  assert.deepEqual(staticSpecifiers(source), [
    "./a.ts",
    "./b.ts",
    "../c.ts",
    "./e.ts",
    "./f.ts",
    "./side_effect.ts",
    "./g.ts",
    "./h.ts",
    "./i.ts",
    "zod",
  ]);
});

Deno.test("import graph: the cycle finder names a cycle made of type-only edges", () => {
  const graph: Graph = new Map([
    ["x.ts", ["y.ts"]],
    ["y.ts", ["z.ts"]],
    ["z.ts", ["x.ts", "w.ts"]],
    ["w.ts", []],
  ]);
  assert.deepEqual(cyclesOf(graph), ["x.ts → y.ts → z.ts → x.ts"]);
  assert.deepEqual(cyclesOf(new Map([["x.ts", ["y.ts"]], ["y.ts", []]])), []);
});

Deno.test("import graph: gateway/, contract/ and client/ have no import cycle", async () => {
  const graph = await importGraph();
  assert.ok(graph.has("gateway/connection.ts"), "the walk found the gateway's modules");
  assert.ok(
    (graph.get("gateway/connection.ts") ?? []).includes("gateway/user_state.ts"),
    "type-only imports are edges",
  );
  const cycles = cyclesOf(graph);
  assert.deepEqual(cycles, [], `import cycles:\n  ${cycles.join("\n  ")}`);
});

Deno.test("import graph: only routes/ and the app assembly import gateway/routes/", async () => {
  const graph = await importGraph();
  const offenders = [...graph].flatMap(([file, targets]) =>
    file.startsWith("gateway/") && !file.startsWith(ROUTES_DIR) && file !== APP_ASSEMBLY
      ? targets.filter((target) => target.startsWith(ROUTES_DIR)).map((t) => `${file} → ${t}`)
      : []
  );
  assert.deepEqual(offenders, [], `core modules importing HTTP code:\n  ${offenders.join("\n  ")}`);
});
