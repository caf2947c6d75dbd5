// The service balancer on Effect's TestClock: every `now` it is given is the TestClock's time, and
// time moves only by TestClock.adjust, so each run is the same. Simulated requests take their
// latency in clock time: a lease ends when the clock passes its end.
// - Weighted shares within 2 % of the weights over 100,000 picks (p2c with equal latencies, and
//   smooth weighted round robin); a run-time weight override moves them.
// - p2c and a 10x slower endpoint: far less than its share while slow, its share back within 2 s
//   of recovering (a starved endpoint is probed about once a second).
// - p2c after an 8 s stall: the stall's late answers do not blow up the estimate; its share back
//   within 2 s of recovering.
// - Restarting (a refusal after a go-away, or after discovery dropped and re-added it) and unresponsive endpoints
//   are held out without an ejection until they connect again, at most the window.
// - Refused, with holdRefused (the sidecar's registry, which redials): any other connection that
//   could not be made holds the endpoint out at once, past the ejection cap too, without a failure or
//   an ejection (a later ejection is not lengthened); failed redials renew the hold, a connection
//   ends it, without either it lapses after the window; with every endpoint held a pick still finds
//   one. Without holdRefused (the default) such a refusal ejects, as the ejection tests show.
// - Ejection after consecutive failures and by error rate; return after the ejection time; a
//   second ejection lasts twice as long; never more than the cap out at once; active checks.
// - Full outage of one endpoint: the retry budget caps the retries at its ratio of the traffic.
// - Concurrency limit: a full endpoint is skipped; all full is `Overloaded`.
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { TestClock } from "effect/testing"
import { seededRandom } from "../../src/balancer/pickers.ts"
import { type Lease, type PickerName, ServiceBalancer, type ServiceBalancerOptions } from "../../src/balancer/serviceBalancer.ts"

interface Ep {
  readonly id: string
  readonly weight: number
}

const endpointsOf = (weights: ReadonlyArray<number>): Array<Ep> => weights.map((weight, i) => ({ id: `10.0.0.${i + 1}:4143`, weight }))

const balancerOf = (picker: PickerName, weights: ReadonlyArray<number>, options: ServiceBalancerOptions = {}) => {
  const balancer = new ServiceBalancer<Ep>({ picker, random: seededRandom(42), ...options })
  const endpoints = endpointsOf(weights)
  balancer.update(endpoints)
  return { balancer, endpoints }
}

const now = Clock.currentTimeMillis

type Running = { readonly at: number; readonly lease: Lease<Ep>; readonly latency: number; readonly ok: boolean }
/** Requests still in flight, per balancer: they end in a later `drive` call, as they would. */
const inFlight = new WeakMap<ServiceBalancer<Ep>, Array<Running>>()

/**
 * Runs `count` requests, one every `everyMs` of TestClock time, each taking `latencyOf(endpoint,
 * t)` ms and failing when `failsOn(endpoint, t)`. Returns the picks per endpoint id. The balancer
 * takes its time as an argument and nothing here waits on the clock, so request i is at start +
 * i x everyMs and the TestClock is moved once, by the whole run, at the end (an adjust per request
 * made the 100,000-pick cases 9 s each under load).
 */
const drive = (
  balancer: ServiceBalancer<Ep>,
  count: number,
  everyMs: number,
  latencyOf: (e: Ep, t: number) => number,
  failsOn: (e: Ep, t: number) => boolean = () => false,
  onPick: (e: Ep, t: number) => void = () => {}
) =>
  Effect.gen(function*() {
    const picks = new Map<string, number>()
    const running = inFlight.get(balancer) ?? []
    inFlight.set(balancer, running)
    const start = yield* now
    for (let i = 0; i < count; i++) {
      const t = start + i * everyMs
      for (let j = running.length - 1; j >= 0; j--) {
        const r = running[j]!
        if (r.at <= t) {
          r.lease.end(r.at, r.latency, r.ok)
          running.splice(j, 1)
        }
      }
      const result = balancer.pick(t, { now: t })
      if (result._tag !== "Picked") throw new Error(`no pick: ${result._tag}`)
      const e = result.lease.endpoint
      picks.set(e.id, (picks.get(e.id) ?? 0) + 1)
      onPick(e, t)
      const latency = latencyOf(e, t)
      running.push({ at: t + latency, lease: result.lease, latency, ok: !failsOn(e, t) })
    }
    if (everyMs > 0) yield* TestClock.adjust(`${count * everyMs} millis`)
    return picks
  })

