// The token bucket (src/mux/tokenBucket.ts) the routes' rate limits and the issuer's handshake rate
// share, on Effect's TestClock: 100/s under 300/s offered holds within 5 %, a refused take says how
// long until a token; counted in whole thousandths, a whole rate asked every whole ms admits the
// exact count and answers the exact wait (a float count came short of a token by 1e-16 and
// refused it), and a rate under one a second (0.5: a token every 2 s; 0.001) keeps the part of a
// thousandth it has earned between asks, on whole-ms and fractional-ms clocks.
import { it as effectIt } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import { TestClock } from "effect/testing"
import { describe, expect, it } from "vitest"
import { TokenBucket } from "../../src/mux/tokenBucket.ts"

/** Asks `bucket` at each of `times` (ms): the times it admitted, and for each refusal the time it said a token would be there. */
const askAt = (bucket: TokenBucket, times: Iterable<number>) => {
  const admitted: Array<number> = []
  const promised: Array<{ at: number; due: number }> = []
  for (const now of times) {
    const wait = bucket.take(now)
    if (wait === 0) admitted.push(now)
    else promised.push({ at: now, due: now + wait })
  }
  return { admitted, promised }
}

/** 0, step, 2 x step, ... below `end`. */
function* steps(step: number, end: number) {
  for (let i = 0; i * step < end; i++) yield i * step
}

describe("token bucket (on TestClock)", () => {
  effectIt.effect("100/s with a burst of 10 under 300/s offered for 10 s admits 100/s within 5 % (after the burst)", () =>
    Effect.gen(function*() {
      const bucket = new TokenBucket(100, 10, yield* Clock.currentTimeMillis)
      let admitted = 0
      let refused = 0
      // 300/s: three requests every 10 ms, for 10 s.
      for (let tick = 0; tick < 1000; tick++) {
        const now = yield* Clock.currentTimeMillis
        for (let i = 0; i < 3; i++) {
          if (bucket.take(now) === 0) admitted++
          else refused++
        }
        yield* TestClock.adjust(10)
      }
      expect(admitted + refused).toBe(3000)
      const rate = (admitted - 10) / 10
      expect(Math.abs(rate - 100) / 100).toBeLessThanOrEqual(0.05)
      // Pure arithmetic: the exact figure (the burst, then one token every 10 ms).
      expect(admitted).toBe(10 + 999)
    }))

  effectIt.effect("a refused take says how long until a token is there; nothing is taken meanwhile", () =>
    Effect.gen(function*() {
      const bucket = new TokenBucket(4, 1, yield* Clock.currentTimeMillis)
      expect(bucket.take(yield* Clock.currentTimeMillis)).toBe(0)
      expect(bucket.take(yield* Clock.currentTimeMillis)).toBeCloseTo(250)
      yield* TestClock.adjust(100)
      expect(bucket.take(yield* Clock.currentTimeMillis)).toBeCloseTo(150)
      yield* TestClock.adjust(150)
      expect(bucket.take(yield* Clock.currentTimeMillis)).toBe(0)
    }))

  effectIt.effect("0.5/s: one token every 2 s, asked every ms for 10 s; each refusal's wait ends at the next token", () =>
    Effect.gen(function*() {
      const start = yield* Clock.currentTimeMillis
      const bucket = new TokenBucket(0.5, 1, start)
      const admitted: Array<number> = []
      const refusedWaits: Array<number> = []
      for (let ms = 0; ms < 10_000; ms++) {
        const wait = bucket.take(yield* Clock.currentTimeMillis)
        if (wait === 0) admitted.push(ms)
        else if (ms % 500 === 1) refusedWaits.push(wait)
        yield* TestClock.adjust(1)
      }
      expect(admitted).toStrictEqual([0, 2_000, 4_000, 6_000, 8_000])
      // Asked 1 ms after a token was taken: 1,999 ms to the next; 501 ms after: 1,499; and so on.
      expect(refusedWaits.slice(0, 4)).toStrictEqual([1_999, 1_499, 999, 499])
    }))
})

