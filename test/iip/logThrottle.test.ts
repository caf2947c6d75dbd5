// The bound on a log line that repeats (src/iip/log.ts LogThrottle): at most so many lines per
// window, the rest counted and their number carried by the next line that goes out. Its own clock
// is monotonic: a wall clock step neither opens a window early nor holds one shut.
// throttledEvents (the IIP server's bound on lines a peer repeats): a count no later line carries is
// written when its window ends (log-lines-suppressed), and every event is counted.
import { describe, expect, it, vi } from "vitest"
import { LogThrottle, throttledEvents } from "../../src/iip/log.ts"
import { waitFor } from "../support/iipRaw.ts"

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

/** A clock moved by hand whose timers run as it passes them (the EventsClock a throttledEvents waits on). */
const handClock = (start: number) => {
  const timers = new Set<{ readonly at: number; readonly run: () => void }>()
  const clock = {
    at: start,
    now: () => clock.at,
    after: (ms: number, run: () => void) => {
      const timer = { at: clock.at + ms, run }
      timers.add(timer)
      return { cancel: () => void timers.delete(timer) }
    },
    advance: (ms: number) => {
      clock.at += ms
      for (const timer of [...timers].sort((a, b) => a.at - b.at)) {
        if (timer.at > clock.at) break
        timers.delete(timer)
        timer.run()
      }
    },
    pending: () => timers.size
  }
  return clock
}

describe("throttledEvents", () => {
  it("keeps the last lines of a window for faults not logged yet: one peer repeating a rule does not hide another rule's first line", () => {
    const clock = handClock(1_000_000)
    const lines: Array<{ event: string; fields: Record<string, unknown> }> = []
    const { log } = throttledEvents((event, fields) => lines.push({ event, fields }), ["protocol-violation", "handler-crashed"], 20, 60_000, { now: clock.now, after: () => ({ cancel: () => {} }) })
    for (let i = 0; i < 1000; i++) log("protocol-violation", { rule: "bad-status" })
    // 15 lines of the repeated rule: the last 5 of the window wait for other faults.
    expect(lines.filter((line) => line.fields.rule === "bad-status")).toHaveLength(15)
    for (const rule of ["unknown-channel", "bad-length", "unknown-channel"]) log("protocol-violation", { rule })
    log("handler-crashed", { path: "/a" })
    expect(lines.slice(15).map((line) => line.fields.rule ?? line.fields.path)).toStrictEqual(["unknown-channel", "bad-length", "/a"])
    // The reserve is bounded too: a peer varying the rule gets the 3 lines left, no more.
    for (let i = 0; i < 100; i++) log("protocol-violation", { rule: `r${i}` })
    expect(lines.filter((line) => line.event === "protocol-violation")).toHaveLength(20)
    // A new window (its end's timer not run here): its first line counts the lines suppressed since the last that went out (r2).
    clock.at += 60_000
    log("protocol-violation", { rule: "bad-status" })
    expect(lines.filter((line) => line.fields.rule === "r2")).toHaveLength(1)
    expect(lines.at(-1)!.fields).toStrictEqual({ rule: "bad-status", suppressedBefore: 97 })
  })

  it("lines that name no kind (a silent connection's timeout) use the whole window", () => {
    const lines: Array<string> = []
    const { log } = throttledEvents((event) => lines.push(event), ["no-first-packet"], 20, 60_000, handClock(0))
    for (let i = 0; i < 60; i++) log("no-first-packet", { remote: `10.0.0.1:${i}` })
    expect(lines).toHaveLength(20)
  })

  it("a burst then silence: the count held back is written when its window ends, by one timer armed only while a count is held back", () => {
    const clock = handClock(1_000_000)
    const lines: Array<{ event: string; fields: Record<string, unknown> }> = []
    const events = throttledEvents((event, fields) => lines.push({ event, fields }), ["no-first-packet", "stalled", "handler-crashed"], 20, 60_000, clock)
    for (let i = 0; i < 20; i++) events.log("no-first-packet", {})
    expect(clock.pending()).toBe(0) // nothing held back, no timer
    for (let i = 0; i < 30; i++) events.log("no-first-packet", {})
    clock.advance(30_000)
    for (let i = 0; i < 25; i++) events.log("stalled", {}) // its window ends 30 s after no-first-packet's
    expect(clock.pending()).toBe(1)
    events.log("other", { passed: true }) // not bounded
    clock.advance(29_999)
    expect(lines.filter((line) => line.event === "log-lines-suppressed")).toStrictEqual([])
    clock.advance(1)
    expect(lines.at(-1)).toStrictEqual({ event: "log-lines-suppressed", fields: { of: "no-first-packet", suppressed: 30 } })
    expect(clock.pending()).toBe(1) // stalled's window still open
    clock.advance(30_000)
    expect(lines.at(-1)).toStrictEqual({ event: "log-lines-suppressed", fields: { of: "stalled", suppressed: 5 } })
    expect(clock.pending()).toBe(0)
    // Written once: the next window's first line carries no count.
    events.log("no-first-packet", {})
    expect(lines.at(-1)).toStrictEqual({ event: "no-first-packet", fields: {} })
    // Counted since the start, every event named whether seen or not.
    expect(events.counts()).toStrictEqual([
      { event: "no-first-packet", written: 21, suppressed: 30 },
      { event: "stalled", written: 20, suppressed: 5 },
      { event: "handler-crashed", written: 0, suppressed: 0 }
    ])
  })

  it("a count held back when the owner closes is written then, and the timer stopped; a sink that throws in the timer does not throw out", () => {
    const clock = handClock(0)
    const lines: Array<{ event: string; fields: Record<string, unknown> }> = []
    const events = throttledEvents((event, fields) => lines.push({ event, fields }), ["stalled"], 2, 60_000, clock)
    for (let i = 0; i < 5; i++) events.log("stalled", {})
    expect(clock.pending()).toBe(1)
    events.close()
    expect(clock.pending()).toBe(0)
    expect(lines.at(-1)).toStrictEqual({ event: "log-lines-suppressed", fields: { of: "stalled", suppressed: 3 } })

    const throwing = throttledEvents((event) => {
      if (event === "log-lines-suppressed") throw new Error("sink down")
    }, ["stalled"], 2, 60_000, clock)
    for (let i = 0; i < 5; i++) throwing.log("stalled", {})
    // The line goes to stderr instead (neverThrowing), with what the sink threw.
    expect(() => clock.advance(60_000)).not.toThrow()
    expect(clock.pending()).toBe(0)
  })

  it("on the real clock (monotonic time, an unref'd timer): a short window's held-back count is written at its end with no later line", async () => {
    const lines: Array<{ event: string; fields: Record<string, unknown> }> = []
    const events = throttledEvents((event, fields) => lines.push({ event, fields }), ["stalled"], 2, 50)
    for (let i = 0; i < 7; i++) events.log("stalled", {})
    await waitFor(() => lines.some((line) => line.event === "log-lines-suppressed"), 5000, "the window's end")
    expect(lines.at(-1)).toStrictEqual({ event: "log-lines-suppressed", fields: { of: "stalled", suppressed: 5 } })
    events.close()
    expect(lines).toHaveLength(3)
  })
})
