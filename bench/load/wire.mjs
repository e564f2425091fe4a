/**
 * A minimal WebSocket client straight on node:net, for load generation only: no
 * validation, no extensions, no fragmentation (the servers under test never fragment
 * their small frames). It costs a fraction of a full client, so one generator process
 * on one core can saturate a server on the other core.
 */
import { Buffer } from "node:buffer";
import net from "node:net";

/**
 * A client→server text frame. The mask key is all zeros, so the masked payload is the
 * payload itself and frames can be built once and written many times (RFC 6455 lets the
 * client pick any key; servers just XOR with it).
 */
export function textFrame(text) {
  const payload = Buffer.from(text);
  const n = payload.length;
  if (n >= 65536) throw new Error("frame too large for the bench client");
  const head = n < 126
    ? Buffer.from([0x81, 0x80 | n, 0, 0, 0, 0])
    : Buffer.from([0x81, 0x80 | 126, n >> 8, n & 255, 0, 0, 0, 0]);
  return Buffer.concat([head, payload]);
}

function controlFrame(opcode, payload) {
  return Buffer.concat([
    Buffer.from([0x80 | opcode, 0x80 | payload.length, 0, 0, 0, 0]),
    payload,
  ]);
}

let lastAddress = 0;
/** Source addresses rotate over 127.0.0.2–127.0.0.254: one address has only ~28 000 ports. */
function nextLocalAddress() {
  lastAddress = (lastAddress % 253) + 1;
  return `127.0.0.${lastAddress + 1}`;
}

/**
 * A connection. Set `onmessage(payload: Buffer)` for text/binary messages and
 * `onchunk()` to act once per TCP read (after its messages), e.g. to batch writes.
 */
export class Conn {
  constructor(socket) {
    this.socket = socket;
    /** Close code from the server's close frame, 1006 if none came. */
    this.closeCode = undefined;
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.onmessage = (payload) => this.queue.push(payload);
    this.onchunk = undefined;
    this.queue = [];
    this.waiter = undefined;
  }

  send(frame) {
    this.socket.write(frame);
  }

  /** The next message, for handshakes (before `onmessage` is replaced). */
  next(timeoutMs = 30_000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("no reply from server")),
        timeoutMs,
      );
      this.onmessage = (payload) => {
        clearTimeout(timer);
        this.onmessage = (p) => this.queue.push(p);
        resolve(payload);
      };
      this.closed.then(() => reject(new Error(`closed (${this.closeCode}) during handshake`)));
    });
  }

  destroy() {
    this.socket.destroy();
  }

  /** Starts the closing handshake (code 1000); `closed` resolves once the server has answered. */
  close() {
    this.socket.write(controlFrame(0x8, Buffer.from([0x03, 0xe8])));
  }

  /** Parses whole frames off `buf`; returns the unparsed rest. */
  parse(buf) {
    let off = 0;
    while (buf.length - off >= 2) {
      const b1 = buf[off + 1];
      let len = b1 & 127;
      let head = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        head = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2));
        head = 10;
      }
      if (buf.length - off < head + len) break;
      const opcode = buf[off] & 15;
      const payload = buf.subarray(off + head, off + head + len);
      off += head + len;
      if (opcode === 1 || opcode === 2) this.onmessage(payload);
      else if (opcode === 9) this.socket.write(controlFrame(0xa, payload));
      else if (opcode === 8) {
        this.closeCode = len >= 2 ? payload.readUInt16BE(0) : 1005;
        this.socket.end(controlFrame(0x8, payload.subarray(0, 2)));
      }
    }
    this.onchunk?.();
    return off === buf.length ? null : buf.subarray(off);
  }
}

/**
 * Opens a WebSocket to ws://host:port/path from the next 127.0.0.x source address and
 * resolves when the server's 101 has arrived.
 */
export function connect({ host, port, path, protocol }) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host,
      port,
      localAddress: nextLocalAddress(),
      noDelay: true,
    });
    const conn = new Conn(socket);
    let buf = null;
    let upgraded = false;
    socket.on("connect", () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\n` +
          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
          "Sec-WebSocket-Version: 13\r\n" +
          (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : "") + "\r\n",
      );
    });
    socket.on("data", (chunk) => {
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.toString("latin1", 0, end);
        if (!head.startsWith("HTTP/1.1 101")) {
          socket.destroy();
          reject(
            new Error(
              `upgrade refused: ${head.split("\r\n")[0]} ${buf.subarray(end + 4)}`,
            ),
          );
          return;
        }
        upgraded = true;
        resolve(conn);
        buf = buf.length === end + 4 ? null : buf.subarray(end + 4);
        if (!buf) return;
      }
      buf = conn.parse(buf);
    });
    socket.on("error", (err) => {
      if (!upgraded) reject(err);
    });
    socket.on("close", () => {
      conn.closeCode ??= 1006;
      if (!upgraded) reject(new Error("closed before upgrade"));
      conn.resolveClosed(conn.closeCode);
    });
  });
}
