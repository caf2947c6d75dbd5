// AnswerHolds (src/sidecar/answerHolds.ts) against a model on fake timers, under random holds,
// releases, clears, bursts and time steps, holders that hold again or release another as their
// wait ends: each wait still running ends once, when due, in the order begun; a released or
// cleared one never does; the queue's slots past its end are cleared, and once no wait runs it
// holds no holder and no timer, a store grown past 256 entries given back; a spent slot keeps no holder.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { AnswerHolds, type Held } from "../../src/sidecar/answerHolds.ts"
import { prng } from "../helpers/prng.ts"

interface Holder extends Held {
  readonly id: number
}

/** The queue's private store and ends, read to check that nothing stale stays in it. */
const inside = (holds: AnswerHolds): { queue: Array<Held | undefined>; head: number; tail: number } =>
  holds as unknown as { queue: Array<Held | undefined>; head: number; tail: number }

const check = (holds: boolean, what: string): void => {
  if (!holds) throw new Error(what)
}

describe("AnswerHolds against a model", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("ends what the model says, once, when due, in order, and keeps nothing once none runs", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const random = prng(seed)
      const waitMs = random.int(1, 20)
      const holds = new AnswerHolds(waitMs)
      /** Waits running: holder, when it began. */
      const running = new Map<Holder, number>()
      let ended: Array<Holder> = []
      let nextId = 0
      const make = (): Holder => {
        const holder: Holder = {
          id: nextId++,
          holdUntil: 0,
          holdOver: () => {
            check(running.has(holder), `holder ${holder.id} ended while not running`)
            check(performance.now() >= running.get(holder)! + waitMs, `holder ${holder.id} ended early`)
            running.delete(holder)
            ended.push(holder)
            const roll = random.int(0, 9)
            if (roll === 0) start(holder)
            else if (roll === 1 && running.size > 0) {
              const other = [...running.keys()][random.int(0, running.size - 1)]!
              holds.release(other)
              running.delete(other)
            }
          },
        }
        return holder
      }
      const start = (holder: Holder): void => {
        holds.hold(holder)
        running.set(holder, performance.now())
      }
      for (let step = 0; step < 300; step++) {
        const op = random.int(0, 19)
        if (op < 7) start(make())
        else if (op < 10 && running.size > 0) {
          const holder = [...running.keys()][random.int(0, running.size - 1)]!
          holds.release(holder)
          running.delete(holder)
        } else if (op < 17) {
          ended = []
          vi.advanceTimersByTime(random.int(0, 10))
          const now = performance.now()
          for (const [holder, at] of running) check(at + waitMs > now, `holder ${holder.id} due at ${at + waitMs} still running at ${now}`)
        } else if (op < 18) {
          const burst = Array.from({ length: random.int(200, 1500) }, make)
          for (const holder of burst) start(holder)
          vi.advanceTimersByTime(random.int(0, waitMs))
        } else if (op < 19) {
          holds.clear()
          running.clear()
        } else start(make())
        const { queue, head, tail } = inside(holds)
        for (let i = 0; i < head; i++) check(queue[i] === undefined, `spent slot ${i} still holds a holder`)
        for (let i = tail; i < queue.length; i++) check(queue[i] === undefined, `slot ${i} past the end holds a holder`)
        for (let i = head; i < tail; i++) {
          const held = queue[i] as Holder
          check(held.holdUntil === 0 || running.has(held), `queued holder ${held.id} waits but the model has it over`)
        }
        if (running.size === 0) {
          check(vi.getTimerCount() === 0, "a timer with no wait running")
          check(tail === 0 && queue.every((held) => held === undefined), "holders kept with no wait running")
          check(queue.length <= 256, `emptied queue kept ${queue.length} slots`)
        } else check(vi.getTimerCount() === 1, `${vi.getTimerCount()} timers`)
      }
      vi.advanceTimersByTime(waitMs * 10)
      expect(running.size).toBe(0)
      expect(holds.size).toBe(0)
      expect(vi.getTimerCount()).toBe(0)
    }
  })
})
