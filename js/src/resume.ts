/**
 * The pure state of session resumption (docs/protocol.md section 10,
 * docs/resumption.md), the client's side: numbering and keeping what we
 * send, counting what we receive, running each server call once.  One
 * {@link Ledger} per session does what twisted_hub/_core/resume.py's
 * ReplayBuffer, ReceiveWindow and CallDeduplicator do (one small class, to
 * keep the browser bundle small).
 *
 * Sans-IO: no socket, no timer; every method that needs the time takes
 * `now` (ms) from the caller.
 */
import { ProtocolError, ResumeReason } from "./wire.js";

/** The knobs of `ReconnectingOptions.resume` (docs/javascript.md, "Resume"). */
export interface ResumeOptions {
  /** byte bound of our messages the server has not acknowledged (default 1 MiB) */
  bufferBytes?: number;
  /** send an ACK once this many server messages arrived unacknowledged (default 256) */
  ackEvery?: number;
  /** ... or this many ms after the oldest of them arrived (default 5000) */
  ackDelay?: number;
  /** the most answers to the server's calls kept for repeats (default 4096) */
  maxCalls?: number;
}

/** Bookkeeping bytes counted per kept message, so a flood of tiny ones is bounded too. */
const ENTRY_OVERHEAD = 48;

/** The policy with its defaults; throws RangeError for a knob that is not a number > 0. */
export function resumePolicy(options: ResumeOptions): Required<ResumeOptions> {
  const policy = {
    bufferBytes: options.bufferBytes ?? 1 << 20,
    ackEvery: options.ackEvery ?? 256,
    ackDelay: options.ackDelay ?? 5000,
    maxCalls: options.maxCalls ?? 4096,
  };
  for (const [name, value] of Object.entries(policy)) {
    if (!(value > 0)) throw new RangeError(`resume.${name} must be > 0`);
  }
  return policy;
}

/**
 * One session's bookkeeping, on the client.
 *
 * **What we sent** (ReplayBuffer): every sequenced message we send is
 * numbered 1, 2, ... (never on the wire: both sides count) and kept until
 * the server acknowledges it, bounded by `bufferBytes` and by age (the
 * session's window); past a bound the oldest go, which matters only if the
 * server turns out to need them: then {@link replay} names the reason that
 * dropped the first one.
 *
 * **What we received** (ReceiveWindow): the server's sequenced messages,
 * counted, and when an acknowledgement is due.
 *
 * **The server's calls** (CallDeduplicator): the CLIENT_INVOKE ids seen and
 * the answers kept for a repeat, so a receiver method runs once.  Ids
 * strictly increase over a session, so an id at or below one forgotten is a
 * repeat too.
 */
export class Ledger {
  /** age bound of what is kept, ms: the session's window (SESSION; 120 s until then) */
  maxAge = 120_000;
  /** [sequence, bytes, sent at], oldest first */
  readonly #kept: [number, Uint8Array, number][] = [];
  /** bytes kept, with the per-message overhead */
  #size = 0;
  #lastSent = 0;
  #acked = 0;
  /** [last sequence dropped, why], oldest first; only beyond `acked` */
  #drops: [number, string][] = [];
  /** the server's messages received, and acknowledged to it */
  #received = 0;
  #acknowledged = 0;
  /** when the oldest message not acknowledged yet arrived (null: none) */
  since: number | null = null;
  readonly #running = new Set<number>();
  /** call id -> [settled at, encoded answer], in settling order */
  readonly #settled = new Map<number, [number, Uint8Array]>();
  #forgottenThrough = 0;

  constructor(readonly policy: Required<ResumeOptions>) {}

  // -- what we sent ---------------------------------------------------------

  /** The number of the last sequenced message we sent (RESUME says it: a node restoring the session from its snapshot compares it). */
  get lastSent(): number {
    return this.#lastSent;
  }

