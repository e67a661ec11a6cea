// The client against a fake server socket on a fake clock: deterministic.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import {
  CallTimeoutError,
  ConnectionClosedError,
  DisconnectKind,
  HandshakeError,
  HubClient,
  HubError,
  connect,
  hubUrl,
} from "../../dist/index.js";
import { FakeClock, FakeWebSocket, settle } from "../fakes.mjs";

const quietLog = { debug() {}, info() {}, warn() {}, error() {} };
let clock;

beforeEach(() => {
  FakeWebSocket.instances = [];
  clock = new FakeClock();
});

function options(extra = {}) {
  return { WebSocket: FakeWebSocket, clock, log: quietLog, ...extra };
}

/** A connected client and its fake socket. */
async function connected(extra = {}, welcome = undefined) {
  const ready = connect("ws://127.0.0.1:1/hub", "chat", options(extra));
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome(welcome);
  const client = await ready;
  ws.takeMessages(); // HELLO
  return { client, ws };
}

test("the handshake offers the subprotocol, sends HELLO with caps and max, and is ready on WELCOME", async () => {
  const ready = connect("ws://127.0.0.1:1/hub/", "chat", options({ maxMessageSize: 4096 }));
  const ws = FakeWebSocket.latest();
  assert.equal(ws.url, "ws://127.0.0.1:1/hub/chat");
  assert.deepEqual(ws.protocols, ["twisted-hub.v1"]);
  ws.open();
  assert.deepEqual(ws.frames(), [[[0, { caps: ["heartbeat", "batch", "stream"], max: 4096 }]]]);
  ws.welcome({ caps: ["heartbeat", "batch"], id: "abc-1" });
  const client = await ready;
  assert.equal(client.connectionId, "abc-1");
  assert.equal(client.isConnected, true);
});

test("hubUrl puts the hub name last in the path, before any query string", () => {
  assert.equal(hubUrl("ws://h:1/hub", "chat"), "ws://h:1/hub/chat");
  assert.equal(hubUrl("ws://h:1/hub//", "chat"), "ws://h:1/hub/chat");
  assert.equal(hubUrl("wss://h/api/hub?token=a/b", "chat"), "wss://h/api/hub/chat?token=a/b");
  assert.equal(hubUrl("ws://h:1/hub/chat", null), "ws://h:1/hub/chat");
});

test("a server that picks another subprotocol fails the handshake", async () => {
  const ready = connect("ws://127.0.0.1:1/hub", "chat", options());
  FakeWebSocket.latest().open("other");
  await assert.rejects(ready, (e) => e instanceof HandshakeError && /subprotocol 'other'/.test(e.reason));
  assert.equal(FakeWebSocket.latest().closedWith.code, 4002);
});

test("an HTTP refusal reported by the runtime becomes a HandshakeError with its status", async () => {
  const ready = connect("ws://127.0.0.1:1/hub", "nope", options());
  const ws = FakeWebSocket.latest();
  ws.onerror({ message: "Unexpected server response: 404" });
  ws.serverClose(1006);
  await assert.rejects(ready, (e) => e instanceof HandshakeError && e.status === 404);
});

test("a refused TCP connection is a HandshakeError without a status (digits in the address are not one)", async () => {
  const ready = connect("ws://127.0.0.1:1/hub", "chat", options());
  const ws = FakeWebSocket.latest();
  ws.onerror({ message: "connect ECONNREFUSED 127.0.0.1:1" });
  ws.serverClose(1006);
  await assert.rejects(ready, (e) => e instanceof HandshakeError && e.status === null && /ECONNREFUSED/.test(e.reason));
});

test("no WELCOME within connectTimeout fails the connect: handshake-failed, decided locally", async () => {
  const reasons = [];
  const ready = connect("ws://127.0.0.1:1/hub", "chat", options({ connectTimeout: 1000, onDisconnected: (r) => reasons.push(r) }));
  FakeWebSocket.latest().open();
  clock.advance(1000);
  await assert.rejects(ready, (e) => e instanceof HandshakeError && /no hub handshake within 1000 ms/.test(e.reason));
  assert.deepEqual(reasons.map((r) => [r.kind, r.code, r.locally]), [["handshake-failed", null, true]]);
});

test("a first message other than WELCOME is a protocol error: handshake-failed with our close code 4002", async () => {
  const reasons = [];
  const ready = connect("ws://127.0.0.1:1/hub", "chat", options({ onDisconnected: (r) => reasons.push(r) }));
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.deliver([4, 1, 1]);
  assert.equal(ws.closedWith.code, 4002);
  ws.serverClose(4002);
  await assert.rejects(ready, HandshakeError);
  assert.deepEqual(reasons.map((r) => [r.kind, r.code, r.locally]), [["handshake-failed", 4002, true]]);
});

test("the WebSocket constructor gets maxPayload = maxMessageSize (Node's ws then refuses a larger message from its header)", () => {
  new HubClient("ws://127.0.0.1:1/hub/chat", options({ maxMessageSize: 4096 }));
  assert.deepEqual(FakeWebSocket.latest().options, { maxPayload: 4096 });
});

test("calls resolve with RESULT and reject with a typed HubError from ERROR", async () => {
  const { client, ws } = await connected();
  const ok = client.call("add", 2, 3);
  const bad = client.invoke("join", ["lobby"], { nick: "ann" });
  await settle();
  assert.deepEqual(ws.takeMessages(), [
    [2, 1, "add", [2, 3]],
    [2, 2, "join", ["lobby"], { nick: "ann" }],
  ]);
  ws.deliver([4, 1, 5], [5, 2, "not-in-room", "join first", { room: "lobby" }]);
  assert.equal(await ok, 5);
  await assert.rejects(bad, (e) => e instanceof HubError && e.code === "not-in-room" && e.hubMessage === "join first" && e.detail.room === "lobby");
});

