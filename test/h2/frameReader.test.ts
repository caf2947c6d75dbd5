// Pins the HTTP/2 frame reader (src/h2/frameReader.ts) against RFC 9113 sections 3.4, 4 and 6: any
// split of a valid byte stream gives the same frames, whole-in-chunk payloads are views of the
// chunk, and each rule a frame can break ends in its typed error (code and scope) before the
// payload is kept: frame size, fixed lengths, stream 0 rules, padding, header block continuity,
// the CONTINUATION flood and the block budget, WINDOW_UPDATE 0, setting values, PUSH_PROMISE.
import { describe, expect, it } from "vitest"
import { FrameReader, type FrameReaderOptions } from "../../src/h2/frameReader.ts"
import { CLIENT_PREFACE, ErrorCode, Flag, FrameType, SettingId } from "../../src/h2/frames.ts"
import { type Recorder, recorder } from "../helpers/h2FrameRecorder.ts"
import { prng, randomSplit } from "../helpers/prng.ts"
import { h2Frame as frame } from "../support/h2Raw.ts"

const u32 = (...values: Array<number>): Buffer => {
  const out = Buffer.alloc(values.length * 4)
  values.forEach((v, i) => out.writeUInt32BE(v >>> 0, i * 4))
  return out
}
const settings = (...pairs: Array<readonly [number, number]>): Buffer =>
  frame(FrameType.SETTINGS, 0, 0, Buffer.concat(pairs.map(([id, value]) => Buffer.concat([Buffer.from([id >> 8, id & 0xff]), u32(value)]))))
const SETTINGS = settings()

/** A reader (client role unless told) that has read the peer's first SETTINGS, and its recorder. */
const reading = (options: Partial<FrameReaderOptions> = {}): { reader: FrameReader; rec: Recorder } => {
  const rec = recorder()
  const reader = new FrameReader(rec, { role: "client", ...options })
  reader.feed(options.role === "server" ? Buffer.concat([CLIENT_PREFACE, SETTINGS]) : SETTINGS)
  rec.events.length = 0
  return { reader, rec }
}

/** Feeds `bytes` to a fresh reader and returns its one error as [code, scope, reason]. */
const errorOf = (bytes: Buffer, options: Partial<FrameReaderOptions> = {}) => {
  const { reader, rec } = reading(options)
  reader.feed(bytes)
  expect(rec.errors).toHaveLength(1)
  const [error] = rec.errors
  return [error!.code, error!.scope, error!.reason] as const
}

const connection = (code: number, reason: string) => [code, "connection", reason] as const

