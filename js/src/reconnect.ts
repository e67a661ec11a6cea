/**
 * A client that stays connected: reconnects after every disconnect with
 * exponential backoff and full jitter, and restores state (rejoin groups,
 * re-subscribe) through an `onConnected` hook, or resumes its session
 * (`resume`: docs/protocol.md section 10), when nothing is lost.
 */
import { HubClient, Session, hubUrl, makeProxy, type Clock, type HubClientOptions, type HubProxy } from "./client.js";
import { resumePolicy, type ResumeOptions } from "./resume.js";
import { ConnectionClosedError, DisconnectKind, type DisconnectReason } from "./errors.js";
import { PageWatch, browserPage } from "./lifecycle.js";
import { CloseCode, ResumeReason, type Kwargs } from "./wire.js";

export interface RetryPolicy {
  /** ms before the first retry's upper bound (default 500) */
  initialDelay?: number;
  /** cap of the upper bound, ms (default 30 000) */
  maxDelay?: number;
  /** growth of the upper bound per failed attempt (default 2) */
  factor?: number;
  /** a number in [0, 1) (default Math.random) */
  random?: () => number;
}

/**
 * Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the
 * delay before attempt n is uniform in [0, min(maxDelay, initialDelay × factor^n)),
 * so clients that lost the same server do not come back in step.
 */
export function fullJitterDelay(attempt: number, policy: RetryPolicy = {}): number {
  const initial = policy.initialDelay ?? 500;
  const max = policy.maxDelay ?? 30000;
  const factor = policy.factor ?? 2;
  const random = policy.random ?? Math.random;
  return random() * Math.min(max, initial * Math.pow(factor, attempt));
}

export interface ReconnectingOptions extends HubClientOptions {
  /** called with each new connection once it is ready (rejoin groups here) */
  onConnected?: (client: HubClient) => unknown;
  /** called when a retry is scheduled: in `delay` ms, the `attempt`-th since the last connection (from 0) */
  onRetry?: (delay: number, attempt: number) => void;
  retry?: RetryPolicy;
  /**
   * ms a call made between connections waits for the next one (default
   * 10 000, as the Python clients' `wait_for_connection`); 0: fail at once;
   * null: no limit.  Past it the call fails with `ConnectionClosedError`,
   * never sent.
   */
  waitForConnection?: number | null;
  /**
   * Resume the session after a lost connection (off by default; the server
   * must offer it too): calls in flight are answered, nothing sent either
   * way is lost or doubled, groups carry over (docs/javascript.md, "Resume").
   */
  resume?: boolean | ResumeOptions;
  /** called instead of `onConnected` once a session resumed (nothing to rejoin) */
  onResumed?: (client: HubClient) => unknown;
  /** called when a session could not be resumed, with the reason; a fresh session and `onConnected` follow */
  onResumeRefused?: (reason: string) => unknown;
}

interface Waiter {
  resolve(client: HubClient): void;
  reject(error: Error): void;
}

/**
 * Keeps one hub connection open.  `call` / `proxy` go to the current
 * connection; made between connections, they wait for the next one (at
 * most `waitForConnection` ms), as the Python clients' calls do.  `notify`
 * goes to the current connection only (it throws `ConnectionClosedError`
 * between connections).  `disconnects` lists every reason a connection ended.
 */
export class ReconnectingHubClient {
  readonly url: string;
  /** the current connection, or null between connections */
  client: HubClient | null = null;
  /** every reason a connection ended, oldest first */
  readonly disconnects: DisconnectReason[] = [];
  /** connections made so far */
  connections = 0;
  /** connection attempts that failed (refused, handshake failed), logged as warnings */
  failedAttempts = 0;
  /** when (clock ms) the scheduled retry is due, or null when none is scheduled */
  nextRetryAt: number | null = null;
  /** sessions resumed so far */
  resumes = 0;
  /** resumes refused (or impossible), by reason (each at 0 to start with, with `resume`) */
  readonly resumeRefusals: Record<string, number> = {};
  /** the session the connections share, with `resume` */
  readonly #session: Session | null = null;
  #running = false;
  #attempt = 0;
  #retryTimer: unknown = null;
  readonly #clock: Clock;
  #waiters: Waiter[] = [];
  #pageWatch: PageWatch | null = null;

