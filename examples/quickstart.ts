// The client in a few lines: auto mode, against `deno task serve` (GATEWAY_URL overrides the URL).
// Run: deno run --allow-net --allow-env examples/quickstart.ts
import { AppSettingsBuilder, GatewayClient, GatewayError } from "../client/mod.ts"; // or dist/client.js

const client = new GatewayClient({
  baseUrl: Deno.env.get("GATEWAY_URL") ?? "http://127.0.0.1:8000",
});
await client.init(
  "demo",
  new AppSettingsBuilder()
    .setRegion("us")
    .subscribePresenceForAllUsers() // or subscribePresenceForRoles([...]) / ...ForFriends()
    .autoEstablishSocketConnection(true) // false = manual mode
    .build(),
);
client.addConnectionListener("ui", {
  inConnecting: () => console.log("connecting"),
  onConnected: (info) => console.log("connected", info.sessionId),
  onDisconnected: (info) => console.log("disconnected", info.reason, info.code, info.reconnect),
  onConnectionError: (error) => console.log(error.errorCode, error.errorDescription),
});
client.addMessageListener("ui", {
  onTextMessageReceived: (message) => console.log(`${message.from ?? "server"}: ${message.text}`),
});
const connected = new Promise<void>((resolve) =>
  client.addConnectionListener("ready", { onConnected: () => resolve() })
);
try {
  await client.login("superhero1", "dev_auth_key__not_secret"); // or login(authToken)
  await connected; // auto mode: login opens the connection
  console.log("status", client.getConnectionStatus());
} catch (error) {
  if (error instanceof GatewayError) console.log(error.errorCode, error.details);
} finally {
  await client.logout(); // ends the session and closes its connection (reason logged_out)
  await client.destroy(); // stops every timer and listener: the program exits
}
