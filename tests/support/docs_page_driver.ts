/**
 * Drives headless Chromium through the Swagger UI page at `/docs` as a user would: Authorize
 * with the session credential, open `GET /v1/session`, Execute. Runs in its own process
 * (playwright-core needs `--allow-sys`, which `deno task test` does not grant).
 *
 * Usage: `deno run -A tests/support/docs_page_driver.ts <gateway url> <credential> <screenshot>`;
 * prints one JSON line: the status and body the page shows, and the page's errors.
 */
import { launchChromium } from "./chromium.ts";

const [url, credential, screenshot] = Deno.args;

const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("response", (r) => r.status() >= 400 && errors.push(`${r.status()} ${r.url()}`));
  // A failed resource load is reported (with its URL) by the response handler above.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      errors.push(m.text());
    }
  });
  await page.goto(`${url}/docs`);
  await page.locator(".swagger-ui .info .title").waitFor({ timeout: 15_000 });

  // "Authorize": the dialog lists one form per security scheme.
  await page.locator(".auth-wrapper button.authorize").click();
  const scheme = page.locator(".auth-container").filter({ hasText: "sessionCredential" });
  await scheme.locator("input").fill(credential);
  await scheme.locator("button.authorize").click();
  await page.locator(".auth-btn-wrapper button.btn-done, button.close-modal").first().click();

  // Open GET /v1/session and execute it (the page starts with "Try it out" on).
  const operation = page.locator(".opblock-get").filter({
    has: page.locator('.opblock-summary-path[data-path="/v1/session"]'),
  });
  await operation.locator(".opblock-summary").first().click();
  await operation.locator("button.execute").click();
  const live = operation.locator(".live-responses-table .response");
  await live.first().waitFor({ timeout: 10_000 });
  const status = (await live.locator(".response-col_status").first().innerText()).trim();
  const body = (await live.locator(".response-col_description pre").first().innerText()).trim();
  const curl = (await operation.locator(".curl-command").first().innerText().catch(() => ""))
    .trim();
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: false });
  console.log(JSON.stringify({ status, body, curl, errors }));
} finally {
  await browser.close();
}
