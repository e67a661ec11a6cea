/**
 * Heartbeat bookkeeping without timers (sans-IO): which beats are
 * unanswered, the clock-offset estimate, and stall detection.  Every time is
 * an explicit argument in milliseconds.
 */

/** One clock-offset sample: server clock minus ours, with its error bound. */
export interface ClockOffset {
  /** server time - our time, milliseconds */
  offset: number;
  /** the true offset is within offset ± error, milliseconds */
  error: number;
  /** the round trip this sample came from, milliseconds */
  roundTrip: number;
}

/** Unanswered beats remembered at most (the oldest one is always kept: the timeout runs from it). */
export const MAX_TRACKED = 256;

/**
 * Our own heartbeats in flight.  An answer to beat k proves the server was
 * alive when it answered, so it clears every beat <= k; the timeout runs from
 * the oldest beat still unanswered (docs/heartbeat.md, issue 8's rule).
 */
export class HeartbeatTracker {
  #sequence = 0;
  /** sent beats not yet answered, oldest first: [sequence, sentAt] */
  readonly #unanswered: Array<[number, number]> = [];
  /** round trip of the newest answered beat, ms (0 before any) */
  latency = 0;

  /** Record a beat sent at `now`; returns its sequence. */
  send(now: number): number {
    this.#sequence += 1;
    this.#unanswered.push([this.#sequence, now]);
    // Without a timeout nothing ever gives up on a silent server: keep the
    // newest beats only (an answer to an older one still clears them all).
    if (this.#unanswered.length > MAX_TRACKED) this.#unanswered.splice(1, this.#unanswered.length - MAX_TRACKED);
    return this.#sequence;
  }

  /**
   * An answer to `sequence` arrived at `now`: returns its round trip, or
   * null when the sequence is not one we are waiting for (a duplicate or an
   * answer to a beat already cleared by a newer answer).
   */
  answer(sequence: number, now: number): number | null {
    let sentAt: number | null = null;
    let cleared = 0;
    for (const [seq, at] of this.#unanswered) {
      if (seq > sequence) break;
      if (seq === sequence) sentAt = at;
      cleared++;
    }
    if (cleared === 0) return null;
    this.#unanswered.splice(0, cleared);
    if (sentAt === null) return null;
    this.latency = now - sentAt;
    return this.latency;
  }

  /** When the oldest unanswered beat was sent, or null when all are answered. */
  get oldestUnanswered(): number | null {
    const oldest = this.#unanswered[0];
    return oldest === undefined ? null : oldest[1];
  }

  /** Count every beat in flight as answered (any traffic counts as life). */
  clear(): void {
    this.#unanswered.length = 0;
  }

  get pending(): number {
    return this.#unanswered.length;
  }
}

/**
 * The least backlog that counts as progress (as Python's `MIN_PROGRESS_BYTES`):
 * a heartbeat caught in flight is a few dozen bytes.
 */
export const MIN_PROGRESS_BYTES = 4096;

/**
 * "Progress counts as life" (docs/heartbeat.md, "Slow links"): our
 * heartbeat waits behind what we already sent, so while a backlog of it is
 * being taken the server is alive.  Fed, while a beat is unanswered, with
 * the bytes we passed to `send()` and `WebSocket.bufferedAmount` (those not
 * yet transmitted); the same rule as Python's `HeartbeatTracker.sample_output`.
 */
export class OutputProgress {
  /** the most the server had taken at any sample of this wait (null: no sample yet) */
  #taken: number | null = null;
  #backlog = 0;
  /** when a sample last showed progress, ms (null: not in this wait) */
  progressAt: number | null = null;

  /**
   * A sample at `now`: `written` bytes sent so far, `queued` of them not yet
   * transmitted.  True when the server took more than at any earlier sample
   * while a backlog of at least MIN_PROGRESS_BYTES was queued at the previous one.
   */
  sample(now: number, written: number, queued: number): boolean {
    const taken = written - queued;
    const best = this.#taken;
    const backlog = this.#backlog;
    this.#backlog = queued;
    if (best === null || taken > best) {
      this.#taken = taken;
      if (best !== null && backlog >= MIN_PROGRESS_BYTES) {
        this.progressAt = now;
        return true;
      }
    }
    return false;
  }

