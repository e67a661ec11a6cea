// Streams (docs/streams.md, protocol.md 3.18) against a fake server socket: credit, cancel, end, errors.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { ConnectionClosedError, HubError, connect } from "../../dist/index.js";
import { FakeClock, FakeWebSocket, settle } from "../fakes.mjs";

const quietLog = { debug() {}, info() {}, warn() {}, error() {} };
let clock;

beforeEach(() => {
  FakeWebSocket.instances = [];
  clock = new FakeClock();
});

async function connected(caps = ["heartbeat", "batch", "stream"]) {
  const ready = connect("ws://127.0.0.1:1/hub", "streams", { WebSocket: FakeWebSocket, clock, log: quietLog });
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps, id: "c-1", max: 1048576 });
  const client = await ready;
  ws.takeMessages(); // HELLO
  return { client, ws };
}

test("stream() sends STREAM_INVOKE with the window; items arrive in order; STREAM_END ends the loop", async () => {
  const { client, ws } = await connected();
  const stream = client.stream("ticks", 3);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[15, 1, "ticks", [3], null, 16]]);
  ws.deliver([16, 1, "a"], [16, 1, "b"], [16, 1, "c"], [17, 1]);
  const items = [];
  for await (const item of stream) items.push(item);
  assert.deepEqual(items, ["a", "b", "c"]);
  // a late item for the ended stream is ignored, and a call afterwards works
  ws.deliver([16, 1, "late"]);
  assert.equal(client.isConnected, true);
});

test("credit: taking half the window grants that much; nothing is granted before", async () => {
  const { client, ws } = await connected();
  const stream = client.streamWith("ticks", [], null, { window: 4 });
  await settle();
  ws.takeMessages();
  ws.deliver([16, 1, 0], [16, 1, 1], [16, 1, 2], [16, 1, 3]);
  assert.deepEqual((await stream.next()).value, 0);
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  assert.deepEqual((await stream.next()).value, 1);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[18, 1, 2]]);
});

test("an item beyond the credit is the server's protocol error (close 4002)", async () => {
  const { client, ws } = await connected();
  client.streamWith("ticks", [], null, { window: 1 });
  await settle();
  ws.deliver([16, 1, 0], [16, 1, 1]);
  assert.equal(ws.closedWith.code, 4002);
});

test("leaving the loop early sends STREAM_CANCEL once; later messages for it are ignored", async () => {
  const { client, ws } = await connected();
  const stream = client.stream("ticks");
  await settle();
  ws.takeMessages();
  ws.deliver([16, 1, 0], [16, 1, 1]);
  for await (const item of stream) {
    assert.equal(item, 0);
    break;
  }
  await settle();
  assert.deepEqual(ws.takeMessages(), [[19, 1]]);
  stream.cancel();
  ws.deliver([16, 1, 2], [17, 1]);
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  assert.equal(client.isConnected, true);
});

test("STREAM_END with an error, and an ERROR answer, fail the loop with that HubError", async () => {
  const { client, ws } = await connected();
  const failing = client.stream("broken");
  const refused = client.stream("nosuch");
  await settle();
  ws.deliver([16, 1, "x"], [17, 1, "app-code", "it broke", { at: 1 }], [5, 2, "unknown-method", "no method", null]);
  const items = [];
  await assert.rejects(
    (async () => {
      for await (const item of failing) items.push(item);
    })(),
    (e) => e instanceof HubError && e.code === "app-code" && e.detail.at === 1,
  );
  assert.deepEqual(items, ["x"]);
  await assert.rejects(refused.next(), (e) => e instanceof HubError && e.code === "unknown-method");
});

test("the connection ends mid-stream: the loop fails with ConnectionClosedError", async () => {
  const { client, ws } = await connected();
  const stream = client.stream("ticks");
  await settle();
  ws.deliver([16, 1, 0]);
  ws.serverClose(1006);
  assert.equal((await stream.next()).value, 0);
  await assert.rejects(stream.next(), ConnectionClosedError);
});

test("a server without the stream capability: the stream fails at once, nothing is sent", async () => {
  const { client, ws } = await connected(["heartbeat", "batch"]);
  const stream = client.stream("ticks");
  await assert.rejects(stream.next(), (e) => e instanceof HubError && e.code === "stream-mismatch");
  await assert.rejects(client.call("total", (async function* () {})()), (e) => e.code === "stream-mismatch");
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
});

test("an async iterable argument is declared and sent as credit allows; the producer stops on cancel", async () => {
  const { client, ws } = await connected();
  let made = 0;
  let closed = 0;
  async function* numbers() {
    try {
      for (;;) yield made++;
    } finally {
      closed++;
    }
  }
  const result = client.call("total", numbers());
  await settle();
  assert.deepEqual(ws.takeMessages(), [[2, 1, "total", [null], null, [[0, 1]]]]);
  assert.equal(made, 0); // no credit yet: nothing is taken from the source
  ws.deliver([18, 1, 3]);
  await settle();
  await settle();
  assert.deepEqual(ws.takeMessages(), [[16, 1, 0], [16, 1, 1], [16, 1, 2]]);
  assert.equal(made, 3);
  ws.deliver([19, 1], [4, 1, 3]);
  assert.equal(await result, 3);
  await settle();
  assert.equal(closed, 1);
  assert.deepEqual(ws.takeMessages(), []);
});

test("an argument stream that ends sends STREAM_END; one that throws sends its error", async () => {
  const { client, ws } = await connected();
  async function* two() {
    yield 1;
    yield 2;
  }
  async function* broken() {
    yield 1;
    throw new HubError("bad-input", "no more");
  }
  client.call("total", two());
  client.call("total", broken());
  await settle();
  ws.takeMessages();
  ws.deliver([18, 1, 16], [18, 2, 16]);
  for (let i = 0; i < 4; i++) await settle();
  const sent = ws.takeMessages();
  assert.deepEqual(sent.filter((m) => m[1] === 1), [[16, 1, 1], [16, 1, 2], [17, 1]]);
  assert.deepEqual(sent.filter((m) => m[1] === 2), [[16, 2, 1], [17, 2, "bad-input", "no more", null]]);
});
