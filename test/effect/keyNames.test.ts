// The distinct key names the RPC server's pre-decode scans count (src/effect/keyNames.ts, through
// jsonFrame.ts and msgpack.ts): on random frames whose names repeat in and across objects, in
// orders of their own, as prefixes of each other, at every depth, the JSON and the MessagePack scan
// must both pass a bound of exactly the names the parsed value holds and refuse one less. A name
// known at its place (the shortcut records take) must be the same bytes, not a prefix of them. In
// a Request (the RPC server's scans), only its payloads' names count. The same for object shapes
// (in MessagePack every distinct sequence of keys an object begins with, to its 1,020th key; in
// JSON each prefix of an object's named keys under its count of them, to 127): both scans pass a
// bound of exactly the shapes the parsed value's objects make and refuse one less, whichever order
// the records come in.
import { describe, expect, it } from "@effect/vitest"
import { Packr } from "msgpackr"
import { plainJsonProblem } from "../../src/effect/jsonFrame.ts"
import { plainMessagePackProblem } from "../../src/effect/msgpack.ts"
import { prng } from "../helpers/prng.ts"

type Random = () => number
const pick = <A>(r: Random, items: ReadonlyArray<A>): A => items[Math.floor(r() * items.length)]!

// Names that are prefixes of each other, share fingerprints (length, first, middle, last byte) or
// are empty, and long ones past the JSON scan's 32-byte short loop.
const names = ["", "a", "ab", "abc", "abd", "ba", "id", "name", "nome", "email", "x".repeat(40), `${"x".repeat(39)}y`, "é", "漢字", "__proto__"]

const value = (r: Random, depth: number): unknown => {
  const roll = r()
  if (depth > 0 && roll < 0.3) return Array.from({ length: Math.floor(r() * 4) }, () => value(r, depth - 1))
  if (depth > 0 && roll < 0.7) {
    // Records of one shape now and then (the known-at-its-place shortcut), else keys at random.
    const keys = r() < 0.5 ? names.slice(0, 1 + Math.floor(r() * 6)) : Array.from({ length: Math.floor(r() * 6) }, () => pick(r, names))
    return Object.fromEntries(keys.map((k) => [r() < 0.1 ? `${k}${Math.floor(r() * 1000)}` : k, value(r, depth - 1)]))
  }
  return pick(r, [0, "s", true, null])
}

/** The distinct key names of a parsed value. */
const namesOf = (v: unknown, into = new Set<string>()): Set<string> => {
  if (Array.isArray(v)) for (const item of v) namesOf(item, into)
  else if (typeof v === "object" && v !== null) {
    for (const [k, item] of Object.entries(v)) {
      into.add(k)
      namesOf(item, into)
    }
  }
  return into
}

/** The object shapes of a parsed value: each distinct prefix of each object's keys, to the 1,020th. */
const shapesOf = (v: unknown, into = new Set<string>()): Set<string> => {
  if (Array.isArray(v)) for (const item of v) shapesOf(item, into)
  else if (typeof v === "object" && v !== null) {
    let shape = ""
    for (const [i, [k, item]] of Object.entries(v).entries()) {
      // JSON.stringify of a key: no name is a prefix of another's spelling.
      shape += JSON.stringify(k)
      if (i < 1020) into.add(shape)
      shapesOf(item, into)
    }
  }
  return into
}

/** Whether JSON.parse makes the key an element (an array index), not a property. */
const isIndex = (k: string): boolean => /^(0|[1-9][0-9]*)$/.test(k) && Number(k) < 2 ** 32 - 1

/**
 * The object shapes JSON.parse builds: each prefix of an object's named keys (its array indices
 * are elements) under its count of named keys, up to 127 (more: a dictionary), and under a second
 * root when it holds elements (V8's map of dictionary elements, when they are sparse).
 */
