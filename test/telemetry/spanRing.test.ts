// The trace store's byte ring (src/telemetry/spanRing.ts): a slot's lines read back in order when
// other slots' lines came between them; when full the oldest record is overwritten and its live
// owner told (once), and a cleared slot's records are not; a line larger than the buffer is
// refused; a slot that loses its own first record making room refuses the line; many laps keep
// every live slot readable; the ring writes only as far as its live records need, and grows to
// its whole budget when they need it.
import { describe, expect, it } from "vitest"
import { SpanRing } from "../../src/telemetry/spanRing.ts"

/** A ring whose overwritten live slots are recorded and cleared, as the store does. */
const ringOf = (bytes: number, slots: number) => {
  const overwritten: Array<number> = []
  const ring: SpanRing = new SpanRing(bytes, slots, (slot) => {
    overwritten.push(slot)
    ring.clear(slot)
  })
  return { ring, overwritten }
}

describe("SpanRing", () => {
  it("reads a slot's lines back in order when other slots' lines came between them", () => {
    const { ring, overwritten } = ringOf(4096, 3)
    expect(ring.append(0, "a1")).toBe(true)
    expect(ring.append(1, "b1 ü")).toBe(true)
    expect(ring.append(0, "a2 \u{1F600}")).toBe(true)
    expect(ring.append(2, "c1")).toBe(true)
    expect(ring.append(0, "a3")).toBe(true)
    expect(ring.lines(0)).toStrictEqual(["a1", "a2 \u{1F600}", "a3"])
    expect(ring.lines(1)).toStrictEqual(["b1 ü"])
    expect(ring.lines(2)).toStrictEqual(["c1"])
    expect(overwritten).toStrictEqual([])
  })

  it("overwrites the oldest records when full, telling their live owner once; a cleared slot's records are not reported", () => {
    // 16-byte header + 48 bytes of text: 64 bytes a record, 4 records in 256 bytes.
    const line = (c: string) => c.repeat(48)
    const { ring, overwritten } = ringOf(256, 4)
    ring.append(0, line("a"))
    ring.append(0, line("b"))
    ring.append(1, line("c"))
    ring.append(2, line("d"))
    ring.clear(1)
    expect(ring.append(3, line("e"))).toBe(true) // overwrites slot 0's first record
    expect(overwritten).toStrictEqual([0])
    expect(ring.lines(0)).toStrictEqual([])
    expect(ring.append(3, line("f"))).toBe(true) // slot 0's second record: slot 0 already gone
    expect(ring.append(3, line("g"))).toBe(true) // slot 1's record: cleared, not reported
    expect(overwritten).toStrictEqual([0])
    expect(ring.append(3, line("h"))).toBe(true) // slot 2's record
    expect(overwritten).toStrictEqual([0, 2])
    expect(ring.lines(3)).toStrictEqual([line("e"), line("f"), line("g"), line("h")])
  })

  it("refuses a line larger than the buffer, and one whose slot lost its own first record making room", () => {
    const { ring, overwritten } = ringOf(256, 2)
    expect(ring.append(0, "x".repeat(256))).toBe(false)
    expect(ring.lines(0)).toStrictEqual([])
    expect(ring.append(1, "y".repeat(100))).toBe(true)
    expect(ring.append(1, "z".repeat(200))).toBe(false)
    expect(overwritten).toStrictEqual([1])
    expect(ring.lines(1)).toStrictEqual([])
  })

  it("keeps every live slot readable over many laps of uneven records", () => {
    const slots = 50
    const { ring, overwritten } = ringOf(8192, slots)
    const expected = new Map<number, Array<string>>()
    let lost = 0
    let seq = 0
    for (let i = 0; i < 5000; i++) {
      const slot = (i * 7) % slots
      if (i % 11 === 0) {
        ring.clear(slot)
        expected.set(slot, [])
      }
      const text = `${slot}:${seq++}:${"w".repeat((i * 13) % 150)}`
      if (ring.append(slot, text)) expected.set(slot, [...(expected.get(slot) ?? []), text])
      for (const slot of overwritten.splice(0)) {
        lost++
        expected.set(slot, [])
      }
    }
    // The buffer turned over many times, and traces were lost to it, not only to clear().
    expect(lost).toBeGreaterThan(100)
    for (let slot = 0; slot < slots; slot++) expect(ring.lines(slot)).toStrictEqual(expected.get(slot) ?? [])
  })

  /** A trace's one packed span of 750 bytes with its header (about what a sidecar B keeps). */
  const span = (n: number) => `${n}:`.padEnd(750 - 16, "s")
  const KiB = 1024

  it("writes only as far as its live traces need: 1,000 traces of 750 bytes wrap within 1 MiB of a 2 MiB budget, none lost", () => {
    const slots = 1000
    const { ring, overwritten } = ringOf(2048 * KiB, slots)
    expect(ring.reach).toBe(256 * KiB)
    // The store's way: a new trace takes the oldest trace's slot, which is cleared first.
    for (let n = 0; n < 5000; n++) {
      if (n >= slots) ring.clear(n % slots)
      expect(ring.append(n % slots, span(n))).toBe(true)
    }
    expect(ring.reach).toBe(1024 * KiB)
    expect(overwritten).toStrictEqual([])
    for (let n = 4000; n < 5000; n++) expect(ring.lines(n % slots)).toStrictEqual([span(n)])
  })

  it("grows to its whole budget when its live traces need it, then overwrites the oldest first as before", () => {
    // 1,000 live traces of 750 bytes do not fit in 600 KiB.
    const { ring, overwritten } = ringOf(600 * KiB, 1000)
    for (let n = 0; n < 1000; n++) ring.append(n, span(n))
    expect(ring.reach).toBe(600 * KiB)
    expect(overwritten.length).toBeGreaterThan(100)
    expect(overwritten).toStrictEqual([...overwritten].sort((a, b) => a - b))
    expect(ring.lines(999)).toStrictEqual([span(999)])
  })

  it("takes a record larger than where it wraps now, after overwriting what is in the way", () => {
    const { ring, overwritten } = ringOf(1024 * KiB, 4)
    for (let n = 0; n < 3; n++) ring.append(n, span(n))
    const large = "L".repeat(300 * KiB)
    expect(ring.append(3, large)).toBe(true)
    expect(ring.reach).toBe(512 * KiB)
    expect(ring.lines(3)).toStrictEqual([large])
    expect(ring.lines(0)).toStrictEqual([span(0)])
    expect(overwritten).toStrictEqual([])
  })
})
