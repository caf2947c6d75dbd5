// Pins the mesh extensions' bytes (PROTOCOL.md §10-§16): hello and its answer, the envelope with
// metadata, answers and typed errors, control bodies and streamed messages; and the envelope
// decoder's refusals of malformed input.
import { describe, expect, it } from "vitest"
import {
  agree,
  clampDeadlineMs,
  decodeEnvelope,
  decodeErrorBody,
  decodeHello,
  localHello,
  decodeMeta,
  decodeChannelId,
  decodeCredit,
  encodeChannelId,
  encodeCredit,
  grantedCredit,
  encodeChannelPair,
  encodeEnvelope,
  encodeErrorBody,
  encodeHello,
  envelopeBodyOffset,
  EnvelopeError,
  MaxDeadlineMs,
  MeshFeatures,
  decodeTrailersChunk,
  emptyMeta,
  encodeTrailersChunk,
  parseDeadlineMs,
  scanMeta
} from "../../src/protocol/mesh.ts"
import { MetaEntries } from "../../src/protocol/metaEntries.ts"
import { encodePacket } from "../../src/protocol/packet.ts"

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex")
const hello = { version: 1, node: "a", features: [...MeshFeatures], maxMetaBytes: 8192, streamWindow: 262144, maxChannels: 1024 }
const json = (text: string) => Buffer.from(text).toString("hex")