test("results are matched by call id, not by order, and unknown ids are ignored", async () => {
  const { client, ws } = await connected();
  const first = client.call("slow");
  const second = client.call("fast");
  await settle();
  ws.deliver([4, 99, "nobody asked"], [4, 2, "fast"], [4, 1, "slow"]);
  assert.deepEqual(await Promise.all([first, second]), ["slow", "fast"]);
});

test("a call without an answer in time fails with CallTimeoutError and a late answer is ignored", async () => {
  const { client, ws } = await connected({ callTimeout: 500 });
  const call = client.call("echo", 1);
  await settle();
  clock.advance(500);
  await assert.rejects(call, (e) => e instanceof CallTimeoutError && e.code === "timeout");
  ws.deliver([4, 1, 1]);
  const other = client.invoke("echo", [2], null, { timeout: null });
  await settle();
  clock.advance(10_000);
  ws.deliver([4, 2, 2]);
  assert.equal(await other, 2);
});

test("calls made in one turn leave in one batched frame; without the batch capability, one frame each", async () => {
  const batched = await connected();
  batched.client.notify("a");
  batched.client.notify("b", 1);
  batched.client.call("c");
  await settle();
  assert.deepEqual(batched.ws.frames(), [[[3, "a", []], [3, "b", [1]], [2, 1, "c", []]]]);

  const single = await connected({}, { caps: ["heartbeat"], id: "x" });
  single.client.notify("a");
  single.client.notify("b");
  await settle();
  assert.deepEqual(single.ws.frames(), [[[3, "a", []]], [[3, "b", []]]]);
});

test("batches are split so no frame exceeds the server's announced max", async () => {
  const { client, ws } = await connected({}, { caps: ["batch"], id: "x", max: 40 });
  for (let i = 0; i < 6; i++) client.notify("n", "0123456789");
  await settle();
  assert.ok(ws.sent.length > 1);
  assert.ok(ws.sent.every((frame) => frame.length <= 40), ws.sent.map((f) => f.length).join(","));
  assert.equal(ws.messages().length, 6);
});

test("no frame holds more than 256 messages: 5,000 calls in one turn leave as 256-message frames, in order", async () => {
  const { client, ws } = await connected();
  const calls = Array.from({ length: 5000 }, (_, i) => client.call("add", i, 1));
  await settle();
  const counts = ws.frames().map((frame) => frame.length);
  assert.ok(counts.every((n) => n >= 1 && n <= 256), counts.join(","));
  assert.deepEqual(counts, [...Array(19).fill(256), 5000 - 19 * 256]);
  const messages = ws.messages();
  assert.deepEqual(messages.map((m) => m[1]), Array.from({ length: 5000 }, (_, i) => i + 1), "call ids in order");
  // The answers come back in frames of 256 too; every call resolves.
  for (let start = 0; start < 5000; start += 256) {
    ws.deliver(...messages.slice(start, start + 256).map(([, id, , [a, b]]) => [4, id, a + b]));
  }
  assert.deepEqual(await Promise.all(calls), Array.from({ length: 5000 }, (_, i) => i + 1));
  assert.equal(client.isConnected, true);
});

test("notifications, heartbeat answers and client results are held to 256 per frame as well", async () => {
  const { client, ws } = await connected({ receiver: { double: (x) => 2 * x } });
  // One server frame of 300 client results and 300 heartbeats: 600 answers queued while it is handled.
  const frame = [];
  for (let i = 0; i < 300; i++) frame.push([7, i, "double", [i]], [9, i, 1_767_225_600_000_000]);
  ws.deliver(...frame);
  for (let i = 0; i < 300; i++) client.notify("n", i);
  await settle();
  const counts = ws.frames().map((f) => f.length);
  assert.deepEqual(counts, [256, 256, 88, 256, 44]);
  const sent = ws.messages();
  assert.equal(sent.filter((m) => m[0] === 4).length, 300);
  assert.equal(sent.filter((m) => m[0] === 10).length, 300);
  assert.deepEqual(sent.filter((m) => m[0] === 3).map((m) => m[2][0]), Array.from({ length: 300 }, (_, i) => i));
});

test("batches close before 64 KiB even when the server's max is larger; a larger message goes alone", async () => {
  const { client, ws } = await connected({ maxMessageSize: 4 * 1024 * 1024 }, { caps: ["batch"], id: "x", max: 4 * 1024 * 1024 });
  const text = "x".repeat(10_000);
  for (let i = 0; i < 20; i++) client.notify("n", text);
  client.notify("big", "y".repeat(100_000));
  client.notify("after");
  await settle();
  const sizes = ws.sent.map((f) => f.length);
  assert.ok(sizes.slice(0, -2).every((n) => n <= 64 * 1024), sizes.join(","));
  assert.deepEqual(ws.frames().map((f) => f.length), [6, 6, 6, 2, 1, 1]);
  assert.ok(sizes.at(-2) > 100_000);
});

test("a call larger than the server's max fails locally with invalid-arguments and the connection lives", async () => {
  const { client } = await connected({}, { caps: ["batch"], id: "x", max: 100 });
  await assert.rejects(client.call("big", "x".repeat(200)), (e) => e.code === "invalid-arguments");
  assert.equal(client.isConnected, true);
});