const jsonShapesOf = (v: unknown, into = new Set<string>()): Set<string> => {
  if (Array.isArray(v)) for (const item of v) jsonShapesOf(item, into)
  else if (typeof v === "object" && v !== null) {
    const keys = Object.keys(v)
    const named = keys.filter((k) => !isIndex(k))
    if (named.length <= 127) {
      for (const root of keys.length > named.length ? [0, 1] : [0]) {
        for (let i = 1; i <= named.length; i++) into.add(`${named.length} ${root} ${JSON.stringify(named.slice(0, i))}`)
      }
    }
    for (const item of Object.values(v)) jsonShapesOf(item, into)
  }
  return into
}

const packr = new Packr({ useRecords: false })
const json = (bytes: Uint8Array, max: number) => plainJsonProblem(bytes, { request: false, maxValues: Infinity, maxDistinctKeys: max })
const pack = (bytes: Uint8Array, max: number) => plainMessagePackProblem(bytes, { request: false, maxValues: Infinity, maxDistinctKeys: max })
const refusal = (max: number) => `holds a Request with more than ${max} distinct key names`
const jsonShapes = (bytes: Uint8Array, max: number) => plainJsonProblem(bytes, { request: false, maxValues: Infinity, maxObjectShapes: max })
const packShapes = (bytes: Uint8Array, max: number) => plainMessagePackProblem(bytes, { request: false, maxValues: Infinity, maxObjectShapes: max })
const shapeRefusal = (max: number) => `holds a Request with more than ${max} object shapes`

describe("distinct key names in the pre-decode scans", () => {
  it("random frames: both scans pass exactly the names the parsed value holds and refuse one less", () => {
    for (let seed = 1; seed <= 3000; seed++) {
      const r = prng(seed).next
      // A list of records or one value: the scans see the same names at several depths.
      const frame = r() < 0.5 ? Array.from({ length: 1 + Math.floor(r() * 20) }, () => value(r, 3)) : value(r, 5)
      const text = JSON.stringify(frame)
      const count = namesOf(JSON.parse(text)).size
      const bytes = [Buffer.from(text), packr.pack(frame)]
      for (const [scan, framed] of [[json, bytes[0]!], [pack, bytes[1]!]] as const) {
        expect(scan(framed, Math.max(count, 1)), `seed ${seed}: ${text}`).toBeUndefined()
        if (count > 1) expect(scan(framed, count - 1), `seed ${seed}: ${text}`).toBe(refusal(count - 1))
      }
    }
  })

  it("a key known at its place must be all its bytes: a longer or shorter one is a new name", () => {
    for (const [text, count] of [
      [`[{"ab":0},{"abc":0}]`, 2],
      [`[{"abc":0},{"ab":0}]`, 2],
      [`[{"ab":0},{"ab":0},{"ab":0}]`, 1],
      // The known key `x\\` (an escaped backslash): the quote after it ends this one too.
      [String.raw`[{"x\\":0},{"x\\":1}]`, 1],
      // The known key `x\"` then one that goes on past it: `x\"y`.
      [String.raw`[{"x\"":0},{"x\"y":1}]`, 2],
      // Spaces between a key and its colon, and the next key on another line.
      [`[{ "ab" : 0 ,\n "cd":1},{"ab":0,"cd" :1}]`, 2]
    ] as const) {
      expect(json(Buffer.from(text), count), text).toBeUndefined()
      expect(json(Buffer.from(text), count - 1 || 1), text).toBe(count > 1 ? refusal(count - 1) : undefined)
    }
  })

  it("a name is its bytes as sent: a JSON escape makes another spelling (refusing sooner, never later)", () => {
    const text = String.raw`[{"a":0},{"\u0061":0}]`
    expect(json(Buffer.from(text), 2)).toBeUndefined()
    expect(json(Buffer.from(text), 1)).toBe(refusal(1))
  })

  it("in a Request, only the payloads' names count: outside them the values bound holds a few thousand keys", () => {
    const message = (payload: unknown) => ({ _tag: "Request", id: "1", tag: "T", headers: [["h", "v"]], extra: { a: 0, b: { c: 0 } }, payload })
    for (const [frame, count] of [[message({ p: 0 }), 1], [message({ p: { q: 0, p: 0 } }), 2], [[message({ p: 0 }), message({ q: 0 })], 2]] as const) {
      const text = Buffer.from(JSON.stringify(frame))
      const packed = packr.pack(frame)
      expect(plainJsonProblem(text, { request: true, maxValues: Infinity, maxDistinctKeys: count })).toBeUndefined()
      expect(plainMessagePackProblem(packed, { request: true, maxValues: Infinity, maxDistinctKeys: count })).toBeUndefined()
      if (count > 1) {
        expect(plainJsonProblem(text, { request: true, maxValues: Infinity, maxDistinctKeys: count - 1 })).toBe(refusal(count - 1))
        expect(plainMessagePackProblem(packed, { request: true, maxValues: Infinity, maxDistinctKeys: count - 1 })).toBe(refusal(count - 1))
      }
    }
  })

  it("a MessagePack key that is no string counts as a new name each time", () => {
    // Three maps of the one key 1 (positive fixint): three names.
    const maps = Buffer.from([0x93, 0x81, 0x01, 0x00, 0x81, 0x01, 0x00, 0x81, 0x01, 0x00])
    expect(pack(maps, 3)).toBeUndefined()
    expect(pack(maps, 2)).toBe(refusal(2))
  })

  it("300,000 names (the table grown from 1,024 slots) are counted exactly; the next scan starts from none", () => {
    const many = Object.fromEntries(Array.from({ length: 300_000 }, (_, i) => [`n${i}`, 0]))
    const text = Buffer.from(JSON.stringify([many, many]))
    const packed = new Packr({ useRecords: false, variableMapSize: true }).pack([many, many])
    for (const [scan, framed] of [[json, text], [pack, packed]] as const) {
      expect(scan(framed, 300_000)).toBeUndefined()
      expect(scan(framed, 299_999)).toBe(refusal(299_999))
    }
    expect(json(Buffer.from(`{"n1":0}`), 1)).toBeUndefined()
    expect(pack(packr.pack({ n1: 0 }), 1)).toBeUndefined()
  })
})

