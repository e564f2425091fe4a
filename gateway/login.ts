/**
 * Login: checks an auth token (or uid + the app's dev authKey), creates a session on the user's
 * state object and signs its credential. Shared by `POST /v1/apps/{appId}/login` and the
 * WebSocket handshake that logs in (`connect` with `login`).
 */
import type { LoginBody, LoginReply } from "../contract/mod.ts";
import { appOf } from "./apps.ts";
import type { Clock } from "./clock.ts";
import type { AppConfig, GatewayConfig } from "./config.ts";
import { authTokenHash, constantTimeEqual, type CredentialSigner } from "./credential.ts";
import { LOST_USER } from "./cluster/port.ts";
import { GatewayError } from "./errors.ts";
import type { GatewayStore } from "./store/types.ts";
import type { LiveSession, UserState, UserStates } from "./user_state.ts";

/**
 * What a login reads and writes. `GatewayServices` provides it; naming only these keeps login
 * below the services bag, which holds the connection context that calls login.
 */
export interface LoginServices {
  apps: ReadonlyMap<string, AppConfig>;
  store: GatewayStore;
  users: UserStates;
  signer: CredentialSigner;
  clock: Clock;
  config: Pick<GatewayConfig, "sessionTtlMs">;
}

export interface LoginResult {
  user: UserState;
  session: LiveSession;
  reply: LoginReply;
}

/** Throws a GatewayError with the contract's code when the login is refused. */
export async function login(
  services: LoginServices,
  appId: string,
  body: LoginBody,
  where: "here" | "anywhere" = "anywhere",
): Promise<LoginResult> {
  const { apps, store, users, signer, clock, config } = services;
  const app = appOf(apps, appId);
  let uid: string;
  if ("authToken" in body) {
    const token = await store.getAuthToken(authTokenHash(body.authToken));
    if (
      token === null || token.appId !== app.appId ||
      (token.expiresAt !== null && token.expiresAt <= clock.now())
    ) {
      throw new GatewayError("AUTH_ERR_AUTH_TOKEN_NOT_FOUND");
    }
    uid = token.uid;
  } else {
    if (app.authKey === undefined) {
      throw new GatewayError(
        "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
        "Login with uid and authKey is not enabled for this app; use an auth token.",
      );
    }
    if (!constantTimeEqual(body.authKey, app.authKey)) {
      throw new GatewayError("ERR_INVALID_AUTH_KEY");
    }
    uid = body.uid;
  }
  const user = await store.getUser(app.appId, uid);
  if (user === null) throw new GatewayError("ERR_UID_NOT_FOUND", `No user '${uid}' exists.`);

  users.requireWritable();
  const state = await users.get(app.appId, uid, where);
  const session = state.createSession(crypto.randomUUID(), body.mode ?? "auto");
  // Output gate: the session is on disk before anyone can use its credential.
  await users.runtime.writer.durable();
  // In a cluster, a write refused because another node took the user stored nothing.
  if (state.lost) throw new GatewayError("ERR_SERVICE_UNAVAILABLE", LOST_USER);
  const credential = signer.sign({
    appId: app.appId,
    uid,
    sessionId: session.sessionId,
    exp: clock.now() + config.sessionTtlMs,
  });
  return {
    user: state,
    session,
    reply: {
      user,
      session: {
        sessionId: session.sessionId,
        credential,
        mode: session.mode,
        createdAt: session.createdAt,
      },
    },
  };
}

/** Verifies a session credential and finds its live session; null when either fails. */
export async function resolveCredential(
  services: Pick<LoginServices, "apps" | "users" | "signer" | "clock">,
  credential: string,
  where: "here" | "anywhere" = "anywhere",
): Promise<{ user: UserState; session: LiveSession } | null> {
  const claims = services.signer.verify(credential, services.clock.now());
  if (claims === null || !services.apps.has(claims.appId)) return null;
  const user = await services.users.get(claims.appId, claims.uid, where);
  const session = user.session(claims.sessionId);
  return session === undefined ? null : { user, session };
}
