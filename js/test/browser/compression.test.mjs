// permessage-deflate with a real browser: `twistd -n hub --compression` and headless Chromium,
// which offers the extension on every WebSocket. The upgrade's answer (read through the
// DevTools protocol) shows it negotiated; large and small payloads round-trip through it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { HubProcess } from "../hub-process.mjs";
import { launchChromium } from "./chromium.mjs";

const BOUNDED = { timeout: 90000 };
let browser;

before(async () => {
  browser = await launchChromium();
}, BOUNDED);

after(async () => {
  await browser?.close();
}, BOUNDED);

/** Echo a large compressible text, a small one and the large one again from a page; the upgrade's extensions header. */
async function echoFromBrowser(hub) {
  const page = await browser.newPage();
  const extensions = [];
  try {
    const session = await page.createCDPSession();
    await session.send("Network.enable");
    session.on("Network.webSocketHandshakeResponseReceived", ({ response }) => {
      const headers = Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]));
      extensions.push(headers["sec-websocket-extensions"] ?? "");
    });
    await page.goto(`${hub.http}/health`);
    const same = await page.evaluate(async () => {
      const { connect } = await import("/client/twisted-hub.js");
      const text = Array(400).fill("the quick brown fox jumps over the lazy dog, lorem ipsum dolor sit amet").join(" ");
      const client = await connect(location.origin.replace(/^http/, "ws") + "/hub", "echo");
      const results = [await client.call("echo", text), await client.call("echo", "small"), await client.call("echo", text)];
      await client.disconnect();
      return results[0] === text && results[1] === "small" && results[2] === text;
    });
    return { same, extensions };
  } finally {
    await page.close();
  }
}

test("with --compression, Chromium negotiates permessage-deflate and large and small calls round-trip", BOUNDED, async () => {
  const hub = await HubProcess.start(["--compression"]);
  try {
    const { same, extensions } = await echoFromBrowser(hub);
    assert.equal(same, true);
    assert.deepEqual(extensions, ["permessage-deflate; client_no_context_takeover; client_max_window_bits=12"]);
  } finally {
    await hub.stop();
  }
});

test("without --compression, Chromium's offer is declined and the calls round-trip uncompressed", BOUNDED, async () => {
  const hub = await HubProcess.start([]);
  try {
    const { same, extensions } = await echoFromBrowser(hub);
    assert.equal(same, true);
    assert.deepEqual(extensions, [""]);
  } finally {
    await hub.stop();
  }
});
