/**
 * The client's reader of the user's event stream: it turns what the gateway sends — replayed
 * and live `message` frames, this session's own `sent` frames, and pages of the history route —
 * into ONE sequence of events, each handed over exactly once and in seq order.
 *
 * The rules (the gateway's side is in contract/events.ts):
 * - the reader keeps the stream position `{ epoch, seq }`: the last event it handed over;
 * - an event at or below that seq was handed over already: ignored;
 * - the next seq is handed over at once;
 * - a seq further on is a gap (defensive: the gateway sends no gaps on one connection): the
 *   reader pages the history route for what is missing, and buffers live events meanwhile;
 * - `connected.stream` says whether the gateway replays from the position (`recovered`). If
 *   not, the reader pages the history route from its position (or from seq 0 of the stream when
 *   the position is not of this stream), buffering the live events that arrive meanwhile, then
 *   hands over the buffered ones that the history did not hold;
 * - a client with no position at all (`no_position`) starts at the stream's head: it receives
 *   what happens from now on, not the user's history.
 *
 * It holds no socket and no storage: the client feeds it frames, gives it a way to read a
 * history page, and persists the position it reports (after the events were handed over).
 */
import type { HistoryPage, Message, StreamPosition, StreamStatus } from "../contract/mod.ts";
import type { Clock } from "./platform.ts";

/** What the reader needs from its owner. */
export interface StreamReaderOptions {
  /** One page of the history route: the events after `after`, at most `limit` of them. */
  fetchPage(after: number, limit: number): Promise<HistoryPage>;
  /** Events per history page. */
  pageSize: number;
  /**
   * The next event of the stream, exactly once and in seq order. `sent` is true when it came
   * as this session's own `sent` frame.
   */
  handOver(seq: number, message: Message, sent: boolean): void;
  /** The position moved: called after the events up to it were handed over. */
  positionChanged(position: StreamPosition): void;
  /** A history page failed; the reader tries again after `retryDelay(attempt)` ms. */
  pageFailed(error: unknown): void;
  retryDelay(attempt: number): number;
  clock: Clock;
}

interface LiveEvent {
  seq: number;
  message: Message;
  sent: boolean;
}

/** See the module's description. */
export class StreamReader {
  readonly #options: StreamReaderOptions;
  #position: StreamPosition | null = null;
  /** Bumped by every new connection and every reset: a catch-up of an older one stops. */
  #generation = 0;
  #catchingUp = false;
  /** Live events that arrived while the history is paged; handed over after it. */
  #buffer: LiveEvent[] = [];
  #retryTimer: unknown = null;
  /** Ends the wait of a catch-up that detach() stops. */
  #cancelWait: (() => void) | null = null;
  /** Catch-ups not ended yet, also abandoned ones whose page is still on its way. */
  readonly #running = new Set<Promise<void>>();

  constructor(options: StreamReaderOptions) {
    this.#options = options;
  }

  /** The last event handed over (the position to resume from), or null before any stream. */
  get position(): StreamPosition | null {
    return this.#position;
  }

  /** Whether the history route is being paged. */
  get catchingUp(): boolean {
    return this.#catchingUp;
  }