test("arguments msgpack cannot encode fail the call (or notification) locally with invalid-arguments", async () => {
  const { client, ws } = await connected();
  await assert.rejects(client.call("f", Symbol("x")), (e) => e instanceof HubError && e.code === "invalid-arguments");
  assert.throws(() => client.notify("f", () => 1), (e) => e instanceof HubError && e.code === "invalid-arguments");
  assert.throws(() => client.notify("big", "x".repeat(2 * 1024 * 1024)), /over the size limit/);
  await settle();
  assert.deepEqual(ws.messages(), []);
  assert.equal(client.isConnected, true);
});

test("a Map argument is sent as a map with its keys; Set, class instances, other typed arrays are refused locally, naming the argument", async () => {
  const { client, ws } = await connected();
  const sent = client.call("scores", new Map([[1, "ann"], ["two", 2]]), new Date(0));
  await settle();
  assert.deepEqual(ws.takeMessages(), [[2, 1, "scores", [{ 1: "ann", two: 2 }, new Date(0)]]]);
  ws.deliver([4, 1, "ok"]);
  assert.equal(await sent, "ok");
  await assert.rejects(
    client.call("tag", "x", new Set(["a"])),
    (e) => e instanceof HubError && e.code === "invalid-arguments" && e.hubMessage.startsWith("tag: args[1]: a Set cannot be sent"),
  );
  await assert.rejects(client.invoke("f", [], { when: new Float32Array(1) }), (e) => e.hubMessage.startsWith("f: kwargs.when: a Float32Array"));
  assert.throws(() => client.notify("f", { p: new (class Point {})() }), (e) => e.code === "invalid-arguments" && /args\[0\]\.p: a Point cannot be sent/.test(e.hubMessage));
  await settle();
  assert.deepEqual(ws.messages(), [], "nothing refused was sent");
  assert.equal(client.isConnected, true);
});

test("kwargs must be a plain object and args an array: a Map of kwargs or a bare argument is refused, not dropped", async () => {
  const { client, ws } = await connected();
  await assert.rejects(client.invoke("f", [], new Map([["a", 1]])), (e) => e.code === "invalid-arguments" && e.hubMessage === "f: kwargs: must be a plain object (its keys are str), got a Map");
  await assert.rejects(client.invoke("f", "solo"), (e) => e.code === "invalid-arguments" && e.hubMessage === "f: args: must be an array, got string");
  assert.throws(() => client.notifyWith("f", [], [1]), (e) => e.code === "invalid-arguments" && /kwargs: must be a plain object/.test(e.hubMessage));
  client.invoke("f", [1], {});
  client.notifyWith("g", [], null);
  await settle();
  assert.deepEqual(ws.messages(), [[2, 3, "f", [1]], [3, "g", []]]);
});

test("a client result msgpack cannot carry answers internal, and the connection stays", async () => {
  const errors = [];
  const { client, ws } = await connected({ receiver: { tags: () => new Set(["a"]) }, log: { ...quietLog, error: (m) => errors.push(m) } });
  ws.deliver([7, 3, "tags", []]);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[5, 3, "internal", "result cannot be encoded", null]]);
  assert.deepEqual(errors, ["a client result cannot be encoded"]);
  assert.equal(client.isConnected, true);
});

test("receiver calls reach the receiver object, keyword arguments as a last argument", async () => {
  const heard = [];
  const receiver = {
    said: (room, user, text) => heard.push(["said", room, user, text]),
    moved: (kwargs) => heard.push(["moved", kwargs]),
  };
  const { ws } = await connected({ receiver });
  ws.deliver([6, "said", ["lobby", "ann", "hi"]], [6, "moved", [], { room: "b" }], [6, "missing", []], [6, "toString", []]);
  assert.deepEqual(heard, [
    ["said", "lobby", "ann", "hi"],
    ["moved", { room: "b" }],
  ]);
});

test("a receiver that throws is logged and the connection stays open", async () => {
  const errors = [];
  const log = { ...quietLog, error: (m) => errors.push(m) };
  const { client, ws } = await connected({ receiver: { boom: () => { throw new Error("x"); } }, log });
  ws.deliver([6, "boom", []]);
  assert.equal(client.isConnected, true);
  assert.deepEqual(errors, ["receiver method boom raised"]);
});

test("client results: RESULT for a value or a promise, ERROR for a HubError, unknown-method, internal", async () => {
  const receiver = {
    confirm: (question) => question === "quit?",
    later: async (x) => x * 2,
    refuse: () => {
      throw new HubError("no", "not now", [1]);
    },
    broken: () => {
      throw new TypeError("bug");
    },
  };
  const { ws } = await connected({ receiver, log: quietLog });
  ws.deliver([7, 1, "confirm", ["quit?"]], [7, 2, "later", [21]], [7, 3, "refuse", []], [7, 4, "nope", []], [7, 5, "broken", []]);
  await settle();
  const answers = ws.messages().sort((a, b) => a[1] - b[1]);
  assert.deepEqual(answers, [
    [4, 1, true],
    [4, 2, 42],
    [5, 3, "no", "not now", [1]],
    [5, 4, "unknown-method", "the client has no method 'nope'", null],
    [5, 5, "internal", "internal error", null],
  ]);
});

