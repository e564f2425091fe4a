/**
 * The server API's presence routing data: a user's roles (`roles` subscriptions receive the
 * presence of users with one of their roles) and friend list (`friends` subscriptions receive
 * the presence of the users on it).
 */
import { contract, type UserProfile } from "../../contract/mod.ts";
import type { GatewayServices } from "../services.ts";
import { serverApp } from "./auth.ts";
import { implement, type ImplementedRoute } from "./define.ts";

export function profileRoutes(services: GatewayServices): ImplementedRoute[] {
  const { store, messaging } = services;

  const profileOf = async (appId: string, uid: string): Promise<UserProfile> => {
    const profile = await store.getProfile(appId, uid);
    return { uid, roles: profile?.roles ?? [], friends: profile?.friends ?? [] };
  };

  return [
    implement(contract.server.setRoles, async ({ params, body }, c) => {
      const app = serverApp(services, c, params.appId);
      await messaging.requireUsers(app.appId, [params.uid]);
      const before = await profileOf(app.appId, params.uid);
      const roles = [...new Set(body.roles)];
      await store.putProfile(app.appId, params.uid, { roles, friends: before.friends });
      services.profileChanged?.(app.appId, params.uid);
      return { status: 200 as const, body: { ...before, roles } };
    }),

    implement(contract.server.setFriends, async ({ params, body }, c) => {
      const app = serverApp(services, c, params.appId);
      const friends = [...new Set(body.friends)];
      await messaging.requireUsers(app.appId, [params.uid, ...friends]);
      const before = await profileOf(app.appId, params.uid);
      await store.putProfile(app.appId, params.uid, { roles: before.roles, friends });
      services.profileChanged?.(app.appId, params.uid);
      return { status: 200 as const, body: { ...before, friends } };
    }),

    implement(contract.server.getProfile, async ({ params }, c) => {
      const app = serverApp(services, c, params.appId);
      await messaging.requireUsers(app.appId, [params.uid]);
      return { status: 200 as const, body: await profileOf(app.appId, params.uid) };
    }),
  ];
}
