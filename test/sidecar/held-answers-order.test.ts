// The order heldAnswers.ts takes answers back in past its budget, and the work a look costs: the
// answers stalled longest on a reader that took none first, then slow readers by their wait, then
// the largest of the rest; equal ones in the order they joined. A look takes back only until under
// the budget, so it must not rank every answer held: with 20,000 held and a few to take back, the
// comparisons stay within a heap's 2n + k·2·log2(n) (a sort of all was n·log2(n), ~280,000, on
// every look: 27 ms). Counted, not timed: each answer's wait time is a number that counts its reads.
import { describe, expect, it } from "vitest"
import { type HeldAnswer, HeldAnswers } from "../../src/sidecar/heldAnswers.ts"
import { MinHeap } from "../../src/sidecar/minHeap.ts"
import { prng } from "../helpers/prng.ts"

interface Fake extends HeldAnswer {
  readonly name: number
  heldNow: number
}

/** An answer held by `held`: taking it back lets go of its bytes, and records its name in `taken`. */
const fake = (held: HeldAnswers, taken: Array<number>, name: number, heldNow: number, readerWaitAt: number, passedAtWait: number, passed: number): Fake => {
  const answer: Fake = {
    name,
    heldNow,
    readerWait: { at: readerWaitAt, passedAtWait, passed },
    takeBackHeld: () => {
      held.bytes -= answer.heldNow
      answer.heldNow = 0
      taken.push(name)
      held.leave(answer)
    }
  }
  held.bytes += heldNow
  held.join(answer)
  return answer
}

/** The order as it was defined, by sorting all (stable: equal ones in the order they joined). */
const sortedOrder = (answers: ReadonlyArray<Fake>): Array<number> =>
  answers
    .filter((a) => a.heldNow > 0)
    .map((a) => ({ a, wait: a.readerWait! }))
    .map(({ a, wait }) => ({ a, rank: wait.at === 0 ? 2 : wait.passed === wait.passedAtWait ? 0 : 1, order: wait.at === 0 ? -a.heldNow : wait.at }))
    .sort((x, y) => x.rank - y.rank || x.order - y.order)
    .map((x) => x.a.name)

const look = () => new Promise<void>((resolve) => queueMicrotask(resolve))

describe("held answers: the take-back order and its cost", () => {
  it("takes back exactly the answers the full ranking puts first, ties in joining order, until under the budget", async () => {
    const { next } = prng(7)
    for (let round = 0; round < 50; round++) {
      const count = 1 + Math.floor(next() * 300)
      // Few distinct values, so ranks and orders tie often.
      const specs = Array.from({ length: count }, () => {
        const passedAtWait = Math.floor(next() * 3)
        return { heldNow: Math.floor(next() * 4) * 16_384, readerWaitAt: next() < 0.7 ? 1 + Math.floor(next() * 5) : 0, passedAtWait, passed: passedAtWait + (next() < 0.5 ? 0 : 1) }
      })
      const total = specs.reduce((sum, a) => sum + a.heldNow, 0)
      const held = new HeldAnswers(total - Math.floor(next() * total))
      const taken: Array<number> = []
      const answers = specs.map((a, name) => fake(held, taken, name, a.heldNow, a.readerWaitAt, a.passedAtWait, a.passed))
      // What a walk down the sorted ranking takes back, stopping once under the budget.
      const walk: Array<number> = []
      let bytes = total
      for (const name of sortedOrder(answers)) {
        if (bytes <= held.max) break
        walk.push(name)
        bytes -= specs[name]!.heldNow
      }
      held.check()
      await look()
      expect(taken, `round ${round}`).toEqual(walk)
      expect(held.bytes).toBe(bytes)
    }
  })

  it("20,000 held, three to take back: the look compares within a heap's bound, not a sort's", async () => {
    const n = 20_000
    const taken: Array<number> = []
    const held = new HeldAnswers(n * 1024 - 3 * 1024)
    let reads = 0
    const { next } = prng(11)
    for (let i = 0; i < n; i++) {
      // Every one waiting on a reader that took none: the look compares wait times alone.
      const waitAt = 1 + next() * 1e6
      const counted = { valueOf: () => (reads++, waitAt) } as unknown as number
      fake(held, taken, i, 1024, counted, 0, 0)
    }
    held.check()
    await look()
    expect(taken).toHaveLength(3)
    // Two reads a comparison (plus one per answer taken back, for its message).
    const comparisons = (reads - taken.length) / 2
    const heapBound = 2 * n + 3 * 2 * Math.ceil(Math.log2(n))
    expect(comparisons).toBeLessThanOrEqual(heapBound)
    expect(held.bytes).toBeLessThanOrEqual(held.max)
  })

  it("MinHeap gives the order a stable sort gives, and pops k of n within 2n + k·2·log2(n) comparisons", () => {
    const { next } = prng(3)
    for (const n of [0, 1, 2, 3, 7, 64, 1000]) {
      const items = Array.from({ length: n }, (_, seq) => ({ key: Math.floor(next() * 10), seq }))
      const before = (a: { key: number; seq: number }, b: { key: number; seq: number }) => (a.key - b.key || a.seq - b.seq) < 0
      const expected = [...items].sort((a, b) => a.key - b.key).map((i) => i.seq)
      const heap = new MinHeap([...items], before)
      const out: Array<number> = []
      for (let item = heap.pop(); item !== undefined; item = heap.pop()) out.push(item.seq)
      expect(out, `n ${n}`).toEqual(expected)
    }
    const n = 20_000
    let comparisons = 0
    const heap = new MinHeap(Array.from({ length: n }, () => next()), (a, b) => (comparisons++, a < b))
    for (let k = 0; k < 10; k++) heap.pop()
    expect(comparisons).toBeLessThanOrEqual(2 * n + 10 * 2 * Math.ceil(Math.log2(n)))
  })
})
