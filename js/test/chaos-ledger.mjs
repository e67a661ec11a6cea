// What one chaos client saw (bench/chaos.py, js/test/chaos-client.mjs): the
// same ledger as the Python clients' (bench/_chaos_ledger.py), checked as the
// traffic arrives, with the same summary; tests/test_chaos_checks.py feeds
// both the same events and compares what they report.
const EXAMPLES = 10;
const monotonic = () => performance.now() / 1000;

export class Ledger {
  constructor(name) {
    this.name = name;
    this.lastN = 0;
    this.pending = new Set();
    this.answered = 0;
    this.failed = {};
    this.wrong = [];
    this.settledTwice = 0;
    this.sessions = [];
    this.numberedLast = new Map();
    this.s2cReceived = 0;
    this.s2cLost = 0;
    this.s2cDoubled = 0;
    this.answerBeforeNumbered = 0;
    this.s2cExamples = [];
    this.lastM = 0;
    this.shoutsAnsweredMax = 0;
    this.shoutsFailed = [];
    this.shoutsPending = new Set();
    this.heardLast = new Map();
    this.heardEpoch = new Map();
    this.heard = 0;
    this.heardDoubledOrLate = 0;
    this.heardGaps = [];
    this.heardGapCount = 0;
    this.heardSkippedAfterFresh = 0;
    this.heardExamples = [];
    this.freshEpoch = 0;
    this.joinedEpoch = -1; // the freshEpoch of the last session that joined the group (-1: none yet)
    this.connectedOnce = false;
    this.dropAt = null;
    this.dropWall = 0;
    this.backoff = 0;
    this.drops = 0;
    this.outages = [];
    this.stopping = false;
  }

  example(into, value) {
    if (into.length < EXAMPLES) into.push(value);
  }

  nextCall() {
    this.pending.add(++this.lastN);
    return this.lastN;
  }

  answer(n, result) {
    if (!this.pending.delete(n)) {
      this.settledTwice++;
      return;
    }
    if (!(Array.isArray(result) && result.length === 4 && result[0] === this.name && result[1] === n)) {
      this.example(this.wrong, [n, result]);
      return;
    }
    this.answered++;
    const [, , k, session] = result;
    const last = this.numberedLast.get(session) ?? 0;
    if (last < k) {
      this.answerBeforeNumbered++;
      this.example(this.s2cExamples, ["answer-before-numbered", session, k, last]);
    }
  }

  callFailed(n, error) {
    if (!this.pending.delete(n)) {
      this.settledTwice++;
      return;
    }
    const text = typeof error === "string" ? error : `${error?.name}: ${error?.code ?? ""} ${error?.message}`;
    this.failed[n] = text.slice(0, 200);
  }

  numbered(session, k) {
    this.s2cReceived++;
    const last = this.numberedLast.get(session) ?? 0;
    if (k <= last) {
      this.s2cDoubled++;
      this.example(this.s2cExamples, ["doubled-or-late", session, k, last]);
      return;
    }
    if (k > last + 1) {
      this.s2cLost += k - last - 1;
      this.example(this.s2cExamples, ["gap", session, last, k]);
    }
    this.numberedLast.set(session, k);
  }

  heardFrom(sender, m) {
    this.heard++;
    const last = this.heardLast.get(sender) ?? 0;
    if (m <= last) {
      this.heardDoubledOrLate++;
      this.example(this.heardExamples, ["doubled-or-late", sender, m, last]);
      return;
    }
    if (m > last + 1) {
      if ((this.heardEpoch.get(sender) ?? 0) < this.freshEpoch) {
        this.heardSkippedAfterFresh += m - last - 1;
      } else {
        this.heardGapCount += m - last - 1;
        for (let missing = last + 1; missing < m; missing++) {
          if (this.heardGaps.length < 1000) this.heardGaps.push([sender, missing]);
        }
      }
    }
    this.heardLast.set(sender, m);
    this.heardEpoch.set(sender, this.freshEpoch);
  }

