/**
 * `deno run -A bench/ws_memory_probe.ts [conns]`: where Deno's memory per idle WebSocket goes
 * (issue #4, scenario 3 asks what Deno keeps outside the JS heap).
 *
 * For each shape below a fresh server process is started; this process opens `conns` client
 * connections to it and prints the RSS and JS heap (after GC) the server gained per connection:
 * - `tcp`: Deno.listen with one pending 1-byte read per connection (the floor: the socket's
 *   tokio registration, the resource, the pending op and its promise);
 * - `ws, idle 0`: Deno.serve + upgradeWebSocket({ idleTimeout: 0 }), as the gateway does;
 * - `ws, default`: the same with Deno's default idle ping timer (bench/servers/raw_deno.ts);
 * - `ws, after 8 000 B` / `ws, after 60 KB`: idle 0, after one message of that size per
 *   connection (fastwebsockets' 8 KiB read buffer grows to the largest frame and stays).
 */
const N = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 5_000);
const shape = Deno.args.find((a) => a.startsWith("--serve="))?.slice("--serve=".length);

function rssOf(pid: number | "self"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(status.match(/VmRSS:\s+(\d+)/)![1]) * 1024;
}

/** Server side: listens, prints its port, then answers each stdin line with its heap. */
async function serve(kind: string) {
  if (kind === "tcp") {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    console.log(listener.addr.port);
    (async () => {
      for await (const conn of listener) conn.read(new Uint8Array(1)).catch(() => {});
    })();
  } else {
    const options = kind === "default" ? {} : { idleTimeout: 0 };
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req, options);
      socket.onmessage = () => {};
      return response;
    });
    console.log(server.addr.port);
  }
  const gc = (globalThis as { gc?: () => void }).gc!;
  for await (const _ of Deno.stdin.readable) {
    gc();
    gc();
    console.log(Deno.memoryUsage().heapUsed);
  }
}

async function probe(name: string, kind: string, message?: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", import.meta.filename!, `--serve=${kind}`],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).values();
  const writer = child.stdin.getWriter();
  const next = async () => Number((await lines.next()).value);
  const heap = async () => {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await writer.write(new TextEncoder().encode("\n"));
    return next();
  };
  const port = await next();
  const [rss0, heap0] = [rssOf(child.pid), await heap()];
  const open: Array<Deno.Conn | WebSocket> = [];
  for (let i = 0; i < N; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, N - i) }, async () => {
      if (kind === "tcp") {
        open.push(await Deno.connect({ hostname: "127.0.0.1", port }));
        return;
      }
      const ws = new WebSocket(`ws://127.0.0.1:${port}`);
      open.push(ws);
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error("connect failed"));
      });
      if (message !== undefined) ws.send(message);
    }));
  }
  const heap1 = await heap();
  const rss1 = rssOf(child.pid);
  console.log(
    `${name.padEnd(17)} RSS ${((rss1 - rss0) / N / 1024).toFixed(1).padStart(5)} KB/conn` +
      `   JS heap ${((heap1 - heap0) / N / 1024).toFixed(1).padStart(4)} KB/conn` +
      `   outside the heap ${((rss1 - rss0 - (heap1 - heap0)) / N / 1024).toFixed(1)} KB/conn`,
  );
  child.kill();
  await child.status;
  for (const c of open) c.close();
}

if (shape !== undefined) await serve(shape);
else {
  console.log(`${N} idle connections per shape, server side only`);
  await probe("tcp", "tcp");
  await probe("ws, idle 0", "idle0");
  await probe("ws, default", "default");
  await probe("ws, after 8 000 B", "idle0", "x".repeat(8_000));
  await probe("ws, after 60 KB", "idle0", "x".repeat(60_000));
}
