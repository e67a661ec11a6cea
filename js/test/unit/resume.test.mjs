// Session resumption (docs/protocol.md section 10) in ReconnectingHubClient,
// against fake server sockets on a fake clock: deterministic.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { ConnectionClosedError, ReconnectingHubClient, connect } from "../../dist/index.js";
import { FakeClock, FakeWebSocket, settle } from "../fakes.mjs";

const quietLog = { debug() {}, info() {}, warn() {}, error() {} };
const CAPS = ["heartbeat", "batch", "stream", "resume"];
const NONE = { "window-expired": 0, "buffer-overflowed": 0, "session-unknown": 0, "backplane-state-lost": 0, "token-invalid": 0 };
const token = (first) => Uint8Array.from({ length: 32 }, (_, i) => first + i);
let clock;

beforeEach(() => {
  FakeWebSocket.instances = [];
  clock = new FakeClock();
});

/** A ReconnectingHubClient with resume on; `events` records its hooks. */
function service(extra = {}) {
  const events = [];
  const client = new ReconnectingHubClient("ws://127.0.0.1:1/hub", "chat", {
    WebSocket: FakeWebSocket,
    clock,
    log: quietLog,
    page: null,
    retry: { initialDelay: 1000, random: () => 0.5 },
    resume: true,
    onConnected: (c) => events.push(["connected", c.connectionId]),
    onResumed: (c) => events.push(["resumed", c.connectionId]),
    onResumeRefused: (reason) => events.push(["refused", reason]),
    ...extra,
  });
  client.start();
  return { client, events };
}

/** The server side of a connection: open, WELCOME (with resume unless `caps` say otherwise). */
async function accept(id = "c-1", caps = CAPS) {
  const ws = FakeWebSocket.latest();
  ws.open();
  ws.welcome({ caps, id, max: 1048576 });
  await settle();
  return ws;
}

/** A fresh session: WELCOME, the client's HELLO, SESSION; returns the socket with its output taken. */
async function session(id = "c-1", first = 0, window = 120) {
  const ws = await accept(id);
  assert.deepEqual(ws.takeMessages(), [[0, { caps: CAPS, max: 1048576 }]], "HELLO announces resume, without RESUME");
  ws.deliver([20, token(first), window]);
  await settle();
  return ws;
}

/** stop(), the fake server answering the close. */
async function shutdown(client) {
  const stopping = client.stop();
  for (const ws of FakeWebSocket.instances) if (ws.readyState !== 3) ws.serverClose(1000);
  await stopping;
}

/** Lose the connection (no close frame) and let the backoff (0.5 x 1000 ms) run. */
async function drop(ws) {
  ws.serverClose(1006);
  await settle();
  clock.advance(500);
  await settle();
}

test("resume is announced only after WELCOME, and only to a server that announced it; SESSION makes the session", async () => {
  const { client, events } = service();
  const ws = FakeWebSocket.latest();
  ws.open();
  assert.deepEqual(ws.messages(), [], "HELLO waits for WELCOME");
  ws.welcome({ caps: CAPS, id: "c-1" });
  await settle();
  assert.deepEqual(ws.frames(), [[[0, { caps: CAPS, max: 1048576 }]]]);
  assert.equal(client.client, null, "not connected before SESSION");
  ws.deliver([20, token(0), 120]);
  await settle();
  assert.deepEqual(events, [["connected", "c-1"]]);
  assert.equal(client.client.resumed, false);

  // A server without resume: a plain HELLO, nothing of section 10 is accepted.
  const plain = service();
  const old = await accept("c-2", ["heartbeat", "batch"]);
  assert.deepEqual(old.messages(), [[0, { caps: ["heartbeat", "batch", "stream"], max: 1048576 }]]);
  assert.deepEqual(plain.events, [["connected", "c-2"]]);
  old.deliver([24, 0]);
  assert.equal(old.closedWith.code, 4002);
  assert.match(old.closedWith.reason, /resume/);
  await shutdown(plain.client);
  await shutdown(client);
});

