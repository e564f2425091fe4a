/**
 * Deadlines kept in memory, in buckets of `tickMs`, with one timer armed for the earliest
 * bucket. Moving a deadline (a manual-mode ping in background) is two Set operations, not a
 * `clearTimeout` + `setTimeout` pair, which would cost about a quarter of the ping throughput.
 *
 * A key lands in the bucket at or after its deadline, so it never fires early; it fires at
 * most `tickMs` plus event-loop lag late.
 */
import type { Clock, TimerHandle } from "./clock.ts";

export class DeadlineWheel<K> {
  readonly #clock: Clock;
  readonly #tickMs: number;
  readonly #onDue: (key: K, now: number) => void;
  readonly #onError: (error: unknown) => void;
  /** key → its deadline. */
  readonly #deadlines = new Map<K, number>();
  /** bucket time → keys due by then. */
  readonly #buckets = new Map<number, Set<K>>();
  /** Min-heap of bucket times that have (or had) keys. */
  readonly #heap: number[] = [];
  #timer: TimerHandle | null = null;
  #timerAt = Infinity;
  #closed = false;

  constructor(
    clock: Clock,
    tickMs: number,
    onDue: (key: K, now: number) => void,
    onError: (error: unknown) => void = (error) => console.error("deadline handler failed", error),
  ) {
    this.#clock = clock;
    this.#tickMs = Math.max(1, tickMs);
    this.#onDue = onDue;
    this.#onError = onError;
  }

  /** Number of keys with a deadline. */
  get size(): number {
    return this.#deadlines.size;
  }

  /** The deadline of `key`, if any. */
  deadlineOf(key: K): number | undefined {
    return this.#deadlines.get(key);
  }

  /** Sets (or moves) the deadline of `key`. */
  schedule(key: K, at: number): void {
    if (this.#closed) return;
    const previous = this.#deadlines.get(key);
    if (previous !== undefined) {
      if (previous === at) return;
      this.#buckets.get(this.#bucketOf(previous))?.delete(key);
    }
    this.#deadlines.set(key, at);
    const bucket = this.#bucketOf(at);
    let keys = this.#buckets.get(bucket);
    if (keys === undefined) {
      keys = new Set();
      this.#buckets.set(bucket, keys);
      heapPush(this.#heap, bucket);
    }
    keys.add(key);
    if (bucket < this.#timerAt) this.#arm();
  }

  /** Removes the deadline of `key`. */
  cancel(key: K): void {
    const previous = this.#deadlines.get(key);
    if (previous === undefined) return;
    this.#deadlines.delete(key);
    this.#buckets.get(this.#bucketOf(previous))?.delete(key);
    // The bucket stays in the heap; an empty bucket is skipped when it falls due.
  }

  /** Disarms the timer and forgets every deadline. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    this.#deadlines.clear();
    this.#buckets.clear();
    this.#heap.length = 0;
  }

  #bucketOf(at: number): number {
    return Math.ceil(at / this.#tickMs) * this.#tickMs;
  }

  #arm(): void {
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
    // Drop empty buckets from the top so no timer is armed for nothing.
    while (this.#heap.length > 0) {
      const top = this.#heap[0];
      const keys = this.#buckets.get(top);
      if (keys !== undefined && keys.size > 0) break;
      this.#buckets.delete(top);
      heapPop(this.#heap);
    }
    if (this.#heap.length === 0 || this.#closed) return;
    const at = this.#heap[0];
    this.#timerAt = at;
    this.#timer = this.#clock.setTimer(() => this.#fire(), Math.max(0, at - this.#clock.now()));
  }

  #fire(): void {
    this.#timer = null;
    this.#timerAt = Infinity;
    const now = this.#clock.now();
    while (this.#heap.length > 0 && this.#heap[0] <= now && !this.#closed) {
      const bucket = heapPop(this.#heap)!;
      const keys = this.#buckets.get(bucket);
      this.#buckets.delete(bucket);
      if (keys === undefined) continue;
      for (const key of keys) {
        const at = this.#deadlines.get(key);
        if (at === undefined) continue;
        if (at > now) {
          // Cannot happen with ceil bucketing, but never fire a key early.
          this.schedule(key, at);
          continue;
        }
        this.#deadlines.delete(key);
        try {
          this.#onDue(key, now);
        } catch (error) {
          // One failing handler must not stop the others from firing.
          this.#onError(error);
        }
      }
    }
    this.#arm();
  }
}

function heapPush(heap: number[], value: number): void {
  heap.push(value);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent] <= heap[i]) break;
    [heap[parent], heap[i]] = [heap[i], heap[parent]];
    i = parent;
  }
}

function heapPop(heap: number[]): number | undefined {
  if (heap.length === 0) return undefined;
  const top = heap[0];
  const last = heap.pop()!;
  if (heap.length > 0) {
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && heap[left] < heap[smallest]) smallest = left;
      if (right < heap.length && heap[right] < heap[smallest]) smallest = right;
      if (smallest === i) break;
      [heap[smallest], heap[i]] = [heap[i], heap[smallest]];
      i = smallest;
    }
  }
  return top;
}
