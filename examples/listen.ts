/**
 * Prints every frame one user's connection receives, one JSON line each: the second terminal
 * of the README's tour. It logs the user in with the development app's authKey, opens the
 * WebSocket with the session credential, sends `connect`, and keeps the link alive with the
 * automatic heartbeat (its pongs are not printed). It stops on Ctrl-C, or by itself when the
 * gateway closes the connection.
 *
 *   deno task listen [uid]          (uid defaults to superhero2)
 *
 * Reads GATEWAY_URL (default http://127.0.0.1:8000), as every example does.
 */
import { decodeServerFrame, encodeClientFrame } from "../client/mod.ts";
import type { ClientFrameInput } from "../contract/mod.ts";

const baseUrl = Deno.env.get("GATEWAY_URL") ?? "http://127.0.0.1:8000";
const uid = Deno.args[0] ?? "superhero2";

const login = await fetch(`${baseUrl}/v1/apps/demo/login`, {
  method: "POST",
  body: JSON.stringify({ uid, authKey: "dev_auth_key__not_secret", mode: "auto" }),
});
const reply = await login.json();
if (login.status !== 200) {
  console.error(`login failed: ${JSON.stringify(reply)}`);
  Deno.exit(1);
}
const { credential } = reply.session;
const init = await (await fetch(`${baseUrl}/v1/apps/demo/init`, {
  method: "POST",
  body: JSON.stringify({ region: "us" }),
})).json();

const socket = new WebSocket(
  `${baseUrl.replace(/^http/, "ws")}${init.websocketPath}?credential=${credential}`,
);
const send = (frame: ClientFrameInput) => socket.send(encodeClientFrame(frame));
let heartbeat: ReturnType<typeof setInterval> | undefined;
let heartbeats = 0;

socket.onopen = () => send({ type: "connect" });
socket.onmessage = (event) => {
  const decoded = decodeServerFrame(String(event.data));
  if (!decoded.ok) return console.error(`not a server frame: ${String(event.data)}`);
  const { frame } = decoded;
  if (frame.type === "pong" && typeof frame.id === "string" && frame.id.startsWith("hb")) return;
  console.log(String(event.data));
  if (frame.type === "connected") {
    heartbeat = setInterval(
      () => send({ type: "ping", id: `hb${++heartbeats}` }),
      frame.timing.heartbeatIntervalMs,
    );
  }
};
const stop = () => socket.close(1000);
Deno.addSignalListener("SIGINT", stop);
socket.onclose = (event) => {
  clearInterval(heartbeat);
  Deno.removeSignalListener("SIGINT", stop); // nothing left to wait for: the program ends
  console.error(`closed: ${event.code} ${event.reason}`);
};