test("a plain connect() never announces resume, even to a server that does, and refuses SESSION", async () => {
  const ready = connect("ws://127.0.0.1:1/hub", "chat", { WebSocket: FakeWebSocket, clock, log: quietLog, page: null });
  const ws = FakeWebSocket.latest();
  ws.open();
  assert.deepEqual(ws.messages(), [[0, { caps: ["heartbeat", "batch", "stream"], max: 1048576 }]], "HELLO at once, no resume");
  ws.welcome({ caps: CAPS, id: "c-1" });
  await ready;
  ws.deliver([20, token(0), 120]);
  assert.equal(ws.closedWith.code, 4002);
});

test("sequenced messages are counted both ways: heartbeat messages carry the ack; the server's acks are checked", async () => {
  const received = [];
  const { client } = service({ heartbeatInterval: 1000, receiver: { said: (n) => received.push(n) } });
  const ws = await session();
  const call = client.call("echo", 1); // our 1
  client.notify("typing"); // our 2
  await settle();
  assert.deepEqual(ws.takeMessages(), [[2, 1, "echo", [1]], [3, "typing", []]]);
  // RESULT, RECEIVER_CALL, a stream item for no stream (counted all the same), a heartbeat
  ws.deliver([4, 1, "one"], [6, "said", [1]], [16, 99, "x"], [9, 7, 1767225600000000, null]);
  assert.equal(await call, "one");
  await settle();
  assert.deepEqual(ws.takeMessages(), [[10, 7, 3]], "SERVER_HEARTBEAT_ACK acknowledges the 3 received");
  ws.deliver([6, "said", [2]]);
  clock.advance(1000);
  await settle();
  const [beat] = ws.takeMessages();
  assert.deepEqual([beat[0], beat[1], beat[3]], [11, 1, 4], "CLIENT_HEARTBEAT acknowledges 4");
  ws.deliver([12, 1, beat[2], 1767225600000000, 2]); // the server has both of ours
  ws.deliver([24, 2]); // again: acknowledging is idempotent
  assert.equal(ws.closedWith, null);
  assert.deepEqual(received, [1, 2]);
  ws.deliver([24, 3]);
  assert.equal(ws.closedWith.code, 4002, "an ack beyond what was sent");
  assert.match(ws.closedWith.reason, /ack 3/);
  await shutdown(client);
});

test("an ack going backwards is a protocol error", async () => {
  const { client } = service();
  const ws = await session();
  client.notify("a");
  client.notify("b");
  await settle();
  ws.deliver([24, 2]);
  ws.deliver([24, 1]);
  assert.equal(ws.closedWith.code, 4002);
  await shutdown(client);
});

test("ACK goes after ackEvery unacknowledged messages, or ackDelay after the oldest of them", async () => {
  const { client } = service({ resume: { ackEvery: 3, ackDelay: 5000 }, receiver: { said() {} } });
  const ws = await session();
  ws.deliver([6, "said", [1]], [6, "said", [2]]);
  await settle();
  assert.deepEqual(ws.takeMessages(), [], "2 < ackEvery");
  ws.deliver([6, "said", [3]]);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[24, 3]]);
  clock.advance(1000);
  ws.deliver([6, "said", [4]]); // arrives at +1000
  clock.advance(3000);
  ws.deliver([6, "said", [5]]); // the timer runs from the oldest unacknowledged
  clock.advance(1999);
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  clock.advance(1);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[24, 5]], "5000 ms after message 4 arrived");
  clock.advance(60_000);
  await settle();
  assert.deepEqual(ws.takeMessages(), [], "nothing unacknowledged, no ACK");
  await shutdown(client);
});

