import { KvStore } from "../gateway/store/kv.ts";
import { storeConformance } from "./store_conformance.ts";

storeConformance("deno-kv (memory)", () => KvStore.open(":memory:"));

// The same on a real file on disk, as `deno task serve` uses it.
let dir: string | undefined;
storeConformance("deno-kv (file)", async () => {
  dir ??= await Deno.makeTempDir();
  return KvStore.open(`${dir}/${crypto.randomUUID()}.kv`);
});
