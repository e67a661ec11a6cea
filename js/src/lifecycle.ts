/**
 * The page's lifecycle, as far as a hub connection cares: the browser freezing
 * the page (the Page Lifecycle API's `freeze`, or the page entering the
 * back/forward cache: `pagehide` with `persisted`), and the page running again
 * (`resume`, `pageshow` with `persisted`, `visibilitychange` to visible, `online`).
 *
 * Why it matters: current Chromium (checked with Debian's 156) closes the
 * WebSockets of a page it freezes ("Page entered Back-Forward Cache"), sends
 * the server close code 1001, and hands the page a bare 1006 once it runs
 * again.  Without this the client could only say `connection-lost`; with it,
 * the client says what happened (`going-away`, 1001, closed on our side) and
 * `ReconnectingHubClient` reconnects as soon as the page runs, with no backoff.
 *
 * Outside a browser (Node, workers without `document`) there is nothing to
 * watch and nothing changes.
 */

/** The part of `EventTarget` used here (`document` and `window` in a browser). */
export interface EventTargetLike {
  addEventListener(type: string, listener: (event: Event) => void): void;
  removeEventListener(type: string, listener: (event: Event) => void): void;
}

/** Where the page's lifecycle events arrive: `document` and `window` (injectable for tests). */
export interface PageLifecycle {
  document: EventTargetLike & { visibilityState?: string };
  window: EventTargetLike;
}

/** The browser's own `document` and `window`, or null outside a page. */
export function browserPage(): PageLifecycle | null {
  const scope = globalThis as { document?: unknown; addEventListener?: unknown };
  const document = scope.document as (EventTargetLike & { visibilityState?: string }) | undefined;
  if (document === undefined || typeof document.addEventListener !== "function") return null;
  if (typeof scope.addEventListener !== "function") return null;
  return { document, window: globalThis as unknown as EventTargetLike };
}

function persisted(event: Event): boolean {
  return (event as { persisted?: unknown }).persisted === true;
}

/**
 * Listens to one page's lifecycle until `stop()`: `onFreeze` when the page is
 * frozen or put in the back/forward cache, `onRun` when it runs again or comes
 * back to the front or online.
 */
export class PageWatch {
  readonly #listeners: Array<[EventTargetLike, string, (event: Event) => void]> = [];

  constructor(page: PageLifecycle, onFreeze: (() => void) | null, onRun: (() => void) | null) {
    if (onFreeze !== null) {
      this.#listen(page.document, "freeze", () => onFreeze());
      this.#listen(page.window, "pagehide", (event) => {
        if (persisted(event)) onFreeze();
      });
    }
    if (onRun !== null) {
      this.#listen(page.document, "resume", () => onRun());
      this.#listen(page.window, "pageshow", (event) => {
        if (persisted(event)) onRun();
      });
      this.#listen(page.document, "visibilitychange", () => {
        if (page.document.visibilityState === "visible") onRun();
      });
      this.#listen(page.window, "online", () => onRun());
    }
  }

  #listen(target: EventTargetLike, type: string, listener: (event: Event) => void): void {
    target.addEventListener(type, listener);
    this.#listeners.push([target, type, listener]);
  }

  /** Remove every listener (a client that has ended holds no reference from the page). */
  stop(): void {
    for (const [target, type, listener] of this.#listeners.splice(0)) target.removeEventListener(type, listener);
  }
}
