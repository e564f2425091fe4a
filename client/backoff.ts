/**
 * Reconnection delays: exponential backoff with full jitter.
 *
 * The delay before retry number `attempt` (0 for the first retry) is
 *
 *     ceiling(attempt) = min(maxDelayMs, minDelayMs · 2^attempt)
 *     delay(attempt)   = minDelayMs + ⌊random() · (ceiling(attempt) − minDelayMs)⌋
 *
 * so `minDelayMs ≤ delay(attempt) < max(minDelayMs + 1, ceiling(attempt))` and never more than
 * `maxDelayMs`. "Full jitter" spreads the retries of many clients that lost the same gateway
 * over the whole interval instead of bunching them at its end (the AWS Architecture Blog's
 * "Exponential Backoff And Jitter"; centrifuge-js's `backoff()` in `src/utils.ts` is the same
 * idea with a floor). The floor keeps a flapping network from turning into a busy loop.
 */

/** Bounds of the reconnection backoff. */
export interface BackoffOptions {
  /** Smallest delay, and the base that doubles per attempt. Default 500 ms. */
  minDelayMs: number;
  /** Largest delay. Default 20 000 ms. */
  maxDelayMs: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = { minDelayMs: 500, maxDelayMs: 20_000 };

/** Upper bound (exclusive, unless equal to the floor) of the delay of retry `attempt`. */
export function backoffCeiling(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const { minDelayMs, maxDelayMs } = options;
  // 2^30 already exceeds any sane maxDelayMs; clamping keeps the product finite.
  const exponent = Math.min(Math.max(0, Math.floor(attempt)), 30);
  return Math.min(maxDelayMs, minDelayMs * 2 ** exponent);
}

/**
 * The delay before retry `attempt` (0-based), with `random` returning a number in [0, 1)
 * like `Math.random`.
 */
export function backoffDelay(
  attempt: number,
  random: () => number,
  options: BackoffOptions = DEFAULT_BACKOFF,
): number {
  const ceiling = backoffCeiling(attempt, options);
  const r = Math.min(Math.max(random(), 0), 1 - Number.EPSILON);
  return Math.min(
    options.maxDelayMs,
    options.minDelayMs + Math.floor(r * Math.max(0, ceiling - options.minDelayMs)),
  );
}