describe("token bucket: counted in whole thousandths", () => {
  it("a whole rate asked every whole ms admits the exact count: 100/s with a burst of 1 for 100 s is 1 + 9,999 (a float count admitted 9,091)", () => {
    const { admitted, promised } = askAt(new TokenBucket(100, 1, 0), steps(1, 100_000))
    expect(admitted.length).toBe(10_000)
    expect(admitted.every((now, i) => now === i * 10)).toBe(true)
    // And every refusal names the time of the next token, to the ms: retry-after is built on it.
    expect(promised.every(({ at, due }) => due === Math.ceil((at + 1e-9) / 10) * 10)).toBe(true)
  })

  it("0.5/s on a clock read at fractions of a ms (as performance.now()) loses nothing between close asks: a token at each 2 s mark", () => {
    // A burst of 2, taken at once (0 and 0.37 ms): from then on the bucket is never full, so every
    // thousandth earned since 0 counts. Asked every 0.37 ms for 60 s: the first ask at or past each
    // 2 s mark is admitted, no other.
    const { admitted, promised } = askAt(new TokenBucket(0.5, 2, 0), steps(0.37, 60_000))
    expect(admitted.length).toBe(2 + 29)
    admitted.slice(2).forEach((now, i) => {
      expect(now).toBeGreaterThanOrEqual((i + 1) * 2_000)
      expect(now).toBeLessThan((i + 1) * 2_000 + 0.37)
    })
    // Each refusal's wait ends at the next mark.
    const farthest = promised.reduce((worst, { due }) => Math.max(worst, Math.abs(due - Math.round(due / 2_000) * 2_000)), 0)
    expect(farthest, "the farthest a wait ended from a mark (ms)").toBeLessThan(1e-6)
  })

  it("a full bucket earns nothing: 0.5/s with a burst of 1 asked every 0.37 ms gives its next token 2 s after the last was taken", () => {
    const { admitted } = askAt(new TokenBucket(0.5, 1, 0), steps(0.37, 10_000))
    // Full from 2,000 ms until the ask at 2,000.22 took it, then 2 s from there: the 0.22 ms it sat full earned nothing.
    expect(admitted.length).toBe(5)
    for (let i = 1; i < admitted.length; i++) {
      expect(admitted[i]! - admitted[i - 1]!).toBeGreaterThanOrEqual(2_000)
      expect(admitted[i]! - admitted[i - 1]!).toBeLessThan(2_000 + 0.37)
    }
  })

  it("the least rate the routes take, 0.001/s with a burst of 1: a token every 1,000 s, the wait says so", () => {
    const bucket = new TokenBucket(0.001, 1, 0)
    expect(bucket.take(0)).toBe(0)
    expect(bucket.take(1)).toBeCloseTo(999_999, 6)
    expect(bucket.take(999_999.5)).toBeCloseTo(0.5, 6)
    expect(bucket.take(1_000_000)).toBe(0)
  })

  it("a fractional rate above 1 (2.5/s, burst 3): 3 at once, then one each 400 ms, asked every 7 ms for 10 s", () => {
    const { admitted } = askAt(new TokenBucket(2.5, 3, 0), steps(7, 10_000))
    // 3 at 0, then at the first 7 ms ask at or past each 400 ms mark.
    expect(admitted.length).toBe(3 + 24)
    expect(admitted.slice(3)).toStrictEqual(Array.from({ length: 24 }, (_, i) => Math.ceil(((i + 1) * 400) / 7) * 7))
  })

  it("full again once its burst has refilled, not a thousandth before; full from the start", () => {
    const bucket = new TokenBucket(0.5, 2, 0)
    expect(bucket.isFull(0)).toBe(true)
    expect(bucket.take(0)).toBe(0)
    expect(bucket.take(0)).toBe(0)
    expect(bucket.isFull(3_999)).toBe(false)
    expect(bucket.isFull(4_000)).toBe(true)
  })

  it("takes several at once only when all are there, and says when they will be (an HTTP/2 connection's dropped frames)", () => {
    const bucket = new TokenBucket(10, 5, 0)
    expect(bucket.take(0, 3)).toBe(0)
    // 2 left: 3 more are 100 ms away, and nothing is taken by asking.
    expect(bucket.take(0, 3)).toBe(100)
    expect(bucket.take(0, 2)).toBe(0)
    expect(bucket.take(300, 3)).toBe(0)
    expect(bucket.take(300, 6)).toBeGreaterThan(0)
  })
})
