// The Node client against a real `twistd -n hub` (the demo hubs), over loopback.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { connect, HubError, HandshakeError, ReconnectingHubClient, CallTimeoutError, UnsendableValueError } from "../../dist/index.js";
import { ExtData } from "@msgpack/msgpack";
import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { HubProcess } from "../hub-process.mjs";
import { namedBlocks } from "../docs-md.mjs";

/** Every test and hook is bounded (node --test has no default timeout). */
const BOUNDED = { timeout: 60000 };
const quietLog = { debug() {}, info() {}, warn() {}, error() {} };
let hub;

before(async () => {
  hub = await HubProcess.start(["--heartbeat-interval", "0.3", "--heartbeat-timeout", "0.9"]);
}, BOUNDED);
after(async () => {
  await hub?.stop();
}, BOUNDED);

function open(hubName, options = {}) {
  return connect(hub.url, hubName, { WebSocket, log: quietLog, ...options });
}

/** A promise and the function that resolves it. */
function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

test("calls: results, bytes, typed errors, keyword arguments, proxy", BOUNDED, async () => {
  const client = await open("echo");
  try {
    assert.equal(await client.call("add", 2, 3), 5);
    assert.deepEqual(await client.call("echo", new Uint8Array([0, 255])), new Uint8Array([0, 255]));
    assert.deepEqual(await client.call("echo", { nested: [1, "two", null, true] }), { nested: [1, "two", null, true] });
    await assert.rejects(client.call("fail", "no-way", "not today"), (e) => e instanceof HubError && e.code === "no-way" && e.hubMessage === "not today");
    await assert.rejects(client.call("add", "x", 1), (e) => e.code === "invalid-arguments");
    await assert.rejects(client.call("nope"), (e) => e.code === "unknown-method");
    assert.equal(await client.invoke("fail", [], { code: "kw", message: "by keyword" }).catch((e) => e.code), "kw");
    const echo = client.proxy();
    assert.equal(await echo.add(40, 2), 42);
    assert.equal(await echo.whoami(), client.connectionId);
    // 100 calls in flight, answered by id.
    const many = await Promise.all(Array.from({ length: 100 }, (_, i) => client.call("add", i, 1)));
    assert.deepEqual(many, Array.from({ length: 100 }, (_, i) => i + 1));
  } finally {
    await client.disconnect();
  }
});

test("values round-trip through the echo hub as docs/javascript.md says; what msgpack cannot carry is refused before sending", BOUNDED, async () => {
  const client = await open("echo");
  try {
    const echo = (value) => client.call("echo", value);
    // As they are.
    for (const value of [null, true, 0, -1, 2 ** 40, 1.5, -0, NaN, "é€😀", "x".repeat(70000), new Uint8Array([0, 255]), [1, [2, [3]]], { a: { b: [null] } }]) {
      assert.deepEqual(await echo(value), value, String(value).slice(0, 30));
    }
    assert.ok(Object.is(await echo(-0), -0), "-0 stays -0");
    assert.deepEqual(await echo(new Date(1_767_225_600_123)), new Date(1_767_225_600_123));
    assert.deepEqual(await echo(new ExtData(7, new Uint8Array([1, 2]))), new ExtData(7, new Uint8Array([1, 2])));
    // As documented: a Map comes back as an object (keys as strings), byte containers as Uint8Array,
    // undefined as null, a bigint as a number.
    assert.deepEqual(await echo(new Map([[1, "one"], ["two", new Map([[true, 2]])]])), { 1: "one", two: { true: 2 } });
    assert.deepEqual(await echo(new Uint8Array([1, 2]).buffer), new Uint8Array([1, 2]));
    assert.deepEqual(await echo(new DataView(new Uint8Array([1, 2, 3]).buffer, 1)), new Uint8Array([2, 3]));
    assert.deepEqual(await echo([undefined, { u: undefined }]), [null, { u: null }]);
    assert.equal(await echo(2n ** 40n), 2 ** 40);
    // Refused locally, the connection untouched.
    for (const value of [new Set([1]), new Float64Array([1]), new (class Point {})(), "\uD800"]) {
      await assert.rejects(echo(value), (e) => e instanceof HubError && e.code === "invalid-arguments" && /args\[0\]: /.test(e.hubMessage));
    }
    assert.throws(() => client.notify("echo", new Set()), (e) => e.code === "invalid-arguments");
    assert.equal(await client.call("add", 1, 2), 3);
    assert.equal(client.isConnected, true);
  } finally {
    await client.disconnect();
  }
  assert.ok(UnsendableValueError.prototype instanceof TypeError);
});