describe("names moved out of a Request's payload", () => {
  // 4,000 distinct names: under the names bound, over what the values bound leaves outside the
  // payload (6,064 values, 3,032 keys). Wherever a peer puts them that the scans do not take for
  // the payload, the decoder still builds them, so they must be refused there.
  const keys = Object.fromEntries(Array.from({ length: 4000 }, (_, i) => [`o${i}`, 0]))
  const keysText = JSON.stringify(keys)
  // Every other name: two messages of a frame share the values bound outside the payloads.
  const half = (h: number) => Object.fromEntries(Object.keys(keys).filter((_, i) => i % 2 === h).map((k) => [k, 0]))
  const outsideRefusal = /more than 6064 values outside its payload|more than 2000 headers/
  const request = (fields: string) => Buffer.from(`{"_tag":"Request","id":"1","tag":"T","headers":[],${fields}}`)

  it("JSON: an escaped payload key (JSON.parse reads `payload`), an unknown field, headers, an unknown tag, a nested list, two messages' halves", () => {
    for (const frame of [
      request(String.raw`"p\u0061yload":${keysText}`),
      request(`"extra":${keysText},"payload":{}`),
      Buffer.from(`{"_tag":"Request","id":"1","tag":"T","headers":${JSON.stringify(Object.keys(keys).map((k) => [k, "v"]))},"payload":{}}`),
      Buffer.from(`{"_tag":"Unknown","x":${keysText}}`),
      Buffer.from(`[[{"_tag":"Request","payload":${keysText}}]]`),
      Buffer.from(JSON.stringify([{ _tag: "Request", extra: half(0) }, { _tag: "Request", extra: half(1) }]))
    ]) {
      expect(() => JSON.parse(frame.toString())).not.toThrow()
      expect(plainJsonProblem(frame, { request: true, maxValues: Infinity, maxDistinctKeys: 55_000 }), frame.toString().slice(0, 80)).toMatch(outsideRefusal)
    }
  })

  it("MessagePack: an unknown field, headers, an unknown tag, two messages' halves", () => {
    // (A key packed as bytes is no way round: msgpackr refuses a map of one, mapsAsObjects.)
    for (const frame of [
      packr.pack({ _tag: "Request", id: "1", tag: "T", headers: [], extra: keys, payload: {} }),
      packr.pack({ _tag: "Request", id: "1", tag: "T", headers: Object.keys(keys).map((k) => [k, "v"]), payload: {} }),
      packr.pack({ _tag: "Unknown", x: keys }),
      packr.pack([{ _tag: "Request", extra: half(0) }, { _tag: "Request", extra: half(1) }])
    ]) expect(plainMessagePackProblem(frame, { request: true, maxValues: Infinity, maxDistinctKeys: 55_000 })).toMatch(outsideRefusal)
  })
})

