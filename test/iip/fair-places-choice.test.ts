// FairPlaces (src/iip/fairPlaces.ts): which connection a newcomer's source takes at the server's
// cap. Only from a source that, with the newcomer, would still hold more; of its connections the
// one idle longest, CLOCK-wise: one that served a request since it was last looked at, or has one
// in flight, goes to the back; one in flight goes only when all those looked at are busy.
import { describe, expect, it } from "vitest"
import { FairPlaces } from "../../src/iip/fairPlaces.ts"
import type { Connection } from "../../src/mux/connection.ts"

/** A connection as FairPlaces sees it: its budget's release count, and whether anything is in flight. */
const fake = (name: string) => {
  const state = { name, releases: 0, busy: false }
  const connection = { budget: { get releases() { return state.releases } } } as unknown as Connection
  return { state, connection }
}

const setUp = (count: number, source = "hog") => {
  const places = new FairPlaces()
  const all = Array.from({ length: count }, (_, i) => {
    const item = fake(`${source}-${i}`)
    const place = places.add(item.connection, source, () => !item.state.busy)
    return { ...item, place }
  })
  const nameOf = (connection: Connection | undefined) => all.find((a) => a.connection === connection)?.state.name
  return { places, all, nameOf }
}

describe("FairPlaces", () => {
  it("a newcomer takes a place only when its source, with it, still holds fewer than the largest", () => {
    const { places } = setUp(2)
    // hog holds 2, "a" 0: with the newcomer "a" holds 1 < 2.
    expect(places.owes("a")).toBe(true)
    places.add(fake("a-0").connection, "a", () => true)
    // hog 2, "a" 1: with one more "a" would hold 2, as many as the hog: refused, no swap.
    expect(places.owes("a")).toBe(false)
    expect(places.evictFor("a")).toBeUndefined()
    // Sources holding one each: none owes another's newcomer.
    const single = new FairPlaces()
    single.add(fake("x").connection, "x", () => true)
    single.add(fake("y").connection, "y", () => true)
    expect(single.evictFor("z")).toBeUndefined()
  })

  it("the oldest idle one goes; one that served a request since it was queued is passed over once", () => {
    const { places, all, nameOf } = setUp(4)
    all[0]!.state.releases = 3 // served since queued
    const first = places.evictFor("newcomer")!
    expect(nameOf(first.place.connection)).toBe("hog-1")
    expect(first.busy).toBe(false)
    expect([first.held, first.newcomerHeld]).toEqual([4, 0])
    // hog-0 went behind hog-3 with its count seen: hog-2, hog-3, then hog-0.
    expect(nameOf(places.evictFor("newcomer")!.place.connection)).toBe("hog-2")
  })

  it("one with a request in flight goes only when every one looked at is busy: then the least recently looked at", () => {
    const { places, all, nameOf } = setUp(4)
    for (const a of all) a.state.busy = true
    all[2]!.state.busy = false
    all[2]!.state.releases = 1 // idle now, but served since queued: still taken before any busy one
    const idle = places.evictFor("newcomer")!
    expect(nameOf(idle.place.connection)).toBe("hog-2")
    expect(idle.busy).toBe(false)
    const busy = places.evictFor("newcomer")!
    expect(busy.busy).toBe(true)
    expect(nameOf(busy.place.connection)).toBe("hog-0")
  })

  it("looks at no more than 16 of a source's connections per eviction", () => {
    const { places, all, nameOf } = setUp(40)
    for (const a of all) a.state.busy = true
    all[30]!.state.busy = false
    // The 16 oldest are busy: the first of them goes, and they go behind the rest.
    expect(nameOf(places.evictFor("newcomer")!.place.connection)).toBe("hog-0")
    // Next: hog-16 .. hog-31 looked at, hog-30 idle and untouched since queued.
    expect(nameOf(places.evictFor("newcomer")!.place.connection)).toBe("hog-30")
  })

  it("a deleted place is never taken", () => {
    const { places, all, nameOf } = setUp(3)
    places.delete(all[0]!.place)
    places.delete(all[0]!.place)
    expect(nameOf(places.evictFor("newcomer")!.place.connection)).toBe("hog-1")
  })

  // Sources that each redial every place they lose, at a full cap, with a newcomer taking a place
  // whenever its source is owed one: the evictions stop (each moves a place from a source holding
  // m to one that then holds at most m - 1, so the sum of the squares of what sources hold falls),
  // whatever the order of the dials, and then no source that wants more holds two fewer than another.
  it("sources redialling every place they lose settle: no eviction loop", () => {
    let seed = 7
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648
      return Math.floor(seed / 65536) % n
    }
    for (let round = 0; round < 200; round++) {
      const cap = 4 + random(60)
      const wants = Array.from({ length: 2 + random(8) }, () => 1 + random(cap))
      const places = new FairPlaces()
      const held = new Array<number>(wants.length).fill(0)
      let total = 0
      let evictions = 0
      let settled = false
      // Each step a source below what it wants dials once: taken below the cap, else only if owed a place.
      for (let step = 0; step < 100_000 && !settled; step++) {
        const dialling = wants.flatMap((want, s) => (held[s]! < want ? [s] : []))
        settled = dialling.length === 0 || (total >= cap && dialling.every((s) => !places.owes(`s${s}`)))
        if (settled) break
        const s = dialling[random(dialling.length)]!
        if (total >= cap) {
          const eviction = places.evictFor(`s${s}`)
          if (eviction === undefined) continue
          evictions++
          held[Number(eviction.place.source.slice(1))]!--
          total--
        }
        places.add(fake(`s${s}-${step}`).connection, `s${s}`, () => true)
        held[s]!++
        total++
      }
      expect(settled).toBe(true)
      expect(evictions).toBeLessThanOrEqual((cap * cap) / 2)
      const most = Math.max(...held)
      expect(held.filter((h, s) => h < wants[s]! && h + 1 < most)).toEqual([])
    }
  })
})
