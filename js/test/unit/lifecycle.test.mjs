// The page lifecycle (js/src/lifecycle.ts) on a fake clock, fake sockets and a
// fake page: what a frozen page's connection reports, and reconnecting as soon
// as the page runs again.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { HubClient, ReconnectingHubClient } from "../../dist/index.js";
import { FakeClock, FakeWebSocket, settle } from "../fakes.mjs";

const quietLog = { debug() {}, info() {}, warn() {}, error() {} };

/** A page: `document` and `window` as EventTargets that count their listeners. */
class FakePage {
  constructor() {
    this.document = new EventTarget();
    this.document.visibilityState = "visible";
    this.window = new EventTarget();
    this.listeners = 0;
    for (const target of [this.document, this.window]) {
      const add = target.addEventListener.bind(target);
      const remove = target.removeEventListener.bind(target);
      target.addEventListener = (type, listener) => {
        this.listeners++;
        add(type, listener);
      };
      target.removeEventListener = (type, listener) => {
        this.listeners--;
        remove(type, listener);
      };
    }
  }

  fire(target, type, fields = {}) {
    const event = new Event(type);
    Object.assign(event, fields);
    this[target].dispatchEvent(event);
  }
}

let clock;
let page;
beforeEach(() => {
  FakeWebSocket.instances = [];
  clock = new FakeClock();
  page = new FakePage();
});

async function openClient(options = {}) {
  const client = new HubClient("ws://127.0.0.1:1/hub/room", { WebSocket: FakeWebSocket, clock, log: quietLog, page, ...options });
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps: ["batch"], id: "c-1" });
  await client.whenReady();
  return { client, ws };
}

for (const [name, freeze] of [
  ["freeze (Page Lifecycle API)", (p) => p.fire("document", "freeze")],
  ["pagehide into the back/forward cache", (p) => p.fire("window", "pagehide", { persisted: true })],
]) {
  test(`a connection the browser drops (1006) after ${name} ends as going-away 1001, closed on our side`, async () => {
    const { client, ws } = await openClient();
    const pending = client.call("slow");
    freeze(page);
    page.fire("document", "resume");
    ws.serverClose(1006);
    const reason = await client.waitForDisconnect();
    assert.deepEqual(reason, {
      kind: "going-away",
      code: 1001,
      message: "the page was frozen: the browser closed the connection",
      locally: true,
    });
    await assert.rejects(pending, (e) => e.reason === reason);
    assert.equal(page.listeners, 0, "the ended client listens to the page no more");
  });
}

test("without a freeze, 1006 is still connection-lost; a pagehide that is not persisted is no freeze", async () => {
  const { client, ws } = await openClient();
  page.fire("window", "pagehide", { persisted: false });
  ws.serverClose(1006);
  assert.equal((await client.waitForDisconnect()).kind, "connection-lost");
});

test("after a freeze, a close the server explains keeps the server's reason (peer-timed-out)", async () => {
  const { client, ws } = await openClient();
  page.fire("document", "freeze");
  ws.deliver([8, 4001, "heartbeat timeout"]);
  ws.serverClose(4001, "heartbeat timeout");
  assert.equal((await client.waitForDisconnect()).kind, "peer-timed-out");
});

test("page: null watches nothing; Node (no document) has no page by default", async () => {
  const { client, ws } = await openClient({ page: null });
  assert.equal(page.listeners, 0);
  page.fire("document", "freeze");
  ws.serverClose(1006);
  assert.equal((await client.waitForDisconnect()).kind, "connection-lost");
  const node = new HubClient("ws://127.0.0.1:1/hub/room", { WebSocket: FakeWebSocket, clock, log: quietLog });
  const nodeWs = FakeWebSocket.latest();
  nodeWs.open();
  nodeWs.welcome({ caps: ["batch"], id: "c-2" });
  await node.whenReady();
  nodeWs.serverClose(1006);
  assert.equal((await node.waitForDisconnect()).kind, "connection-lost");
});

function reconnecting(retry = { initialDelay: 10_000, random: () => 0.5 }) {
  return new ReconnectingHubClient("ws://127.0.0.1:1/hub", "room", { WebSocket: FakeWebSocket, clock, log: quietLog, page, retry });
}

/** stop() waits for the closing handshake: the fake server answers it. */
async function stop(client) {
  const stopping = client.stop();
  FakeWebSocket.latest().serverClose(1000);
  await stopping;
}

async function welcomeLatest(id) {
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps: ["batch"], id });
  await settle();
  return ws;
}

test("ReconnectingHubClient reconnects at once (no backoff) after the browser dropped a frozen page's connection", async () => {
  const client = reconnecting();
  client.start();
  const ws = await welcomeLatest("first");
  page.fire("document", "freeze");
  page.fire("document", "resume");
  ws.serverClose(1006);
  await settle();
  assert.equal(client.disconnects[0].kind, "going-away");
  assert.equal(FakeWebSocket.instances.length, 1);
  clock.advance(0);
  assert.equal(FakeWebSocket.instances.length, 2, "a new attempt right away, not after 5 s of backoff");
  await welcomeLatest("second");
  assert.equal(client.connections, 2);
  await stop(client);
});

for (const [name, wake] of [
  ["the page resumes", (p) => p.fire("document", "resume")],
  ["the page comes back from the back/forward cache", (p) => p.fire("window", "pageshow", { persisted: true })],
  ["the page becomes visible", (p) => {
    p.document.visibilityState = "visible";
    p.fire("document", "visibilitychange");
  }],
  ["the browser is back online", (p) => p.fire("window", "online")],
]) {
  test(`an attempt waiting for its backoff is made at once when ${name}`, async () => {
    const client = reconnecting();
    client.start();
    const ws = await welcomeLatest("first");
    ws.serverClose(1006);
    await settle();
    assert.equal(client.disconnects[0].kind, "connection-lost");
    clock.advance(4_999);
    assert.equal(FakeWebSocket.instances.length, 1, "waiting for the 5 s backoff");
    wake(page);
    assert.equal(FakeWebSocket.instances.length, 2);
    clock.advance(100_000);
    assert.equal(FakeWebSocket.instances.length, 2, "the backoff timer was cancelled, not left to fire too");
    await welcomeLatest("second");
    await stop(client);
  });
}

test("waking changes nothing while connected or connecting, a hidden page does not wake it, and stop() removes the listeners", async () => {
  const client = reconnecting();
  client.start();
  assert.equal(FakeWebSocket.instances.length, 1);
  page.fire("document", "resume");
  assert.equal(FakeWebSocket.instances.length, 1, "still connecting: no second attempt");
  const ws = await welcomeLatest("first");
  page.fire("window", "online");
  assert.equal(FakeWebSocket.instances.length, 1, "connected: nothing to do");
  ws.serverClose(1006);
  await settle();
  page.document.visibilityState = "hidden";
  page.fire("document", "visibilitychange");
  assert.equal(FakeWebSocket.instances.length, 1, "a page going to the background is no reason to hurry");
  assert.ok(page.listeners > 0);
  await client.stop();
  assert.equal(page.listeners, 0);
  page.fire("document", "resume");
  clock.advance(100_000);
  assert.equal(FakeWebSocket.instances.length, 1);
});
