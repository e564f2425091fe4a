/**
 * Baseline arm: the smallest Deno WebSocket server that answers like the gateway, with no
 * auth, no session state and no liveness rules. `/echo` echoes every message; any other
 * path speaks JSON: connect → connected, ping → pong, and `{"type":"fanout","count":n}`
 * sends n server-originated frames round-robin over all open sockets.
 */
const sockets = new Set<WebSocket>();

function fanout(count: number): void {
  const all = [...sockets];
  for (let i = 0; i < count; i++) {
    all[i % all.length].send(
      JSON.stringify({ type: "message", seq: i, serverTime: Date.now() }),
    );
  }
}

Deno.serve({
  hostname: Deno.env.get("HOST") ?? "127.0.0.1",
  port: Number(Deno.env.get("PORT")),
  onListen: ({ hostname, port }) => console.log(`listening on http://${hostname}:${port}`),
}, (req) => {
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onmessage = new URL(req.url).pathname === "/echo" ? (e) => socket.send(e.data) : (e) => {
    const frame = JSON.parse(e.data);
    const serverTime = Date.now();
    if (frame.type === "ping") {
      socket.send(
        JSON.stringify({
          type: "pong",
          id: frame.id,
          serverTime,
          backgroundDeadline: null,
        }),
      );
    } else if (frame.type === "connect") {
      socket.send(
        JSON.stringify({ type: "connected", id: frame.id, serverTime }),
      );
    } else if (frame.type === "fanout") fanout(frame.count);
  };
  return response;
});
