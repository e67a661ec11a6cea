// What the browser test files share: Debian's Chromium, driven by puppeteer-core
// (nothing downloads a browser), and the demo page open and connected in it.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import puppeteer from "puppeteer-core";

/** The system Chromium (CHROMIUM overrides); a missing one fails the file's `before`, never skips it. */
export const CHROMIUM = process.env.CHROMIUM ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync);

/** Headless Chromium with the flags every file needs, and any `extraArgs`. */
export async function launchChromium(extraArgs = []) {
  assert.ok(CHROMIUM, "chromium is not installed (apt-get install chromium), or set CHROMIUM to its path");
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", ...extraArgs],
  });
}

/**
 * A new page of `browser` on the demo page that `hub` serves (with `query`), once its client
 * is connected; `page.errors` collects the page's uncaught errors.
 */
export async function demoPage(browser, hub, query = "") {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.errors = errors;
  await page.goto(`${hub.http}/demo/${query}`);
  await page.waitForFunction(() => window.hubDemo?.client?.client?.isConnected === true, { timeout: 10000, polling: 100 });
  return page;
}
