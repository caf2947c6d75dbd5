// The pickers, deterministic: a seeded PRNG and explicit times. Weighted shares over 100,000 picks,
// p2c avoiding a 10x slower endpoint and giving it its share back once it recovers, least pending,
// consistent hashing, and the Go reference's methods (FNV-1 vectors, weighted list, min pending).
import { describe, expect, it } from "vitest"
import { EndpointStats } from "../../src/balancer/endpointStats.ts"
import {
  consistentHash,
  fnv1_32,
  fnv1a_32,
  ipHash,
  leastPending,
  minPending,
  p2c,
  type Picker,
  queryValue,
  random,
  referenceList,
  roundRobin,
  seededRandom,
  smoothWeighted,
  SmoothWeightedRoundRobin,
  uriParam
} from "../../src/balancer/pickers.ts"

const endpoints = (weights: ReadonlyArray<number>, defaultLatencyMs = 10) =>
  weights.map((weight, i) => new EndpointStats(`10.0.0.${i + 1}:9090`, { weight, defaultLatencyMs }))

const shares = (picker: Picker<EndpointStats>, list: ReadonlyArray<EndpointStats>, picks: number, onPick?: (e: EndpointStats, t: number) => void) => {
  const counts = new Map<EndpointStats, number>(list.map((e) => [e, 0]))
  for (let t = 0; t < picks; t++) {
    const e = picker.pick(list, { now: t })!
    counts.set(e, counts.get(e)! + 1)
    onPick?.(e, t)
  }
  return list.map((e) => counts.get(e)! / picks)
}

const expectWeightShares = (observed: ReadonlyArray<number>, weights: ReadonlyArray<number>) => {
  const total = weights.reduce((a, b) => a + b, 0)
  observed.forEach((share, i) => {
    const expected = weights[i]! / total
    expect(Math.abs(share - expected) / expected, `endpoint ${i}: ${share} vs ${expected}`).toBeLessThan(0.02)
  })
}

describe("weighted shares over 100,000 picks", () => {
  const weights = [1, 2, 3, 4, 10]

  it("smooth weighted round robin", () => {
    expectWeightShares(shares(smoothWeighted<EndpointStats>(), endpoints(weights), 100_000), weights)
  })

  it("the re-exported SmoothWeightedRoundRobin spreads picks", () => {
    const wrr = new SmoothWeightedRoundRobin([{ id: "a", weight: 5 }, { id: "b", weight: 1 }, { id: "c", weight: 1 }])
    expect(Array.from({ length: 7 }, () => wrr.pick()!.id).join("")).toBe("aabacaa")
  })

  it("p2c with equal latencies", () => {
    const list = endpoints(weights)
    const observed = shares(p2c<EndpointStats>({ random: seededRandom(42) }), list, 100_000, (e, t) => {
      e.begin(t)
      e.end(t, 10, true)
    })
    expectWeightShares(observed, weights)
  })
})

/**
 * A small event loop: one arrival per ms, each request lasting its endpoint's latency; completions
 * are applied before each arrival. Returns the picks per endpoint over [from, to).
 */
const simulate = (
  picker: Picker<EndpointStats>,
  list: ReadonlyArray<EndpointStats>,
  latencyOf: (e: EndpointStats, t: number) => number,
  from: number,
  to: number,
  inFlight: Array<{ at: number; e: EndpointStats; latency: number }>
) => {
  const counts = new Map<EndpointStats, number>(list.map((e) => [e, 0]))
  for (let t = from; t < to; t++) {
    inFlight.sort((a, b) => a.at - b.at)
    while (inFlight.length > 0 && inFlight[0]!.at <= t) {
      const done = inFlight.shift()!
      done.e.end(done.at, done.latency, true)
    }
    const e = picker.pick(list, { now: t })!
    counts.set(e, counts.get(e)! + 1)
    e.begin(t)
    const latency = latencyOf(e, t)
    inFlight.push({ at: t + latency, e, latency })
  }
  return list.map((e) => counts.get(e)! / (to - from))
}

