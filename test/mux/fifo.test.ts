// Fifo (src/mux/fifo.ts): the outbound listener's queue of a connection's waiting requests and a
// mesh channel's calls waiting for answers, its oldest item in a field. Checked against an array doing the same operations.
import { describe, expect, it } from "vitest"
import { Fifo } from "../../src/mux/fifo.ts"
import { prng } from "../helpers/prng.ts"

describe("Fifo", () => {
  it("gives items back in the order pushed, with length and last as an array's", () => {
    const fifo = new Fifo<number>()
    expect(fifo.length).toBe(0)
    expect(fifo.last).toBeUndefined()
    expect(fifo.shift()).toBeUndefined()
    fifo.push(1)
    expect([fifo.length, fifo.last]).toEqual([1, 1])
    fifo.push(2)
    fifo.push(3)
    expect([fifo.length, fifo.last]).toEqual([3, 3])
    expect(fifo.shift()).toBe(1)
    expect(fifo.shift()).toBe(2)
    fifo.push(4)
    expect([fifo.shift(), fifo.shift(), fifo.shift()]).toEqual([3, 4, undefined])
    expect(fifo.length).toBe(0)
  })

  it("matches an array under any mix of push, shift, takeAll and clear", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const random = prng(seed)
      const fifo = new Fifo<number>()
      const model: Array<number> = []
      for (let step = 0; step < 500; step++) {
        const op = random.int(0, 9)
        if (op < 5) {
          fifo.push(step)
          model.push(step)
        } else if (op < 8) expect(fifo.shift()).toBe(model.shift())
        else if (op < 9) expect(fifo.takeAll()).toEqual(model.splice(0))
        else {
          fifo.clear()
          model.length = 0
        }
        expect(fifo.length).toBe(model.length)
        expect(fifo.last).toBe(model.at(-1))
        expect(fifo.peek()).toBe(model[0])
        expect(fifo.every((n) => n % 3 !== 0)).toBe(model.every((n) => n % 3 !== 0))
      }
    }
  })
})