test("after a lost connection the session resumes: HELLO+RESUME in one frame, replay both ways, calls answered once", async () => {
  const said = [];
  const { client, events } = service({ receiver: { said: (n) => said.push(n) } });
  let ws = await session("c-1", 0);
  const inFlight = client.call("slow"); // our 1, id 1
  client.notify("first"); // our 2
  await settle();
  ws.deliver([24, 1], [6, "said", [1]]); // the server has our 1; we have its 1
  ws.takeMessages();
  await drop(ws);
  assert.equal(client.client, null);
  let settled = false;
  inFlight.then(() => (settled = true), () => (settled = true));
  const during = client.call("later"); // waits for the next connection
  await settle();
  assert.equal(settled, false, "a call in flight is kept, not failed");

  ws = await accept("c-9");
  assert.deepEqual(ws.frames(), [[[0, { caps: CAPS, max: 1048576 }], [21, token(0), 1, 2]]], "HELLO then RESUME, one frame");
  ws.takeMessages();
  // The server received our 1, replays its 2 and 3 (a receiver call made in the gap, the answer to call 1).
  ws.deliver([22, 1, token(100), "c-1"], [6, "said", [2]], [4, 1, "done"]);
  await settle();
  assert.equal(await inFlight, "done");
  assert.deepEqual(said, [1, 2]);
  assert.deepEqual(events, [["connected", "c-1"], ["resumed", "c-1"]], "onResumed instead of onConnected");
  assert.equal(client.resumes, 1);
  assert.equal(client.client.connectionId, "c-1", "the session's id, not the new WELCOME's");
  assert.deepEqual(ws.takeMessages(), [[3, "first", []], [2, 2, "later", []]], "our replay first, then the new call (ids go on)");
  ws.deliver([4, 1, "again"], [4, 2, "late"]); // a second answer to call 1 is ignored
  assert.equal(await during, "late");

  // The next resume presents the rotated token and everything received (3 + 2).
  await drop(ws);
  ws = await accept("c-10");
  assert.deepEqual(ws.messages()[1], [21, token(100), 5, 3]);
  ws.deliver([22, 3, token(200), "c-1"]); // it has our 3 (the replayed NOTIFY and call 2)
  await settle();
  assert.equal(client.resumes, 2);
  await shutdown(client);
});

test("after our heartbeat timed out, or the server went away (1001), the session resumes with its calls", async () => {
  const { client, events } = service({ heartbeatInterval: 1000 });
  let ws = await session();
  const kept = client.call("slow");
  await settle();
  clock.advance(4000); // beat at 1000 unanswered: the 3000 ms timeout ends the connection at 4000
  await settle();
  assert.equal(ws.closedWith.code, 4001);
  assert.equal(client.disconnects[0].kind, "timed-out");
  clock.advance(500);
  ws = await accept("c-2");
  assert.deepEqual(ws.messages()[1], [21, token(0), 0, 1]);
  ws.deliver([22, 0, token(10), "c-1"]);
  await settle();
  assert.deepEqual(ws.takeMessages().slice(2), [[2, 1, "slow", []]], "the call replayed (after HELLO, RESUME)");
  ws.deliver([8, 1001, "shutting down"]);
  ws.serverClose(1001, "shutting down");
  await settle();
  clock.advance(500);
  ws = await accept("c-3");
  assert.deepEqual(ws.messages()[1], [21, token(10), 0, 1], "1001 does not end the session");
  ws.deliver([22, 1, token(20), "c-1"], [4, 1, "ok"]);
  assert.equal(await kept, "ok");
  assert.deepEqual(events.map((e) => e[0]), ["connected", "resumed", "resumed"]);
  await shutdown(client);
});

test("a refused resume fails the kept calls, counts the reason, and SESSION starts afresh on the same connection", async () => {
  const { client, events } = service();
  let ws = await session();
  const kept = client.call("slow");
  await settle();
  await drop(ws);
  ws = await accept("c-2");
  ws.deliver([23, "window-expired", "the session outlived its window"], [20, token(50), 120]);
  await assert.rejects(
    kept,
    (e) => e instanceof ConnectionClosedError && e.code === "disconnected" && e.mayHaveRun && /could not be resumed \(window-expired\)/.test(e.message),
  );
  await settle();
  assert.deepEqual(events, [["connected", "c-1"], ["refused", "window-expired"], ["connected", "c-2"]]);
  assert.deepEqual(client.resumeRefusals, { ...NONE, "window-expired": 1 });
  assert.equal(client.resumes, 0);
  ws.takeMessages();
  client.notify("x");
  await settle();
  ws.deliver([24, 1]); // numbering started again: the NOTIFY is 1 of the new session
  assert.equal(ws.closedWith, null);

  // A reason this client does not know counts as session-unknown.
  await drop(ws);
  ws = await accept("c-3");
  assert.deepEqual(ws.messages()[1], [21, token(50), 0, 1]);
  ws.deliver([23, "meteor-strike", "?"], [20, token(60), 120]);
  await settle();
  // A server without resume (restarted, older): a plain HELLO, reported as session-unknown.
  await drop(FakeWebSocket.latest());
  ws = await accept("c-4", ["heartbeat", "batch"]);
  assert.deepEqual(ws.frames(), [[[0, { caps: ["heartbeat", "batch", "stream"], max: 1048576 }]]]);
  assert.deepEqual(client.resumeRefusals, { ...NONE, "window-expired": 1, "session-unknown": 2 });
  assert.deepEqual(events.slice(3), [["refused", "session-unknown"], ["connected", "c-3"], ["refused", "session-unknown"], ["connected", "c-4"]]);
  await shutdown(client);
});

