// Every bound of the HPACK decoder against blocks written to break it (integers, string lengths,
// indexes, size updates, the header-list budget, Huffman EOS and padding, malformed fields), and a
// seeded mutation fuzz: whatever the octets, decode returns a list or one of its two typed errors.
import { describe, expect, it } from "vitest"
import { HpackDecoder } from "../../src/h2/hpackDecoder.ts"
import { HeaderListRejected, HpackError } from "../../src/h2/hpackTables.ts"
import { hpackInt, hpackString, HpackEncoder as WireEncoder } from "../helpers/h2Wire.ts"
import { prng } from "../helpers/prng.ts"

const bytes = (...parts: ReadonlyArray<number | ReadonlyArray<number>>): Buffer => Buffer.from(parts.flat())
const literal = (name: string, value: string, first = 0x00): Array<number> => [first, ...hpackString(name, false), ...hpackString(value, false)]

const reason = (result: unknown): string => {
  if (result instanceof HpackError || result instanceof HeaderListRejected) return `${result._tag}:${result.reason}`
  throw new Error(`expected an error, got ${JSON.stringify(result)}`)
}

const expectFatal = (decoder: HpackDecoder, block: Buffer, why: string): void => {
  expect(reason(decoder.decode(block))).toBe(`HpackError:${why}`)
  // The decoder is unusable from then on: a valid block gets the same error.
  expect(reason(decoder.decode(bytes(0x82)))).toBe(`HpackError:${why}`)
}

