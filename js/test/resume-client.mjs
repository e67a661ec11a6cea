// A JavaScript client that resumes its session across cut TCP connections,
// for tests/test_resume_javascript.py: node test/resume-client.mjs PORT ROUNDS.
//
// The hub at ws://127.0.0.1:PORT/feed (behind a proxy that resets
// connections) runs `cut_during(round)`: it publishes an item, has the proxy
// cut our connection while this call is in flight, publishes more items and
// awaits a client result (`double`) during the gap, then answers.  We make
// the rounds one after another and print, as one JSON line, what arrived:
// every item, call result and client-result run should be there exactly once.
import WebSocket from "ws";
import { ReconnectingHubClient } from "../dist/index.js";

const [port, rounds] = process.argv.slice(2).map(Number);
const deadline = setTimeout(() => {
  console.error(`resume-client: not done within 60 s: ${JSON.stringify(report())}`);
  process.exit(2);
}, 60_000);

const items = [];
const doubled = [];
const hooks = [];
let wake = () => {};
const client = new ReconnectingHubClient(`ws://127.0.0.1:${port}/`, "feed", {
  WebSocket,
  page: null,
  // acknowledgements both on our heartbeats and in ACK messages (every 2)
  resume: { ackEvery: 2 },
  heartbeatInterval: 200,
  retry: { initialDelay: 100, maxDelay: 100 },
  receiver: {
    item(number) {
      items.push(number);
      wake();
    },
    double(number) {
      doubled.push(number);
      return 2 * number;
    },
  },
  onConnected: (c) => hooks.push(["connected", c.connectionId]),
  onResumed: (c) => hooks.push(["resumed", c.connectionId]),
  onResumeRefused: (reason) => hooks.push(["refused", reason]),
});

function report() {
  return {
    items,
    doubled,
    hooks,
    resumes: client.resumes,
    refusals: client.resumeRefusals,
    disconnects: client.disconnects.map((reason) => reason.kind),
    connectionId: client.client?.connectionId ?? null,
  };
}

/** Wait (bounded by the deadline above) until `condition()` holds. */
function until(condition) {
  return condition() ? Promise.resolve() : new Promise((resolve) => (wake = () => condition() && resolve()));
}

client.start();
const id = await client.call("subscribe", "news");
const results = [];
for (let round = 0; round < rounds; round++) results.push(await client.call("cut_during", round));
await until(() => items.length >= 3 * rounds);
console.log(JSON.stringify({ id, results, ...report() }));
clearTimeout(deadline);
await client.stop();