const sharesOf = (picks: Map<string, number>, endpoints: ReadonlyArray<Ep>) => {
  const total = [...picks.values()].reduce((a, b) => a + b, 0)
  return endpoints.map((e) => (picks.get(e.id) ?? 0) / total)
}

describe("weighted shares", () => {
  for (const picker of ["p2c", "weighted-round-robin"] as const) {
    it.effect(`${picker}: within 2 % of the weights over 100,000 picks, and after an override`, () =>
      Effect.gen(function*() {
        const weights = [1, 2, 3, 4]
        const { balancer, endpoints } = balancerOf(picker, weights)
        // Equal latencies (5 ms), one request every ms: a few in flight at once.
        const shares = sharesOf(yield* drive(balancer, 100_000, 1, () => 5), endpoints)
        weights.forEach((w, i) => expect(Math.abs(shares[i]! - w / 10)).toBeLessThan(0.02 * (w / 10)))

        expect(balancer.overrideWeight(endpoints[0]!.id, 6)).toBe(true)
        const after = sharesOf(yield* drive(balancer, 100_000, 1, () => 5), endpoints)
        ;[6, 2, 3, 4].forEach((w, i) => expect(Math.abs(after[i]! - w / 15)).toBeLessThan(0.02 * (w / 15)))
        expect(balancer.view(yield* now)[0]).toMatchObject({ weight: 6, discoveredWeight: 1 })

        // Discovery's weight again once the override is lifted; an update keeps an override.
        balancer.overrideWeight(endpoints[0]!.id, 0)
        balancer.update(endpoints)
        expect(balancer.view(yield* now)[0]!.weight).toBe(0)
        balancer.overrideWeight(endpoints[0]!.id, undefined)
        expect(balancer.view(yield* now)[0]).not.toHaveProperty("discoveredWeight")
      }))
  }
})

describe("p2c and a slow endpoint", () => {
  it.effect("a 10x slower endpoint gets far less than its share, and its share back once it recovers", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("p2c", [1, 1, 1, 1])
      const slow = endpoints[3]!
      let slowNow = true
      const latency = (e: Ep) => (e === slow && slowNow ? 100 : 10)
      // 60 s at 200 requests a second.
      const during = sharesOf(yield* drive(balancer, 12_000, 5, latency), endpoints)
      expect(during[3]!).toBeLessThan(0.25 / 5)
      slowNow = false
      // Starved, it is probed about once a second: the first fast probe brings it back (within 2 s).
      yield* drive(balancer, 400, 5, latency)
      const after = sharesOf(yield* drive(balancer, 4_000, 5, latency), endpoints)
      expect(after[3]!).toBeGreaterThan(0.25 * 0.9)
      expect(after[3]!).toBeLessThan(0.25 * 1.1)
    }))
})

describe("p2c after a stall", () => {
  it.effect("an endpoint that stalled for 8 s gets its share back within 2 s of recovering", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("p2c", [1, 1])
      const stalled = endpoints[0]!
      // 1,000 requests a second at 5 ms; the stall answers every request that reached it at its end.
      yield* drive(balancer, 10_000, 1, () => 5)
      const stallStart = yield* now
      const stallEnd = stallStart + 8_000
      const latency = (e: Ep, t: number) => (e === stalled && t >= stallStart && t < stallEnd ? stallEnd - t + 5 : 5)
      yield* drive(balancer, 8_000, 1, latency)
      // Its late answers came in: the estimate is capped, not seconds (it was ~4,000 ms).
      yield* drive(balancer, 10, 1, latency)
      expect(balancer.view(yield* now)[0]!.latencyMs).toBeLessThan(100)
      const first = sharesOf(yield* drive(balancer, 2_000, 1, latency), endpoints)
      const next = sharesOf(yield* drive(balancer, 2_000, 1, latency), endpoints)
      console.log(`after an 8 s stall: share ${(first[0]! * 100).toFixed(1)} % in the first 2 s, ${(next[0]! * 100).toFixed(1)} % in the next 2 s`)
      expect(first[0]!).toBeGreaterThan(0.2)
      expect(next[0]!).toBeGreaterThan(0.45)
    }))
})

