// The JavaScript driver of the conformance suite (tests/conformance): runs
// each scenario's client steps with the Node client (js/dist, over the `ws`
// package) and prints what the client observed, as JSON: the same steps and
// the same outcome shape as tests/conformance/driver.py, so one scenario list
// checks all three clients.
//
//     node js/test/conformance-driver.mjs < scenarios.json > outcomes.json
//
// One node process runs every scenario, one at a time, each within its bound.
// Options are given in seconds (as the Python clients take them) and converted
// to the milliseconds this client takes; times in the outcome are seconds.
import WebSocket from "ws";
import {
  ConnectionClosedError,
  HandshakeError,
  HubClient,
  HubError,
  ReconnectingHubClient,
} from "../dist/index.js";

const SCENARIO_BOUND = 20000;
const WAIT_BOUND = 10000;
const quietLog = { debug() {}, info() {}, warn() {}, error() {} };

class StepTimeout extends Error {}

/** Resolve with the promise's value, or reject with StepTimeout after `ms`. */
function within(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StepTimeout(`not within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A msgpack value as JSON: bytes as {"$bytes": hex}, as the Python drivers write them. */
function jsonable(value) {
  if (value instanceof Uint8Array) return { $bytes: hex(value) };
  if (Array.isArray(value)) return value.map(jsonable);
  if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [String(k), jsonable(v)]));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonable(v)]));
  }
  if (typeof value === "bigint") return Number(value);
  return value === undefined ? null : value;
}

/** A scenario's argument as a JavaScript value: {"$bytes": hex} is a Uint8Array, {"$unsendable": ...} a Set. */
function native(value) {
  if (Array.isArray(value)) return value.map(native);
  if (value !== null && typeof value === "object") {
    if ("$bytes" in value) return new Uint8Array(value.$bytes.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
    if ("$unsendable" in value) return new Set([1, 2]); // msgpack has no sets
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, native(v)]));
  }
  return value;
}

function reasonJson(reason) {
  return { kind: reason.kind, code: reason.code, locally: reason.locally, message: reason.message };
}

function errorJson(error) {
  if (error instanceof ConnectionClosedError) {
    return { error: "disconnected", reason: error.reason.kind, may_have_run: error.mayHaveRun };
  }
  if (error instanceof HubError) return { error: error.code, message: error.hubMessage, detail: jsonable(error.detail) };
  if (error instanceof HandshakeError) return { error: "handshake", status: error.status };
  if (error instanceof StepTimeout) return { error: "no outcome within the step's bound" };
  return { error: "exception", type: error?.name ?? typeof error, message: String(error?.message ?? error) };
}

const seconds = (value) => (value === null || value === undefined ? value : value * 1000);

/** The events a scenario's client reported. */
class Recorder {
  constructor() {
    this.events = {
      received: [],
      server_heartbeats: [],
      heartbeat_responses: [],
      heartbeat_timeouts: [],
      on_disconnected: [],
      connected: [],
      source_closed: [],
      resumed: [],
    };
    this.wake = [];
  }

  add(name, value) {
    this.events[name].push(value);
    const wake = this.wake;
    this.wake = [];
    for (const resolve of wake) resolve();
  }

  async wait(name, count) {
    while (this.events[name].length < count) await new Promise((resolve) => this.wake.push(resolve));
  }
}

/** The receiver of tests/conformance/driver.py, in JavaScript (no keyword arguments: a kwargs map is a last argument). */
function receiver(recorder) {
  return {
    said(...args) {
      recorder.add("received", { method: "said", args: jsonable(args), kwargs: null });
    },
    double(x) {
      return x * 2;
    },
    later(x) {
      return sleep(10).then(() => x + 1);
    },
    refuse(code, message, detail = null) {
      throw new HubError(code, message, detail);
    },
    boom() {
      throw new Error("boom");
    },
    undeclared() {
      return "undeclared";
    },
    _secret() {
      return "secret";
    },
  };
}

/** The scenario's options as this client's (milliseconds), with every callback recording; `page`: a page to freeze. */
function clientOptions(options, recorder, page = null) {
  const result = {
    WebSocket,
    log: quietLog,
    page,
    receiver: receiver(recorder),
    connectTimeout: seconds(options.connect_timeout ?? 5),
    onServerHeartbeat: (event) =>
      recorder.add("server_heartbeats", { sequence: event.sequence, metadata: event.metadata === null ? null : jsonable(event.metadata) }),
    onHeartbeatResponse: (event) =>
      recorder.add("heartbeat_responses", { sequence: event.sequence, round_trip: event.roundTrip / 1000 }),
    onHeartbeatTimeout: () => recorder.add("heartbeat_timeouts", true),
    onDisconnected: (reason) => recorder.add("on_disconnected", reasonJson(reason)),
  };
  if (options.heartbeat_interval != null) {
    result.heartbeatInterval = seconds(options.heartbeat_interval);
    result.heartbeatTimeout = seconds(options.heartbeat_timeout ?? null);
    result.anyTrafficCounts = options.any_traffic_counts ?? false;
  }
  if ("call_timeout" in options) result.callTimeout = seconds(options.call_timeout);
  if ("max_message_size" in options) result.maxMessageSize = options.max_message_size;
  return result;
}

/** One scenario's steps on the JavaScript client. */
class Run {
  constructor(scenario) {
    this.scenario = scenario;
    this.options = scenario.options ?? {};
    this.recorder = new Recorder();
    this.out = {};
    this.client = null;
    this.reconnecting = null;
    this.started = {};
    this.streams = [];
    // A page of our own (Node has none) when the scenario freezes it.
    this.page = this.options.page ? { document: new EventTarget(), window: new EventTarget() } : null;
  }

  async run() {
    try {
      await within(this.steps(), seconds(this.scenario.bound) ?? SCENARIO_BOUND);
    } catch (e) {
      this.out.error = e instanceof StepTimeout ? `the scenario did not finish: ${e.message}` : `driver: ${e?.name}: ${e?.message}`;
    }
    try {
      if (this.reconnecting !== null) await within(this.reconnecting.stop(), 5000);
      else if (this.client !== null && this.client.disconnectReason === null) await within(this.client.disconnect(), 5000);
    } catch (e) {
      this.out.cleanup_error = `${e?.name}: ${e?.message}`;
    }
    for (const [name, values] of Object.entries(this.recorder.events)) {
      if (name !== "connected") this.out[name] = values;
    }
    return this.out;
  }

  async steps() {
    for (const step of this.scenario.steps) {
      const method = this[`step_${step.do}`];
      if (typeof method !== "function") throw new Error(`unknown step ${step.do}`);
      await method.call(this, step);
    }
  }

  invoke(step) {
    const args = native(step.args ?? []);
    const kwargs = native(step.kwargs ?? null);
    const options = "timeout" in step ? { timeout: seconds(step.timeout) } : {};
    return this.client.invoke(step.method, args, kwargs, options);
  }

  async outcome(promise) {
    try {
      return { result: jsonable(await within(promise, WAIT_BOUND)) };
    } catch (e) {
      return errorJson(e);
    }
  }

  async step_connect() {
    const client = new HubClient(this.scenario.url, clientOptions(this.options, this.recorder, this.page));
    try {
      this.client = await client.whenReady();
    } catch (e) {
      this.out.connect = errorJson(e);
      return;
    }
    this.out.connect = "ok";
    this.out.connection_id = this.client.connectionId;
  }

  async step_call(step) {
    this.out[step.label] = await this.outcome(this.invoke(step));
  }

  async step_start_call(step) {
    const promise = this.invoke(step);
    promise.catch(() => undefined); // awaited by await_call
    this.started[step.label] = promise;
  }

  async step_await_call(step) {
    this.out[step.label] = await this.outcome(this.started[step.label]);
    delete this.started[step.label];
  }

  async step_calls(step) {
    const promises = Array.from({ length: step.count }, (_, i) => this.client.invoke("echo", [i]));
    let answered = 0;
    const errors = [];
    for (const [i, promise] of promises.entries()) {
      const outcome = await this.outcome(promise);
      if (outcome.result === i) answered++;
      else if (errors.length < 3) errors.push(outcome);
    }
    this.out[step.label] = { answered, errors };
  }

  async step_stream(step) {
    const stream = this.client.streamWith(step.method, native(step.args ?? []), native(step.kwargs ?? null), {
      window: step.window ?? 16,
    });
    const take = step.take ?? null;
    const items = [];
    const out = { items };
    const consume = async () => {
      while (take === null || items.length < take) {
        const next = await stream.next();
        if (next.done) {
          out.end = "ok";
          return;
        }
        items.push(jsonable(next.value));
      }
      if (take) {
        stream.cancel();
        out.end = "cancelled";
      } else {
        this.streams.push(stream);
      }
    };
    try {
      await within(consume(), WAIT_BOUND);
    } catch (e) {
      Object.assign(out, errorJson(e));
    }
    this.out[step.label] = out;
  }

  async step_upload(step) {
    const recorder = this.recorder;
    async function* numbers() {
      let made = 0;
      try {
        for (let i = 0; i < step.count; i++) {
          made++;
          yield i;
        }
      } finally {
        recorder.add("source_closed", made);
      }
    }
    this.out[step.label] = await this.outcome(this.client.invoke(step.method, [numbers()]));
  }

  async step_notify(step) {
    try {
      this.client.notifyWith(step.method, native(step.args ?? []), native(step.kwargs ?? null));
    } catch (e) {
      this.out[step.label ?? "notify"] = errorJson(e);
    }
  }

  async step_wait(step) {
    try {
      await within(this.recorder.wait(step.event, step.count ?? 1), WAIT_BOUND);
    } catch (e) {
      if (!(e instanceof StepTimeout)) throw e;
      (this.out.waited_in_vain ??= []).push(step.event);
    }
  }

  async step_sleep(step) {
    await sleep(seconds(step.seconds));
  }

  /** Block the event loop (a stalled page): nothing runs meanwhile, on purpose. */
  async step_block(step) {
    const end = Date.now() + seconds(step.seconds);
    while (Date.now() < end) {
      // busy
    }
  }

  /** The browser freezes the page (the Page Lifecycle API's `freeze` event). */
  async step_freeze_page() {
    this.page.document.dispatchEvent(new Event("freeze"));
  }

  async step_wait_disconnect() {
    try {
      this.out.disconnect = reasonJson(await within(this.client.waitForDisconnect(), WAIT_BOUND));
    } catch (e) {
      if (!(e instanceof StepTimeout)) throw e;
      this.out.disconnect = errorJson(e);
    }
  }

  async step_disconnect() {
    this.out.disconnect = reasonJson(await within(this.client.disconnect(), WAIT_BOUND));
  }

  async step_state(step) {
    this.out[step.label ?? "is_connected"] = this.client.isConnected;
  }

  async step_clock() {
    const offset = this.client.clockOffset;
    this.out.clock = {
      offset: offset === null ? null : offset.offset / 1000,
      server_now_ahead: (this.client.serverNow().getTime() - Date.now()) / 1000,
    };
  }

  async step_reconnecting_start() {
    const delay = seconds(this.options.retry_delay ?? 0.05);
    this.reconnecting = new ReconnectingHubClient(this.scenario.url, null, {
      ...clientOptions(this.options, this.recorder),
      // A fixed delay: the jitter's random number is pinned to its top.
      retry: { initialDelay: delay, factor: 1, maxDelay: delay, random: () => 1 },
      onConnected: (client) => this.recorder.add("connected", client.connectionId),
      onResumed: (client) => this.recorder.add("resumed", client.connectionId),
      resume: this.options.resume ?? false,
    });
    this.reconnecting.start();
  }

  async step_reconnecting_call(step) {
    this.out[step.label] = await this.outcome(this.reconnecting.call(step.method, ...native(step.args ?? [])));
  }

  async step_reconnecting_stop() {
    const client = this.reconnecting;
    this.reconnecting = null;
    await within(client.stop(), WAIT_BOUND);
    this.out.connections = client.connections;
    this.out.disconnects = client.disconnects.map(reasonJson);
    this.out.resumes = client.resumes;
    this.out.resume_refusals = Object.fromEntries(Object.entries(client.resumeRefusals).filter(([, n]) => n > 0));
  }
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const scenarios = JSON.parse(Buffer.concat(chunks).toString("utf-8"));
  const outcomes = {};
  for (const scenario of scenarios) outcomes[scenario.name] = await new Run(scenario).run();
  process.stdout.write(JSON.stringify(outcomes));
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