test("server heartbeats are answered from the message handler, batched with what the frame produced", async () => {
  const events = [];
  const { ws } = await connected({ receiver: { q: () => 1 }, onServerHeartbeat: (e) => events.push(e) });
  ws.deliver([7, 1, "q", []], [9, 7, 1767225600000000, null], [9, 8, 1767225601000000, new Uint8Array([1, 2])]);
  // Answered synchronously, before any timer or microtask could run.
  assert.deepEqual(ws.frames(), [[[4, 1, 1], [10, 7], [10, 8]]]);
  assert.equal(events.length, 2);
  assert.equal(events[0].serverTime.toISOString(), "2026-01-01T00:00:00.000Z");
  assert.deepEqual(events[1].metadata, new Uint8Array([1, 2]));
});

test("our heartbeat: sent every interval, the answer gives round trip and clock offset", async () => {
  const responses = [];
  const { client, ws } = await connected({ heartbeatInterval: 1000, onHeartbeatResponse: (e) => responses.push(e) });
  clock.advance(999);
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  clock.advance(1);
  await settle();
  const [[kind, sequence, clientTime]] = ws.takeMessages();
  assert.deepEqual([kind, sequence], [11, 1]);
  assert.equal(clientTime, clock.now() * 1000);
  clock.advance(40); // answered 40 ms later; the server's clock is 500 ms ahead, stamped mid-way
  ws.deliver([12, 1, clientTime, (clock.now() - 20 + 500) * 1000]);
  assert.equal(responses.length, 1);
  assert.equal(responses[0].roundTrip, 40);
  assert.deepEqual(responses[0].clock, { offset: 500, error: 20, roundTrip: 40 });
  assert.equal(client.roundTrip, 40);
  assert.equal(client.serverNow().getTime(), clock.now() + 500);
});

test("the clock offset is the lowest-round-trip sample of the last 8", async () => {
  const { client, ws } = await connected({ heartbeatInterval: 1000 });
  const delays = [80, 10, 60, 70, 90, 30, 50, 40, 20, 100];
  for (const [i, delay] of delays.entries()) {
    clock.advance(i === 0 ? 1000 : 1000 - delays[i - 1]);
    await settle();
    const [[, seq, t]] = ws.takeMessages();
    clock.advance(delay);
    ws.deliver([12, seq, t, (clock.now() + i) * 1000]); // offsets differ per sample
  }
  // The 10 ms sample fell out of the window of 8; the best left is the 20 ms one (i = 8).
  assert.equal(client.clockOffset.roundTrip, 20);
});

for (const factor of [1.2, 2.5]) {
  test(`answers ${factor}x the interval late (below the timeout) never time out over 100 intervals`, async () => {
    const interval = 1000;
    const { client, ws } = await connected({ heartbeatInterval: interval, heartbeatTimeout: 3000 });
    const inFlight = [];
    let answered = 0;
    for (let step = 0; step < 100 * 10; step++) {
      clock.advance(interval / 10);
      await settle();
      for (const [kind, seq, t] of ws.takeMessages()) if (kind === 11) inFlight.push({ seq, t, due: clock.now() + interval * factor });
      while (inFlight.length > 0 && inFlight[0].due <= clock.now()) {
        const beat = inFlight.shift();
        ws.deliver([12, beat.seq, beat.t, clock.now() * 1000]);
        answered++;
      }
      assert.equal(client.isConnected, true, `dropped at step ${step}`);
    }
    assert.ok(answered >= 95, `${answered} answers`);
    assert.ok(client.roundTrip >= interval * factor - 100);
  });
}

test("a server that stops answering is dropped within interval + timeout: CLOSE, close 4001, timed-out", async () => {
  let hook = 0;
  const { client, ws } = await connected({ heartbeatInterval: 1000, heartbeatTimeout: 3000, onHeartbeatTimeout: () => hook++ });
  const start = clock.now();
  const pending = client.call("never");
  let reason = null;
  client.waitForDisconnect().then((r) => (reason = r));
  for (let t = 0; t < 5000 && client.isConnected; t += 10) clock.advance(10);
  await settle();
  assert.equal(clock.now() - start, 4000); // first beat at 1 s + 3 s timeout
  assert.deepEqual(reason, { kind: "timed-out", code: 4001, message: "the server did not answer our heartbeat", locally: true });
  assert.equal(hook, 1);
  assert.deepEqual(ws.messages().at(-1), [8, 4001, "heartbeat timeout"]);
  assert.deepEqual(ws.closedWith, { code: 4001, reason: "heartbeat timeout" });
  await assert.rejects(pending, (e) => e instanceof ConnectionClosedError && e.reason.kind === "timed-out");
});

/**
 * A client beating 1 s / 3 s uploading 2.7 MB through a link taking
 * `rate` bytes/s until `stopsAt` ms (then nothing): the fake socket's
 * bufferedAmount is what is not yet taken; the server never answers (its
 * answers would wait behind the upload).  Returns when the client gave up.
 */
async function uploadThroughSlowLink(stopsAt, until = 30_000) {
  const { client, ws } = await connected({ heartbeatInterval: 1000, heartbeatTimeout: 3000 });
  const start = clock.now();
  let sent = 0;
  const send = ws.send.bind(ws);
  ws.send = (data) => {
    sent += data.length;
    send(data);
  };
  Object.defineProperty(ws, "bufferedAmount", {
    get: () => Math.max(0, sent - Math.floor((200_000 * (Math.min(clock.now(), start + stopsAt) - start)) / 1000)),
  });
  for (let i = 0; i < 3; i++) client.call("upload", new Uint8Array(900_000)).catch(() => {});
  await settle();
  for (let t = 0; t < until && client.isConnected; t += 10) clock.advance(10);
  await settle();
  return { client, ws, elapsed: clock.now() - start };
}