describe("HpackDecoder bounds", () => {
  it("refuses an integer with more than 4 continuation octets, and one cut short", () => {
    expectFatal(new HpackDecoder(), bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), "integer-too-long")
    expectFatal(new HpackDecoder(), bytes(0xff, 0x80, 0x80), "integer-truncated")
    // 4 continuation octets is the most: 127 + 2^28 - 1 is decoded (then out of range as an index).
    expectFatal(new HpackDecoder(), bytes(0xff, 0xff, 0xff, 0xff, 0x7f), "index-out-of-range")
  })

  it("checks a string's length against the rest of the block before reading it", () => {
    expectFatal(new HpackDecoder(), bytes(0x00, 0x05, 0x61), "string-past-block-end")
    // A length near 2^28 in a 7-octet block: refused, nothing allocated for it.
    expectFatal(new HpackDecoder(), bytes(0x00, hpackInt(2 ** 28, 7, 0)), "string-past-block-end")
    expectFatal(new HpackDecoder(), bytes(0x00, 0x01, 0x61, 0x02, 0x62), "string-past-block-end")
  })

  it("refuses index 0 and indexes past the static and dynamic tables", () => {
    expectFatal(new HpackDecoder(), bytes(0x80), "index-zero")
    expectFatal(new HpackDecoder(), bytes(0xbe), "index-out-of-range")
    expectFatal(new HpackDecoder(), bytes(0x7e, 0x01, 0x61), "index-out-of-range")
    const decoder = new HpackDecoder()
    expect(decoder.decode(bytes(literal("x-a", "1", 0x40)))).toStrictEqual(["x-a", "1"])
    expect(decoder.decode(bytes(0xbe, 0x7e, 0x01, 0x32))).toStrictEqual(["x-a", "1", "x-a", "2"])
    // Now two entries: index 63 is "x-a: 1", 64 is past them.
    expect(decoder.decode(bytes(0xbf))).toStrictEqual(["x-a", "1"])
    expectFatal(decoder, bytes(0xc0), "index-out-of-range")
  })

  it("takes size updates at a block's start only, and never above the limit we announced", () => {
    const decoder = new HpackDecoder({ maxTableSize: 100 })
    expect(decoder.decode(bytes(literal("x-a", "1", 0x40)))).toStrictEqual(["x-a", "1"])
    expect(decoder.tableSize).toBe(36)
    // Two updates at the start (down to 0, which empties the table, then back to the limit) are allowed.
    expect(decoder.decode(bytes(0x20, hpackInt(100, 5, 0x20), 0x82))).toStrictEqual([":method", "GET"])
    expect(decoder.tableSize).toBe(0)
    expectFatal(new HpackDecoder({ maxTableSize: 100 }), bytes(hpackInt(101, 5, 0x20)), "size-update-above-limit")
    expectFatal(new HpackDecoder(), bytes(hpackInt(4097, 5, 0x20)), "size-update-above-limit")
    expectFatal(new HpackDecoder(), bytes(0x82, 0x20), "size-update-mid-block")
  })

  it("after a lowered limit, requires a size update within it at the next block's start", () => {
    const lowered = (): HpackDecoder => {
      const decoder = new HpackDecoder()
      expect(decoder.decode(bytes(literal("x-a", "1", 0x40)))).toStrictEqual(["x-a", "1"])
      decoder.setTableSizeLimit(64)
      return decoder
    }
    expectFatal(lowered(), bytes(0x82), "size-update-missing")
    expectFatal(lowered(), bytes(hpackInt(65, 5, 0x20), 0x82), "size-update-above-limit")
    const decoder = lowered()
    expect(decoder.decode(bytes(hpackInt(64, 5, 0x20), 0xbe))).toStrictEqual(["x-a", "1"])
    expect(decoder.decode(bytes(0x82))).toStrictEqual([":method", "GET"])
    // Raised again (up to the constructor's limit), no update is owed.
    decoder.setTableSizeLimit(4096)
    expect(decoder.decode(bytes(0xbe))).toStrictEqual(["x-a", "1"])
    expect(() => decoder.setTableSizeLimit(4097)).toThrow(RangeError)
  })

  it("evicts to a lowered size, and an entry larger than the table empties it", () => {
    const decoder = new HpackDecoder({ maxTableSize: 100 })
    decoder.decode(bytes(literal("x-a", "1", 0x40), literal("x-b", "2", 0x40)))
    expect(decoder.tableEntries()).toStrictEqual(["x-b", "2", "x-a", "1"])
    expect(decoder.decode(bytes(hpackInt(40, 5, 0x20)))).toStrictEqual([])
    expect(decoder.tableEntries()).toStrictEqual(["x-b", "2"])
    expect(decoder.decode(bytes(literal("x-c", "v".repeat(10), 0x40)))).toStrictEqual(["x-c", "v".repeat(10)])
    expect([decoder.tableEntries(), decoder.tableSize]).toStrictEqual([[], 0])
  })

  it("refuses a header list over its budget but stays in step with the peer's table", () => {
    const decoder = new HpackDecoder({ maxHeaderListSize: 100 })
    // 3 fields of 36 octets each: 108 > 100. The third is added to the table all the same.
    const result = decoder.decode(bytes(literal("x-a", "1"), literal("x-b", "2"), literal("x-c", "3", 0x40)))
    expect(reason(result)).toBe("HeaderListRejected:header-list-too-large")
    expect(decoder.decode(bytes(0xbe))).toStrictEqual(["x-c", "3"])
    expect(decoder.decode(bytes(literal("x-a", "1"), literal("x-b", "2")))).toStrictEqual(["x-a", "1", "x-b", "2"])
  })

  it("refuses Huffman strings with EOS, padding over 7 bits or padding not all ones", () => {
    const huffman = (...coded: Array<number>): Buffer => bytes(0x00, 0x01, 0x61, 0x80 | coded.length, coded)
    // 'a' is 00011: with 111 padding it is the octet 0x1f.
    expect(new HpackDecoder().decode(huffman(0x1f))).toStrictEqual(["a", "a"])
    expectFatal(new HpackDecoder(), huffman(0x18), "huffman-invalid")
    expectFatal(new HpackDecoder(), huffman(0x1f, 0xff), "huffman-invalid")
    // '&' is 11111000 (8 bits): alone it is a string, with a whole octet of ones after it 8 bits of padding.
    expect(new HpackDecoder().decode(huffman(0xf8))).toStrictEqual(["a", "&"])
    expectFatal(new HpackDecoder(), huffman(0xf8, 0xff), "huffman-invalid")
    expectFatal(new HpackDecoder(), huffman(0xff, 0xff, 0xff, 0xff), "huffman-invalid")
    // EOS (30 ones) after 'a': 00011 + 30 ones + 5 ones of padding.
    expectFatal(new HpackDecoder(), huffman(0x1f, 0xff, 0xff, 0xff, 0xff), "huffman-invalid")
  })

  it("refuses malformed names and values (RFC 9113 8.2.1) as a stream error, then decodes on", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["X-Upper", "1"], ["", "1"], [":", "1"], ["a b", "1"], ["a:b", "1"], ["x\u00e9", "1"],
      ["x-a", "a\r\nb"], ["x-a", "a\u0000"], ["x-a", " lead"], ["x-a", "trail\t"]
    ]
    for (const [name, value] of cases) {
      const decoder = new HpackDecoder()
      expect([name, value, reason(decoder.decode(bytes(literal(name, value, 0x40))))]).toStrictEqual([name, value, "HeaderListRejected:malformed-field"])
      // The entry went into the table; a reference to it is refused too, other fields are not.
      expect(reason(decoder.decode(bytes(0xbe)))).toBe("HeaderListRejected:malformed-field")
      expect(decoder.decode(bytes(0x82))).toStrictEqual([":method", "GET"])
    }
    // A value that is fine but for its name: the name is refused when reused, a good name with a bad value is not.
    const decoder = new HpackDecoder()
    decoder.decode(bytes(literal("x-a", "bad\n", 0x40)))
    expect(decoder.decode(bytes(0x7e, 0x02, 0x6f, 0x6b))).toStrictEqual(["x-a", "ok"])
    // A bad name with a good value: its name reused with another good value is refused.
    const badName = new HpackDecoder()
    expect(reason(badName.decode(bytes(literal("X-Upper", "1", 0x40))))).toBe("HeaderListRejected:malformed-field")
    expect(reason(badName.decode(bytes(0x7e, 0x02, 0x6f, 0x6b)))).toBe("HeaderListRejected:malformed-field")
    // Octets 0x80-0xff and inner spaces are fine in values, kept as latin1.
    expect(new HpackDecoder().decode(bytes(literal("x-a", "caf\u00e9 \u00ff")))).toStrictEqual(["x-a", "caf\u00e9 \u00ff"])
  })

  it("decodes the range it is given, and refuses one outside the buffer", () => {
    expect(new HpackDecoder().decode(bytes(0x80, 0x83, 0x80), 1, 2)).toStrictEqual([":method", "POST"])
    expect(reason(new HpackDecoder().decode(bytes(0x82), 0, 2))).toBe("HpackError:bad-range")
    // A string that runs past the range's end is refused, though the buffer holds its octets.
    expect(reason(new HpackDecoder().decode(bytes(literal("x-a", "12")), 0, 6))).toBe("HpackError:string-past-block-end")
    expect(reason(new HpackDecoder().decode(bytes(0x82), 1, 0))).toBe("HpackError:bad-range")
  })
})

