/**
 * The typed REST client, derived from the contract by ts-rest: every route, body and reply
 * type comes from `contract/`, none is written here.
 */
import { type ApiFetcher, initClient, type InitClientReturn } from "@ts-rest/core";
import { type Contract, contract } from "../contract/mod.ts";

export interface RestClientOptions {
  /** Gateway origin, e.g. `http://127.0.0.1:8000`. */
  baseUrl: string;
  /** Headers sent on every call (e.g. `apikey` for the server API). */
  baseHeaders?: Record<string, string>;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
}

/** The client arguments `createRestClient` passes to ts-rest (they shape the call types). */
interface RestClientArgs {
  baseUrl: string;
  baseHeaders: Record<string, string>;
  validateResponse: false;
  api: ApiFetcher;
}

/** The typed REST client: one function per contract route. */
export type RestClient = InitClientReturn<Contract, RestClientArgs>;

/** Creates the typed REST client for a gateway. */
export function createRestClient(options: RestClientOptions): RestClient {
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
