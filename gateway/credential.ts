/**
 * Session credentials: `<claims>.<signature>`, both base64url, signed with HMAC-SHA-256.
 * Signed (not looked up) so that any gateway node can route a credential to its user's state
 * object without a store read; the state object still checks that the session exists, so a
 * logout revokes a credential at once.
 */
import { HmacSha256, sha256 } from "./hmac_sha256.ts";

export interface CredentialClaims {
  appId: string;
  uid: string;
  sessionId: string;
  /** Expiry, epoch ms. */
  exp: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class CredentialSigner {
  readonly #hmac: HmacSha256;

  constructor(secret: string) {
    this.#hmac = new HmacSha256(encoder.encode(secret));
  }

  sign(claims: CredentialClaims): string {
    const body = toBase64Url(encoder.encode(JSON.stringify(claims)));
    return `${body}.${toBase64Url(this.#hmac.mac(encoder.encode(body)))}`;
  }

  /** The claims of a valid, unexpired credential; null for anything else. */
  verify(credential: string, now: number): CredentialClaims | null {
    if (credential.length > 1024) return null;
    const dot = credential.indexOf(".");
    if (dot <= 0) return null;
    const body = credential.slice(0, dot);
    const signature = fromBase64Url(credential.slice(dot + 1));
    if (signature === null || !this.#hmac.verify(signature, encoder.encode(body))) return null;
    const bytes = fromBase64Url(body);
    if (bytes === null) return null;
    try {
      const claims = JSON.parse(decoder.decode(bytes)) as CredentialClaims;
      if (typeof claims.exp !== "number" || claims.exp <= now) return null;
      return claims;
    } catch {
      return null;
    }
  }
}

/** Bytes as unpadded base64url (credentials, auth tokens). */
export function toBase64Url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function fromBase64Url(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  try {
    const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  } catch {
    return null;
  }
}

/**
 * The stored form of an auth token: SHA-256, base64url. Tokens carry ≥ 128 random bits, so a
 * fast unsalted hash is enough: it cannot be reversed, and looking up by it stays one read.
 */
export function authTokenHash(authToken: string): string {
  return toBase64Url(sha256(encoder.encode(authToken)));
}

/** Compares two secrets in time that depends only on their lengths. */
export function constantTimeEqual(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    diff |= a.charCodeAt(i % (a.length || 1)) ^ b.charCodeAt(i % (b.length || 1));
  }
  return diff === 0;
}
