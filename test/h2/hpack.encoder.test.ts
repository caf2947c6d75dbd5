// The encoder's representations byte for byte (static matches, dynamic-table entries and their
// indexes, literals left out of the table, size updates when the peer's table size changes) and
// its round trip through our decoder; nghttp2 reads its blocks in hpack.peers.test.ts.
import { describe, expect, it } from "vitest"
import { HpackDecoder } from "../../src/h2/hpackDecoder.ts"
import { blockLengthBound, HpackEncoder } from "../../src/h2/hpackEncoder.ts"
import { EncoderTable } from "../../src/h2/hpackEncoderTable.ts"
import { prng } from "../helpers/prng.ts"

const encode = (encoder: HpackEncoder, fields: ReadonlyArray<string>): Buffer => {
  const out = Buffer.alloc(blockLengthBound(fields))
  const end = encoder.encode(fields, out, 0)
  expect(end).toBeGreaterThanOrEqual(0)
  return out.subarray(0, end)
}
const hexOf = (text: string): string => Buffer.from(text, "latin1").toString("hex")

describe("HpackEncoder", () => {
  it("without a dynamic table: a size update to 0 in the first block only, static indexes, literals", () => {
    const encoder = new HpackEncoder({ maxTableSize: 0 })
    expect(encode(encoder, [":method", "POST"]).toString("hex")).toBe("2083")
    const cases: ReadonlyArray<readonly [string, string, string]> = [
      [":method", "POST", "83"], [":status", "200", "88"], [":status", "500", "8e"], [":scheme", "http", "86"], [":path", "/", "84"],
      [":status", "203", "0803323033"], // name index 8 in 4 bits
      ["content-type", "application/grpc", "0f1010" + hexOf("application/grpc")], // index 31 = 15 + 16, then the length 16
      ["grpc-status", "0", "000b" + hexOf("grpc-status") + "0130"]
    ]
    for (const [name, value, hex] of cases) expect([name, value, encode(encoder, [name, value]).toString("hex")]).toStrictEqual([name, value, hex])
  })

  it("enters repeated fields in the dynamic table and sends them as an index after", () => {
    const encoder = new HpackEncoder()
    expect(encode(encoder, ["content-type", "application/grpc", "te", "trailers"]).toString("hex")).toBe(
      "5f" + "10" + hexOf("application/grpc") + "40" + "02" + hexOf("te") + "08" + hexOf("trailers")
    )
    // Newest first: te (62), content-type (63).
    expect(encode(encoder, ["content-type", "application/grpc", "te", "trailers"]).toString("hex")).toBe("bfbe")
    // grpc-timeout changes every call: never entered; a value over a quarter of the table neither.
    expect(encode(encoder, ["grpc-timeout", "99m"]).toString("hex")).toBe("000c" + hexOf("grpc-timeout") + "03" + hexOf("99m"))
    expect(encode(encoder, ["x-big", "v".repeat(1000)])[0]).toBe(0x00)
    expect(encode(encoder, ["te", "trailers"]).toString("hex")).toBe("be")
    // Secrets go never indexed (6.2.3), every time: authorization is static name 23 = 15 + 8.
    for (let i = 0; i < 2; i++) expect(encode(encoder, ["authorization", "Bearer x"]).toString("hex")).toBe("1f08" + "08" + hexOf("Bearer x"))
  })

  it("signals the peer's lowered table size, and the smallest of several changes, at the next block's start", () => {
    const encoder = new HpackEncoder()
    encode(encoder, ["x-a", "1"])
    encoder.setPeerTableSize(100)
    // 100 = 31 + 69: 3f 45; the entry (36 octets) still fits.
    expect(encode(encoder, ["x-a", "1"]).toString("hex")).toBe("3f45be")
    encoder.setPeerTableSize(0)
    encoder.setPeerTableSize(8192)
    // Down to 0 (emptying the table) then up to 4096, our own cap: 4096 = 31 + 4065: 3f e1 1f.
    expect(encode(encoder, ["x-a", "1"]).toString("hex")).toBe("203fe11f" + "40" + "03" + hexOf("x-a") + "01" + hexOf("1"))
    expect(encode(encoder, ["x-a", "1"]).toString("hex")).toBe("be")
  })

  it("round-trips through the decoder across table size changes, long and latin1 values", () => {
    const random = prng(0xc0de)
    const encoder = new HpackEncoder()
    const decoder = new HpackDecoder()
    const names = ["content-type", "te", "x-a", "x-b", "grpc-timeout", "user-agent", ":path", "x-long"]
    for (let block = 0; block < 400; block++) {
      if (random.next() < 0.05) {
        const size = random.pick([0, 64, 256, 1024, 4096])
        encoder.setPeerTableSize(size)
        decoder.setTableSizeLimit(size)
      }
      const fields = Array.from({ length: random.int(0, 10) }, () => {
        const name = random.pick(names)
        return [name, name === "x-long" ? "\u00e9".repeat(random.int(0, 2000)) : `v${random.int(0, 6)}\u00ff`]
      }).flat()
      expect(decoder.decode(encode(encoder, fields))).toStrictEqual(fields)
    }
  })

  it("its table (EncoderTable) evicts oldest first, and an entry larger than the table empties it, as a decoder does (4.4)", () => {
    const table = new EncoderTable(100)
    table.insert("x-a", "1")
    table.insert("x-b", "2")
    expect([table.indexOf("x-b", "2"), table.indexOf("x-a", "1")]).toStrictEqual([62, 63])
    // 36 + 36 + 39 > 100: x-a goes.
    table.insert("x-c", "1234")
    expect([table.indexOf("x-c", "1234"), table.indexOf("x-b", "2"), table.indexOf("x-a", "1")]).toStrictEqual([62, 63, 0])
    table.insert("x-big", "v".repeat(100))
    expect([table.indexOf("x-c", "1234"), table.indexOf("x-b", "2"), table.indexOf("x-big", "v".repeat(100))]).toStrictEqual([0, 0, 0])
  })

  it("returns -1 when the buffer is too small, and records nothing", () => {
    const encoder = new HpackEncoder()
    const fields = ["x-long", "v".repeat(100)]
    expect(encoder.encode(fields, Buffer.alloc(50), 0)).toBe(-1)
    expect(encoder.encode(fields, Buffer.alloc(0), 0)).toBe(-1)
    const out = Buffer.alloc(blockLengthBound(fields) + 10)
    const end = encoder.encode(fields, out, 10)
    expect(out.subarray(10, end)).toStrictEqual(encode(new HpackEncoder(), fields))
    expect(new HpackDecoder().decode(out, 10, end)).toStrictEqual(fields)
  })
})
