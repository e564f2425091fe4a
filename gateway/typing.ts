/**
 * Typing indicators (SPEC §6): relayed live to the receivers' connected sessions, never stored,
 * never replayed.
 *
 * - `start_typing` to a user reaches every connected session of that user; to a group, every
 *   connected session of every member except the sender's own (the sender must be a member).
 *   Typing to oneself reaches nobody. A refused frame (unknown uid or guid, not a member) is
 *   answered with the error and relays nothing.
 * - An indicator belongs to the connection that started it, one per target. It ends with
 *   `end_typing`, by itself `timeoutMs` (TYPING_TIMEOUT_MS) after its last `start_typing`, or
 *   when its connection closes; each end is relayed as `typing_ended` to the same receivers.
 * - A `start_typing` for an indicator already active extends it, and is relayed again only when
 *   the last relay is at least half the timeout old: a client that repeats it on every
 *   keystroke costs one relay per half timeout, and a receiver that connected meanwhile still
 *   learns of it.
 * - An `end_typing` for no active indicator (never started, or already ended by the timeout)
 *   relays nothing: receivers only see an end for a start they were sent.
 * - Memory is bounded: at most MAX_TYPING_PER_CONNECTION active indicators per connection. A
 *   start beyond that ends the least recently started one (relayed as `typing_ended`) rather
 *   than being refused: a user types in one place at a time, and a refusal would be an error
 *   for an ordinary action.
 *
 * The frames of one connection, and the ends of its indicators, are handled one after the
 * other (a group's members are read from the store first), so its receivers see its starts and
 * ends in the order it sent them.
 */
