/**
 * Presence (SPEC §4, §6): a user is online while at least one of their sessions holds a
 * connection (the state object reports each change, `presenceChanged`); each change is
 * published to the connections subscribed to it, live only.
 *
 * Who receives a change of user U (never U's own connections), by the subscription a connection
 * gave in its `connect` frame:
 * - `allUsers`: every subscribed connection of the app;
 * - `roles`: the connections whose subscribed roles include one of U's roles (U's profile, set by
 *   `PUT /v1/apps/:appId/users/:uid/roles`); a `roles` subscription naming no role receives
 *   nothing;
 * - `friends`: the connections of the users whose friend list holds U (their profile, set by
 *   `PUT /v1/apps/:appId/users/:uid/friends`); friendship is one-way, as the list says;
 * - `none` (also when the connect frame has no `presence`): nothing.
 *
 * Routing a change costs O(the connections it reaches): an index per app for `allUsers`, per
 * role for `roles`, and a reverse index friend uid → subscribed connections for `friends`,
 * built from each friends-subscriber's profile when it connects (the app's changes during that
 * read are kept and routed once the list is known, so a subscriber hears of every change after
 * its `connected` frame). Profiles are read from the store once and kept in memory while they
 * are needed: a changing user's roles while their state object is in memory, a subscriber's
 * friend list while one of its connections is subscribed; `profileChanged` (the profile routes)
 * reads them again.
 *
 * Coalescing: each connection has a pending map uid → latest change, written as ONE `presence`
 * frame when due: at once (within a tick) after a quiet interval, then at most once per
 * `intervalMs` (PRESENCE_INTERVAL_MS). A wave of n joins therefore costs each subscriber at most
 * one frame per interval, whatever n. The frames go through the connection's output limit like
 * any other (a subscriber that does not read is closed as `slow_consumer`).
 */
import type {
  PresenceChange,
  PresenceSubscription,
  ServerFrameOf,
  SubscriptionType,
} from "../contract/mod.ts";
import type { Clock } from "./clock.ts";
import { DeadlineWheel } from "./deadline_wheel.ts";
import type { Logger } from "./log.ts";
import type { RelayTarget } from "./relays.ts";
import type { GatewayStore } from "./store/types.ts";
import type { UserState } from "./user_state.ts";

/** The flush wheel's granularity, at most: a due frame goes out within this. */
const PRESENCE_TICK_MS = 10;

/**
 * Changes kept for a friend list while it is read (a few milliseconds), to route those of its
 * friends once it is known; a longer read drops the rest (and logs it).
 */
const MAX_MISSED_WHILE_READING = 1_000;

export interface PresenceHubOptions {
  clock: Clock;
  /** Where roles and friend lists are read. */
  store: Pick<GatewayStore, "getProfile">;
  /** PRESENCE_INTERVAL_MS: at most one `presence` frame per connection per interval. */
  intervalMs: number;
  log: Logger;
}

/**
 * What the hub needs of a user's state object: who it is. (The object itself keys the roles kept
 * for it, so they leave memory with it.)
 */
export type PresenceUser = Pick<UserState, "appId" | "uid">;

/** One subscribed connection. */
interface Subscriber {
  readonly target: RelayTarget;
  readonly appId: string;
  readonly uid: string;
  readonly type: Exclude<SubscriptionType, "none">;
  /** With `roles`: the roles it subscribed to. */
  readonly roles: readonly string[];
  /** Changes not written yet, latest per user. */
  pending: Map<string, PresenceChange> | null;
  /** When its last frame was written. */
  lastFlushAt: number;
}

/** The friend list of a user with friends-subscribed connections, shared by those connections. */
interface FriendList {
  readonly appId: string;
  readonly uid: string;
  friends: readonly string[];
  readonly subscribers: Set<Subscriber>;
  /** Bumped by each read: only the latest read's answer is used. */
  reads: number;
  /**
   * While a read is under way: the app's changes since it started, so that a subscriber hears
   * of each friend's change after its `connected` frame, and after a friend list changed.
   */
  missed: PresenceChange[] | null;
}

