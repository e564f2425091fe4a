/**
 * Session credentials and the HMAC-SHA-256 under them: the published SHA-256 vectors, and the
 * MAC checked against WebCrypto for keys and messages around every block boundary.
 */
import assert from "node:assert/strict";
import { CredentialSigner } from "../gateway/credential.ts";
import { HmacSha256, sha256 } from "../gateway/hmac_sha256.ts";

const utf8 = new TextEncoder();
const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

Deno.test("sha256: FIPS 180-4 example vectors", () => {
  assert.equal(
    hex(sha256(utf8.encode(""))),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(
    hex(sha256(utf8.encode("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    hex(sha256(utf8.encode("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
  assert.equal(
    hex(sha256(utf8.encode("a".repeat(1_000_000)))),
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
  );
});

Deno.test("hmac-sha256: equals WebCrypto for keys and messages around the block sizes", async () => {
  const lengths = [0, 1, 31, 32, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 200];
  for (const keyLength of lengths) {
    const key = crypto.getRandomValues(new Uint8Array(keyLength));
    // WebCrypto refuses an empty HMAC key; RFC 2104 allows it (the pure one is checked below).
    const webKey = keyLength === 0 ? null : await crypto.subtle.importKey(
      "raw",
      key,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const hmac = new HmacSha256(key);
    for (const length of lengths) {
      const message = crypto.getRandomValues(new Uint8Array(length));
      const mac = hmac.mac(message);
      if (webKey !== null) {
        const expected = new Uint8Array(await crypto.subtle.sign("HMAC", webKey, message));
        assert.equal(hex(mac), hex(expected), `key ${keyLength} B, message ${length} B`);
      }
      assert.equal(hmac.verify(mac, message), true);
      const tampered = mac.slice();
      tampered[length % 32] ^= 1;
      assert.equal(hmac.verify(tampered, message), false);
      assert.equal(hmac.verify(mac.subarray(0, 31), message), false);
    }
  }
  // RFC 4231 test case 2 (a key shorter than the block).
  assert.equal(
    hex(new HmacSha256(utf8.encode("Jefe")).mac(utf8.encode("what do ya want for nothing?"))),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
});

Deno.test("credential: signed claims verify; tampered, foreign, expired or garbage ones don't", () => {
  const signer = new CredentialSigner("test_secret__not_secret__0123456789abcdef");
  const claims = { appId: "demo", uid: "u1", sessionId: "s1", exp: 2_000 };
  const credential = signer.sign(claims);
  assert.deepEqual(signer.verify(credential, 1_999), claims);
  assert.equal(signer.verify(credential, 2_000), null, "expired at exp");

  const [body, signature] = credential.split(".");
  const forged = btoa(JSON.stringify({ ...claims, uid: "admin" })).replace(/=+$/, "");
  assert.equal(signer.verify(`${forged}.${signature}`, 0), null);
  assert.equal(signer.verify(`${body}.${signature.slice(0, -2)}`, 0), null);
  const other = new CredentialSigner("another_secret__not_secret__0123456789ab");
  assert.equal(other.verify(credential, 0), null);
  for (const garbage of ["", ".", "abc", `${body}.`, `.${signature}`, "a.b.c", "é.é"]) {
    assert.equal(signer.verify(garbage, 0), null, garbage);
  }
  assert.equal(signer.verify(`${body}.${signature}${"A".repeat(1100)}`, 0), null);
});
