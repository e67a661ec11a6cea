// RPC load over one connection with the JavaScript client (js/dist), the Node
// twin of _rpc_client.py's `hub` client:
//   node bench/_rpc_client.mjs PORT --inflight K --warmup S --duration S --server-pid P --clk-tck T
// K calls are kept in flight (each answer starts the next call); completed
// calls, the server's CPU (from /proc) and this process's own CPU are counted
// over the measured window.  Prints one JSON `result` line, like the Python one.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import WebSocket from "../js/node_modules/ws/wrapper.mjs";
import { connect } from "../js/dist/index.js";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    inflight: { type: "string", default: "1" },
    warmup: { type: "string", default: "1" },
    duration: { type: "string", default: "5" },
    "server-pid": { type: "string" },
    "clk-tck": { type: "string", default: "100" },
  },
});
const port = Number(positionals[0]);
const RPC_VALUE = "0123456789abcdef";
const HUB_NAME = "bench";

/** User + system CPU seconds of a process, from /proc (Linux). */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / Number(values["clk-tck"]);
}
const ownCpu = () => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
};
const emit = (event, fields) => process.stdout.write(JSON.stringify({ ...fields, event }) + "\n");
const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));

const client = await connect(`ws://127.0.0.1:${port}`, HUB_NAME, { WebSocket, log: { debug() {}, info() {}, warn() {}, error: console.error } });
let completed = 0;
let stopping = false;
function issue() {
  client.call("echo", RPC_VALUE).then(() => {
    completed++;
    if (!stopping) issue();
  });
}
for (let i = 0; i < Number(values.inflight); i++) issue();
await sleep(Number(values.warmup));
const start = { count: completed, time: performance.now(), server: cpuSeconds(values["server-pid"]), own: ownCpu() };
await sleep(Number(values.duration));
const result = {
  calls: completed - start.count,
  elapsed: (performance.now() - start.time) / 1000,
  server_cpu: cpuSeconds(values["server-pid"]) - start.server,
  client_cpu: ownCpu() - start.own,
};
stopping = true;
await sleep(0.2); // let calls in flight drain
emit("result", result);
await client.disconnect();
process.exit(0);
