/**
 * `deno task bench:hot-path [manual]`: the gateway's JavaScript cost per ping frame, in
 * process, without sockets — a `Connection` on a fake wire socket, the real user state, engine,
 * wheel and (in-memory) store — beside the raw server's parse + pong. A quick check that a
 * change did not make the per-frame path slower; `deno task bench` measures the real thing.
 */
import { systemClock } from "../gateway/clock.ts";
import { loadConfig, timingOf } from "../gateway/config.ts";
import { Connection, type ConnectionContext } from "../gateway/connection.ts";
import { DeadlineWheel } from "../gateway/deadline_wheel.ts";
import { KvStore } from "../gateway/store/kv.ts";
import { createLogger } from "../gateway/log.ts";
import { noRelays } from "../gateway/relays.ts";
import { GatewayMetrics } from "../gateway/metrics.ts";
import type { WireEvents, WireSocket } from "../gateway/transport/types.ts";
import { UserStateRuntime, UserStates } from "../gateway/user_state.ts";

const manual = Deno.args.includes("manual");
const config = loadConfig({}, { dev: true }, { kvPath: ":memory:", frameRatePerSec: 1e9 });
const store = await KvStore.open(":memory:");
const runtime = new UserStateRuntime(systemClock, config, store, {
  tickMs: config.deadlineTickMs,
  persistDelayMs: config.persistDelayMs,
  deadlineBoundMs: config.deadlineBoundMs,
});
const users = new UserStates(runtime);
const user = await users.get("demo", "u1");
user.createSession("s1", manual ? "manual" : "auto");

/** Just enough of a socket for `Connection`: the transport's WireSocket, writing nowhere. */
let events: WireEvents | null = null;
const wire: WireSocket = {
  bufferedAmount: 0,
  writable: true,
  send(_text: string) {},
  pong() {},
  close() {},
  listen(e) {
    events = e;
  },
};
const metrics = new GatewayMetrics();
const ctx: ConnectionContext = {
  clock: systemClock,
  config,
  metrics,
  log: createLogger("error"),
  idle: new DeadlineWheel<Connection>(systemClock, 100, () => {}),
  open: new Set(),
  timing: timingOf(config),
  login: () => Promise.reject(new Error("not used here")),
  messaging: undefined as unknown as ConnectionContext["messaging"], // no sends on this path
  relays: noRelays,
  store: undefined as unknown as ConnectionContext["store"], // no resume on this path
  penalize: () => {},
};
new Connection(wire, ctx, { kind: "credential", user, sessionId: "s1" }, "127.0.0.1");
const receive = (text: string) => events!.text(text);
events!.open();
receive('{"type":"connect"}');
if (manual) receive('{"type":"app_state","state":"background"}');
await runtime.durable(); // the background deadline is announced once written
const ping = { data: manual ? '{"type":"ping","id":1,"source":"app"}' : '{"type":"ping","id":1}' };

const N = 2_000_000;
function time(label: string, fn: () => void): number {
  fn(); // warm up
  const t = performance.now();
  for (let i = 0; i < N; i++) fn();
  const us = ((performance.now() - t) * 1000) / N;
  console.log(`${label.padEnd(34)} ${us.toFixed(3)} µs/frame`);
  return us;
}
const gateway = time(
  `gateway (${manual ? "manual, background" : "auto, heartbeat"})`,
  () => receive(ping.data),
);
const raw = time("raw: JSON.parse + pong", () => {
  const frame = JSON.parse(ping.data);
  wire.send(
    JSON.stringify({
      type: "pong",
      id: frame.id,
      serverTime: Date.now(),
      backgroundDeadline: null,
    }),
  );
});
console.log(`gateway overhead                   ${(gateway - raw).toFixed(3)} µs/frame`);
ctx.idle.close();
await users.shutdown();
store.close();
