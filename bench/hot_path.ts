/**
 * `deno task bench:hot-path [manual]`: the gateway's JavaScript cost per ping frame, in
 * process, without sockets — a `Connection` on a fake WebSocket, the real user state, engine,
 * wheel and (in-memory) store — beside the raw server's parse + pong. A quick check that a
 * change did not make the per-frame path slower; `deno task bench` measures the real thing.
 */
import { systemClock } from "../gateway/clock.ts";
import { loadConfig, timingOf } from "../gateway/config.ts";
import { Connection, type ConnectionContext } from "../gateway/connection.ts";
import { DeadlineWheel } from "../gateway/deadline_wheel.ts";
import { KvStore } from "../gateway/store/kv.ts";
import { UserStateRuntime, UserStates } from "../gateway/user_state.ts";

const manual = Deno.args.includes("manual");
const config = loadConfig({}, { dev: true }, { kvPath: ":memory:", frameRatePerSec: 1e9 });
const store = await KvStore.open(":memory:");
const runtime = new UserStateRuntime(systemClock, config, store, {
  tickMs: config.deadlineTickMs,
  persistDelayMs: config.persistDelayMs,
  persistLazyMs: config.persistLazyMs,
});
const user = await new UserStates(runtime).get("demo", "u1");
user.createSession("s1", manual ? "manual" : "auto");

/** Just enough of a WebSocket for `Connection`. */
const socket = {
  readyState: WebSocket.OPEN,
  send(_text: string) {},
  close() {},
  onopen: null as null | (() => void),
  onmessage: null as null | ((event: { data: unknown }) => void),
  onclose: null,
  onerror: null,
};
const ctx: ConnectionContext = {
  clock: systemClock,
  config,
  idle: new DeadlineWheel<Connection>(systemClock, 100, () => {}),
  open: new Set(),
  timing: timingOf(config),
  login: () => Promise.reject(new Error("not used here")),
};
new Connection(socket as unknown as WebSocket, ctx, { kind: "credential", user, sessionId: "s1" });
socket.onopen!();
socket.onmessage!({ data: '{"type":"connect"}' });
if (manual) socket.onmessage!({ data: '{"type":"app_state","state":"background"}' });
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
  () => socket.onmessage!(ping),
);
const raw = time("raw: JSON.parse + pong", () => {
  const frame = JSON.parse(ping.data);
  socket.send(
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
runtime.alarms.close();
runtime.writer.close();
store.close();
