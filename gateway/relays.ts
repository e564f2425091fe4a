/**
 * The live relays of a connection: typing and presence. Unlike messages they are never stored
 * and never replayed; they reach the connections that are open when they happen.
 * `gateway/typing.ts` and `gateway/presence.ts` implement them; the connection calls them
 * through this narrow interface.
 */
import type { ClientFrameOf, PresenceSubscription } from "../contract/mod.ts";
import type { GatewayError } from "./errors.ts";
import type { UserState } from "./user_state.ts";

/** What a relay needs of a connection: a way to write a frame already encoded. */
export interface RelayTarget {
  /** Writes an encoded server frame of `type`; false when it was not written. */
  sendEvent(text: string, type?: "typing_started" | "typing_ended" | "presence"): boolean;
  readonly closed: boolean;
}

export type TypingFrame = ClientFrameOf<"start_typing"> | ClientFrameOf<"end_typing">;

export interface LiveRelays {
  /** A connection completed its handshake, with the presence subscription of its frame. */
  connected(
    target: RelayTarget,
    user: UserState,
    sessionId: string,
    subscription: PresenceSubscription | undefined,
  ): void;
  /** A connection that had completed its handshake closed (for any reason). */
  disconnected(target: RelayTarget, user: UserState, sessionId: string): void;
  /** A `start_typing` or `end_typing` frame; resolves to the refusal to answer with, if any. */
  typing(
    target: RelayTarget,
    user: UserState,
    sessionId: string,
    frame: TypingFrame,
  ): Promise<GatewayError | null>;
}

/** Relays that relay nothing (unit tests of the connection). */
export const noRelays: LiveRelays = {
  connected() {},
  disconnected() {},
  typing: () => Promise.resolve(null),
};