describe("object shapes in the pre-decode scans", () => {
  it("random frames: both scans pass exactly the shapes the parsed value holds and refuse one less, names bounded or not", () => {
    for (let seed = 1; seed <= 3000; seed++) {
      const r = prng(seed).next
      const frame = r() < 0.5 ? Array.from({ length: 1 + Math.floor(r() * 20) }, () => value(r, 3)) : value(r, 5)
      const text = JSON.stringify(frame)
      const names = namesOf(JSON.parse(text)).size
      for (const [bytes, scan, count] of [[Buffer.from(text), plainJsonProblem, jsonShapesOf(JSON.parse(text)).size], [packr.pack(frame), plainMessagePackProblem, shapesOf(JSON.parse(text)).size]] as const) {
        for (const maxDistinctKeys of [Infinity, Math.max(names, 1)]) {
          const check = (max: number) => scan(bytes, { request: false, maxValues: Infinity, maxDistinctKeys, maxObjectShapes: max })
          expect(check(Math.max(count, 1)), `seed ${seed}: ${text}`).toBeUndefined()
          if (count > 1) expect(check(count - 1), `seed ${seed}: ${text}`).toBe(shapeRefusal(count - 1))
        }
      }
    }
  })

  it("records of two types taking turns, or in one order after others, are counted once; each new order is new shapes", () => {
    const rows = (orders: ReadonlyArray<ReadonlyArray<string>>, n: number) => Array.from({ length: n }, (_, i) => Object.fromEntries(orders[i % orders.length]!.map((k) => [k, i])))
    // [frame, JSON's shapes, MessagePack's]
    for (const [frame, json, pack] of [
      // a, ab, abc; b, ba, bac
      [rows([["a", "b", "c"], ["b", "a", "c"]], 1000), 6, 6],
      // Shorter records between longer ones: a, ab, abc, abcd; JSON.parse builds a and ab again from
      // its map for objects of two keys.
      [rows([["a", "b", "c", "d"], ["a", "b"]], 1000), 6, 4],
      // The same names nested one level down share the shapes above (in JSON, as long as the count is the same).
      [[...rows([["a", "b"]], 10), { a: { a: 0, b: 0 } }], 3, 2],
      [[...rows([["a", "b"]], 10), { a: { a: 0 }, b: 0 }], 3, 2]
    ] as const) {
      for (const [scan, bytes, count] of [[jsonShapes, Buffer.from(JSON.stringify(frame)), json], [packShapes, packr.pack(frame), pack]] as const) {
        expect(scan(bytes, count)).toBeUndefined()
        expect(scan(bytes, count - 1)).toBe(shapeRefusal(count - 1))
      }
    }
  })

  it("JSON: an object's shapes are counted under its count of named keys (one order cut at every length is a tree per length)", () => {
    const order = Array.from({ length: 127 }, (_, i) => `f${i}`)
    const cuts = Array.from({ length: 127 }, (_, l) => Object.fromEntries(order.slice(0, l + 1).map((k) => [k, 0])))
    const bytes = Buffer.from(JSON.stringify(cuts))
    // JSON.parse: 1 + 2 + ... + 127 maps; msgpackr builds every object from the one empty object: 127.
    expect(jsonShapes(bytes, 8128)).toBeUndefined()
    expect(jsonShapes(bytes, 8127)).toBe(shapeRefusal(8127))
    expect(packShapes(packr.pack(cuts), 127)).toBeUndefined()
  })

  it("JSON: array indices, plain or escaped, are no named keys; a second root counts for an object that holds them; 128 named keys make a dictionary", () => {
    const text = (keys: ReadonlyArray<string>) => Buffer.from(`{${keys.map((k) => `"${k}":0`).join(",")}}`)
    // a under one key: 1; with elements (plain, escaped, the largest index) under both roots: 2.
    for (const keys of [["a"], ["1", "a"], ["a", "1"], ["a", "\\u0031"], ["a", "4294967294"], ["0", "a"]]) {
      const count = keys.length === 1 ? 1 : 2
      expect(jsonShapes(text(keys), count), keys.join()).toBeUndefined()
      if (count > 1) expect(jsonShapes(text(keys), count - 1), keys.join()).toBe(shapeRefusal(count - 1))
    }
    // Not indices: a leading zero, 2^32 - 1, a sign, an escape of another character: a, ak (two keys).
    for (const k of ["01", "4294967295", "-1", "1.0", "\\u0061", "12345678901"]) {
      expect(jsonShapes(text(["a", k]), 2), k).toBeUndefined()
      expect(jsonShapes(text(["a", k]), 1), k).toBe(shapeRefusal(1))
    }
    const named = (n: number) => Array.from({ length: n }, (_, i) => `n${i}`)
    expect(jsonShapes(text(named(127)), 127)).toBeUndefined()
    expect(jsonShapes(text(named(127)), 126)).toBe(shapeRefusal(126))
    expect(jsonShapes(text(named(128)), 1)).toBeUndefined()
    // 127 named keys and an index are still fast: both roots.
    expect(jsonShapes(text([...named(127), "7"]), 254)).toBeUndefined()
    expect(jsonShapes(text([...named(127), "7"]), 253)).toBe(shapeRefusal(253))
  })

  it("keys that make no transition of their own count as if they did (never fewer than V8 builds): a duplicate, msgpackr's __proto__ (read as __proto_)", () => {
    // JSON.parse roots {"a","a"} at the map for two keys: (2, a), (2, a a), where V8 has one.
    expect(jsonShapes(Buffer.from(`{"a":0,"a":1}`), 2)).toBeUndefined()
    expect(jsonShapes(Buffer.from(`{"a":0,"a":1}`), 1)).toBe(shapeRefusal(1))
    // msgpackr reads both keys as __proto_ (one shape); counted as two.
    const proto = Buffer.concat([Buffer.from([0x92, 0x81, 0xa9]), Buffer.from("__proto__"), Buffer.from([0x00, 0x81, 0xa8]), Buffer.from("__proto_"), Buffer.from([0x00])])
    expect(packShapes(proto, 2)).toBeUndefined()
    expect(packShapes(proto, 1)).toBe(shapeRefusal(1))
  })

  it("a MessagePack object's keys past its 1,020th make no shape (a JSON one's past its 127th none at all); a MessagePack key that is no string is a new shape each time", () => {
    const wide = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`n${i}`, 0]))
    const bytes = new Packr({ useRecords: false, variableMapSize: true }).pack([wide, wide])
    expect(packShapes(bytes, 1020)).toBeUndefined()
    expect(packShapes(bytes, 1019)).toBe(shapeRefusal(1019))
    expect(jsonShapes(Buffer.from(JSON.stringify([wide, wide])), 1)).toBeUndefined()
    // Three maps of the one key 1 (positive fixint), then one of the key 1 and "a".
    const maps = Buffer.from([0x94, 0x81, 0x01, 0x00, 0x81, 0x01, 0x00, 0x81, 0x01, 0x00, 0x82, 0x01, 0x00, 0xa1, 0x61, 0x00])
    expect(packShapes(maps, 5)).toBeUndefined()
    expect(packShapes(maps, 4)).toBe(shapeRefusal(4))
  })
})