describe("restarting and unresponsive endpoints (held out, not ejected)", () => {
  /** Picks until `target` is picked (ending the others' leases at once); returns its lease. */
  const leaseOf = (balancer: ServiceBalancer<Ep>, target: Ep, t: number): Lease<Ep> => {
    for (let i = 0; i < 1000; i++) {
      const picked = balancer.pick(t, { now: t })
      if (picked._tag !== "Picked") throw new Error(picked._tag)
      if (picked.lease.endpoint === target) return picked.lease
      picked.lease.end(t, 1, true)
    }
    throw new Error(`${target.id} was never picked`)
  }

  it.effect("a refusal after a go-away holds the endpoint out until it connects: four restarts, no ejection, traffic back at once", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("p2c", [1, 1])
      const restarting = endpoints[0]!
      yield* drive(balancer, 2_000, 1, () => 2)
      for (let restart = 0; restart < 4; restart++) {
        balancer.wentAway(restarting.id, yield* now)
        yield* TestClock.adjust("100 millis")
        const t = yield* now
        expect(leaseOf(balancer, restarting, t).end(t, 0, false, true)).toBe("restarting")
        expect(balancer.view(t)[0]).toMatchObject({ health: "restarting", ejections: 0, failures: 0 })
        // Held out for the restart's second: nothing goes to it.
        const gap = yield* drive(balancer, 1_000, 1, () => 2)
        expect(gap.get(restarting.id)).toBeUndefined()
        // It listens again: a connection succeeded. A new process: cold, its peers' estimate.
        balancer.connected(restarting.id)
        expect(balancer.view(yield* now)[0]).toMatchObject({ health: "healthy", samples: 0 })
        const back = sharesOf(yield* drive(balancer, 2_000, 1, () => 2), endpoints)
        expect(back[0]!).toBeGreaterThan(0.4)
        yield* TestClock.adjust("1 minute")
      }
      expect(balancer.view(yield* now)[0]).toMatchObject({ health: "healthy", ejections: 0, failures: 0 })
    }))

  it.effect("the hold is bounded by the window, and a refusal long after the go-away ejects as before", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("p2c", [1, 1], { holdOut: { windowMs: 30_000 } })
      const down = endpoints[0]!
      yield* drive(balancer, 100, 1, () => 2)
      balancer.wentAway(down.id, yield* now)
      let t = yield* now
      expect(leaseOf(balancer, down, t).end(t, 0, false, true)).toBe("restarting")
      // Never connects: back in the picks once the window ends.
      yield* TestClock.adjust("29 seconds")
      expect(balancer.view(yield* now)[0]!.health).toBe("restarting")
      yield* TestClock.adjust("1 second")
      t = yield* now
      expect(balancer.view(t)[0]!.health).toBe("healthy")
      // Refused again, past the window: an ejection, as for any endpoint nothing listens on.
      expect(leaseOf(balancer, down, t).end(t, 0, false, true)).toBe("connect_failed")
      expect(balancer.view(t)[0]).toMatchObject({ health: "ejected", ejections: 1 })
    }))

  it.effect("discovery dropping an endpoint and adding it again: refusals while it restarts hold it out; a new endpoint that refuses is ejected", () =>
    Effect.gen(function*() {
      const balancer = new ServiceBalancer<Ep>({ picker: "p2c", random: seededRandom(42), outlier: { maxEjectedPercent: 50 } })
      const endpoints = endpointsOf([1, 1, 1, 1])
      balancer.update(endpoints.slice(0, 3), yield* now)
      yield* drive(balancer, 100, 1, () => 2)
      balancer.update(endpoints.slice(1, 3), yield* now)
      yield* TestClock.adjust("2 seconds")
      balancer.update(endpoints, yield* now)
      const t = yield* now
      expect(leaseOf(balancer, endpoints[0]!, t).end(t, 0, false, true)).toBe("restarting")
      expect(balancer.view(t)[0]).toMatchObject({ health: "restarting", ejections: 0 })
      // Never seen before: nothing listens there, as far as anyone knows.
      expect(leaseOf(balancer, endpoints[3]!, t).end(t, 0, false, true)).toBe("connect_failed")
    }))

  it.effect("an unresponsive endpoint (unanswered ping) is not picked until it connects again, at most the window", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("p2c", [1, 1, 1], { holdOut: { windowMs: 10_000 } })
      const frozen = endpoints[2]!
      yield* drive(balancer, 300, 1, () => 2)
      balancer.unresponsive(frozen.id, yield* now)
      expect(balancer.view(yield* now)[2]).toMatchObject({ health: "unresponsive", ejections: 0 })
      const held = yield* drive(balancer, 3_000, 1, () => 2)
      expect(held.get(frozen.id)).toBeUndefined()
      const samples = balancer.view(yield* now)[2]!.samples
      balancer.connected(frozen.id)
      // The same process, resumed: it keeps its stats.
      expect(balancer.view(yield* now)[2]!.samples).toBe(samples)
      const back = yield* drive(balancer, 3_000, 1, () => 2)
      expect(back.get(frozen.id)).toBeGreaterThan(600)
      // Without a connection the hold ends with the window.
      balancer.unresponsive(frozen.id, yield* now)
      yield* drive(balancer, 10_000, 1, () => 2)
      const after = yield* drive(balancer, 3_000, 1, () => 2)
      expect(after.get(frozen.id)).toBeGreaterThan(600)
    }))
})

