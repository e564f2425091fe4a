/**
 * Runs the official AsyncAPI parser on a document and prints what it found, as one JSON line:
 * its diagnostics, and each operation as the parser reads it (action, messages, reply).
 *
 * A separate Deno project (its own deno.json and lockfile), run as a subprocess by
 * tests/asyncapi_test.ts: the parser brings some 160 npm packages, and a package in the root
 * lockfile is downloaded by every first `deno task serve`, though only this test needs it.
 *
 *   deno run --config tests/asyncapi_parser/deno.json --allow-read --allow-env \
 *     tests/asyncapi_parser/validate.ts asyncapi.json
 */
import { Parser } from "@asyncapi/parser";

const text = await Deno.readTextFile(Deno.args[0]);
const parser = new Parser();
const diagnostics = (await parser.validate(text)).map((d) => ({
  severity: d.severity,
  code: String(d.code),
  message: d.message,
  path: d.path.map(String),
}));
const { document } = await parser.parse(text);
const operations = Object.fromEntries(
  (document?.operations().all() ?? []).map((op) => [
    op.id(),
    {
      action: op.action(),
      messages: op.messages().all().map((m) => m.name()),
      reply: op.reply()?.messages().all().map((m) => m.name()) ?? [],
    },
  ]),
);
console.log(JSON.stringify({ parsed: document !== undefined, diagnostics, operations }));
