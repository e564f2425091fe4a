/**
 * `deno task config:docs`: writes docs/configuration.md from `EnvSchema` (gateway/config.ts),
 * so the documented variables, defaults and rules are the ones the gateway reads and checks.
 * tests/config_test.ts fails when the committed page differs from what this writes.
 */
import {
  AppConfigSchema,
  CONFIG_RULES,
  describeEnvironment,
  DEV_APP,
  type EnvVarDoc,
  RESOLUTION_NOTES,
} from "./config.ts";

export const CONFIG_DOCS_FILE = new URL("../docs/configuration.md", import.meta.url);

export function renderConfigDocs(): string {
  const appFields = Object.keys(AppConfigSchema.shape).map((key) => `\`${key}\``).join(", ");
  return [
    "# Configuration",
    "",
    "<!-- Generated from EnvSchema in gateway/config.ts by `deno task config:docs`; edit the " +
    "schema, not this page. -->",
    "",
    ...wrap(
      "The gateway reads its configuration from environment variables, plus the `--dev` flag " +
        "of `gateway/main.ts` (below). An " +
        "empty variable counts as unset. Every value is checked at start-up: a bad one stops " +
        "the process with exit code 2 and a message that names the variable and what to fix.",
    ),
    "",
    ...wrap(`Apps come from APPS_FILE or APPS_JSON: a JSON array of objects with ${appFields}.`),
    "",
    ...wrap(
      "Most deployments set SESSION_SECRET, APPS_FILE or APPS_JSON, PORT, HOST, KV_PATH and " +
        "LOG_LEVEL; behind a reverse proxy, also the per-address limits, since every client " +
        "then has the proxy's address ([security.md](security.md#limits) says what each limit " +
        "protects). " +
        "Running the gateway: [operations.md](operations.md).",
    ),
    "",
    ...wrap(
      `\`--dev\` (what \`deno task serve\` passes) adds the development app \`${DEV_APP.appId}\` ` +
        `(region \`${DEV_APP.region}\`) with public, labelled keys and ` +
        `${DEV_APP.seedUsers?.length ?? 0} seeded users, signs with a labelled development ` +
        "session secret, and binds 127.0.0.1 unless HOST is set. Never run `--dev` in " +
        "production: set SESSION_SECRET and your apps instead. The gateway refuses to sign " +
        "any other app's credentials with the public development secret.",
    ),
    "",
    ...markdownTable(
      ["variable", "default", "meaning"],
      describeEnvironment().map((variable) => [
        `\`${variable.name}\``,
        defaultCell(variable),
        meaningCell(variable),
      ]),
    ),
    "",
    "## Rules between values",
    "",
    "The gateway refuses to start unless all of these hold:",
    "",
    ...CONFIG_RULES.flatMap(({ rule }) => wrap(rule, "- ")),
    "",
    "## How values are resolved",
    "",
    ...RESOLUTION_NOTES.flatMap((note) => wrap(note, "- ")),
    "",
  ].join("\n");
}

/** `deno fmt`'s line width for this repository (deno.json `fmt.lineWidth`). */
const LINE_WIDTH = 100;

/**
 * Prose filled greedily to LINE_WIDTH, as `deno fmt` fills it, so the generated page passes
 * `deno fmt --check`; `marker` starts a list item, whose later lines are indented to match.
 */
function wrap(text: string, marker = ""): string[] {
  const indent = " ".repeat(marker.length);
  const lines: string[] = [];
  let line = marker;
  for (const word of text.split(" ")) {
    const start = line === marker || line === indent;
    if (!start && [...line].length + 1 + [...word].length > LINE_WIDTH) {
      lines.push(line);
      line = indent + word;
    } else {
      line += start ? word : ` ${word}`;
    }
  }
  return [...lines, line];
}

function defaultCell(variable: EnvVarDoc): string {
  if (variable.defaultLabel !== undefined) return variable.defaultLabel;
  if (variable.defaultValue === undefined) return "(none)";
  // Numbers read as themselves; text is shown as the literal to type.
  return typeof variable.defaultValue === "number"
    ? String(variable.defaultValue)
    : `\`${variable.defaultValue}\``;
}

function meaningCell(variable: EnvVarDoc): string {
  return variable.accepts === undefined
    ? variable.description
    : `${variable.description}; ${variable.accepts}`;
}

/**
 * A Markdown table padded the way `deno fmt` pads it, so the generated page passes
 * `deno fmt --check` byte for byte.
 */
function markdownTable(header: string[], rows: string[][]): string[] {
  const cells = [header, ...rows].map((row) => row.map(escapeCell));
  const widths = header.map((_, column) =>
    Math.max(3, ...cells.map((row) => [...row[column]].length))
  );
  const line = (row: string[]) =>
    `| ${
      row.map((cell, column) => cell.padEnd(widths[column] + cell.length - [...cell].length)).join(
        " | ",
      )
    } |`;
  return [
    line(cells[0]),
    `| ${widths.map((width) => "-".repeat(width)).join(" | ")} |`,
    ...cells.slice(1).map(line),
  ];
}

function escapeCell(text: string): string {
  return text.replaceAll("|", "\\|");
}

if (import.meta.main) {
  await Deno.writeTextFile(CONFIG_DOCS_FILE, renderConfigDocs());
  console.log(`wrote ${CONFIG_DOCS_FILE.pathname}`);
}