test("progress counts as life: a server taking our upload is kept though our beats wait behind it", async () => {
  // 13 s of the 13.5 s upload: every beat from 1 s on is behind it, unanswered (the old rule: dropped at 4 s).
  const { client, ws, elapsed } = await uploadThroughSlowLink(Infinity, 13_000);
  assert.equal(elapsed, 13_000);
  assert.equal(client.isConnected, true);
  assert.equal(client.timeoutsAvoided, 1);
  // The upload is through: the answers arrive.
  const beat = ws.messages().filter((m) => m[0] === 11).at(-2);
  ws.deliver([12, beat[1], beat[2], clock.now() * 1000]);
  await settle();
  assert.equal(client.isConnected, true);
  assert.ok(client.roundTrip > 0);
});

test("progress counts as life: once the upload stops moving the server is dropped within interval + timeout", async () => {
  const { client, elapsed } = await uploadThroughSlowLink(6_300);
  assert.equal(client.isConnected, false);
  assert.equal(client.disconnectReason.kind, "timed-out");
  assert.ok(elapsed > 6_300 && elapsed <= 6_300 + 1000 + 3000, `dropped at ${elapsed} ms`);
});

/** Node's `ws`, as far as the client sees it: an EventEmitter whose "upgrade" event gives the socket. */
class FakeNodeWebSocket extends FakeWebSocket {
  on(name, listener) {
    if (name === "upgrade") this.upgradeListener = listener;
  }
  /** The handshake's response arrived on `socket` (before "open", as in `ws`). */
  upgrade(socket) {
    this.upgradeListener?.({ socket });
  }
}

/**
 * A client beating 1 s / 3 s downloading three 900,000-byte results through
 * a link passing `rate` bytes/s until `stopsAt` ms (then nothing), on Node's
 * `ws`: the fake socket (from the "upgrade" event) counts the bytes read, a
 * result is delivered once all its bytes arrived, and the answers to our
 * beats wait behind the results.  `upgrade: false` plays a browser (no socket
 * to read).  Returns when the client gave up or `until` passed.
 */
async function downloadThroughSlowLink(stopsAt, { until = 30_000, rate = 200_000, upgrade = true } = {}) {
  const size = 900_000;
  const WebSocket = upgrade ? FakeNodeWebSocket : FakeWebSocket;
  const ready = connect("ws://127.0.0.1:1/hub", "chat", options({ WebSocket, heartbeatInterval: 1000, heartbeatTimeout: 3000 }));
  const ws = FakeWebSocket.latest();
  let start = clock.now();
  const socket = { get bytesRead() { return Math.floor((rate * Math.max(0, Math.min(clock.now(), start + stopsAt) - start)) / 1000); } };
  if (upgrade) ws.upgrade(socket);
  ws.open();
  ws.welcome({ caps: ["heartbeat", "batch"], id: "c-1", max: 4 * 1048576 });
  const client = await ready;
  start = clock.now();
  const results = [];
  for (let i = 0; i < 3; i++) client.call("download", i).then((value) => results.push(value.length), () => {});
  await settle();
  let delivered = 0;
  for (let t = 0; t < until && client.isConnected; t += 10) {
    clock.advance(10);
    if (delivered < 3 && socket.bytesRead >= (delivered + 1) * size) {
      delivered += 1;
      ws.deliver([4, delivered, new Uint8Array(size)]);
    }
    await settle();
  }
  await settle();
  return { client, ws, results, elapsed: clock.now() - start };
}

test("progress counts as life, in Node's ws: a server still sending the message our answer waits behind is kept", async () => {
  // 13.5 s of download, each result 4.5 s long: every beat's answer waits behind one (the old rule: dropped at 4 s).
  const { client, ws, results } = await downloadThroughSlowLink(Infinity, { until: 13_600 });
  assert.deepEqual(results, [900_000, 900_000, 900_000]);
  assert.equal(client.isConnected, true);
  assert.ok(client.timeoutsAvoided >= 1);
  const beat = ws.messages().filter((m) => m[0] === 11).at(-1);
  ws.deliver([12, beat[1], beat[2], clock.now() * 1000]);
  await settle();
  assert.ok(client.roundTrip > 0);
});

test("progress counts as life, in Node's ws: once the download stops moving the server is dropped within interval + timeout", async () => {
  const { client, results, elapsed } = await downloadThroughSlowLink(6_300);
  assert.deepEqual(results, [900_000]);
  assert.equal(client.isConnected, false);
  assert.equal(client.disconnectReason.kind, "timed-out");
  assert.ok(elapsed > 6_300 && elapsed <= 6_300 + 1000 + 3000, `dropped at ${elapsed} ms`);
});

test("progress counts as life: without a socket to read (a browser) a half-received message is not seen", async () => {
  const { client, elapsed } = await downloadThroughSlowLink(Infinity, { upgrade: false });
  assert.equal(client.disconnectReason.kind, "timed-out");
  assert.ok(elapsed <= 1000 + 3000 + 10, `dropped at ${elapsed} ms`);
});

