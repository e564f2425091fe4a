/**
 * Headless Debian Chromium for the browser drivers (no browser download works here). Run from
 * a driver process: playwright-core needs `--allow-sys`, which `deno task test` does not grant.
 */
import { type Browser, chromium } from "playwright-core";

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      // Nothing but the page under test on the network.
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
