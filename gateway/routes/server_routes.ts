/**
 * The server API (with the app's `apikey`): users, auth tokens, presence, sessions and
 * messages.
 */
import { contract, type Message } from "../../contract/mod.ts";
import { authTokenHash, toBase64Url } from "../credential.ts";
import { GatewayError } from "../errors.ts";
import type { GatewayServices } from "../services.ts";
import type { UserState } from "../user_state.ts";
import { serverApp } from "./auth.ts";
import { implement, type ImplementedRoute } from "./define.ts";

export function serverRoutes(services: GatewayServices): ImplementedRoute[] {
  const { store, users, clock } = services;

  /**
   * Users known to exist, per app. Users are never deleted, so a positive answer stays true;
   * the store is asked once per user, not once per call.
   */
  const existing = new Map<string, Set<string>>();
  const missingUsers = async (appId: string, uids: string[]): Promise<string[]> => {
    let known = existing.get(appId);
    if (known === undefined) existing.set(appId, known = new Set());
    const unknown = uids.filter((uid) => !known.has(uid));
    if (unknown.length === 0) return unknown;
    const found = await Promise.all(unknown.map((uid) => store.getUser(appId, uid)));
    const missing: string[] = [];
    unknown.forEach((uid, i) => {
      if (found[i] === null) missing.push(uid);
      else known.add(uid);
    });
    return missing;
  };

  const requireUser = async (appId: string, uid: string): Promise<void> => {
    if ((await missingUsers(appId, [uid])).length > 0) {
      throw new GatewayError("ERR_UID_NOT_FOUND", `No user '${uid}' exists.`);
    }
  };

  /** The state object of an existing user, for the read routes. */
  const stateOfUser = async (
    c: Parameters<typeof serverApp>[1],
    params: { appId: string; uid: string },
  ) => {
    const app = serverApp(services, c, params.appId);
    await requireUser(app.appId, params.uid);
    // A read: it must not load the user into memory for good.
    return await users.read(app.appId, params.uid);
  };

  return [
    implement(contract.server.createUser, async ({ params, body }, c) => {
      const app = serverApp(services, c, params.appId);
      const user = { uid: body.uid, name: body.name ?? body.uid, createdAt: clock.now() };
      if (!(await store.createUser(app.appId, user))) {
        throw new GatewayError("ERR_UID_ALREADY_EXISTS", `A user '${body.uid}' exists already.`);
      }
      return { status: 201 as const, body: user };
    }),

    implement(contract.server.createAuthToken, async ({ params, body }, c) => {
      const app = serverApp(services, c, params.appId);
      await requireUser(app.appId, params.uid);
      const now = clock.now();
      const authToken = `at_${randomToken()}`;
      const expiresAt = body.ttlSeconds === undefined ? null : now + body.ttlSeconds * 1000;
      // Only the hash is stored: the reply is the one place the token appears.
      await store.putAuthToken({
        appId: app.appId,
        uid: params.uid,
        tokenHash: authTokenHash(authToken),
        createdAt: now,
        expiresAt,
      });
      return {
        status: 201 as const,
        body: { authToken, uid: params.uid, createdAt: now, expiresAt },
      };
    }),

    implement(contract.server.revokeAuthToken, async ({ params }, c) => {
      const app = serverApp(services, c, params.appId);
      const tokenHash = authTokenHash(params.authToken);
      if (!(await store.deleteAuthToken(app.appId, params.uid, tokenHash))) {
        throw new GatewayError("ERR_NOT_FOUND", "No such auth token for this user.");
      }
      return { status: 200 as const, body: { ok: true as const } };
    }),

    implement(contract.server.getPresence, async ({ params }, c) => {
      const state = await stateOfUser(c, params);
      return {
        status: 200 as const,
        body: {
          uid: params.uid,
          online: state.online,
          lastSeenAt: state.online ? null : state.lastSeenAt,
        },
      };
    }),

    implement(contract.server.getSessions, async ({ params }, c) => {
      const state = await stateOfUser(c, params);
      return {
        status: 200 as const,
        body: {
          uid: params.uid,
          online: state.online,
          sessions: [...state.sessions()].map((s) => state.view(s)),
        },
      };
    }),

    implement(contract.server.sendMessage, async ({ params, body }, c) => {
      const app = serverApp(services, c, params.appId);
      const named = body.from === undefined ? body.to : [...body.to, body.from];
      const missing = await missingUsers(app.appId, named);
      if (missing.length > 0) {
        // Nothing is sent unless every recipient exists: a typo must not half-deliver.
        throw new GatewayError(
          "ERR_UID_NOT_FOUND",
          `No user ${missing.map((uid) => `'${uid}'`).join(", ")} exists.`,
          { uids: missing },
        );
      }
      // In memory for connected users; loaded (once) for the others, whose seq still counts.
      // Each is pinned until the send is done, so none is evicted while the send waits.
      const pinned = (state: UserState) => (state.pin(), state);
      const settled = await Promise.allSettled(body.to.map((uid) => {
        const held = users.peek(app.appId, uid);
        return held !== undefined ? pinned(held) : users.get(app.appId, uid).then(pinned);
      }));
      const states = settled.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
      try {
        const failed = settled.find((r) => r.status === "rejected");
        if (failed !== undefined) throw failed.reason;
        // A seq is handed out only once its reservation is on disk, so an acknowledged seq is
        // never handed out again, after a crash either (usually no wait: blocks are reserved
        // ahead).
        for (;;) {
          const waits = states.filter((state) => state.seqCapacity <= 0)
            .map((state) => state.seqReady());
          if (waits.length === 0) break;
          await Promise.all(waits);
        }
        const id = `msg_${randomToken()}`;
        const sentAt = clock.now();
        const from = body.from ?? null;
        const recipients = states.map((state) => {
          const message: Message = { ...body.message, id, from, to: state.uid, sentAt };
          return { uid: state.uid, ...state.deliver(message) };
        });
        return { status: 200 as const, body: { id, sentAt, recipients } };
      } finally {
        for (const state of states) state.unpin();
      }
    }),
  ];
}

function randomToken(): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(24)));
}