for (const [code, why] of [
  [4000, "kicked"],
  [4005, "token expired"],
  [1000, "normal close"],
]) {
  test(`no resume after the server's CLOSE ${code}: the session is over, calls fail, the next connection is fresh`, async () => {
    const { client } = service();
    let ws = await session();
    const kept = client.call("slow");
    await settle();
    ws.deliver([8, code, why]);
    ws.serverClose(code, why);
    await assert.rejects(kept, ConnectionClosedError);
    clock.advance(500);
    ws = await accept("c-2");
    assert.deepEqual(ws.frames(), [[[0, { caps: CAPS, max: 1048576 }]]], "no RESUME");
    assert.deepEqual(client.resumeRefusals, NONE);
    await shutdown(client);
  });
}

test("4006 (the session moved to another connection): not resumed, and no reconnect", async () => {
  const { client } = service();
  const ws = await session();
  const kept = client.call("slow");
  await settle();
  ws.deliver([8, 4006, "session resumed elsewhere"]);
  ws.serverClose(4006, "session resumed elsewhere");
  await assert.rejects(kept, ConnectionClosedError);
  await settle();
  clock.advance(100_000);
  assert.equal(FakeWebSocket.instances.length, 1);
});

test("our own close ends the session: stop() fails the calls kept between connections", async () => {
  const { client } = service();
  const ws = await session();
  const kept = client.call("slow");
  await settle();
  ws.serverClose(1006);
  await settle();
  await client.stop();
  await assert.rejects(kept, (e) => e instanceof ConnectionClosedError && /stopped/.test(e.message));
});

test("a message our bound dropped and the server lacks: close 1000, report the reason, start afresh", async () => {
  const { client, events } = service({ resume: { bufferBytes: 200 } });
  let ws = await session();
  for (const n of [1, 2, 3]) client.notify("note", "x".repeat(60), n); // ~70 bytes + 48 each: the oldest go
  const kept = client.call("slow");
  await settle();
  await drop(ws);
  ws = await accept("c-2");
  ws.deliver([22, 0, token(9), "c-1"]); // the server has none of them
  await settle();
  assert.equal(ws.closedWith.code, 1000);
  assert.match(ws.closedWith.reason, /buffer-overflowed/);
  await assert.rejects(kept, (e) => e instanceof ConnectionClosedError && /could not be resumed \(buffer-overflowed\)/.test(e.message));
  ws.serverClose(1000);
  await settle();
  assert.deepEqual(client.resumeRefusals, { ...NONE, "buffer-overflowed": 1 });
  clock.advance(1000); // that attempt failed: the backoff doubled
  ws = await accept("c-3");
  assert.deepEqual(ws.frames(), [[[0, { caps: CAPS, max: 1048576 }]]], "afresh: no RESUME");
  ws.deliver([20, token(30), 120]);
  await settle();
  assert.deepEqual(events.map((e) => e[0]), ["connected", "refused", "connected"]);
  await shutdown(client);
});

test("what the server already has may be dropped by the bound: the resume goes on", async () => {
  const { client } = service({ resume: { bufferBytes: 200 } });
  let ws = await session();
  for (const n of [1, 2, 3]) client.notify("note", "x".repeat(60), n);
  await settle();
  await drop(ws);
  ws = await accept("c-2");
  ws.takeMessages();
  ws.deliver([22, 2, token(9), "c-1"]);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[3, "note", ["x".repeat(60), 3]]], "only what it lacks");
  assert.equal(client.resumes, 1);
  await shutdown(client);
});

test("the age bound is the session's window: older messages the server lacks refuse the resume (window-expired)", async () => {
  const { client } = service();
  let ws = await session("c-1", 0, 2); // window 2 s
  client.notify("old");
  await settle();
  ws.serverClose(1006);
  await settle();
  clock.advance(2500);
  ws = await accept("c-2");
  ws.deliver([22, 0, token(9), "c-1"]);
  await settle();
  assert.equal(ws.closedWith.code, 1000);
  assert.deepEqual(client.resumeRefusals, { ...NONE, "window-expired": 1 });
  await shutdown(client);
});

