/**
 * A minimal stream client for tests that must check what a user ends up seeing: it keeps the
 * last `{ epoch, seq }` it processed, resumes with it on every connect, pages
 * `GET /v1/session/events` when a resume is not recovered (buffering live events meanwhile),
 * and retries its own sends with the same `clientMessageId` until the gateway answers them.
 *
 * It speaks WebSocket over raw TCP (tests/support/raw_ws.ts) so that it can stop reading (a
 * slow consumer). Every stream event it accepts must be the next seq of its position; anything
 * else (a gap, an old seq, another epoch, a resume that fails for a reason the test excludes)
 * is recorded as a violation, never silently repaired, so the test can report it.
 */
import {
  HistoryPageSchema,
  type Message,
  type ServerFrame,
  ServerFrameSchema,
  type StreamStatus,
  type UserSend,
  UserSendReplySchema,
} from "../../contract/mod.ts";
import {
  clientFrame,
  closeCodeOf,
  closeFrame,
  OPCODE,
  RawWebSocket,
  textFrame,
  textOf,
} from "./raw_ws.ts";

/** Where the gateway currently listens. */
export interface GatewayTarget {
  port: number;
  url: string;
}

export interface StreamClientOptions {
  /** A short name, unique among the test's clients: it prefixes this client's clientMessageIds. */
  name: string;
  uid: string;
  credential: string;
  /** Resolves with the gateway once it is up (at once while it is). */
  ready(): Promise<GatewayTarget>;
  /** History page size when catching up. */
  pageSize?: number;
  /**
   * An error frame ERR_SERVICE_UNAVAILABLE answering the handshake (a cluster whose node cannot
   * take the user now) means "connect again shortly", not a violation. Default: a violation.
   */
  retryUnavailable?: boolean;
}

/** How an event reached the client. */
export type Channel = "live" | "sent" | "replay" | "history";

export interface ObservedEvent {
  seq: number;
  message: Message;
  channel: Channel;
}

/** The gateway's answer to one of this client's sends. */
export interface SendAck {
  clientMessageId: string;
  /** The message's seq in the sender's own stream. */
  seq: number;
  message: Message;
  /** How the client learned it: a `sent` frame, an HTTP reply, or its own copy in its stream. */
  via: "sent" | "http" | "stream";
  duplicate: boolean;
}

export interface StreamClientCounters {
  connects: number;
  resumesRecovered: number;
  resumesNotRecovered: Partial<Record<NonNullable<StreamStatus["reason"]>, number>>;
  delivered: Record<Channel, number>;
  /** Close reasons announced by `closing` frames. */
  closes: Record<string, number>;
  /** Sends written again after a reconnect or an error (the same clientMessageId). */
  wsRetries: number;
  httpRetries: number;
  /** Answers with `duplicate: true`. */
  duplicateAnswers: number;
  historyPages: number;
  /** Error codes answered to send frames. */
  sendErrors: Record<string, number>;
  /** WebSocket upgrades answered with another status than 101 (tried again), by status. */
  upgradeRefusals: Record<string, number>;
  /** Handshakes answered ERR_SERVICE_UNAVAILABLE (with `retryUnavailable`; tried again). */
  handshakesUnavailable: number;
  /**
   * HTTP requests tried again, by route and what came back: `send:503`, `history:no_answer`
   * (the connection failed or dropped before the whole answer)...
   */
  httpRetried: Record<string, number>;
}

/** Error codes a send may get while the gateway stops; the client sends again later. */
const RETRYABLE_SEND_ERRORS = new Set(["ERR_SERVICE_UNAVAILABLE", "ERR_INTERNAL"]);

/** HTTP statuses of a gateway that is stopping or restarting: try again. */
const RETRYABLE_STATUS = new Set([500, 502, 503]);

interface PendingSend {
  send: UserSend;
  resolve(ack: SendAck): void;
  /** The connection it was last written to (0: none yet). */
  writtenOn: number;
}

