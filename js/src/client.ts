/**
 * The hub client: one WebSocket connection to one hub (docs/protocol.md).
 *
 *     const client = await connect("ws://127.0.0.1:8080/hub", "chat", { receiver });
 *     console.log(await client.call("join", "lobby", "ann"));
 */
import { ClockSync, HeartbeatTracker, InputProgress, MIN_PROGRESS_BYTES, OutputProgress, StallDetector, type ClockOffset } from "./heartbeat.js";
import {
  CallTimeoutError,
  ConnectionClosedError,
  DisconnectKind,
  HandshakeError,
  HubError,
  kindForClose,
  type DisconnectReason,
} from "./errors.js";
import {
  BATCH_BYTES,
  BATCH_MESSAGES,
  CAPABILITIES,
  CloseCode,
  ErrorCode,
  MAX_MESSAGES_PER_FRAME,
  MessageKind,
  ProtocolError,
  SUBPROTOCOL,
  TooManyMessagesError,
  callFields,
  closeReason,
  decodeFrame,
  encodeMessage,
  joinFrames,
  parseServerMessage,
  type ClientInvoke,
  type Kwargs,
  type ReceiverCall,
  type ServerMessage,
  type Welcome,
  ResumeReason,
} from "./wire.js";
import { PageWatch, browserPage, type PageLifecycle } from "./lifecycle.js";
import { HubStream, STREAM_WINDOW, StreamPump, isStreamSource } from "./streams.js";
import { Ledger, type ResumeOptions } from "./resume.js";

/** Time and timers, injectable for tests.  Times are wall-clock milliseconds. */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The part of the standard WebSocket this client uses (browsers, Node 22, `ws`). */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly readyState: number;
  /** bytes passed to send() not yet transmitted (browsers, Node's `ws`); read for "progress counts as life" */
  readonly bufferedAmount?: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/**
 * A WebSocket constructor.  The third argument is for Node's `ws`: its
 * `maxPayload` is set to the client's `maxMessageSize`, so that `ws` refuses
 * a larger message from its header on (close 1009) instead of buffering it
 * whole; browsers and other implementations ignore it.
 */
export type WebSocketConstructor = new (
  url: string,
  protocols: string | string[],
  options?: { maxPayload?: number },
) => WebSocketLike;

/** Where log lines go; by default warnings and errors go to the console. */
export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}

/** A heartbeat from the server (Python's `ServerHeartbeatEvent`). */
export interface ServerHeartbeatEvent {
  sequence: number;
  /** when the server sent it (UTC) */
  serverTime: Date;
  /** the same, microseconds since the Unix epoch, as on the wire */
  serverTimeUs: number;
  /** bytes from the server's metadata provider, or null */
  metadata: Uint8Array | null;
}

/** The server answered our heartbeat (Python's `ClientHeartbeatEvent`). */
export interface ClientHeartbeatEvent {
  sequence: number;
  /** full round trip, milliseconds */
  roundTrip: number;
  /** the clock-offset sample this exchange gave */
  clock: ClockOffset;
}

/** The receiver: an object whose methods the server may call. */
export type Receiver = object;

/**
 * Client settings.  Times are in **milliseconds** (like every JavaScript
 * timer, and Tank's `heartbeatInterval`); Python's `HubClientOptions` takes
 * seconds.
 */
export interface HubClientOptions {
  /** methods the server may call (receiver calls and client results) */
  receiver?: Receiver;
  /** the WebSocket constructor (default: the global one; in Node < 22 pass `ws`'s) */
  WebSocket?: WebSocketConstructor;
  /** ms between our own heartbeats (default: off) */
  heartbeatInterval?: number | null;
  /** ms without an answer before the server is declared gone; default 3 × interval, null: never */
  heartbeatTimeout?: number | null;
  /** called for every server heartbeat (after it was answered) */
  onServerHeartbeat?: (event: ServerHeartbeatEvent) => void;
  /** called for every answer to our heartbeat */
  onHeartbeatResponse?: (event: ClientHeartbeatEvent) => void;
  /** called when our heartbeat times out, just before the connection is dropped */
  onHeartbeatTimeout?: () => void;
  /** called once when the connection has ended, with the reason */
  onDisconnected?: (reason: DisconnectReason) => void;
  /** any data from the server since the oldest unanswered beat counts as an answer */
  anyTrafficCounts?: boolean;
  /** when our own event loop stalled right before the timeout fired, give the server one more exchange (default true) */
  stallGrace?: boolean;
  /** default ms a call may wait for its result (default: until the connection closes) */
  callTimeout?: number | null;
  /** largest message we accept, bytes (default 1 MiB), announced as `max` */
  maxMessageSize?: number;
  /**
   * most messages one frame from the server may hold (default 1,024, as the
   * Python client); over it none of them is handled and we close with 1008
   */
  maxMessagesPerFrame?: number;
  /** ms to wait for the WebSocket and the hub handshake (default 30 s) */
  connectTimeout?: number;
  /**
   * The access token of each connection: a string, or a function returning
   * one (or a Promise of it; null: none), called at every connect and
   * reconnect and again before the token expires, when the fresh token goes
   * to the server over the open connection (docs/auth.md).  Sent in the
   * subprotocol `twisted-hub.bearer.TOKEN` when it is made of HTTP token
   * characters (a JWT is), else as the query parameter `access_token`.
   */
  accessToken?: string | (() => string | null | undefined | Promise<string | null | undefined>);
  clock?: Clock;
  log?: Logger;
  /**
   * The page whose freezing ends this connection (default: the browser's
   * `document` and `window`; none in Node); null: don't watch.
   */
  page?: PageLifecycle | null;
}

export interface CallOptions {
  /** ms to wait for the result; null: no limit (default: the client's `callTimeout`) */
  timeout?: number | null;
}

/** The methods of a hub interface as promise-returning calls. */
export type HubProxy<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => infer R
    ? (...args: A) => Promise<Awaited<R>>
    : never;
};

const DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024;
const OPEN = 1;
/** How long after our heartbeat timeout we wait for the close handshake before dropping (Node `ws`). */
const DROP_AFTER_TIMEOUT_MS = 1000;

function defaultClock(): Clock {
  const perf = (globalThis as { performance?: { timeOrigin?: number; now(): number } }).performance;
  const now =
    perf !== undefined && typeof perf.timeOrigin === "number"
      ? () => perf.timeOrigin! + perf.now()
      : () => Date.now();
  return {
    now,
    setTimeout: (callback, ms) => setTimeout(callback, ms),
    clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
  };
}

const consoleLogger: Logger = {
  debug() {},
  info() {},
  warn: (message) => console.warn(`twisted-hub: ${message}`),
  error: (message, error) => console.error(`twisted-hub: ${message}`, error ?? ""),
};

function toBytes(data: unknown): Uint8Array | null {
  if (data instanceof Uint8Array) {
    // A Node Buffer: view the same memory as a plain Uint8Array (no copy), so
    // bin values decoded from it are Uint8Arrays as in browsers.
    return data.constructor === Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data) && data.every((part) => part instanceof Uint8Array)) return joinFrames(data);
  return null;
}

/** The URL of one hub: `url` with the hub name as its last path segment (before any query). */
export function hubUrl(url: string, hub?: string | null): string {
  if (!hub) return url;
  const query = url.indexOf("?");
  const path = query < 0 ? url : url.slice(0, query);
  return path.replace(/\/+$/, "") + "/" + encodeURIComponent(hub) + (query < 0 ? "" : url.slice(query));
}

