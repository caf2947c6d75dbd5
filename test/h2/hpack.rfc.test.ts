// Pins HPACK to RFC 7541: the Huffman code against Appendix B's codes, and the decoder against
// Appendix C's examples (C.2 to C.6: each block's header list, then the dynamic table's entries and
// size), the bytes as golang/net's hpack_test.go transcribes them from the RFC.
import { describe, expect, it } from "vitest"
import { EOS, huffmanCodes, huffmanDecode, huffmanLengths } from "../../src/h2/huffman.ts"
import { HpackDecoder } from "../../src/h2/hpackDecoder.ts"

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex")

describe("Huffman code (RFC 7541 Appendix B)", () => {
  it("generates Appendix B's codes from the lengths", () => {
    const known: ReadonlyArray<readonly [number, number, number]> = [
      [0x20, 0x14, 6], [0x30, 0x0, 5], [0x61, 0x3, 5], [0x3c, 0x7ffc, 15], [0, 0x1ff8, 13], [1, 0x7fffd8, 23],
      [2, 0xfffffe2, 28], [10, 0x3ffffffc, 30], [0xff, 0x3ffffee, 26], [EOS, 0x3fffffff, 30]
    ]
    for (const [symbol, code, bits] of known) expect([symbol, huffmanCodes[symbol], huffmanLengths[symbol]]).toStrictEqual([symbol, code, bits])
  })

  it("decodes Appendix C's Huffman strings", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"],
      ["a8eb 1064 9cbf", "no-cache"],
      ["25a8 49e9 5bb8 e8b4 bf", "custom-value"],
      ["d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff", "Mon, 21 Oct 2013 20:13:21 GMT"],
      ["94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"]
    ]
    const out = Buffer.alloc(128)
    for (const [coded, text] of cases) {
      const bytes = hex(coded)
      const n = huffmanDecode(bytes, 0, bytes.length, out)
      expect(out.toString("latin1", 0, n)).toBe(text)
    }
  })

  it("decodes every octet's code, alone and after others", () => {
    const out = Buffer.alloc(16)
    for (let symbol = 0; symbol < 256; symbol++) {
      // 'a' (00011, 5 bits), the symbol, then ones to the octet boundary.
      const bits = 5 + huffmanLengths[symbol]!
      const padded = Math.ceil(bits / 8) * 8
      let value = (BigInt(0x3) << BigInt(huffmanLengths[symbol]!)) | BigInt(huffmanCodes[symbol]!)
      value = (value << BigInt(padded - bits)) | ((1n << BigInt(padded - bits)) - 1n)
      const bytes = Buffer.from(value.toString(16).padStart(padded / 4, "0"), "hex")
      expect([symbol, huffmanDecode(bytes, 0, bytes.length, out), out[0], out[1]]).toStrictEqual([symbol, 2, 0x61, symbol])
    }
  })
})

type Step = readonly [block: string, fields: ReadonlyArray<string>, table: ReadonlyArray<string>, size: number]

const series = (tableSize: number, steps: ReadonlyArray<Step>): void => {
  const decoder = new HpackDecoder({ maxTableSize: tableSize })
  for (const [block, fields, table, size] of steps) {
    expect(decoder.decode(hex(block))).toStrictEqual(fields)
    expect(decoder.tableEntries()).toStrictEqual(table)
    expect(decoder.tableSize).toBe(size)
  }
}

const REQUEST_1 = [":method", "GET", ":scheme", "http", ":path", "/", ":authority", "www.example.com"]
const REQUEST_2 = [...REQUEST_1, "cache-control", "no-cache"]
const REQUEST_3 = [":method", "GET", ":scheme", "https", ":path", "/index.html", ":authority", "www.example.com", "custom-key", "custom-value"]
const TABLE_1 = [":authority", "www.example.com"]
const TABLE_2 = ["cache-control", "no-cache", ...TABLE_1]
const TABLE_3 = ["custom-key", "custom-value", ...TABLE_2]

const DATE_1 = "Mon, 21 Oct 2013 20:13:21 GMT"
const DATE_2 = "Mon, 21 Oct 2013 20:13:22 GMT"
const COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
const RESPONSE_1 = [":status", "302", "cache-control", "private", "date", DATE_1, "location", "https://www.example.com"]
const RESPONSE_2 = [":status", "307", "cache-control", "private", "date", DATE_1, "location", "https://www.example.com"]
const RESPONSE_3 = [":status", "200", "cache-control", "private", "date", DATE_2, "location", "https://www.example.com", "content-encoding", "gzip", "set-cookie", COOKIE]
const RTABLE_1 = ["location", "https://www.example.com", "date", DATE_1, "cache-control", "private", ":status", "302"]
const RTABLE_2 = [":status", "307", "location", "https://www.example.com", "date", DATE_1, "cache-control", "private"]
const RTABLE_3 = ["set-cookie", COOKIE, "content-encoding", "gzip", "date", DATE_2]

describe("HpackDecoder on RFC 7541 Appendix C", () => {
  it("C.2: one field of each representation", () => {
    series(4096, [["400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572", ["custom-key", "custom-header"], ["custom-key", "custom-header"], 55]])
    series(4096, [["040c 2f73 616d 706c 652f 7061 7468", [":path", "/sample/path"], [], 0]])
    series(4096, [["1008 7061 7373 776f 7264 0673 6563 7265 74", ["password", "secret"], [], 0]])
    series(4096, [["82", [":method", "GET"], [], 0]])
  })

  it("C.3: requests without Huffman coding", () =>
    series(4096, [
      ["8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", REQUEST_1, TABLE_1, 57],
      ["8286 84be 5808 6e6f 2d63 6163 6865", REQUEST_2, TABLE_2, 110],
      ["8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65", REQUEST_3, TABLE_3, 164]
    ]))

  it("C.4: requests with Huffman coding", () =>
    series(4096, [
      ["8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", REQUEST_1, TABLE_1, 57],
      ["8286 84be 5886 a8eb 1064 9cbf", REQUEST_2, TABLE_2, 110],
      ["8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf", REQUEST_3, TABLE_3, 164]
    ]))

  it("C.5: responses without Huffman coding, evicting in a 256-octet table", () =>
    series(256, [
      ["4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", RESPONSE_1, RTABLE_1, 222],
      ["4803 3330 37c1 c0bf", RESPONSE_2, RTABLE_2, 222],
      ["88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31", RESPONSE_3, RTABLE_3, 215]
    ]))

  it("C.6: responses with Huffman coding, evicting in a 256-octet table", () =>
    series(256, [
      ["4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3", RESPONSE_1, RTABLE_1, 222],
      ["4883 640e ffc1 c0bf", RESPONSE_2, RTABLE_2, 222],
      ["88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07", RESPONSE_3, RTABLE_3, 215]
    ]))
})