  /** Resolves when no catch-up runs, nor waits for a page (so that nothing outlives its owner). */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.all([...this.#running]);
  }

  /** Another user (or none): starts over from `position` (a stored one, or null). */
  reset(position: StreamPosition | null): void {
    this.detach();
    this.#position = position === null ? null : { ...position };
  }

  /**
   * The connection ended (or a new one begins): what it buffered is dropped and its catch-up
   * stops. Nothing is lost: the position only moves when an event is handed over, and the next
   * connection resumes from it.
   */
  detach(): void {
    this.#generation++;
    this.#catchingUp = false;
    this.#buffer = [];
    if (this.#retryTimer !== null) {
      this.#options.clock.clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
    this.#cancelWait?.();
    this.#cancelWait = null;
  }

  /** The `connected` frame's stream status: decides between replay, history and a fresh start. */
  connected(stream: StreamStatus): void {
    this.detach();
    const position = this.#position;
    if (position === null) {
      // Nothing stored: this client starts at the head (live events follow `stream.seq`).
      this.#moveTo({ epoch: stream.epoch, seq: stream.seq });
      return;
    }
    if (stream.recovered) return; // The replayed `message` frames follow.
    if (
      stream.epoch !== position.epoch || stream.reason === "epoch_changed" ||
      stream.reason === "ahead_of_stream"
    ) {
      // The position is not of this stream: all of this stream is new to this client.
      this.#position = { epoch: stream.epoch, seq: 0 };
    }
    this.#startCatchUp();
  }

  /** A `message` frame (`sent` false) or this session's own non-duplicate `sent` frame. */
  event(seq: number, message: Message, sent: boolean): void {
    const position = this.#position;
    if (position === null) return; // Before `connected`: the gateway sends nothing then.
    if (this.#catchingUp) {
      this.#buffer.push({ seq, message, sent });
      return;
    }
    if (seq <= position.seq) return; // Handed over already (a replay that overlaps).
    if (seq === position.seq + 1) {
      this.#handOver(seq, message, sent);
      this.#reportPosition();
      return;
    }
    // A gap: what lies between is in the history.
    this.#buffer.push({ seq, message, sent });
    this.#startCatchUp();
  }

  #startCatchUp(): void {
    this.#catchingUp = true;
    const running = this.#catchUp(this.#generation);
    this.#running.add(running);
    void running.finally(() => this.#running.delete(running));
  }

  /**
   * Pages the history from the position until it reaches the stream's end, then hands over the
   * buffered live events it did not hold; a buffered event past a gap pages again.
   */
  async #catchUp(generation: number): Promise<void> {
    const current = () => generation === this.#generation;
    let attempt = 0;
    while (current()) {
      const after = this.#position!.seq;
      let page: HistoryPage;
      try {
        page = await this.#options.fetchPage(after, this.#options.pageSize);
        if (page.hasMore && page.nextAfter <= after) {
          throw new Error(`the history page after ${after} did not move on`);
        }
      } catch (error) {
        if (!current()) return;
        this.#options.pageFailed(error);
        const retried = await this.#wait(this.#options.retryDelay(attempt++), generation);
        if (!retried) return;
        continue;
      }
      if (!current()) return;
      attempt = 0;
      if (page.epoch !== this.#position!.epoch) {
        // The stream was reset between `connected` and this read: start over in its epoch.
        this.#position = { epoch: page.epoch, seq: 0 };
        continue;
      }
      for (const event of page.events) {
        if (event.seq > this.#position!.seq) this.#handOver(event.seq, event.message, false);
        if (!current()) return this.#reportPosition(); // A listener disconnected, or the like.
      }
      // Seqs up to nextAfter are handed over or gone (retention): none will come again.
      if (page.nextAfter > this.#position!.seq) {
        this.#position = { ...this.#position!, seq: page.nextAfter };
      }
      this.#reportPosition();
      if (page.hasMore) continue;
      let drained = this.#drainBuffer(generation);
      if (!drained && this.#position!.seq === after) {
        // The history ends before a buffered live event and has nothing new: what lies between
        // is not in it (it never leaves out what it holds). Paging again would loop; go on from
        // the live event. (The gateway sends no such gap; this is a guard, not a path.)
        this.#position = { ...this.#position!, seq: this.#buffer[0].seq - 1 };
        drained = this.#drainBuffer(generation);
      }
      if (drained) {
        if (current()) this.#catchingUp = false;
        return;
      }
    }
  }

  /**
   * Hands over the buffered live events in seq order, skipping what the history held. Returns
   * false when one lies past a gap (the history is paged again; it stays buffered).
   */
  #drainBuffer(generation: number): boolean {
    const buffer = this.#buffer.sort((a, b) => a.seq - b.seq);
    this.#buffer = [];
    let moved = false;
    for (let i = 0; i < buffer.length; i++) {
      const { seq, message, sent } = buffer[i];
      const position = this.#position!;
      if (seq <= position.seq) continue;
      if (seq > position.seq + 1) {
        this.#buffer = buffer.slice(i);
        if (moved) this.#reportPosition();
        return false;
      }
      this.#handOver(seq, message, sent);
      moved = true;
      if (generation !== this.#generation) break;
    }
    if (moved) this.#reportPosition();
    return true;
  }

  /** The position moves first, so that a listener that looks at it sees this event's seq. */
  #handOver(seq: number, message: Message, sent: boolean): void {
    this.#position = { epoch: this.#position!.epoch, seq };
    this.#options.handOver(seq, message, sent);
  }

  /** (A listener may have logged out meanwhile: then there is no position to keep.) */
  #reportPosition(): void {
    if (this.#position !== null) this.#options.positionChanged(this.#position);
  }

  #moveTo(position: StreamPosition): void {
    this.#position = position;
    this.#options.positionChanged(position);
  }

  /** Waits `ms` unless the generation ends first; resolves whether it is still current. */
  #wait(ms: number, generation: number): Promise<boolean> {
    return new Promise((resolve) => {
      this.#cancelWait = () => resolve(false);
      this.#retryTimer = this.#options.clock.setTimeout(() => {
        this.#retryTimer = null;
        this.#cancelWait = null;
        resolve(generation === this.#generation);
      }, ms);
    });
  }
}
