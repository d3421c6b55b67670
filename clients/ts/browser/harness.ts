// Debian's Chromium driven by playwright-core (no downloaded browsers), and screenshots under
// the workspace's target/web-screenshots/.

import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { type Browser, type Page, chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const SHOTS = fileURLToPath(new URL("../../../../target/web-screenshots/", import.meta.url));

export async function launch(): Promise<Browser> {
  mkdirSync(SHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Running as root in CI needs --no-sandbox; the rest keep Chromium from reaching for the
    // network beyond loopback (this machine's network is closed).
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
    timeout: 30_000,
  });
}

export async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: `${SHOTS}${name}.png` });
}
