/**
 * The WebSocket endpoint. The upgrade itself belongs to the transport (`c.env.upgrade`:
 * node:http + ws, or Deno's), so this route stays runtime-neutral.
 */
import type { Hono } from "hono";
import { WEBSOCKET_PATH, WS_CREDENTIAL_PROTOCOL_PREFIX, WS_PROTOCOL } from "../../contract/mod.ts";
import { Connection, socketAuthOf } from "../connection.ts";
import { GatewayError } from "../errors.ts";
import type { GatewayEnv, GatewayServices } from "../services.ts";
import { UpgradeRefused } from "../transport/types.ts";
import { resolveCredential } from "./auth.ts";
import { OwnedElsewhere } from "../cluster/port.ts";

export function mountWebSocket(app: Hono<GatewayEnv>, services: GatewayServices): void {
  app.get(WEBSOCKET_PATH, async (c) => {
    const upgrade = c.env?.upgrade;
    if (upgrade === undefined || c.req.header("upgrade")?.toLowerCase() !== "websocket") {
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
    // In a cluster the user comes to this node, where its socket is; when it cannot (its holder
    // has a socket of it), the socket is relayed to the holder.
    let found: Awaited<ReturnType<typeof resolveCredential>> = null;
    let relay: Awaited<ReturnType<NonNullable<GatewayServices["relaySocket"]>>> | null = null;
    if (credential !== undefined) {
      try {
        found = await resolveCredential(services, credential, "here");
      } catch (error) {
        if (!(error instanceof OwnedElsewhere) || services.relaySocket === undefined) throw error;
        relay = await services.relaySocket(error.node, {
          credential,
          remoteAddr: c.env?.remoteAddr ?? "unknown",
        });
      }
    }

    // A browser that offered sub-protocols refuses a reply that names none of them; echo ours
    // (never the credential, which would then sit in more logs).
    const protocol = offered.includes(WS_PROTOCOL) ? WS_PROTOCOL : offered[0];
    let upgraded;
    try {
      upgraded = upgrade(c.req.raw, { protocol });
    } catch (error) {
      relay?.abort();
      // e.g. no Sec-WebSocket-Key: a malformed upgrade is the client's error, not ours.
      if (error instanceof UpgradeRefused) throw new GatewayError("ERR_BAD_REQUEST", error.message);
      throw error;
    }
    if (relay !== null) {
      relay.attach(upgraded.socket, false);
      return upgraded.response;
    }
    new Connection(
      upgraded.socket,
      services.connections,
      socketAuthOf(credential, found),
      c.env?.remoteAddr ?? "unknown",
    );
    return upgraded.response;
  });
}
