/** The client's calls: init, login, and the session routes (logout, ping, disconnect, status). */
import { contract, WEBSOCKET_PATH } from "../../contract/mod.ts";
import { appOf } from "../apps.ts";
import { timingOf } from "../config.ts";
import { userSendReply } from "../messaging.ts";
import { GatewayError } from "../errors.ts";
import { backgroundDeadlineOf } from "../liveness.ts";
import { login } from "../login.ts";
import type { GatewayServices } from "../services.ts";
import type { UserState } from "../user_state.ts";
import { sessionOf } from "./auth.ts";
import { implement, type ImplementedRoute } from "./define.ts";

export function clientRoutes(services: GatewayServices): ImplementedRoute[] {
  const { config, clock } = services;

  return [
    implement(contract.init, async ({ params, body }) => {
      const app = appOf(services.apps, params.appId);
      if (body.region.toLowerCase() !== app.region.toLowerCase()) {
        throw new GatewayError(
          "ERR_INVALID_REGION",
          `Region '${body.region}' does not match the app's region.`,
        );
      }
      return await Promise.resolve({
        status: 200 as const,
        body: {
          appId: app.appId,
          region: app.region,
          subscriptionType: body.subscriptionType ?? "allUsers",
          roles: body.roles,
          autoEstablishSocketConnection: body.autoEstablishSocketConnection ?? true,
          mode: (body.autoEstablishSocketConnection ?? true) ? "auto" as const : "manual" as const,
          timing: timingOf(config),
          devLoginEnabled: app.authKey !== undefined,
          websocketPath: WEBSOCKET_PATH,
        },
      });
    }),

    implement(contract.login, async ({ params, body }) => {
      const { reply } = await login(services, params.appId, body);
      return { status: 200 as const, body: reply };
    }),

    implement(contract.session.logout, async (_request, c) => {
      const { user, session } = await sessionOf(services, c);
      user.endSession(session.sessionId);
      await services.users.runtime.writer.durable();
      return { status: 200 as const, body: { ok: true as const } };
    }),

    implement(contract.session.ping, async (_request, c) => {
      const { user, session } = await sessionOf(services, c);
      const now = clock.now();
      services.metrics.pings.http++;
      const result = user.call(session.sessionId, { type: "ping", source: "http" }, now);
      if (!result.ok) throw new GatewayError(result.errorCode);
      const after = result.session.liveness;
      const body = {
        serverTime: now,
        appState: after.appState,
        connected: after.connected,
        backgroundDeadline: backgroundDeadlineOf(after),
      };
      // The reply announces the deadline: it goes out once the store covers it.
      if (result.durable !== undefined) await result.durable;
      return { status: 200 as const, body };
    }),

    implement(contract.session.disconnect, async (_request, c) => {
      const { user, session } = await sessionOf(services, c);
      const after = callOrThrow(user, session.sessionId, { type: "disconnect" });
      return { status: 200 as const, body: user.view(after) };
    }),

    implement(contract.session.status, async (_request, c) => {
      const { user, session } = await sessionOf(services, c);
      return { status: 200 as const, body: user.view(session) };
    }),

    implement(contract.session.send, async ({ body }, c) => {
      const { user, session } = await sessionOf(services, c);
      const outcome = await services.messaging.sendFromUser(user, session, body);
      return { status: 200 as const, body: userSendReply(outcome) };
    }),

    implement(contract.session.history, async ({ query }, c) => {
      const { user } = await sessionOf(services, c);
      const page = await user.history(query.after, query.limit);
      return {
        status: 200 as const,
        body: {
          ...page,
          events: page.events.map((event) => ({
            type: "message" as const,
            seq: event.seq,
            message: JSON.parse(event.body),
          })),
        },
      };
    }),
  ];
}

function callOrThrow(
  user: UserState,
  sessionId: string,
  event: Parameters<UserState["call"]>[1],
  now?: number,
) {
  const result = user.call(sessionId, event, now);
  if (!result.ok) throw new GatewayError(result.errorCode);
  return result.session;
}
