/**
 * The narrow storage interface of the gateway. One implementation per engine
 * (`kv.ts` for Deno KV; Redis comes as a second one); a shared conformance suite in
 * `tests/store_conformance.ts` runs against each.
 */
import type { Mode, User } from "../../contract/mod.ts";
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
   * Event sequence numbers up to this one may have been handed out; after a restart the user's
   * stream continues above it. Absent in records written before messages existed (= 0).
   */
  seqReservedTo?: number;
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
  /** Writes several users' changes as one group commit. */
  saveUserStates(changes: UserStateChange[]): Promise<void>;
  /** Users that held a connection when last written: revived at start-up. */
  listHeldUsers(): Promise<Array<{ appId: string; uid: string }>>;

  close(): void;
}
