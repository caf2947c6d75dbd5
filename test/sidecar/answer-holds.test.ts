// The h2c leg's waits for a whole answer (src/sidecar/answerHolds.ts) on fake timers: each wait
// ends once, in the order the waits began, not before its time (also one begun within a
// millisecond); one Node timer serves them all, and none is left once the queue is empty or every
// wait still queued was released (its answer came: no wake-up for nothing); a released wait's
// holder is not called; a holder that holds again while its wait ends is served by the same timer.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { AnswerHolds, type Held } from "../../src/sidecar/answerHolds.ts"

const heldBy = (name: string, over: Array<string>): Held => ({ holdUntil: 0, holdOver: () => void over.push(name) })

describe("AnswerHolds", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("ends each wait once, in order, not before its time, on one timer", () => {
    const over: Array<string> = []
    const holds = new AnswerHolds(5)
    holds.hold(heldBy("a", over))
    vi.advanceTimersByTime(2)
    holds.hold(heldBy("b", over))
    holds.hold(heldBy("c", over))
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(2)
    expect(over).toEqual([])
    vi.advanceTimersByTime(1)
    expect(over).toEqual(["a"])
    vi.advanceTimersByTime(1)
    expect(over).toEqual(["a"])
    vi.advanceTimersByTime(1)
    expect(over).toEqual(["a", "b", "c"])
    expect(holds.size).toBe(0)
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(100)
    expect(over).toEqual(["a", "b", "c"])
  })

  it("serves a wait begun while another ends with the same timer", () => {
    const over: Array<string> = []
    const holds = new AnswerHolds(1)
    holds.hold({ holdUntil: 0, holdOver: () => {
      over.push("first")
      holds.hold(heldBy("again", over))
    } })
    vi.advanceTimersByTime(1)
    expect(over).toEqual(["first"])
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(1)
    expect(over).toEqual(["first", "again"])
    expect(vi.getTimerCount()).toBe(0)
  })

  it("a wait begun while another ends does not delay one begun before it", () => {
    const over: Array<string> = []
    const holds = new AnswerHolds(10)
    holds.hold({ holdUntil: 0, holdOver: () => {
      over.push("first")
      holds.hold(heldBy("again", over))
    } })
    vi.advanceTimersByTime(5)
    holds.hold(heldBy("second", over))
    vi.advanceTimersByTime(5)
    expect(over).toEqual(["first"])
    vi.advanceTimersByTime(5)
    expect(over).toEqual(["first", "second"])
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(5)
    expect(over).toEqual(["first", "second", "again"])
    expect(vi.getTimerCount()).toBe(0)
  })

  it("keeps no more than the waits still running while calls keep coming", () => {
    const over: Array<string> = []
    const holds = new AnswerHolds(3)
    const queued = () => (holds as unknown as { readonly queue: ReadonlyArray<Held> }).queue.length
    let most = 0
    for (let ms = 0; ms < 5000; ms++) {
      holds.hold(heldBy(String(ms), over))
      vi.advanceTimersByTime(1)
      most = Math.max(most, queued())
    }
    expect(over).toEqual(Array.from({ length: 4998 }, (_, ms) => String(ms)))
    expect(holds.size).toBe(2)
    expect(most).toBeLessThanOrEqual(2 * 1024 + 8)
    vi.advanceTimersByTime(3)
    expect(over).toHaveLength(5000)
    expect(vi.getTimerCount()).toBe(0)
  })

  it("does not call a released holder, and clears the timer once no wait runs", () => {
    const over: Array<string> = []
    const holds = new AnswerHolds(1)
    const a = heldBy("a", over)
    const b = heldBy("b", over)
    holds.hold(a)
    holds.hold(b)
    holds.release(a)
    expect(vi.getTimerCount()).toBe(1)
    holds.release(b)
    holds.release(b)
    expect(vi.getTimerCount()).toBe(0)
    expect(holds.size).toBe(0)
    vi.advanceTimersByTime(5)
    expect(over).toEqual([])
    // A wait that ran out is not released after: the next hold still gets its timer.
    const c = heldBy("c", over)
    holds.hold(c)
    holds.hold(heldBy("d", over))
    vi.advanceTimersByTime(1)
    expect(over).toEqual(["c", "d"])
    holds.release(c)
    holds.hold(heldBy("e", over))
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(1)
    expect(over).toEqual(["c", "d", "e"])
  })

  it("times a wait begun within a millisecond from then, not from the millisecond's start", () => {
    const over: Array<string> = []
    const holds = new AnswerHolds(1)
    vi.advanceTimersByTime(0.1)
    holds.hold(heldBy("early", over))
    vi.advanceTimersByTime(0.8)
    holds.hold(heldBy("late", over))
    vi.advanceTimersByTime(0.3)
    expect(over).toEqual(["early"])
    vi.advanceTimersByTime(0.5)
    expect(over).toEqual(["early"])
    vi.advanceTimersByTime(1)
    expect(over).toEqual(["early", "late"])
  })

  it("clears every wait and its timer when the leg closes", () => {
    const over: Array<string> = []
    const holds = new AnswerHolds(1)
    holds.hold(heldBy("a", over))
    holds.hold(heldBy("b", over))
    holds.clear()
    expect(vi.getTimerCount()).toBe(0)
    expect(holds.size).toBe(0)
    vi.advanceTimersByTime(5)
    expect(over).toEqual([])
  })
})
