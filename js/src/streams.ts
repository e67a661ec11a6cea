/**
 * Streams with credit-based flow control (docs/streams.md, protocol.md 3.18):
 * {@link HubStream}, the items of a hub method's stream as they arrive, and
 * {@link pumpStream}, which sends an async iterable argument as credit allows.
 */
import type { HubError } from "./errors.js";
import { ErrorCode, ProtocolError } from "./wire.js";

/** The credit a consumer grants unless told otherwise (Python's `DEFAULT_STREAM_WINDOW`). */
export const STREAM_WINDOW = 16;

/**
 * The items of a stream: `for await (const item of client.stream("ticks", 10))`.
 * Taking items grants the producer more credit; leaving the loop early
 * (`break`, an exception) or {@link cancel} stops the producer.  The loop
 * throws the {@link HubError} the stream failed with, or
 * {@link ConnectionClosedError} when the connection ends first (with a
 * ReconnectingHubClient's `resume`: when the session does; a resumed
 * session's streams go on, with their credit).
 */
export class HubStream<T = unknown> implements AsyncIterableIterator<T> {
  readonly #items: T[] = [];
  #outstanding: number;
  #taken = 0;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;

  /** @internal */
  constructor(
    readonly streamId: number,
    readonly window: number,
    grant: (credit: number) => void,
    stop: () => void,
  ) {
    this.#outstanding = window;
    this.#grant = grant;
    this.#stop = stop;
  }
  readonly #grant: (credit: number) => void;
  readonly #stop: () => void;

  /** @internal an item arrived */
  push(item: T): void {
    if (this.#outstanding <= 0) throw new ProtocolError("an item beyond the credit");
    this.#outstanding--;
    this.#items.push(item);
    this.#wake?.();
  }

  /** @internal the stream ended (normally when `error` is null) */
  finish(error: Error | null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#wake?.();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<T>> {
    while (this.#items.length === 0 && !this.#ended) await new Promise<void>((resolve) => (this.#wake = resolve));
    this.#wake = null;
    if (this.#items.length > 0) {
      const value = this.#items.shift() as T;
      if (!this.#ended && ++this.#taken >= Math.max(1, this.window >> 1)) {
        this.#outstanding += this.#taken;
        this.#grant(this.#taken);
        this.#taken = 0;
      }
      return { value, done: false };
    }
    if (this.#error !== null) throw this.#error;
    return { value: undefined, done: true };
  }

  /** Stop the stream: the producer is told to stop; the iteration ends. */
  cancel(): void {
    if (this.#ended) return;
    this.#items.length = 0;
    this.finish(null);
    this.#stop();
  }

  /** Called by `for await` when the loop is left early: cancels. */
  async return(): Promise<IteratorResult<T>> {
    this.cancel();
    return { value: undefined, done: true };
  }
}

/** Something an argument stream is made from: an async iterable (not a string or array). */
export function isStreamSource(value: unknown): value is AsyncIterable<unknown> {
  return (value as { [Symbol.asyncIterator]?: unknown } | null)?.[Symbol.asyncIterator] !== undefined;
}

/** The producer's side of one argument stream (protocol.md 3.18). */
export class StreamPump {
  credit = 0;
  stopped = false;
  #wake: (() => void) | null = null;

  /** @internal */
  constructor(
    readonly streamId: number,
    source: AsyncIterable<unknown>,
    send: (fields: unknown[]) => void,
  ) {
    this.#source = source;
    this.#send = send;
  }
  readonly #source: AsyncIterable<unknown>;
  readonly #send: (fields: unknown[]) => void;

  /** @internal the consumer granted credit */
  addCredit(credit: number): void {
    this.credit += credit;
    this.#wake?.();
  }

  /** @internal the consumer cancelled, or the connection (with resume, the session) ended: the source is closed */
  cancel(): void {
    this.stopped = true;
    this.#wake?.();
  }

  /** Sends the source's items, taking each only when there is credit to send it. */
  async run(): Promise<void> {
    const iterator = this.#source[Symbol.asyncIterator]();
    try {
      for (;;) {
        while (this.credit === 0 && !this.stopped) await new Promise<void>((resolve) => (this.#wake = resolve));
        if (this.stopped) break;
        const next = await iterator.next();
        if (this.stopped) break;
        if (next.done) return this.#send([17 /* STREAM_END */, this.streamId]);
        this.credit--;
        this.#send([16 /* STREAM_ITEM */, this.streamId, next.value]);
      }
    } catch (e) {
      // (an error is sent as its HubError code, any other as internal)
      const error = e as HubError;
      if (!this.stopped) this.#send([17 /* STREAM_END */, this.streamId, error?.code ?? ErrorCode.INTERNAL, String(error?.hubMessage ?? e), null]);
      return;
    }
    await iterator.return?.();
  }
}
