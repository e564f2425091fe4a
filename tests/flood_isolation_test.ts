/**
 * Flood isolation, measured on loopback: 200 well-behaved clients ping at 1 Hz while one
 * hostile client floods (text frames on one connection, binary frames, reconnect-and-flood,
 * login attempts). The well-behaved clients' round-trip p99 under each flood stays within
 * twice their p99 alone, with the gateway's default limits.
 *
 * The gateway and the flooder are processes of their own (the flooder at a lower CPU priority,
 * from another loopback address), the well-behaved clients live in this process. Sub-millisecond
 * p99s are noise on a shared machine, so the baseline is taken as at least 1 ms. In the slow
 * group (RUN_SLOW=1, which CI sets): it takes about a minute.
 */
import assert from "node:assert/strict";
import { delay, devLogin, GatewayProcess } from "./support/process.ts";

const CLIENTS = 200;
const MEASURE_MS = 8_000;
const BASELINE_FLOOR_MS = 1;
/** The floods of the issue: one connection of text, one of binary, reconnect-and-flood, logins. */
const KINDS = (Deno.env.get("FLOOD_KINDS") ?? "text,binary,reconnect,login").split(",");

/** The well-behaved clients: connected sockets that each ping once a second. */
class PingingClients {
  readonly #sockets: WebSocket[] = [];
  readonly #sentAt = new Map<number, number>();
  #rtts: number[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #next = 0;
  #id = 0;
  lost = 0;

  static async connect(gateway: GatewayProcess): Promise<PingingClients> {
    const clients = new PingingClients();
    const { credential } = await devLogin(gateway.url, "superhero1", "auto");
    // One session, many sockets would replace each other: one login per socket.
    const credentials = [credential];
    for (let i = 1; i < CLIENTS; i++) {
      credentials.push((await devLogin(gateway.url, `superhero${1 + (i % 4)}`, "auto")).credential);
    }
    await Promise.all(credentials.map((c) => clients.#open(gateway, c)));
    return clients;
  }

  async #open(gateway: GatewayProcess, credential: string): Promise<void> {
    const ws = new WebSocket(`${gateway.wsUrl}?credential=${encodeURIComponent(credential)}`);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => ws.send(JSON.stringify({ type: "connect" }));
      ws.onerror = () => reject(new Error("socket failed"));
      ws.onmessage = (event) => {
        const frame = JSON.parse(String(event.data));
        if (frame.type === "connected") return resolve();
        if (frame.type !== "pong") return;
        const sent = this.#sentAt.get(frame.id);
        if (sent === undefined) return;
        this.#sentAt.delete(frame.id);
        this.#rtts.push(performance.now() - sent);
      };
    });
    ws.onclose = () => this.lost++;
    this.#sockets.push(ws);
  }

  /** One ping every 1000 / CLIENTS ms, round robin: each client pings once a second. */
  start(): void {
    this.#timer = setInterval(() => {
      const ws = this.#sockets[this.#next++ % this.#sockets.length];
      const id = ++this.#id;
      this.#sentAt.set(id, performance.now());
      ws.send(JSON.stringify({ type: "ping", id }));
    }, 1000 / CLIENTS);
  }

  /** Round trips over `ms`, and how many pings got no pong within a second. */
  async measure(
    ms: number,
  ): Promise<{ p50: number; p99: number; samples: number; unanswered: number }> {
    this.#rtts = [];
    await delay(ms);
    const sorted = [...this.#rtts].sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    const now = performance.now();
    let unanswered = 0;
    for (const sent of this.#sentAt.values()) if (now - sent > 1_000) unanswered++;
    return { p50: at(0.5), p99: at(0.99), samples: sorted.length, unanswered };
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.all(this.#sockets.map((ws) =>
      new Promise<void>((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve();
        ws.onclose = () => resolve();
        ws.close();
      })
    ));
  }
}

/**
 * Starts the flooder process at low priority, loaded and waiting; `go()` starts the flood for
 * `ms` and resolves with what the flooder reports when it is done.
 */
async function flooder(
  kind: string,
  gateway: GatewayProcess,
  credential: string,
  ms: number,
  localAddress: string,
): Promise<{ go(): Promise<Record<string, unknown>> }> {
  const script = new URL("./support/flooder.ts", import.meta.url).pathname;
  const child = new Deno.Command("nice", {
    args: [
      "-n",
      "10",
      Deno.execPath(),
      "run",
      "-A",
      script,
      kind,
      Deno.env.get("SINK_PORT") ?? String(gateway.port),
      credential,
      String(ms),
      localAddress,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await delay(1_500); // loaded and compiled before the flood is measured
  return {
    async go() {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      const { code, stdout, stderr } = await child.output();
      assert.equal(code, 0, new TextDecoder().decode(stderr));
      return JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
    },
  };
}

Deno.test({
  name: "flood isolation: under every flood kind the others' p99 stays within 2× their baseline",
  ignore: !Deno.env.get("RUN_SLOW"),
  async fn() {
    await using gateway = await GatewayProcess.start();
    const clients = await PingingClients.connect(gateway);
    try {
      clients.start();
      await delay(3_000); // warm up (JIT, connections settled)
      const { credential } = await devLogin(gateway.url, "superhero5", "auto");
      const results: Record<string, unknown> = {};
      let address = 2;
      for (const kind of KINDS) {
        // Each flood is compared with the p99 measured right before it (the machine's load
        // drifts), and gets a second round if the first one is over: a shared 2-core machine
        // has stalls of its own; a flood that costs the others shows in both rounds.
        const rounds: unknown[] = [];
        let passed = false;
        for (let round = 0; round < 2 && !passed; round++) {
          const control = await clients.measure(MEASURE_MS);
          const floor = Math.max(control.p99, BASELINE_FLOOR_MS);
          // A fresh address for each flood: a ban earned by one must not quiet the next.
          const flood = await flooder(
            kind,
            gateway,
            credential,
            MEASURE_MS,
            `127.0.0.${address++}`,
          );
          const flooding = flood.go();
          const during = await clients.measure(MEASURE_MS);
          const report = await flooding;
          rounds.push({ control, during, ratio: during.p99 / floor, flooder: report });
          passed = during.p99 <= 2 * floor;
          assert.equal(during.unanswered, 0, "every ping got its pong");
          assert.equal(await gateway.alive(), true);
        }
        results[kind] = rounds;
        assert.ok(
          passed,
          `${kind} flood: p99 over 2× the baseline\n${JSON.stringify(results, null, 2)}`,
        );
      }
      assert.equal(clients.lost, 0, "no well-behaved client was closed");
      console.log(JSON.stringify(results));
    } finally {
      await clients.close();
      await gateway.terminate();
      await gateway.cleanup();
    }
  },
});
