// Golden metrics (src/telemetry/golden.ts) on an injected clock: a known load (200 requests, 10 %
// errors, latencies from a fixed distribution) gives rates within 2 % of the truth and percentiles
// within one histogram bucket; the windows slide (what is older than a window leaves it); routes
// are templated and capped; views merge by adding; and 50 services x 10 routes x 20 callers fit in
// 20 MB (measured and printed).
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { describe, expect, it } from "vitest"
import { GOLDEN_BUCKETS, makeGolden, mergeViews, routeOf, type WindowStats } from "../../src/telemetry/golden.ts"

/** A clock the test moves. */
const testClock = (startMs: number) => {
  let nowMs = startMs
  return { now: () => nowMs, advance: (ms: number) => (nowMs += ms) }
}

/** Deterministic latencies: a log-normal around 20 ms from a seeded generator (mulberry32). */
const latencies = (count: number, seed: number): Array<number> => {
  let state = seed
  const random = () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return Array.from({ length: count }, () => {
    const gaussian = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random())
    return 0.02 * Math.exp(0.8 * gaussian)
  })
}

const truePercentile = (sorted: ReadonlyArray<number>, q: number) => sorted[Math.ceil(q * sorted.length) - 1]!

const bucketIndex = (seconds: number) => {
  const i = GOLDEN_BUCKETS.findIndex((bound) => seconds <= bound)
  return i === -1 ? GOLDEN_BUCKETS.length : i
}

/** Whether an estimate lies in the truth's bucket or a neighbour. */
const withinOneBucket = (estimate: number | null, truth: number) => estimate !== null && Math.abs(bucketIndex(estimate) - bucketIndex(truth)) <= 1

const START = 1_700_000_000_000