interface PendingCall {
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: unknown;
}

type State = "connecting" | "open" | "closing" | "closed";

/** Disconnect kinds after which a session is resumed (protocol.md 10.4); any other ends it. */
const RESUMABLE: readonly string[] = [DisconnectKind.CONNECTION_LOST, DisconnectKind.TIMED_OUT, DisconnectKind.PEER_TIMED_OUT, DisconnectKind.GOING_AWAY];

/**
 * What outlives one connection when a session resumes (protocol.md section
 * 10): the calls in flight, the streams both ways, the id counters (call
 * ids increase over the session) and the resume ledger.  A plain HubClient has one of
 * its own; a ReconnectingHubClient with `resume` hands one to each of its
 * connections.
 * @internal
 */
export class Session {
  readonly pending = new Map<number, PendingCall>();
  /** result streams we consume, by call id; argument streams we produce, by stream id */
  readonly streams = new Map<number, HubStream<unknown>>();
  readonly pumps = new Map<number, StreamPump>();
  nextCallId = 1;
  nextStreamId = 1;
  /** the session's open connection (null between connections) */
  owner: HubClient | null = null;
  /** the token (never logged), while there is a session to resume */
  token: Uint8Array | null = null;
  /** numbering and acknowledgements, while `resume` is negotiated */
  ledger: Ledger | null = null;

  constructor(
    /** resume wanted (null: never announced) */
    readonly policy: Required<ResumeOptions> | null = null,
    /** a resume was refused, for this reason */
    readonly refused: (reason: string) => void = () => {},
  ) {}

  /**
   * A connection ended.  If the session goes on (`resumes`), everything
   * carries over to the next connection: calls, streams both ways (with
   * their credit; what they send meanwhile is kept and replayed).  Else it
   * is over: its calls fail (they may have run), its streams fail, the
   * argument streams' sources are closed and the token is forgotten.
   */
  end(reason: DisconnectReason, clock: Clock, resumes = false): void {
    if (resumes) return;
    for (const pump of this.pumps.values()) pump.cancel();
    this.pumps.clear();
    for (const [callId, call] of this.pending) {
      this.pending.delete(callId);
      clock.clearTimeout(call.timer);
      call.reject(new ConnectionClosedError(reason, true));
    }
    this.token = this.ledger = null;
  }
}

/** One connection to one hub.  Get one from {@link connect}. */
export class HubClient {
  readonly url: string;
  readonly options: HubClientOptions;
  /** the WELCOME the server sent, once connected */
  welcome: Welcome | null = null;
  /** why the connection ended, once it has */
  disconnectReason: DisconnectReason | null = null;
  /** the stall detector of our heartbeat timers (how late they fired) */
  readonly stall = new StallDetector();
  /**
   * Our heartbeats unanswered past their timeout whose server was kept
   * because data was still moving: it was taking our data (`bufferedAmount`
   * falling) or, in Node's `ws`, more of its large message to us arrived;
   * each counted once: "progress counts as life" at work.
   */
  timeoutsAvoided = 0;

  // a stand-in until the socket exists (while the token provider runs)
  #ws = { readyState: 0, close() {} } as unknown as WebSocketLike;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #maxMessageSize: number;
  readonly #maxMessagesPerFrame: number;
  #state: State = "connecting";
  readonly #ready: Promise<HubClient>;
  #resolveReady!: (client: HubClient) => void;
  #rejectReady!: (error: Error) => void;
  readonly #disconnected: Promise<DisconnectReason>;
  #resolveDisconnected!: (reason: DisconnectReason) => void;
  /** this connection resumed a session (protocol.md section 10) */
  resumed = false;
  readonly #session: Session;
  /** `resume` was negotiated on this connection */
  #negotiated = false;
  /** the resume answer this connection waits for: SESSION or RESUMED (0: none) */
  #awaiting = 0;
  #ackTimer: unknown = null;
  #isReady = false;
  #outgoing: Uint8Array[] = [];
  #flushScheduled = false;
  #handling = 0;
  #closeReasonSeen: DisconnectReason | null = null;
  #handshakeError: string | null = null;
  #connectTimer: unknown = null;
  #sentClose = false;
  // heartbeats
  readonly #tracker = new HeartbeatTracker();
  readonly #clockSync = new ClockSync();
  #beatTimer: unknown = null;
  #nextBeatDue = 0;
  #timeoutTimer: unknown = null;
  #timeoutDue = 0;
  /** after a stall grace the timeout runs from here, not from older beats */
  #graceFloor = -Infinity;
  #graceUsed = false;
  #lastReceived = -Infinity;
  /** watches the page for being frozen (browsers only) */
  #pageWatch: PageWatch | null = null;
  /** the page was frozen (or put in the back/forward cache) while this connection was up */
  #pageFrozen = false;
  /** bytes passed to the socket's send(), and whether it shows progress (docs/heartbeat.md, "Slow links") */
  #bytesSent = 0;
  readonly #progress = new OutputProgress();
  /**
   * Node's `ws`: the socket under the WebSocket (its "upgrade" event's
   * response.socket), whose bytesRead shows a large message arriving; and
   * bytesRead when the latest whole message was delivered
   */
  #socket: { bytesRead: number } | null = null;
  #readAtLastMessage = 0;
  readonly #inputProgress = new InputProgress();
  /** bytesSent when each unanswered beat was sent, oldest first */
  readonly #sentAtBeat = new Map<number, number>();
  /** bytesSent when the latest answered beat was sent: its answer shows the server had everything before it */
  #sentAtLastAnswer = 0;
  /** when a server heartbeat arrived while we were uploading and our beat was unanswered (null: not in this wait) */
  #serverBeatAt: number | null = null;
  #excused = false;
  // fresh tokens
  #tokenSequence = 0;
  #refreshTimer: unknown = null;
  /** seconds the current token had left at `refreshAt` (our clock, ms) */
  #expiresIn = 0;
  #refreshAt = 0;

