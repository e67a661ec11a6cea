// Many hub connections in one Node process, each a full JavaScript client
// (js/dist HubClient with a receiver): the Node twin of `_wsload.py hub` for
// the fan-out case, to show whether the JS client can keep up with a server
// broadcasting to 500 members.
//   node bench/_wsload.mjs PORT CONNS [--timeout S]
// Same line protocol as _wsload.py: prints `ready`, `done` (after an armed
// count of receiver calls per connection) and `count`; reads `arm N`,
// `count`, `quit` on stdin.  Times are CLOCK_MONOTONIC seconds, comparable
// with the Python processes' time.monotonic().
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import WebSocket from "../js/node_modules/ws/wrapper.mjs";
import { HubClient, hubUrl } from "../js/dist/index.js";

const { positionals, values } = parseArgs({ allowPositionals: true, options: { timeout: { type: "string", default: "40" } } });
const port = Number(positionals[0]);
const wanted = Number(positionals[1]);
const now = () => Number(process.hrtime.bigint()) / 1e9;
const emit = (event, fields) => process.stdout.write(JSON.stringify({ ...fields, event }) + "\n");
const quiet = { debug() {}, info() {}, warn() {}, error: console.error };

const load = { frames: 0, expect: 0, armed: false, beats: 0, closed: 0 };
const receiver = {
  msg() {
    if (!load.armed) return;
    load.frames++;
    if (load.frames >= load.expect) {
      load.armed = false;
      emit("done", { t_last: now(), frames: load.frames });
    }
  },
};
const options = { WebSocket, receiver, log: quiet, onServerHeartbeat: () => load.beats++, onDisconnected: () => load.closed++ };

const started = now();
const clients = [];
const url = hubUrl(`ws://127.0.0.1:${port}`, "bench");
// 32 handshakes at a time, like _wsload.py.
let next = 0;
async function opener() {
  while (next < wanted) {
    next++;
    const client = new HubClient(url, options);
    clients.push(client);
    await client.whenReady();
  }
}
const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("connect timeout")), Number(values.timeout) * 1000).unref());
try {
  await Promise.race([Promise.all(Array.from({ length: 32 }, opener)), timeout]);
} catch (e) {
  emit("error", { message: String(e), ready: clients.filter((c) => c.isConnected).length });
  process.exit(1);
}
emit("ready", { conns: clients.filter((c) => c.isConnected).length, wanted, seconds: now() - started });

for await (const line of createInterface({ input: process.stdin })) {
  const words = line.trim().split(/\s+/);
  if (words[0] === "quit") break;
  if (words[0] === "arm") {
    load.frames = 0;
    load.expect = Number(words[1]) * clients.length;
    load.armed = true;
  } else if (words[0] === "count") {
    emit("count", { beats: load.beats, closed: load.closed, frames: load.frames, t: now() });
  }
}
for (const client of clients) client.disconnect();
process.exit(0);
