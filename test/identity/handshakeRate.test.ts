// The issuer's handshake token buckets (src/identity/handshakeRate.ts) on an injected clock: the
// burst and the sustained rate per address, addresses apart, the entries forgotten once full
// again, and the bound on addresses tracked (past it the least recently updated makes room).
import { describe, expect, it } from "vitest"
import { HandshakeRate } from "../../src/identity/handshakeRate.ts"

/** A HandshakeRate on a clock the test moves (ms). */
const onClock = (limits: ConstructorParameters<typeof HandshakeRate>[0]) => {
  const clock = { now: 1_000 }
  return { clock, rate: new HandshakeRate(limits, () => clock.now) }
}

const takes = (rate: HandshakeRate, source: string, count: number) => Array.from({ length: count }, () => rate.take(source))

describe("HandshakeRate", () => {
  it("an address has its burst at once, then one handshake per 1/rate s; a refusal costs it nothing", () => {
    const { clock, rate } = onClock({ ratePerSecond: 20, burst: 40 })
    expect(takes(rate, "10.0.0.1", 40).every((verdict) => verdict === "admitted")).toBe(true)
    expect(takes(rate, "10.0.0.1", 100).every((verdict) => verdict === "over-rate")).toBe(true)
    expect(rate.refused).toBe(100)
    // 49 ms: not yet a whole handshake (20/s is one per 50 ms).
    clock.now += 49
    expect(rate.take("10.0.0.1")).toBe("over-rate")
    clock.now += 1
    expect(rate.take("10.0.0.1")).toBe("admitted")
    expect(rate.take("10.0.0.1")).toBe("over-rate")
    // A second later: 20, not 40, and the 101 refusals took none of them.
    clock.now += 1_000
    expect(takes(rate, "10.0.0.1", 21).filter((verdict) => verdict === "admitted")).toHaveLength(20)
  })

  it("sustained over 10 s an address starting handshakes every ms is admitted burst + rate x 10 s", () => {
    const { clock, rate } = onClock({ ratePerSecond: 20, burst: 40 })
    let admitted = 0
    for (let ms = 0; ms < 10_000; ms++, clock.now++) if (rate.take("10.0.0.1") === "admitted") admitted++
    expect(admitted).toBe(40 + 20 * 10 - 1)
  })

  it("one address emptying its bucket leaves another's whole", () => {
    const { rate } = onClock({ ratePerSecond: 1, burst: 3 })
    expect(takes(rate, "10.0.0.1", 4)).toStrictEqual(["admitted", "admitted", "admitted", "over-rate"])
    expect(takes(rate, "10.0.0.2", 3).every((verdict) => verdict === "admitted")).toBe(true)
  })

  it("an address is tracked only until its bucket is full again, then starts from a full one", () => {
    const { clock, rate } = onClock({ ratePerSecond: 10, burst: 20 })
    takes(rate, "10.0.0.1", 25)
    takes(rate, "10.0.0.2", 1)
    expect(rate.tracked).toBe(2)
    // 20 at 10/s refill in 2 s: both are full again by then, forgotten at the next accept.
    clock.now += 1_999
    rate.take("10.0.0.3")
    expect(rate.tracked).toBe(3)
    clock.now += 1
    rate.take("10.0.0.3")
    expect(rate.tracked).toBe(1)
    expect(takes(rate, "10.0.0.1", 20).every((verdict) => verdict === "admitted")).toBe(true)
  })

  it("an address is forgotten once what it took has refilled, not a whole burst's refill later", () => {
    const { clock, rate } = onClock({ ratePerSecond: 10, burst: 20 })
    rate.take("10.0.0.1")
    // One handshake at 10/s is back in 100 ms: full again then (a burst of 20 from empty would take 2 s).
    clock.now += 99
    rate.take("10.0.0.2")
    expect(rate.tracked).toBe(2)
    clock.now += 1
    rate.take("10.0.0.2")
    expect(rate.tracked).toBe(1)
  })

  it("a spray of a million addresses tracks maxSources of them, the least recently updated making room; each address's first handshake is admitted", () => {
    const { clock, rate } = onClock({ ratePerSecond: 20, burst: 40, maxSources: 1_000 })
    let admitted = 0
    for (let i = 0; i < 1_000_000; i++) if (rate.take(`fd00::${i.toString(16)}`) === "admitted") admitted++
    expect(rate.tracked).toBe(1_000)
    expect(admitted).toBe(1_000_000)
    // Once the tracked are full again (2 s idle) they are forgotten.
    clock.now += 2_000
    expect(rate.take("fd00:ffff::1")).toBe("admitted")
    expect(rate.tracked).toBe(1)
  })

  it("addresses past maxSources tracked never refuse a newcomer that has not itself gone past its rate: the least recently updated entry makes room", () => {
    const { rate } = onClock({ ratePerSecond: 20, burst: 40, maxSources: 3 })
    // Three addresses connecting once each (a spray, or sidecars joining) fill the table for 2 s.
    for (const source of ["fd00::1", "fd00::2", "fd00::3"]) expect(rate.take(source)).toBe("admitted")
    // More sprayed addresses, 50 of them, one connection each.
    for (let i = 0; i < 50; i++) rate.take(`fd00:1::${i.toString(16)}`)
    // An honest sidecar's first connection, from an address never seen.
    expect(rate.take("10.0.0.9")).toBe("admitted")
    expect(rate.tracked).toBe(3)
  })

  it("an address looping past its rate stays refused while fewer than maxSources other addresses connect between its attempts", () => {
    const { clock, rate } = onClock({ ratePerSecond: 1, burst: 2, maxSources: 4 })
    expect(takes(rate, "10.0.0.1", 2).every((verdict) => verdict === "admitted")).toBe(true)
    for (let i = 0; i < 100; i++) {
      clock.now += 1
      rate.take(`fd00::${i.toString(16)}`)
      rate.take(`fd00:1::${i.toString(16)}`)
      expect(rate.take("10.0.0.1")).toBe("over-rate")
    }
  })

  it("a clock read earlier than the last (never from a monotonic one) refills nothing and refuses nothing wrongly", () => {
    const { clock, rate } = onClock({ ratePerSecond: 1, burst: 1 })
    expect(rate.take("10.0.0.1")).toBe("admitted")
    clock.now -= 5_000
    expect(rate.take("10.0.0.1")).toBe("over-rate")
    clock.now += 1_000
    expect(rate.take("10.0.0.1")).toBe("admitted")
  })
})
