/**
 * HMAC-SHA-256 (RFC 2104, FIPS 180-4) in plain TypeScript, synchronous.
 *
 * Why not WebCrypto: `crypto.subtle.verify` costs about 40 µs of main-thread time per call in
 * Deno (argument conversion, an async op, a promise), which made credential checks a fifth of
 * the gateway's CPU in a reconnect storm. Credentials are short (one or two blocks), so the
 * key's inner and outer pad states are hashed once, at construction, and a MAC is then three
 * compressions with no allocation but the result. Checked against WebCrypto in
 * tests/credential_test.ts.
 */

/** The first `n` primes. */
function firstPrimes(n: number): number[] {
  const primes: number[] = [];
  for (let candidate = 2; primes.length < n; candidate++) {
    if (primes.every((p) => candidate % p !== 0)) primes.push(candidate);
  }
  return primes;
}

/** The first 32 bits of the fractional part of `x` (FIPS 180-4 §4.2.2, §5.3.3). */
const fraction32 = (x: number) => ((x - Math.floor(x)) * 2 ** 32) | 0;

const PRIMES = firstPrimes(64);
/** Round constants: cube roots of the first 64 primes. */
const K = Int32Array.from(PRIMES, (p) => fraction32(Math.cbrt(p)));
/** Initial hash value: square roots of the first 8 primes. */
const IV = Int32Array.from(PRIMES.slice(0, 8), (p) => fraction32(Math.sqrt(p)));

const BLOCK = 64;
/** Message schedule, reused by every compression (single-threaded). */
const W = new Int32Array(64);

/** One SHA-256 compression of the 64 bytes at `offset` into `state`. */
function compress(state: Int32Array, bytes: Uint8Array, offset: number): void {
  for (let t = 0; t < 16; t++) {
    const i = offset + t * 4;
    W[t] = (bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3];
  }
  for (let t = 16; t < 64; t++) {
    const w15 = W[t - 15];
    const w2 = W[t - 2];
    const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
    const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
    W[t] = (W[t - 16] + s0 + W[t - 7] + s1) | 0;
  }
  let a = state[0], b = state[1], c = state[2], d = state[3];
  let e = state[4], f = state[5], g = state[6], h = state[7];
  for (let t = 0; t < 64; t++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const ch = (e & f) ^ (~e & g);
    const t1 = (h + S1 + ch + K[t] + W[t]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const maj = (a & b) ^ (a & c) ^ (b & c);
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + S0 + maj) | 0;
  }
  state[0] = (state[0] + a) | 0;
  state[1] = (state[1] + b) | 0;
  state[2] = (state[2] + c) | 0;
  state[3] = (state[3] + d) | 0;
  state[4] = (state[4] + e) | 0;
  state[5] = (state[5] + f) | 0;
  state[6] = (state[6] + g) | 0;
  state[7] = (state[7] + h) | 0;
}

/**
 * SHA-256 of `message`, continuing from `start` (the state after `prefixBytes` bytes that
 * were whole blocks). Returns the 32-byte digest.
 */
function finish(start: Int32Array, prefixBytes: number, message: Uint8Array): Uint8Array {
  const state = start.slice();
  const whole = message.length - (message.length % BLOCK);
  for (let offset = 0; offset < whole; offset += BLOCK) compress(state, message, offset);
  // Padding: 0x80, zeros, the length in bits as a 64-bit big-endian number.
  const rest = message.length - whole;
  const tail = new Uint8Array(rest < 56 ? BLOCK : 2 * BLOCK);
  tail.set(message.subarray(whole));
  tail[rest] = 0x80;
  const bits = (prefixBytes + message.length) * 8;
  const view = new DataView(tail.buffer);
  view.setUint32(tail.length - 8, Math.floor(bits / 2 ** 32));
  view.setUint32(tail.length - 4, bits >>> 0);
  for (let offset = 0; offset < tail.length; offset += BLOCK) compress(state, tail, offset);
  const digest = new Uint8Array(32);
  const out = new DataView(digest.buffer);
  for (let i = 0; i < 8; i++) out.setInt32(i * 4, state[i]);
  return digest;
}

/** SHA-256 of `message`. */
export function sha256(message: Uint8Array): Uint8Array {
  return finish(IV, 0, message);
}

/** An HMAC-SHA-256 key, ready to sign. */
export class HmacSha256 {
  readonly #inner: Int32Array;
  readonly #outer: Int32Array;

  constructor(key: Uint8Array) {
    const block = new Uint8Array(BLOCK);
    block.set(key.length > BLOCK ? sha256(key) : key);
    const inner = block.map((byte) => byte ^ 0x36);
    const outer = block.map((byte) => byte ^ 0x5c);
    this.#inner = IV.slice();
    this.#outer = IV.slice();
    compress(this.#inner, inner, 0);
    compress(this.#outer, outer, 0);
  }

  /** The 32-byte MAC of `message`. */
  mac(message: Uint8Array): Uint8Array {
    return finish(this.#outer, BLOCK, finish(this.#inner, BLOCK, message));
  }

  /** Whether `mac` is the MAC of `message`, compared in constant time. */
  verify(mac: Uint8Array, message: Uint8Array): boolean {
    const expected = this.mac(message);
    if (mac.length !== expected.length) return false;
    let diff = 0;
    for (let i = 0; i < expected.length; i++) diff |= mac[i] ^ expected[i];
    return diff === 0;
  }
}
