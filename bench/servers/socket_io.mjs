/**
 * Comparison arm: Socket.IO 4 on Node, WebSocket transport only. The equivalent of the
 * JSON ping → pong is an emit with an acknowledgement: `ping` is acked with the pong.
 * `fanout` emits `message` events round-robin over all sockets.
 */
import http from "node:http";
import { createRequire } from "node:module";
import process from "node:process";

// Required from bench/node/ (installed there by bench/main.ts with `npm ci`); a require()
// also keeps `deno check` from trying to resolve this Node-only package.
const { Server } = createRequire(new URL("../node/", import.meta.url))("socket.io");

const server = http.createServer();
const io = new Server(server, {
  transports: ["websocket"],
  serveClient: false,
});

function fanout(count) {
  const all = [...io.sockets.sockets.values()];
  for (let i = 0; i < count; i++) {
    all[i % all.length].emit("message", {
      type: "message",
      seq: i,
      serverTime: Date.now(),
    });
  }
}

io.on("connection", (socket) => {
  socket.on("ping", (frame, ack) => {
    ack({
      type: "pong",
      id: frame.id,
      serverTime: Date.now(),
      backgroundDeadline: null,
    });
  });
  socket.on("fanout", (frame) => fanout(frame.count));
});

const host = process.env.HOST ?? "127.0.0.1";
server.listen(Number(process.env.PORT), host, () => {
  console.log(`listening on http://${host}:${server.address().port}`);
});
