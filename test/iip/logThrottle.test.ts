// The bound on a log line that repeats (src/iip/log.ts LogThrottle): at most so many lines per
// window, the rest counted and their number carried by the next line that goes out. Its own clock
// is monotonic: a wall clock step neither opens a window early nor holds one shut.
import { describe, expect, it, vi } from "vitest"
import { LogThrottle, throttledEvents } from "../../src/iip/log.ts"

describe("LogThrottle", () => {
  it("admits maxLines per window, counts the rest, and reports them on the first line of a later window", () => {
    let now = 5_000_000
    const throttle = new LogThrottle(3, 60_000, () => now)
    const admitted = Array.from({ length: 10 }, () => throttle.admit())
    expect(admitted.slice(0, 3)).toStrictEqual([{}, {}, {}])
    expect(admitted.slice(3)).toStrictEqual(Array(7).fill(undefined))
    // Still the same window one millisecond before its end.
    now += 59_999
    expect(throttle.admit()).toBeUndefined()
    now += 1
    expect(throttle.admit()).toStrictEqual({ suppressedBefore: 8 })
    // Counted once: the next line carries nothing.
    expect(throttle.admit()).toStrictEqual({})
    expect(throttle.admit()).toStrictEqual({})
    expect(throttle.admit()).toBeUndefined()
    now += 60_000
    expect(throttle.admit()).toStrictEqual({ suppressedBefore: 1 })
  })

  it("a clock stepped back starts a new window: the log is not silenced until the clock catches up", () => {
    let now = 1_000_000
    const throttle = new LogThrottle(1, 1000, () => now)
    expect(throttle.admit()).toStrictEqual({})
    expect(throttle.admit()).toBeUndefined()
    now -= 500_000
    expect(throttle.admit()).toStrictEqual({ suppressedBefore: 1 })
    expect(throttle.admit()).toBeUndefined()
    now += 1000
    expect(throttle.admit()).toStrictEqual({ suppressedBefore: 1 })
  })

  it("by default on the monotonic clock: a wall clock stepped back an hour does not open a new window", () => {
    // Fakes Date and performance: setSystemTime steps the wall clock alone, advanceTimersByTime both.
    vi.useFakeTimers()
    try {
      const throttle = new LogThrottle(1, 1000)
      expect(throttle.admit()).toStrictEqual({})
      expect(throttle.admit()).toBeUndefined()
      // Before, on Date.now(), the step started a window: a line a step let through.
      vi.setSystemTime(Date.now() - 3_600_000)
      expect(throttle.admit()).toBeUndefined()
      vi.advanceTimersByTime(1000)
      expect(throttle.admit()).toStrictEqual({ suppressedBefore: 2 })
    } finally {
      vi.useRealTimers()
    }
  })

  it("reserved lines go to first occurrences only; the bound stays maxLines and every line left out is counted once", () => {
    let now = 0
    const throttle = new LogThrottle(4, 60_000, () => now, 2)
    expect([throttle.admit(), throttle.admit(), throttle.admit()]).toStrictEqual([{}, {}, undefined])
    expect(throttle.admit(true)).toStrictEqual({ suppressedBefore: 1 })
    expect(throttle.admit()).toBeUndefined()
    expect(throttle.admit(true)).toStrictEqual({ suppressedBefore: 1 })
    expect([throttle.admit(true), throttle.admit()]).toStrictEqual([undefined, undefined])
    now += 60_000
    expect(throttle.admit()).toStrictEqual({ suppressedBefore: 2 })
  })
})

describe("throttledEvents", () => {
  it("keeps the last lines of a window for faults not logged yet: one peer repeating a rule does not hide another rule's first line", () => {
    let now = 1_000_000
    const lines: Array<{ event: string; fields: Record<string, unknown> }> = []
    const log = throttledEvents((event, fields) => lines.push({ event, fields }), ["protocol-violation", "handler-crashed"], 20, 60_000, () => now)
    for (let i = 0; i < 1000; i++) log("protocol-violation", { rule: "bad-status" })
    // 15 lines of the repeated rule: the last 5 of the window wait for other faults.
    expect(lines.filter((line) => line.fields.rule === "bad-status")).toHaveLength(15)
    for (const rule of ["unknown-channel", "bad-length", "unknown-channel"]) log("protocol-violation", { rule })
    log("handler-crashed", { path: "/a" })
    expect(lines.slice(15).map((line) => line.fields.rule ?? line.fields.path)).toStrictEqual(["unknown-channel", "bad-length", "/a"])
    // The reserve is bounded too: a peer varying the rule gets the 3 lines left, no more.
    for (let i = 0; i < 100; i++) log("protocol-violation", { rule: `r${i}` })
    expect(lines.filter((line) => line.event === "protocol-violation")).toHaveLength(20)
    // A new window: its first line counts the lines suppressed since the last that went out (r2).
    now += 60_000
    log("protocol-violation", { rule: "bad-status" })
    expect(lines.filter((line) => line.fields.rule === "r2")).toHaveLength(1)
    expect(lines.at(-1)!.fields).toStrictEqual({ rule: "bad-status", suppressedBefore: 97 })
  })

  it("lines that name no kind (a silent connection's timeout) use the whole window", () => {
    const lines: Array<string> = []
    const log = throttledEvents((event) => lines.push(event), ["no-first-packet"], 20, 60_000, () => 0)
    for (let i = 0; i < 60; i++) log("no-first-packet", { remote: `10.0.0.1:${i}` })
    expect(lines).toHaveLength(20)
  })
})
