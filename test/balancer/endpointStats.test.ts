// EndpointStats: the cold default, the time-decayed EWMA, pending counts, the failure penalty and
// the load formula, all on explicit times (no clock).
import { describe, expect, it } from "vitest"
import { EndpointStats, weightEpoch } from "../../src/balancer/endpointStats.ts"

describe("EndpointStats", () => {
  it("starts cold at the default latency and takes its first sample outright", () => {
    const e = new EndpointStats("a:1", { defaultLatencyMs: 50 })
    expect(e.cold).toBe(true)
    expect(e.latencyMs).toBe(50)
    e.begin(0)
    e.end(20, 20, true)
    expect(e.cold).toBe(false)
    expect(e.latencyMs).toBe(20)
  })

  it("weighs a sample by the time since the last one: w = exp(-dt/tau) (no floor)", () => {
    const e = new EndpointStats("a:1", { tauMs: 10_000, minSampleWeight: 0, staleAfterMs: Number.POSITIVE_INFINITY })
    e.end(0, 10, true)
    e.end(10_000, 110, true)
    expect(e.latencyMs).toBeCloseTo(10 * Math.exp(-1) + 110 * (1 - Math.exp(-1)), 9)
    e.end(10_000, 1_000, true) // dt = 0: no weight at all
    expect(e.latencyMs).toBeCloseTo(10 * Math.exp(-1) + 110 * (1 - Math.exp(-1)), 9)
    e.end(1_000_000, 5, true) // long quiet spell: the new sample takes over
    expect(e.latencyMs).toBeCloseTo(5, 6)
  })

  it("a burst of samples weighs at least as a running mean, then at least the floor", () => {
    const e = new EndpointStats("a:1", { tauMs: 10_000, minSampleWeight: 0.05 })
    e.end(0, 50, true)
    e.end(0, 10, true) // weight 1/2
    expect(e.latencyMs).toBeCloseTo(30, 9)
    e.end(0, 30, true) // weight 1/3
    expect(e.latencyMs).toBeCloseTo(30, 9)
    for (let i = 0; i < 200; i++) e.end(0, 10, true)
    // After the running-mean start every sample weighs 0.05: 200 samples at 10 ms pull it to 10.
    expect(e.latencyMs).toBeCloseTo(10, 3)
  })

  it("counts pending and computes load = (estimate + penalty) * (pending / weight + 1)", () => {
    const e = new EndpointStats("a:1", { weight: 4, defaultLatencyMs: 8 })
    e.begin(0)
    e.begin(0)
    expect(e.pending).toBe(2)
    expect(e.load(0)).toBe(12)
    e.end(1, 8, true)
    expect(e.pending).toBe(1)
    expect(e.load(1)).toBe(10)
  })

  it("a cold endpoint reports coldEstimateMs() until its first sample", () => {
    let peers = 30
    const e = new EndpointStats("a:1", { defaultLatencyMs: 100, coldEstimateMs: () => peers })
    expect(e.estimateMs(0)).toBe(30)
    peers = 5
    expect(e.load(0)).toBe(5)
    e.end(1, 50, true)
    expect(e.estimateMs(1)).toBe(50)
  })

  it("fades the estimate once no sample has come for staleAfterMs", () => {
    const e = new EndpointStats("a:1", { tauMs: 1_000, staleAfterMs: 2_000 })
    e.end(0, 100, true)
    expect(e.estimateMs(2_000)).toBe(100)
    expect(e.estimateMs(3_000)).toBeCloseTo(100 * Math.exp(-1), 9)
  })

  it("a failure adds a penalty that fades with penaltyTau and leaves the EWMA alone; clearPenalty drops it", () => {
    const e = new EndpointStats("a:1", { tauMs: 5_000, penaltyTauMs: 1_000, failurePenaltyMs: 100, defaultLatencyMs: 10 })
    e.end(0, 10, true)
    e.begin(0)
    e.end(0, 1, false)
    expect(e.latencyMs).toBe(10)
    expect(e.penaltyMs(0)).toBe(100)
    expect(e.penaltyMs(1_000)).toBeCloseTo(100 * Math.exp(-1), 9)
    expect(e.load(1_000)).toBeCloseTo(10 + 100 * Math.exp(-1), 9)
    expect(e.failures).toBe(1)
    e.clearPenalty()
    expect(e.penaltyMs(1_000)).toBe(0)
  })

  it("caps a success sample at sampleCapFactor x the estimate its request started with (at least the floor above it)", () => {
    const e = new EndpointStats("a:1", { sampleCapFactor: 4, sampleCapFloorMs: 20, minSampleWeight: 0.5 })
    e.end(0, 10, true)
    e.end(1, 8_000, true, 10) // a stalled request: counts as 40 ms
    expect(e.latencyMs).toBeCloseTo(25, 9)
    e.end(2, 8_000, true, 1) // a small estimate: the floor (1 + 20 ms)
    expect(e.latencyMs).toBeCloseTo((25 + 21) / 2, 9)
    e.end(3, 30, true, 25) // below the cap: as it is
    expect(e.latencyMs).toBeCloseTo((23 + 30) / 2, 9)
  })

  it("is due a probe after staleAfter with nothing started or in flight; a request started after such a gap replaces the estimate and clears the penalty", () => {
    const e = new EndpointStats("a:1", { staleAfterMs: 1_000, failurePenaltyMs: 500 })
    expect(e.probeDue(5_000)).toBe(false) // cold: p2c tries it by weight anyway
    e.begin(0)
    e.end(100, 100, true)
    e.begin(200)
    e.end(250, 50, false)
    expect(e.probeDue(1_199)).toBe(false)
    expect(e.probeDue(1_200)).toBe(true)
    e.begin(1_200)
    expect(e.probeDue(5_000)).toBe(false) // one probe at a time
    e.end(1_210, 10, true)
    expect(e.latencyMs).toBe(10)
    expect(e.penaltyMs(1_210)).toBe(0)
    // Under steady traffic a sample only moves the EWMA.
    e.begin(1_300)
    e.end(1_310, 110, true)
    expect(e.latencyMs).toBeGreaterThan(10)
    expect(e.latencyMs).toBeLessThan(110)
  })

  it("a probe that finds the endpoint no faster doubles the gap before the next, up to 4 x staleAfter; a faster one resets it", () => {
    const e = new EndpointStats("a:1", { staleAfterMs: 1_000 })
    e.begin(0)
    e.end(100, 100, true)
    let t = 100
    /** Waits for the next probe, runs it with `latency`; returns how long after the last sample it came. */
    const probe = (latency: number) => {
      const from = t
      while (!e.probeDue(t)) t += 10
      e.begin(t)
      t += latency
      e.end(t, latency, true)
      return t - latency - from
    }
    expect([probe(100), probe(100), probe(100), probe(100)]).toStrictEqual([1_000, 2_000, 4_000, 4_000])
    expect(probe(10)).toBe(4_000) // faster: the estimate follows, the gap is back to 1 s
    expect(e.latencyMs).toBe(10)
    expect(probe(10)).toBe(1_000)
  })

  it("a weight of 0 costs Infinity; setWeight moves the epoch only on a change", () => {
    const e = new EndpointStats("a:1")
    const before = weightEpoch()
    e.setWeight(1)
    expect(weightEpoch()).toBe(before)
    e.setWeight(0)
    expect(weightEpoch()).toBe(before + 1)
    expect(e.load(0)).toBe(Number.POSITIVE_INFINITY)
    expect(e.weight).toBe(0)
  })
})
