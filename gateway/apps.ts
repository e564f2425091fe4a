/**
 * The apps this gateway serves, looked up by id. Shared by the HTTP routes and by login (over
 * HTTP or inside the WebSocket handshake), so it lives beside the core, not in routes/.
 */
import type { AppConfig } from "./config.ts";
import { GatewayError } from "./errors.ts";

/** The app with this id; throws `ERR_INVALID_APP_ID` when the gateway has none. */
export function appOf(apps: ReadonlyMap<string, AppConfig>, appId: string): AppConfig {
  const app = apps.get(appId);
  if (app === undefined) throw new GatewayError("ERR_INVALID_APP_ID", `No app '${appId}' exists.`);
  return app;
}