describe("refused endpoints, with holdRefused (held out at once, not ejected)", () => {
  const outlier = { consecutiveFailures: 5, errorRatePercent: 0, baseEjectionMs: 5_000, maxEjectionMs: 60_000, maxEjectedPercent: 50 }
  const holding = (picker: PickerName, weights: ReadonlyArray<number>, windowMs = 30_000) => balancerOf(picker, weights, { outlier, holdOut: { windowMs, holdRefused: true } })

  /** Picks at `t` until `target` is picked (ending the others' leases as successes); ends its lease as refused. */
  const refuse = (balancer: ServiceBalancer<Ep>, target: Ep, t: number) => {
    for (let i = 0; i < 1000; i++) {
      const picked = balancer.pick(t, { now: t })
      if (picked._tag !== "Picked") throw new Error(picked._tag)
      if (picked.lease.endpoint === target) return picked.lease.end(t, 0, false, true)
      picked.lease.end(t, 1, true)
    }
    throw new Error(`${target.id} was never picked`)
  }

  it.effect("two of three refuse (past the ejection cap): both out after their first refusal, no failure, no ejection", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = holding("p2c", [1, 1, 1])
      const t = yield* now
      expect(refuse(balancer, endpoints[1]!, t)).toBe("refused")
      expect(refuse(balancer, endpoints[2]!, t)).toBe("refused")
      const picks = yield* drive(balancer, 10_000, 1, () => 2)
      expect([...picks.keys()]).toStrictEqual([endpoints[0]!.id])
      for (const i of [1, 2]) expect(balancer.view(yield* now)[i]).toMatchObject({ health: "refused", failures: 0, refusals: 1, ejections: 0 })
    }))

  it.effect("failed redials renew the hold; a connection ends it at once; without either it lapses after the window", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = holding("p2c", [1, 1], 10_000)
      const down = endpoints[0]!
      yield* drive(balancer, 1_000, 1, () => 2)
      expect(refuse(balancer, down, yield* now)).toBe("refused")
      // Redials fail every 5 s (the registry's backoff cap) for a minute: held all along.
      for (let i = 0; i < 12; i++) {
        const picks = yield* drive(balancer, 5_000, 1, () => 2)
        expect(picks.get(down.id)).toBeUndefined()
        balancer.redialFailed(down.id, yield* now)
      }
      expect(balancer.view(yield* now)[0]).toMatchObject({ health: "refused", refusals: 1, failures: 0 })
      const samples = balancer.view(yield* now)[0]!.samples
      expect(samples).toBeGreaterThan(0)
      // A redial connects: back in the picks at once, with the stats it had (not a restart).
      balancer.connected(down.id)
      expect(balancer.view(yield* now)[0]).toMatchObject({ health: "healthy", samples })
      const back = sharesOf(yield* drive(balancer, 2_000, 1, () => 2), endpoints)
      expect(back[0]!).toBeGreaterThan(0.4)
      // Refused again, and no redial reports: it is back in once the window ends, not later.
      expect(refuse(balancer, down, yield* now)).toBe("refused")
      yield* TestClock.adjust("9999 millis")
      expect(balancer.view(yield* now)[0]!.health).toBe("refused")
      yield* TestClock.adjust("1 millis")
      expect(balancer.view(yield* now)[0]!.health).toBe("healthy")
      // A redial report for an endpoint no longer held changes nothing.
      balancer.redialFailed(down.id, yield* now)
      expect(balancer.view(yield* now)[0]!.health).toBe("healthy")
    }))

  it.effect("a redial that outlasts the hold (a connect timeout longer than the window) and fails renews it still", () =>
    Effect.gen(function*() {
      // A 2 s window and a peer that drops SYNs: each redial fails only at the 3 s connect timeout.
      const { balancer, endpoints } = holding("p2c", [1, 1], 2_000)
      const down = endpoints[0]!
      expect(refuse(balancer, down, yield* now)).toBe("refused")
      yield* TestClock.adjust("100 millis")
      const dialedAt = yield* now
      yield* TestClock.adjust("3 seconds")
      // The hold lapsed while the redial waited; its failure says the endpoint is still unreachable.
      expect(balancer.heldFor(down.id, yield* now)).toBeUndefined()
      balancer.redialFailed(down.id, yield* now, dialedAt)
      expect(balancer.view(yield* now)[0]).toMatchObject({ health: "refused", failures: 0, ejections: 0 })
      // A redial begun after a connection ended the hold renews nothing.
      balancer.connected(down.id)
      const after = yield* now
      yield* TestClock.adjust("3 seconds")
      balancer.redialFailed(down.id, yield* now, after)
      expect(balancer.view(yield* now)[0]!.health).toBe("healthy")
    }))

  it.effect("a refusal soon after a go-away is still a restart; once the restart window is over, a refused hold", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = holding("p2c", [1, 1], 30_000)
      const down = endpoints[0]!
      balancer.wentAway(down.id, yield* now)
      yield* TestClock.adjust("100 millis")
      expect(refuse(balancer, down, yield* now)).toBe("restarting")
      // The background redials keep failing: still a restart within the window (30 s after the go-away).
      yield* TestClock.adjust("29 seconds")
      balancer.redialFailed(down.id, yield* now)
      expect(balancer.view(yield* now)[0]!.health).toBe("restarting")
      yield* TestClock.adjust("899 millis")
      balancer.redialFailed(down.id, yield* now)
      expect(balancer.view(yield* now)[0]).toMatchObject({ health: "restarting", ejections: 0 })
      expect(balancer.heldFor(down.id, yield* now)).toBe("restarting")
      yield* TestClock.adjust("1 millis")
      // The restart hold is over: the next refusal is a refused hold, not an ejection.
      expect(balancer.heldFor(down.id, yield* now)).toBeUndefined()
      expect(refuse(balancer, down, yield* now)).toBe("refused")
      expect(balancer.view(yield* now)[0]).toMatchObject({ health: "refused", ejections: 0, failures: 0, refusals: 2 })
    }))

  it.effect("every endpoint held: a pick still finds one (and the request meets its refusal as before)", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = holding("p2c", [1, 1])
      const t = yield* now
      for (const e of endpoints) expect(refuse(balancer, e, t)).toBe("refused")
      const picks = yield* drive(balancer, 1_000, 1, () => 2)
      expect(picks.get(endpoints[0]!.id)! + picks.get(endpoints[1]!.id)!).toBe(1_000)
      // One that connects is the only one picked then.
      balancer.connected(endpoints[1]!.id)
      const after = yield* drive(balancer, 1_000, 1, () => 2)
      expect([...after.keys()]).toStrictEqual([endpoints[1]!.id])
    }))

  it.effect("holds are not ejections: after refused-and-back rounds, a real ejection still lasts the base time", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = holding("weighted-round-robin", [1, 1, 1, 1])
      const flaky = endpoints[1]!
      for (let round = 0; round < 5; round++) {
        expect(refuse(balancer, flaky, yield* now)).toBe("refused")
        yield* TestClock.adjust("2 seconds")
        balancer.connected(flaky.id)
        yield* drive(balancer, 100, 10, () => 1)
      }
      expect(balancer.view(yield* now)[1]).toMatchObject({ health: "healthy", ejections: 0, failures: 0, refusals: 5 })
      // Five failures in a row: the first ejection, for the base 5 s (not doubled by the holds before).
      yield* drive(balancer, 20, 1, () => 0, (e) => e === flaky)
      const view = balancer.view(yield* now)[1]!
      expect(view).toMatchObject({ health: "ejected", ejections: 1, ejection: { reason: "consecutive_failures" } })
      expect(view.ejection!.forMs!).toBeLessThanOrEqual(5_000)
      expect(view.ejection!.forMs!).toBeGreaterThan(4_900)
    }))
})