test("progress counts as life, in Node's ws: small whole messages arriving are no progress (a server that never answers is dropped)", async () => {
  const ready = connect("ws://127.0.0.1:1/hub", "chat", options({ WebSocket: FakeNodeWebSocket, heartbeatInterval: 1000, heartbeatTimeout: 3000 }));
  const ws = FakeWebSocket.latest();
  let read = 0;
  ws.upgrade({ get bytesRead() { return read; } });
  ws.open();
  ws.welcome();
  const client = await ready;
  const start = clock.now();
  // 5 KB of whole receiver calls every 100 ms, each read as it is delivered; no answer to any beat.
  for (let t = 0; t < 10_000 && client.isConnected; t += 100) {
    clock.advance(100);
    read += 5_000;
    ws.deliver([6, "news", ["x".repeat(4_990)]]);
    await settle();
  }
  assert.equal(client.disconnectReason?.kind, "timed-out");
  assert.ok(clock.now() - start <= 1000 + 3000 + 100, `dropped at ${clock.now() - start} ms`);
});

/**
 * A client beating 1 s / 3 s that hands 3 MB to a socket whose kernel took it
 * all (bufferedAmount 0: nothing to see), or sends nothing (`upload: false`);
 * the server's own heartbeats arrive every second until `beatsStopAt` ms, and
 * our beats are never answered.  Returns when the client gave up or 20 s passed.
 */
async function serverBeatsWhileUploading(beatsStopAt, { upload = true } = {}) {
  const { client } = await connected({ heartbeatInterval: 1000, heartbeatTimeout: 3000 });
  const ws = FakeWebSocket.latest();
  Object.defineProperty(ws, "bufferedAmount", { get: () => 0 });
  const start = clock.now();
  // Beat 1 goes out before the upload, its answer comes after the upload was handed over:
  // the upload is still ahead of every later beat.
  clock.advance(1000);
  await settle();
  const [first] = ws.takeMessages().filter((m) => m[0] === 11);
  if (upload) for (let i = 0; i < 3; i++) client.call("upload", new Uint8Array(1_000_000)).catch(() => {});
  await settle();
  ws.deliver([12, first[1], first[2], clock.now() * 1000]);
  await settle();
  for (let t = 1010; t <= 20_000 && client.isConnected; t += 10) {
    clock.advance(10);
    if (t % 1000 === 0 && t < beatsStopAt) ws.deliver([9, t / 1000, 1, null]);
    await settle();
  }
  return { client, elapsed: clock.now() - start };
}

test("progress counts as life: server heartbeats arriving while our upload sits in the kernel keep the server", async () => {
  const { client, elapsed } = await serverBeatsWhileUploading(Infinity);
  assert.equal(elapsed, 20_000);
  assert.equal(client.isConnected, true);
  assert.equal(client.timeoutsAvoided, 1);
});

test("progress counts as life: once the server's heartbeats stop, the uploading client drops it within interval + timeout", async () => {
  const { client, elapsed } = await serverBeatsWhileUploading(8_500);
  assert.equal(client.disconnectReason.kind, "timed-out");
  assert.ok(elapsed > 8_000 && elapsed <= 8_000 + 1000 + 3000, `dropped at ${elapsed} ms`);
});

test("progress counts as life: server heartbeats do not excuse unanswered beats when we are not uploading", async () => {
  const { client, elapsed } = await serverBeatsWhileUploading(Infinity, { upload: false });
  assert.equal(client.disconnectReason.kind, "timed-out");
  assert.ok(elapsed <= 2000 + 3000 + 10, `dropped at ${elapsed} ms`);
});

test("stall awareness: a timeout that fires late after our loop was blocked gets one more exchange", async () => {
  const { client, ws } = await connected({ heartbeatInterval: 1000, heartbeatTimeout: 2000 });
  clock.advance(1000); // beat 1 sent
  await settle();
  clock.block(5000); // the page was busy: no timer ran for 5 s
  clock.advance(0); // the beat and timeout timers now fire, late
  await settle();
  assert.equal(client.isConnected, true);
  const beats = ws.takeMessages().filter((m) => m[0] === 11);
  assert.ok(beats.length >= 1, "a fresh heartbeat goes out for the grace exchange");
  // The answer to the grace beat was unread in the socket: it arrives now.
  const last = beats.at(-1);
  ws.deliver([12, last[1], last[2], clock.now() * 1000]);
  // From then on a server that answers keeps the connection.
  for (let t = 0; t < 10_000; t += 100) {
    clock.advance(100);
    await settle();
    for (const [kind, seq, time] of ws.takeMessages()) if (kind === 11) ws.deliver([12, seq, time, clock.now() * 1000]);
  }
  assert.equal(client.isConnected, true);
});

test("stall awareness gives one exchange only: a server that is really gone is still dropped", async () => {
  const { client } = await connected({ heartbeatInterval: 1000, heartbeatTimeout: 2000 });
  clock.advance(1000);
  clock.block(5000);
  const blockedUntil = clock.now();
  clock.advance(0);
  assert.equal(client.isConnected, true);
  for (let t = 0; t < 10_000 && client.isConnected; t += 10) clock.advance(10);
  assert.equal(client.disconnectReason.kind, "timed-out");
  assert.ok(clock.now() - blockedUntil <= 2000 + 10, `${clock.now() - blockedUntil} ms after the stall`);
});

test("stallGrace: false drops at once after a stall", async () => {
  const { client } = await connected({ heartbeatInterval: 1000, heartbeatTimeout: 2000, stallGrace: false });
  clock.advance(1000);
  clock.block(5000);
  clock.advance(0);
  assert.equal(client.disconnectReason?.kind, "timed-out");
});

test("anyTrafficCounts: data received since the oldest unanswered beat counts as life", async () => {
  const { client, ws } = await connected({ heartbeatInterval: 1000, heartbeatTimeout: 2000, anyTrafficCounts: true });
  for (let i = 0; i < 20; i++) {
    clock.advance(500);
    ws.deliver([6, "tick", []]);
  }
  assert.equal(client.isConnected, true);
  clock.advance(5000);
  assert.equal(client.disconnectReason?.kind, "timed-out");
});

