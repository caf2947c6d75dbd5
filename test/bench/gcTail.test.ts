// The sidecar bench's GC attribution (bench/sidecar/gcTail.ts): the probe's `bench-gc` lines parsed,
// each hop's pauses counted over a path's slices only, and the slowest 1 % of requests lined up with
// the pauses that overlapped them.
import { describe, expect, it } from "vitest"
import { describeGcTail, gcOfLine, gcTail } from "../../bench/sidecar/gcTail.ts"

/** 200 requests due every 5 ms from t = 1000, 1 ms each, but for the slow ones given. */
const calls = (slow: Readonly<Record<number, number>>) => {
  const dueMs = Float64Array.from({ length: 200 }, (_, i) => 1000 + i * 5)
  const ms = Float64Array.from({ length: 200 }, (_, i) => slow[i] ?? 1)
  return { dueMs, ms }
}

describe("gcOfLine", () => {
  it("takes the probe's gc lines and nothing else", () => {
    expect(gcOfLine({ event: "bench-gc", startMs: 1000.5, ms: 0.8, major: false })).toStrictEqual({ startMs: 1000.5, ms: 0.8, major: false })
    expect(gcOfLine({ event: "bench-gc", startMs: 1, ms: 30, major: true })?.major).toBe(true)
    expect(gcOfLine({ event: "bench-stall", endMs: 1, ms: 30 })).toBeUndefined()
    expect(gcOfLine({ event: "bench-gc", startMs: "soon", ms: 1 })).toBeUndefined()
    expect(gcOfLine(null)).toBeUndefined()
  })
})

describe("gcTail", () => {
  it("counts the pauses that began in the path's slices, per 1,000 requests, and which of the slowest 1 % met one", () => {
    // Requests 10 and 100 are the slowest two (the top 1 % of 200): 10 (due 1050) met A's pause at
    // 1051 for 2 ms; 100 (due 1500) met nothing. B's pause at 5000 lies outside the window.
    const result = gcTail(calls({ 10: 4, 100: 3 }), [[1000, 2000]], [
      ["A", [{ startMs: 1051, ms: 2, major: false }, { startMs: 1300, ms: 0.5, major: false }]],
      ["B", [{ startMs: 1700, ms: 1, major: true }, { startMs: 5000, ms: 9, major: false }]]
    ])
    expect(result.hops).toStrictEqual([
      { name: "A", count: 2, perThousandRequests: 10, medianMs: 2, major: 0 },
      { name: "B", count: 1, perThousandRequests: 5, medianMs: 1, major: 1 }
    ])
    expect(result).toMatchObject({ tail: 2, fromMs: 3, met: 1, meanGcMs: 2 })
    expect(describeGcTail(result)).toBe(
      "GC: A 2 pauses (10.0 per 1,000 requests, median 2.00 ms, 0 full); B 1 pauses (5.0 per 1,000 requests, median 1.00 ms, 1 full); the slowest 2 (>= 3.00 ms): 1 met one (2.00 ms of GC each)"
    )
  })

  it("counts only the part of a pause inside a request's time", () => {
    // Request 0 (due 1000, 4 ms) met the last 1.5 ms of a 3 ms pause begun at 998.5, in the window.
    const result = gcTail(calls({ 0: 4, 1: 3.5 }), [[990, 2000]], [["A", [{ startMs: 998.5, ms: 3, major: false }]]])
    expect(result).toMatchObject({ tail: 2, met: 1, meanGcMs: 1.5 })
  })

  it("of no requests, says so", () => {
    const result = gcTail({ dueMs: new Float64Array(0), ms: new Float64Array(0) }, [], [["A", []]])
    expect(result.tail).toBe(0)
    expect(describeGcTail(result)).toBe("GC: A 0 pauses (0.0 per 1,000 requests, median 0.00 ms, 0 full); no request")
  })
})
