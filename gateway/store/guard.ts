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
      if (typeof value !== "function" || property === "close") return value;
      return (...args: unknown[]) => {
        const result = value.apply(target, args);
        if (!(result instanceof Promise)) return result;
        return result.catch((error: unknown) => {
          if (error instanceof GatewayError || connected()) throw error;
          throw new GatewayError("ERR_SERVICE_UNAVAILABLE", AWAY);
        });
      };
    },
  });
}