test("no heartbeat is sent to a server that did not announce the capability", async () => {
  const { ws } = await connected({ heartbeatInterval: 100 }, { caps: ["batch"], id: "x" });
  clock.advance(1000);
  await settle();
  assert.deepEqual(ws.messages(), []);
});

const CLOSES = [
  [[8, 4001, "heartbeat timeout"], 4001, "peer-timed-out"],
  [[8, 4000, "bye"], 4000, "kicked"],
  [[8, 1001, "server shutting down"], 1001, "going-away"],
  [[8, 4002, "bad"], 4002, "protocol-error"],
  [[8, 1008, "more than 1024 messages in one frame"], 1008, "protocol-error"],
];
for (const [message, code, kind] of CLOSES) {
  test(`CLOSE ${code} then the close frame: the reason kind is ${kind}`, async () => {
    const { client, ws } = await connected();
    const call = client.call("x");
    await settle();
    ws.deliver(message);
    assert.throws(() => client.notify("after"), ConnectionClosedError);
    ws.serverClose(1006); // the close frame was lost on the way: CLOSE still tells why
    const reason = await client.waitForDisconnect();
    assert.deepEqual(reason, { kind, code, message: message[2], locally: false });
    await assert.rejects(call, (e) => e.code === "disconnected");
  });
}

test("close codes without CLOSE map to the same kinds as Python; 1006 is connection-lost", async () => {
  for (const [code, kind] of [[1000, "normal"], [1001, "going-away"], [4000, "kicked"], [4001, "peer-timed-out"], [4004, "slow-consumer"], [1009, "message-too-big"], [1008, "protocol-error"], [1003, "protocol-error"], [4002, "protocol-error"], [1006, "connection-lost"], [4999, "normal"]]) {
    const { client, ws } = await connected();
    ws.serverClose(code, "r");
    const reason = await client.waitForDisconnect();
    assert.equal(reason.kind, kind, `code ${code}`);
  }
});

test("an invalid frame closes with 4002, rejects pending calls, and reports protocol-error", async () => {
  let disconnected = null;
  const { client, ws } = await connected({ onDisconnected: (r) => (disconnected = r) });
  const call = client.call("x");
  await settle();
  ws.deliverBytes(Uint8Array.from([0x92, 0x19, 0x01]));
  assert.equal(ws.closedWith.code, 4002);
  assert.match(ws.closedWith.reason, /unknown message kind 25/);
  ws.serverClose(4002);
  await assert.rejects(call, ConnectionClosedError);
  assert.equal(disconnected.kind, "protocol-error");
  assert.equal(disconnected.locally, true);
});

test("a frame of more than maxMessagesPerFrame messages (default 1,024): none runs, close 1008, protocol-error", async () => {
  const heard = [];
  const receiver = { said: (i) => heard.push(i) };
  const { client, ws } = await connected({ receiver });
  ws.deliver(...Array.from({ length: 1024 }, (_, i) => [6, "said", [i]]));
  assert.equal(heard.length, 1024, "1,024 are taken");
  assert.equal(ws.closedWith, null);
  const call = client.call("x");
  await settle();
  ws.deliver(...Array.from({ length: 1025 }, (_, i) => [6, "said", [i]]));
  assert.equal(heard.length, 1024, "none of the 1,025 ran");
  assert.deepEqual(ws.closedWith, { code: 1008, reason: "more than 1024 messages in one frame" });
  ws.serverClose(1008);
  await assert.rejects(call, ConnectionClosedError);
  assert.deepEqual(await client.waitForDisconnect(), {
    kind: "protocol-error", code: 1008, message: "more than 1024 messages in one frame", locally: true,
  });
  const small = await connected({ receiver, maxMessagesPerFrame: 2 });
  small.ws.deliver([6, "said", [1]], [6, "said", [2]], [6, "said", [3]]);
  assert.equal(small.ws.closedWith.code, 1008);
  for (const bad of [0, -1, 1.5, "2"]) {
    assert.throws(() => new HubClient("ws://127.0.0.1:1/hub/chat", options({ maxMessagesPerFrame: bad })), RangeError);
  }
});

test("the WebSocket layer failing the connection (ws: an error with a status code) is our decision, reported at once", async () => {
  class TerminableSocket extends FakeWebSocket {
    terminate() {
      this.terminated = clock.now();
      this.serverClose(1006);
    }
  }
  const { client, ws } = await connected({ WebSocket: TerminableSocket });
  const call = client.call("x");
  await settle();
  const failure = new RangeError("Invalid WebSocket frame: invalid UTF-8 sequence");
  failure[Symbol("status-code")] = 1007; // as ws marks its receiver's errors
  ws.close(1007); // ws sends its close frame, then reports the error
  const started = clock.now();
  ws.onerror({ error: failure, message: failure.message });
  await assert.rejects(call, ConnectionClosedError);
  assert.deepEqual(await client.waitForDisconnect(), {
    kind: "protocol-error", code: 1007, message: "Invalid WebSocket frame: invalid UTF-8 sequence", locally: true,
  });
  assert.equal(ws.terminated, undefined, "the close frame is given a second to go out");
  clock.advance(1000);
  assert.equal(ws.terminated, started + 1000, "then the socket is ended: its answer cannot be read");
  // An error without a status code (browsers, network errors) changes nothing by itself.
  const other = await connected();
  other.ws.onerror({ message: "socket hang up" });
  assert.equal(other.client.isConnected, true);
});

