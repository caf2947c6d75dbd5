// PlacedSet (src/mux/placedSet.ts): the HTTP/2 legs' open calls, each item holding its slot.
// Checked against a Set doing the same operations.
import { describe, expect, it } from "vitest"
import { PlacedSet } from "../../src/mux/placedSet.ts"
import { prng } from "../helpers/prng.ts"

interface Item {
  readonly id: number
  place: number
}

describe("PlacedSet", () => {
  it("holds what a Set holds under any mix of add and delete, repeated adds and deletes of absent items too", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const random = prng(seed)
      const items: Array<Item> = Array.from({ length: 12 }, (_, id) => ({ id, place: -1 }))
      const set = new PlacedSet<Item>()
      const model = new Set<Item>()
      for (let step = 0; step < 500; step++) {
        const item = items[random.int(0, items.length - 1)]!
        if (random.int(0, 1) === 0) {
          set.add(item)
          model.add(item)
        } else expect(set.delete(item)).toBe(model.delete(item))
        expect(set.size).toBe(model.size)
        for (const each of items) expect(set.has(each)).toBe(model.has(each))
        expect(new Set(set)).toEqual(model)
      }
    }
  })

  it("walks a copy: items leaving during the walk are all visited once", () => {
    const items: Array<Item> = Array.from({ length: 5 }, (_, id) => ({ id, place: -1 }))
    const set = new PlacedSet<Item>()
    for (const item of items) set.add(item)
    const seen: Array<number> = []
    for (const item of set) {
      seen.push(item.id)
      set.delete(item)
      set.delete(items[4 - item.id]!)
    }
    expect(seen.sort()).toEqual([0, 1, 2, 3, 4])
    expect(set.size).toBe(0)
  })

  it("does not take an item another PlacedSet holds for its own", () => {
    const item: Item = { id: 1, place: -1 }
    const a = new PlacedSet<Item>()
    const b = new PlacedSet<Item>()
    b.add({ id: 0, place: -1 })
    a.add(item)
    expect(b.has(item)).toBe(false)
    expect(b.delete(item)).toBe(false)
    expect(a.has(item)).toBe(true)
  })
})
