/** `deno task openapi`: writes the OpenAPI document to `openapi.json` (kept in the repo). */
import { buildOpenApiDocument } from "./openapi.ts";

export const OPENAPI_FILE = new URL("../openapi.json", import.meta.url);

export function renderOpenApi(): string {
  return JSON.stringify(buildOpenApiDocument(), null, 2) + "\n";
}

if (import.meta.main) {
  await Deno.writeTextFile(OPENAPI_FILE, renderOpenApi());
  console.log(`wrote ${OPENAPI_FILE.pathname}`);
}