test("RESUMED acknowledging more than we sent is a protocol error", async () => {
  const { client } = service();
  let ws = await session();
  client.notify("one");
  await settle();
  await drop(ws);
  ws = await accept("c-2");
  ws.deliver([22, 5, token(9), "c-1"]);
  assert.equal(ws.closedWith.code, 4002);
  await shutdown(client);
});

test("CLIENT_INVOKE runs once per session: a repeat gets the kept answer, one still running waits, a forgotten one gets duplicate-call", async () => {
  const runs = [];
  let finish;
  const receiver = {
    confirm: (n) => (runs.push(n), `yes ${n}`),
    later: (n) => (runs.push(n), new Promise((resolve) => (finish = resolve))),
  };
  const { client } = service({ receiver, resume: { maxCalls: 2 } });
  const ws = await session();
  ws.deliver([7, 1, "confirm", [1]]);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[4, 1, "yes 1"]]);
  ws.deliver([7, 1, "confirm", [1]]);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[4, 1, "yes 1"]], "the kept answer, not a second run");
  ws.deliver([7, 2, "later", [2]], [7, 2, "later", [2]]);
  await settle();
  assert.deepEqual(ws.takeMessages(), [], "running: its one answer comes when it is done");
  finish("done");
  await settle();
  assert.deepEqual(ws.takeMessages(), [[4, 2, "done"]]);
  ws.deliver([7, 3, "confirm", [3]], [7, 1, "confirm", [1]]); // 3 settles: 1 is forgotten (maxCalls 2)
  await settle();
  assert.deepEqual(ws.takeMessages(), [[4, 3, "yes 3"], [5, 1, "duplicate-call", "ran once; answer gone", null]]);
  assert.deepEqual(runs, [1, 2, 3]);
  await shutdown(client);
});

test("a client result finished between connections is kept and replayed after the resume", async () => {
  let finish;
  const receiver = { ask: () => new Promise((resolve) => (finish = resolve)) };
  const { client } = service({ receiver });
  let ws = await session();
  ws.deliver([7, 1, "ask", []]);
  await settle();
  await drop(ws);
  finish(42); // while disconnected
  await settle();
  ws = await accept("c-2");
  assert.deepEqual(ws.messages()[1], [21, token(0), 1, 1]);
  ws.takeMessages();
  ws.deliver([22, 0, token(9), "c-1"]);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[4, 1, 42]]);
  await shutdown(client);
});

test("a result stream survives a resume: items before and after, credit granted in the gap replayed once", async () => {
  const { client } = service();
  let ws = await session();
  const stream = client.client.streamWith("ticks", [], null, { window: 2 }); // our 1
  await settle();
  assert.deepEqual(ws.takeMessages(), [[15, 1, "ticks", [], null, 2]]);
  ws.deliver([16, 1, "a"]); // its 1
  await drop(ws);
  assert.equal((await stream.next()).value, "a", "what arrived before the drop is there");
  await settle();
  // taking 1 of a window of 2 grants 1 (our 2): kept, sent after the resume
  ws = await accept("c-2");
  assert.deepEqual(ws.takeMessages(), [[0, { caps: CAPS, max: 1048576 }], [21, token(0), 1, 2]]);
  ws.deliver([22, 1, token(9), "c-1"], [16, 1, "b"]); // the server had our 1; "b" was sent in the gap
  await settle();
  assert.deepEqual(ws.takeMessages(), [[18, 1, 1]], "the credit, once, before anything new");
  ws.deliver([16, 1, "c"], [17, 1]); // within the credit: 2 outstanding after the grant
  const rest = [];
  for await (const item of stream) rest.push(item);
  assert.deepEqual(rest, ["b", "c"]);
  assert.equal(ws.closedWith, null);
  await shutdown(client);
});

