// The encoder's representations byte for byte (static-table matches, indexed names, raw literals,
// the one size update to 0) and its round trip through our decoder; nghttp2 reads its blocks in
// hpack.peers.test.ts.
import { describe, expect, it } from "vitest"
import { HpackDecoder } from "../../src/h2/hpackDecoder.ts"
import { blockLengthBound, HpackEncoder } from "../../src/h2/hpackEncoder.ts"

const encode = (encoder: HpackEncoder, fields: ReadonlyArray<string>): Buffer => {
  const out = Buffer.alloc(blockLengthBound(fields))
  const end = encoder.encode(fields, out, 0)
  expect(end).toBeGreaterThanOrEqual(0)
  return out.subarray(0, end)
}

describe("HpackEncoder", () => {
  it("starts its first block with a size update to 0, and only its first", () => {
    const encoder = new HpackEncoder()
    expect(encode(encoder, [":method", "POST"]).toString("hex")).toBe("2083")
    expect(encode(encoder, [":method", "POST"]).toString("hex")).toBe("83")
  })

  it("indexes static matches, indexes known names, writes other names raw", () => {
    const encoder = new HpackEncoder()
    encode(encoder, [])
    const cases: ReadonlyArray<readonly [string, string, string]> = [
      [":status", "200", "88"], [":status", "500", "8e"], [":scheme", "http", "86"], [":path", "/", "84"],
      [":status", "203", "0803323033"], // name index 8 in 4 bits
      ["content-type", "application/grpc", "0f1010" + Buffer.from("application/grpc").toString("hex")], // index 31 = 15 + 16, then the length 16
      ["grpc-status", "0", "000b" + Buffer.from("grpc-status").toString("hex") + "0130"]
    ]
    for (const [name, value, hex] of cases) expect([name, value, encode(encoder, [name, value]).toString("hex")]).toStrictEqual([name, value, hex])
  })

  it("round-trips long and latin1 values through the decoder", () => {
    const encoder = new HpackEncoder()
    const decoder = new HpackDecoder()
    for (const length of [0, 1, 23, 24, 126, 127, 128, 20_000]) {
      const fields = [":path", "/p", "x-v", "\u00e9\u00ff ".repeat(length).slice(0, length) + "z", `x-${"n".repeat(length)}`, "v"]
      expect(decoder.decode(encode(encoder, fields))).toStrictEqual(fields)
    }
  })

  it("returns -1 when the buffer is too small, and counts nothing as sent", () => {
    const encoder = new HpackEncoder()
    const fields = ["x-long", "v".repeat(100)]
    expect(encoder.encode(fields, Buffer.alloc(50), 0)).toBe(-1)
    expect(encoder.encode(fields, Buffer.alloc(0), 0)).toBe(-1)
    const out = Buffer.alloc(blockLengthBound(fields) + 10)
    const end = encoder.encode(fields, out, 10)
    expect(out[10]).toBe(0x20)
    expect(new HpackDecoder().decode(out, 10, end)).toStrictEqual(fields)
  })
})
