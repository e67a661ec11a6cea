// Headless Chromium straight to `twistd hub --listen ssl:...` (no proxy in
// front): the page over https:// and the hub over wss://, with a certificate
// from a test CA (tests/_certs.py).  Chromium offers h2 and http/1.1 in ALPN;
// the hub must answer with http/1.1 (a WebSocket is an HTTP/1.1 upgrade).
// Chromium is told to accept this one server key (by its SPKI hash), nothing else.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HubProcess, REPO } from "../hub-process.mjs";
import { launchChromium } from "./chromium.mjs";

const PYTHON = process.env.PYTHON ?? "python3";
/** Every test and hook is bounded (node --test has no default timeout). */
const BOUNDED = { timeout: 60000 };
let directory;
let hub;
let browser;
let origin;

before(async () => {
  directory = mkdtempSync(join(tmpdir(), "twisted-hub-tls-"));
  const written = spawnSync(PYTHON, ["-m", "tests._certs", directory], { cwd: REPO, encoding: "utf8", timeout: 30000 });
  assert.equal(written.status, 0, written.stderr);
  const ca = JSON.parse(written.stdout);
  hub = await HubProcess.start([], { listen: ca.listen });
  origin = `https://127.0.0.1:${hub.port}`;
  // trust the test server's key only (puppeteer gives Chromium its own --user-data-dir, which this flag needs)
  browser = await launchChromium([`--ignore-certificate-errors-spki-list=${ca.spki}`]);
}, BOUNDED);

after(async () => {
  await browser?.close();
  await hub?.stop();
  if (directory) rmSync(directory, { recursive: true, force: true });
}, BOUNDED);

/** A new page that records the HTTP protocol of every response (Chromium's ALPN outcome). */
async function recordingPage() {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const protocols = new Map();
  const session = await page.createCDPSession();
  await session.send("Network.enable");
  session.on("Network.responseReceived", ({ response }) => protocols.set(response.url, response.protocol));
  return { page, errors, protocols };
}

test("Chromium loads the status page over https:// with http/1.1 negotiated", BOUNDED, async () => {
  const { page, errors, protocols } = await recordingPage();
  try {
    const response = await page.goto(`${origin}/`);
    assert.equal(response.status(), 200);
    assert.match(await page.title(), /twisted-hub/);
    assert.equal(protocols.get(`${origin}/`), "http/1.1");
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test("the JS client in Chromium connects over wss:// directly to twistd hub --listen ssl: and calls the hub", BOUNDED, async () => {
  const { page, errors, protocols } = await recordingPage();
  try {
    await page.goto(`${origin}/`);
    const outcome = await page.evaluate(async () => {
      const { connect } = await import("/client/twisted-hub.js");
      const client = await connect(`wss://${location.host}/hub`, "echo");
      const sum = await client.call("add", 20, 22);
      const echoed = await client.call("echo", "over wss");
      const reason = await client.disconnect();
      return { sum, echoed, kind: reason.kind };
    });
    assert.deepEqual(outcome, { sum: 42, echoed: "over wss", kind: "normal" });
    assert.equal(protocols.get(`${origin}/client/twisted-hub.js`), "http/1.1");
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});