describe("ejection", () => {
  const outlier = { consecutiveFailures: 5, errorRatePercent: 0, baseEjectionMs: 5_000, maxEjectionMs: 60_000, maxEjectedPercent: 50 }

  it.effect("after 5 failures in a row an endpoint is out for 5 s, then back; failing again, out for 10 s", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("weighted-round-robin", [1, 1, 1, 1], { outlier })
      const bad = endpoints[1]!
      let failing = true
      const failsOn = (e: Ep) => e === bad && failing
      // Round robin: the bad one gets every 4th request; its 5th failure (request 18) ejects it.
      yield* drive(balancer, 20, 1, () => 0, failsOn)
      const view = balancer.view(yield* now)[1]!
      expect(view).toMatchObject({ health: "ejected", ejections: 1, ejection: { reason: "consecutive_failures" } })
      const ejectedFor = view.ejection!.forMs!
      expect(ejectedFor).toBeGreaterThan(4_990)
      expect(ejectedFor).toBeLessThanOrEqual(5_000)
      // While out it gets nothing.
      const out = yield* drive(balancer, 300, 10, () => 0)
      expect(out.get(bad.id)).toBeUndefined()
      // Back after the 5 s; still failing, it is out again after 5 more, now for 10 s.
      yield* TestClock.adjust(`${ejectedFor} millis`)
      expect(balancer.view(yield* now)[1]!.health).toBe("healthy")
      yield* drive(balancer, 20, 1, () => 0, failsOn)
      const second = balancer.view(yield* now)[1]!
      expect(second).toMatchObject({ health: "ejected", ejections: 2 })
      expect(second.ejection!.forMs!).toBeGreaterThan(9_980)
      // Recovered: once back it takes its share and stays in.
      failing = false
      yield* TestClock.adjust(`${second.ejection!.forMs!} millis`)
      const back = yield* drive(balancer, 400, 1, () => 0, failsOn)
      expect(back.get(bad.id)).toBe(100)
      expect(balancer.view(yield* now)[1]!.health).toBe("healthy")
    }))

  it.effect("never more than maxEjectedPercent of the endpoints out at once", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("weighted-round-robin", [1, 1, 1, 1], { outlier })
      // Three of four fail everything: only two (50 %) go out, the third stays in.
      yield* drive(balancer, 100, 1, () => 0, (e) => e !== endpoints[0])
      const health = balancer.view(yield* now).map((v) => v.health)
      expect(health.filter((h) => h === "ejected")).toHaveLength(2)
      expect(health[0]).toBe("healthy")
      // A single endpoint is never ejected (50 % of 1 rounds down to 0).
      const single = balancerOf("p2c", [1], { outlier })
      yield* drive(single.balancer, 50, 1, () => 0, () => true)
      expect(single.balancer.view(yield* now)[0]!.health).toBe("healthy")
    }))

  it.effect("by error rate over the window, when failures are not in a row", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("weighted-round-robin", [1, 1], {
        outlier: { consecutiveFailures: 0, errorRatePercent: 50, minRequests: 20, windowMs: 10_000, maxEjectedPercent: 50 }
      })
      let n = 0
      // Endpoint 1 fails every other request: 50 % once it has served 20.
      yield* drive(balancer, 100, 10, () => 0, (e) => e === endpoints[1] && n++ % 2 === 0)
      expect(balancer.view(yield* now)[1]).toMatchObject({ health: "ejected", ejection: { reason: "error_rate" } })
    }))

  it.effect("an endpoint that refuses the connection goes out at once (within the cap)", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("weighted-round-robin", [1, 1, 1], { outlier })
      const t = yield* now
      for (;;) {
        const picked = balancer.pick(t, { now: t })
        if (picked._tag !== "Picked") throw new Error(picked._tag)
        if (picked.lease.endpoint !== endpoints[0]) {
          picked.lease.end(t, 1, true)
          continue
        }
        expect(picked.lease.end(t, 0, false, true)).toBe("connect_failed")
        break
      }
      expect(balancer.view(t)[0]).toMatchObject({ health: "ejected", ejection: { reason: "connect_failed", forMs: 5_000 } })
    }))

  it.effect("an active check that fails puts an endpoint out until a check passes", () =>
    Effect.gen(function*() {
      const { balancer, endpoints } = balancerOf("p2c", [1, 1, 1], { outlier })
      balancer.probed(endpoints[2]!.id, yield* now, false)
      yield* TestClock.adjust("10 minutes")
      const picks = yield* drive(balancer, 300, 1, () => 1)
      expect(picks.get(endpoints[2]!.id)).toBeUndefined()
      balancer.probed(endpoints[2]!.id, yield* now, true)
      const after = yield* drive(balancer, 300, 1, () => 1)
      expect(after.get(endpoints[2]!.id)).toBeGreaterThan(50)
    }))
})

