/**
 * The server API (with the app's `apikey`): users, auth tokens, presence, sessions and
 * messages.
 */
import { contract, MAX_GROUP_MEMBERS } from "../../contract/mod.ts";
import { authTokenHash, toBase64Url } from "../credential.ts";
import { GatewayError } from "../errors.ts";
import type { GatewayServices } from "../services.ts";
import { serverApp } from "./auth.ts";
import { implement, type ImplementedRoute } from "./define.ts";

export function serverRoutes(services: GatewayServices): ImplementedRoute[] {
  const { store, users, clock, messaging } = services;

  const requireUser = async (appId: string, uid: string): Promise<void> => {
    if ((await messaging.missingUsers(appId, [uid])).length > 0) {
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
      const reply = await messaging.sendFromServer(
        app.appId,
        body.to,
        body.from ?? null,
        body.message,
      );
      return { status: 200 as const, body: reply };
    }),

    implement(contract.server.createGroup, async ({ params, body }, c) => {
      const app = serverApp(services, c, params.appId);
      const members = body.members ?? [];
      await messaging.requireUsers(app.appId, members);
      const group = {
        guid: body.guid,
        name: body.name ?? body.guid,
        members,
        createdAt: clock.now(),
      };
      if (!(await store.createGroup(app.appId, group))) {
        throw new GatewayError("ERR_GUID_ALREADY_EXISTS", `A group '${body.guid}' exists already.`);
      }
      return { status: 201 as const, body: group };
    }),

    implement(contract.server.getGroup, async ({ params }, c) => {
      const app = serverApp(services, c, params.appId);
      const group = await store.getGroup(app.appId, params.guid);
      if (group === null) throw noGroup(params.guid);
      return { status: 200 as const, body: group };
    }),

    implement(contract.server.addMembers, async ({ params, body }, c) => {
      const app = serverApp(services, c, params.appId);
      await messaging.requireUsers(app.appId, body.members);
      const outcome = await store.updateGroup(app.appId, params.guid, (group) => {
        const added = body.members.filter((uid) => !group.members.includes(uid));
        if (group.members.length + added.length > MAX_GROUP_MEMBERS) return { refuse: true };
        return { group: { ...group, members: [...group.members, ...added] } };
      });
      if (outcome === null) throw noGroup(params.guid);
      if ("refuse" in outcome) {
        throw new GatewayError(
          "ERR_GROUP_MEMBER_LIMIT",
          `A group has at most ${MAX_GROUP_MEMBERS} members.`,
          { limit: MAX_GROUP_MEMBERS },
        );
      }
      return { status: 200 as const, body: outcome.group };
    }),

    implement(contract.server.removeMember, async ({ params }, c) => {
      const app = serverApp(services, c, params.appId);
      const outcome = await store.updateGroup(app.appId, params.guid, (group) => {
        if (!group.members.includes(params.uid)) return { refuse: true };
        return { group: { ...group, members: group.members.filter((m) => m !== params.uid) } };
      });
      if (outcome === null) throw noGroup(params.guid);
      if ("refuse" in outcome) {
        throw new GatewayError(
          "ERR_NOT_A_MEMBER",
          `'${params.uid}' is not a member of '${params.guid}'.`,
        );
      }
      return { status: 200 as const, body: outcome.group };
    }),

    implement(contract.server.sendGroupMessage, async ({ params, body }, c) => {
      const app = serverApp(services, c, params.appId);
      const reply = await messaging.sendToGroup(
        app.appId,
        params.guid,
        body.from ?? null,
        body.message,
      );
      return { status: 200 as const, body: reply };
    }),
  ];
}

function noGroup(guid: string): GatewayError {
  return new GatewayError("ERR_GUID_NOT_FOUND", `No group '${guid}' exists.`);
}

function randomToken(): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(24)));
}
