// The sans-IO heartbeat bookkeeping, with explicit times.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ClockSync, HeartbeatTracker, InputProgress, MIN_PROGRESS_BYTES, OutputProgress, StallDetector } from "../../dist/index.js";

test("an answer to beat k clears every beat <= k; the timeout then runs from the oldest still unanswered", () => {
  const tracker = new HeartbeatTracker();
  assert.equal(tracker.send(0), 1);
  assert.equal(tracker.send(1000), 2);
  assert.equal(tracker.send(2000), 3);
  assert.equal(tracker.oldestUnanswered, 0);
  assert.equal(tracker.answer(2, 2500), 1500); // round trip of beat 2
  assert.equal(tracker.oldestUnanswered, 2000); // beat 1 was cleared too
  assert.equal(tracker.answer(1, 2600), null); // late answer to a cleared beat: ignored
  assert.equal(tracker.latency, 1500);
  assert.equal(tracker.answer(3, 2100), 100);
  assert.equal(tracker.oldestUnanswered, null);
  assert.equal(tracker.answer(99, 3000), null, "an answer to a beat never sent changes nothing");
});

test("without answers, the oldest beat and the newest ones are remembered, not all of them", () => {
  const tracker = new HeartbeatTracker();
  for (let i = 0; i < 10_000; i++) tracker.send(i);
  assert.ok(tracker.pending <= 256, `${tracker.pending} beats remembered`);
  assert.equal(tracker.oldestUnanswered, 0);
  assert.equal(tracker.answer(10_000, 10_049), 50); // beat 10000 was sent at 9999
  assert.equal(tracker.pending, 0);
});

test("clock sync: offset = t_server - (t_send + t_receive) / 2, error = round trip / 2, best of the last 8", () => {
  const sync = new ClockSync();
  assert.equal(sync.best, null);
  assert.deepEqual(sync.add(1000, 1600, 1100), { offset: 550, error: 50, roundTrip: 100 });
  assert.deepEqual(sync.add(2000, 2510, 2020), { offset: 500, error: 10, roundTrip: 20 });
  assert.equal(sync.best.roundTrip, 20);
  for (let i = 0; i < 8; i++) sync.add(3000 + i, 3000 + i, 3000 + i + 30);
  assert.equal(sync.best.roundTrip, 30, "the 20 ms sample fell out of the window");
});

test("stall detector: a timer more than 250 ms late is a stall, seen from its firing time", () => {
  const stall = new StallDetector();
  stall.observe(1000, 1200);
  assert.equal(stall.stalledSince(0), false);
  stall.observe(2000, 2600);
  assert.equal(stall.stalledSince(2500), true);
  assert.equal(stall.stalledSince(2601), false);
  assert.equal(stall.maxLag, 600);
});

test("output progress: a backlog of at least 4 KiB that shrinks is progress; bytes in flight, a stuck or growing backlog are not", () => {
  const progress = new OutputProgress();
  assert.equal(progress.sample(1000, 900_000, 800_000), false, "the first sample is a baseline");
  assert.equal(progress.sample(2000, 900_000, 600_000), true);
  assert.equal(progress.progressAt, 2000);
  assert.equal(progress.sample(3000, 1_000_000, 700_000), false, "written 100 kB more, none taken");
  progress.reset();
  assert.equal(progress.progressAt, null);
  progress.sample(4000, 1_000, 30); // a heartbeat caught in flight
  assert.equal(progress.sample(5000, 1_030, 0), false);
  progress.sample(6000, 1_030 + MIN_PROGRESS_BYTES, MIN_PROGRESS_BYTES);
  assert.equal(progress.sample(7000, 1_030 + MIN_PROGRESS_BYTES, 0), true);
});

test("input progress: at least 4 KiB more of a message half received at the previous sample is progress; whole messages and a trickle are not", () => {
  const progress = new InputProgress();
  assert.equal(progress.sample(1000, 100_000, true), false, "the first sample is a baseline");
  assert.equal(progress.sample(2000, 300_000, true), true);
  assert.equal(progress.progressAt, 2000);
  assert.equal(progress.sample(3000, 300_000 + MIN_PROGRESS_BYTES - 1, true), false, "a trickle");
  assert.equal(progress.sample(4000, 500_000, false), true, "the message completed after more of it arrived");
  assert.equal(progress.sample(5000, 700_000, false), false, "nothing was half received at the previous sample");
  progress.reset();
  assert.equal(progress.progressAt, null);
  assert.equal(progress.sample(6000, 900_000, true), false, "a new wait starts with a baseline");
});
