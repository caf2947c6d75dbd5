// SourcePlaces (src/iip/sourcePlaces.ts): which unproven connection makes way at the server's
// cap. The source holding the most loses its oldest; ties go to the source that came to hold that
// many first; counts stay right through deletes (a connection's own close, its hello) and takes,
// so a place is released once.
import { describe, expect, it } from "vitest"
import { SourcePlaces } from "../../src/iip/sourcePlaces.ts"

describe("SourcePlaces", () => {
  it("takes the oldest of the source holding the most, not the oldest of all", () => {
    const places = new SourcePlaces<string>()
    places.add("honest-1", "10.0.0.1")
    for (let i = 0; i < 3; i++) places.add(`flood-${i}`, "10.0.0.9")
    places.add("honest-2", "10.0.0.2")
    expect(places.takeOldestOfLargest()).toBe("flood-0")
    expect(places.takeOldestOfLargest()).toBe("flood-1")
    // Now every source holds one: the one that came to hold one first (10.0.0.1), its oldest.
    expect(places.takeOldestOfLargest()).toBe("honest-1")
    expect(places.size).toBe(2)
    expect([...places].sort()).toEqual(["flood-2", "honest-2"])
  })

  it("a deleted item is never taken and is released once; the largest holder follows deletes", () => {
    const places = new SourcePlaces<string>()
    for (let i = 0; i < 3; i++) places.add(`a-${i}`, "a")
    places.add("b-0", "b")
    places.add("b-1", "b")
    expect(places.delete("a-0")).toBe(true)
    expect(places.delete("a-0")).toBe(false)
    expect(places.delete("a-1")).toBe(true)
    // a holds 1, b holds 2.
    expect(places.takeOldestOfLargest()).toBe("b-0")
    expect(places.delete("b-0")).toBe(false)
    places.add("a-2", "a") // already held: no second count
    expect(places.size).toBe(2)
    expect(places.takeOldestOfLargest()).toBe("a-2")
    expect(places.takeOldestOfLargest()).toBe("b-1")
    expect(places.takeOldestOfLargest()).toBeUndefined()
    expect(places.size).toBe(0)
  })
})
