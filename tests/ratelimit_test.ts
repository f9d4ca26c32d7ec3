/** `src/ratelimit.ts`: the token bucket, driven by an injected clock. */
import assert from "node:assert/strict";
import { TokenBucket } from "../src/ratelimit.ts";

/** A clock the test moves by hand, in milliseconds. */
function manualClock(start = 1_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

function takeAll(bucket: TokenBucket, max = 10_000): number {
  let n = 0;
  while (n < max && bucket.take()) n++;
  return n;
}

Deno.test("a full bucket allows exactly `burst` actions at once", () => {
  for (const burst of [1, 5, 100]) {
    const clock = manualClock();
    const bucket = new TokenBucket(10, burst, clock.now);
    assert.equal(takeAll(bucket), burst, `burst ${burst}`);
    assert.equal(bucket.take(), false);
  }
});

Deno.test("tokens refill at `rate` per second, including fractions", () => {
  const clock = manualClock();
  const bucket = new TokenBucket(4, 4, clock.now); // one token every 250 ms
  assert.equal(takeAll(bucket), 4);
  clock.advance(249);
  assert.equal(bucket.take(), false, "not yet a whole token");
  clock.advance(1);
  assert.equal(bucket.take(), true, "one token after 250 ms");
  assert.equal(bucket.take(), false);
  clock.advance(125);
  assert.equal(bucket.take(), false, "half a token");
  clock.advance(125);
  assert.equal(bucket.take(), true, "two halves make a token");
  clock.advance(1000);
  assert.equal(takeAll(bucket), 4, "one second refills 4");
});

Deno.test("refill never exceeds `burst`, however long the bucket rests", () => {
  const clock = manualClock();
  const bucket = new TokenBucket(50, 100, clock.now);
  assert.equal(takeAll(bucket), 100);
  clock.advance(3_600_000);
  assert.equal(takeAll(bucket), 100);
});

Deno.test("a steady sender at the rate is never refused; one twice as fast gets half through", () => {
  const clock = manualClock();
  const steady = new TokenBucket(50, 100, clock.now);
  for (let i = 0; i < 1000; i++) {
    clock.advance(20); // 50 per second
    assert.equal(steady.take(), true, `message ${i}`);
  }
  const clock2 = manualClock();
  const fast = new TokenBucket(50, 100, clock2.now);
  let allowed = 0;
  for (let i = 0; i < 1000; i++) {
    if (fast.take()) allowed++;
    clock2.advance(10); // 100 per second
  }
  // The burst of 100, plus 50/s over the 9.99 s between the first and the last message:
  // 499.5 tokens, of which 499 whole ones.
  assert.equal(allowed, 100 + 499);
});

Deno.test("a refused take costs nothing: tokens are not driven below zero", () => {
  const clock = manualClock();
  const bucket = new TokenBucket(1, 1, clock.now);
  assert.equal(bucket.take(), true);
  for (let i = 0; i < 100; i++) assert.equal(bucket.take(), false);
  clock.advance(1000);
  assert.equal(bucket.take(), true, "one second after the last success, one token");
});

Deno.test("rate 0 means unlimited, whatever the burst, without reading the clock", () => {
  let reads = 0;
  const bucket = new TokenBucket(0, 1, () => {
    reads++;
    return 0;
  });
  const readsAtStart = reads;
  for (let i = 0; i < 100_000; i++) assert.equal(bucket.take(), true);
  assert.equal(reads, readsAtStart, "take() does not consult the clock when unlimited");
});

Deno.test("the clock is read at construction: time before it does not count", () => {
  const clock = manualClock(0);
  clock.advance(60_000);
  const bucket = new TokenBucket(10, 2, clock.now);
  assert.equal(takeAll(bucket), 2);
  assert.equal(bucket.take(), false);
});

Deno.test("rate, burst and now are readable", () => {
  const now = () => 0;
  const bucket = new TokenBucket(50, 100, now);
  assert.equal(bucket.rate, 50);
  assert.equal(bucket.burst, 100);
  assert.equal(bucket.now, now);
});

Deno.test("the default clock is performance.now", () => {
  const bucket = new TokenBucket(1, 3);
  const a = bucket.now();
  const b = performance.now();
  assert.ok(b >= a && b - a < 1000);
  assert.equal(takeAll(bucket), 3);
});
