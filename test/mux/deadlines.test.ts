// The session's deadline heap (src/mux/deadlines.ts) on fake timers: items expire in the order
// of their deadlines, each exactly once and not before it is due; a removed item never expires and
// leaves nothing behind; one Node timer serves them all; clear() stops everything; a wall clock
// stepped back or forward (Date) moves no deadline: they are on the monotonic clock; a deadline
// further than a Node timer can wait arms the longest timer, not one that fires every ms.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { monotonicMs } from "../../src/mux/clock.ts"
import { Deadlines, type Expiring, MAX_TIMER_MS } from "../../src/mux/deadlines.ts"

interface Item extends Expiring {
  readonly name: string
}
const item = (name: string): Item => ({ name, deadlineSlot: -1, deadlineAt: 0 })

describe("Deadlines", () => {
  beforeEach(() => {
    vi.useFakeTimers()
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("expires items in deadline order, each once and only when due", () => {
    const expired: Array<string> = []
    const deadlines = new Deadlines<Item>((i) => expired.push(i.name))
    const durations = [50, 10, 30, 20, 40, 10]
    durations.forEach((ms, n) => deadlines.add(item(`${ms}-${n}`), ms))
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(9)
    expect(expired).toEqual([])
    vi.advanceTimersByTime(1)
    expect(expired.sort()).toEqual(["10-1", "10-5"])
    vi.advanceTimersByTime(25)
    expect(expired.slice(2)).toEqual(["20-3", "30-2"])
    vi.advanceTimersByTime(100)
    expect(expired.slice(4)).toEqual(["40-4", "50-0"])
    expect(deadlines.size).toBe(0)
    expect(vi.getTimerCount()).toBe(0)
  })

  it("never expires a removed item and keeps only what is pending", () => {
    const expired: Array<string> = []
    const deadlines = new Deadlines<Item>((i) => expired.push(i.name))
    const items = Array.from({ length: 100 }, (_, n) => item(String(n)))
    items.forEach((i, n) => deadlines.add(i, 10 + (n % 7)))
    for (const i of items) if (Number(i.name) % 2 === 0) deadlines.remove(i)
    deadlines.remove(items[0]!) // twice: no-op
    expect(deadlines.size).toBe(50)
    expect(items.filter((i) => Number(i.name) % 2 === 0).every((i) => i.deadlineSlot === -1)).toBe(true)
    vi.advanceTimersByTime(20)
    expect(expired.map(Number).sort((a, b) => a - b)).toEqual(items.map((_, n) => n).filter((n) => n % 2 === 1))
    // Each in its deadline's order: 10 + n % 7 never decreases along the list.
    const dueOf = (name: string) => 10 + (Number(name) % 7)
    expect(expired.map(dueOf)).toEqual(expired.map(dueOf).sort((a, b) => a - b))
    expect(deadlines.size).toBe(0)
  })

  it("re-arms for the next item when the earliest was removed, and clear() stops the timer", () => {
    const expired: Array<string> = []
    const deadlines = new Deadlines<Item>((i) => expired.push(i.name))
    const first = item("first")
    deadlines.add(first, 10)
    deadlines.add(item("second"), 30)
    deadlines.remove(first)
    vi.advanceTimersByTime(10)
    expect(expired).toEqual([])
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(20)
    expect(expired).toEqual(["second"])
    deadlines.add(item("third"), 5)
    deadlines.clear()
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(50)
    expect(expired).toEqual(["second"])
  })

  it("addAt takes an absolute time: due in its order among add()s, and a time already past expires on the next tick", () => {
    const expired: Array<string> = []
    const deadlines = new Deadlines<Item>((i) => expired.push(i.name))
    deadlines.add(item("relative-30"), 30)
    deadlines.addAt(item("absolute-20"), monotonicMs() + 20)
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(20)
    expect(expired).toEqual(["absolute-20"])
    deadlines.addAt(item("past"), monotonicMs() - 5)
    expect(expired).toEqual(["absolute-20"])
    vi.advanceTimersByTime(1)
    expect(expired).toEqual(["absolute-20", "past"])
    vi.advanceTimersByTime(9)
    expect(expired).toEqual(["absolute-20", "past", "relative-30"])
    expect(deadlines.size).toBe(0)
    expect(vi.getTimerCount()).toBe(0)
  })

  it("a wall clock stepped back or forward moves no deadline: each expires when due, not an hour late nor at once", () => {
    const expired: Array<string> = []
    const deadlines = new Deadlines<Item>((i) => expired.push(i.name))
    deadlines.add(item("30"), 30)
    deadlines.add(item("1000"), 1000)
    vi.setSystemTime(Date.now() - 3_600_000)
    vi.advanceTimersByTime(30)
    expect(expired).toEqual(["30"])
    vi.setSystemTime(Date.now() + 7_200_000)
    vi.advanceTimersByTime(969)
    expect(expired).toEqual(["30"])
    vi.advanceTimersByTime(1)
    expect(expired).toEqual(["30", "1000"])
    expect(vi.getTimerCount()).toBe(0)
  })

  it("a deadline further than a Node timer can wait (a Date.now() passed as a deadline) arms the longest timer, not a 1 ms one", () => {
    const expired: Array<string> = []
    const deadlines = new Deadlines<Item>((i) => expired.push(i.name))
    const timeout = vi.spyOn(globalThis, "setTimeout")
    // A library caller that still passes Date.now() as the `now` option: its 30 s deadline is ~56 years away.
    deadlines.addAt(item("epoch"), Date.now() + 30_000)
    expect(timeout.mock.calls.map((call) => call[1])).toEqual([MAX_TIMER_MS])
    vi.advanceTimersByTime(MAX_TIMER_MS)
    expect(expired).toEqual([])
    // The longest wait passed with the deadline still ahead: one re-arm, again for the longest.
    expect(timeout.mock.calls.map((call) => call[1])).toEqual([MAX_TIMER_MS, MAX_TIMER_MS])
    expect(vi.getTimerCount()).toBe(1)
    deadlines.clear()
    timeout.mockRestore()
  })
  it("an item an expiry adds (a tunnel's next look) does not delay one pending since and due earlier", () => {
    const expired: Array<string> = []
    const deadlines: Deadlines<Item> = new Deadlines<Item>((i) => {
      expired.push(i.name)
      if (i.name === "first") deadlines.add(item("added by its expiry"), 100)
    })
    deadlines.add(item("first"), 10)
    deadlines.add(item("second"), 20)
    vi.advanceTimersByTime(10)
    expect(expired).toEqual(["first"])
    vi.advanceTimersByTime(10)
    expect(expired).toEqual(["first", "second"])
  })
})
