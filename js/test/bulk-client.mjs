// A hub client process for the slow-link tests (tests/test_slow_link_processes.py),
// the JS client in Node on `ws`, as tests/helpers/bulk_client.py is for the Python ones:
//   node bulk-client.mjs URL --calls 3 --size 900000 [--heartbeat INTERVAL TIMEOUT] [--in-flight N] [--wait-go]
// (seconds).  Prints "READY <connection id> <local port>", makes its echo
// calls, each with its own payload, all at once or at most N at a time
// (right away or, with --wait-go, once a line arrives on stdin), prints "RESULT <i> ok <seconds>"
// for each result equal to what it sent ("RESULT <i> wrong ..." or
// "FAILED <i> <error>" otherwise), then "DONE <seconds>", closes normally and
// exits.  Whenever the connection ends it prints "CLOSED <kind> <message>"
// and, with a heartbeat, "AVOIDED <n>" (client.timeoutsAvoided); "STALLED ..."
// when it took its stall grace.
import WebSocket from "ws";
import { connect } from "../dist/index.js";

const args = process.argv.slice(2);
const url = args[0];
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at === -1 ? fallback : args.slice(at + 1, at + 3);
};
const calls = Number(option("--calls", ["3"])[0]);
const size = Number(option("--size", ["900000"])[0]);
const heartbeat = option("--heartbeat", null);
const inFlight = Number(option("--in-flight", ["0"])[0]) || calls;

// The socket under the WebSocket (its local port names the connection at the proxy).
let socket = null;
class RecordingWebSocket extends WebSocket {
  constructor(...rest) {
    super(...rest);
    this.on("upgrade", (response) => (socket = response.socket));
  }
}

const payload = (index) => new Uint8Array(size).fill(65 + (index % 26));
const equal = (a, b) => a instanceof Uint8Array && a.length === b.length && a.every((byte, i) => byte === b[i]);
const say = (line) => process.stdout.write(line + "\n");
let client = null;

try {
  client = await connect(url, "probe", {
    WebSocket: RecordingWebSocket,
    maxMessageSize: 4 * 1024 * 1024,
    callTimeout: 120_000,
    ...(heartbeat ? { heartbeatInterval: Number(heartbeat[0]) * 1000, heartbeatTimeout: Number(heartbeat[1]) * 1000 } : {}),
    // "STALLED" when the client took its stall grace (our loop was blocked: one more exchange).
    log: {
      debug: process.env.BULK_CLIENT_DEBUG ? (m) => process.stderr.write(`${performance.now().toFixed(0)} ${m}\n`) : () => {},
      info: (m) => m.includes("stalled") && say(`STALLED ${m}`),
      warn() {},
      error: (m) => process.stderr.write(m + "\n"),
    },
    onDisconnected: (reason) => {
      say(`CLOSED ${reason.kind} ${reason.message}`);
      if (heartbeat) say(`AVOIDED ${client?.timeoutsAvoided ?? 0}`);
    },
  });
} catch (error) {
  say(`FAILED connect ${error}`);
  process.exit(1);
}
say(`READY ${client.connectionId} ${socket.localPort}`);
if (args.includes("--wait-go")) await new Promise((resolve) => process.stdin.once("data", resolve));
process.stdin.destroy();
const started = performance.now();
const seconds = () => ((performance.now() - started) / 1000).toFixed(3);
let next = 0;
async function caller() {
  while (next < calls) {
    const index = next++;
    await client.call("echo", payload(index)).then(
      (value) => say(`RESULT ${index} ${equal(value, payload(index)) ? "ok" : `wrong ${value?.length}`} ${seconds()}`),
      (error) => say(`FAILED ${index} ${error}`),
    );
  }
}
await Promise.all(Array.from({ length: Math.min(inFlight, calls) }, caller));
say(`DONE ${seconds()}`);
if (client.isConnected) await client.disconnect();
process.exit(0);