describe("retry budget", () => {
  it.effect("during a full outage of one endpoint, retries stay within the budget's ratio of the traffic", () =>
    Effect.gen(function*() {
      // Ejection off (a cap of 0 %) so the outage goes on for the whole run.
      const ratio = 0.1
      const { balancer, endpoints } = balancerOf("weighted-round-robin", [1, 1, 1, 1], {
        outlier: { maxEjectedPercent: 0 },
        retryBudget: { ratio, minPerSecond: 5, windowMs: 10_000 }
      })
      const dead = endpoints[0]!
      let requests = 0
      let retries = 0
      let refused = 0
      // 60 s at 1,000 requests a second; a failure on the dead endpoint is retried when the budget allows.
      for (let i = 0; i < 60_000; i++) {
        const t = yield* now
        requests++
        balancer.retryBudget.deposit(t)
        const first = balancer.pick(t, { now: t })
        if (first._tag !== "Picked") throw new Error(first._tag)
        const failed = first.lease.endpoint === dead
        first.lease.end(t, 0, !failed)
        if (failed) {
          if (balancer.retryBudget.tryWithdraw(t)) {
            retries++
            const again = balancer.pick(t, { now: t }, new Set([dead.id]))
            if (again._tag !== "Picked") throw new Error(again._tag)
            again.lease.end(t, 0, true)
          } else refused++
        }
        yield* TestClock.adjust("1 millis")
      }
      // A quarter of the requests failed; the budget let through its ratio plus the floor (5/s).
      expect(refused).toBeGreaterThan(0)
      const extraLoad = retries / requests
      expect(extraLoad).toBeLessThanOrEqual(ratio + (5 * 60) / requests + 0.001)
      expect(extraLoad).toBeGreaterThan(ratio * 0.9)
    }))
})

