// In-memory test doubles: a clock whose timers run only when told, and a
// WebSocket whose "server" is the test.
import { decodeMulti, encode } from "@msgpack/msgpack";

export class FakeClock {
  constructor(start = 1_767_225_600_000) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
  }
  now() {
    return this.time;
  }
  setTimeout(callback, ms) {
    const id = this.nextId++;
    this.timers.set(id, { due: this.time + Math.max(0, ms), callback, id });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  /** Run every timer due within `ms`, in order, each at its due time. */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const timer of this.timers.values()) {
        if (timer.due <= end && (next === null || timer.due < next.due || (timer.due === next.due && timer.id < next.id))) next = timer;
      }
      if (next === null) break;
      this.timers.delete(next.id);
      this.time = Math.max(this.time, next.due);
      next.callback();
    }
    this.time = end;
  }
  /** The event loop was blocked for `ms`: time passes, no timer runs. */
  block(ms) {
    this.time += ms;
  }
}

export const SUBPROTOCOL = "twisted-hub.v1";

export class FakeWebSocket {
  static instances = [];
  constructor(url, protocols, options) {
    this.url = url;
    this.protocols = protocols;
    this.options = options;
    this.protocol = "";
    this.readyState = 0;
    this.binaryType = "blob"; // as browsers start; Node's `ws` starts with "nodebuffer"
    this.sent = [];
    this.closedWith = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeWebSocket.instances.push(this);
  }
  static latest() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }
  send(data) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(new Uint8Array(data));
  }
  close(code, reason) {
    if (this.closedWith === null) this.closedWith = { code, reason };
    this.readyState = 2;
  }
  // -- the test plays the server --
  open(protocol = SUBPROTOCOL) {
    this.protocol = protocol;
    this.readyState = 1;
    this.onopen?.({});
  }
  welcome(info = { caps: ["heartbeat", "batch"], id: "c-1", max: 1048576 }) {
    this.deliver([1, info]);
  }
  /** One frame holding these message arrays. */
  deliver(...messages) {
    const parts = messages.map((m) => encode(m));
    const size = parts.reduce((n, p) => n + p.length, 0);
    const frame = new Uint8Array(size);
    let offset = 0;
    for (const part of parts) {
      frame.set(part, offset);
      offset += part.length;
    }
    this.deliverBytes(frame);
  }
  deliverBytes(bytes) {
    const copy = new Uint8Array(bytes);
    this.onmessage?.({ data: copy.buffer });
  }
  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }
  /** Every message sent so far, decoded, frame by frame. */
  frames() {
    return this.sent.map((frame) => [...decodeMulti(frame)]);
  }
  messages() {
    return this.frames().flat();
  }
  takeMessages() {
    const messages = this.messages();
    this.sent = [];
    return messages;
  }
}

/** Let queued microtasks (the client's same-tick batching) run. */
export async function settle() {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}
