// Reconnecting with full-jitter backoff, on a fake clock and fake sockets.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { ReconnectingHubClient, fullJitterDelay, ConnectionClosedError } from "../../dist/index.js";
import { FakeClock, FakeWebSocket, settle } from "../fakes.mjs";

const quietLog = { debug() {}, info() {}, warn() {}, error() {} };
let clock;
beforeEach(() => {
  FakeWebSocket.instances = [];
  clock = new FakeClock();
});

test("full jitter: the delay is uniform below min(maxDelay, initial x factor^attempt)", () => {
  const policy = { initialDelay: 500, maxDelay: 4000, factor: 2 };
  assert.equal(fullJitterDelay(0, { ...policy, random: () => 0.999999 }), 500 * 0.999999);
  assert.equal(fullJitterDelay(2, { ...policy, random: () => 0.5 }), 1000);
  assert.equal(fullJitterDelay(10, { ...policy, random: () => 0.5 }), 2000);
  assert.equal(fullJitterDelay(3, { ...policy, random: () => 0 }), 0);
});

test("after a lost connection it reconnects after a jittered delay and runs onConnected again", async () => {
  const hooks = [];
  const warnings = [];
  const client = new ReconnectingHubClient("ws://127.0.0.1:1/hub", "room", {
    WebSocket: FakeWebSocket,
    clock,
    log: { ...quietLog, warn: (m) => warnings.push(m) },
    retry: { initialDelay: 1000, random: () => 0.5 },
    onConnected: (c) => hooks.push(c.connectionId),
    waitForConnection: 0,
  });
  client.start();
  let ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps: ["batch"], id: "first" });
  await settle();
  assert.deepEqual(hooks, ["first"]);
  ws.serverClose(1006);
  await settle();
  assert.equal(client.client, null);
  await assert.rejects(client.call("x"), ConnectionClosedError, "waitForConnection 0: fails at once between connections");
  assert.equal(client.disconnects[0].kind, "connection-lost");
  clock.advance(499);
  assert.equal(FakeWebSocket.instances.length, 1, "not before the jittered delay (0.5 x 1000 ms)");
  clock.advance(1);
  assert.equal(FakeWebSocket.instances.length, 2);
  // This attempt fails at the handshake (logged): the next delay doubles (0.5 x 2000 ms).
  FakeWebSocket.latest().serverClose(1006);
  await settle();
  assert.equal(client.failedAttempts, 1);
  assert.deepEqual(warnings, ["connecting to ws://127.0.0.1:1/hub/room failed: handshake refused (no status): connection closed during the handshake"]);
  clock.advance(999);
  assert.equal(FakeWebSocket.instances.length, 2);
  clock.advance(1);
  ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps: ["batch"], id: "second" });
  await settle();
  assert.deepEqual(hooks, ["first", "second"]);
  assert.equal(client.connections, 2);
  const connected = await client.whenConnected();
  assert.equal(connected.connectionId, "second");
  const stopping = client.stop();
  ws.serverClose(1000);
  await stopping;
  clock.advance(100_000);
  assert.equal(FakeWebSocket.instances.length, 3, "no reconnect after stop()");
});

test("onRetry and nextRetryAt say when the next attempt comes; a call in flight fails with mayHaveRun, one made between connections without", async () => {
  const retries = [];
  const client = new ReconnectingHubClient("ws://127.0.0.1:1/hub", "room", {
    WebSocket: FakeWebSocket,
    clock,
    log: quietLog,
    page: null,
    waitForConnection: 0, // a call between connections fails at once here
    retry: { initialDelay: 1000, random: () => 0.5 },
    onRetry: (delay, attempt) => retries.push([delay, attempt, client.nextRetryAt - clock.now()]),
  });
  client.start();
  assert.equal(client.nextRetryAt, null);
  let ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps: ["batch"], id: "first" });
  await settle();
  const inFlight = client.call("slow");
  ws.serverClose(1006);
  await assert.rejects(inFlight, (e) => e instanceof ConnectionClosedError && e.mayHaveRun === true && /may have run/.test(e.message));
  await assert.rejects(client.call("later"), (e) => e instanceof ConnectionClosedError && e.mayHaveRun === false);
  assert.deepEqual(retries, [[500, 0, 500]]);
  clock.advance(500);
  assert.equal(client.nextRetryAt, null, "the retry is under way");
  FakeWebSocket.latest().serverClose(1006); // refused: the next retry doubles
  await settle();
  assert.deepEqual(retries, [[500, 0, 500], [1000, 1, 1000]]);
  const stopping = client.stop();
  assert.equal(client.nextRetryAt, null);
  await stopping;
});

test("a call made between connections waits for the next one (waitForConnection), and is sent there", async () => {
  const client = new ReconnectingHubClient("ws://127.0.0.1:1/hub", "room", {
    WebSocket: FakeWebSocket,
    clock,
    log: quietLog,
    retry: { initialDelay: 1000, random: () => 0.5 },
    waitForConnection: 5000,
  });
  client.start();
  let ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps: ["batch"], id: "first" });
  await settle();
  ws.serverClose(1001, "restarting");
  await settle();
  const during = client.call("echo", "x");
  let settled = null;
  during.then((v) => (settled = { value: v }), (e) => (settled = { error: e }));
  clock.advance(500); // the retry's delay: the next connection
  ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps: ["batch"], id: "second" });
  await settle();
  assert.equal(settled, null, "still waiting for its answer");
  const [invoke] = ws.takeMessages().filter((m) => m[0] === 2);
  assert.deepEqual(invoke, [2, 1, "echo", ["x"]], "sent on the next connection");
  ws.deliver([4, 1, "x"]);
  await settle();
  assert.deepEqual(settled, { value: "x" });
  const stopping = client.stop();
  ws.serverClose(1000);
  await stopping;
});

test("a call waits at most waitForConnection ms; stop() fails the calls still waiting", async () => {
  const client = new ReconnectingHubClient("ws://127.0.0.1:1/hub", "room", {
    WebSocket: FakeWebSocket,
    clock,
    log: quietLog,
    retry: { initialDelay: 100000, random: () => 0.5 },
    waitForConnection: 2000,
  });
  assert.throws(() => new ReconnectingHubClient("ws://x/hub", null, { waitForConnection: -1 }), RangeError);
  await assert.rejects(client.call("x"), ConnectionClosedError, "not started: fails at once");
  client.start();
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps: ["batch"], id: "first" });
  await settle();
  ws.serverClose(1006);
  await settle();
  const late = client.call("echo", 1);
  const outcome = late.then(() => "answered", (e) => e);
  clock.advance(1999);
  await settle();
  clock.advance(1);
  const error = await outcome;
  assert.ok(error instanceof ConnectionClosedError);
  assert.equal(error.reason.kind, "connection-lost");
  assert.match(error.reason.message, /^no connection within 2000 ms; the last connection ended: connection-lost/);
  const waiting = client.call("echo", 2).then(() => "answered", (e) => e);
  const connected = client.whenConnected().then(() => "connected", (e) => e);
  await client.stop();
  for (const stopped of [await waiting, await connected]) {
    assert.ok(stopped instanceof ConnectionClosedError);
    assert.equal(stopped.reason.message, "the client was stopped");
  }
  assert.equal(FakeWebSocket.instances.length, 1, "no connection attempt after stop()");
});
