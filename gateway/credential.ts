/**
 * Session credentials: `<claims>.<signature>`, both base64url, signed with HMAC-SHA-256.
 * Signed (not looked up) so that any gateway node can route a credential to its user's state
 * object without a store read; the state object still checks that the session exists, so a
 * logout revokes a credential at once.
 */
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
  readonly #key: CryptoKey;

  private constructor(key: CryptoKey) {
    this.#key = key;
  }

  static async create(secret: string): Promise<CredentialSigner> {
    const key = await crypto.subtle.importKey(
      "raw",
      encoder.encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
    return new CredentialSigner(key);
  }

  async sign(claims: CredentialClaims): Promise<string> {
    const body = toBase64Url(encoder.encode(JSON.stringify(claims)));
    const signature = await crypto.subtle.sign("HMAC", this.#key, encoder.encode(body));
    return `${body}.${toBase64Url(new Uint8Array(signature))}`;
  }

  /** The claims of a valid, unexpired credential; null for anything else. */
  async verify(credential: string, now: number): Promise<CredentialClaims | null> {
    if (credential.length > 1024) return null;
    const dot = credential.indexOf(".");
    if (dot <= 0) return null;
    const body = credential.slice(0, dot);
    const signature = fromBase64Url(credential.slice(dot + 1));
    if (signature === null) return null;
    const valid = await crypto.subtle.verify("HMAC", this.#key, signature, encoder.encode(body));
    if (!valid) return null;
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

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> | null {
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
