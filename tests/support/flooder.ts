/**
 * A hostile client, as its own process, for tests/flood_isolation_test.ts:
 *
 *   deno run -A tests/support/flooder.ts <kind> <port> <credential> <durationMs>
 *
 * kinds: `text` (one connection floods ping frames), `binary` (one connection without a
 * credential floods empty binary frames, never reading), `reconnect` (floods, and reconnects to
 * flood again whenever it is closed), `login` (wrong-key logins over HTTP and inside the
 * WebSocket handshake, as fast as it can). It speaks WebSocket over raw TCP from 127.0.0.2 (so
 * that its address is not the well-behaved clients'), writes as fast as the kernel takes, and
 * prints one JSON line with what it did. It waits for a line on stdin before it starts.
 */
import http from "node:http";
import net from "node:net";
import { Buffer } from "node:buffer";

/** The development app (kept literal: this process loads nothing it does not need). */
const DEV_APP_ID = "demo";

const [kind, portText, credential, durationText, local] = Deno.args;
const port = Number(portText);
// The flood starts when the test says so (a line on stdin), so that start-up is not measured.
await Deno.stdin.readable.getReader().read();
const until = Date.now() + Number(durationText);
/** The flooder's own address (each flood kind gets its own: a ban must not carry over). */
const LOCAL = local ?? "127.0.0.2";

/** One masked client frame (RFC 6455 §5.2), opcode 1 (text) or 2 (binary). */
function frame(payload: Uint8Array, opcode: 1 | 2): Uint8Array {
  const length = payload.byteLength;
  const head = length < 126 ? 2 : 4;
  const out = new Uint8Array(head + 4 + length);
  out[0] = 0x80 | opcode;
  if (length < 126) out[1] = 0x80 | length;
  else {
    out[1] = 0x80 | 126;
    out[2] = length >> 8;
    out[3] = length & 0xff;
  }
  const mask = crypto.getRandomValues(new Uint8Array(4));
  out.set(mask, head);
  for (let i = 0; i < length; i++) out[head + 4 + i] = payload[i] ^ mask[i & 3];
  return out;
}

const text = (value: unknown) => frame(new TextEncoder().encode(JSON.stringify(value)), 1);
/** 256 pings in one write: the kernel takes them as fast as the gateway reads. */
const PING_BATCH = Buffer.concat(
  Array.from({ length: 256 }, (_, i) => text({ type: "ping", id: i })),
);
const BINARY_BATCH = Buffer.concat(Array.from({ length: 256 }, () => frame(new Uint8Array(0), 2)));

const stats = {
  kind,
  attempts: 0,
  connections: 0,
  refused: 0,
  closeCodes: {} as Record<string, number>,
};

/** Opens a WebSocket over raw TCP; resolves when the 101 arrives (null when refused). */
function open(path: string): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    stats.attempts++;
    const socket = net.connect({ host: "127.0.0.1", port, localAddress: LOCAL });
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      if (!head.startsWith("HTTP/1.1 101")) {
        stats.refused++;
        socket.destroy();
        return resolve(null);
      }
      stats.connections++;
      resolve(socket);
    };
    socket.on("data", onData);
    socket.on("error", () => resolve(null));
    socket.on("close", () => resolve(null));
    socket.on("connect", () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      );
    });
  });
}

/** Writes `batch` until the socket closes or time is up; reads (and discards) what comes back. */
function flood(socket: net.Socket, batch: Uint8Array, read: boolean): Promise<void> {
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve();
    };
    socket.on("data", (chunk: Buffer) => {
      // A close frame from the server: record its code.
      for (let i = 0; i + 3 < chunk.length; i++) {
        if (chunk[i] === 0x88 && chunk[i + 1] >= 2 && chunk[i + 1] < 126) {
          const code = String(chunk.readUInt16BE(i + 2));
          stats.closeCodes[code] = (stats.closeCodes[code] ?? 0) + 1;
          return finish();
        }
      }
    });
    if (!read) socket.pause();
    socket.on("close", finish);
    socket.on("error", finish);
    const pump = () => {
      while (!done && Date.now() < until) {
        if (!socket.write(batch)) return void socket.once("drain", pump);
      }
      if (Date.now() >= until) finish();
    };
    pump();
  });
}

async function textFlood(): Promise<void> {
  const socket = await open(`/v1/ws?credential=${encodeURIComponent(credential)}`);
  if (socket === null) return;
  socket.write(text({ type: "connect" }));
  await flood(socket, PING_BATCH, true);
}

/** One wrong-key login over HTTP from the flooder's address (a keep-alive connection). */
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function httpLogin(body: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({
      host: "127.0.0.1",
      port,
      localAddress: LOCAL,
      agent,
      method: "POST",
      path: `/v1/apps/${DEV_APP_ID}/login`,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", () => resolve(0));
    req.end(body);
  });
}

async function loginFlood(): Promise<void> {
  const body = JSON.stringify({ uid: "superhero5", authKey: "wrong_key_000000" });
  const socketLogin = text({
    type: "connect",
    login: { appId: DEV_APP_ID, uid: "superhero5", authKey: "wrong_key_000000" },
  });
  const statuses: Record<string, number> = {};
  let http = 0;
  let sockets = 0;
  while (Date.now() < until) {
    const status = await httpLogin(body);
    statuses[status] = (statuses[status] ?? 0) + 1;
    http++;
    if (http % 8 !== 0) continue;
    // A login inside the WebSocket handshake: refused, closed 4007; the next one is a new socket.
    const socket = await open("/v1/ws");
    if (socket === null) continue;
    sockets++;
    await new Promise<void>((resolve) => {
      socket.on("close", () => resolve());
      socket.on("error", () => resolve());
      socket.on("data", (chunk: Buffer) => {
        if (chunk.includes(0x88)) socket.destroy(); // the close frame: done
      });
      socket.write(socketLogin);
      setTimeout(() => socket.destroy(), Math.max(0, until - Date.now()));
    });
  }
  agent.destroy();
  Object.assign(stats, { httpLogins: http, httpStatuses: statuses, socketLogins: sockets });
}

switch (kind) {
  case "text":
    await textFlood();
    break;
  case "binary": {
    const socket = await open("/v1/ws");
    if (socket !== null) await flood(socket, BINARY_BATCH, false);
    break;
  }
  case "reconnect":
    while (Date.now() < until) await textFlood();
    break;
  case "login":
    await loginFlood();
    break;
  default:
    throw new Error(`unknown flood kind ${kind}`);
}
console.log(JSON.stringify(stats));
Deno.exit(0);
