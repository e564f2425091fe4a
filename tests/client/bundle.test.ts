/**
 * The built bundle (`deno task build:client` → dist/client.js) in the two other runtimes:
 * a Node program, and pages in headless Chromium: one logs in to the dev app, connects in
 * manual mode, goes to background (page visibility, the client's default app-state source)
 * and sees the gateway close the connection after the window; a chat page is left and opened
 * again, and resumes its event stream from `localStorage`.
 */
import assert from "node:assert/strict";
import { DEV, TEST_TIMING, withGateway } from "./helpers.ts";

const root = new URL("../../", import.meta.url);
const bundle = new URL("dist/client.js", root);
const CHROMIUM = "/usr/bin/chromium";
const WINDOW = TEST_TIMING.livenessWindowMs;

function exists(path: string | URL): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function which(command: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir !== "" && exists(`${dir}/${command}`)) return `${dir}/${command}`;
  }
  return null;
}

let built: Promise<void> | null = null;
/** Builds the bundle once per test run. */
function build(): Promise<void> {
  return built ??= (async () => {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["task", "build:client"],
      cwd: root,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (code !== 0) throw new Error(`build:client failed: ${new TextDecoder().decode(stderr)}`);
  })();
}

/** The Node to run the bundle with: `NODE_BIN` (CI points it at Node 22), else `node`. */
const node = Deno.env.get("NODE_BIN") || which("node");

Deno.test({
  name: "bundle: a Node program imports dist/client.js and runs the auto-mode lifecycle",
  ignore: node === null && !Deno.env.get("CI"),
  async fn() {
    await build();
    await withGateway(async (gw) => {
      const script = `
        import { AppSettingsBuilder, GatewayClient } from ${JSON.stringify(bundle.href)};
        const log = [];
        const client = new GatewayClient({ baseUrl: ${JSON.stringify(gw.url)} });
        client.addConnectionListener("n", {
          inConnecting: () => log.push("connecting"),
          onConnected: () => log.push("connected"),
          onDisconnected: (i) => log.push("disconnected:" + i.reason + ":" + i.code),
        });
        const until = (entry) => new Promise((resolve) => {
          const t = setInterval(() => log.includes(entry) && (clearInterval(t), resolve()), 10);
        });
        await client.init("demo", new AppSettingsBuilder().setRegion("us").build());
        await client.login("superhero1", ${JSON.stringify(DEV.authKey)});
        await until("connected");
        await client.setAppState("background");
        await until("disconnected:background:4001");
        await client.logout();
        await client.destroy();
        console.log(JSON.stringify(log));
      `;
      // Node 22+ has a global WebSocket; Node 20/21 need the flag.
      const major = Number(
        new TextDecoder().decode(
          (await new Deno.Command(node!, { args: ["-p", "process.versions.node"] }).output())
            .stdout,
        ).split(".")[0],
      );
      const args = major < 22 ? ["--experimental-websocket"] : [];
      const result = await new Deno.Command(node!, {
        args: [...args, "--input-type=module", "-e", script],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(result.stdout).trim();
      assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
      assert.deepEqual(JSON.parse(out.split("\n").at(-1)!), [
        "connecting",
        "connected",
        "disconnected:background:4001",
      ]);
    });
  },
});

/** The test page: loads the bundle with a plain module script; everything else is driven. */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>liveness client</title>
<script type="module">
  import { AppSettingsBuilder, GatewayClient } from "/client.js";
  const log = (window.log = []);
  const client = (window.client = new GatewayClient({ baseUrl: location.origin }));
  client.addConnectionListener("page", {
    inConnecting: () => log.push("connecting"),
    onConnected: () => log.push("connected"),
    onDisconnected: (i) => log.push("disconnected:" + i.reason + ":" + i.code),
    onConnectionError: (e) => log.push("error:" + e.errorCode),
  });
  // Headless pages stay visible; fake a tab switch the way the browser reports one.
  window.hide = () => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    document.dispatchEvent(new Event("visibilitychange"));
  };
  const settings = new AppSettingsBuilder().setRegion("us").autoEstablishSocketConnection(false);
  await client.init("demo", settings.build());
  await client.login("superhero1", "${DEV.authKey}");
  await client.connect();
  window.ready = true;
</script>`;

/**
 * The chat page: auto mode, the user stored in `localStorage` after the first visit; every text
 * message the listeners get is kept as `seq:text`.
 */
const CHAT_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>liveness chat</title>
<script type="module">
  import { AppSettingsBuilder, GatewayClient } from "/client.js";
  const got = (window.got = []);
  const client = new GatewayClient({ baseUrl: location.origin });
  client.addMessageListener("page", {
    onTextMessageReceived: (message, seq) => got.push(seq + ":" + message.text),
  });
  client.addConnectionListener("page", {
    onConnected: (info) => {
      window.stream = info.stream;
      window.connected = true;
    },
  });
  await client.init("demo", new AppSettingsBuilder().setRegion("us").build());
  if ((await client.getLoggedInUser()) === null) {
    await client.login("superhero3", "${DEV.authKey}");
  }
</script>`;

/**
 * Serves the pages and the bundle, and forwards everything else (HTTP and WebSocket) to the
 * gateway, so the page and the gateway share one origin (the gateway sends no CORS headers).
 */
function servePage(gatewayUrl: string) {
  const abort = new AbortController();
  const sockets = new Set<WebSocket>();
  let resolveListen: (port: number) => void;
  const listening = new Promise<number>((r) => (resolveListen = r));
  const server = Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    signal: abort.signal,
    onListen: ({ port }) => resolveListen(port),
  }, async (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/" || url.pathname === "/chat") {
      return new Response(url.pathname === "/" ? PAGE : CHAT_PAGE, {
        headers: { "content-type": "text/html; charset=utf-8" },
      });
    }
    if (url.pathname === "/client.js") {
      return new Response(await Deno.readFile(bundle), {
        headers: { "content-type": "text/javascript" },
      });
    }
    if (url.pathname === "/favicon.ico") return new Response(null, { status: 404 });
    const target = `${gatewayUrl}${url.pathname}${url.search}`;
    if (request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",")
        .map((p) => p.trim()).filter((p) => p !== "");
      const { socket, response } = Deno.upgradeWebSocket(request, { protocol: "liveness.v1" });
      const upstream = new WebSocket(target.replace(/^http/, "ws"), offered);
      sockets.add(socket).add(upstream);
      const pending: string[] = [];
      upstream.onopen = () => pending.splice(0).forEach((m) => upstream.send(m));
      socket.onmessage = (e) =>
        upstream.readyState === WebSocket.OPEN ? upstream.send(e.data) : pending.push(e.data);
      upstream.onmessage = (e) => socket.readyState === WebSocket.OPEN && socket.send(e.data);
      upstream.onclose = (e) => {
        sockets.delete(upstream);
        // Pass the gateway's close code on; 1005/1006 can't be sent, so close plainly.
        if (socket.readyState <= WebSocket.OPEN) {
          if (e.code === 1000 || (e.code >= 3000 && e.code < 5000) || e.code === 1012) {
            socket.close(e.code, e.reason);
          } else socket.close();
        }
      };
      socket.onclose = () => {
        sockets.delete(socket);
        if (upstream.readyState <= WebSocket.OPEN) upstream.close(1000);
      };
      return response;
    }
    const reply = await fetch(target, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    });
    return new Response(reply.body, { status: reply.status, headers: reply.headers });
  });
  return {
    url: listening.then((port) => `http://127.0.0.1:${port}`),
    async stop() {
      for (const s of sockets) s.close(1000);
      abort.abort();
      await server.finished;
    },
  };
}