test("5,000 calls made in one turn all answer (the client splits them into frames of at most 256)", BOUNDED, async () => {
  let disconnected = null;
  const client = await open("echo", { onDisconnected: (reason) => (disconnected = reason) });
  try {
    const results = await Promise.all(Array.from({ length: 5000 }, (_, i) => client.call("add", i, 1)));
    assert.deepEqual(results, Array.from({ length: 5000 }, (_, i) => i + 1));
    assert.equal(client.isConnected, true, JSON.stringify(disconnected));
  } finally {
    await client.disconnect();
  }
});

test("receivers across two clients: a broadcast from one reaches the other", BOUNDED, async () => {
  const heard = deferred();
  const ann = await open("chat", { receiver: { said: (room, user, text) => heard.resolve([room, user, text]), joined() {} } });
  const bob = await open("chat", { receiver: { said() {}, joined() {} } });
  try {
    assert.equal(await ann.call("join", "lobby-a", "ann"), 1);
    assert.equal(await bob.call("join", "lobby-a", "bob"), 2);
    assert.equal(await bob.call("say", "lobby-a", "hi ann"), 2);
    assert.deepEqual(await heard.promise, ["lobby-a", "bob", "hi ann"]);
  } finally {
    await ann.disconnect();
    await bob.disconnect();
  }
});

test("client results: the hub asks our receiver and gets its answer (sync, async, error)", BOUNDED, async () => {
  const receiver = {
    confirm: (question) => `yes to ${question}`,
    later: async (n) => n * 2,
    refuse: () => {
      throw new HubError("refused", "no thanks");
    },
  };
  const client = await open("echo", { receiver });
  try {
    assert.equal(await client.call("ask", "confirm", "quit?"), "yes to quit?");
    assert.equal(await client.call("ask", "later", 21), 42);
    await assert.rejects(client.call("ask", "refuse"), (e) => e.code === "refused");
    await assert.rejects(client.call("ask", "missing"), (e) => e.code === "unknown-method");
  } finally {
    await client.disconnect();
  }
});

test("heartbeats both ways: server beats are answered, ours give a round trip and a clock offset", BOUNDED, async () => {
  const serverBeats = [];
  const responses = [];
  const enough = deferred();
  const client = await open("echo", {
    heartbeatInterval: 100,
    onServerHeartbeat: (e) => {
      serverBeats.push(e);
      if (serverBeats.length >= 3 && responses.length >= 3) enough.resolve();
    },
    onHeartbeatResponse: (e) => {
      responses.push(e);
      if (serverBeats.length >= 3 && responses.length >= 3) enough.resolve();
    },
  });
  try {
    assert.deepEqual(client.welcome.heartbeat, [0.3, 0.9]);
    await enough.promise;
    assert.ok(serverBeats[1].sequence > serverBeats[0].sequence);
    assert.ok(Math.abs(serverBeats[0].serverTime.getTime() - Date.now()) < 5000);
    assert.ok(responses.every((r) => r.roundTrip >= 0 && r.roundTrip < 1000));
    // Same machine, same clock: the offset is within its own error bound (plus clock resolution).
    const best = client.clockOffset;
    assert.ok(Math.abs(best.offset) <= best.error + 2, JSON.stringify(best));
    assert.ok(Math.abs(client.serverNow().getTime() - Date.now()) < 50);
    assert.equal(client.isConnected, true);
  } finally {
    await client.disconnect();
  }
});