  /** Every beat is answered: the next wait's samples start afresh. */
  reset(): void {
    this.#taken = null;
    this.#backlog = 0;
    this.progressAt = null;
  }
}

/**
 * The other half of "progress counts as life": the answer to our heartbeat
 * waits behind the large message the server is sending us, so while more of
 * a half-received message arrives the server is alive.  Fed, while a beat is
 * unanswered, with the bytes read from the socket so far and whether a
 * message is half received; the same rule as Python's
 * `HeartbeatTracker.sample_input`.  Only Node's `ws` shows the socket:
 * browsers show nothing of a message until it is whole.
 */
export class InputProgress {
  /** bytes read at the latest sample of this wait (null: no sample yet) */
  #received: number | null = null;
  #receiving = false;
  /** when a sample last showed progress, ms (null: not in this wait) */
  progressAt: number | null = null;

  /**
   * A sample at `now`: `received` bytes read so far, `receiving` whether a
   * message is half received.  True when one was half received at the
   * previous sample and at least MIN_PROGRESS_BYTES arrived since.
   */
  sample(now: number, received: number, receiving: boolean): boolean {
    const best = this.#received;
    const was = this.#receiving;
    this.#receiving = receiving;
    if (best === null || received > best) {
      this.#received = received;
      if (best !== null && was && received - best >= MIN_PROGRESS_BYTES) {
        this.progressAt = now;
        return true;
      }
    }
    return false;
  }

  /** Every beat is answered: the next wait's samples start afresh. */
  reset(): void {
    this.#received = null;
    this.#receiving = false;
    this.progressAt = null;
  }
}

/**
 * NTP-style clock offset: keeps the lowest-round-trip sample of the last
 * `window` (queueing delay only ever adds to a round trip).
 */
export class ClockSync {
  readonly #samples: ClockOffset[] = [];
  constructor(private readonly window = 8) {}

  /**
   * One exchange: we sent at `sentAt`, the server stamped `serverTime`, the
   * answer arrived at `receivedAt` (all ms on the wall clock).
   */
  add(sentAt: number, serverTime: number, receivedAt: number): ClockOffset {
    const roundTrip = Math.max(0, receivedAt - sentAt);
    const sample = { offset: serverTime - (sentAt + receivedAt) / 2, error: roundTrip / 2, roundTrip };
    this.#samples.push(sample);
    if (this.#samples.length > this.window) this.#samples.shift();
    return sample;
  }

  /** The best estimate so far, or null before any sample. */
  get best(): ClockOffset | null {
    let best: ClockOffset | null = null;
    for (const sample of this.#samples) {
      if (best === null || sample.roundTrip < best.roundTrip) best = sample;
    }
    return best;
  }

  clear(): void {
    this.#samples.length = 0;
  }
}

/**
 * Records how late our timers fire.  A timer that fired much later than it
 * was due means our own event loop was blocked (a busy page, a frozen or
 * throttled tab, a suspended laptop): answers may be sitting unread in the
 * socket, so a timeout that fires then is not proof the server is dead.
 */
export class StallDetector {
  /** the time at which the latest stall was seen, ms (-Infinity: never) */
  lastStallAt = -Infinity;
  /** the largest lateness seen, ms */
  maxLag = 0;

  constructor(readonly threshold = 250) {}

  /** A timer due at `due` fired at `now`. */
  observe(due: number, now: number): void {
    const lag = now - due;
    if (lag > this.maxLag) this.maxLag = lag;
    if (lag > this.threshold) this.lastStallAt = now;
  }

  /** Did a stall end at or after `since`? */
  stalledSince(since: number): boolean {
    return this.lastStallAt >= since;
  }
}