  /** Keep one encoded sequenced message; return its number.  One larger than the bound is numbered, not kept. */
  append(data: Uint8Array, now: number): number {
    this.#expire(now);
    this.#kept.push([++this.#lastSent, data, now]);
    this.#size += data.length + ENTRY_OVERHEAD;
    while (this.#size > this.policy.bufferBytes) this.#drop(ResumeReason.BUFFER_OVERFLOWED);
    return this.#lastSent;
  }

  /** The server received everything up to `received`: forget it.  Beyond what was sent, or going back: ProtocolError. */
  ack(received: number): void {
    if (received > this.#lastSent || received < this.#acked) {
      throw new ProtocolError(`ack ${received} not in ${this.#acked}..${this.#lastSent}`);
    }
    this.#acked = received;
    while (this.#kept[0] && this.#kept[0][0] <= received) this.#shift();
    this.#drops = this.#drops.filter((drop) => drop[0] > received);
  }

  /**
   * RESUMED: the messages the server lacks when it received up to
   * `received`, in order (acknowledging it); or the reason one of them was
   * dropped (a ResumeReason).
   */
  replay(received: number, now: number): Uint8Array[] | string {
    this.ack(received);
    this.#expire(now);
    return this.#drops[0]?.[1] ?? this.#kept.map((entry) => entry[1]);
  }

  #expire(now: number): void {
    while (this.#kept[0] && now - this.#kept[0][2] >= this.maxAge) this.#drop(ResumeReason.WINDOW_EXPIRED);
  }

  #shift(): number {
    const [sequence, data] = this.#kept.shift()!;
    this.#size -= data.length + ENTRY_OVERHEAD;
    return sequence;
  }

  #drop(reason: string): void {
    const sequence = this.#shift();
    const drops = this.#drops;
    const last = drops[drops.length - 1];
    if (last?.[1] === reason) last[0] = sequence;
    else if (drops.push([sequence, reason]) > 8) {
      // alternating reasons without an ack: merge, keeping the first reason (what the server needs first)
      drops[1]![1] = drops[0]![1];
      drops.shift();
    }
  }

  // -- what we received -----------------------------------------------------

  receive(now: number): void {
    this.#received++;
    this.since ??= now;
  }

  /** Should a standalone ACK go now (`ackEvery` unacknowledged, or the oldest `ackDelay` ago)? */
  due(now: number): boolean {
    return this.since !== null && (this.#received - this.#acknowledged >= this.policy.ackEvery || now - this.since >= this.policy.ackDelay);
  }

  /** The value to put in an acknowledgement now (remembered as sent). */
  acknowledge(): number {
    this.since = null;
    return (this.#acknowledged = this.#received);
  }

  // -- the server's calls ---------------------------------------------------

  /**
   * A CLIENT_INVOKE arrived: "new" (run it; it is running now), "running"
   * (its one answer comes when done), "forgotten" (it ran once, its answer
   * is gone: answer duplicate-call), or the kept answer to send again.
   */
  begin(callId: number, now: number): "new" | "running" | "forgotten" | Uint8Array {
    for (const [id, [at]] of this.#settled) {
      if (now - at < this.maxAge) break;
      this.#forget(id);
    }
    const kept = this.#settled.get(callId);
    if (kept) return kept[1];
    if (this.#running.has(callId)) return "running";
    if (callId <= this.#forgottenThrough) return "forgotten";
    this.#running.add(callId);
    return "new";
  }

  /** The call settled: keep its encoded answer for a repeat (at most `maxCalls`, the oldest go first). */
  settle(callId: number, answer: Uint8Array, now: number): void {
    this.#running.delete(callId);
    this.#settled.set(callId, [now, answer]);
    if (this.#settled.size > this.policy.maxCalls) this.#forget(this.#settled.keys().next().value!);
  }

  #forget(callId: number): void {
    this.#settled.delete(callId);
    this.#forgottenThrough = Math.max(this.#forgottenThrough, callId);
  }
}
