/**
 * What the client takes from its host, each injectable so that tests can replace it: the
 * clock and timers, randomness, fetch, the WebSocket constructor, and the page's visibility.
 */

/** Time and timers. The default is `Date.now` with the global `setTimeout`. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Runs `callback` once after `ms`; returns a handle for {@link Clock.clearTimeout}. */
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The host's clock and timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as number),
};

/** A WebSocket constructor: the global one (browsers, Deno, Node 22+), or e.g. npm `ws`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/** The part of `document` that drives the app state in a browser. */
export interface VisibilitySource {
  readonly visibilityState: string;
  addEventListener(type: "visibilitychange", listener: () => void): void;
  removeEventListener(type: "visibilitychange", listener: () => void): void;
}

/** `globalThis.document` when the client runs in a page. */
export function pageDocument(): VisibilitySource | undefined {
  const doc = (globalThis as { document?: VisibilitySource }).document;
  return doc !== undefined && typeof doc.addEventListener === "function" ? doc : undefined;
}

/** WebSocket readyState values (the constants are not on every implementation's prototype). */
export const WS_CONNECTING = 0;
export const WS_OPEN = 1;
export const WS_CLOSED = 3;
