// What the browser test files share: Debian's Chromium, driven by puppeteer-core
// (nothing downloads a browser), and the demo page open and connected in it.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import puppeteer from "puppeteer-core";
import { HubProcess } from "../hub-process.mjs";

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

/**
 * For a test file of the demo page: `twistd -n hub` (with `hubArgs`) and Chromium, started in
 * the file's `before` and stopped in its `after` (each bounded by `bounded`).  The returned
 * object holds them once started (`hub`, `browser`) and opens demo pages (`demoPage(query)`).
 */
export function servedDemo(hubArgs, bounded) {
  const served = {
    hub: null,
    browser: null,
    demoPage: (query = "") => demoPage(served.browser, served.hub, query),
  };
  before(async () => {
    served.hub = await HubProcess.start(hubArgs);
    served.browser = await launchChromium();
  }, bounded);
  after(async () => {
    await served.browser?.close();
    await served.hub?.stop();
  }, bounded);
  return served;
}
