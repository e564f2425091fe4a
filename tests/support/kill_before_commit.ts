/**
 * A gateway process (`GatewayProcess` with `main`) that kills itself with SIGKILL right before
 * one Deno KV commit: the first whose keys include one whose first part is
 * `KILL_BEFORE_COMMIT_OF` (e.g. `sent`: the commit that writes a send record), or with
 * `KILL_BEFORE_COMMIT_ONLY=1`, the first whose keys all start so (e.g. `redo`: the marker of a
 * log written in several commits). So a test can cut a write that takes several commits at an
 * exact place, as a `kill -9` would.
 */
const keyword = Deno.env.get("KILL_BEFORE_COMMIT_OF");
const only = Deno.env.get("KILL_BEFORE_COMMIT_ONLY") === "1";
if (keyword !== undefined) {
  const proto = Deno.AtomicOperation.prototype;
  const keysOf = new WeakMap<Deno.AtomicOperation, Deno.KvKey[]>();
  const record = (op: Deno.AtomicOperation, key: Deno.KvKey) => {
    const keys = keysOf.get(op) ?? [];
    keys.push(key);
    keysOf.set(op, keys);
  };
  const set = proto.set;
  proto.set = function (this: Deno.AtomicOperation, key, value, options) {
    record(this, key);
    return set.call(this, key, value, options);
  };
  const remove = proto.delete;
  proto.delete = function (this: Deno.AtomicOperation, key) {
    record(this, key);
    return remove.call(this, key);
  };
  const commit = proto.commit;
  proto.commit = function (this: Deno.AtomicOperation) {
    const keys = keysOf.get(this) ?? [];
    const matches = (key: Deno.KvKey) => key[0] === keyword;
    if (only ? keys.length > 0 && keys.every(matches) : keys.some(matches)) {
      console.log(`killed before a commit of ${keyword}`);
      Deno.kill(Deno.pid, "SIGKILL");
    }
    return commit.call(this);
  };
}
await import("../../gateway/main.ts");