/** One connection's state. */
interface Link {
  readonly id: number;
  readonly raw: RawWebSocket;
  phase: "handshake" | "catching_up" | "live";
  /** Stream events that arrived while the history was paged, in arrival order. */
  buffered: ServerFrame[];
  /** While replaying: the seq the replay ends at. */
  replayUntil: number;
  ended: boolean;
  /** The `closing` frame's reason, if one came. */
  closingReason: string | null;
}

export class StreamClient {
  readonly name: string;
  readonly uid: string;
  readonly credential: string;
  readonly #options: StreamClientOptions;
  /** The position: the last event processed (epoch null: never connected). */
  epoch: string | null = null;
  seq = 0;
  /** Every event accepted, in seq order. */
  readonly observed: ObservedEvent[] = [];
  /** What went against the protocol, as the client saw it. */
  readonly violations: string[] = [];
  readonly counters: StreamClientCounters = {
    connects: 0,
    resumesRecovered: 0,
    resumesNotRecovered: {},
    delivered: { live: 0, sent: 0, replay: 0, history: 0 },
    closes: {},
    wsRetries: 0,
    httpRetries: 0,
    duplicateAnswers: 0,
    historyPages: 0,
    sendErrors: {},
    upgradeRefusals: {},
    handshakesUnavailable: 0,
    httpRetried: {},
  };

  readonly #pending = new Map<string, PendingSend>();
  #nextSend = 0;
  #wantOnline = true;
  #stopped = false;
  #paused = false;
  #link: Link | null = null;
  #linkCount = 0;
  /** Woken on every change of state the loop or a waiter may care about. */
  #waiters: Array<() => void> = [];
  #loop: Promise<void> | null = null;
  #writeChain: Promise<void> = Promise.resolve();
  /** Background work (history paging, delayed retries) to await before stopping. */
  readonly #tasks = new Set<Promise<void>>();

  constructor(options: StreamClientOptions) {
    this.#options = options;
    this.name = options.name;
    this.uid = options.uid;
    this.credential = options.credential;
  }

  /** Starts connecting (and reconnecting whenever the connection ends, while online). */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** Whether a connection is up and past its handshake and catch-up. */
  get live(): boolean {
    return this.#link !== null && this.#link.phase === "live" && !this.#link.ended;
  }

  /** Sends not answered yet. */
  get unanswered(): number {
    return this.#pending.size;
  }