describe("p2c and a slow endpoint", () => {
  it("a 10x slower endpoint gets far less than its share, and gets it back after it recovers", () => {
    const list = endpoints([1, 1, 1, 1])
    const slow = list[3]!
    const picker = p2c<EndpointStats>({ random: seededRandom(7) })
    const recoverAt = 60_000
    const latencyOf = (e: EndpointStats, t: number) => (e === slow && t < recoverAt ? 100 : 10)
    const inFlight: Array<{ at: number; e: EndpointStats; latency: number }> = []

    const during = simulate(picker, list, latencyOf, 0, recoverAt, inFlight)
    expect(during[3]!).toBeLessThan(0.25 / 3)
    expect(slow.latencyMs).toBeGreaterThan(50)

    // Recovered. Starved of samples, it is probed (p2c) once its estimate is stale: that fast
    // sample, replacing the estimate after the gap, brings it back.
    simulate(picker, list, latencyOf, recoverAt, recoverAt + 40_000, inFlight)
    expect(slow.latencyMs).toBeLessThan(15)
    const after = simulate(picker, list, latencyOf, recoverAt + 40_000, recoverAt + 60_000, inFlight)
    expect(after[3]!).toBeGreaterThan(0.25 * 0.8)
    expect(after[3]!).toBeLessThan(0.25 * 1.2)
  })

  it("draws only endpoints with a positive weight, and nothing from an empty list", () => {
    const list = endpoints([0, 1, 0])
    const picker = p2c<EndpointStats>({ random: seededRandom(1) })
    for (let t = 0; t < 100; t++) expect(picker.pick(list, { now: t })).toBe(list[1])
    expect(picker.pick([], { now: 0 })).toBeUndefined()
    expect(picker.pick(endpoints([0, 0]), { now: 0 })).toBeUndefined()
  })

  it("follows a run-time weight change", () => {
    const list = endpoints([1, 1])
    const picker = p2c<EndpointStats>({ random: seededRandom(3) })
    const eq = () => shares(picker, list, 20_000, (e, t) => (e.begin(t), e.end(t, 10, true)))
    expect(eq()[0]!).toBeCloseTo(0.5, 1)
    list[0]!.setWeight(3)
    expect(eq()[0]!).toBeCloseTo(0.75, 1)
  })
})

describe("leastPending", () => {
  it("picks the emptiest (per unit of weight), ties in turn", () => {
    const list = endpoints([1, 1, 2])
    const picker = leastPending<EndpointStats>()
    list[0]!.begin(0)
    list[1]!.begin(0)
    list[1]!.begin(0)
    list[2]!.begin(0)
    list[2]!.begin(0) // 2 pending over weight 2: (2+1)/2 = 1.5 vs a's 2 and b's 3
    expect(picker.pick(list, { now: 0 })).toBe(list[2])
    list[2]!.begin(0)
    expect(picker.pick(list, { now: 0 })).toBe(list[2]) // c now 2.0 = a's 2.0: a tie; this turn starts at b, so c is met first
    const idle = endpoints([1, 1, 1])
    const seen = new Set(Array.from({ length: 3 }, () => picker.pick(idle, { now: 0 })))
    expect(seen.size).toBe(3)
  })
})

describe("consistentHash", () => {
  const keys = Array.from({ length: 20_000 }, (_, i) => `user-${i}`)

  it("same key, same endpoint; removing one endpoint moves only its keys (about 1/n)", () => {
    const list = endpoints(Array.from({ length: 10 }, () => 1))
    const picker = consistentHash<EndpointStats>()
    const before = keys.map((key) => picker.pick(list, { now: 0, key })!)
    expect(keys.map((key) => picker.pick(list, { now: 0, key }))).toStrictEqual(before)
    const removed = list[3]!
    const rest = list.filter((e) => e !== removed)
    const after = keys.map((key) => picker.pick(rest, { now: 0, key })!)
    let moved = 0
    keys.forEach((_, i) => {
      if (before[i] === removed) moved++
      else expect(after[i]).toBe(before[i])
    })
    expect(moved / keys.length).toBeGreaterThan(0.05)
    expect(moved / keys.length).toBeLessThan(0.15)
    // The order of the candidates does not matter.
    expect(keys.slice(0, 500).map((key) => picker.pick([...rest].reverse(), { now: 0, key }))).toStrictEqual(after.slice(0, 500))
  })

  it("respects weights roughly", () => {
    const weights = [1, 2, 4]
    const list = endpoints(weights)
    const picker = consistentHash<EndpointStats>()
    const counts = [0, 0, 0]
    for (const key of keys) counts[list.indexOf(picker.pick(list, { now: 0, key })!)]!++
    counts.forEach((c, i) => {
      const expected = weights[i]! / 7
      expect(Math.abs(c / keys.length - expected) / expected).toBeLessThan(0.25)
    })
  })
})

