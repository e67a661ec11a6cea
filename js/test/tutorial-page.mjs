// The counter page of docs/tutorial.md (step 5) in headless Chromium, for
// tests/test_tutorial.py: `node test/tutorial-page.mjs URL` prints
//   shown N     the page showed the count it got from `get`
//   clicked M   +1 was clicked and the page shows M (through the `changed` receiver)
//   changed K   the count changed from elsewhere (the test runs the CLI) and the page shows K
// and exits 0; any page error, or a wait over its bound, exits 1.
import { existsSync } from "node:fs";
import puppeteer from "puppeteer-core";

const url = process.argv[2];
const CHROMIUM = process.env.CHROMIUM ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync);
if (!url || !CHROMIUM) {
  console.error(!url ? "usage: node test/tutorial-page.mjs URL" : "chromium is not installed (apt-get install chromium)");
  process.exit(1);
}
const WAIT = { timeout: 20000, polling: 50 };
const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let status = 1;
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Chromium asks for /favicon.ico, which the tutorial's folder does not have: not the page's error.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.location()?.url?.endsWith("/favicon.ico")) errors.push(`${m.text()} ${m.location()?.url}`);
  });
  await page.goto(url);
  const shownNumber = () => page.$eval("#count", (e) => Number(e.value));
  await page.waitForFunction(() => !document.getElementById("plus").disabled, WAIT);
  const shown = await shownNumber();
  console.log(`shown ${shown}`);
  await page.click("#plus");
  await page.waitForFunction((n) => Number(document.getElementById("count").value) === n, WAIT, shown + 1);
  console.log(`clicked ${await shownNumber()}`);
  await page.waitForFunction((n) => Number(document.getElementById("count").value) !== n, WAIT, shown + 1);
  console.log(`changed ${await shownNumber()}`);
  if (errors.length) {
    console.error(`page errors: ${errors.join("; ")}`);
  } else {
    status = 0;
  }
} catch (e) {
  console.error(String(e));
} finally {
  await browser.close();
}
process.exit(status);
