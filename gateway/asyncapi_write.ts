/** `deno task asyncapi`: writes the AsyncAPI document to `asyncapi.json` (kept in the repo). */
import { buildAsyncApiDocument } from "./asyncapi.ts";

export const ASYNCAPI_FILE = new URL("../asyncapi.json", import.meta.url);

export function renderAsyncApi(): string {
  return JSON.stringify(buildAsyncApiDocument(), null, 2) + "\n";
}

if (import.meta.main) {
  await Deno.writeTextFile(ASYNCAPI_FILE, renderAsyncApi());
  console.log(`wrote ${ASYNCAPI_FILE.pathname}`);
}
