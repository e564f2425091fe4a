/**
 * Opens the docs pages of a running gateway in headless Chromium, in its own process:
 * playwright-core needs `--allow-sys`, which `deno task test` does not grant.
 *
 * Usage: `deno run -A tests/support/docs_page_driver.ts <gateway url> <screenshot path>`;
 * prints one JSON line with what the pages showed.
 */
import { launchChromium } from "./chromium.ts";

const [gatewayUrl, screenshotPath] = Deno.args;

const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const errors: string[] = [];
  const offSite: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("response", (r) => {
    if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`);
  });
  page.on("request", (r) => {
    if (!r.url().startsWith(gatewayUrl) && !r.url().startsWith("data:")) offSite.push(r.url());
  });

  const started = Date.now();
  await page.goto(`${gatewayUrl}/docs/asyncapi`);
  // The component renders an operation per entry of `operations`, each with its messages.
  await page.waitForSelector("[id^='operation-']", { timeout: 20_000 });
  const renderMs = Date.now() - started;
  const text = await page.locator("#asyncapi").innerText();
  const operationIds = await page.locator("[id^='operation-']").evaluateAll((nodes) =>
    nodes.map((n) => n.id)
  );
  const messageIds = await page.locator("[id^='message-']").evaluateAll((nodes) =>
    nodes.map((n) => n.id)
  );
  await page.screenshot({ path: screenshotPath });
  // Only the AsyncAPI page's errors: the Swagger UI page is checked by its own tests.
  const asyncApiErrors = [...errors];

  await page.goto(`${gatewayUrl}/docs`);
  const docsLinks = await page.locator("a").evaluateAll((nodes) =>
    nodes.map((n) =>
      (n as unknown as { getAttribute(name: string): string | null }).getAttribute("href")
    )
  );
  console.log(
    JSON.stringify({
      errors: asyncApiErrors,
      offSite,
      renderMs,
      text,
      operationIds,
      messageIds,
      docsLinks,
    }),
  );
} finally {
  await browser.close();
}
