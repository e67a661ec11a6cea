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
  await assert.rejects(client.call("x"), ConnectionClosedError);
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