describe("golden metrics", () => {
  it("200 requests with 10 % errors: success rate and rps within 2 %, p50/p95/p99 within one bucket, in every window", () => {
    const clock = testClock(START)
    const golden = makeGolden({ self: "web", now: clock.now })
    const served = golden.served("store")
    const calls = golden.callsTo("store")
    const samples = latencies(200, 42)
    // 10 requests a second for 20 s; every tenth fails.
    for (let i = 0; i < 200; i++) {
      served.record(`/items/${i}?q=1`, samples[i]!, i % 10 === 9)
      calls.record(clock.now(), samples[i]!, i % 10 === 9)
      clock.advance(100)
    }
    const sorted = [...samples].sort((a, b) => a - b)
    const view = golden.view()
    const check = (stats: WindowStats, requests: number, truth: ReadonlyArray<number>, what: string) => {
      expect(stats.requests, what).toBe(requests)
      expect(Math.abs(stats.successRate - 0.9), what).toBeLessThanOrEqual(0.9 * 0.02)
      expect(Math.abs(stats.rps - 10) / 10, `${what} rps ${stats.rps}`).toBeLessThanOrEqual(0.02)
      const ordered = [...truth].sort((a, b) => a - b)
      for (const [q, estimate] of [[0.5, stats.p50], [0.95, stats.p95], [0.99, stats.p99]] as const) {
        const truthAt = truePercentile(ordered, q)
        expect(withinOneBucket(estimate, truthAt), `${what} p${q * 100}: ${estimate} vs ${truthAt}`).toBe(true)
      }
    }
    const service = view.services.find((s) => s.service === "store")!
    check(service.windows["1m"].stats, 200, sorted, "service 1m")
    check(service.windows["10m"].stats, 200, sorted, "service 10m")
    // The 10 s window: one-second slots, the current one (just begun, empty) and the 9 before it.
    check(service.windows["10s"].stats, 90, samples.slice(110), "service 10s")
    const edge = view.edges.find((e) => e.caller === "web" && e.callee === "store")!
    check(edge.windows["1m"].stats, 200, sorted, "edge 1m")
    const route = view.routes.find((r) => r.service === "store")!
    expect(route.route).toBe("/items/{id}")
    check(route.windows["1m"].stats, 200, sorted, "route 1m")
  })

  it("the windows slide: requests older than a window leave it, and a slot is reused cleared", () => {
    const clock = testClock(START)
    const golden = makeGolden({ now: clock.now })
    const served = golden.served("store")
    for (let i = 0; i < 50; i++) served.record("/a", 0.01, false)
    clock.advance(11_000)
    let windows = golden.view().services[0]!.windows
    expect(windows["10s"].requests).toBe(0)
    expect(windows["1m"].requests).toBe(50)
    clock.advance(60_000)
    windows = golden.view().services[0]!.windows
    expect(windows["1m"].requests).toBe(0)
    expect(windows["10m"].requests).toBe(50)
    clock.advance(600_000)
    served.record("/a", 0.01, true)
    windows = golden.view().services[0]!.windows
    expect(windows["10m"].requests).toBe(1)
    expect(windows["10m"].errors).toBe(1)
    expect(windows["10m"].stats.successRate).toBe(0)
    const points = golden.points({ service: "store" })!
    expect(points).toHaveLength(60)
    expect(points.reduce((sum, [, requests]) => sum + requests, 0)).toBe(1)
    expect(golden.points({ service: "nobody" })).toBeUndefined()
  })

  /** A service's windows after five minutes at one request a second, a step back of an hour and `seconds` more at one a second. */
  const windowsAfterStepBack = (seconds: number) => {
    const clock = testClock(START)
    const golden = makeGolden({ self: "web", now: clock.now })
    const served = golden.served("store")
    for (let i = 0; i < 300 + seconds; i++) {
      if (i === 300) clock.advance(-3_600_000)
      served.record("/items", 0.01, false)
      clock.advance(1000)
    }
    return golden.view().services.find((s) => s.service === "store")!.windows
  }

  it("a wall clock stepped back an hour: the windows' rates are over the time they cover, not over 1 s", () => {
    const windows = windowsAfterStepBack(20)
    // Before, the series' start was an hour ahead of the clock: each window covered "1 s" (the
    // floor), and the 10 s window's 9 requests (its current slot is empty) read as 9 a second.
    expect(windows["10s"].stats.requests).toBe(9)
    expect(windows["10s"].stats.rps).toBeCloseTo(1, 1)
    // A window the step's time does not fill yet counts whole (the series is older than it): an
    // under-read while it fills, the 20 requests since the step over the 50-60 s its slots span.
    expect(windows["1m"].stats.requests).toBe(20)
    expect(windows["1m"].stats.rps).toBeLessThan(0.5)
  })

  it("a wall clock stepped back an hour, then past the series' start again: the rates stay over the time the windows cover", () => {
    // The load goes on at one a second until the clock is a minute past the series' start again.
    const windows = windowsAfterStepBack(3_600 - 300 + 60)
    // Every window is full of requests a second apart: 1 a second. Before, the series' start was
    // taken for its age again once the clock passed it: the 10 min window's ~600 requests over 60 s.
    expect(windows["10m"].stats.requests).toBeGreaterThan(580)
    expect(windows["10m"].stats.rps).toBeCloseTo(1, 1)
    expect(windows["1m"].stats.rps).toBeCloseTo(1, 1)
  })

  it("routes: ids templated, query dropped, depth and length bounded, and at most maxRoutes per service", () => {
    expect(routeOf("/users/123/orders/9f8e7d6c-1111-2222-3333-444455556666?x=1")).toBe("/users/{id}/orders/{id}")
    expect(routeOf("/pkg.v1.Greeter/SayHello")).toBe("/pkg.v1.Greeter/SayHello")
    expect(routeOf("/a/b/c/d/e/f")).toBe("/a/b/c/d/**")
    expect(routeOf("")).toBe("/")
    expect(routeOf(`/${"x".repeat(500)}`).length).toBe(120)
    const golden = makeGolden({ maxRoutes: 3, now: () => START })
    const served = golden.served("store")
    for (let i = 0; i < 10; i++) served.record(`/r${String.fromCharCode(97 + i)}`, 0.01, false)
    const routes = golden.view().routes.map((r) => [r.route, r.windows["1m"].requests])
    expect(routes).toStrictEqual([["/ra", 1], ["/rb", 1], ["/rc", 1], ["_other", 7]])
  })

  it("views merge by adding: two sidecars' series of one service are one series", () => {
    const clock = testClock(START)
    const a = makeGolden({ self: "web", now: clock.now })
    const b = makeGolden({ self: "web", now: clock.now })
    for (let i = 0; i < 30; i++) a.served("store").record("/x", 0.004, i < 3)
    for (let i = 0; i < 70; i++) b.served("store").record("/x", 0.004, false)
    clock.advance(10_000)
    const merged = mergeViews([a.view(), b.view()])
    expect(merged.services).toHaveLength(1)
    const stats = merged.services[0]!.windows["1m"].stats
    expect(stats.requests).toBe(100)
    expect(stats.successRate).toBeCloseTo(0.97, 10)
    expect(stats.rps).toBeCloseTo(10, 10)
    expect(merged.routes).toHaveLength(1)
  })

  it("memory: 50 services x 10 routes x 20 callers stay within 20 MB", () => {
    // A full collection before each reading, so garbage does not count (gc exposed at run time).
    setFlagsFromString("--expose-gc")
    const gc = runInNewContext("gc") as () => void
    gc()
    const before = process.memoryUsage()
    const clock = testClock(START)
    const golden = makeGolden({ self: "gateway", now: clock.now })
    // Every slot of every ring written: memory at its largest.
    for (let second = 0; second < 600; second += 1) {
      for (let s = 0; s < 50; s++) {
        const served = golden.served(`service-${s}`)
        if (second % 10 === 0 || second >= 590) {
          for (let r = 0; r < 10; r++) served.record(`/route-${r}`, 0.001 * (r + 1), r === 0)
          for (let c = 0; c < 20; c++) golden.edge(`caller-${c}`, `service-${s}`).record(clock.now(), 0.002, false)
        }
      }
      clock.advance(1000)
    }
    gc()
    const after = process.memoryUsage()
    const view = golden.view()
    expect(view.services).toHaveLength(50)
    expect(view.routes).toHaveLength(500)
    expect(view.edges).toHaveLength(1000)
    const grown = after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers
    console.log(`golden metrics, 50 services x 10 routes x 20 callers (1550 series): ${(grown / 1e6).toFixed(1)} MB (heap + array buffers, after a full GC)`)
    expect(grown).toBeLessThan(20e6)
  })
})
