/**
 * Token buckets: `ratePerSec` tokens a second, up to `burst`. Refilled lazily on use, so an
 * idle bucket costs nothing.
 */
export class TokenBucket {
  #tokens: number;
  #updatedAt: number;

  constructor(
    readonly ratePerSec: number,
    readonly burst: number,
    now: number,
    /** Tokens at the start (default: a full bucket). */
    initial = burst,
  ) {
    this.#tokens = Math.min(burst, initial);
    this.#updatedAt = now;
  }

  /** Takes one token; false when the budget is spent. */
  take(now: number): boolean {
    this.#refill(now);
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /**
   * Takes `tokens` whatever is left, down to one burst of debt: a penalty that the refill pays
   * back before the next take succeeds.
   */
  charge(now: number, tokens: number): void {
    this.#refill(now);
    this.#tokens = Math.max(-this.burst, this.#tokens - tokens);
  }

  #refill(now: number): void {
    if (now <= this.#updatedAt) return;
    this.#tokens = Math.min(
      this.burst,
      this.#tokens + ((now - this.#updatedAt) * this.ratePerSec) / 1000,
    );
    this.#updatedAt = now;
  }

  /** Whether the bucket is full again (it can be forgotten). */
  isFull(now: number): boolean {
    return this.#tokens + ((now - this.#updatedAt) * this.ratePerSec) / 1000 >= this.burst;
  }
}

/** One bucket per key (client address), swept of full buckets now and then. */
export class KeyedRateLimiter {
  readonly #buckets = new Map<string, TokenBucket>();
  #lastSweep = 0;

  constructor(readonly ratePerSec: number, readonly burst: number) {}

  take(key: string, now: number): boolean {
    if (now - this.#lastSweep > 60_000) this.#sweep(now);
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = new TokenBucket(this.ratePerSec, this.burst, now);
      this.#buckets.set(key, bucket);
    }
    return bucket.take(now);
  }

  /** Charges `tokens` to `key` (see `TokenBucket.charge`). */
  charge(key: string, now: number, tokens: number): void {
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = new TokenBucket(this.ratePerSec, this.burst, now);
      this.#buckets.set(key, bucket);
    }
    bucket.charge(now, tokens);
  }

  #sweep(now: number): void {
    this.#lastSweep = now;
    for (const [key, bucket] of this.#buckets) if (bucket.isFull(now)) this.#buckets.delete(key);
  }
}