test("a client that cannot answer in time (blocked event loop) learns the server timed it out: 4001, peer-timed-out", BOUNDED, async () => {
  const client = await open("echo");
  const end = Date.now() + 2000; // the server's timeout is 0.9 s
  while (Date.now() < end) {
    // busy: no message handler runs
  }
  const reason = await client.waitForDisconnect();
  assert.equal(reason.kind, "peer-timed-out");
  assert.equal(reason.code, 4001);
  assert.equal(reason.locally, false);
});

test("an unknown hub is refused at the handshake with its HTTP status", BOUNDED, async () => {
  await assert.rejects(open("no-such-hub"), (e) => e instanceof HandshakeError && e.status === 404);
});

test("a call timeout fails only that call", BOUNDED, async () => {
  const client = await open("echo", { receiver: { stall: () => new Promise(() => {}) } });
  try {
    await assert.rejects(client.invoke("ask", ["stall"], null, { timeout: 200 }), CallTimeoutError);
    assert.equal(await client.call("add", 1, 1), 2);
  } finally {
    await client.disconnect();
  }
});

test("our heartbeat detects a frozen server: timed-out within interval + timeout; the thawed server records peer-timed-out", BOUNDED, async () => {
  const frozen = await HubProcess.start(["--log-level", "debug"]);
  const timedOut = deferred();
  const client = await connect(frozen.url, "echo", {
    WebSocket,
    log: quietLog,
    heartbeatInterval: 200,
    heartbeatTimeout: 600,
    onHeartbeatTimeout: () => timedOut.resolve(Date.now()),
  });
  try {
    const stoppedAt = Date.now();
    frozen.signal("SIGSTOP");
    const reason = await client.waitForDisconnect();
    assert.deepEqual([reason.kind, reason.code, reason.locally], ["timed-out", 4001, true]);
    const delay = (await timedOut.promise) - stoppedAt;
    assert.ok(delay <= 200 + 600 + 250, `detected after ${delay} ms`);
    // Our CLOSE + close frame 4001 sit in the frozen server's socket: once it
    // runs again, it learns that we timed it out.
    frozen.signal("SIGCONT");
    const id = client.connectionId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    await frozen.waitForOutput(new RegExp(`connection ${id} closed: peer-timed-out`));
  } finally {
    frozen.signal("SIGCONT");
    await frozen.stop();
  }
});

test("reconnects after the server restarts, restoring state through onConnected", BOUNDED, async () => {
  const first = await HubProcess.start();
  const port = first.port;
  const connectedIds = [];
  let reconnected = deferred();
  const client = new ReconnectingHubClient(first.url, "chat", {
    WebSocket,
    log: quietLog,
    receiver: { joined() {}, said() {} },
    retry: { initialDelay: 100, maxDelay: 400 },
    onConnected: async (c) => {
      connectedIds.push(c.connectionId);
      await c.call("join", "kept", "ann");
      reconnected.resolve(c);
    },
  });
  client.start();
  let second;
  try {
    await reconnected.promise;
    reconnected = deferred();
    await first.stop(); // graceful: the client sees going-away
    second = await HubProcess.start([], { port });
    const again = await reconnected.promise;
    assert.equal(client.disconnects[0].kind, "going-away");
    assert.equal(connectedIds.length, 2);
    assert.notEqual(connectedIds[0], connectedIds[1]);
    assert.deepEqual(await again.call("rooms"), ["kept"]);
  } finally {
    await client.stop();
    await first.stop();
    await second?.stop();
  }
});

test("docs/javascript.md's Node example runs as written (port aside) and prints what it says", BOUNDED, async () => {
  const { language, code } = namedBlocks("docs/javascript.md")["node-example"];
  assert.equal(language, "js");
  // Inside js/ so that `import "twisted-hub"` resolves to this package.
  const directory = fileURLToPath(new URL("../generated/", import.meta.url));
  mkdirSync(directory, { recursive: true });
  const file = directory + "node-example.mjs";
  writeFileSync(file, code.replace("ws://127.0.0.1:8080/hub", hub.url));
  const stdout = await new Promise((resolve, reject) =>
    execFile(process.execPath, [file], { timeout: 20000 }, (error, out, err) => (error ? reject(new Error(err || String(error))) : resolve(out))),
  );
  assert.deepEqual(stdout.trim().split("\n"), ["5", "out-of-stock none left", "normal"]);
});

