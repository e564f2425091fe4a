/**
 * Auto mode: the client opens, keeps and reopens the socket by itself.
 * Run against `deno task serve`: `deno run --allow-net --allow-env examples/auto_mode.ts`
 * (it reads GATEWAY_URL, default http://127.0.0.1:8000).
 */
import { AppSettingsBuilder, createRestClient, GatewayClient } from "../client/mod.ts";

const baseUrl = Deno.env.get("GATEWAY_URL") ?? "http://127.0.0.1:8000";
const client = new GatewayClient({ baseUrl });
const settings = new AppSettingsBuilder()
  .setRegion("us")
  .subscribePresenceForAllUsers()
  .autoEstablishSocketConnection(true) // auto mode (the default)
  .build();
await client.init("demo", settings);

/** Resolves at the next transition to `status`. */
const next = (status: "connected" | "disconnected") =>
  new Promise<void>((resolve) => {
    const id = `wait-${status}-${Math.random()}`;
    client.addConnectionListener(id, {
      [status === "connected" ? "onConnected" : "onDisconnected"]: () => {
        client.removeConnectionListener(id);
        resolve();
      },
    });
  });

client.addConnectionListener("log", {
  inConnecting: () => console.log("connecting"),
  onConnected: (info) => console.log(`connected (session ${info.sessionId.slice(0, 8)}…)`),
  onDisconnected: (info) => console.log(`disconnected: ${info.reason} (${info.code})`),
});

let connected = next("connected");
const user = await client.login("superhero1", "dev_auth_key__not_secret"); // connects by itself
console.log(`logged in as ${user.uid}`);
await connected;

// Background without the background service: the gateway closes the socket at once.
const disconnected = next("disconnected");
await client.setAppState("background");
await disconnected;

// Back to foreground: the client reconnects by itself.
connected = next("connected");
await client.setAppState("foreground");
await connected;
console.log(`status: ${client.getConnectionStatus()}`);

// A message: here the app's own server sends it through the server API (dev API key).
const received = new Promise<void>((resolve) =>
  client.addMessageListener("log", {
    onTextMessageReceived: (message, seq) => {
      console.log(`message #${seq} from ${message.from ?? "the app's server"}: ${message.text}`);
      resolve();
    },
  })
);
await createRestClient({ baseUrl }).server.sendMessage({
  params: { appId: "demo" },
  headers: { apikey: "dev_api_key__not_secret" },
  body: { to: ["superhero1"], message: { kind: "text", text: "hello" } },
});
await received;

await client.logout();
await client.destroy();