describe("mesh vectors", () => {
  it("hello and its answer", () => {
    const body =
      '{"iipmesh":1,"node":"a","features":["ping","drain","cancel","deadline","stream","push","reverse","meta","trailers","close","refuse","conncredit"],"maxMetaBytes":8192,"streamWindow":262144,"maxChannels":1024}'
    expect(hex(encodePacket(1, "/sys/hello", 0, encodeHello(hello, false)))).toBe(`012f7379732f68656c6c6f0000000000000000cf${json(body)}`)
    const answer = encodeHello({ ...hello, node: "b" }, true)
    expect(answer.toString()).toBe(body.replace('{"iipmesh":1,"node":"a"', '{"code":0,"iipmesh":1,"node":"b"'))
    expect(decodeHello(answer)).toStrictEqual({ ...hello, node: "b" })
  })

  it("an acceptor's answer states its per-connection request and byte budgets (maxRequests, maxBytes); absent, none is stated; a garbled one is no hello", () => {
    const answer = encodeHello({ ...hello, node: "b", maxRequests: 1024, maxBytes: 67108864 }, true)
    const body =
      '{"code":0,"iipmesh":1,"node":"b","features":["ping","drain","cancel","deadline","stream","push","reverse","meta","trailers","close","refuse","conncredit"],"maxMetaBytes":8192,"streamWindow":262144,"maxChannels":1024,"maxRequests":1024,"maxBytes":67108864}'
    expect(hex(encodePacket(5, "/sys/hello", 0, answer))).toBe(`052f7379732f68656c6c6f0000000000000000ff${json(body)}`)
    expect(decodeHello(answer)).toStrictEqual({ ...hello, node: "b", maxRequests: 1024, maxBytes: 67108864 })
    // The dialer's own limit is not the peer's: agreement keeps the receiver's, as with streamWindow.
    expect(agree(hello, { ...hello, maxRequests: 8 }).maxRequests).toBe(8)
    expect(agree({ ...hello, maxRequests: 8 }, hello).maxRequests).toBeUndefined()
    expect(localHello({ maxRequests: Infinity }).maxRequests).toBeUndefined()
    for (const garbled of ["0", "-1", "1.5", '"1024"', "null", "4294967296"]) {
      expect(decodeHello(Buffer.from(body.replace('"maxRequests":1024', `"maxRequests":${garbled}`)))).toBeUndefined()
    }
    for (const garbled of ["0", "-1", "1.5", '"1024"', "null", "1e300"]) {
      expect(decodeHello(Buffer.from(body.replace('"maxBytes":67108864', `"maxBytes":${garbled}`)))).toBeUndefined()
    }
  })

  it("the peer's byte budget is the credit this side sends within only where both hellos name conncredit (§13)", () => {
    const budgeted = { ...hello, maxBytes: 4096 }
    expect(agree(hello, budgeted).maxBytes).toBe(4096)
    expect(agree(budgeted, hello)).not.toHaveProperty("maxBytes")
    const old = { ...budgeted, features: MeshFeatures.filter((f) => f !== "conncredit") }
    expect(agree(hello, old)).not.toHaveProperty("maxBytes")
    expect(grantedCredit(budgeted, agree(budgeted, hello))).toBe(4096)
    expect(grantedCredit(budgeted, agree(budgeted, old))).toBeUndefined()
    expect(localHello({ maxBytes: Infinity })).not.toHaveProperty("maxBytes")
    expect(localHello({ maxBytes: 256 * 1024 }).maxBytes).toBe(256 * 1024)
    // `/sys/credit`: u32 bytes; anything else is malformed.
    expect(hex(encodeCredit(65536))).toBe("00010000")
    expect(decodeCredit(Buffer.from("00010000", "hex"))).toBe(65536)
    expect(decodeCredit(Buffer.from("000100", "hex"))).toBeUndefined()
  })

  it("a plain server's answer to hello is not a hello", () => {
    expect(decodeHello(Buffer.from('{"code":102,"message":"handle error"}'))).toBeUndefined()
  })

  it("agreement takes the common features and the smaller metadata limit", () => {
    const theirs = { ...hello, node: "b", features: ["ping", "cancel", "future"], maxMetaBytes: 1024, streamWindow: 1 << 20 }
    expect(agree(hello, theirs)).toStrictEqual({ ...theirs, features: ["ping", "cancel"], maxMetaBytes: 1024 })
  })

  it("request with metadata, answer, error answer", () => {
    const request = encodePacket(1, "/echo", 1, encodeEnvelope(1, 0, 1, new Map([["deadline-ms", "1000"]]), Buffer.from("hi"), 8192))
    expect(hex(request)).toBe("012f6563686f00000000010000001c01000012000000010b646561646c696e652d6d730004313030306869")
    expect(hex(encodePacket(5, "/echo", 1, encodeEnvelope(2, 0, 1, new Map(), Buffer.from("hi"), 8192)))).toBe(
      "052f6563686f00000000010000000a02000000000000016869"
    )
    const error = encodeErrorBody({ code: "not_found", message: "no handler for /x", processed: false })
    expect(hex(encodePacket(5, "/x", 1, encodeEnvelope(3, 0, 2, new Map(), error, 8192)))).toBe(
      `052f7800000000010000004c0300000000000002${json('{"code":"not_found","message":"no handler for /x","processed":false}')}`
    )
    expect(decodeErrorBody(error)).toStrictEqual({ code: "not_found", message: "no handler for /x", processed: false })
  })

  it("metadata decoded message after message: strings reused only where the bytes are the same (ASCII), never across a change", () => {
    // Raw entries, so that a key or value may be any bytes (invalid UTF-8 included).
    const message = (entries: ReadonlyArray<readonly [Buffer, Buffer]>) => {
      const block = Buffer.concat(entries.map(([k, v]) => Buffer.concat([Buffer.of(k.length), k, Buffer.of(v.length >> 8, v.length & 0xff), v])))
      const head = Buffer.alloc(8)
      head[0] = 2
      head.writeUInt16BE(block.length, 2)
      return Buffer.concat([head, block])
    }
    const utf8 = (text: string) => Buffer.from(text, "utf8")
    const sequence: ReadonlyArray<ReadonlyArray<readonly [Buffer, Buffer]>> = [
      [[utf8(":status"), utf8("200")], [utf8("http-headers"), utf8("[]")]],
      [[utf8(":status"), utf8("200")], [utf8("http-headers"), utf8("[]")]],
      [[utf8(":status"), utf8("201")], [utf8("http-headers"), utf8("[[\"a\",\"b\"]]")]],
      [[utf8(":statuS"), utf8("201")], [utf8("ключ"), utf8("значение")]],
      [[utf8(":status"), Buffer.of(0x32, 0xff, 0x30)], [utf8("http-headers"), utf8("[]")]],
      [[utf8(":status"), Buffer.of(0x32, 0xfe, 0x30)], [utf8("http-headers"), utf8("")]],
      [[utf8(":status"), utf8("2é0")], [utf8("http-headers"), utf8("")]],
      [[utf8(":status"), utf8("200")], [utf8("x"), utf8("y".repeat(300))], [utf8("x"), utf8("y".repeat(299) + "z")]]
    ]
    for (const entries of sequence) {
      const data = message(entries)
      const expected = new Map(entries.map(([k, v]) => [k.toString("utf8"), v.toString("utf8")]))
      // The entries, in order (the decoded metadata is a MetaEntries, not a Map).
      expect([...decodeMeta(data, envelopeBodyOffset(data, 8192))]).toStrictEqual([...expected])
    }
  })

  it("metadata strings of every length around the short-string loop, ASCII or not, encode as Buffer writes them", () => {
    for (const length of [1, 2, 31, 32, 33, 64]) {
      for (const last of ["a", "é", "ключ", "\u{1f600}", "\ud800"]) {
        const text = "k".repeat(length) + last
        const meta = new Map([[text.slice(0, 200), text]])
        const data = encodeEnvelope(2, 0, 9, meta, Buffer.alloc(0), 8192)
        const key = Buffer.from(text.slice(0, 200), "utf8")
        const value = Buffer.from(text, "utf8")
        const expected = Buffer.concat([Buffer.of(2, 0, (3 + key.length + value.length) >> 8, (3 + key.length + value.length) & 0xff, 0, 0, 0, 9, key.length), key, Buffer.of(value.length >> 8, value.length & 0xff), value])
        expect(hex(data)).toBe(hex(expected))
      }
    }
  })

  it("envelope round trip", () => {
    const data = encodeEnvelope(1, 1, 0xffff_ffff, new Map([["traceparent", "00-ab-cd-01"], ["k", "é"]]), Buffer.from("body"), 8192)
    const envelope = decodeEnvelope(data, 8192)
    expect(envelope.kind).toBe(1)
    expect(envelope.flags).toBe(1)
    expect(envelope.requestId).toBe(0xffff_ffff)
    expect([...envelope.meta]).toStrictEqual([["traceparent", "00-ab-cd-01"], ["k", "é"]])
    expect(data.subarray(envelope.bodyOffset).toString()).toBe("body")
  })

  it("control bodies: cancel, window, close, refuse, ping and push", () => {
    expect(hex(encodePacket(1, "/sys/cancel", 0, encodeEnvelope(1, 1, 7, new Map(), encodeChannelPair(1, 3), 8192)))).toBe(
      "012f7379732f63616e63656c00000000000000001001010000000000070000000100000003"
    )
    expect(hex(encodePacket(1, "/sys/window", 0x8000_0000, encodeEnvelope(1, 1, 4, new Map(), encodeChannelPair(1, 131072), 8192)))).toBe(
      "012f7379732f77696e646f7700800000000000001001010000000000040000000100020000"
    )
    expect(hex(encodePacket(1, "/sys/close", 0, encodeEnvelope(1, 1, 9, new Map(), encodeChannelId(5), 8192)))).toBe(
      "012f7379732f636c6f736500000000000000000c010100000000000900000005"
    )
    expect(hex(encodePacket(1, "/sys/refuse", 0x8000_0000, encodeEnvelope(1, 1, 3, new Map(), encodeChannelId(4), 8192)))).toBe(
      "012f7379732f72656675736500800000000000000c010100000000000300000004"
    )
    expect(decodeChannelId(encodeChannelId(5))).toBe(5)
    expect(decodeChannelId(Buffer.of(0, 0, 5))).toBeUndefined()
    expect(hex(encodePacket(1, "/events", 0x8000_0001, encodeEnvelope(1, 1, 1, new Map(), Buffer.from("e1"), 8192)))).toBe(
      "012f6576656e747300800000010000000a01010000000000016531"
    )
  })

  it("a streamed request: first packet with the envelope, then 00-prefixed chunks", () => {
    expect(hex(encodePacket(0, "/up", 2, encodeEnvelope(1, 0, 1, new Map(), Buffer.from("ab"), 8192)))).toBe(
      "002f757000000000020000000a01000000000000016162"
    )
    expect(hex(encodePacket(2, "/up", 2, Buffer.of(0, 0x63, 0x64)))).toBe("022f7570000000000200000003006364")
    expect(hex(encodePacket(3, "/up", 2, Buffer.of(0)))).toBe("032f757000000000020000000100")
  })

  it("a streamed answer closed by trailers: header byte 03, u16 metadata length, the entries", () => {
    const trailers = new Map([["http-trailers", '[["grpc-status","0"]]']])
    const chunk = encodeTrailersChunk(trailers, 8192)
    expect(hex(encodePacket(7, "/x", 1, chunk))).toBe(`072f780000000001000000280300250d${json("http-trailers")}0015${json('[["grpc-status","0"]]')}`)
    // Decoded as every other metadata block is: a MetaEntries (its entries, in order), not a Map.
    const decoded = decodeTrailersChunk(chunk, 8192)
    expect(decoded).toBeInstanceOf(MetaEntries)
    expect([...decoded]).toStrictEqual([...trailers])
    // Re-encoded from what it decoded to (a relay's last packet): the same bytes.
    expect(encodeTrailersChunk(decoded, 8192).equals(chunk)).toBe(true)
    // An empty block (no sender of ours writes one; a peer may): the shared empty metadata, as an envelope's.
    expect(decodeTrailersChunk(Buffer.of(3, 0, 0), 8192)).toBe(emptyMeta)
    expect(() => encodeTrailersChunk(trailers, 16)).toThrow(EnvelopeError)
    expect(() => decodeTrailersChunk(chunk, 16)).toThrow(/exceed the 16-byte limit/)
    expect(() => decodeTrailersChunk(chunk.subarray(0, 10), 8192)).toThrow(/does not match/)
    expect(() => decodeTrailersChunk(Buffer.of(3, 0, 4, 0, 0, 0, 0), 8192)).toThrow(/malformed metadata entry/)
  })
})

