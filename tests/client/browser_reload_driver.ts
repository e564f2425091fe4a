/**
 * Drives headless Chromium for `bundle.test.ts` (in its own process, as `browser_driver.ts`):
 * a chat page receives a message, the user leaves the page, two messages are sent meanwhile,
 * the page is opened again and resumes its stream from `localStorage`.
 *
 * Usage: `deno run -A tests/client/browser_reload_driver.ts <site url> <apikey>`; prints one
 * JSON line with what the page saw.
 */
import { launchChromium } from "../support/chromium.ts";

const [siteUrl, apiKey] = Deno.args;
type PageGlobals = {
  connected?: boolean;
  stream?: unknown;
  got: string[];
  localStorage: Storage;
};
// The callbacks below run in the page (serialized), so each names its globals itself.

/** A message from the app's server to superhero3, through the page's origin. */
async function send(text: string): Promise<void> {
  const reply = await fetch(`${siteUrl}/v1/apps/demo/messages`, {
    method: "POST",
    headers: { apikey: apiKey, "content-type": "application/json" },
    body: JSON.stringify({ to: ["superhero3"], message: { kind: "text", text } }),
  });
  await reply.body?.cancel();
  if (reply.status !== 200) throw new Error(`send failed: ${reply.status}`);
}

const browser = await launchChromium();
try {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const received = (count: number) =>
    page.waitForFunction(
      (n) => (globalThis as unknown as PageGlobals).got?.length >= n,
      count,
      { timeout: 10_000 },
    );
  const connected = () =>
    page.waitForFunction(() => (globalThis as unknown as PageGlobals).connected === true, null, {
      timeout: 10_000,
    });

  await page.goto(`${siteUrl}/chat`);
  await connected();
  await send("t1");
  await received(1);
  const first = await page.evaluate(() => (globalThis as unknown as PageGlobals).got);
  const stored = await page.evaluate(() => {
    const storage = (globalThis as unknown as PageGlobals).localStorage;
    const items: Record<string, string> = {};
    for (let i = 0; i < storage.length; i++) {
      const key = storage.key(i)!;
      items[key] = storage.getItem(key)!;
    }
    return items;
  });

  await page.goto("about:blank"); // the user leaves: the page and its socket are gone
  await send("t2");
  await send("t3");
  await page.goto(`${siteUrl}/chat`); // back: the stored user connects, resuming its stream
  await connected();
  await received(2);
  await send("t4");
  await received(3);
  const second = await page.evaluate(() => (globalThis as unknown as PageGlobals).got);
  const stream = await page.evaluate(() => (globalThis as unknown as PageGlobals).stream);
  console.log(JSON.stringify({ errors, first, stored, stream, second }));
} finally {
  await browser.close();
}
