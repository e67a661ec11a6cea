// A JavaScript client whose streams survive resumes across cut TCP
// connections, for tests/test_resume_streams_javascript.py:
// node test/resume-stream-client.mjs PORT.
//
// The hub at ws://127.0.0.1:PORT/flow (behind a proxy that resets
// connections) has the proxy cut our connection in the middle of each
// stream: a result stream (`ticks`), an argument stream (`total`) and a
// result stream we cancel while disconnected (`endless`).  We print, as one
// JSON line, what arrived: every item should be there once and in order.
import WebSocket from "ws";
import { ReconnectingHubClient } from "../dist/index.js";

const [port] = process.argv.slice(2).map(Number);
const COUNT = 40;
const CUT_AT = 10;
const ticks = [];
const sent = [];
const hooks = [];
const deadline = setTimeout(() => {
  console.error(`resume-stream-client: not done within 60 s: ${JSON.stringify(report())}`);
  process.exit(2);
}, 60_000);

const client = new ReconnectingHubClient(`ws://127.0.0.1:${port}/`, "flow", {
  WebSocket,
  page: null,
  resume: { ackEvery: 4 },
  heartbeatInterval: 200,
  retry: { initialDelay: 100, maxDelay: 100 },
  onConnected: (c) => hooks.push(["connected", c.connectionId]),
  onResumed: (c) => hooks.push(["resumed", c.connectionId]),
  onResumeRefused: (reason) => hooks.push(["refused", reason]),
});

function report() {
  return {
    ticks,
    sent,
    hooks,
    resumes: client.resumes,
    refusals: client.resumeRefusals,
    disconnects: client.disconnects.map((reason) => reason.kind),
    connectionId: client.client?.connectionId ?? null,
  };
}

client.start();
let connection = await client.whenConnected();
const id = connection.connectionId;

// 1. A result stream, a small window: the hub cuts us after item CUT_AT - 1.
for await (const tick of connection.streamWith("ticks", [COUNT, CUT_AT], null, { window: 4 })) ticks.push(tick);

// 2. An argument stream: the hub cuts us once it has taken CUT_AT items.
async function* numbers() {
  for (let n = 0; n < COUNT; n++) {
    sent.push(n);
    yield n;
  }
}
connection = await client.whenConnected();
const received = await connection.call("total", numbers(), CUT_AT);

// 3. A result stream cancelled while the connection is down: the cancel reaches the hub after the resume.
connection = await client.whenConnected();
const endless = connection.stream("endless", CUT_AT);
const endlessItems = [];
connection.waitForDisconnect().then(() => endless.cancel());
for await (const item of endless) endlessItems.push(item);
connection = await client.whenConnected();
const stopped = await connection.call("producer_stopped");

console.log(JSON.stringify({ id, received, endless: endlessItems, stopped, ...report() }));
clearTimeout(deadline);
await client.stop();
