// A demo page in a background tab of real headless Chromium, served by a real
// `twistd -n hub`, watched for a minute.  In a file of its own (its own hub and
// browser, no other page in it but the one in front) so that the minute, which is
// waiting only, runs beside the other browser files (tests/test_javascript.py runs
// them two at a time) instead of after them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { servedDemo } from "./chromium.mjs";

/** How long the background tab is watched: a minute, as Chrome's heaviest throttling (1 wake-up/min) needs. */
const BACKGROUND_SECONDS = Number(process.env.BACKGROUND_SECONDS ?? 60);
/** Every test and hook is bounded (node --test has no default timeout). */
const BOUNDED = { timeout: 90000 };
// Server heartbeats every 1 s, timeout 2 s.
const served = servedDemo(["--heartbeat-interval", "1", "--heartbeat-timeout", "2"], BOUNDED);
const demoPage = served.demoPage;

test(`a page in a background tab keeps its connection for ${BACKGROUND_SECONDS} s with 1 s server heartbeats`, { timeout: (BACKGROUND_SECONDS + 60) * 1000 }, async () => {
  const background = await demoPage("?nick=background");
  const front = await served.browser.newPage();
  try {
    await front.goto(`${served.hub.http}/`);
    await front.bringToFront();
    const start = await background.evaluate(() => ({ beats: window.hubDemo.serverBeats, visibility: document.visibilityState }));
    await new Promise((resolve) => setTimeout(resolve, BACKGROUND_SECONDS * 1000));
    const end = await background.evaluate(() => ({
      beats: window.hubDemo.serverBeats,
      disconnects: window.hubDemo.disconnects,
      connections: window.hubDemo.client.connections,
      visibility: document.visibilityState,
    }));
    console.log(`background tab: visibility ${start.visibility} -> ${end.visibility}, ${end.beats - start.beats} server heartbeats answered in ${BACKGROUND_SECONDS} s`);
    assert.equal(end.visibility, "hidden", "the page really was in the background");
    assert.deepEqual(end.disconnects, []);
    assert.equal(end.connections, 1);
    assert.ok(end.beats - start.beats >= BACKGROUND_SECONDS - 2, `${end.beats - start.beats} beats`);
  } finally {
    await front.close();
    await background.close();
  }
});