/** `count` picks at `t`, each expected to be one. */
const pickedLeases = (balancer: ServiceBalancer<Ep>, t: number, count: number): Array<Lease<Ep>> =>
  Array.from({ length: count }, () => {
    const result = balancer.pick(t, { now: t })
    if (result._tag !== "Picked") throw new Error(result._tag)
    return result.lease
  })

describe("concurrency limit", () => {
  it.effect("skips an endpoint at its limit, and says Overloaded when every endpoint is", () =>
    Effect.gen(function*() {
      const { balancer } = balancerOf("p2c", [1, 1], { maxPendingPerEndpoint: 2 })
      const t = yield* now
      const leases = pickedLeases(balancer, t, 4)
      expect(balancer.view(t).map((v) => v.pending)).toEqual([2, 2])
      expect(balancer.pick(t, { now: t })._tag).toBe("Overloaded")
      leases[0]!.end(t, 1, true)
      expect(balancer.pick(t, { now: t })._tag).toBe("Picked")
      // Excluding every endpoint (all tried) is NoEndpoint, not Overloaded.
      expect(balancer.pick(t, { now: t }, new Set(balancer.endpoints.map((e) => e.id)))._tag).toBe("NoEndpoint")
    }))

  it.effect("a lease gives its place back once: end or release, whichever comes first; later calls change nothing", () =>
    Effect.gen(function*() {
      const { balancer } = balancerOf("p2c", [1])
      const t = yield* now
      const leases = pickedLeases(balancer, t, 4)
      const [released, ended, ...running] = leases
      released!.release()
      released!.release()
      expect(released!.end(t, 1, false, true)).toBeUndefined()
      expect(ended!.end(t, 5, true)).toBeUndefined()
      ended!.release()
      expect(ended!.end(t, 5, false)).toBeUndefined()
      // The other two still hold their places; the one end gave its one sample, the release none.
      expect(balancer.view(t).map((v) => [v.pending, v.samples, v.failures])).toEqual([[running.length, 1, 0]])
    }))
})