describe("the reference's methods", () => {
  it("FNV-1 32 (and 1a) known vectors", () => {
    expect(fnv1_32("")).toBe(0x811c9dc5)
    expect(fnv1_32("a")).toBe(0x050c5d7e)
    expect(fnv1_32("foobar")).toBe(0x31f0b262)
    expect(fnv1a_32("")).toBe(0x811c9dc5)
    expect(fnv1a_32("a")).toBe(0xe40c292c)
    expect(fnv1a_32("foobar")).toBe(0xbf9cf968)
    expect(fnv1_32("é")).toBe(((Math.imul(Math.imul(0x811c9dc5, 0x01000193) ^ 0xc3, 0x01000193) ^ 0xa9) >>> 0))
  })

  it("builds the weighted list round-robin across addresses: a#2,b#1 is [a, b, a]", () => {
    const [a, b, c] = endpoints([2, 1, 3])
    expect(referenceList([a!, b!])).toStrictEqual([a, b, a])
    expect(referenceList([a!, b!, c!])).toStrictEqual([a, b, c, a, c, c])
  })

  it("roundRobin and random walk the weighted list", () => {
    const [a, b] = endpoints([2, 1])
    const list = [a!, b!]
    const rr = roundRobin<EndpointStats>()
    expect(Array.from({ length: 6 }, () => rr.pick(list, { now: 0 }))).toStrictEqual([a, b, a, a, b, a])
    const observed = shares(random<EndpointStats>({ random: seededRandom(5) }), list, 30_000)
    expect(observed[0]!).toBeCloseTo(2 / 3, 1)
  })

  it("minPending: the round-robin slot if it has 0 pending, otherwise the fewest pending", () => {
    const [a, b, c] = endpoints([1, 1, 1])
    const list = [a!, b!, c!]
    const picker = minPending<EndpointStats>()
    expect([0, 1, 2].map(() => picker.pick(list, { now: 0 }))).toStrictEqual([a, b, c])
    a!.begin(0)
    b!.begin(0)
    b!.begin(0)
    expect(picker.pick(list, { now: 0 })).toBe(c) // slot a: busy, c has 0
    expect(picker.pick(list, { now: 0 })).toBe(c) // slot b: busy, c has 0
    c!.begin(0)
    expect(picker.pick(list, { now: 0 })).toBe(a) // slot c: busy, a and c tie at 1: the first
    a!.end(1, 10, true)
    expect(picker.pick(list, { now: 0 })).toBe(a) // slot a: idle, taken
    expect(picker.pick(list, { now: 0 })).toBe(a) // slot b: busy, a has 0
  })

  it("ipHash: FNV-1 of the client address modulo the weighted list, stable", () => {
    const list = endpoints([2, 1, 1])
    const weighted = referenceList(list)
    const picker = ipHash<EndpointStats>()
    for (const ip of ["10.1.2.3", "192.168.0.17", "::1", ""]) {
      const chosen = picker.pick(list, { now: 0, clientIp: ip })
      expect(chosen).toBe(weighted[fnv1_32(ip) % weighted.length])
      expect(picker.pick(list, { now: 5, clientIp: ip })).toBe(chosen)
    }
    expect(picker.pick(list, { now: 0, clientIp: "a" })).toBe(weighted[0x050c5d7e % 4])
  })

  it("uriParam: FNV-1 of the named query value, \"\" when absent", () => {
    const list = endpoints([1, 1, 1])
    const picker = uriParam<EndpointStats>({ paramKey: "uid" })
    expect(queryValue("/x?a=1&uid=abc%20d", "uid")).toBe("abc d")
    expect(queryValue("/x", "uid")).toBe("")
    const chosen = picker.pick(list, { now: 0, uri: "/x?uid=42&t=1" })
    expect(chosen).toBe(list[fnv1_32("42") % 3])
    expect(picker.pick(list, { now: 0, uri: "/y?t=2&uid=42" })).toBe(chosen)
    expect(picker.pick(list, { now: 0, uri: "/y" })).toBe(list[0x811c9dc5 % 3])
  })
})