  constructor(url: string, options: HubClientOptions = {}, /** @internal */ session = new Session()) {
    this.url = url;
    this.options = options;
    this.#session = session;
    this.#clock = options.clock ?? defaultClock();
    this.#log = options.log ?? consoleLogger;
    this.#maxMessageSize = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
    this.#maxMessagesPerFrame = options.maxMessagesPerFrame ?? MAX_MESSAGES_PER_FRAME;
    if (!Number.isInteger(this.#maxMessagesPerFrame) || this.#maxMessagesPerFrame <= 0) {
      throw new RangeError(`maxMessagesPerFrame must be a positive integer, got ${String(options.maxMessagesPerFrame)}`);
    }
    checkPositive("heartbeatInterval", options.heartbeatInterval);
    checkPositive("heartbeatTimeout", options.heartbeatTimeout);
    checkPositive("callTimeout", options.callTimeout);
    this.#ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // A failed connect is reported by connect(); don't let it be "unhandled" here.
    this.#ready.catch(() => undefined);
    this.#disconnected = new Promise((resolve) => {
      this.#resolveDisconnected = resolve;
    });
    const Constructor =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (Constructor === undefined) {
      throw new TypeError("no WebSocket constructor: pass options.WebSocket (e.g. the `ws` package's) in Node < 22");
    }
    const token = options.accessToken;
    let given: unknown;
    try {
      given = typeof token === "function" ? token() : token;
    } catch (e) {
      given = Promise.reject(e);
    }
    if (given instanceof Promise) {
      given.then(
        (value) => this.#open(Constructor, url, value),
        (e: unknown) => {
          this.#handshakeError = `access token provider: ${String(e)}`;
          this.#finish(this.#handshakeFailure());
        },
      );
    } else {
      this.#open(Constructor, url, given);
    }
    const page = options.page === undefined ? browserPage() : options.page;
    if (page !== null) {
      this.#pageWatch = new PageWatch(
        page,
        () => {
          if (this.#state !== "closed") this.#pageFrozen = true;
        },
        null,
      );
    }
    const connectTimeout = options.connectTimeout ?? 30000;
    this.#connectTimer = this.#clock.setTimeout(() => {
      this.#connectTimer = null;
      if (this.#state === "connecting") {
        this.#handshakeError = `no hub handshake within ${connectTimeout} ms`;
        this.#closeSocket(CloseCode.HANDSHAKE_FAILED, "handshake timeout");
        this.#finish({ ...this.#handshakeFailure(), locally: true });
      }
    }, connectTimeout);
  }

  #open(Constructor: WebSocketConstructor, url: string, token: unknown): void {
    if (this.#state !== "connecting") return this.#finish(this.#handshakeFailure());
    const protocols = [SUBPROTOCOL];
    if (typeof token === "string" && token) {
      // Browsers set no headers on a WebSocket: a subprotocol (kept out of URLs and their logs), else the query.
      if (/^[\w!#$%&'*+.^`|~-]+$/.test(token)) protocols.push("twisted-hub.bearer." + token);
      else url += (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
    }
    const ws = (this.#ws = new Constructor(url, protocols, { maxPayload: this.#maxMessageSize }));
    // Node's `ws` hands over Buffers (no copy) by default; browsers and
    // undici would give Blobs, which need an asynchronous read.
    if (ws.binaryType !== "nodebuffer") ws.binaryType = "arraybuffer";
    ws.onopen = () => this.#opened();
    ws.onmessage = (event) => this.#received(event.data);
    const on = (ws as { on?: (name: string, listener: (response: { socket?: { bytesRead?: unknown } }) => void) => void }).on;
    if (typeof on === "function") {
      on.call(ws, "upgrade", (response) => {
        const socket = response.socket;
        if (socket && typeof socket.bytesRead === "number") this.#socket = socket as { bytesRead: number };
      });
    }
    ws.onclose = (event) => this.#closed(event.code, event.reason);
    ws.onerror = (event) => {
      const error = (event as { error?: unknown; message?: unknown }).error ?? event;
      const message = (error as { message?: unknown }).message;
      if (typeof message === "string") this.#handshakeError = message;
      const code = failureCode(error);
      if (code !== null) this.#websocketFailed(code, typeof message === "string" ? message : "");
    };
  }

  // -- public API -----------------------------------------------------------

  /** Resolves with this client once the hub handshake is done. */
  whenReady(): Promise<HubClient> {
    return this.#ready;
  }

  /** The connection id the server gave (in its logs too), "" before WELCOME. */
  get connectionId(): string {
    return this.welcome?.connectionId ?? "";
  }

  get isConnected(): boolean {
    return this.#state === "open";
  }

  /** Round trip of our newest answered heartbeat, ms (0 before any). */
  get roundTrip(): number {
    return this.#tracker.latency;
  }

  /** Best estimate of server clock - our clock (ms), with its error bound; null before any answer. */
  get clockOffset(): ClockOffset | null {
    return this.#clockSync.best;
  }

  /** The server's current time, from our clock and the estimated offset. */
  serverNow(): Date {
    return new Date(this.#clock.now() + (this.#clockSync.best?.offset ?? 0));
  }

  /** Call a hub method; resolves with its result, rejects with a {@link HubError}. */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T> {
    return this.invoke<T>(method, args);
  }

  /** {@link call} with keyword arguments and per-call options. */
  invoke<T = unknown>(method: string, args: unknown[] = [], kwargs?: Kwargs | null, options: CallOptions = {}): Promise<T> {
    let callId: number, payload: Uint8Array, pumps: StreamPump[];
    try {
      [callId, payload, pumps] = this.#prepareCall(method, args, kwargs, null);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return new Promise<T>((resolve, reject) => {
      const timeout = options.timeout !== undefined ? options.timeout : (this.options.callTimeout ?? null);
      const call: PendingCall = { resolve: resolve as (v: unknown) => void, reject, timer: null };
      if (timeout !== null) {
        call.timer = this.#clock.setTimeout(() => {
          if (this.#session.pending.delete(callId)) reject(new CallTimeoutError(`'${method}' got no result within ${timeout} ms`));
        }, timeout);
      }
      this.#session.pending.set(callId, call);
      this.#send(payload);
      this.#startPumps(pumps);
    });
  }

  /**
   * Call a hub method that answers with a stream; iterate it as items arrive:
   * `for await (const tick of client.stream("ticks", 10))` (docs/streams.md).
   * Arguments that are async iterables are streamed to the server, as with {@link call}.
   */
  stream<T = unknown>(method: string, ...args: unknown[]): HubStream<T> {
    return this.streamWith<T>(method, args);
  }

  /** {@link stream} with keyword arguments and the credit window (items, default 16). */
  streamWith<T = unknown>(method: string, args: unknown[] = [], kwargs?: Kwargs | null, options: { window?: number } = {}): HubStream<T> {
    const window = options.window ?? STREAM_WINDOW;
    let callId: number, payload: Uint8Array, pumps: StreamPump[];
    try {
      [callId, payload, pumps] = this.#prepareCall(method, args, kwargs, window);
    } catch (e) {
      const failed = new HubStream<T>(0, window, () => {}, () => {});
      failed.finish(e as Error);
      return failed;
    }
    const stream = new HubStream<T>(
      callId,
      window,
      (credit) => this.#send(encodeMessage([18 /* STREAM_CREDIT */, callId, credit])),
      () => {
        this.#session.streams.delete(callId);
        if (this.#takeCall(callId)) this.#send(encodeMessage([19 /* STREAM_CANCEL */, callId]));
      },
    );
    const finish = (error: Error | null): void => {
      this.#session.streams.delete(callId);
      stream.finish(error);
    };
    this.#session.pending.set(callId, { resolve: () => finish(null), reject: finish, timer: null });
    this.#session.streams.set(callId, stream as HubStream<unknown>);
    this.#send(payload);
    this.#startPumps(pumps);
    return stream;
  }

  /** Encode a call (INVOKE, or STREAM_INVOKE with `window`), its stream arguments declared; throws what the caller rejects with. */
  #prepareCall(method: string, args: unknown[], kwargs: Kwargs | null | undefined, window: number | null): [number, Uint8Array, StreamPump[]] {
    if (this.#state !== "open") throw new ConnectionClosedError(this.#currentReason());
    const streaming = this.welcome?.capabilities.includes("stream") ?? false;
    const callId = this.#session.nextCallId++;
    const declared: [number, number][] = [];
    const pumps: StreamPump[] = [];
    const place = (where: number, value: unknown): unknown => {
      if (!isStreamSource(value)) return value;
      const streamId = this.#session.nextStreamId++;
      declared.push([where, streamId]);
      pumps.push(new StreamPump(streamId, value, (fields) => this.#send(encodeMessage(fields))));
      return null;
    };
    let payload: Uint8Array;
    try {
      if (Array.isArray(args)) args = args.map((value, index) => place(index, value));
      if ((window !== null || declared.length > 0) && !streaming) {
        throw new HubError("stream-mismatch", "no 'stream' capability");
      }
      const fields = callFields([window === null ? MessageKind.INVOKE : MessageKind.STREAM_INVOKE, callId, method], args, kwargs);
      if (window !== null || declared.length > 0) {
        if (fields.length === 4) fields.push(null);
        if (window !== null) fields.push(window);
        if (declared.length > 0) fields.push(declared);
      }
      payload = encodeMessage(fields);
    } catch (e) {
      if (e instanceof HubError) throw e;
      throw new HubError(ErrorCode.INVALID_ARGUMENTS, `${method}: ${(e as Error).message}`);
    }
    const limit = this.#sendLimit();
    if (payload.length > limit) {
      throw new HubError(ErrorCode.INVALID_ARGUMENTS, `${method}: the call is ${payload.length} bytes, over the limit of ${limit}`);
    }
    return [callId, payload, pumps];
  }

  #startPumps(pumps: StreamPump[]): void {
    for (const pump of pumps) {
      this.#session.pumps.set(pump.streamId, pump);
      void pump
        .run()
        .catch((e: unknown) => this.#log.warn(String(e)))
        .finally(() => this.#session.pumps.delete(pump.streamId));
    }
  }

  /** Call a hub method without waiting for (or getting) an answer. */
  notify(method: string, ...args: unknown[]): void {
    this.notifyWith(method, args);
  }

  /** {@link notify} with keyword arguments.  Throws when not connected or the arguments cannot be sent. */
  notifyWith(method: string, args: unknown[] = [], kwargs?: Kwargs | null): void {
    if (this.#state !== "open") throw new ConnectionClosedError(this.#currentReason());
    let payload: Uint8Array;
    try {
      payload = encodeMessage(callFields([MessageKind.NOTIFY, method], args, kwargs));
    } catch (e) {
      throw new HubError(ErrorCode.INVALID_ARGUMENTS, `${method}: ${(e as Error).message}`);
    }
    if (payload.length > this.#sendLimit()) {
      throw new HubError(ErrorCode.INVALID_ARGUMENTS, `${method}: the notification is over the size limit`);
    }
    this.#send(payload);
  }

  /**
   * The hub as an object: `const chat = client.proxy<ChatHub>()`, then
   * `await chat.join("lobby", "ann")`.  `T` is the hub's interface (write it,
   * or generate it with `python -m twisted_hub typescript module:Hub`).
   */
  proxy<T extends object>(): HubProxy<T> {
    return makeProxy<T>((method, args) => this.invoke(method, args));
  }

  /** Close the connection (code 1000); resolves with the reason once closed. */
  disconnect(reason = ""): Promise<DisconnectReason> {
    if (this.#state === "open" || this.#state === "connecting") {
      this.#closeReasonSeen ??= {
        kind: DisconnectKind.NORMAL,
        code: CloseCode.NORMAL,
        message: reason,
        locally: true,
      };
      this.#flush();
      this.#state = "closing";
      this.#stopHeartbeat();
      this.#closeSocket(CloseCode.NORMAL, reason);
    }
    return this.#disconnected;
  }

  /** Resolves with the {@link DisconnectReason} once the connection has ended. */
  waitForDisconnect(): Promise<DisconnectReason> {
    return this.#disconnected;
  }

  // -- receiving ------------------------------------------------------------

  #opened(): void {
    if (this.#ws.protocol !== SUBPROTOCOL) {
      this.#handshakeError = `the server chose subprotocol '${this.#ws.protocol}', not ${SUBPROTOCOL}`;
      this.#closeSocket(CloseCode.PROTOCOL_ERROR, "wrong subprotocol");
      this.#finish(this.#handshakeFailure());
      return;
    }
    // HELLO goes alone in its frame, without waiting for WELCOME (with resume
    // wanted, once WELCOME said whether the server resumes: protocol.md 10.5).
    if (!this.#session.policy) this.#ws.send(this.#hello(false));
  }

  #hello(resume: boolean): Uint8Array {
    const caps = [...CAPABILITIES];
    if (typeof this.options.accessToken === "function") caps.push("token-refresh");
    if (resume) caps.push("resume");
    return encodeMessage([MessageKind.HELLO, { caps, max: this.#maxMessageSize }]);
  }

  #received(data: unknown): void {
    if (this.#state === "closed") return;
    if (this.#socket) this.#readAtLastMessage = this.#socket.bytesRead;
    const payload = toBytes(data);
    if (payload === null) {
      this.#protocolError("a text frame", CloseCode.UNSUPPORTED_DATA);
      return;
    }
    if (payload.length > this.#maxMessageSize) {
      this.#closeReasonSeen ??= {
        kind: DisconnectKind.MESSAGE_TOO_BIG,
        code: CloseCode.MESSAGE_TOO_BIG,
        message: `a message of ${payload.length} bytes is over our limit of ${this.#maxMessageSize}`,
        locally: true,
      };
      this.#closeSocket(CloseCode.MESSAGE_TOO_BIG, "message too big");
      return;
    }
    const now = this.#clock.now();
    this.#lastReceived = now;
    this.#handling++;
    try {
      for (const message of decodeFrame(payload, parseServerMessage, this.#maxMessagesPerFrame)) {
        if (this.#isClosed()) break;
        this.#dispatch(message, now);
      }
    } catch (e) {
      if (e instanceof TooManyMessagesError) {
        this.#log.info(`the server sent ${e.message}; closing with 1008`);
        this.#protocolError(e.message, CloseCode.POLICY_VIOLATION);
      } else if (e instanceof ProtocolError) {
        this.#log.info(`protocol error from the server: ${e.message}`);
        this.#protocolError(e.message.slice(0, 100), CloseCode.PROTOCOL_ERROR);
      } else {
        this.#log.error("unexpected error handling a frame from the server", e);
        this.#protocolError("internal error", CloseCode.INTERNAL_ERROR);
      }
    } finally {
      this.#handling--;
      if (this.#handling === 0) {
        this.#ackCheck(now);
        this.#flush();
      }
    }
  }

  #dispatch(message: ServerMessage, now: number): void {
    if (this.welcome === null && message.kind !== MessageKind.WELCOME) {
      throw new ProtocolError(`the first message must be WELCOME, got kind ${message.kind}`);
    }
    const kind = message.kind;
    const s = this.#session;
    // The server's sequenced messages are counted, not numbered on the wire (protocol.md 10.2).
    if ((kind > 3 && kind < 8) || (kind > 15 && kind < 20)) s.ledger?.receive(now);
    switch (kind) {
      case MessageKind.WELCOME:
        if (this.welcome !== null) throw new ProtocolError("a second WELCOME");
        this.#welcomed(message);
        return;
      case MessageKind.RESULT: {
        const call = this.#takeCall(message.callId);
        call?.resolve(message.value);
        return;
      }
      case MessageKind.ERROR: {
        const call = this.#takeCall(message.callId);
        call?.reject(new HubError(message.code, message.message, message.detail));
        return;
      }
      case MessageKind.RECEIVER_CALL:
        this.#receiverCall(message);
        return;
      case MessageKind.CLIENT_INVOKE:
        this.#clientInvoke(message);
        return;
      case MessageKind.CLOSE:
        this.#closeReasonSeen ??= {
          kind: kindForClose(message.code, false),
          code: message.code,
          message: message.reason,
          locally: false,
        };
        // The server closes next; we send nothing more.
        this.#outgoing = [];
        this.#state = "closing";
        this.#stopHeartbeat();
        return;
      case MessageKind.SERVER_HEARTBEAT:
        // Answered here, from the message handler, never from a timer: a
        // throttled background tab still answers in time (engine.io#312).
        this.#queue(this.#withAck([MessageKind.SERVER_HEARTBEAT_ACK, message.sequence]));
        this.#serverBeatArrived();
        if (this.options.onServerHeartbeat) {
          const event: ServerHeartbeatEvent = {
            sequence: message.sequence,
            serverTime: new Date(message.serverTimeUs / 1000),
            serverTimeUs: message.serverTimeUs,
            metadata: message.metadata,
          };
          this.#safely("onServerHeartbeat", () => this.options.onServerHeartbeat!(event));
        }
        return;
      case MessageKind.CLIENT_HEARTBEAT_ACK:
        if (message.ack !== undefined) this.#resumeOnly(kind).ack(message.ack);
        this.#heartbeatAnswered(message.sequence, message.clientTime, message.serverTimeUs, now);
        return;
      case MessageKind.TOKEN_RESULT:
        if (message.error !== null) this.#log.warn(`fresh token refused: ${message.error} ${message.message}`);
        this.#tokenExpires(message.expiresIn, message.error !== null);
        return;
      case MessageKind.STREAM_ITEM:
        // (a stream we no longer know: it crossed our cancel; ignored)
        this.#session.streams.get(message.streamId)?.push(message.item);
        return;
      case MessageKind.STREAM_END:
        if (this.#session.streams.has(message.streamId)) {
          const call = this.#takeCall(message.streamId);
          if (message.code === null) call?.resolve(null);
          else call?.reject(new HubError(message.code, message.message, message.detail));
        }
        return;
      case MessageKind.STREAM_CREDIT:
        this.#session.pumps.get(message.streamId)?.addCredit(message.credit);
        return;
      case MessageKind.STREAM_CANCEL:
        this.#session.pumps.get(message.streamId)?.cancel();
        this.#session.pumps.delete(message.streamId);
        return;
      case MessageKind.SESSION: {
        const ledger = this.#expect(kind, MessageKind.SESSION);
        s.token = message.token;
        ledger.maxAge = message.window * 1000;
        this.#becomeOpen(false);
        return;
      }
      case MessageKind.RESUMED: {
        const replay = this.#expect(kind, kind).replay(message.received, now);
        if (typeof replay === "string") {
          // Our own bound dropped what the server lacks: end the session
          // there too (1000); the next connection starts afresh.
          this.#refused(replay);
          void this.disconnect(`cannot resume: ${replay}`);
          return;
        }
        s.token = message.token;
        this.welcome = { ...this.welcome!, connectionId: message.connectionId };
        // what the server lacks goes first, in order, before anything new
        for (const payload of replay) this.#queue(payload);
        this.#becomeOpen(true);
        return;
      }
      case MessageKind.RESUME_REFUSED:
        this.#expect(kind, MessageKind.RESUMED);
        this.#refused((Object.values(ResumeReason) as string[]).includes(message.reason) ? message.reason : ResumeReason.SESSION_UNKNOWN);
        // a fresh session follows on this connection: SESSION
        s.ledger = new Ledger(s.policy!);
        this.#awaiting = MessageKind.SESSION;
        return;
      case MessageKind.ACK:
        this.#resumeOnly(kind).ack(message.received);
    }
  }

  // -- resume (protocol.md section 10) --------------------------------------

  /** The ledger, when `resume` was negotiated on this connection; else kind 20-24 or an ack is a protocol error. */
  #resumeOnly(kind: number): Ledger {
    const ledger = this.#negotiated ? this.#session.ledger : null;
    if (!ledger) throw new ProtocolError(`kind ${kind} or an ack without resume`);
    return ledger;
  }

  /** A resume answer: only the one this connection waits for (`awaiting`). */
  #expect(kind: number, awaited: number): Ledger {
    const ledger = this.#resumeOnly(kind);
    if (this.#awaiting !== awaited) throw new ProtocolError(`unexpected kind ${kind}`);
    this.#awaiting = 0;
    return ledger;
  }

  /** The session could not be resumed: fail what it kept (as a disconnect would) and report `reason`. */
  #refused(reason: string): void {
    const s = this.#session;
    const message = `the session could not be resumed (${reason})`;
    s.end({ kind: DisconnectKind.CONNECTION_LOST, code: null, message, locally: false }, this.#clock);
    this.#log.info(message);
    s.refused(reason);
  }

  /** Send a sequenced message: numbered and kept while resume is on, sent on the session's open connection. */
  #send(payload: Uint8Array): void {
    const s = this.#session;
    s.ledger?.append(payload, this.#clock.now());
    const owner = s.owner;
    if (owner && owner.#state === "open") owner.#queue(payload);
  }

  /** A heartbeat message, with the acknowledgement when resume is negotiated (protocol.md 10.3). */
  #withAck(fields: unknown[]): Uint8Array {
    const ledger = this.#negotiated ? this.#session.ledger : null;
    if (ledger) fields.push(ledger.acknowledge());
    return encodeMessage(fields);
  }

  /** Send ACK when due (ackEvery messages, or ackDelay after the oldest unacknowledged); else wake up then. */
  #ackCheck(now: number): void {
    const ledger = this.#negotiated && this.#state === "open" ? this.#session.ledger : null;
    if (!ledger) return;
    if (ledger.due(now)) this.#queue(encodeMessage([MessageKind.ACK, ledger.acknowledge()]));
    else if (ledger.since !== null && this.#ackTimer === null) {
      this.#ackTimer = this.#clock.setTimeout(() => {
        this.#ackTimer = null;
        this.#ackCheck(this.#clock.now());
      }, ledger.since + ledger.policy.ackDelay - now);
    }
  }

  // -- fresh tokens (docs/auth.md) -------------------------------------------

  /**
   * The token expires in `expiresIn` s (null: never): ask for a fresh one
   * when a fifth of it is left, at most 60 s before; after a failure
   * (`retry`), when half of what is left has passed, until it expires.
   */
  #tokenExpires(expiresIn: number | null, retry = false): void {
    this.#clock.clearTimeout(this.#refreshTimer);
    if (expiresIn === null || typeof this.options.accessToken !== "function" || !this.welcome?.capabilities.includes("token-refresh")) {
      return;
    }
    this.#expiresIn = expiresIn;
    this.#refreshAt = this.#clock.now();
    const wait = retry ? (expiresIn > 1 ? expiresIn / 2 : -1) : Math.max(expiresIn - Math.min(60, expiresIn / 5), 0);
    if (wait >= 0) this.#refreshTimer = this.#clock.setTimeout(() => void this.refreshToken(), wait * 1000);
  }

  /**
   * Ask the `accessToken` function for a fresh token now and hand it to the
   * server over this connection (done by itself before the token expires).
   */
  async refreshToken(): Promise<void> {
    if (this.#state !== "open") return;
    try {
      const token = await (this.options.accessToken as () => unknown)();
      if (typeof token !== "string" || !token) throw new Error("no token");
      if (this.#state === "open") this.#queue(encodeMessage([MessageKind.TOKEN, ++this.#tokenSequence, token]));
    } catch (e) {
      this.#log.warn(`access token provider: ${String(e)}`);
      // what is left of the current token, from when it was last known
      this.#tokenExpires(this.#expiresIn - (this.#clock.now() - this.#refreshAt) / 1000, true);
    }
  }

  #welcomed(welcome: Welcome): void {
    this.welcome = welcome;
    if (this.#state !== "connecting") return;
    const s = this.#session;
    if (s.policy) {
      // HELLO waited for WELCOME: resume is announced to a server that did.
      const on = (this.#negotiated = welcome.capabilities.includes("resume"));
      const hello = this.#hello(on);
      if (on && s.token) {
        // HELLO and RESUME in one frame, HELLO first (protocol.md 10.5)
        this.#sendNow(joinFrames([hello, encodeMessage([MessageKind.RESUME, s.token, s.ledger!.acknowledge(), s.ledger!.lastSent])]));
        this.#awaiting = MessageKind.RESUMED;
        return;
      }
      this.#sendNow(hello);
      if (s.token) this.#refused(ResumeReason.SESSION_UNKNOWN); // this server cannot resume
      // numbering starts with the session, at this HELLO; SESSION comes first
      s.ledger = on ? new Ledger(s.policy) : null;
      if (on) return void (this.#awaiting = MessageKind.SESSION);
    }
    this.#becomeOpen(false);
  }

  #becomeOpen(resumed: boolean): void {
    if (this.#state !== "connecting") return;
    this.#state = "open";
    this.#isReady = true;
    this.resumed = resumed;
    this.#session.owner = this;
    if (this.#connectTimer !== null) {
      this.#clock.clearTimeout(this.#connectTimer);
      this.#connectTimer = null;
    }
    const interval = this.options.heartbeatInterval;
    if (interval != null && this.welcome!.capabilities.includes("heartbeat")) this.#startHeartbeat(interval);
    this.#tokenExpires(this.welcome!.expiresIn);
    this.#resolveReady(this);
  }

  #takeCall(callId: number): PendingCall | undefined {
    const call = this.#session.pending.get(callId);
    if (call === undefined) return undefined; // timed out or never made: ignored
    this.#session.pending.delete(callId);
    if (call.timer !== null) this.#clock.clearTimeout(call.timer);
    return call;
  }

  #receiverMethod(name: string): ((...args: unknown[]) => unknown) | null {
    const receiver = this.options.receiver as Record<string, unknown> | undefined;
    if (receiver === undefined || name.startsWith("_") || name in Object.prototype) return null;
    const method = receiver[name];
    return typeof method === "function" ? (method as (...args: unknown[]) => unknown) : null;
  }

  #receiverCall(call: ReceiverCall): void {
    const method = this.#receiverMethod(call.method);
    if (method === null) {
      this.#log.warn(`the server called receiver method '${call.method}', which the receiver lacks`);
      return;
    }
    const args = call.kwargs === null ? call.args : [...call.args, call.kwargs];
    try {
      const result = method.apply(this.options.receiver, args);
      if (result instanceof Promise) {
        result.catch((e: unknown) => this.#log.error(`receiver method ${call.method} failed`, e));
      }
    } catch (e) {
      this.#log.error(`receiver method ${call.method} raised`, e);
    }
  }

  #clientInvoke(call: ClientInvoke): void {
    // With resume, a server call runs once per session: a repeat gets the kept answer (protocol.md 10.6).
    const calls = this.#session.ledger;
    const seen = calls?.begin(call.callId, this.#clock.now());
    if (seen instanceof Uint8Array) return this.#send(seen);
    if (seen === "running") return; // its one answer comes when it is done
    const reply = (fields: unknown[]): void => this.#reply(fields, calls);
    const method = this.#receiverMethod(call.method);
    if (seen === "forgotten" || method === null) {
      const [code, text] = seen === "forgotten" ? [ErrorCode.DUPLICATE_CALL, "ran once; answer gone"] : [ErrorCode.UNKNOWN_METHOD, `the client has no method '${call.method}'`];
      return reply([MessageKind.ERROR, call.callId, code, text, null]);
    }
    const failed = (error: unknown): void => {
      if (error instanceof HubError) return reply([MessageKind.ERROR, call.callId, error.code, error.hubMessage, error.detail]);
      this.#log.error(`receiver method ${call.method} raised`, error);
      reply([MessageKind.ERROR, call.callId, ErrorCode.INTERNAL, "internal error", null]);
    };
    const args = call.kwargs === null ? call.args : [...call.args, call.kwargs];
    let result: unknown;
    try {
      result = method.apply(this.options.receiver, args);
    } catch (e) {
      return failed(e);
    }
    if (result instanceof Promise) result.then((value) => reply([MessageKind.RESULT, call.callId, value]), failed);
    else reply([MessageKind.RESULT, call.callId, result]);
  }

  /** Answer a server call; with resume, kept for a repeat (`calls`), and dropped if its session is over. */
  #reply(fields: unknown[], calls?: Ledger | null): void {
    if (calls != this.#session.ledger) return;
    let payload: Uint8Array;
    try {
      payload = encodeMessage(fields);
    } catch (e) {
      this.#log.error("a client result cannot be encoded", e);
      payload = encodeMessage([MessageKind.ERROR, fields[1], ErrorCode.INTERNAL, "result cannot be encoded", null]);
    }
    if (payload.length > this.#sendLimit()) {
      payload = encodeMessage([MessageKind.ERROR, fields[1], ErrorCode.INTERNAL, "the result is too big to send", null]);
    }
    calls?.settle(fields[1] as number, payload, this.#clock.now());
    this.#send(payload);
  }

  // -- heartbeats -----------------------------------------------------------

  #startHeartbeat(interval: number): void {
    this.#log.debug(`client heartbeat timer started: interval=${interval}ms`);
    this.#scheduleBeat(interval);
  }

  #scheduleBeat(interval: number): void {
    this.#nextBeatDue = this.#clock.now() + interval;
    this.#beatTimer = this.#clock.setTimeout(() => this.#beat(interval), interval);
  }

  #beat(interval: number): void {
    this.#beatTimer = null;
    if (this.#state !== "open") return;
    const now = this.#clock.now();
    this.stall.observe(this.#nextBeatDue, now);
    if (this.#tracker.oldestUnanswered !== null) this.#sampleProgress(now);
    this.#sendHeartbeat(now);
    if (this.#state === "open") this.#scheduleBeat(interval);
  }

  #heartbeatTimeout(): number | null {
    const { heartbeatTimeout, heartbeatInterval } = this.options;
    if (heartbeatTimeout !== undefined) return heartbeatTimeout;
    return heartbeatInterval != null ? heartbeatInterval * 3 : null;
  }

  #sendHeartbeat(now: number): void {
    const sequence = this.#tracker.send(now);
    this.#sentAtBeat.set(sequence, this.#bytesSent);
    if (this.#sentAtBeat.size > 256) this.#sentAtBeat.delete(this.#sentAtBeat.keys().next().value!);
    // client_time is opaque to the server: our wall clock in microseconds.
    this.#queue(this.#withAck([MessageKind.CLIENT_HEARTBEAT, sequence, Math.round(now * 1000)]));
    this.#log.debug(`client heartbeat ${sequence} sent`);
    if (this.#timeoutTimer === null) this.#armTimeout();
  }

  /** (Re)arm the timeout from the oldest unanswered beat (or the grace floor). */
  #armTimeout(): void {
    const timeout = this.#heartbeatTimeout();
    const oldest = this.#tracker.oldestUnanswered;
    if (timeout === null || oldest === null) return;
    const due = Math.max(oldest, this.#graceFloor, this.#progressAt() ?? -Infinity) + timeout;
    this.#timeoutDue = due;
    this.#timeoutTimer = this.#clock.setTimeout(() => this.#timeoutFired(), Math.max(0, due - this.#clock.now()));
  }

  #cancelTimeout(): void {
    if (this.#timeoutTimer !== null) {
      this.#clock.clearTimeout(this.#timeoutTimer);
      this.#timeoutTimer = null;
    }
  }

  #heartbeatAnswered(sequence: number, clientTime: number, serverTimeUs: number, now: number): void {
    const roundTrip = this.#tracker.answer(sequence, now);
    if (roundTrip === null) return; // already cleared by a newer answer
    this.#graceUsed = false;
    this.#excused = false;
    for (const [beat, sent] of this.#sentAtBeat) {
      if (beat > sequence) break;
      if (beat === sequence) this.#sentAtLastAnswer = sent;
      this.#sentAtBeat.delete(beat);
    }
    if (this.#tracker.pending === 0) this.#resetProgress();
    this.#cancelTimeout();
    this.#armTimeout();
    const sample = this.#clockSync.add(clientTime / 1000, serverTimeUs / 1000, now);
    this.#log.debug(`client heartbeat ${sequence} answered in ${roundTrip.toFixed(2)}ms`);
    if (this.options.onHeartbeatResponse) {
      const event: ClientHeartbeatEvent = { sequence, roundTrip, clock: sample };
      this.#safely("onHeartbeatResponse", () => this.options.onHeartbeatResponse!(event));
    }
  }

  #timeoutFired(): void {
    this.#timeoutTimer = null;
    if (this.#state !== "open") return;
    const now = this.#clock.now();
    this.stall.observe(this.#timeoutDue, now);
    const oldest = this.#tracker.oldestUnanswered;
    if (oldest === null) return;
    const startedAt = Math.max(oldest, this.#graceFloor);
    if (this.options.anyTrafficCounts && this.#lastReceived >= startedAt) {
      this.#tracker.clear();
      this.#sentAtBeat.clear();
      this.#sentAtLastAnswer = this.#bytesSent;
      this.#resetProgress();
      return;
    }
    this.#sampleProgress(now);
    const timeout = this.#heartbeatTimeout();
    const progressAt = this.#progressAt();
    if (timeout !== null && progressAt !== null && progressAt + timeout > now) {
      // The server is still taking the data our beat waits behind, or still
      // sending the message its answer waits behind: alive.
      if (!this.#excused) {
        this.#excused = true;
        this.timeoutsAvoided += 1;
        this.#log.debug("heartbeat unanswered past its timeout, but data is still moving: kept");
      }
      this.#armTimeout();
      return;
    }
    if (this.options.stallGrace !== false && this.stall.stalledSince(startedAt) && !this.#graceUsed) {
      // Our own loop was blocked: the answer may be unread in the socket.
      this.#graceUsed = true;
      this.#graceFloor = now;
      this.#log.info(`heartbeat timeout deferred: our event loop was stalled (${this.stall.maxLag.toFixed(0)}ms late)`);
      this.#sendHeartbeat(now);
      this.#flush();
      return;
    }
    this.#log.info(`server heartbeat timed out after ${this.#heartbeatTimeout()}ms: dropping the connection`);
    const reason: DisconnectReason = {
      kind: DisconnectKind.TIMED_OUT,
      code: CloseCode.HEARTBEAT_TIMEOUT,
      message: "the server did not answer our heartbeat",
      locally: true,
    };
    this.#closeReasonSeen = reason;
    if (this.options.onHeartbeatTimeout) this.#safely("onHeartbeatTimeout", this.options.onHeartbeatTimeout);
    // Tell the server why (CLOSE, then close frame 4001), then stop waiting
    // for it: it is presumably gone.
    this.#outgoing = [];
    this.#sendNow(encodeMessage([MessageKind.CLOSE, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"]));
    this.#sentClose = true;
    this.#closeSocket(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout");
    const terminate = (this.#ws as { terminate?: () => void }).terminate;
    if (typeof terminate === "function") {
      this.#clock.setTimeout(() => terminate.call(this.#ws), DROP_AFTER_TIMEOUT_MS);
    }
    this.#finish(reason);
  }

  /**
   * Sample the connection into the progress rule: our output
   * (bufferedAmount: sent but not yet transmitted) and, in Node's `ws`, the
   * bytes arriving while a message is half received.
   */
  #sampleProgress(now: number): void {
    const queued = this.#ws.bufferedAmount;
    if (typeof queued === "number") this.#progress.sample(now, this.#bytesSent, queued);
    const socket = this.#socket;
    if (socket) this.#inputProgress.sample(now, socket.bytesRead, socket.bytesRead > this.#readAtLastMessage);
  }

  /**
   * A server heartbeat arrived.  While our beat is unanswered and we sent at
   * least MIN_PROGRESS_BYTES between the latest answered beat and it, our beat may be waiting
   * behind our upload in the kernel's send buffer, which no WebSocket API
   * shows (megabytes on a fast path: bufferedAmount is only what the
   * browser or Node still holds).  The server's beat comes the other way:
   * it shows the server runs and reaches us, and the server itself drops us
   * if our bytes stop arriving (docs/heartbeat.md, "Slow links").
   */
  #serverBeatArrived(): void {
    const ahead = this.#sentAtBeat.values().next().value;
    if (this.#tracker.oldestUnanswered !== null && ahead !== undefined && ahead - this.#sentAtLastAnswer >= MIN_PROGRESS_BYTES) {
      this.#serverBeatAt = this.#clock.now();
    }
  }

  /** When a sample last showed progress, in either direction (null: not in this wait). */
  #progressAt(): number | null {
    const times = [this.#progress.progressAt, this.#inputProgress.progressAt, this.#serverBeatAt].filter((t) => t !== null);
    return times.length ? Math.max(...times) : null;
  }

  #resetProgress(): void {
    this.#progress.reset();
    this.#inputProgress.reset();
    this.#serverBeatAt = null;
  }

  #stopHeartbeat(): void {
    this.#clock.clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    if (this.#beatTimer !== null) {
      this.#clock.clearTimeout(this.#beatTimer);
      this.#beatTimer = null;
    }
    this.#cancelTimeout();
  }

  // -- sending --------------------------------------------------------------

  /** Largest frame we may send: the smaller of our limit and the server's `max`. */
  #sendLimit(): number {
    const peer = this.welcome?.maxMessageSize ?? null;
    return peer === null ? this.#maxMessageSize : Math.min(peer, this.#maxMessageSize);
  }

  #queue(payload: Uint8Array): void {
    this.#outgoing.push(payload);
    if (this.#handling > 0 || this.#flushScheduled) return;
    // Everything queued in this turn of the event loop leaves together, in
    // as few frames as the batch limits allow (flush).
    this.#flushScheduled = true;
    queueMicrotask(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    if (this.#outgoing.length === 0) return;
    const messages = this.#outgoing;
    this.#outgoing = [];
    if (this.#ws.readyState !== OPEN || this.#sentClose) return;
    const batch = this.welcome?.capabilities.includes("batch") ?? false;
    if (!batch) {
      for (const message of messages) this.#sendNow(message);
      return;
    }
    // As the Python client (Connection.frames_to_send): at most
    // BATCH_MESSAGES messages and BATCH_BYTES (or the peer's smaller max)
    // per frame, unless one message alone is larger.
    const limit = Math.min(this.#sendLimit(), BATCH_BYTES);
    let frame: Uint8Array[] = [];
    let size = 0;
    for (const message of messages) {
      if (frame.length > 0 && (frame.length === BATCH_MESSAGES || size + message.length > limit)) {
        this.#sendNow(joinFrames(frame));
        frame = [];
        size = 0;
      }
      frame.push(message);
      size += message.length;
    }
    if (frame.length > 0) this.#sendNow(joinFrames(frame));
  }

  #sendNow(payload: Uint8Array): void {
    if (this.#ws.readyState === OPEN) {
      this.#ws.send(payload);
      this.#bytesSent += payload.length;
    }
  }

  // -- closing --------------------------------------------------------------

  #closeSocket(code: number, reason: string): void {
    const text = closeReason(reason);
    try {
      this.#ws.close(code, text);
    } catch (e) {
      // Browsers only let a page send 1000 and 3000-4999: 1003 and 1011 become 4002.
      if ((e as { name?: string }).name !== "InvalidAccessError") throw e;
      this.#ws.close(CloseCode.PROTOCOL_ERROR, text);
    }
  }

  #protocolError(reason: string, code: number): void {
    this.#closeReasonSeen ??= { kind: DisconnectKind.PROTOCOL_ERROR, code, message: reason, locally: true };
    if (this.#state === "connecting") {
      this.#handshakeError = reason;
    }
    this.#outgoing = [];
    this.#state = this.#state === "closed" ? "closed" : "closing";
    this.#stopHeartbeat();
    this.#closeSocket(code, reason);
  }

  /** A method, not a field read, so the compiler does not narrow it across calls. */
  #isClosed(): boolean {
    return this.#state === "closed";
  }

  /**
   * The WebSocket implementation refused what the server sent and failed the
   * connection with `code` (Node's `ws`: 1009 for a message over
   * `maxMessageSize`, 1002 for bad framing, 1007 for invalid UTF-8): this
   * side's decision, reported at once, as the Python clients do.  `ws` then
   * waits for the server's close frame, which it can no longer read: the
   * socket is ended after a second (the Python clients' deadline).
   */
  #websocketFailed(code: number, message: string): void {
    if (this.#state === "closed") return;
    const reason: DisconnectReason = { kind: kindForClose(code, true), code, message, locally: true };
    this.#closeReasonSeen ??= reason;
    this.#outgoing = [];
    this.#state = "closing";
    this.#stopHeartbeat();
    const terminate = (this.#ws as { terminate?: () => void }).terminate;
    if (typeof terminate === "function") {
      this.#clock.setTimeout(() => terminate.call(this.#ws), DROP_AFTER_TIMEOUT_MS);
    }
    this.#finish(!this.#isReady ? { ...this.#closeReasonSeen, kind: DisconnectKind.HANDSHAKE_FAILED } : this.#closeReasonSeen);
  }

  #closed(code: number, reason: string): void {
    if (this.#state === "closed") return;
    if (!this.#isReady) {
      const decided = this.#closeReasonSeen;
      // A decision taken during the handshake (a protocol error, disconnect())
      // keeps its code, words and side; the kind is always handshake-failed
      // (what reconnecting clients retry), as in Python's Lifecycle.
      this.#finish(decided !== null ? { ...decided, kind: DisconnectKind.HANDSHAKE_FAILED } : this.#handshakeFailure(reason));
      return;
    }
    if (this.#closeReasonSeen !== null) {
      this.#finish(this.#closeReasonSeen);
      return;
    }
    if (code === CloseCode.ABNORMAL && this.#pageFrozen) {
      // Current Chromium closes a frozen page's WebSockets itself (the server
      // is sent 1001) and the page, once it runs again, sees only 1006.
      this.#finish({
        kind: DisconnectKind.GOING_AWAY,
        code: CloseCode.GOING_AWAY,
        message: "the page was frozen: the browser closed the connection",
        locally: true,
      });
      return;
    }
    // 1005: a close frame without a code (a normal close, reported as 1005,
    // as the Python clients do); 1006: no close frame at all.
    const closeCode = code === CloseCode.ABNORMAL ? null : code;
    this.#finish({ kind: kindForClose(closeCode, false), code: closeCode, message: reason ?? "", locally: false });
  }

  #handshakeFailure(reason = ""): DisconnectReason {
    const text = this.#handshakeError ?? (reason || "connection closed during the handshake");
    return { kind: DisconnectKind.HANDSHAKE_FAILED, code: null, message: text, locally: false };
  }

  #currentReason(): DisconnectReason {
    return (
      this.disconnectReason ??
      this.#closeReasonSeen ?? { kind: DisconnectKind.NORMAL, code: null, message: "the connection is not open", locally: true }
    );
  }

  #finish(reason: DisconnectReason): void {
    if (this.#state === "closed") return;
    const wasConnecting = !this.#isReady;
    this.#state = "closed";
    this.disconnectReason = reason;
    this.#stopHeartbeat();
    this.#clock.clearTimeout(this.#refreshTimer);
    this.#pageWatch?.stop();
    this.#pageWatch = null;
    if (this.#connectTimer !== null) {
      this.#clock.clearTimeout(this.#connectTimer);
      this.#connectTimer = null;
    }
    this.#outgoing = [];
    if (wasConnecting) {
      // Node's `ws` reports an HTTP refusal as "Unexpected server response: 404".
      const status = /Unexpected server response: (\d{3})/.exec(reason.message);
      this.#rejectReady(new HandshakeError(status ? Number(status[1]) : null, reason.message));
    }
    const s = this.#session;
    if (s.owner === this) s.owner = null;
    // A session to resume keeps its calls for the next connection
    // (protocol.md 10.4; a failed attempt changes nothing).  Otherwise
    // every pending call fails: it was handed to the connection, it may have run.
    s.end(reason, this.#clock, !!s.token && (wasConnecting || RESUMABLE.includes(reason.kind)));
    this.#resolveDisconnected(reason);
    if (this.options.onDisconnected) {
      const callback = this.options.onDisconnected;
      this.#safely("onDisconnected", () => callback(reason));
    }
  }

  #safely(name: string, callback: () => void): void {
    try {
      callback();
    } catch (e) {
      this.#log.error(`client callback ${name} raised`, e);
    }
  }
}