describe("frame reader: valid streams", () => {
  const stream = Buffer.concat([
    CLIENT_PREFACE,
    settings([SettingId.MAX_FRAME_SIZE, 20_000], [0x99, 7], [SettingId.INITIAL_WINDOW_SIZE, 1_000_000]),
    frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.from("block-one")),
    frame(FrameType.HEADERS, 0, 3, Buffer.from("part-a")),
    frame(FrameType.CONTINUATION, 0, 3, Buffer.alloc(0)),
    frame(FrameType.CONTINUATION, Flag.END_HEADERS, 3, Buffer.from("part-b")),
    frame(FrameType.DATA, Flag.PADDED, 1, Buffer.concat([Buffer.from([3]), Buffer.from("hello"), Buffer.alloc(3)])),
    frame(FrameType.DATA, Flag.END_STREAM, 1, Buffer.alloc(5000, 0x61)),
    frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM | Flag.PADDED | Flag.PRIORITY, 3, Buffer.concat([Buffer.from([2]), u32(1), Buffer.from([16]), Buffer.from("trailers"), Buffer.alloc(2)])),
    frame(0xee, 0xff, 5, Buffer.from("unknown type")),
    frame(FrameType.PRIORITY, 0, 7, Buffer.concat([u32(1), Buffer.from([1])])),
    frame(FrameType.RST_STREAM, 0, 3, u32(ErrorCode.CANCEL)),
    frame(FrameType.PING, 0, 0, Buffer.from("12345678")),
    frame(FrameType.PING, Flag.ACK | 0xf0, 0, Buffer.from("abcdefgh")),
    frame(FrameType.SETTINGS, Flag.ACK, 0),
    frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0x80000000 + 1000)),
    frame(FrameType.WINDOW_UPDATE, 0, 1, u32(5)),
    frame(FrameType.GOAWAY, 0, 0, Buffer.concat([u32(0x80000000 + 3, ErrorCode.NO_ERROR), Buffer.from("bye")]))
  ])
  // The reserved bit of a stream id is ignored: stream 0x80000001 is stream 1.
  stream.writeUInt32BE(0x80000001, stream.indexOf(Buffer.from("block-one")) - 4)

  const expected = [
    ["setting", SettingId.MAX_FRAME_SIZE, 20_000],
    ["setting", SettingId.INITIAL_WINDOW_SIZE, 1_000_000],
    ["settingsEnd"],
    ["headers", 1, Buffer.from("block-one"), false],
    ["headers", 3, Buffer.from("part-apart-b"), false],
    ["body", 1, Buffer.concat([Buffer.from("hello"), Buffer.alloc(5000, 0x61)]), 9 + 5000],
    ["headers", 3, Buffer.from("trailers"), true],
    ["rst", 3, ErrorCode.CANCEL],
    ["ping", Buffer.from("12345678"), false],
    ["ping", Buffer.from("abcdefgh"), true],
    ["settingsAck"],
    ["windowUpdate", 0, 1000],
    ["windowUpdate", 1, 5],
    ["goaway", 3, ErrorCode.NO_ERROR, Buffer.from("bye")]
  ]
  /** DATA pieces of one stream in a row joined, so every split compares equal. */
  const normalise = (rec: Recorder) => {
    const out: Array<unknown> = []
    for (const event of rec.events) {
      const last = out.at(-1) as Array<unknown> | undefined
      if (event[0] !== "data") out.push([...event])
      else if (last?.[0] === "body" && last[1] === event[1]) {
        last[2] = Buffer.concat([last[2] as Buffer, event[2]])
        last[3] = (last[3] as number) + event[3]
      } else out.push(["body", event[1], event[2], event[3]])
    }
    return out
  }

  it("reads the same frames whole, byte by byte and in 300 random splits", () => {
    const feeds: Array<Array<Buffer>> = [[stream], [...stream].map((b) => Buffer.from([b]))]
    const rng = prng(7)
    for (let i = 0; i < 300; i++) feeds.push(randomSplit(rng, stream, 64))
    for (const chunks of feeds) {
      const rec = recorder()
      const reader = new FrameReader(rec, { role: "server", maxFrameSize: 20_000 })
      for (const chunk of chunks) reader.feed(Buffer.from(chunk))
      expect(rec.errors).toStrictEqual([])
      expect(normalise(rec)).toStrictEqual(expected)
      expect(rec.body(1).ended).toBe(true)
      expect(reader.frames).toBe(17)
    }
  })

  it("hands whole-in-chunk DATA and HEADERS on as views of the chunk, and DATA spanning chunks as views of each", () => {
    const seen: Array<Buffer> = []
    const handler = { ...recorder(), onData: (_s: number, data: Buffer) => void seen.push(data), onHeaders: (_s: number, block: Buffer) => void seen.push(block) }
    const reader = new FrameReader(handler, { role: "client" })
    const chunk = Buffer.alloc(9 + 12 + 3009)
    Buffer.concat([SETTINGS, frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.from("hdr")), frame(FrameType.DATA, 0, 1, Buffer.alloc(3000, 1))]).copy(chunk)
    reader.feed(chunk)
    expect(seen.map((b) => b.buffer === chunk.buffer)).toStrictEqual([true, true])
    const big = frame(FrameType.DATA, Flag.END_STREAM, 1, Buffer.alloc(10_000, 2))
    // Buffer.alloc never shares a pool's ArrayBuffer, so `.buffer` tells the chunks apart.
    const first = Buffer.alloc(4000)
    const second = Buffer.alloc(big.length - 4000)
    big.copy(first, 0, 0, 4000)
    big.copy(second, 0, 4000)
    reader.feed(first)
    reader.feed(second)
    expect(seen.slice(2).map((b) => [b.length, b.buffer === first.buffer, b.buffer === second.buffer])).toStrictEqual([
      [3991, true, false],
      [6009, false, true]
    ])
  })

  it("reads nothing more once the layer above stops it from a handler call", () => {
    const rec = recorder()
    const reader = new FrameReader({ ...rec, onData: (...args) => (rec.onData(...args), reader.stop()) }, { role: "client" })
    reader.feed(Buffer.concat([SETTINGS, frame(FrameType.DATA, 0, 1, Buffer.from("over the window")), frame(FrameType.PING, 0, 0, Buffer.alloc(8))]))
    reader.feed(frame(FrameType.PING, 0, 0, Buffer.alloc(8)))
    expect([reader.hasFailed, rec.events.map((e) => e[0])]).toStrictEqual([true, ["settingsEnd", "data"]])
  })

  it("keeps no view of a chunk once feed returns: a header block left open survives the caller reusing the chunk", () => {
    // The wiring may read into reused slabs (src/mux/readSlabs.ts): the reader must not hold the
    // fragments of an open header block as views of a chunk the caller then reads into again.
    const { reader, rec } = reading()
    const slab = Buffer.alloc(64)
    const first = frame(FrameType.HEADERS, Flag.END_STREAM, 1, Buffer.from("first-part"))
    const second = Buffer.concat([frame(FrameType.CONTINUATION, 0, 1, Buffer.from("+second")), frame(FrameType.CONTINUATION, 0, 1, Buffer.from("+th"))])
    first.copy(slab)
    reader.feed(slab.subarray(0, first.length))
    slab.fill(0xee)
    // The second CONTINUATION spans this feed and the next (assembled in the reader's own buffer).
    second.copy(slab)
    reader.feed(slab.subarray(0, second.length - 1))
    slab.fill(0xee)
    reader.feed(Buffer.concat([second.subarray(second.length - 1), frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, Buffer.from("+end"))]))
    expect([rec.errors, rec.events]).toStrictEqual([[], [["headers", 1, Buffer.from("first-part+second+th+end"), true]]])
  })

  it("counts a padded DATA frame's pad length byte and padding against flow control when it spans chunks", () => {
    const { reader, rec } = reading()
    const bytes = frame(FrameType.DATA, Flag.PADDED | Flag.END_STREAM, 1, Buffer.concat([Buffer.from([200]), Buffer.alloc(100, 9), Buffer.alloc(200)]))
    for (const b of bytes) reader.feed(Buffer.from([b]))
    expect(rec.errors).toStrictEqual([])
    expect(rec.body(1)).toStrictEqual({ bytes: Buffer.alloc(100, 9), ended: true, flow: 301 })
    // Each padding byte is credited as it is read, the last one with END_STREAM.
    expect(rec.events.at(-1)).toStrictEqual(["data", 1, Buffer.alloc(0), 1, true])
    expect(rec.events).toHaveLength(1 + 100 + 200)
  })
})