import type { ReceiverType, ServerFrameOf } from "../contract/mod.ts";
import type { Clock } from "./clock.ts";
import { DeadlineWheel } from "./deadline_wheel.ts";
import { GatewayError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { Messaging } from "./messaging.ts";
import type { RelayTarget, TypingFrame } from "./relays.ts";
import type { UserState, UserStates } from "./user_state.ts";

/** Most active indicators of one connection (the oldest ends when a new one would pass it). */
export const MAX_TYPING_PER_CONNECTION = 32;

/** The timeout wheel's granularity: an indicator ends at most this long after its due time. */
const TYPING_TICK_MS = 50;

export interface TypingRelayOptions {
  clock: Clock;
  users: UserStates;
  messaging: Messaging;
  /** TYPING_TIMEOUT_MS: an indicator ends this long after its last `start_typing`. */
  timeoutMs: number;
  log: Logger;
  /**
   * In a cluster: receivers not in this node's memory may be held by another node; their frame
   * goes there (`deliverHere` on each node writes it to the sessions it holds).
   */
  elsewhere?: (appId: string, uids: string[], text: string, type: TypingFrameType) => void;
}

/** One active indicator: a connection typing to one user or group. */
interface Indicator {
  readonly owner: ConnectionTyping;
  readonly key: string;
  readonly receiverType: ReceiverType;
  readonly receiver: string;
  /** When `typing_started` was last relayed for it. */
  relayedAt: number;
}

/** The typing state of one connection. */
interface ConnectionTyping {
  readonly target: RelayTarget;
  readonly sender: UserState;
  /** Active indicators by target key, least recently started first. */
  readonly active: Map<string, Indicator>;
  /** The tail of this connection's work, run in order. */
  queue: Promise<unknown>;
}

export type TypingFrameType = "typing_started" | "typing_ended";

export class TypingRelay {
  readonly #clock: Clock;
  readonly #users: UserStates;
  readonly #messaging: Messaging;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  readonly #connections = new Map<RelayTarget, ConnectionTyping>();
  readonly #timeouts: DeadlineWheel<Indicator>;
  readonly #elsewhere: TypingRelayOptions["elsewhere"];
  #closed = false;

  constructor(options: TypingRelayOptions) {
    this.#clock = options.clock;
    this.#users = options.users;
    this.#messaging = options.messaging;
    this.#timeoutMs = options.timeoutMs;
    this.#log = options.log;
    this.#elsewhere = options.elsewhere;
    this.#timeouts = new DeadlineWheel<Indicator>(
      options.clock,
      Math.min(TYPING_TICK_MS, options.timeoutMs),
      (indicator) => this.#timedOut(indicator),
      (error) => this.#log.error("typing.relay_failed", { error }),
    );
  }

  /** Active indicators, all connections together. */
  get active(): number {
    return this.#timeouts.size;
  }

  /** A `start_typing` or `end_typing` frame of a connected session: the refusal, if any. */
  typing(target: RelayTarget, sender: UserState, frame: TypingFrame): Promise<GatewayError | null> {
    if (this.#closed || target.closed) return Promise.resolve(null);
    let connection = this.#connections.get(target);
    if (connection === undefined) {
      connection = { target, sender, active: new Map(), queue: Promise.resolve() };
      this.#connections.set(target, connection);
    }
    const conn = connection;
    return this.#enqueue(conn, () => this.#handle(conn, frame));
  }

  /** A connection closed: each of its indicators ends (relayed as `typing_ended`). */
  disconnected(target: RelayTarget): void {
    const conn = this.#connections.get(target);
    if (conn === undefined) return;
    // Its frames still queued are dropped (they find it gone); its indicators end after them.
    this.#connections.delete(target);
    const ending = [...conn.active.values()];
    conn.active.clear();
    for (const indicator of ending) this.#timeouts.cancel(indicator);
    const now = this.#clock.now();
    this.#enqueue(conn, async () => {
      for (const indicator of ending) await this.#relayEnd(indicator, now);
    });
  }

  /** Stops the timeouts; nothing is relayed any more (shutdown). */
  close(): void {
    this.#closed = true;
    this.#timeouts.close();
    this.#connections.clear();
  }

  async #handle(conn: ConnectionTyping, frame: TypingFrame): Promise<GatewayError | null> {
    let receivers: string[];
    try {
      receivers = await this.#receiversOf(conn.sender, frame.receiverType, frame.receiver);
    } catch (error) {
      if (error instanceof GatewayError) return error;
      throw error;
    }
    // The connection may have closed while the store was read: it relays nothing more.
    if (this.#closed || this.#connections.get(conn.target) !== conn) return null;
    const now = this.#clock.now();
    const key = `${frame.receiverType}:${frame.receiver}`;
    let indicator = conn.active.get(key);
    let dropped: Indicator | undefined;
    if (frame.type === "end_typing") {
      if (indicator === undefined) return null;
      conn.active.delete(key);
      this.#timeouts.cancel(indicator);
      this.#relay(conn.sender, receivers, indicator, "typing_ended", now);
      return null;
    }
    if (indicator !== undefined) {
      // Most recently started last (the one to end first on overflow is the oldest).
      conn.active.delete(key);
      conn.active.set(key, indicator);
      this.#timeouts.schedule(indicator, now + this.#timeoutMs);
      if (now - indicator.relayedAt < this.#timeoutMs / 2) return null;
    } else {
      if (conn.active.size >= MAX_TYPING_PER_CONNECTION) {
        dropped = conn.active.values().next().value!;
        conn.active.delete(dropped.key);
        this.#timeouts.cancel(dropped);
      }
      indicator = {
        owner: conn,
        key,
        receiverType: frame.receiverType,
        receiver: frame.receiver,
        relayedAt: now,
      };
      conn.active.set(key, indicator);
      this.#timeouts.schedule(indicator, now + this.#timeoutMs);
    }
    indicator.relayedAt = now;
    this.#relay(conn.sender, receivers, indicator, "typing_started", now);
    if (dropped !== undefined) await this.#relayEnd(dropped, now);
    return null;
  }

  /** Runs `work` after everything queued for the connection. */
  #enqueue<T>(conn: ConnectionTyping, work: () => Promise<T>): Promise<T> {
    const done = conn.queue.then(work);
    conn.queue = done.catch(() => {});
    return done;
  }

  /**
   * The timeout fell due. The end is decided in the connection's turn: a `start_typing`
   * received before it and still being handled extends the indicator instead.
   */
  #timedOut(indicator: Indicator): void {
    const conn = indicator.owner;
    void this.#enqueue(conn, async () => {
      if (conn.active.get(indicator.key) !== indicator) return;
      if (this.#timeouts.deadlineOf(indicator) !== undefined) return; // extended meanwhile
      conn.active.delete(indicator.key);
      await this.#relayEnd(indicator, this.#clock.now());
    });
  }

  /** Relays `typing_ended` for an indicator taken out of its connection. */
  async #relayEnd(indicator: Indicator, at: number): Promise<void> {
    const sender = indicator.owner.sender;
    let receivers: string[];
    try {
      receivers = indicator.receiverType === "user"
        ? [indicator.receiver]
        : await this.#messaging.membersOf(sender.appId, indicator.receiver);
    } catch (error) {
      // A group that is gone has nobody left to tell.
      if (!(error instanceof GatewayError)) this.#log.error("typing.relay_failed", { error });
      return;
    }
    if (!this.#closed) this.#relay(sender, receivers, indicator, "typing_ended", at);
  }

  /**
   * Who sees the sender typing: the user, or the group's members but the sender. Throws the
   * refusal: ERR_UID_NOT_FOUND, ERR_GUID_NOT_FOUND, ERR_NOT_A_MEMBER.
   */
  async #receiversOf(
    sender: UserState,
    receiverType: ReceiverType,
    receiver: string,
  ): Promise<string[]> {
    if (receiverType === "user") {
      await this.#messaging.requireUsers(sender.appId, [receiver]);
      return [receiver];
    }
    const members = await this.#messaging.membersOf(sender.appId, receiver);
    if (!members.includes(sender.uid)) {
      throw new GatewayError(
        "ERR_NOT_A_MEMBER",
        `'${sender.uid}' is not a member of '${receiver}'.`,
      );
    }
    return members;
  }

  /** Writes one frame, encoded once, to every connected session of the receivers but the sender's. */
  #relay(
    sender: UserState,
    receivers: readonly string[],
    indicator: Indicator,
    type: TypingFrameType,
    at: number,
  ): void {
    const frame: ServerFrameOf<TypingFrameType> = {
      type,
      from: sender.uid,
      receiverType: indicator.receiverType,
      receiver: indicator.receiver,
      at,
    };
    const text = JSON.stringify(frame);
    let away: string[] | undefined;
    for (const uid of receivers) {
      if (uid === sender.uid) continue;
      // A user with a connected session is in memory (at the node that holds it, in a
      // cluster); one that is nowhere has nobody to tell.
      if (!this.deliverHere(sender.appId, uid, text, type)) (away ??= []).push(uid);
    }
    if (away !== undefined) this.#elsewhere?.(sender.appId, away, text, type);
  }

  /** Writes a typing frame to the connected sessions of `uid` here; false when not in memory. */
  deliverHere(appId: string, uid: string, text: string, type: TypingFrameType): boolean {
    const user = this.#users.peek(appId, uid);
    if (user === undefined) return false;
    for (const session of user.sessions()) session.socket?.sendEvent(text, type);
    return true;
  }
}
