// Pins the HTTP/2 frame writer (src/h2/frameWriter.ts): every frame it writes reads back through
// our reader as written; header blocks and DATA are split at the peer's frame size with the flags
// on the right frame; large payloads go into the batch by reference; the slab grows by doubling to
// its cap in a burst, chains past the cap, and returns to its first size once the burst is over.
import { describe, expect, it } from "vitest"
import { FrameReader } from "../../src/h2/frameReader.ts"
import { CLIENT_PREFACE, ErrorCode, Flag, FrameType, SettingId } from "../../src/h2/frames.ts"
import { FrameWriter, MAX_GOAWAY_DEBUG_BYTES } from "../../src/h2/frameWriter.ts"
import { recorder } from "../helpers/h2FrameRecorder.ts"

/** The writer's turn read back as a client would (the preface and a first SETTINGS added unless the turn has them). */
const readBack = (writer: FrameWriter, handshake = true) => {
  const rec = recorder()
  const reader = new FrameReader(rec, { role: handshake ? "client" : "server" })
  if (handshake) reader.feed(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]))
  for (const chunk of writer.take() ?? []) reader.feed(chunk)
  return rec
}

/** The frames' headers in `bytes`: [length, type, flags, stream]. */
const heads = (bytes: Buffer): Array<[number, number, number, number]> => {
  const out: Array<[number, number, number, number]> = []
  for (let at = 0; at < bytes.length; ) {
    const length = bytes.readUIntBE(at, 3)
    out.push([length, bytes[at + 3]!, bytes[at + 4]!, bytes.readUInt32BE(at + 5)])
    at += 9 + length
  }
  return out
}

