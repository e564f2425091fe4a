/**
 * A raw WebSocket client over `Deno.connect` (RFC 6455), for what the WebSocket API cannot do:
 * flood without reading, announce a frame it never sends, leave a close frame unanswered.
 * Frames are written exactly as given (client frames masked); nothing is answered unless the
 * test does it, and nothing is read until the test asks.
 */

export const OPCODE = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
} as const;

export interface RawFrame {
  fin: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** How the connection ended, as the client saw it. */
export type RawEnd = "eof" | "reset";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * One masked client frame. `announcedLength` puts another length in the header than the
 * payload given (a frame header announcing more than will ever be sent).
 */
export function clientFrame(
  opcode: number,
  payload: Uint8Array = new Uint8Array(0),
  options: { fin?: boolean; announcedLength?: number } = {},
): Uint8Array<ArrayBuffer> {
  const length = options.announcedLength ?? payload.byteLength;
  const lengthBytes = length < 126 ? 0 : length < 65_536 ? 2 : 8;
  const out = new Uint8Array(2 + lengthBytes + 4 + payload.byteLength);
  out[0] = ((options.fin ?? true) ? 0x80 : 0) | opcode;
  const view = new DataView(out.buffer);
  if (lengthBytes === 0) out[1] = 0x80 | length;
  else if (lengthBytes === 2) {
    out[1] = 0x80 | 126;
    view.setUint16(2, length);
  } else {
    out[1] = 0x80 | 127;
    view.setBigUint64(2, BigInt(length));
  }
  const maskAt = 2 + lengthBytes;
  const mask = crypto.getRandomValues(new Uint8Array(4));
  out.set(mask, maskAt);
  for (let i = 0; i < payload.byteLength; i++) out[maskAt + 4 + i] = payload[i] ^ mask[i & 3];
  return out;
}

export function textFrame(text: string): Uint8Array<ArrayBuffer> {
  return clientFrame(OPCODE.text, encoder.encode(text));
}

export function closeFrame(code: number, reason = ""): Uint8Array<ArrayBuffer> {
  const reasonBytes = encoder.encode(reason);
  const payload = new Uint8Array(2 + reasonBytes.byteLength);
  new DataView(payload.buffer).setUint16(0, code);
  payload.set(reasonBytes, 2);
  return clientFrame(OPCODE.close, payload);
}

/** The code of a close frame's payload (1005 when it has none). */
export function closeCodeOf(frame: RawFrame): number {
  if (frame.payload.byteLength < 2) return 1005;
  return new DataView(frame.payload.buffer, frame.payload.byteOffset).getUint16(0);
}

export function textOf(frame: RawFrame): string {
  return decoder.decode(frame.payload);
}

/** The head of a WebSocket upgrade request for `path`. */
export function upgradeRequest(path: string, headers: Record<string, string> = {}): string {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  let head = `GET ${path} HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  return head + "\r\n";
}

/** Incremental parser of frames from a byte stream. */
export class FrameParser {
  #buffer = new Uint8Array(0);
  /** Where the unparsed bytes of `#buffer` start. */
  #at = 0;

  push(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) return;
    const rest = this.#buffer.subarray(this.#at);
    const joined = new Uint8Array(rest.byteLength + bytes.byteLength);
    joined.set(rest);
    joined.set(bytes, rest.byteLength);
    this.#buffer = joined;
    this.#at = 0;
  }

  /** The next whole frame, or null until more bytes arrive. */
  next(): RawFrame | null {
    const b = this.#buffer.subarray(this.#at);
    if (b.byteLength < 2) return null;
    const masked = (b[1] & 0x80) !== 0;
    let length = b[1] & 0x7f;
    let at = 2;
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    if (length === 126) {
      if (b.byteLength < 4) return null;
      length = view.getUint16(2);
      at = 4;
    } else if (length === 127) {
      if (b.byteLength < 10) return null;
      length = Number(view.getBigUint64(2));
      at = 10;
    }
    const mask = masked ? b.slice(at, at + 4) : null;
    if (masked) at += 4;
    if (b.byteLength < at + length) return null;
    const payload = b.slice(at, at + length);
    if (mask !== null) { for (let i = 0; i < payload.byteLength; i++) payload[i] ^= mask[i & 3]; }
    this.#at += at + length;
    return { fin: (b[0] & 0x80) !== 0, opcode: b[0] & 0x0f, payload };
  }
}

