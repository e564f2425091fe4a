/**
 * The WebSocket endpoint. The only place that touches Deno's upgrade API (Deno Deploy has the
 * same), so the rest of the gateway stays runtime-neutral.
 */
import type { Hono } from "hono";
import { WEBSOCKET_PATH, WS_CREDENTIAL_PROTOCOL_PREFIX, WS_PROTOCOL } from "../../contract/mod.ts";
import { Connection } from "../connection.ts";
import { GatewayError } from "../errors.ts";
import type { GatewayEnv, GatewayServices } from "../services.ts";
import { resolveCredential } from "./auth.ts";

export function mountWebSocket(app: Hono<GatewayEnv>, services: GatewayServices): void {
  app.get(WEBSOCKET_PATH, async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new GatewayError("ERR_BAD_REQUEST", "This endpoint expects a WebSocket upgrade.");
    }
    const offered = (c.req.header("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim())
      .filter((p) => p !== "");
    // Browsers cannot set headers on a WebSocket: they pass the credential as a sub-protocol.
    const credential = c.req.query("credential") ??
      offered.find((p) => p.startsWith(WS_CREDENTIAL_PROTOCOL_PREFIX))?.slice(
        WS_CREDENTIAL_PROTOCOL_PREFIX.length,
      );
    // No credential: the `connect` frame must log in (one round trip instead of two).
    const found = credential === undefined ? null : await resolveCredential(services, credential);

    // A browser that offered sub-protocols refuses a reply that names none of them; echo ours
    // (never the credential, which would then sit in more logs).
    const protocol = offered.includes(WS_PROTOCOL) ? WS_PROTOCOL : offered[0];
    // idleTimeout 0: dead peers are the gateway's own rule (a last-seen sweep, `idle_timeout`);
    // Deno's keepalive would re-arm a timer on every frame and close with its own code.
    let upgrade: Deno.WebSocketUpgrade;
    try {
      upgrade = Deno.upgradeWebSocket(c.req.raw, { protocol, idleTimeout: 0 });
    } catch {
      // e.g. no Sec-WebSocket-Key: a malformed upgrade is the client's error, not ours.
      throw new GatewayError("ERR_BAD_REQUEST", "The WebSocket upgrade request is malformed.");
    }
    const { socket, response } = upgrade;
    new Connection(
      socket,
      services.connections,
      found !== null
        ? { kind: "credential", user: found.user, sessionId: found.session.sessionId }
        : credential === undefined
        ? { kind: "login" }
        : { kind: "refused" },
    );
    return response;
  });
}