  constructor(
    url: string,
    hub: string | null | undefined,
    readonly options: ReconnectingOptions = {},
  ) {
    const wait = options.waitForConnection;
    if (wait !== undefined && wait !== null && !(typeof wait === "number" && wait >= 0)) {
      throw new RangeError(`waitForConnection must be a number >= 0 (ms) or null, got ${String(wait)}`);
    }
    this.url = hubUrl(url, hub);
    const resume = options.resume;
    if (resume) {
      for (const reason of Object.values(ResumeReason)) this.resumeRefusals[reason] = 0;
      this.#session = new Session(resumePolicy(resume === true ? {} : resume), (reason) => {
        this.resumeRefusals[reason] = (this.resumeRefusals[reason] ?? 0) + 1;
        this.#hook("onResumeRefused", () => options.onResumeRefused?.(reason));
      });
    }
    this.#clock = options.clock ?? {
      now: () => Date.now(),
      setTimeout: (callback, ms) => setTimeout(callback, ms),
      clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
    };
  }

  /** Start connecting (and reconnecting). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    const page = this.options.page === undefined ? browserPage() : this.options.page;
    if (page !== null) this.#pageWatch = new PageWatch(page, null, () => this.#wake());
    this.#connectOnce();
  }

  /** Stop reconnecting and close the current connection; calls waiting for a connection fail. */
  async stop(): Promise<void> {
    this.#running = false;
    this.nextRetryAt = null;
    const waiters = this.#waiters;
    this.#waiters = [];
    const stopped = new ConnectionClosedError({
      kind: DisconnectKind.NORMAL,
      code: null,
      message: "the client was stopped",
      locally: true,
    });
    for (const waiter of waiters) waiter.reject(stopped);
    this.#pageWatch?.stop();
    this.#pageWatch = null;
    if (this.#retryTimer !== null) {
      this.#clock.clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
    if (this.client !== null) await this.client.disconnect();
    // calls kept for a resume between connections fail too
    this.#session?.end(stopped.reason, this.#clock);
  }

  /** Resolves with the current connection, or the next one once it is ready (no time limit; rejects when stopped). */
  whenConnected(): Promise<HubClient> {
    if (this.client !== null && this.client.isConnected) return Promise.resolve(this.client);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  call<T = unknown>(method: string, ...args: unknown[]): Promise<T> {
    return this.invoke<T>(method, args);
  }

  /** Call on the current connection, or on the next one (waiting at most `waitForConnection` ms). */
  invoke<T = unknown>(method: string, args: unknown[] = [], kwargs?: Kwargs | null): Promise<T> {
    const client = this.client;
    if (client !== null && client.isConnected) return client.invoke<T>(method, args, kwargs);
    const wait = this.options.waitForConnection === undefined ? 10000 : this.options.waitForConnection;
    if (!this.#running || wait === 0) return Promise.reject(new ConnectionClosedError(this.#lastReason()));
    return this.#nextConnection(wait).then((next) => next.invoke<T>(method, args, kwargs));
  }

  #nextConnection(wait: number | null): Promise<HubClient> {
    return new Promise((resolve, reject) => {
      let timer: unknown = null;
      const waiter: Waiter = {
        resolve: (client) => {
          if (timer !== null) this.#clock.clearTimeout(timer);
          resolve(client);
        },
        reject: (error) => {
          if (timer !== null) this.#clock.clearTimeout(timer);
          reject(error);
        },
      };
      if (wait !== null) {
        timer = this.#clock.setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          const last = this.disconnects[this.disconnects.length - 1];
          const ended = last ? `; the last connection ended: ${last.kind}${last.message ? `: ${last.message}` : ""}` : "";
          reject(
            new ConnectionClosedError({
              kind: DisconnectKind.CONNECTION_LOST,
              code: null,
              message: `no connection within ${wait} ms${ended}`,
              locally: true,
            }),
          );
        }, wait);
      }
      this.#waiters.push(waiter);
    });
  }

  notify(method: string, ...args: unknown[]): void {
    const client = this.client;
    if (client === null) throw new ConnectionClosedError(this.#lastReason());
    client.notify(method, ...args);
  }

  proxy<T extends object>(): HubProxy<T> {
    return makeProxy<T>((method, args) => this.invoke(method, args));
  }

  #lastReason(): DisconnectReason {
    return (
      this.disconnects[this.disconnects.length - 1] ?? {
        kind: DisconnectKind.NORMAL,
        code: null,
        message: "not connected yet",
        locally: true,
      }
    );
  }

  #connectOnce(): void {
    if (!this.#running) return;
    let client: HubClient;
    try {
      client = new HubClient(this.url, this.options, this.#session ?? undefined);
    } catch (e) {
      this.#running = false;
      throw e;
    }
    client.whenReady().then(
      (ready) => {
        if (!this.#running) {
          void ready.disconnect();
          return;
        }
        this.client = ready;
        this.connections++;
        this.#attempt = 0;
        ready.waitForDisconnect().then((reason) => this.#lost(ready, reason));
        if (ready.resumed) this.resumes++;
        const name = ready.resumed ? "onResumed" : "onConnected";
        this.#hook(name, () => this.options[name]?.(ready));
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const waiter of waiters) waiter.resolve(ready);
      },
      (error: unknown) => {
        this.failedAttempts++;
        const log = this.options.log;
        const message = `connecting to ${this.url} failed: ${(error as Error).message ?? String(error)}`;
        if (log) log.warn(message);
        else console.warn(`twisted-hub: ${message}`);
        this.#retry();
      },
    );
  }

  /** Run a user hook; what it raises or rejects with is logged. */
  #hook(name: string, run: () => unknown): void {
    try {
      Promise.resolve(run()).catch((e: unknown) => console.error(`twisted-hub: ${name} failed`, e));
    } catch (e) {
      console.error(`twisted-hub: ${name} raised`, e);
    }
  }

  #lost(client: HubClient, reason: DisconnectReason): void {
    this.disconnects.push(reason);
    if (this.client === client) this.client = null;
    if (reason.code === CloseCode.SESSION_MOVED) {
      // The session was resumed over another connection and lives on
      // there: this client does not reconnect (protocol.md section 6).
      const message = "session moved (4006): not reconnecting";
      if (this.options.log) this.options.log.warn(message);
      else console.warn(`twisted-hub: ${message}`);
      void this.stop();
      return;
    }
    // The browser closed it because the page was frozen (see lifecycle.ts):
    // the page runs again now and the server is fine, so no backoff.
    const pageFrozen = reason.kind === DisconnectKind.GOING_AWAY && reason.locally && reason.code === CloseCode.GOING_AWAY;
    this.#retry(pageFrozen ? 0 : null);
  }

  /**
   * The page runs again, came to the front or back online: an attempt that
   * waits for its backoff is made now (the backoff still grows if it fails).
   */
  #wake(): void {
    if (!this.#running || this.#retryTimer === null) return;
    this.#clock.clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.nextRetryAt = null;
    this.#connectOnce();
  }

  #retry(delayOverride: number | null = null): void {
    if (!this.#running) return;
    const delay = delayOverride ?? fullJitterDelay(this.#attempt, this.options.retry);
    const attempt = this.#attempt++;
    this.nextRetryAt = this.#clock.now() + delay;
    this.#retryTimer = this.#clock.setTimeout(() => {
      this.#retryTimer = null;
      this.nextRetryAt = null;
      this.#connectOnce();
    }, delay);
    const hook = this.options.onRetry;
    if (hook) {
      try {
        hook(delay, attempt);
      } catch (e) {
        console.error("twisted-hub: onRetry raised", e);
      }
    }
  }
}
