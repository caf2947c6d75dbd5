// The sidecar bench's open loop in slices (bench/sidecar/nodeLoad.ts mergeOpen): the paths take
// turns slice by slice, and a path's slices become one sample whose percentiles are those of all
// its latencies pooled, not a mean of the slices' own percentiles.
import { describe, expect, it } from "vitest"
import { mergeOpen, type OpenSample } from "../../bench/sidecar/nodeLoad.ts"

const slice = (latencies: ReadonlyArray<number>, extra: Partial<OpenSample> = {}): OpenSample => {
  const sorted = Float64Array.from(latencies).sort()
  return { sent: latencies.length, p50: NaN, p90: NaN, p99: NaN, max: sorted.at(-1)!, errors: 0, firstError: undefined, maxOutstanding: 1, latencies: sorted, ...extra }
}

describe("mergeOpen", () => {
  it("takes the percentiles of the slices' latencies pooled", () => {
    // 99 fast requests in one slice, one slow in the other: the pooled p99 is a fast one, the max the slow one.
    const fast = Array.from({ length: 99 }, (_, i) => 1 + i / 100)
    const merged = mergeOpen([slice(fast), slice([50])])
    expect(merged.latencies.length).toBe(100)
    expect(merged.p50).toBeCloseTo(1.49, 9)
    expect(merged.p99).toBeCloseTo(1.98, 9)
    expect(merged.max).toBe(50)
    expect([...merged.latencies]).toStrictEqual([...merged.latencies].sort((a, b) => a - b))
  })

  it("sums what was sent and what failed, keeps the first error and the most outstanding", () => {
    const merged = mergeOpen([
      slice([1, 2], { errors: 0, maxOutstanding: 3 }),
      slice([3], { sent: 4, errors: 2, firstError: "status 502", maxOutstanding: 7 }),
      slice([4], { errors: 1, firstError: "socket hang up" })
    ])
    expect(merged).toMatchObject({ sent: 7, errors: 3, firstError: "status 502", maxOutstanding: 7 })
  })

  it("of no latencies at all, says so with NaN percentiles", () => {
    const merged = mergeOpen([slice([], { sent: 3, errors: 3, firstError: "ECONNREFUSED" })])
    expect(merged.p99).toBeNaN()
    expect(merged.max).toBeNaN()
    expect(merged.errors).toBe(3)
  })
})
