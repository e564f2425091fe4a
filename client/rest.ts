/**
 * The typed REST client, derived from the contract by ts-rest: every route, body and reply
 * type comes from `contract/`, none is written here.
 */
import { initClient } from "@ts-rest/core";
import { contract } from "../contract/mod.ts";

export interface RestClientOptions {
  /** Gateway origin, e.g. `http://127.0.0.1:8000`. */
  baseUrl: string;
  /** Headers sent on every call (e.g. `apikey` for the server API). */
  baseHeaders?: Record<string, string>;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
}

/** Creates the typed REST client for a gateway. */
export function createRestClient(options: RestClientOptions) {
  const fetchImpl = options.fetch ?? globalThis.fetch;
  return initClient(contract, {
    baseUrl: options.baseUrl.replace(/\/$/, ""),
    baseHeaders: options.baseHeaders ?? {},
    validateResponse: false,
    api: async ({ path, method, headers, body }) => {
      const response = await fetchImpl(path, { method, headers, body });
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = text === "" ? undefined : JSON.parse(text);
      } catch {
        // Not JSON: hand the text back as it is.
      }
      return { status: response.status, body: parsed, headers: response.headers };
    },
  });
}

export type RestClient = ReturnType<typeof createRestClient>;
