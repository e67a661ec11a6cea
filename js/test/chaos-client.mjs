// Chaos clients in Node for bench/chaos.py (issue 21's chaos test):
//   node test/chaos-client.mjs URL --prefix P --count K [--pace S] [--inflight N]
//        [--shout-every S] [--retry-initial S] [--retry-max S] [--settle S] [--seed N]
// K ReconnectingHubClients with `resume: true` make numbered traffic both
// ways (hub bench/_chaos_hub.py) and keep the same ledger as the Python
// clients (bench/_chaos_ledger.py), checked as it arrives.  Commands on
// stdin (`go`, `hush`, `stop`, `expect {json}`), JSON lines out (`ready`, `hushed`, `stopped`,
// `result`).
import readline from "node:readline";
import WebSocket from "ws";
import { ReconnectingHubClient } from "../dist/index.js";
import { Ledger } from "./chaos-ledger.mjs";

const argv = process.argv.slice(2);
const url = argv[0];
const option = (name, fallback) => {
  const at = argv.indexOf(`--${name}`);
  return at < 0 ? fallback : argv[at + 1];
};
const prefix = option("prefix");
const count = Number(option("count"));
const pace = Number(option("pace", 0.1));
const inflight = Number(option("inflight", 2));
const shoutEvery = Number(option("shout-every", 1.0));
const retryInitial = Number(option("retry-initial", 0.2));
const retryMax = Number(option("retry-max", 2.0));
const settle = Number(option("settle", 30));
let seed = Number(option("seed", 1)) >>> 0;
// mulberry32: the jitter of this process is reproducible from --seed
const random = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));
// (resolves once the line is handed to the pipe: process.exit() must not cut a long one short)
const say = (event, fields = {}) =>
  new Promise((resolve) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n", resolve));

let onChange = () => {};

class Client {
  constructor(name) {
    this.name = name;
    this.ledger = new Ledger(name);
    this.reasons = [];
    let joinedFirst;
    this.firstJoin = new Promise((resolve) => (joinedFirst = resolve));
    const ledger = this.ledger;
    this.service = new ReconnectingHubClient(url, "chaos", {
      WebSocket,
      page: null,
      resume: true,
      retry: { initialDelay: retryInitial * 1000, maxDelay: retryMax * 1000, random },
      waitForConnection: settle * 1000,
      receiver: {
        numbered: (session, k) => ledger.numbered(session, k),
        heard: (sender, m) => {
          ledger.heardFrom(sender, m);
          onChange();
        },
      },
      onRetry: (delay) => {
        ledger.backoff += delay / 1000;
      },
      onResumeRefused: (reason) => this.reasons.push(reason),
      onConnected: async (client) => {
        client.waitForDisconnect().then(() => ledger.dropped());
        ledger.freshSession(this.reasons.sort());
        this.reasons = [];
        ledger.joined(await client.call("join"));
        joinedFirst();
      },
      onResumed: (client) => {
        client.waitForDisconnect().then(() => ledger.dropped());
        ledger.resumed();
      },
    });
  }

  async workLoop(running) {
    while (running.on) {
      const n = this.ledger.nextCall();
      try {
        this.ledger.answer(n, await this.service.call("work", this.name, n));
      } catch (e) {
        this.ledger.callFailed(n, e);
      }
      await sleep(pace * (0.5 + random()));
    }
  }

  async shoutLoop(running) {
    await sleep(shoutEvery * random());
    while (running.on) {
      const m = this.ledger.nextShout();
      try {
        await this.service.call("shout", this.name, m);
        this.ledger.shoutAnswered(m);
      } catch {
        this.ledger.shoutFailed(m);
      }
      await sleep(shoutEvery * (0.5 + random()));
    }
  }
}

const clients = Array.from({ length: count }, (_, i) => new Client(`${prefix}-${i}`));
const running = { on: false };
const loops = [];
for (const client of clients) client.service.start();
const startDeadline = setTimeout(() => {
  console.error("chaos-client: not all clients joined within 60 s");
  process.exit(2);
}, 60_000);
await Promise.all(clients.map((c) => c.firstJoin));
clearTimeout(startDeadline);
say("ready", { clients: clients.length });

const within = (promise, seconds) =>
  Promise.race([promise, new Promise((resolve) => setTimeout(resolve, seconds * 1000).unref())]);

for await (const line of readline.createInterface({ input: process.stdin })) {
  const space = line.indexOf(" ");
  const word = space < 0 ? line.trim() : line.slice(0, space);
  if (word === "go") {
    running.on = true;
    for (const client of clients) {
      for (let i = 0; i < inflight; i++) loops.push(client.workLoop(running));
      loops.push(client.shoutLoop(running));
    }
  } else if (word === "hush") {
    // a lull: no new call or broadcast until the next "go"; said once what is in flight settled
    running.on = false;
    await within(Promise.all(loops.splice(0)), settle + 5);
    say("hushed");
  } else if (word === "stop") {
    running.on = false;
    await within(Promise.all(loops), settle + 5); // what is still pending is reported as hanging
    say("stopped", { last: Object.fromEntries(clients.map((c) => [c.name, c.ledger.shoutsAnsweredMax])) });
  } else if (word === "expect") {
    const expected = JSON.parse(line.slice(space + 1));
    const allHeard = () => clients.every((c) => c.ledger.missingFrom(expected) === 0);
    await within(new Promise((resolve) => (allHeard() ? resolve() : (onChange = () => allHeard() && resolve()))), 20);
    for (const client of clients) client.ledger.stopping = true;
    await say("result", {
      clients: clients.map((c) => c.ledger.summary("javascript", c.service.resumes, c.service.resumeRefusals, expected)),
    });
    await Promise.all(clients.map((c) => c.service.stop()));
    process.exit(0);
  } else if (word === "quit") {
    process.exit(0);
  }
}