/** A changing user's roles, kept with their state object. */
interface Roles {
  /** Null while being read. */
  roles: readonly string[] | null;
  /** Changes that came while the roles were being read, routed once they are known. */
  waiting: PresenceChange[];
  reads: number;
}

export class PresenceHub {
  readonly #clock: Clock;
  readonly #store: Pick<GatewayStore, "getProfile">;
  readonly #intervalMs: number;
  readonly #log: Logger;
  readonly #subscribers = new Map<RelayTarget, Subscriber>();
  /** appId → connections subscribed to `allUsers`. */
  readonly #allUsers = new Map<string, Set<Subscriber>>();
  /** appId → role → connections subscribed to that role. */
  readonly #byRole = new Map<string, Map<string, Set<Subscriber>>>();
  /** appId → uid → connections whose user has that uid on their friend list. */
  readonly #byFriend = new Map<string, Map<string, Set<Subscriber>>>();
  /** (appId, uid) → the friend list of a user with friends-subscribed connections. */
  readonly #friendLists = new Map<string, FriendList>();
  /** appId → friend lists being read. */
  readonly #readingFriends = new Map<string, Set<FriendList>>();
  readonly #roles = new WeakMap<PresenceUser, Roles>();
  readonly #flushes: DeadlineWheel<Subscriber>;
  #closed = false;

