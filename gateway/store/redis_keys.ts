/**
 * Key names in Redis, in one place: the store engine (`redis.ts`) and the cluster
 * (`gateway/cluster/`) share some of them. Every key starts with the configured prefix
 * (`REDIS_PREFIX`), so one Redis can hold several gateways' data; each part is
 * percent-encoded, so no app id or uid can reach into another's keys.
 */
const part = (value: string): string => encodeURIComponent(value);

export class RedisKeys {
  constructor(readonly prefix: string) {}

  /** A user's claim: the string `"<node> <fence>"` of the node that writes the user now. */
  owner(appId: string, uid: string): string {
    return `${this.prefix}own:${part(appId)}:${part(uid)}`;
  }

  /** The counter fencing tokens are drawn from (INCR): every claim gets a larger one. */
  fenceCounter(): string {
    return `${this.prefix}fence`;
  }

  /** A user (string: JSON `User`). */
  user(appId: string, uid: string): string {
    return `${this.prefix}user:${part(appId)}:${part(uid)}`;
  }

  /** An auth token by its hash (string: JSON `AuthTokenRecord`; expires at its `expiresAt`). */
  token(tokenHash: string): string {
    return `${this.prefix}token:${part(tokenHash)}`;
  }

  /** A user's `UserMetaRecord` (string: JSON). */
  meta(appId: string, uid: string): string {
    return `${this.prefix}meta:${part(appId)}:${part(uid)}`;
  }

  /** A user's sessions (hash: sessionId → JSON `SessionRecord`). */
  sessions(appId: string, uid: string): string {
    return `${this.prefix}sess:${part(appId)}:${part(uid)}`;
  }

  /** The users holding a connection (set of `heldMember`s): revived at start-up. */
  held(): string {
    return `${this.prefix}held`;
  }

  /** A user's stream (sorted set: score = seq, member = `"<seq> <at> <body>"`). */
  events(appId: string, uid: string): string {
    return `${this.prefix}ev:${part(appId)}:${part(uid)}`;
  }

  /** The result of a user's send with a client id (string: JSON `SendRecord`). */
  sent(appId: string, uid: string, clientMessageId: string): string {
    return `${this.prefix}sent:${part(appId)}:${part(uid)}:${part(clientMessageId)}`;
  }

  /** A group (string: JSON `Group`). */
  group(appId: string, guid: string): string {
    return `${this.prefix}group:${part(appId)}:${part(guid)}`;
  }

  /** A user's roles and friends (string: JSON `ProfileRecord`). */
  profile(appId: string, uid: string): string {
    return `${this.prefix}prof:${part(appId)}:${part(uid)}`;
  }
}

/** A member of the `held()` set: `[appId, uid]` as JSON, which no two users share. */
export function heldMember(appId: string, uid: string): string {
  return JSON.stringify([appId, uid]);
}

/** The user a member of the `held()` set names; null for a member in another format. */
export function parseHeldMember(member: string): { appId: string; uid: string } | null {
  try {
    const value: unknown = JSON.parse(member);
    if (
      Array.isArray(value) && value.length === 2 && typeof value[0] === "string" &&
      typeof value[1] === "string"
    ) {
      return { appId: value[0], uid: value[1] };
    }
  } catch {
    // Not ours: skipped.
  }
  return null;
}