describe("envelope refusals", () => {
  const refuse = (data: Uint8Array, max = 8192) => () => decodeEnvelope(data, max)

  it("refuses a message shorter than the envelope, an unknown kind, and metadata past its limit or the message", () => {
    expect(refuse(Buffer.of(1, 0, 0))).toThrow(EnvelopeError)
    expect(refuse(Buffer.of(9, 0, 0, 0, 0, 0, 0, 1))).toThrow(/unknown envelope kind 9/)
    expect(refuse(Buffer.of(1, 0, 0x20, 0, 0, 0, 0, 1), 16)).toThrow(/exceeds the 16-byte limit/)
    expect(refuse(Buffer.of(1, 0, 0, 5, 0, 0, 0, 1, 1))).toThrow(/runs past the message/)
  })

  it("refuses malformed metadata entries", () => {
    expect(refuse(Buffer.of(1, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0))).toThrow(/malformed metadata/) // key length 0
    expect(refuse(Buffer.of(1, 0, 0, 5, 0, 0, 0, 1, 1, 0x6b, 0, 9, 0))).toThrow(/malformed metadata/) // value runs past
  })

  it("the served side's lazy reading (scanMeta on arrival, decodeMeta when read) refuses and reads exactly as decodeEnvelope", () => {
    const lazy = (data: Buffer, max = 8192) => {
      const bodyOffset = envelopeBodyOffset(data, max)
      return { deadline: scanMeta(data, bodyOffset), meta: decodeMeta(data, bodyOffset), bodyOffset }
    }
    const malformed = [Buffer.of(1, 0, 0), Buffer.of(9, 0, 0, 0, 0, 0, 0, 1), Buffer.of(1, 0, 0, 5, 0, 0, 0, 1, 1), Buffer.of(1, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0), Buffer.of(1, 0, 0, 5, 0, 0, 0, 1, 1, 0x6b, 0, 9, 0)]
    for (const data of malformed) expect(() => lazy(data)).toThrow(EnvelopeError)
    const withDeadline = (value: string, meta: ReadonlyArray<[string, string]> = []) => {
      const entries = [...meta, ["deadline-ms", value] as [string, string]]
      // Written by hand: encodeEnvelope writes a deadline given as a number, not any string.
      const block = Buffer.concat(entries.map(([k, v]) => {
        const key = Buffer.from(k, "utf8")
        const val = Buffer.from(v, "utf8")
        return Buffer.concat([Buffer.of(key.length), key, Buffer.of(val.length >> 8, val.length & 0xff), val])
      }))
      const head = Buffer.alloc(8)
      head[0] = 1
      head.writeUInt16BE(block.length, 2)
      head.writeUInt32BE(7, 4)
      return Buffer.concat([head, block, Buffer.from("body")])
    }
    const values = ["1000", "99999999999", "9".repeat(400), "", "1e3", "-5", " 50", "12abc", "+7", "٣", "0", "86400000"]
    for (const value of values) {
      for (const data of [withDeadline(value), withDeadline(value, [["traceparent", "00-ab"], ["ключ", "значение"]])]) {
        const eager = decodeEnvelope(data, 8192)
        const read = lazy(data)
        expect(read.deadline).toBe(parseDeadlineMs(eager.meta.get("deadline-ms")))
        expect(read.meta).toStrictEqual(eager.meta)
        expect(read.bodyOffset).toBe(eager.bodyOffset)
      }
    }
    const none = encodeEnvelope(1, 0, 3, new Map([["a", "b"]]), Buffer.from("x"), 8192)
    expect(scanMeta(none, envelopeBodyOffset(none, 8192))).toBe(0)
  })

  it("a deadline given in ms is written as the deadline-ms entry, in place of meta's own", () => {
    for (const ms of [1, 9, 10, 99, 100, 1000, 12_345_678, MaxDeadlineMs]) {
      const expected = encodeEnvelope(1, 0, 5, new Map([["a", "b"], ["deadline-ms", String(ms)]]), Buffer.from("x"), 8192)
      expect(hex(encodeEnvelope(1, 0, 5, new Map([["a", "b"], ["deadline-ms", "7"]]), Buffer.from("x"), 8192, ms))).toBe(hex(expected))
      expect(decodeEnvelope(encodeEnvelope(1, 0, 5, new Map(), Buffer.from("x"), 8192, ms), 8192).meta.get("deadline-ms")).toBe(String(ms))
    }
  })

  it("refuses to encode metadata over the limit or with an empty key", () => {
    expect(() => encodeEnvelope(1, 0, 1, new Map([["k", "x".repeat(100)]]), Buffer.alloc(0), 64)).toThrow(/exceeds the 64-byte limit/)
    expect(() => encodeEnvelope(1, 0, 1, new Map([["", "x"]]), Buffer.alloc(0), 64)).toThrow(/must be 1..255 bytes/)
  })
})

