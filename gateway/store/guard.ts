/**
 * A store shared over the network (Redis) can be away. A call that fails while it is away is
 * answered as the contract's `ERR_SERVICE_UNAVAILABLE` (503: try again), not as an internal
 * error; other failures pass as they are.
 */
import { GatewayError } from "../errors.ts";
import type { GatewayStore } from "./types.ts";

const AWAY = "The store is unreachable; nothing was changed: try again.";

export function answerUnavailableWhileAway(
  store: GatewayStore,
  connected: () => boolean,
): GatewayStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== "function") return value;
      // Called on the store itself: its private fields are not the proxy's.
      if (property === "close") return value.bind(target);
      return (...args: unknown[]) => {
        const result = value.apply(target, args);
        if (!(result instanceof Promise)) return result;
        return result.catch((error: unknown) => {
          if (error instanceof GatewayError) throw error;
          // The connection may be back by the time the failure is handled: the error says it too.
          if (connected() && !isConnectionError(error)) throw error;
          throw new GatewayError("ERR_SERVICE_UNAVAILABLE", AWAY);
        });
      };
    },
  });
}

/** A failure of the connection to Redis (ioredis's errors), not of the call. */
export function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  return error.name === "MaxRetriesPerRequestError" ||
    /Stream isn't writeable|Connection is closed|Command timed out|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT/
      .test(error.message);
}
