// MetaEntries (src/protocol/metaEntries.ts), the metadata envelopes decode into and the sidecar
// builds: a Map's behaviour (first-set order, a repeated key replaces its value, iteration) in
// fields up to four entries and in a Map past them; a peer's block of many entries, repeated keys
// among them, decodes with a Map's result.
import { describe, expect, it } from "vitest"
import { decodeEnvelope, emptyMeta, encodeEnvelope, encodeTrailersChunk } from "../../src/protocol/mesh.ts"
import { MetaEntries } from "../../src/protocol/metaEntries.ts"

/** The same operations on a MetaEntries and a Map, compared entry by entry after each. */
const sameAsMap = (operations: ReadonlyArray<readonly [string, string]>): void => {
  const entries = new MetaEntries()
  const map = new Map<string, string>()
  for (const [key, value] of operations) {
    expect(entries.set(key, value)).toBe(entries)
    map.set(key, value)
    expect([...entries]).toStrictEqual([...map])
    expect(entries.size).toBe(map.size)
  }
  for (const [key] of operations) {
    expect(entries.get(key)).toBe(map.get(key))
    expect(entries.has(key)).toBe(true)
  }
  expect(entries.get("absent")).toBeUndefined()
  expect(entries.has("absent")).toBe(false)
  const walked: Array<[string, string]> = []
  const receiver = { walked }
  entries.forEach(function (this: typeof receiver, value, key, whole) {
    this.walked.push([key, value])
    expect(whole).toBe(entries)
  }, receiver)
  expect(walked).toStrictEqual([...map])
  expect([...entries.keys()]).toStrictEqual([...map.keys()])
  expect([...entries.values()]).toStrictEqual([...map.values()])
  expect([...entries.entries()]).toStrictEqual([...map.entries()])
}

describe("MetaEntries", () => {
  it("behaves as a Map in its fields: order kept, a repeated key replaced in place", () => {
    sameAsMap([])
    sameAsMap([[":status", "200"], ["http-headers", "[]"]])
    sameAsMap([[":method", "GET"], [":authority", "a"], ["http-headers", "[]"], ["deadline-ms", "5"], [":method", "POST"], ["deadline-ms", "7"]])
  })

  it("behaves as a Map past four entries (they move into one), a repeated key still replaced", () => {
    sameAsMap([["a", "1"], ["b", "2"], ["c", "3"], ["d", "4"], ["e", "5"], ["b", "20"], ["f", "6"], ["e", "50"]])
  })

  it("a forEach sees a set made during it, as a Map's does, also when that set moves the entries into a Map", () => {
    const walk = (meta: { set(key: string, value: string): unknown; forEach(callback: (value: string, key: string) => void): void }) => {
      for (const key of ["a", "b", "c", "d"]) meta.set(key, key)
      const seen: Array<string> = []
      meta.forEach((value, key) => {
        seen.push(`${key}=${value}`)
        // "e" is the fifth key: the entries move into a Map with "b" still ahead of the walk.
        if (key === "a") {
          meta.set("e", "e")
          meta.set("b", "B")
        }
      })
      return seen
    }
    expect(walk(new MetaEntries())).toStrictEqual(walk(new Map<string, string>()))
    expect(walk(new MetaEntries())).toStrictEqual(["a=a", "b=B", "c=c", "d=d", "e=e"])
  })

  it("an envelope's metadata decodes into one with the entries encoded, and encodes again to the same bytes", () => {
    const meta = new MetaEntries().set(":method", "POST").set(":authority", "echo").set("http-headers", '[["x","1"]]')
    const data = encodeEnvelope(1, 0, 7, meta, Buffer.from("hi"), 8192, 1500)
    const decoded = decodeEnvelope(data, 8192).meta
    expect(decoded).toBeInstanceOf(MetaEntries)
    expect([...decoded]).toStrictEqual([[":method", "POST"], [":authority", "echo"], ["http-headers", '[["x","1"]]'], ["deadline-ms", "1500"]])
    expect(encodeEnvelope(1, 0, 7, decoded, Buffer.from("hi"), 8192)).toStrictEqual(data)
  })

  it("an empty block decodes to the same type as a non-empty one, and the shared empty one cannot be changed", () => {
    const empty = decodeEnvelope(encodeEnvelope(1, 0, 7, new Map(), Buffer.from("hi"), 8192), 8192).meta
    const full = decodeEnvelope(encodeEnvelope(1, 0, 7, new Map([[":status", "200"]]), Buffer.from("hi"), 8192), 8192).meta
    expect(empty).toBeInstanceOf(MetaEntries)
    expect(full).toBeInstanceOf(MetaEntries)
    expect(empty).not.toBeInstanceOf(Map)
    expect(Object.prototype.toString.call(empty)).toBe(Object.prototype.toString.call(full))
    expect(empty.size).toBe(0)
    expect([...empty]).toStrictEqual([])
    expect(empty).toBe(emptyMeta)
    // Every empty block shares it, so a caller that casts it to set on it must not change it for the others.
    expect(() => (emptyMeta as MetaEntries).set("x", "1")).toThrow(TypeError)
    expect(emptyMeta.size).toBe(0)
    expect(emptyMeta.get("x")).toBeUndefined()
  })

  it("encodes byte for byte as a Map of the same sets does, in fields and past them, its own deadline entry replaced or kept", () => {
    const sets: ReadonlyArray<readonly [string, string]> = [
      [":method", "POST"], ["deadline-ms", "900"], [":authority", "echo"], ["http-headers", '[["é","ключ"]]'], [":method", "GET"], ["x-a", "1"], ["x-b", ""]
    ]
    for (let n = 0; n <= sets.length; n++) {
      const entries = new MetaEntries()
      const map = new Map<string, string>()
      for (const [key, value] of sets.slice(0, n)) {
        entries.set(key, value)
        map.set(key, value)
      }
      for (const deadlineMs of [0, 1500]) expect(encodeEnvelope(1, 0, 7, entries, Buffer.from("hi"), 8192, deadlineMs)).toStrictEqual(encodeEnvelope(1, 0, 7, map, Buffer.from("hi"), 8192, deadlineMs))
      expect(encodeTrailersChunk(entries, 8192)).toStrictEqual(encodeTrailersChunk(map, 8192))
    }
  })

  it("a peer's block of 4,000 entries over 1,000 keys decodes as a Map would: each key once, in first-set order, its last value", () => {
    const big = new Map<string, string>()
    const order: Array<[string, string]> = []
    for (let i = 0; i < 4000; i++) order.push([`k${i % 1000}`, `v${i}`])
    for (const [key, value] of order) big.set(key, value)
    // Encoded by hand: encodeEnvelope takes a Meta, which cannot hold a key twice.
    const entries = order.map(([key, value]) => Buffer.concat([Buffer.from([key.length]), Buffer.from(key), Buffer.from([0, value.length]), Buffer.from(value)]))
    const block = Buffer.concat(entries)
    const head = Buffer.alloc(8)
    head[0] = 1
    head.writeUInt16BE(block.length, 2)
    head.writeUInt32BE(9, 4)
    const data = Buffer.concat([head, block])
    const decoded = decodeEnvelope(data, 65535).meta
    expect([...decoded]).toStrictEqual([...big])
    expect(decoded.size).toBe(1000)
    expect(decoded.get("k999")).toBe("v3999")
  })
})
