/**
 * Drives headless Chromium for `bundle.test.ts`, in its own process: playwright-core needs
 * `--allow-sys` (home directory, CPU count), which `deno task test` does not grant.
 *
 * Usage: `deno run -A tests/client/browser_driver.ts <page url> <window ms>`; prints one JSON
 * line with what the page saw.
 */
import { launchChromium } from "../support/chromium.ts";

const [pageUrl, windowArg] = Deno.args;
const windowMs = Number(windowArg);
type PageGlobals = {
  ready?: boolean;
  log: string[];
  hide(): void;
  client: {
    getConnectionStatus(): string;
    getConnectionInfo(): { appState: string; status: string };
  };
  localStorage: { key(i: number): string | null };
};
// The callbacks below run in the page (serialized), so each names its globals itself.

const browser = await launchChromium();
try {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(pageUrl);
  await page.waitForFunction(() => (globalThis as unknown as PageGlobals).ready === true, null, {
    timeout: 10_000,
  });
  const before = await page.evaluate(() => ({
    status: (globalThis as unknown as PageGlobals).client.getConnectionStatus(),
    stored: (globalThis as unknown as PageGlobals).localStorage.key(0),
  }));
  const start = Date.now();
  await page.evaluate(() => (globalThis as unknown as PageGlobals).hide());
  await page.waitForFunction(
    () => (globalThis as unknown as PageGlobals).log.some((e) => e.startsWith("disconnected:")),
    null,
    { timeout: windowMs + 5_000 },
  );
  const elapsed = Date.now() - start;
  const log = await page.evaluate(() => (globalThis as unknown as PageGlobals).log);
  const after = await page.evaluate(() =>
    (globalThis as unknown as PageGlobals).client.getConnectionInfo()
  );
  console.log(JSON.stringify({ errors, before, elapsed, log, after }));
} finally {
  await browser.close();
}
