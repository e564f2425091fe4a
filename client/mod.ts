/**
 * The typed client of the gateway.
 * @module
 */
export { createRestClient, type RestClient, type RestClientOptions } from "./rest.ts";
export {
  type DecodeResult,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientFrame,
  encodeServerFrame,
} from "./codec.ts";
export * from "../contract/mod.ts";