describe("HpackDecoder fuzz", () => {
  it("returns a list or a typed error for mutated and random blocks, never throws", () => {
    const random = prng(0x5eed)
    const names = ["x-a", "content-type", "grpc-timeout", ":path", "user-agent", "x-long-name-of-a-field"]
    const started = performance.now()
    let lists = 0
    let errors = 0
    for (let round = 0; round < 200; round++) {
      // One connection of 20 blocks (dynamic table, Huffman): those before the mutated one must decode exactly.
      const encoder = new WireEncoder()
      const decoder = new HpackDecoder({ maxHeaderListSize: 4096 })
      const mutated = random.int(0, 19)
      for (let block = 0; block < 20; block++) {
        const fields = Array.from({ length: random.int(1, 12) }, () => [random.pick(names), "v\u00e9".repeat(random.int(0, 40)) + random.int(0, 9)] as const)
        let wire = encoder.block(fields, () => ({ index: random.next() < 0.5, huffman: random.next() < 0.5 }))
        const mutation = block === mutated ? random.int(1, 4) : block < mutated ? 0 : random.int(0, 4)
        if (block < mutated) expect(decoder.decode(wire)).toStrictEqual(fields.flat())
        else if (mutation === 1) wire = Buffer.from(wire.subarray(0, random.int(0, wire.length)))
        else if (mutation === 2 && wire.length > 0) wire[random.int(0, wire.length - 1)] = random.int(0, 255)
        else if (mutation === 3) wire = Buffer.concat([wire, random.bytes(random.int(1, 16))])
        else if (mutation === 4) wire = random.bytes(random.int(0, 64))
        const result = block < mutated ? [] : decoder.decode(wire)
        if (Array.isArray(result)) lists++
        else if (result instanceof HpackError || result instanceof HeaderListRejected) errors++
        else throw new Error("neither a list nor a typed error")
      }
    }
    expect(lists + errors).toBe(4000)
    expect(lists).toBeGreaterThan(1000)
    expect(errors).toBeGreaterThan(1000)
    expect(performance.now() - started).toBeLessThan(5000)
  })
})
