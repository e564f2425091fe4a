/** Authentication of HTTP calls: the app, its server API key, and session credentials. */
import type { Context } from "hono";
import { appOf } from "../apps.ts";
import type { AppConfig } from "../config.ts";
import { constantTimeEqual } from "../credential.ts";
import { GatewayError } from "../errors.ts";
import type { GatewayEnv, GatewayServices } from "../services.ts";
import { resolveCredential } from "../login.ts";
import type { LiveSession, UserState } from "../user_state.ts";

export { resolveCredential };

/** The app of a server API call, after checking its `apikey` header. */
export function serverApp(
  services: GatewayServices,
  c: Context<GatewayEnv>,
  appId: string,
): AppConfig {
  const app = appOf(services.apps, appId);
  const given = c.req.header("apikey");
  if (given === undefined || !constantTimeEqual(given, app.apiKey)) {
    throw new GatewayError("ERR_INVALID_API_KEY");
  }
  return app;
}

/** The session behind `Authorization: Bearer <credential>`. */
export async function sessionOf(
  services: GatewayServices,
  c: Context<GatewayEnv>,
): Promise<{ user: UserState; session: LiveSession }> {
  const header = c.req.header("authorization");
  if (header === undefined || header.trim() === "") {
    throw new GatewayError("ERROR_USER_NOT_LOGGED_IN", "No session credential was given.");
  }
  // Auth schemes are case-insensitive (RFC 9110 §11.1).
  const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
  const found = match === null ? null : await resolveCredential(services, match[1]);
  if (found === null) throw new GatewayError("AUTH_ERR_AUTH_TOKEN_NOT_FOUND");
  return found;
}