describe("frame writer", () => {
  it("writes each frame type so that the reader gets back what was written", () => {
    const writer = new FrameWriter()
    writer.preface()
    writer.settings([[SettingId.ENABLE_PUSH, 0], [SettingId.INITIAL_WINDOW_SIZE, 2 ** 31 - 1]])
    writer.settingsAck()
    writer.ping(Buffer.from("12345678"), false)
    writer.ping(Buffer.from("abc"), true)
    writer.windowUpdate(0, 2 ** 31 - 1)
    writer.windowUpdate(3, 7)
    writer.rstStream(3, ErrorCode.CANCEL)
    writer.headers(5, Buffer.from("block"), true)
    writer.data(7, Buffer.alloc(0), true)
    writer.goAway(7, ErrorCode.NO_ERROR, Buffer.alloc(1000, 0x62))
    expect(writer.pendingBytes).toBe(24 + 21 + 9 + 17 + 17 + 13 + 13 + 13 + 14 + 9 + 17 + MAX_GOAWAY_DEBUG_BYTES)
    const rec = readBack(writer, false)
    expect(rec.errors).toStrictEqual([])
    expect(rec.events).toStrictEqual([
      ["setting", SettingId.ENABLE_PUSH, 0],
      ["setting", SettingId.INITIAL_WINDOW_SIZE, 2 ** 31 - 1],
      ["settingsEnd"],
      ["settingsAck"],
      ["ping", Buffer.from("12345678"), false],
      ["ping", Buffer.from("abc\0\0\0\0\0"), true],
      ["windowUpdate", 0, 2 ** 31 - 1],
      ["windowUpdate", 3, 7],
      ["rst", 3, ErrorCode.CANCEL],
      ["headers", 5, Buffer.from("block"), true],
      ["data", 7, Buffer.alloc(0), 0, true],
      ["goaway", 7, ErrorCode.NO_ERROR, Buffer.alloc(MAX_GOAWAY_DEBUG_BYTES, 0x62)]
    ])
    expect([writer.take(), writer.pendingBytes]).toStrictEqual([undefined, 0])
  })

  it("splits a header block past the peer's frame size into HEADERS and CONTINUATIONs, flags on the right frames", () => {
    const writer = new FrameWriter()
    const block = Buffer.alloc(40_000, 0x41)
    writer.headers(1, block, true)
    const bytes = Buffer.concat(writer.take()!)
    expect(heads(bytes)).toStrictEqual([
      [16_384, FrameType.HEADERS, Flag.END_STREAM, 1],
      [16_384, FrameType.CONTINUATION, 0, 1],
      [7232, FrameType.CONTINUATION, Flag.END_HEADERS, 1]
    ])
    writer.headers(1, block, true)
    const rec = readBack(writer)
    expect(rec.events.slice(1)).toStrictEqual([["headers", 1, block, true]])
  })

  it("splits DATA at the peer's frame size, END_STREAM on the last frame only, and follows a larger frame size", () => {
    const writer = new FrameWriter()
    writer.data(3, Buffer.alloc(40_000, 1), true)
    writer.data(3, Buffer.alloc(16_384, 2), false)
    expect(heads(Buffer.concat(writer.take()!))).toStrictEqual([
      [16_384, FrameType.DATA, 0, 3],
      [16_384, FrameType.DATA, 0, 3],
      [7232, FrameType.DATA, Flag.END_STREAM, 3],
      [16_384, FrameType.DATA, 0, 3]
    ])
    writer.peerMaxFrameSize = 100_000
    writer.data(3, Buffer.alloc(100_001, 3), true)
    expect(heads(Buffer.concat(writer.take()!))).toStrictEqual([
      [100_000, FrameType.DATA, 0, 3],
      [1, FrameType.DATA, Flag.END_STREAM, 3]
    ])
  })

  it("copies a small payload into the batch and passes a large one by reference, between two batch segments", () => {
    const writer = new FrameWriter({ copyBelow: 1024 })
    const small = Buffer.alloc(1023, 7)
    const large = Buffer.alloc(1024, 8)
    writer.headers(1, Buffer.from("h"), false)
    writer.data(1, small, false)
    writer.data(1, large, false)
    writer.windowUpdate(0, 1)
    const chunks = writer.take()!
    expect(chunks.map((c) => c.length)).toStrictEqual([10 + 9 + 1023 + 9, 1024, 13])
    expect(chunks[1]).toBe(large)
    expect(chunks[0]!.buffer).not.toBe(small.buffer)
    // The next turn continues in the same slab, after what the socket may still hold.
    writer.windowUpdate(0, 2)
    const [next] = writer.take()!
    expect([next!.buffer === chunks[2]!.buffer, next!.byteOffset]).toStrictEqual([true, chunks[2]!.byteOffset + 13])
  })

  it("never rewrites bytes it handed out: a full slab is replaced, not reused", () => {
    const writer = new FrameWriter({ slabBytes: 1024, copyBelow: 512 })
    writer.data(1, Buffer.alloc(500, 1), false)
    const [first] = writer.take()!
    const copy = Buffer.from(first!)
    for (let i = 0; i < 50; i++) {
      writer.data(1, Buffer.alloc(500, 2), false)
      writer.take()
    }
    expect(first).toStrictEqual(copy)
  })

  it("doubles its slab in a burst up to the cap, chains slabs past it, and drops back to the first size after", () => {
    const writer = new FrameWriter({ slabBytes: 4096, maxSlabBytes: 16_384, copyBelow: 1024 })
    for (let i = 0; i < 200; i++) writer.data(1, Buffer.alloc(1000, i), false)
    const burst = writer.take()!
    const slabs = [...new Set(burst.map((c) => c.buffer))].map((b) => b.byteLength)
    expect(slabs.slice(0, 3)).toStrictEqual([4096, 8192, 16_384])
    expect(Math.max(...slabs)).toBe(16_384)
    expect(burst.reduce((n, c) => n + c.length, 0)).toBe(200 * 1009)
    const rec = recorder()
    const reader = new FrameReader(rec, { role: "client" })
    reader.feed(Buffer.concat([Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), ...burst]))
    expect([rec.errors.length, rec.body(1).bytes.length]).toStrictEqual([0, 200 * 1000])
    writer.windowUpdate(0, 1)
    writer.take()
    writer.windowUpdate(0, 1)
    expect(writer.take()![0]!.buffer.byteLength).toBe(4096)
  })
})

describe("client preface", () => {
  it("is RFC 9113's 24 bytes", () => {
    expect(CLIENT_PREFACE.toString("latin1")).toBe("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
  })
})