/**
 * The close code a WebSocket implementation failed the connection with, when
 * its error says: Node's `ws` keeps it on its errors under the symbol
 * `status-code`.  Browsers say nothing (their close event has 1006).
 */
function failureCode(error: unknown): number | null {
  if (error === null || typeof error !== "object") return null;
  for (const key of Object.getOwnPropertySymbols(error)) {
    if (key.description !== "status-code") continue;
    const code = (error as Record<symbol, unknown>)[key];
    return typeof code === "number" ? code : null;
  }
  return null;
}

function checkPositive(name: string, value: number | null | undefined): void {
  if (value === undefined || value === null) return;
  if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`${name} must be a finite number > 0 (ms), got ${String(value)}`);
  }
}

/** A proxy whose every property is a hub method call. */
export function makeProxy<T extends object>(
  invoke: (method: string, args: unknown[]) => Promise<unknown>,
): HubProxy<T> {
  return new Proxy(
    {},
    {
      get(_target, name) {
        if (typeof name !== "string" || name === "then") return undefined;
        return (...args: unknown[]) => invoke(name, args);
      },
    },
  ) as HubProxy<T>;
}

/**
 * Connect to a hub; resolves with the connected {@link HubClient} once the
 * hub handshake is done, rejects with {@link HandshakeError} otherwise.
 *
 * @param url `ws://` or `wss://` URL of the hub endpoint
 * @param hub hub name, appended to the URL path (omit if the URL names it)
 */
export function connect(url: string, hub?: string | null, options: HubClientOptions = {}): Promise<HubClient> {
  let client: HubClient;
  try {
    client = new HubClient(hubUrl(url, hub), options);
  } catch (e) {
    return Promise.reject(e);
  }
  return client.whenReady();
}
