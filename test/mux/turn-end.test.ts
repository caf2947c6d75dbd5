// TurnEnd (src/mux/turnEnd.ts): the HTTP/2 legs' one setImmediate per turn for every answer
// head or held body of that turn.
import { setImmediate as nextTurn } from "node:timers/promises"
import { describe, expect, it } from "vitest"
import { TurnEnd } from "../../src/mux/turnEnd.ts"

describe("TurnEnd", () => {
  it("runs each item of a turn once at its end, in the order added, and nothing before", async () => {
    const ran: Array<number> = []
    const turnEnd = new TurnEnd<number>((item) => ran.push(item))
    turnEnd.add(1)
    turnEnd.add(2)
    turnEnd.add(3)
    expect(ran).toEqual([])
    await nextTurn()
    expect(ran).toEqual([1, 2, 3])
    await nextTurn()
    expect(ran).toEqual([1, 2, 3])
  })

  it("an item added while the turn's items run waits for the next turn's end", async () => {
    const ran: Array<string> = []
    const turnEnd: TurnEnd<string> = new TurnEnd<string>((item) => {
      ran.push(item)
      if (item === "first") turnEnd.add("added while running")
    })
    turnEnd.add("first")
    await nextTurn()
    expect(ran).toEqual(["first"])
    await nextTurn()
    expect(ran).toEqual(["first", "added while running"])
  })
})
