// TurnEnd (src/mux/turnEnd.ts) against a model over many real turns: each turn's items run once at
// its end in the order added, those added while they run wait for the next turn's end, and its
// arrays keep no item once run (a call held by a stale slot would live as long as the process) and
// give back a store grown past 256 items. One that throws leaves the TurnEnd working.
import { setImmediate as nextTurn } from "node:timers/promises"
import { describe, expect, it } from "vitest"
import { TurnEnd } from "../../src/mux/turnEnd.ts"
import { prng } from "../helpers/prng.ts"

/** The TurnEnd's private arrays, read to check that nothing run stays in them. */
const arrays = (turnEnd: TurnEnd<number>): { items: Array<number | undefined>; spare: Array<number | undefined>; atEnd: () => void } =>
  turnEnd as unknown as { items: Array<number | undefined>; spare: Array<number | undefined>; atEnd: () => void }

describe("TurnEnd against a model", () => {
  it("runs every turn's items once, in order, the ones added while running a turn later, and keeps none", async () => {
    for (let seed = 1; seed <= 10; seed++) {
      const random = prng(seed)
      let next = 0
      const ran: Array<number> = []
      // What the model says the next turn's end runs: added this turn, before or while the last one ran.
      let due: Array<number> = []
      let adding = true
      const turnEnd: TurnEnd<number> = new TurnEnd<number>((item) => {
        ran.push(item)
        if (adding && random.int(0, 3) === 0) {
          const added = next++
          turnEnd.add(added)
          due.push(added)
        }
      })
      for (let turn = 0; turn < 60; turn++) {
        const size = random.int(0, 9) === 0 ? random.int(257, 600) : random.int(0, 4)
        for (let i = 0; i < size; i++) {
          const added = next++
          turnEnd.add(added)
          due.push(added)
        }
        const expected = due
        due = []
        ran.length = 0
        await nextTurn()
        expect(ran).toEqual(expected)
        const { items, spare } = arrays(turnEnd)
        // The ones added while this turn's ran are in `items`, waiting; `spare` (the array just run) holds none.
        expect(items.filter((item) => item !== undefined)).toEqual(due)
        expect(spare.every((item) => item === undefined)).toBe(true)
        expect(spare.length).toBeLessThanOrEqual(256)
      }
      // The last turn's chain of items added while running ends once none adds more.
      adding = false
      await nextTurn()
      await nextTurn()
      expect(arrays(turnEnd).items.every((item) => item === undefined)).toBe(true)
    }
  })

  it("an item that throws: the error goes out, the turn's arrays are cleared, and later turns run as before", async () => {
    const ran: Array<number> = []
    const turnEnd = new TurnEnd<number>((item) => {
      if (item === 2) throw new Error("item 2")
      ran.push(item)
    })
    turnEnd.add(1)
    turnEnd.add(2)
    turnEnd.add(3)
    // Its end run here, not from its setImmediate (a throw there is an uncaught exception).
    expect(() => arrays(turnEnd).atEnd()).toThrow("item 2")
    // As before the branch: what followed the throw in that turn is not run.
    expect(ran).toEqual([1])
    const { items, spare } = arrays(turnEnd)
    expect([...items, ...spare].every((item) => item === undefined)).toBe(true)
    await nextTurn()
    turnEnd.add(4)
    turnEnd.add(5)
    await nextTurn()
    expect(ran).toEqual([1, 4, 5])
  })
})