test("against an application hub: the Python types our values became, kicked (4000) with the hub's reason, the client's `max` honoured, a 401 refusal", BOUNDED, async () => {
  const control = await HubProcess.start(["--hub", "tests.helpers.js_hubs:ControlHub"]);
  try {
    const small = await connect(control.url, "control", { WebSocket, log: quietLog, maxMessageSize: 4096 });
    // The server never sends more than our HELLO's max: the too-big result becomes an error.
    assert.equal((await small.call("blob", 100)).length, 100);
    await assert.rejects(small.call("blob", 10000), (e) => e instanceof HubError && e.code === "internal");
    assert.equal(small.isConnected, true);
    // What Python made of the values sent: a Map's keys keep their types, a Date is a msgpack Timestamp.
    assert.equal(
      await small.call("describe", new Map([[1, "one"], ["1", true], [null, 1.5]]), -0, new Date(1500), new Uint8Array([7]).buffer, [undefined], 2n ** 63n),
      "(({1: 'one', '1': True, None: 1.5}, -0.0, Timestamp(seconds=1, nanoseconds=500000000), b'\\x07', [None], 9223372036854775808), {})",
    );
    assert.equal(await small.invoke("describe", [], { when: new Date(0), bag: new Map([[2, [3]]]) }), "((), {'when': Timestamp(seconds=0, nanoseconds=0), 'bag': {2: [3]}})");
    await small.call("kick_me", "enough for today").catch(() => undefined);
    assert.deepEqual(await small.waitForDisconnect(), { kind: "kicked", code: 4000, message: "enough for today", locally: false });
    await assert.rejects(
      connect(control.url + "?mode=refuse", null, { WebSocket, log: quietLog }),
      (e) => e instanceof HandshakeError && e.status === 401,
    );
  } finally {
    await control.stop();
  }
});

test("access tokens against twistd hub --authenticator: in the query and in a subprotocol, refreshed before expiry, 4005 token-expired without, 401 when refused, a method policy's forbidden", BOUNDED, async () => {
  const auth = await HubProcess.start([
    "--hub", "tests.helpers.auth:WhoAmIHub", "--authenticator", "tests.helpers.auth:RealTimeExpiring",
  ]);
  try {
    const url = auth.url;
    let asked = 0;
    // "ann:1.5" (a 1.5 s token) has a ':' (not an HTTP token character): it travels in the query
    const refreshed = await connect(url, "whoami", {
      WebSocket, log: quietLog, accessToken: async () => (asked++, "ann:1.5"),
    });
    const fixed = await connect(url, "whoami", { WebSocket, log: quietLog, accessToken: "bob:1.5" });
    assert.equal((await refreshed.call("whoami"))[0], "ann");
    assert.deepEqual((await fixed.call("whoami"))[1], { source: "query" });
    // "cy~never" is made of token characters: it travels in the subprotocol
    const browserLike = await connect(url, "whoami", { WebSocket, log: quietLog, accessToken: "cy~never" });
    assert.deepEqual(await browserLike.call("whoami"), ["cy", { source: "subprotocol" }]);
    // a method whose policy this user fails: refused with the error code forbidden, the connection goes on
    await assert.rejects(browserLike.call("admin"), (e) => e instanceof HubError && e.code === "forbidden");
    assert.equal(browserLike.isConnected, true);
    await browserLike.disconnect();
    const reason = await fixed.waitForDisconnect();
    assert.deepEqual(reason, { kind: "token-expired", code: 4005, message: "token expired", locally: false });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(refreshed.isConnected, true);
    assert.ok(asked >= 3, `the provider was asked ${asked} times`);
    assert.deepEqual(await refreshed.call("whoami"), ["ann", { source: "refresh" }]);
    await refreshed.disconnect();
    await assert.rejects(
      connect(url, "whoami", { WebSocket, log: quietLog, accessToken: "nonsense" }),
      (e) => e instanceof HandshakeError && e.status === 401,
    );
  } finally {
    await auth.stop();
  }
});
