/**
 * Two users chat: superhero1 (auto mode) types and sends text and custom messages; superhero2
 * (manual mode) receives them once each, in order — also the ones sent while it was
 * disconnected, which the gateway replays when it connects again.
 * Run against `deno task serve`: `deno run --allow-net --allow-env examples/chat.ts`
 * (it reads GATEWAY_URL, default http://127.0.0.1:8000).
 */
import { AppSettingsBuilder, GatewayClient } from "../client/mod.ts";

const baseUrl = Deno.env.get("GATEWAY_URL") ?? "http://127.0.0.1:8000";
const settings = (auto: boolean) =>
  new AppSettingsBuilder().setRegion("us").autoEstablishSocketConnection(auto).build();

// What superhero2 prints, so that the script can wait until it has printed something.
const printed: string[] = [];
let check = () => {};
const print = (line: string) => {
  console.log(line);
  printed.push(line);
  check();
};
const until = (condition: () => boolean) =>
  new Promise<void>((resolve) => {
    check = () => condition() && resolve();
    check();
  });
const messages = () => printed.filter((line) => line.startsWith("superhero2 got")).length;

// superhero2: manual mode, prints what it receives.
const bob = new GatewayClient({ baseUrl });
await bob.init("demo", settings(false));
bob.addMessageListener("print", {
  onTextMessageReceived: (message, seq) =>
    print(`superhero2 got "${message.text}" from ${message.from} (seq ${seq})`),
  onCustomMessageReceived: (message, seq) =>
    print(`superhero2 got a ${message.customType}: ${JSON.stringify(message.data)} (seq ${seq})`),
  onTypingStarted: (typing) => print(`${typing.from} is typing…`),
  onTypingEnded: (typing) => print(`${typing.from} stopped typing`),
});
await bob.login("superhero2", "dev_auth_key__not_secret");
await bob.connect();

// superhero1: auto mode (login opens the connection), types and sends.
const alice = new GatewayClient({ baseUrl });
await alice.init("demo", settings(true));
const aliceConnected = new Promise<void>((resolve) =>
  alice.addConnectionListener("ready", { onConnected: () => resolve() })
);
await alice.login("superhero1", "dev_auth_key__not_secret");
await aliceConnected; // typing is live only: it needs the connection

const to = { receiverType: "user", receiver: "superhero2" } as const;
alice.startTyping(to); // call it on every key: it renews the indicator while the user types
await until(() => printed.includes("superhero1 is typing…"));
const hello = await alice.sendMessage({ ...to, text: "hello" });
console.log(`superhero1 sent "hello" (seq ${hello.seq} in its own stream)`);
await alice.sendCustomMessage({ ...to, customType: "location", data: { lat: 48.85, lon: 2.35 } });
alice.endTyping(to);
await until(() => printed.includes("superhero1 stopped typing") && messages() === 2);

// superhero2 disconnects; what is sent meanwhile comes when it connects again.
await bob.disconnect();
await alice.sendMessage({ ...to, text: "are you there?" });
await alice.sendMessage({ ...to, text: "call me" });
await bob.connect(); // its connect frame resumes from the last message it received
await until(() => messages() === 4);

await alice.logout();
await bob.logout();
await alice.destroy();
await bob.destroy();
