/**
 * `deno task build:client`: bundles the client into `dist/` for browsers and Node.
 *
 * - `dist/client.js`: one self-contained ES module (zod and ts-rest inlined), built by
 *   `deno bundle --platform browser`, importable from `<script type="module">` and from
 *   Node 22+.
 * - `dist/client.d.ts`: its declarations, from `deno bundle --declaration`. They refer to the
 *   types of `zod` and `@ts-rest/core` (the schemas and the REST client are public), so a
 *   TypeScript consumer installs those two as dev dependencies; the JavaScript needs nothing.
 *
 * Why a script rather than one command: emitting declarations type-checks the npm packages'
 * own `.d.ts` files, and ts-rest 3.53's still refer to zod 3 names. `deno check` skips
 * library files; the bundler needs `skipLibCheck` said explicitly, so this script runs it with
 * a copy of `deno.json` that adds it, then rewrites the cache paths of npm packages in the
 * declarations into bare package names.
 */
const root = new URL("../", import.meta.url);
const dist = new URL("dist/", root);
const deno = Deno.execPath();

async function run(args: string[]): Promise<void> {
  const { code } = await new Deno.Command(deno, { args, cwd: root, stdout: "inherit" }).output();
  if (code !== 0) throw new Error(`deno ${args.join(" ")} failed with exit code ${code}`);
}

await Deno.mkdir(dist, { recursive: true });
const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
config.compilerOptions = { ...config.compilerOptions, skipLibCheck: true };
const tmp = await Deno.makeTempDir({ prefix: "client-build-" });
const configPath = `${tmp}/deno.json`;
await Deno.writeTextFile(configPath, JSON.stringify(config));
try {
  await run([
    "bundle",
    "--quiet",
    "--config",
    configPath,
    "--no-lock",
    "--platform",
    "browser",
    "--format",
    "esm",
    "--declaration",
    "--output",
    "dist/client.js",
    "client/mod.ts",
  ]);
} finally {
  await Deno.remove(tmp, { recursive: true });
}

// `import("file:///…/npm/registry.npmjs.org/@ts-rest/core/3.53.0-rc.1/index.cjs.d.ts")`
// → `import("@ts-rest/core")`: the consumer resolves the packages itself.
const dtsUrl = new URL("client.d.ts", dist);
const dts = (await Deno.readTextFile(dtsUrl)).replace(
  /(["'])file:\/\/\/[^"']*?\/registry\.npmjs\.org\/((?:@[^/"']+\/)?[^/"']+)\/[^/"']+\/[^"']*\1/g,
  (_match, quote: string, name: string) => `${quote}${name}${quote}`,
);
if (/file:\/\//.test(dts)) throw new Error("dist/client.d.ts still refers to local files");
await Deno.writeTextFile(dtsUrl, hoistImports(dts));

const size = (await Deno.stat(new URL("client.js", dist))).size;
console.log(`dist/client.js (${Math.round(size / 1024)} KiB), dist/client.d.ts`);

/**
 * The bundled declarations keep each module's own `import { z } from "zod"`, which in one file
 * are duplicate identifiers: merge them into one `import type` per package, at the top.
 */
function hoistImports(text: string): string {
  const names = new Map<string, Set<string>>();
  const body = text.replace(
    /^import (?:type )?\{([^}]*)\} from "([^"]+)";\n/gm,
    (_line, list: string, from: string) => {
      const set = names.get(from) ?? new Set<string>();
      for (const item of list.split(",")) {
        const name = item.trim().replace(/^type\s+/, "");
        if (name !== "") set.add(name);
      }
      names.set(from, set);
      return "";
    },
  );
  const imports = [...names].map(([from, set]) =>
    `import type { ${[...set].sort().join(", ")} } from "${from}";\n`
  );
  return imports.join("") + body;
}