describe("frame reader: hostile frames", () => {
  it("checks the client preface on the server side, whatever the split", () => {
    const rec = recorder()
    const reader = new FrameReader(rec, { role: "server" })
    for (const b of Buffer.concat([CLIENT_PREFACE, SETTINGS])) reader.feed(Buffer.from([b]))
    expect([rec.errors, rec.events]).toStrictEqual([[], [["settingsEnd"]]])
    const bad = recorder()
    new FrameReader(bad, { role: "server" }).feed(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    expect(bad.errors.map((e) => [e.code, e.reason])).toStrictEqual([[ErrorCode.PROTOCOL_ERROR, "bad-preface"]])
  })

  it("refuses a first frame other than SETTINGS, and a SETTINGS ACK first", () => {
    for (const first of [frame(FrameType.PING, 0, 0, Buffer.alloc(8)), frame(FrameType.SETTINGS, Flag.ACK, 0)]) {
      const rec = recorder()
      new FrameReader(rec, { role: "client" }).feed(first)
      expect(rec.errors.map((e) => [e.code, e.reason])).toStrictEqual([[ErrorCode.PROTOCOL_ERROR, "preface-settings"]])
    }
  })

  it("ends the connection with FRAME_SIZE_ERROR on a frame over SETTINGS_MAX_FRAME_SIZE from its header alone", () => {
    const { reader, rec } = reading()
    const head = frame(FrameType.DATA, 0, 1, Buffer.alloc(16_385)).subarray(0, 9)
    reader.feed(head)
    expect(rec.errors.map((e) => [e.code, e.scope, e.reason])).toStrictEqual([connection(ErrorCode.FRAME_SIZE_ERROR, "frame-too-large")])
    expect(reader.hasFailed).toBe(true)
    reader.feed(frame(FrameType.PING, 0, 0, Buffer.alloc(8)))
    expect([rec.events, rec.errors.length]).toStrictEqual([[], 1])
    const { reader: larger, rec: fine } = reading({ maxFrameSize: 20_000 })
    larger.feed(frame(FrameType.DATA, 0, 1, Buffer.alloc(20_000)))
    expect([fine.errors, fine.body(1).bytes.length]).toStrictEqual([[], 20_000])
  })

  it.each([
    ["RST_STREAM of 3", frame(FrameType.RST_STREAM, 0, 1, Buffer.alloc(3))],
    ["RST_STREAM of 5", frame(FrameType.RST_STREAM, 0, 1, Buffer.alloc(5))],
    ["PING of 7", frame(FrameType.PING, 0, 0, Buffer.alloc(7))],
    ["PING of 9", frame(FrameType.PING, 0, 0, Buffer.alloc(9))],
    ["WINDOW_UPDATE of 5", frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.alloc(5))],
    ["WINDOW_UPDATE of 3 on a stream", frame(FrameType.WINDOW_UPDATE, 0, 1, Buffer.alloc(3))],
    ["SETTINGS of 7", frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(7))],
    ["SETTINGS ACK with 6", frame(FrameType.SETTINGS, Flag.ACK, 0, Buffer.alloc(6))],
    ["GOAWAY of 7", frame(FrameType.GOAWAY, 0, 0, Buffer.alloc(7))],
    ["padded DATA of 0", frame(FrameType.DATA, Flag.PADDED, 1)],
    ["HEADERS with PRIORITY of 4", frame(FrameType.HEADERS, Flag.PRIORITY | Flag.END_HEADERS, 1, Buffer.alloc(4))]
  ])("%s is a connection FRAME_SIZE_ERROR", (_name, bytes) => {
    const [code, scope] = errorOf(bytes)
    expect([code, scope]).toStrictEqual([ErrorCode.FRAME_SIZE_ERROR, "connection"])
  })

  it("PRIORITY of a length other than 5 is a stream FRAME_SIZE_ERROR, skipped whatever the split, and reading goes on", () => {
    const bytes = Buffer.concat([frame(FrameType.PRIORITY, 0, 5, Buffer.alloc(6)), frame(FrameType.PING, 0, 0, Buffer.alloc(8, 1))])
    for (const chunks of [[bytes], [...bytes].map((b) => Buffer.from([b]))]) {
      const { reader, rec } = reading()
      for (const chunk of chunks) reader.feed(chunk)
      expect(rec.errors.map((e) => [e.code, e.scope, e.streamId])).toStrictEqual([[ErrorCode.FRAME_SIZE_ERROR, "stream", 5]])
      expect(rec.events).toStrictEqual([["ping", Buffer.alloc(8, 1), false]])
    }
  })

  it.each([
    ["DATA", frame(FrameType.DATA, 0, 0, Buffer.from("x"))],
    ["HEADERS", frame(FrameType.HEADERS, Flag.END_HEADERS, 0, Buffer.from("x"))],
    ["PRIORITY", frame(FrameType.PRIORITY, 0, 0, Buffer.alloc(5))],
    ["RST_STREAM", frame(FrameType.RST_STREAM, 0, 0, Buffer.alloc(4))],
    ["CONTINUATION", frame(FrameType.CONTINUATION, Flag.END_HEADERS, 0)]
  ])("%s on stream 0 is a connection PROTOCOL_ERROR", (_name, bytes) => {
    expect(errorOf(bytes)).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "stream-zero"))
  })

  it.each([
    ["SETTINGS", frame(FrameType.SETTINGS, 0, 1)],
    ["PING", frame(FrameType.PING, 0, 1, Buffer.alloc(8))],
    ["GOAWAY", frame(FrameType.GOAWAY, 0, 1, Buffer.alloc(8))]
  ])("%s on a stream is a connection PROTOCOL_ERROR", (_name, bytes) => {
    expect(errorOf(bytes)).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "stream-nonzero"))
  })

  it("padding as long as the payload is a PROTOCOL_ERROR, in DATA whole or split and in HEADERS", () => {
    const data = frame(FrameType.DATA, Flag.PADDED, 1, Buffer.concat([Buffer.from([4]), Buffer.alloc(3)]))
    expect(errorOf(data)).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "padding"))
    const { reader, rec } = reading()
    for (const b of data) reader.feed(Buffer.from([b]))
    expect(rec.errors.map((e) => e.reason)).toStrictEqual(["padding"])
    expect(rec.events).toStrictEqual([])
    const headers = frame(FrameType.HEADERS, Flag.PADDED | Flag.PRIORITY | Flag.END_HEADERS, 1, Buffer.concat([Buffer.from([3]), u32(0), Buffer.from([1]), Buffer.alloc(2)]))
    expect(errorOf(headers)).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "padding"))
  })

  it("a stream depending on itself: PRIORITY is a stream error, HEADERS a connection error", () => {
    const { reader, rec } = reading()
    reader.feed(frame(FrameType.PRIORITY, 0, 3, Buffer.concat([u32(3), Buffer.from([1])])))
    expect(rec.errors.map((e) => [e.code, e.scope, e.streamId])).toStrictEqual([[ErrorCode.PROTOCOL_ERROR, "stream", 3]])
    expect(errorOf(frame(FrameType.HEADERS, Flag.PRIORITY | Flag.END_HEADERS, 3, Buffer.concat([u32(3), Buffer.from([1])])))).toStrictEqual(
      connection(ErrorCode.PROTOCOL_ERROR, "self-dependency")
    )
  })

  it("while a header block is open, any frame but its stream's CONTINUATION is a PROTOCOL_ERROR", () => {
    const open = frame(FrameType.HEADERS, 0, 1, Buffer.from("a"))
    for (const next of [
      frame(FrameType.DATA, 0, 1, Buffer.from("x")),
      frame(FrameType.CONTINUATION, Flag.END_HEADERS, 3, Buffer.from("b")),
      frame(FrameType.PING, 0, 0, Buffer.alloc(8)),
      frame(0xee, 0, 1)
    ])
      expect(errorOf(Buffer.concat([open, next]))).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "interleaved-header-block"))
    expect(errorOf(frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, Buffer.from("b")))).toStrictEqual(
      connection(ErrorCode.PROTOCOL_ERROR, "continuation-without-headers")
    )
  })

  it("ends a flood of empty CONTINUATIONs after the bound, at once, reading nothing after it", () => {
    const empty = frame(FrameType.CONTINUATION, 0, 1)
    const flood = Buffer.concat([frame(FrameType.HEADERS, 0, 1, Buffer.from("a")), ...Array.from({ length: 100_000 }, () => empty)])
    const { reader, rec } = reading()
    const started = process.hrtime.bigint()
    reader.feed(flood)
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(200)
    expect(rec.errors.map((e) => [e.code, e.reason])).toStrictEqual([[ErrorCode.ENHANCE_YOUR_CALM, "continuation-flood"]])
    expect(reader.frames).toBe(1 + 1 + 9)
    expect(rec.events).toStrictEqual([])
  })

  it("joins a header block up to its budget and refuses one byte more", () => {
    const block = Buffer.alloc(1000, 0x41)
    const frames = (bytes: number) =>
      Buffer.concat([
        frame(FrameType.HEADERS, Flag.END_STREAM, 1, block.subarray(0, 400)),
        frame(FrameType.CONTINUATION, 0, 1, block.subarray(400, 800)),
        frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, Buffer.alloc(bytes - 800, 0x41))
      ])
    const { reader, rec } = reading({ maxHeaderBlockBytes: 1000 })
    reader.feed(frames(1000))
    expect([rec.errors, rec.events]).toStrictEqual([[], [["headers", 1, block, true]]])
    expect(errorOf(frames(1001), { maxHeaderBlockBytes: 1000 })).toStrictEqual(connection(ErrorCode.ENHANCE_YOUR_CALM, "header-block-too-large"))
    expect(errorOf(frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.alloc(1001)), { maxHeaderBlockBytes: 1000 })).toStrictEqual(
      connection(ErrorCode.ENHANCE_YOUR_CALM, "header-block-too-large")
    )
  })

  it("WINDOW_UPDATE of 0 is a stream error on a stream and a connection error on the connection", () => {
    const { reader, rec } = reading()
    reader.feed(Buffer.concat([frame(FrameType.WINDOW_UPDATE, 0, 5, u32(0x80000000)), frame(FrameType.WINDOW_UPDATE, 0, 5, u32(1))]))
    expect(rec.errors.map((e) => [e.code, e.scope, e.streamId, e.reason])).toStrictEqual([[ErrorCode.PROTOCOL_ERROR, "stream", 5, "window-increment-zero"]])
    expect(rec.events).toStrictEqual([["windowUpdate", 5, 1]])
    expect(errorOf(frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0)))).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "window-increment-zero"))
  })

  it("builds its errors without a stack, which a peer repeating a stream error would make it capture each time", () => {
    const limit = Error.stackTraceLimit
    const { reader, rec } = reading()
    reader.feed(Buffer.concat([frame(FrameType.WINDOW_UPDATE, 0, 5, u32(0)), frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0))]))
    expect(rec.errors.map((e) => [e.scope, e.stack])).toStrictEqual([
      ["stream", "H2FrameError: WINDOW_UPDATE of 0 on stream 5"],
      ["connection", "H2FrameError: WINDOW_UPDATE of 0 on the connection"]
    ])
    expect(Error.stackTraceLimit).toBe(limit)
  })

  it.each([
    ["ENABLE_PUSH 2", SettingId.ENABLE_PUSH, 2, ErrorCode.PROTOCOL_ERROR],
    ["INITIAL_WINDOW_SIZE 2^31", SettingId.INITIAL_WINDOW_SIZE, 2 ** 31, ErrorCode.FLOW_CONTROL_ERROR],
    ["MAX_FRAME_SIZE 16383", SettingId.MAX_FRAME_SIZE, 16_383, ErrorCode.PROTOCOL_ERROR],
    ["MAX_FRAME_SIZE 2^24", SettingId.MAX_FRAME_SIZE, 2 ** 24, ErrorCode.PROTOCOL_ERROR],
    ["ENABLE_CONNECT_PROTOCOL 2", SettingId.ENABLE_CONNECT_PROTOCOL, 2, ErrorCode.PROTOCOL_ERROR]
  ])("SETTINGS with %s is a connection error and applies none of its settings", (_name, id, value, code) => {
    const { reader, rec } = reading({ role: "server" })
    reader.feed(settings([SettingId.HEADER_TABLE_SIZE, 0], [id, value]))
    expect(rec.errors.map((e) => [e.code, e.scope, e.reason])).toStrictEqual([[code, "connection", "setting-value"]])
    expect(rec.events).toStrictEqual([])
  })

  it("accepts the bounds of each setting, skips unknown ids, and refuses ENABLE_PUSH 1 from a server", () => {
    const { reader, rec } = reading({ role: "server" })
    reader.feed(settings([SettingId.ENABLE_PUSH, 1], [SettingId.INITIAL_WINDOW_SIZE, 2 ** 31 - 1], [SettingId.MAX_FRAME_SIZE, 16_777_215], [7, 1], [0xffff, 9]))
    expect([rec.errors, rec.events]).toStrictEqual([
      [],
      [["setting", SettingId.ENABLE_PUSH, 1], ["setting", SettingId.INITIAL_WINDOW_SIZE, 2 ** 31 - 1], ["setting", SettingId.MAX_FRAME_SIZE, 16_777_215], ["settingsEnd"]]
    ])
    expect(errorOf(settings([SettingId.ENABLE_PUSH, 1]))).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "setting-value"))
  })

  it("PUSH_PROMISE is a connection PROTOCOL_ERROR for a server and for a client (push is never enabled)", () => {
    const push = frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, Buffer.concat([u32(2), Buffer.from("x")]))
    expect(errorOf(push, { role: "server" })).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "push-promise"))
    expect(errorOf(push, { role: "client" })).toStrictEqual(connection(ErrorCode.PROTOCOL_ERROR, "push-promise"))
  })
})