test("a close frame without a code (1005) is a normal close, reported with 1005", async () => {
  const { client, ws } = await connected();
  ws.serverClose(1005);
  assert.deepEqual(await client.waitForDisconnect(), { kind: "normal", code: 1005, message: "", locally: false });
});

test("a text frame is closed with 1003", async () => {
  const { client, ws } = await connected();
  ws.onmessage({ data: "hello" });
  assert.equal(ws.closedWith.code, 1003);
  ws.serverClose(1003);
  assert.equal((await client.waitForDisconnect()).kind, "protocol-error");
});

test("a message over our maxMessageSize closes with 1009, message-too-big", async () => {
  const { client, ws } = await connected({ maxMessageSize: 64 });
  ws.deliver([6, "big", ["x".repeat(100)]]);
  assert.equal(ws.closedWith.code, 1009);
  ws.serverClose(1006);
  assert.equal((await client.waitForDisconnect()).kind, "message-too-big");
});

test("disconnect() closes with 1000 and resolves with a normal, local reason", async () => {
  const { client, ws } = await connected();
  const sent = client.call("sent");
  await settle();
  const closing = client.disconnect("done");
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "done" });
  ws.serverClose(1000, "done");
  assert.deepEqual(await closing, { kind: "normal", code: 1000, message: "done", locally: true });
  await assert.rejects(sent, (e) => e instanceof ConnectionClosedError && e.mayHaveRun === true && /may have run/.test(e.message));
  await assert.rejects(client.call("x"), (e) => e instanceof ConnectionClosedError && e.mayHaveRun === false);
});

test("proxy<T>() turns property calls into hub calls", async () => {
  const { client, ws } = await connected();
  const chat = client.proxy();
  const joined = chat.join("lobby", "ann");
  await settle();
  assert.deepEqual(ws.takeMessages(), [[2, 1, "join", ["lobby", "ann"]]]);
  ws.deliver([4, 1, 3]);
  assert.equal(await joined, 3);
  assert.equal(chat.then, undefined, "a proxy is not mistaken for a promise");
});

test("bad options are refused with the option's name", () => {
  assert.throws(() => new HubClient("ws://x/hub", options({ heartbeatInterval: 0 })), /heartbeatInterval must be a finite number > 0/);
  assert.throws(() => new HubClient("ws://x/hub", options({ heartbeatTimeout: -1 })), /heartbeatTimeout/);
});

test("without a WebSocket constructor the error says what to pass", () => {
  assert.throws(() => new HubClient("ws://x/hub", { clock, log: quietLog }), /pass options.WebSocket/);
});

test("heartbeat callbacks that throw are logged and the connection stays", async () => {
  const errors = [];
  const { client, ws } = await connected({
    log: { ...quietLog, error: (m) => errors.push(m) },
    onServerHeartbeat: () => {
      throw new Error("x");
    },
  });
  ws.deliver([9, 1, 1, null]);
  assert.deepEqual(ws.messages(), [[10, 1]]);
  assert.deepEqual(errors, ["client callback onServerHeartbeat raised"]);
  assert.equal(client.isConnected, true);
});

test("DisconnectKind has the same strings as Python's", () => {
  assert.deepEqual(Object.values(DisconnectKind).sort(), [
    "connection-lost", "going-away", "handshake-failed", "kicked", "message-too-big",
    "normal", "peer-timed-out", "protocol-error", "slow-consumer", "timed-out", "token-expired",
  ]);
});

test("with Node's `ws` (binaryType nodebuffer) frames are read as Buffers, not converted", async () => {
  const ready = connect("ws://127.0.0.1:1/hub", "chat", options());
  const ws = FakeWebSocket.latest();
  ws.binaryType = "nodebuffer";
  ws.open();
  assert.equal(ws.binaryType, "nodebuffer");
  ws.onmessage({ data: Buffer.from([0x92, 0x01, 0x80]) }); // [1, {}]: WELCOME
  const client = await ready;
  const call = client.call("x");
  await settle();
  ws.onmessage({ data: Buffer.from([0x93, 0x04, 0x01, 0xc4, 0x01, 0x07]) }); // [4, 1, b"\x07"]
  const value = await call;
  assert.equal(value.constructor, Uint8Array, "bin values are plain Uint8Arrays, as in browsers");
  assert.deepEqual([...value], [7]);
});

test("resume messages and heartbeat acks are still protocol errors: this client does not announce resume", async () => {
  const token = Array.from({ length: 32 }, (_, i) => i);
  const frames = [
    [0x93, 0x14, 0xc4, 0x20, ...token, 0x01], // [20, token, 1]
    [0x94, 0x16, 0x01, 0xc4, 0x20, ...token, 0xa1, 0x63], // [22, 1, token, "c"]
    [0x93, 0x17, 0xa1, 0x78, 0xa0], // [23, "x", ""]
    [0x92, 0x18, 0x01], // [24, 1]
    [0x95, 0x0c, 0x01, 0x02, 0x03, 0x04], // [12, 1, 2, 3, 4]: CLIENT_HEARTBEAT_ACK with an ack
  ];
  for (const bytes of frames) {
    FakeWebSocket.instances = [];
    const { ws } = await connected();
    ws.deliverBytes(Uint8Array.from(bytes));
    assert.equal(ws.closedWith.code, 4002, `frame ${bytes.slice(0, 2)}`);
    assert.match(ws.closedWith.reason, /resume/);
  }
});
