// The issuer's handshake token buckets (src/identity/handshakeRate.ts) on an injected clock: the
// burst and the sustained rate per address, addresses apart, the entries forgotten once full
// again, and the bound on addresses tracked (past it one shared bucket).
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

  it("a spray of a million addresses tracks maxSources of them; the rest share one bucket of one address's burst and rate, and those tracked keep their own", () => {
    const { clock, rate } = onClock({ ratePerSecond: 20, burst: 40, maxSources: 1_000 })
    takes(rate, "10.0.0.1", 1)
    let admitted = 0
    for (let i = 0; i < 1_000_000; i++) if (rate.take(`fd00::${i.toString(16)}`) === "admitted") admitted++
    expect(rate.tracked).toBe(1_000)
    // 999 addresses got a bucket of their own (one handshake each), 40 more the shared burst.
    expect(admitted).toBe(999 + 40)
    expect(rate.take("fd00:ffff::1")).toBe("over-rate-shared")
    expect(rate.take("10.0.0.1")).toBe("admitted")
    // Once the tracked are full again (2 s idle) new addresses get buckets of their own again.
    clock.now += 2_000
    expect(rate.take("fd00:ffff::1")).toBe("admitted")
    expect(rate.tracked).toBe(1)
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