  constructor(options: PresenceHubOptions) {
    this.#clock = options.clock;
    this.#store = options.store;
    this.#intervalMs = options.intervalMs;
    this.#log = options.log;
    this.#flushes = new DeadlineWheel<Subscriber>(
      options.clock,
      Math.min(PRESENCE_TICK_MS, options.intervalMs),
      (subscriber, now) => this.#flush(subscriber, now),
      (error) => this.#log.error("presence.flush_failed", { error }),
    );
  }

  /** Subscribed connections. */
  get subscribers(): number {
    return this.#subscribers.size;
  }

  /** A connection completed its handshake with this subscription (absent: `none`). */
  connected(target: RelayTarget, user: PresenceUser, subscription?: PresenceSubscription): void {
    const type = subscription?.subscriptionType ?? "none";
    if (this.#closed || type === "none" || this.#subscribers.has(target)) return;
    const subscriber: Subscriber = {
      target,
      appId: user.appId,
      uid: user.uid,
      type,
      roles: type === "roles" ? [...new Set(subscription?.roles ?? [])] : [],
      pending: null,
      lastFlushAt: -Infinity,
    };
    this.#subscribers.set(target, subscriber);
    switch (type) {
      case "allUsers":
        setOf(this.#allUsers, user.appId).add(subscriber);
        break;
      case "roles": {
        // (No index entry for a subscription naming no role: the app's changes need no roles.)
        if (subscriber.roles.length === 0) break;
        const roles = mapOf(this.#byRole, user.appId);
        for (const role of subscriber.roles) setOf(roles, role).add(subscriber);
        break;
      }
      case "friends": {
        const key = userKey(user.appId, user.uid);
        const list = this.#friendLists.get(key);
        if (list !== undefined) {
          list.subscribers.add(subscriber);
          this.#indexFriends(subscriber, list.friends);
        } else {
          const created: FriendList = {
            appId: user.appId,
            uid: user.uid,
            friends: [],
            subscribers: new Set([subscriber]),
            reads: 0,
            missed: null,
          };
          this.#friendLists.set(key, created);
          this.#readFriends(created);
        }
        break;
      }
    }
  }

  /** A connection closed: it receives nothing more. */
  disconnected(target: RelayTarget): void {
    const subscriber = this.#subscribers.get(target);
    if (subscriber === undefined) return;
    this.#subscribers.delete(target);
    this.#flushes.cancel(subscriber);
    subscriber.pending = null;
    const { appId, uid } = subscriber;
    switch (subscriber.type) {
      case "allUsers":
        deleteFrom(this.#allUsers, appId, subscriber);
        break;
      case "roles": {
        const roles = this.#byRole.get(appId);
        if (roles === undefined) break;
        for (const role of subscriber.roles) deleteFrom(roles, role, subscriber);
        if (roles.size === 0) this.#byRole.delete(appId);
        break;
      }
      case "friends": {
        const key = userKey(appId, uid);
        const list = this.#friendLists.get(key);
        if (list === undefined) break;
        list.subscribers.delete(subscriber);
        this.#unindexFriends(subscriber, list.friends);
        if (list.subscribers.size === 0) {
          this.#friendLists.delete(key);
          this.#stopReading(list);
        }
        break;
      }
    }
  }

  /** The state object's report: `user` came online or went offline at `at`. */
  presenceChanged(user: PresenceUser, online: boolean, at: number): void {
    if (this.#closed) return;
    const change: PresenceChange = { uid: user.uid, online, at };
    const appId = user.appId;
    const now = this.#clock.now();
    const all = this.#allUsers.get(appId);
    if (all !== undefined) { for (const subscriber of all) this.#enqueue(subscriber, change, now); }
    const friendsOf = this.#byFriend.get(appId)?.get(user.uid);
    if (friendsOf !== undefined) {
      for (const subscriber of friendsOf) this.#enqueue(subscriber, change, now);
    }
    const reading = this.#readingFriends.get(appId);
    if (reading !== undefined) {
      for (const list of reading) {
        if (list.missed!.length < MAX_MISSED_WHILE_READING) list.missed!.push(change);
        else {
          this.#log.warn("presence.changes_dropped", { uid: list.uid });
          this.#stopReading(list);
        }
      }
    }
    // Roles are read only while some connection of the app subscribes to roles.
    if (!this.#byRole.has(appId)) return;
    let roles = this.#roles.get(user);
    if (roles === undefined) {
      roles = { roles: null, waiting: [], reads: 0 };
      this.#roles.set(user, roles);
      this.#readRoles(user, roles);
    }
    if (roles.roles === null) roles.waiting.push(change);
    else this.#routeByRoles(appId, roles.roles, change, now);
  }

  /**
   * A user's roles or friend list changed (the profile routes): what is kept of them in memory
   * is read again. `user` is their state object, if it is in memory.
   */
  profileChanged(appId: string, uid: string, user: PresenceUser | undefined): void {
    if (this.#closed) return;
    const roles = user === undefined ? undefined : this.#roles.get(user);
    // Changes that come while the roles are read again wait for the new ones.
    if (roles !== undefined && user !== undefined) {
      roles.roles = null;
      this.#readRoles(user, roles);
    }
    const list = this.#friendLists.get(userKey(appId, uid));
    if (list !== undefined) this.#readFriends(list);
  }

  /** Stops the flushes; nothing is published any more (shutdown). */
  close(): void {
    this.#closed = true;
    this.#flushes.close();
    this.#subscribers.clear();
    this.#allUsers.clear();
    this.#byRole.clear();
    this.#byFriend.clear();
    this.#friendLists.clear();
    this.#readingFriends.clear();
  }

  #enqueue(subscriber: Subscriber, change: PresenceChange, now: number): void {
    // A user never receives their own presence.
    if (subscriber.uid === change.uid) return;
    (subscriber.pending ??= new Map()).set(change.uid, change);
    if (this.#flushes.deadlineOf(subscriber) === undefined) {
      this.#flushes.schedule(subscriber, Math.max(now, subscriber.lastFlushAt + this.#intervalMs));
    }
  }

  #flush(subscriber: Subscriber, now: number): void {
    const pending = subscriber.pending;
    subscriber.pending = null;
    if (pending === null || pending.size === 0 || this.#closed) return;
    subscriber.lastFlushAt = now;
    const frame: ServerFrameOf<"presence"> = { type: "presence", users: [...pending.values()] };
    subscriber.target.sendEvent(JSON.stringify(frame), "presence");
  }

  #routeByRoles(
    appId: string,
    roles: readonly string[],
    change: PresenceChange,
    now: number,
  ): void {
    const byRole = this.#byRole.get(appId);
    if (byRole === undefined) return;
    for (const role of roles) {
      const subscribers = byRole.get(role);
      // A subscriber of two of the roles gets the change once: its pending map holds one per user.
      if (subscribers !== undefined) {
        for (const subscriber of subscribers) this.#enqueue(subscriber, change, now);
      }
    }
  }

  #readRoles(user: PresenceUser, entry: Roles): void {
    const read = ++entry.reads;
    this.#store.getProfile(user.appId, user.uid).then(
      (profile) => {
        if (entry.reads !== read || this.#closed) return;
        entry.roles = profile?.roles ?? [];
        const waiting = entry.waiting;
        entry.waiting = [];
        const now = this.#clock.now();
        for (const change of waiting) this.#routeByRoles(user.appId, entry.roles, change, now);
      },
      (error) => {
        if (entry.reads !== read || this.#closed) return;
        // Unknown roles reach nobody; the next change reads them again.
        this.#log.error("presence.profile_read_failed", { error, uid: user.uid });
        entry.waiting = [];
        this.#roles.delete(user);
      },
    );
  }

  #readFriends(list: FriendList): void {
    const { appId, uid } = list;
    const read = ++list.reads;
    if (list.missed === null) {
      list.missed = [];
      let reading = this.#readingFriends.get(appId);
      if (reading === undefined) this.#readingFriends.set(appId, reading = new Set());
      reading.add(list);
    }
    this.#store.getProfile(appId, uid).then(
      (profile) => {
        // Superseded by a later read, or nobody subscribes with this list any more.
        if (list.reads !== read || this.#friendLists.get(userKey(appId, uid)) !== list) return;
        const before = new Set(list.friends);
        const missed = list.missed ?? [];
        this.#stopReading(list);
        for (const subscriber of list.subscribers) this.#unindexFriends(subscriber, list.friends);
        list.friends = profile?.friends ?? [];
        for (const subscriber of list.subscribers) this.#indexFriends(subscriber, list.friends);
        // The changes of new friends while the list was read (old friends' were routed).
        const friends = new Set(list.friends);
        const now = this.#clock.now();
        for (const change of missed) {
          if (!friends.has(change.uid) || before.has(change.uid)) continue;
          for (const subscriber of list.subscribers) this.#enqueue(subscriber, change, now);
        }
      },
      (error) => {
        if (list.reads !== read || this.#closed) return;
        this.#stopReading(list);
        // The list stays as it was (empty for a new subscriber) until the next profile change.
        this.#log.error("presence.profile_read_failed", { error, uid });
      },
    );
  }

  #stopReading(list: FriendList): void {
    list.missed = null;
    deleteFrom(this.#readingFriends, list.appId, list);
  }

  #indexFriends(subscriber: Subscriber, friends: readonly string[]): void {
    const index = mapOf(this.#byFriend, subscriber.appId);
    for (const friend of friends) setOf(index, friend).add(subscriber);
  }

  #unindexFriends(subscriber: Subscriber, friends: readonly string[]): void {
    const index = this.#byFriend.get(subscriber.appId);
    if (index === undefined) return;
    for (const friend of friends) deleteFrom(index, friend, subscriber);
    if (index.size === 0) this.#byFriend.delete(subscriber.appId);
  }
}

function userKey(appId: string, uid: string): string {
  return `${appId}\u0000${uid}`;
}

function mapOf<K, V>(map: Map<string, Map<K, V>>, key: string): Map<K, V> {
  let inner = map.get(key);
  if (inner === undefined) map.set(key, inner = new Map());
  return inner;
}

function setOf<V>(map: Map<string, Set<V>>, key: string): Set<V> {
  let set = map.get(key);
  if (set === undefined) map.set(key, set = new Set());
  return set;
}

/** Removes `value` from the set at `key`, and the set once it is empty. */
function deleteFrom<V>(map: Map<string, Set<V>>, key: string, value: V): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}