describe("values from the wire bound before they reach a timer", () => {
  it("deadline-ms: decimal digits only, clamped to 24 h; anything else is no deadline", () => {
    expect(parseDeadlineMs("1000")).toBe(1000)
    expect(parseDeadlineMs("99999999999")).toBe(MaxDeadlineMs)
    expect(parseDeadlineMs("9".repeat(400))).toBe(0)
    for (const bad of [undefined, "", "Infinity", "1e309", "1e3", "-5", " 50", "50 ", "0x10", "12abc", "1.5", "+7"]) expect(parseDeadlineMs(bad)).toBe(0)
    expect(MaxDeadlineMs).toBeLessThanOrEqual(2 ** 31 - 1)
  })

  it("a caller's timeout: whole ms up to 24 h, none for NaN or 0 or less", () => {
    expect(clampDeadlineMs(1.2)).toBe(2)
    expect(clampDeadlineMs(Infinity)).toBe(MaxDeadlineMs)
    expect(clampDeadlineMs(1e12)).toBe(MaxDeadlineMs)
    for (const none of [Number.NaN, 0, -1, -Infinity]) expect(clampDeadlineMs(none)).toBe(0)
  })

  it("agree: maxChannels is the smaller of the two hellos, whoever declares more", () => {
    expect(agree(hello, { ...hello, maxChannels: 0x7fff_ffff }).maxChannels).toBe(1024)
    expect(agree({ ...hello, maxChannels: 8 }, hello).maxChannels).toBe(8)
  })
})