test("an argument stream survives a resume: it sends only with credit, what it sent in the gap goes once", async () => {
  const { client } = service();
  let ws = await session();
  let closed = 0;
  async function* numbers() {
    try {
      for (let n = 1; n <= 3; n++) yield n;
    } finally {
      closed++;
    }
  }
  let answer = null;
  const result = client.client.call("total", numbers()).then((value) => (answer = value)); // our 1
  await settle();
  assert.deepEqual(ws.takeMessages(), [[2, 1, "total", [null], null, [[0, 1]]]]);
  ws.deliver([18, 1, 2]);
  for (let i = 0; i < 3; i++) await settle();
  assert.deepEqual(ws.takeMessages(), [[16, 1, 1], [16, 1, 2]], "our 2 and 3: the credit of 2 used up");
  ws.deliver([24, 2]); // the server has our 1 and 2, not 3
  await drop(ws);
  for (let i = 0; i < 3; i++) await settle();
  assert.equal(answer, null, "the call goes on");
  ws = await accept("c-2");
  ws.takeMessages();
  ws.deliver([22, 2, token(9), "c-1"]);
  for (let i = 0; i < 3; i++) await settle();
  assert.deepEqual(ws.takeMessages(), [[16, 1, 2]], "the item the server lacks, once; nothing more without credit");
  ws.deliver([18, 1, 5]);
  for (let i = 0; i < 3; i++) await settle();
  assert.deepEqual(ws.takeMessages(), [[16, 1, 3], [17, 1]]);
  ws.deliver([4, 1, 6]);
  await result;
  assert.equal(answer, 6);
  assert.equal(closed, 1);
  await shutdown(client);
});

test("leaving the loop during the gap cancels across the resume; the server's replayed items for it are ignored", async () => {
  const { client } = service();
  let ws = await session();
  const stream = client.client.stream("ticks"); // our 1
  await settle();
  ws.takeMessages();
  ws.deliver([16, 1, 0]);
  await drop(ws);
  for await (const item of stream) {
    assert.equal(item, 0);
    break; // our 2: STREAM_CANCEL, kept
  }
  ws = await accept("c-2");
  ws.takeMessages();
  ws.deliver([22, 1, token(9), "c-1"], [16, 1, 1], [17, 1]); // crossed our cancel
  await settle();
  assert.deepEqual(ws.takeMessages(), [[19, 1]]);
  assert.equal(ws.closedWith, null);
  assert.deepEqual(await stream.next(), { value: undefined, done: true });
  await shutdown(client);
});

test("streams fail with ConnectionClosedError when the session ends for good; argument sources are closed", async () => {
  const { client } = service();
  let ws = await session();
  let closed = 0;
  async function* forever() {
    try {
      for (;;) yield 0;
    } finally {
      closed++;
    }
  }
  const refusedStream = client.client.stream("ticks"); // call 1
  const refusedCall = client.client.call("total", forever()); // call 2, stream 1
  await settle();
  ws.deliver([18, 1, 1]);
  for (let i = 0; i < 3; i++) await settle();
  await drop(ws);
  ws = await accept("c-2");
  ws.deliver([23, "window-expired", "the session outlived its window"]);
  const lost = (e) => e instanceof ConnectionClosedError && e.mayHaveRun && /could not be resumed \(window-expired\)/.test(e.message);
  await assert.rejects(refusedStream.next(), lost);
  await assert.rejects(refusedCall, lost);
  for (let i = 0; i < 3; i++) await settle();
  assert.equal(closed, 1, "the source's finally ran");
  ws.deliver([20, token(50), 120]); // a fresh session follows
  await settle();

  // stop() between connections ends the session too
  const stopped = client.client.stream("ticks");
  await settle();
  await drop(ws);
  await client.stop();
  await assert.rejects(stopped.next(), (e) => e instanceof ConnectionClosedError && /stopped/.test(e.message));

  // and so does the server's CLOSE 4000
  const other = service();
  ws = await session();
  const kicked = other.client.client.stream("ticks");
  await settle();
  ws.deliver([8, 4000, "kicked"]);
  ws.serverClose(4000, "kicked");
  await assert.rejects(kicked.next(), ConnectionClosedError);
  await shutdown(other.client);
});

test("resume options are checked", () => {
  for (const bad of [{ bufferBytes: 0 }, { ackEvery: -1 }, { ackDelay: "soon" }, { maxCalls: NaN }]) {
    assert.throws(() => new ReconnectingHubClient("ws://127.0.0.1:1/hub", "chat", { WebSocket: FakeWebSocket, resume: bad }), RangeError);
  }
});
