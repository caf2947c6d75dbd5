// The deadline heap (src/mux/deadlines.ts) against a plain map under random adds, removes, clears,
// bursts and time steps (fake timers), expiry callbacks adding and removing too: every pending item
// expires once, when due, in deadline order; none removed or cleared does; the heap's invariant
// holds over its counted entries and every slot past them is cleared (no request kept alive by a
// stale slot); emptied after a burst, the store is given back.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { monotonicMs } from "../../src/mux/clock.ts"
import { Deadlines, type Expiring } from "../../src/mux/deadlines.ts"
import { prng } from "../helpers/prng.ts"

interface Item extends Expiring {
  readonly id: number
}

/** The heap's private store and count, read to check its invariant and its cleared slots. */
const inside = (deadlines: Deadlines<Item>): { heap: Array<Item | undefined>; count: number } =>
  deadlines as unknown as { heap: Array<Item | undefined>; count: number }

/** Thrown by the checks below: expect() per slot per step is too slow for this many steps. */
const check = (holds: boolean, what: string): void => {
  if (!holds) throw new Error(what)
}

const checkHeap = (deadlines: Deadlines<Item>, pending: Map<Item, number>): void => {
  const { heap, count } = inside(deadlines)
  check(count === pending.size, `count ${count}, model ${pending.size}`)
  for (let i = 0; i < count; i++) {
    const item = heap[i]!
    check(item.deadlineSlot === i, `slot ${i} holds an item placed at ${item.deadlineSlot}`)
    check(pending.get(item) === item.deadlineAt, `slot ${i} holds an item not pending`)
    if (i > 0) check(heap[(i - 1) >> 1]!.deadlineAt <= item.deadlineAt, `heap order broken at ${i}`)
  }
  for (let i = count; i < heap.length; i++) check(heap[i] === undefined, `slot ${i} past the count still holds an item`)
  if (count === 0) check(heap.length <= 256, `emptied store kept ${heap.length} slots`)
}

describe("Deadlines against a model", () => {
  beforeEach(() => {
    vi.useFakeTimers()
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("expires what the model says, when due and in order, and keeps nothing it should not", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const random = prng(seed)
      let nextId = 0
      const pending = new Map<Item, number>()
      const everAdded: Array<Item> = []
      let expired: Array<Item> = []
      const make = (): Item => {
        const item: Item = { id: nextId++, deadlineSlot: -1, deadlineAt: 0 }
        everAdded.push(item)
        return item
      }
      const deadlines: Deadlines<Item> = new Deadlines<Item>((item) => {
        expect(pending.has(item)).toBe(true)
        expect(item.deadlineAt).toBeLessThanOrEqual(monotonicMs())
        expect(item.deadlineSlot).toBe(-1)
        pending.delete(item)
        expired.push(item)
        // An expiry that ends another call, or starts one (a retry), as a session's would.
        const roll = random.int(0, 9)
        if (roll === 0 && pending.size > 0) {
          const other = [...pending.keys()][random.int(0, pending.size - 1)]!
          deadlines.remove(other)
          pending.delete(other)
        } else if (roll === 1) {
          const fresh = make()
          deadlines.add(fresh, random.int(1, 30))
          pending.set(fresh, fresh.deadlineAt)
        }
      })
      for (let step = 0; step < 300; step++) {
        const op = random.int(0, 39)
        if (op < 8) {
          const item = make()
          deadlines.add(item, random.int(1, 40))
          pending.set(item, item.deadlineAt)
        } else if (op < 13) {
          // A removal of something pending, or of something gone already (a no-op).
          const item = everAdded[random.int(0, everAdded.length - 1)]
          if (item !== undefined) {
            deadlines.remove(item)
            pending.delete(item)
          }
        } else if (op < 18) {
          expired = []
          vi.advanceTimersByTime(random.int(0, 15))
          const now = monotonicMs()
          // Due ones expire earliest first; one an expiry adds is due after now, so after all of them.
          for (let i = 1; i < expired.length; i++) check(expired[i - 1]!.deadlineAt <= expired[i]!.deadlineAt, `item ${expired[i]!.id} expired after a later one`)
          for (const [item, at] of pending) check(at > now, `item ${item.id} due at ${at} still pending at ${now}`)
        } else if (op < 19) {
          vi.advanceTimersByTime(random.int(0, 15))
        } else if (op < 20) {
          // A burst then all gone: the store is given back.
          const burst = Array.from({ length: random.int(200, 600) }, make)
          for (const item of burst) {
            deadlines.add(item, random.int(1, 40))
            pending.set(item, item.deadlineAt)
          }
          checkHeap(deadlines, pending)
          for (const item of burst) {
            deadlines.remove(item)
            pending.delete(item)
          }
        } else if (op < 21) {
          deadlines.clear()
          for (const item of pending.keys()) expect(item.deadlineSlot).toBe(-1)
          pending.clear()
          expect(vi.getTimerCount()).toBe(0)
        } else {
          const item = make()
          deadlines.add(item, random.int(1, 40))
          pending.set(item, item.deadlineAt)
        }
        checkHeap(deadlines, pending)
        for (const item of everAdded) if (!pending.has(item)) check(item.deadlineSlot === -1, `item ${item.id} gone but placed at ${item.deadlineSlot}`)
      }
      vi.advanceTimersByTime(1000)
      expect(pending.size).toBe(0)
      expect(deadlines.size).toBe(0)
      expect(vi.getTimerCount()).toBe(0)
      checkHeap(deadlines, pending)
    }
  })
})