  /** Waits until `condition` holds (checked on every change), or throws after `timeoutMs`. */
  async until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: not ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(left, 250));
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#waiters.push(done);
      });
    }
  }

  /** Waits until connected and live. */
  untilLive(timeoutMs = 30_000): Promise<void> {
    return this.until(() => this.live, "live", timeoutMs);
  }

  /** Closes the socket from the client's side and stays offline until `reconnect`. */
  disconnect(): void {
    this.#wantOnline = false;
    this.#dropLink(1000);
  }

  /** Goes online again (resuming from the position). */
  reconnect(): void {
    this.#wantOnline = true;
    this.#wake();
  }

  /**
   * The app goes to background (manual mode: the deadline runs from now, no pings are sent)
   * and stays offline once the gateway closes it, until `reconnect`. Resolves with the reason
   * of the close.
   */
  async background(timeoutMs = 30_000): Promise<string | null> {
    const link = this.#link;
    if (link === null || link.ended) throw new Error(`${this.name}: background while offline`);
    this.#wantOnline = false;
    this.#write(link, { type: "app_state", state: "background" });
    await this.until(() => link.ended, "closed after background", timeoutMs);
    return link.closingReason;
  }

  /** Stops reading the socket (what the gateway sends piles up in its buffers). */
  pause(): void {
    this.#paused = true;
  }

  /** Reads again. */
  unpause(): void {
    this.#paused = false;
    this.#wake();
  }

  /** The current connection's number (each connection gets the next one); 0 while offline. */
  get linkId(): number {
    return this.#link?.id ?? 0;
  }

  /**
   * Sends over the socket; resolves once the gateway answers it (`sent`, or the client's own
   * copy in its stream). Written on the current connection, and again on every new one until
   * answered.
   */
  sendOverSocket(
    send: Omit<UserSend, "clientMessageId">,
  ): { clientMessageId: string; answered: Promise<SendAck> } {
    const clientMessageId = `${this.name}-${++this.#nextSend}`;
    const full: UserSend = { ...send, clientMessageId };
    const answered = new Promise<SendAck>((resolve) => {
      this.#pending.set(clientMessageId, { send: full, resolve, writtenOn: 0 });
    });
    const link = this.#link;
    if (link !== null && link.phase !== "handshake" && !link.ended) this.#writeSend(link, full);
    return { clientMessageId, answered };
  }

  /**
   * Sends over HTTP (`POST /v1/session/messages`), trying again with the same clientMessageId
   * until the gateway answers 200.
   */
  sendOverHttp(
    send: Omit<UserSend, "clientMessageId">,
  ): { clientMessageId: string; answered: Promise<SendAck> } {
    const clientMessageId = `${this.name}-${++this.#nextSend}`;
    const full: UserSend = { ...send, clientMessageId };
    return { clientMessageId, answered: this.#postUntilAnswered(full) };
  }

  /** Stops for good: closes the connection, ends the loop, waits for background work. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wantOnline = false;
    this.#paused = false;
    this.#dropLink(1000);
    this.#wake();
    await this.#loop;
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    await this.#writeChain;
  }

  // ---- connection loop ----

  async #run(): Promise<void> {
    while (!this.#stopped) {
      if (!this.#wantOnline) {
        await this.#sleep(1_000);
        continue;
      }
      let target: GatewayTarget;
      try {
        target = await this.#options.ready();
      } catch {
        await this.#sleep(1_000); // the gateway did not come back: the test fails on its own
        continue;
      }
      if (this.#stopped || !this.#wantOnline) continue;
      let raw: RawWebSocket;
      try {
        raw = await RawWebSocket.open(
          target.port,
          `/v1/ws?credential=${encodeURIComponent(this.credential)}`,
          { timeoutMs: 10_000 },
        );
      } catch {
        await this.#sleep(50); // the gateway went away meanwhile
        continue;
      }
      if (raw.status !== 101) {
        const status = String(raw.status);
        this.counters.upgradeRefusals[status] = (this.counters.upgradeRefusals[status] ?? 0) + 1;
        raw.close(); // draining (503) or not up yet
        await this.#sleep(50);
        continue;
      }
      const link: Link = {
        id: ++this.#linkCount,
        raw,
        phase: "handshake",
        buffered: [],
        replayUntil: 0,
        ended: false,
        closingReason: null,
      };
      this.#link = link;
      this.counters.connects++;
      this.#write(link, {
        type: "connect",
        appState: "foreground",
        ...(this.epoch === null ? {} : { resume: { epoch: this.epoch, seq: this.seq } }),
      });
      await this.#read(link);
      link.ended = true;
      raw.close();
      if (link.closingReason !== null) {
        this.counters.closes[link.closingReason] = (this.counters.closes[link.closingReason] ?? 0) +
          1;
      }
      if (this.#link === link) this.#link = null;
      this.#wake();
      if (this.#wantOnline && !this.#stopped) await this.#sleep(20);
    }
  }

  /** Reads frames until the connection ends. */
  async #read(link: Link): Promise<void> {
    for (;;) {
      while (this.#paused && !link.ended) await this.#sleep(1_000);
      if (link.ended) return;
      const got = await link.raw.next(3_600_000);
      if (link.ended) return; // closed by this client meanwhile
      if (got === "timeout") continue;
      if (got === "eof" || got === "reset") return;
      if (got.opcode === OPCODE.close) {
        // Answer the close handshake, then the connection is over.
        await this.#writeBytes(link, closeFrame(closeCodeOf(got)));
        return;
      }
      if (got.opcode === OPCODE.ping) {
        await this.#writeBytes(link, clientFrame(OPCODE.pong, got.payload));
        continue;
      }
      if (got.opcode === OPCODE.pong) continue;
      if (got.opcode !== OPCODE.text || !got.fin) {
        this.#violation(
          `frame of opcode ${got.opcode} (fin ${got.fin}): the gateway sends whole text frames`,
        );
        continue;
      }
      const frame = parseFrame(textOf(got));
      if (frame === null) {
        this.#violation(`a frame outside the contract: ${textOf(got).slice(0, 200)}`);
        continue;
      }
      this.#onFrame(link, frame);
      this.#wake();
    }
  }

  #onFrame(link: Link, frame: ServerFrame): void {
    switch (frame.type) {
      case "connected":
        return this.#onConnected(link, frame.stream);
      case "message":
      case "sent":
        if (frame.type === "sent" && frame.duplicate) {
          // The answer to a retry: the event itself is (or will be) in the stream already.
          this.counters.duplicateAnswers++;
          this.#answer(frame.message.clientMessageId, frame.seq, frame.message, "sent", true);
          return;
        }
        if (link.phase === "catching_up") {
          link.buffered.push(frame);
          return;
        }
        if (link.phase === "handshake") {
          this.#violation(`a ${frame.type} frame before connected`);
          return;
        }
        return this.#onEvent(link, frame);
      case "closing":
        link.closingReason = frame.reason;
        return;
      case "error": {
        const id = typeof frame.id === "string" ? frame.id : "";
        const mine = id.startsWith(`${this.name}-`);
        if (mine) {
          this.counters.sendErrors[frame.errorCode] = (this.counters.sendErrors[frame.errorCode] ??
            0) + 1;
        }
        if (
          link.phase === "handshake" && !mine && this.#options.retryUnavailable &&
          frame.errorCode === "ERR_SERVICE_UNAVAILABLE"
        ) {
          // This connection is over (the gateway closes it too); the loop connects again.
          this.counters.handshakesUnavailable++;
          this.#dropLink(1000);
          return;
        }
        const pending = this.#pending.get(id);
        if (pending === undefined) {
          // An answer to a send already answered otherwise (its copy came back in a replay
          // while the retry was on its way) tells nothing new, unless it is a refusal.
          if (!mine || !RETRYABLE_SEND_ERRORS.has(frame.errorCode)) {
            this.#violation(`error frame ${frame.errorCode}: ${frame.errorDescription}`);
          }
          return;
        }
        if (!RETRYABLE_SEND_ERRORS.has(frame.errorCode)) {
          this.#violation(`send ${frame.id} refused: ${frame.errorCode}`);
          return;
        }
        // Written again a little later on this connection (a new one writes it anyway).
        this.#background(async () => {
          await this.#sleep(100);
          if (!link.ended && this.#pending.get(frame.id as string) === pending) {
            this.counters.wsRetries++;
            this.#writeSend(link, pending.send);
          }
        });
        return;
      }
      default:
        return; // pong, state, presence, typing: not part of the stream
    }
  }

  #onConnected(link: Link, stream: StreamStatus): void {
    if (link.phase !== "handshake") {
      this.#violation("a second connected frame");
      return;
    }
    const first = this.epoch === null;
    if (first) {
      // A brand-new client: the stream's position is its own (nothing before it to fetch).
      if (stream.seq !== 0) {
        this.#violation(`first connect found ${stream.seq} events already: the test misses them`);
      }
      this.epoch = stream.epoch;
      this.seq = stream.seq;
    } else if (stream.epoch !== this.epoch) {
      this.#violation(`epoch changed from ${this.epoch} to ${stream.epoch}`);
    }
    if (!first) {
      if (stream.recovered) this.counters.resumesRecovered++;
      else {
        const reason = stream.reason ?? "no_position";
        this.counters.resumesNotRecovered[reason] = (this.counters.resumesNotRecovered[reason] ??
          0) + 1;
        // The store is never wiped and retention is long: only the replay limit may refuse.
        if (reason !== "replay_limit") {
          this.#violation(`resume from ${this.seq} not recovered: ${reason} (head ${stream.seq})`);
        }
      }
    }
    if (stream.recovered && stream.replayed !== stream.seq - this.seq) {
      this.#violation(
        `recovered from ${this.seq} to ${stream.seq} but ${stream.replayed} events replayed`,
      );
    }
    link.replayUntil = stream.recovered ? stream.seq : this.seq;
    if (!first && !stream.recovered && this.seq < stream.seq) {
      link.phase = "catching_up";
      this.#background(() => this.#catchUp(link, stream.seq));
    } else link.phase = "live";
    // Sends not answered yet go again on this connection (same clientMessageId).
    for (const pending of this.#pending.values()) {
      if (pending.writtenOn !== 0) this.counters.wsRetries++;
      this.#writeSend(link, pending.send);
    }
  }

  /** Pages the history up to `target` (the head when the connection went live). */
  async #catchUp(link: Link, target: number): Promise<void> {
    const pageSize = this.#options.pageSize ?? 200;
    while (this.seq < target && !link.ended) {
      let page;
      try {
        const { url } = await this.#options.ready();
        const res = await fetch(`${url}/v1/session/events?after=${this.seq}&limit=${pageSize}`, {
          headers: { authorization: `Bearer ${this.credential}` },
        });
        const body = await res.json();
        if (res.status !== 200) {
          if (!RETRYABLE_STATUS.has(res.status)) {
            this.#violation(`history page refused: ${res.status} ${JSON.stringify(body)}`);
            return;
          }
          this.#retried(`history:${res.status}`);
          await this.#sleep(50);
          continue;
        }
        page = HistoryPageSchema.parse(body);
      } catch {
        this.#retried("history:no_answer");
        await this.#sleep(50); // the gateway went away: the connection ends too
        continue;
      }
      if (link.ended) return;
      this.counters.historyPages++;
      if (page.epoch !== this.epoch) this.#violation(`history in epoch ${page.epoch}`);
      let progressed = false;
      for (const event of page.events) {
        if (event.seq > target) break;
        this.#accept(event.seq, event.message, "history");
        progressed = true;
      }
      if (!progressed && this.seq < target) {
        this.#violation(`history after ${this.seq} has nothing up to ${target}`);
        return;
      }
    }
    if (link.ended) return;
    link.phase = "live";
    const buffered = link.buffered;
    link.buffered = [];
    for (const frame of buffered) {
      if (frame.type === "message" || frame.type === "sent") this.#onEvent(link, frame);
    }
    this.#wake();
  }

  #onEvent(link: Link, frame: Extract<ServerFrame, { type: "message" | "sent" }>): void {
    const channel: Channel = frame.type === "sent"
      ? "sent"
      : frame.seq <= link.replayUntil
      ? "replay"
      : "live";
    this.#accept(frame.seq, frame.message, channel);
    if (frame.type === "sent") {
      this.#answer(frame.message.clientMessageId, frame.seq, frame.message, "sent", false);
    }
  }

  /** One stream event: it must be the next seq. */
  #accept(seq: number, message: Message, channel: Channel): void {
    if (seq <= this.seq) {
      this.#violation(`seq ${seq} again (${channel}) at position ${this.seq}`);
      return;
    }
    if (seq !== this.seq + 1) this.#violation(`gap: seq ${seq} (${channel}) after ${this.seq}`);
    this.seq = seq;
    this.observed.push({ seq, message, channel });
    this.counters.delivered[channel]++;
    // The client's own message coming back (a replay): the answer to that send.
    if (message.from === this.uid && channel !== "sent") {
      this.#answer(message.clientMessageId, seq, message, "stream", false);
    }
  }

  #answer(
    clientMessageId: string | undefined,
    seq: number,
    message: Message,
    via: SendAck["via"],
    duplicate: boolean,
  ): void {
    if (clientMessageId === undefined) return;
    const pending = this.#pending.get(clientMessageId);
    if (pending === undefined) return;
    this.#pending.delete(clientMessageId);
    pending.resolve({ clientMessageId, seq, message, via, duplicate });
  }

  async #postUntilAnswered(send: UserSend): Promise<SendAck> {
    const giveUp = Date.now() + 120_000;
    for (let attempt = 0;; attempt++) {
      if (Date.now() > giveUp) {
        throw new Error(`${this.name}: HTTP send ${send.clientMessageId} unanswered`);
      }
      if (attempt > 0) {
        this.counters.httpRetries++;
        await this.#sleep(50);
      }
      const { url } = await this.#options.ready();
      let res: Response;
      try {
        res = await fetch(`${url}/v1/session/messages`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${this.credential}`,
            "content-type": "application/json",
          },
          body: JSON.stringify(send),
        });
      } catch {
        this.#retried("send:no_answer");
        continue; // no answer: it may or may not have been sent; the retry tells
      }
      let body: unknown;
      try {
        body = await res.json();
      } catch {
        this.#retried("send:no_answer");
        continue; // the connection dropped in the middle of the answer
      }
      if (res.status === 200) {
        const reply = UserSendReplySchema.parse(body);
        if (reply.duplicate) this.counters.duplicateAnswers++;
        return {
          clientMessageId: send.clientMessageId,
          seq: reply.seq,
          message: reply.message,
          via: "http",
          duplicate: reply.duplicate,
        };
      }
      if (!RETRYABLE_STATUS.has(res.status)) {
        this.#violation(`HTTP send refused: ${res.status} ${JSON.stringify(body)}`);
        throw new Error(`${this.name}: HTTP send refused with ${res.status}`);
      }
      this.#retried(`send:${res.status}`);
    }
  }

  #retried(what: string): void {
    this.counters.httpRetried[what] = (this.counters.httpRetried[what] ?? 0) + 1;
  }

  // ---- writing ----

  #writeSend(link: Link, send: UserSend): void {
    const pending = this.#pending.get(send.clientMessageId);
    if (pending !== undefined) pending.writtenOn = link.id;
    this.#write(link, { type: "send", id: send.clientMessageId, ...send });
  }

  #write(link: Link, frame: Record<string, unknown>): void {
    void this.#writeBytes(link, textFrame(JSON.stringify(frame)));
  }

  /** Writes one whole frame after those before it (a frame is never interleaved with another). */
  #writeBytes(link: Link, bytes: Uint8Array, evenIfEnded = false): Promise<void> {
    const write = this.#writeChain.then(async () => {
      if (link.ended && !evenIfEnded) return;
      try {
        await link.raw.write(bytes);
      } catch {
        // The connection is gone; its reader notices.
      }
    });
    this.#writeChain = write;
    return write;
  }

  /** The client closes its connection: a close frame, then the TCP connection. */
  #dropLink(code: number): void {
    const link = this.#link;
    if (link === null || link.ended) return;
    // Ended at once: nothing read or written after this counts for the connection.
    link.ended = true;
    void this.#writeBytes(link, closeFrame(code), true).then(() => link.raw.close());
    this.#wake();
  }

  // ---- plumbing ----

  #background(work: () => Promise<void>): void {
    const task: Promise<void> = work().catch((error) => {
      this.#violation(`background task failed: ${error instanceof Error ? error.stack : error}`);
    }).finally(() => this.#tasks.delete(task));
    this.#tasks.add(task);
  }

  #violation(what: string): void {
    this.violations.push(`${this.name} (${this.uid}): ${what}`);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** Sleeps `ms`, or less if something changes (a wake). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#waiters.push(done);
    });
  }
}

/** Parses a text frame against the contract; null when it is not a server frame. */
function parseFrame(text: string): ServerFrame | null {
  try {
    const parsed = ServerFrameSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
