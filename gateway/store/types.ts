/**
 * The narrow storage interface of the gateway. One implementation per engine
 * (`kv.ts` for Deno KV; Redis comes as a second one); a shared conformance suite in
 * `tests/store_conformance.ts` runs against each.
 */
import type { Group, Mode, User } from "../../contract/mod.ts";
import type { SessionLiveness } from "../liveness.ts";

/**
 * An auth token as stored: only its hash (`authTokenHash`). Tokens are random (≥ 128 bits),
 * so a fast hash is enough, and a copy of the store does not log anyone in.
 */
export interface AuthTokenRecord {
  appId: string;
  uid: string;
  tokenHash: string;
  createdAt: number;
  expiresAt: number | null;
}

/** One session, as persisted. */
export interface SessionRecord {
  sessionId: string;
  mode: Mode;
  createdAt: number;
  /** When the last accepted ping arrived (written along with other changes, never alone). */
  lastPingAt: number | null;
  liveness: SessionLiveness;
  /**
   * No deadline announced for this session is later than this (user_state.ts explains the
   * bound); a restart after a crash restores the deadline as this. Absent in older records.
   */
  deadlineBound?: number | null;
}

/** The per-user part of the durable state of one user's single-writer object. */
export interface UserMetaRecord {
  /** When the user last went offline. */
  lastSeenAt: number | null;
  /** Whether any session holds a connection: such users are revived after a restart. */
  held: boolean;
  /**
   * The last seq of the user's stream on disk (written in the same commit as that event); the
   * stream continues above it after a restart. Absent in records written before messages
   * existed (= 0).
   */
  seqReservedTo?: number;
  /**
   * The stream's epoch; set when the stream is created, changed only when it is reset. Absent
   * in records written before streams existed (the next load gives it one).
   */
  epoch?: string;
}

/**
 * One event of a user's stream, as stored. `body` is the message, JSON-encoded once when it
 * was appended: replay, history and live delivery all send those bytes as they are.
 */
export interface StoredEvent {
  seq: number;
  /** When it was appended (server clock, ms): retention by age measures from here. */
  at: number;
  body: string;
}

/**
 * The first result of a user's send with a client-chosen id: a retry answers with it. Kept as
 * long as the stream's retention.
 */
export interface SendRecord {
  clientMessageId: string;
  /** The message as receivers see it (JSON). */
  body: string;
  /** Its seq in the sender's stream. */
  seq: number;
  at: number;
}

/** Whose presence reaches whom: a user's roles and friend list, set by the server API. */
export interface ProfileRecord {
  roles: string[];
  friends: string[];
}

/** The durable state of one user, as loaded. */
export interface UserStateRecord {
  appId: string;
  uid: string;
  meta: UserMetaRecord;
  sessions: SessionRecord[];
}

/** What changed in one user's state since the last write (sessions are stored one per key). */
export interface UserStateChange {
  appId: string;
  uid: string;
  meta: UserMetaRecord;
  putSessions: SessionRecord[];
  deleteSessions: string[];
  /** Events appended to the user's stream, in seq order. */
  appendEvents?: StoredEvent[];
  /** Events to delete (retention by count): seqs `from` ≤ seq < `below`. */
  dropEvents?: { from: number; below: number };
  /** Send results to remember (idempotent retries). */
  sendRecords?: SendRecord[];
  /**
   * How long events and send records of this change are kept (retention by age): an engine
   * may let them expire after this, and readers ignore older ones either way.
   */
  retentionMs?: number;
  /**
   * The writer's claim on this user in a cluster ([cluster.md](../../docs/cluster.md)): an
   * engine shared by several nodes refuses the whole group commit (`FencedWriteError`) when a
   * claim is no longer the user's current one, so a node that lost a user can never write it.
   * Absent on a single node.
   */
  owner?: UserClaim;
}

/** A node's claim on a user: which node, and the fencing token it got with the claim. */
export interface UserClaim {
  node: string;
  fence: number;
}

/** A group commit refused because a writer's claim on some of its users is stale. */
export class FencedWriteError extends Error {
  constructor(readonly users: Array<{ appId: string; uid: string }>) {
    super(`write refused: this node no longer owns ${users.length} user(s)`);
    this.name = "FencedWriteError";
  }
}

export interface GatewayStore {
  /** Creates a user; false if the uid exists already. */
  createUser(appId: string, user: User): Promise<boolean>;
  getUser(appId: string, uid: string): Promise<User | null>;

  putAuthToken(record: AuthTokenRecord): Promise<void>;
  /** The token whose hash this is. */
  getAuthToken(tokenHash: string): Promise<AuthTokenRecord | null>;
  /** Deletes a token (by hash) of that user; false if there was none. */
  deleteAuthToken(appId: string, uid: string, tokenHash: string): Promise<boolean>;

  loadUserState(appId: string, uid: string): Promise<UserStateRecord | null>;
  /** Writes several users' changes as one group commit: all of them or none, also across a crash. */
  saveUserStates(changes: UserStateChange[]): Promise<void>;
  /** Users that held a connection when last written: revived at start-up. */
  listHeldUsers(): Promise<Array<{ appId: string; uid: string }>>;

  /** Up to `limit` events of a user's stream with seq > `afterSeq`, in seq order. */
  readEvents(appId: string, uid: string, afterSeq: number, limit: number): Promise<StoredEvent[]>;
  /** The result of a user's earlier send with this client id, if one is kept. */
  getSendRecord(appId: string, uid: string, clientMessageId: string): Promise<SendRecord | null>;

  /** Creates a group; false if the guid exists already. */
  createGroup(appId: string, group: Group): Promise<boolean>;
  getGroup(appId: string, guid: string): Promise<Group | null>;
  /**
   * Changes a group atomically (compare and set, retried on a concurrent change): `update`
   * returns the new group, or a value of its own to give up with. Null when there is no group.
   */
  updateGroup<R>(
    appId: string,
    guid: string,
    update: (group: Group) => { group: Group } | { refuse: R },
  ): Promise<{ group: Group } | { refuse: R } | null>;

  getProfile(appId: string, uid: string): Promise<ProfileRecord | null>;
  putProfile(appId: string, uid: string, profile: ProfileRecord): Promise<void>;

  /** Closes the store; resolves once work it started in the background has ended. */
  close(): void | Promise<void>;
}
