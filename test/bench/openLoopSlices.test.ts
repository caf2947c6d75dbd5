// The sidecar and gRPC benches' open loop in slices (bench/sidecar/nodeLoad.ts mergeOpen, turns.ts):
// the paths take turns slice by slice, and a path's slices become one sample whose percentiles are
// those of all its latencies pooled, not a mean of the slices' own percentiles; and how the slowest
// calls are lined up with the processes' stalls (hopStalls.ts).
import { describe, expect, it } from "vitest"
import { describeSlowRequest, describeTail, slowestEpisodes, stallOfLine } from "../../bench/sidecar/hopStalls.ts"
import { mergeOpen, type OpenSample } from "../../bench/sidecar/nodeLoad.ts"
import { runInTurns, slicingOf, turnOrder } from "../../bench/sidecar/turns.ts"

const slice = (latencies: ReadonlyArray<number>, extra: Partial<OpenSample> = {}): OpenSample => {
  const sorted = Float64Array.from(latencies).sort()
  return { sent: latencies.length, p50: NaN, p90: NaN, p99: NaN, max: sorted.at(-1)!, errors: 0, firstError: undefined, maxOutstanding: 1, latencies: sorted, calls: { dueMs: new Float64Array(latencies.length), ms: Float64Array.from(latencies) }, ...extra }
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

describe("runInTurns", () => {
  it("warms up in order, then takes turns with neighbours swapped every other slice, pooling each path's measured slices", async () => {
    const runs: Array<string> = []
    const round = await runInTurns(["d", "m", "u"], { warmupMs: 500, measureMs: 1000, sliceMs: 250 }, async (mode, ms, measured) => {
      runs.push(`${measured ? "" : "w:"}${mode}`)
      expect(ms).toBe(250)
      return slice(measured ? [runs.length] : [])
    })
    expect(runs).toStrictEqual(["w:d", "w:m", "w:u", "w:d", "w:m", "w:u", "d", "m", "u", "m", "d", "u", "d", "m", "u", "m", "d", "u"])
    expect(round.slicing).toStrictEqual({ slices: 4, sliceMs: 250 })
    expect([...round.samples.get("d")!.latencies]).toStrictEqual([7, 11, 13, 17])
    expect(round.windows.get("u")!.length).toBe(4)
    for (const [start, end] of round.windows.get("u")!) expect(end).toBeGreaterThanOrEqual(start)
  })

  it("cuts a window into slices of about the length asked, at least one", () => {
    expect(slicingOf(1000, 300)).toStrictEqual({ slices: 3, sliceMs: 1000 / 3 })
    expect(slicingOf(100, 250)).toStrictEqual({ slices: 1, sliceMs: 100 })
    expect(turnOrder(["a", "b", "c", "d"], 1)).toStrictEqual(["b", "a", "d", "c"])
  })
})

describe("the slowest calls and the stalls they met", () => {
  const calls = (pairs: ReadonlyArray<readonly [due: number, ms: number]>) => ({ dueMs: Float64Array.from(pairs.map(([due]) => due)), ms: Float64Array.from(pairs.map(([, ms]) => ms)) })
  const stall = (endMs: number, ms: number) => ({ endMs, ms, cpuMs: ms, gcMs: 0, majorGcMs: 0 })

  it("keeps one call per episode: a call overlapping a slower one is left out", () => {
    const episodes = slowestEpisodes(calls([[0, 50], [1, 49], [2, 48], [100, 20], [300, 30]]), 3)
    expect(episodes).toStrictEqual([{ dueMs: 0, ms: 50 }, { dueMs: 300, ms: 30 }, { dueMs: 100, ms: 20 }])
  })

  it("says which process stalled while the tail's calls waited", () => {
    const tail = describeTail(calls([[0, 1], [10, 30], [100, 30], [200, 30], [300, 30]]), 30, [["client", [stall(30, 15)]], ["B", [stall(120, 10), stall(230, 20)]]])
    expect(tail).toBe("4 calls >= 30.0 ms met a stall of: client 25 %, B 50 %; of none 25 %")
    expect(describeSlowRequest({ dueMs: 1100, ms: 40 }, [["client", []], ["B", [stall(1120, 10), stall(1135, 12)]]], 1000)).toBe(
      "40.0 ms due at 0.100 s: B 2 stalls, longest 12.0 ms (CPU 12, GC 0), 22.0 ms in all"
    )
  })

  it("reads a probe's line, and nothing else", () => {
    expect(stallOfLine({ event: "bench-stall", endMs: 5, ms: 12.5, cpuMs: 1, gcMs: 0, majorGcMs: 0 })).toStrictEqual({ endMs: 5, ms: 12.5, cpuMs: 1, gcMs: 0, majorGcMs: 0 })
    expect(stallOfLine({ event: "sidecar-ready" })).toBeUndefined()
    expect(stallOfLine(null)).toBeUndefined()
  })
})