/** A client connection after a successful (101) or refused upgrade. */
export class RawWebSocket implements AsyncDisposable {
  readonly conn: Deno.Conn;
  /** The status line and headers of the upgrade's answer. */
  readonly responseHead: string;
  readonly status: number;
  readonly #parser = new FrameParser();
  #pending: Promise<Uint8Array | null | RawEnd> | null = null;
  #ended: RawEnd | null = null;
  #closed = false;
  readonly #readBuffer = new Uint8Array(64 * 1024);

  private constructor(conn: Deno.Conn, head: string, rest: Uint8Array) {
    this.conn = conn;
    this.responseHead = head;
    this.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? NaN);
    this.#parser.push(rest);
  }

  /**
   * Connects and sends the upgrade request; resolves once the answer's head has arrived
   * (a 101, or a refusal whose body stays readable as raw bytes through `readAll`).
   */
  static async open(
    port: number,
    path = "/v1/ws",
    options: { hostname?: string; headers?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<RawWebSocket> {
    const conn = await Deno.connect({ hostname: options.hostname ?? "127.0.0.1", port });
    try {
      await writeAll(conn, encoder.encode(upgradeRequest(path, options.headers)));
      let received = new Uint8Array(0);
      const deadline = Date.now() + (options.timeoutMs ?? 5_000);
      const chunk = new Uint8Array(16 * 1024);
      for (;;) {
        const end = findHeadEnd(received);
        if (end >= 0) {
          const head = decoder.decode(received.subarray(0, end));
          return new RawWebSocket(conn, head, received.slice(end + 4));
        }
        const n = await withTimeout(conn.read(chunk), deadline - Date.now());
        if (n === null) throw new Error("connection ended before the upgrade's answer");
        const joined = new Uint8Array(received.byteLength + n);
        joined.set(received);
        joined.set(chunk.subarray(0, n), received.byteLength);
        received = joined;
      }
    } catch (error) {
      conn.close();
      throw error;
    }
  }

  /** Writes bytes as they are (whole frames, or parts of one). Throws once the peer is gone. */
  async write(bytes: Uint8Array): Promise<void> {
    await writeAll(this.conn, bytes);
  }

  sendText(text: string): Promise<void> {
    return this.write(textFrame(text));
  }

  /**
   * The next frame, or the way the connection ended (`eof`, `reset`), or `timeout` when
   * nothing arrives within `timeoutMs` (the read stays pending for the next call).
   */
  async next(timeoutMs = 3_000): Promise<RawFrame | RawEnd | "timeout"> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.#parser.next();
      if (frame !== null) return frame;
      if (this.#ended !== null) return this.#ended;
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      this.#pending ??= this.#readOnce();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), left);
      });
      const got = await Promise.race([this.#pending, timedOut]);
      clearTimeout(timer);
      if (got === "timeout") return "timeout";
      this.#pending = null;
      if (got === "eof" || got === "reset") this.#ended = got;
      else if (got !== null) this.#parser.push(got);
    }
  }

  /**
   * Every frame until the connection ends (or `timeoutMs` passes), and how it ended, and when
   * (Date.now()).
   */
  async readToEnd(
    timeoutMs: number,
  ): Promise<{ frames: RawFrame[]; end: RawEnd | "timeout"; at: number }> {
    const deadline = Date.now() + timeoutMs;
    const frames: RawFrame[] = [];
    for (;;) {
      const got = await this.next(Math.max(0, deadline - Date.now()));
      if (typeof got !== "string") {
        frames.push(got);
        continue;
      }
      return { frames, end: got, at: Date.now() };
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    // A read in flight settles once the connection is closed.
    if (this.#pending !== null) await this.#pending;
  }

  async #readOnce(): Promise<Uint8Array | null | RawEnd> {
    try {
      const n = await this.conn.read(this.#readBuffer);
      if (n === null) return "eof";
      return this.#readBuffer.slice(0, n);
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) return "reset";
      if (this.#closed) return "eof";
      throw error;
    }
  }
}

/** Writes all of `bytes` (a Deno.Conn may take fewer per call). */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.byteLength) offset += await conn.write(bytes.subarray(offset));
}

function findHeadEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.byteLength; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), Math.max(0, ms));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