  nextShout() {
    this.shoutsPending.add(++this.lastM);
    return this.lastM;
  }

  shoutAnswered(m) {
    this.shoutsPending.delete(m);
    this.shoutsAnsweredMax = Math.max(this.shoutsAnsweredMax, m);
  }

  shoutFailed(m) {
    this.shoutsPending.delete(m);
    this.shoutsFailed.push(m);
  }

  missingFrom(expected) {
    return Object.values(this.tailMissing(expected)[0]).reduce((a, b) => a + b, 0);
  }

  /**
   * Each sender's last answered broadcasts not heard, and how many of them are
   * excused (not heard since a fresh session that rejoined the group; without
   * the rejoin nothing could reach us, and that is a loss).
   */
  tailMissing(expected) {
    const missing = {};
    let excused = 0;
    const rejoined = this.joinedEpoch === this.freshEpoch;
    for (const [sender, last] of Object.entries(expected)) {
      const lacking = last - (this.heardLast.get(sender) ?? 0);
      if (lacking <= 0) continue;
      if (rejoined && (this.heardEpoch.get(sender) ?? 0) < this.freshEpoch) excused += lacking;
      else missing[sender] = lacking;
    }
    return [missing, excused];
  }

  /** A session (the first, or a fresh one after a refusal) joined the group. */
  joined(session) {
    this.sessions.push(session);
    this.joinedEpoch = this.freshEpoch;
  }

  freshSession(reasons) {
    if (this.connectedOnce) {
      this.freshEpoch++;
      this.outageOver("fresh", reasons);
    }
    this.connectedOnce = true;
    this.backoff = 0;
  }

  resumed() {
    this.outageOver("resumed", []);
    this.backoff = 0;
  }

  dropped() {
    if (this.stopping) return;
    this.drops++;
    if (this.dropAt === null) {
      this.dropAt = monotonic();
      this.dropWall = Date.now() / 1000;
    }
  }

  outageOver(outcome, reasons) {
    if (this.dropAt === null) {
      this.outages.push({ at: Date.now() / 1000, seconds: 0, backoff: this.backoff, outcome, reasons, drop_seen: false });
      return;
    }
    this.outages.push({
      at: Math.round(this.dropWall * 1000) / 1000,
      seconds: Math.round((monotonic() - this.dropAt) * 10000) / 10000,
      backoff: Math.round(this.backoff * 10000) / 10000,
      outcome,
      reasons,
      drop_seen: true,
    });
    this.dropAt = null;
  }

  summary(kind, resumes, refusals, expected) {
    const [missingAtEnd, missingAfterFresh] = this.tailMissing(expected);
    return {
      name: this.name,
      kind,
      calls: {
        issued: this.lastN,
        answered: this.answered,
        failed: this.failed,
        hanging: [...this.pending].sort((a, b) => a - b),
        wrong: this.wrong,
        settled_twice: this.settledTwice,
      },
      s2c: {
        received: this.s2cReceived,
        lost: this.s2cLost,
        doubled: this.s2cDoubled,
        answer_before_numbered: this.answerBeforeNumbered,
        examples: this.s2cExamples,
        sessions: this.sessions,
      },
      broadcast: {
        shouts: this.lastM,
        answered_max: this.shoutsAnsweredMax,
        failed: this.shoutsFailed,
        hanging: [...this.shoutsPending].sort((a, b) => a - b),
        heard: this.heard,
        heard_last: Object.fromEntries(this.heardLast),
        doubled_or_late: this.heardDoubledOrLate,
        gaps: this.heardGaps,
        gap_count: this.heardGapCount,
        skipped_after_fresh: this.heardSkippedAfterFresh,
        examples: this.heardExamples,
      },
      drops: this.drops,
      outages: this.outages,
      open_outage: this.dropAt !== null,
      resumes,
      refusals: Object.fromEntries(Object.entries(refusals).filter(([, n]) => n > 0)),
      missing_at_end: missingAtEnd,
      missing_at_end_after_fresh: missingAfterFresh,
    };
  }
}
