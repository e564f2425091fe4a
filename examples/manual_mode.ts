/**
 * Manual mode: the app calls connect(), ping() and disconnect(); in background the gateway keeps
 * the socket for one window from the last ping.
 * Run against `deno task serve`: `deno run --allow-net --allow-env examples/manual_mode.ts`
 * (it reads GATEWAY_URL, default http://127.0.0.1:8000).
 */
import { AppSettingsBuilder, GatewayClient, GatewayError } from "../client/mod.ts";

const client = new GatewayClient({
  baseUrl: Deno.env.get("GATEWAY_URL") ?? "http://127.0.0.1:8000",
});
await client.init(
  "demo",
  new AppSettingsBuilder().setRegion("us").autoEstablishSocketConnection(false).build(),
);
client.addConnectionListener("log", {
  onConnected: () => console.log("connected"),
  onDisconnected: (info) => console.log(`disconnected: ${info.reason} (${info.code})`),
});

await client.login("superhero2", "dev_auth_key__not_secret");
console.log(`after login: ${client.getConnectionStatus()}`); // manual: nothing opens by itself

await client.connect();
try {
  await client.connect();
} catch (error) {
  if (error instanceof GatewayError) console.log(`connect again: ${error.errorCode}`);
}

await client.setAppState("background");
const window = client.getConnectionInfo().backgroundDeadline! - Date.now();
console.log(
  `in background; the gateway closes in about ${Math.round(window / 1000)} s unless pinged`,
);
const { backgroundDeadline, serverTime } = await client.ping(); // moves the deadline
console.log(`ping: deadline is now ping + ${backgroundDeadline! - serverTime} ms`);

await client.disconnect();
console.log(`after disconnect: ${client.getConnectionStatus()}`);
try {
  await client.ping();
} catch (error) {
  if (error instanceof GatewayError) console.log(`ping when disconnected: ${error.errorCode}`);
}
await client.logout();
await client.destroy();