Deno.test({
  name: "bundle: a page in headless Chromium goes to background and is closed after the window",
  ignore: !exists(CHROMIUM) && !Deno.env.get("CI"),
  async fn() {
    await build();
    await withGateway(async (gw) => {
      const site = servePage(gw.url);
      try {
        const driver = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", "tests/client/browser_driver.ts", await site.url, String(WINDOW)],
          cwd: root,
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stderr = new TextDecoder().decode(driver.stderr);
        assert.equal(driver.code, 0, stderr);
        const seen = JSON.parse(new TextDecoder().decode(driver.stdout).trim().split("\n").at(-1)!);
        assert.deepEqual(seen.errors, []);
        assert.equal(seen.before.status, "connected");
        assert.match(seen.before.stored ?? "", /^liveness\.v1:/, "the session is in localStorage");
        assert.deepEqual(seen.log, [
          "connecting",
          "connected",
          "disconnected:liveness_timeout:4003",
        ]);
        assert.ok(seen.elapsed >= WINDOW - 50, `closed after ${seen.elapsed} ms`);
        assert.equal(seen.after.appState, "background", "visibility drove the app state");
        assert.equal(seen.after.status, "disconnected");
      } finally {
        await site.stop();
      }
    });
  },
});

Deno.test({
  name: "bundle: a page opened again resumes its stream from localStorage: each message once",
  ignore: !exists(CHROMIUM) && !Deno.env.get("CI"),
  async fn() {
    await build();
    await withGateway(async (gw) => {
      const site = servePage(gw.url);
      try {
        const origin = await site.url;
        const driver = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", "tests/client/browser_reload_driver.ts", origin, DEV.apiKey],
          cwd: root,
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.equal(driver.code, 0, new TextDecoder().decode(driver.stderr));
        const seen = JSON.parse(new TextDecoder().decode(driver.stdout).trim().split("\n").at(-1)!);
        assert.deepEqual(seen.errors, []);
        assert.deepEqual(seen.first, ["1:t1"]);
        const position = JSON.parse(seen.stored[`liveness.v1:${origin}:demo:stream:superhero3`]);
        assert.equal(position.seq, 1, "the position is in localStorage");
        // Opened again: the stored position resumed; what came meanwhile was replayed, once.
        assert.deepEqual(
          [seen.stream.recovered, seen.stream.replayed, seen.stream.epoch],
          [true, 2, position.epoch],
        );
        assert.deepEqual(seen.second, ["2:t2", "3:t3", "4:t4"]);
      } finally {
        await site.stop();
      }
    });
  },
});
