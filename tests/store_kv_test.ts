import assert from "node:assert/strict";
import { authTokenHash } from "../gateway/credential.ts";
import { KvStore } from "../gateway/store/kv.ts";
import { storeConformance } from "./store_conformance.ts";

storeConformance("deno-kv (memory)", () => KvStore.open(":memory:"));

// The same on a real file on disk, as `deno task serve` uses it.
let dir: string | undefined;
storeConformance("deno-kv (file)", async () => {
  dir ??= await Deno.makeTempDir();
  return KvStore.open(`${dir}/${crypto.randomUUID()}.kv`);
});

Deno.test("deno-kv: a store written before tokens were hashed is rehashed once at open", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/legacy.kv`;
    // The old layout: the token itself was the key, and the record held it.
    const kv = await Deno.openKv(path);
    await kv.set(["token", "at_legacy_token"], {
      appId: "demo",
      uid: "u1",
      authToken: "at_legacy_token",
      createdAt: 1,
      expiresAt: null,
    });
    kv.close();

    const store = await KvStore.open(path);
    try {
      assert.deepEqual(await store.getAuthToken(authTokenHash("at_legacy_token")), {
        appId: "demo",
        uid: "u1",
        tokenHash: authTokenHash("at_legacy_token"),
        createdAt: 1,
        expiresAt: null,
      });
    } finally {
      store.close();
    }
    const raw = await Deno.openKv(path);
    try {
      assert.equal((await raw.get(["token", "at_legacy_token"])).value, null, "old key gone");
      for await (const entry of raw.list({ prefix: ["token"] })) {
        assert.ok(!JSON.stringify(entry).includes("at_legacy_token"), "no plain token left");
      }
    } finally {
      raw.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
