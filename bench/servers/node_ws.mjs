/**
 * Comparison arm: Node + `ws`, speaking the same JSON as bench/servers/raw_deno.ts
 * (connect → connected, ping → pong, fanout; `/echo` echoes).
 */
import http from "node:http";
import { createRequire } from "node:module";
import process from "node:process";

// Required from bench/node/ (installed there by bench/main.ts with `npm ci`); a require()
// also keeps `deno check` from trying to resolve this Node-only package.
const { WebSocketServer } = createRequire(new URL("../node/", import.meta.url))("ws");

const server = http.createServer((_req, res) => res.writeHead(426).end());
const wss = new WebSocketServer({ server, perMessageDeflate: false });

function fanout(count) {
  const all = [...wss.clients];
  for (let i = 0; i < count; i++) {
    all[i % all.length].send(
      JSON.stringify({ type: "message", seq: i, serverTime: Date.now() }),
    );
  }
}

wss.on("connection", (ws, req) => {
  if (req.url === "/echo") {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
    return;
  }
  ws.on("message", (data) => {
    const frame = JSON.parse(data.toString());
    const serverTime = Date.now();
    if (frame.type === "ping") {
      ws.send(
        JSON.stringify({
          type: "pong",
          id: frame.id,
          serverTime,
          backgroundDeadline: null,
        }),
      );
    } else if (frame.type === "connect") {
      ws.send(JSON.stringify({ type: "connected", id: frame.id, serverTime }));
    } else if (frame.type === "fanout") fanout(frame.count);
  });
});

const host = process.env.HOST ?? "127.0.0.1";
server.listen(Number(process.env.PORT), host, () => {
  console.log(`listening on http://${host}:${server.address().port}`);
});
