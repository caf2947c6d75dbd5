// Pins mesh compression's bytes and rules (PROTOCOL.md §10, §12.1, §13, §16): the hello's
// `compression` field and the acceptor's pick, the envelope flag 02 and chunk header 02 with
// fixed zstd and gzip frames that must always read back, the threshold and the 90 % rule, the
// stream back-off, and the refusals (corrupt, expanding past one chunk, no codec agreed).
import * as zlib from "node:zlib"
import { describe, expect, it } from "vitest"
import { Compression, compressionFor, DecompressionFailed, offeredCodecs, pickCodec, unpack } from "../../src/protocol/compression.ts"
import { ChunkHeader, decodeEnvelope, decodeHello, encodeEnvelope, encodeHello, EnvelopeFlag, EnvelopeKind, MeshFeatures } from "../../src/protocol/mesh.ts"
import { encodePacket } from "../../src/protocol/packet.ts"
import { prng } from "../helpers/prng.ts"
import { jsonLike } from "../helpers/jsonLike.ts"

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex")
const json = (text: string) => Buffer.from(text).toString("hex")
/** A vector as PROTOCOL.md writes it, fields apart. */
const spaced = (vector: string) => vector.replace(/ /g, "")
const hello = { version: 1, node: "a", features: [...MeshFeatures], maxMetaBytes: 8192, streamWindow: 262144, maxChannels: 1024 }
const base = '"features":["ping","drain","cancel","deadline","stream","push","reverse","meta","trailers","close","refuse","conncredit"],"maxMetaBytes":8192,"streamWindow":262144,"maxChannels":1024'
/** 1024 bytes of "a": zstd (level 3, checksum, content size) and gzip (level 1) frames, as §16 shows them. */
const aaaa = Buffer.alloc(1024, 0x61)
const zstdFrame = Buffer.from("28b52ffd6400034d00001061610100fb2b800509986b45", "hex")
const gzipFrame = Buffer.from("1f8b08000000000004034b4c1c05a321301a0223350400b997557c00040000", "hex")


describe("compression vectors", () => {
  it("the hello offers codecs in `compression`; the answer names the acceptor's pick; without codecs the field is absent", () => {
    const offer = encodeHello({ ...hello, compression: ["zstd", "gzip"] }, false)
    const body = `{"iipmesh":1,"node":"a",${base},"compression":["zstd","gzip"]}`
    expect(hex(encodePacket(1, "/sys/hello", 0, offer))).toBe(`012f7379732f68656c6c6f0000000000000000ed${json(body)}`)
    const answer = encodeHello({ ...hello, node: "b", compression: ["zstd"] }, true)
    expect(hex(encodePacket(5, "/sys/hello", 0, answer))).toBe(`052f7379732f68656c6c6f0000000000000000ef${json(`{"code":0,"iipmesh":1,"node":"b",${base},"compression":["zstd"]}`)}`)
    expect(decodeHello(answer)?.compression).toStrictEqual(["zstd"])
    // No codec: the same bytes as before compression existed (§16's first vector).
    expect(encodeHello({ ...hello, compression: [] }, false).toString()).toBe(`{"iipmesh":1,"node":"a",${base}}`)
    expect(decodeHello(encodeHello(hello, false))?.compression).toBeUndefined()
  })

  it("the acceptor picks the first of its own codecs that the dialer offers; unknown names are ignored", () => {
    expect(pickCodec(["zstd", "gzip"], ["zstd", "gzip"])).toBe("zstd")
    expect(pickCodec(["zstd", "gzip"], ["gzip", "zstd"])).toBe("zstd")
    expect(pickCodec(["gzip", "zstd"], ["zstd", "gzip"])).toBe("gzip")
    expect(pickCodec(["zstd", "gzip"], ["gzip"])).toBe("gzip")
    expect(pickCodec(["zstd"], ["gzip"])).toBeUndefined()
    expect(pickCodec([], ["zstd", "gzip"])).toBeUndefined()
    expect(pickCodec(["brotli", "zstd"], ["brotli", "zstd"])).toBe("zstd")
    expect(offeredCodecs(undefined)).toStrictEqual(["zstd", "gzip"])
    expect(offeredCodecs(false)).toStrictEqual([])
    expect(offeredCodecs({ codecs: ["gzip"] })).toStrictEqual(["gzip"])
  })

  it("a compressed answer: envelope flags 02 before the frame; the fixed zstd and gzip frames read back", () => {
    const data = encodeEnvelope(EnvelopeKind.response, EnvelopeFlag.compressed, 1, new Map(), zstdFrame, 8192)
    expect(hex(encodePacket(5, "/x", 1, data))).toBe(spaced(`05 2f78 00 00000001 0000001f  02 02 0000 00000001  ${hex(zstdFrame)}`))
    const envelope = decodeEnvelope(data, 8192)
    expect(envelope.flags & EnvelopeFlag.compressed).toBe(2)
    expect(unpack("zstd", data.subarray(envelope.bodyOffset))).toStrictEqual(aaaa)
    expect(unpack("gzip", gzipFrame)).toStrictEqual(aaaa)
    // A push keeps its one-way bit beside the compressed bit.
    expect(encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway | EnvelopeFlag.compressed, 9, new Map(), zstdFrame, 8192)[1]).toBe(0x03)
  })

  it("a compressed chunk of a stream: header byte 02 before the frame", () => {
    const chunk = Buffer.concat([Buffer.of(ChunkHeader.compressed), zstdFrame])
    expect(hex(encodePacket(6, "/x", 1, chunk))).toBe(spaced(`06 2f78 00 00000001 00000018  02 ${hex(zstdFrame)}`))
    expect(ChunkHeader).toStrictEqual({ data: 0, error: 1, compressed: 2, trailers: 3 })
  })

  it("what we compress reads back with either codec (zstd frames carry their checksum)", () => {
    const body = jsonLike(32 * 1024)
    for (const codec of ["zstd", "gzip"] as const) {
      const packed = new Compression(codec, 1024).pack(body)!
      expect(packed.length).toBeLessThan(body.length / 4)
      expect(unpack(codec, packed)).toStrictEqual(body)
    }
    const zstd = new Compression("zstd", 1024).pack(body)!
    // Frame header descriptor: checksum flag (bit 2) set.
    expect(zstd.subarray(0, 4).toString("hex")).toBe("28b52ffd")
    expect(zstd[4]! & 0x04).toBe(0x04)
  })
})

describe("compression rules", () => {
  it("below the threshold nothing is tried; above it, only a result of at most 90 % is used", () => {
    const compression = new Compression("zstd", 1024)
    expect(compression.pack(Buffer.alloc(1023, 0x61))).toBeUndefined()
    expect(compression.pack(Buffer.alloc(1024, 0x61))).toBeDefined()
    expect(compression.pack(prng(7).bytes(32 * 1024))).toBeUndefined()
    // Mostly random with a compressible tail: shrinks, but not to 90 %.
    const mixed = Buffer.concat([prng(8).bytes(9 * 1024), Buffer.alloc(1024, 0x20)])
    expect(zlib.zstdCompressSync(mixed).length).toBeLessThan(mixed.length)
    expect(compression.pack(mixed)).toBeUndefined()
  })

  it("a side that did not ask to compress only reads: its threshold is Infinity; no codec agreed, no compression", () => {
    expect(compressionFor("zstd", undefined)!.minBytes).toBe(Infinity)
    expect(compressionFor("zstd", undefined)!.pack(jsonLike(60 * 1024))).toBeUndefined()
    expect(compressionFor("gzip", {})!.minBytes).toBe(1024)
    expect(compressionFor("zstd", { minBytes: 4096 })!.minBytes).toBe(4096)
    expect(compressionFor(undefined, {})).toBeUndefined()
  })

  it("a stream backs off after a chunk that does not shrink: the next 1, 2, 4 ... chunks go as they are; a hit resets it", () => {
    const packer = new Compression("zstd", 1024).streamPacker()
    const random = prng(9)
    const compressible = jsonLike(8192)
    const miss = () => expect(packer.pack(random.bytes(4096))).toBeUndefined()
    const hits = (n: number) => Array.from({ length: n }, () => packer.pack(compressible) !== undefined)
    // Tried and missed (skip 1), skipped, tried and missed (skip 2): the next two compressible chunks go as they are.
    miss()
    miss()
    miss()
    expect(hits(5)).toStrictEqual([false, false, true, true, true])
    // The hit reset the back-off: one miss skips one chunk.
    miss()
    expect(hits(2)).toStrictEqual([false, true])
    // Chunks under the threshold are never tried and do not count.
    expect(packer.pack(Buffer.alloc(100, 0x61))).toBeUndefined()
    expect(hits(1)).toStrictEqual([true])
  })

  it("refuses a corrupt frame, a frame expanding past 64 KiB, and a flagged body with no codec agreed", () => {
    const corrupt = Buffer.from(zstdFrame)
    corrupt[corrupt.length - 2]! ^= 0x01 // inside the checksum
    const bomb = zlib.zstdCompressSync(Buffer.alloc(64 * 1024 + 1))
    expect(bomb.length).toBeLessThan(64)
    const cases: Array<[string | undefined, Buffer, RegExp]> = [
      ["zstd", corrupt, /zstd body cannot be decompressed/],
      ["zstd", Buffer.from("not a zstd frame"), /zstd body cannot be decompressed/],
      ["gzip", Buffer.from(gzipFrame.subarray(0, 12)), /gzip body cannot be decompressed/],
      ["zstd", bomb, /expands past 65536 bytes/],
      [undefined, zstdFrame, /no codec was agreed/]
    ]
    for (const [codec, data, message] of cases) {
      let caught: unknown
      try {
        unpack(codec as "zstd" | undefined, data)
      } catch (error) {
        caught = error
      }
      expect(caught).toBeInstanceOf(DecompressionFailed)
      expect((caught as DecompressionFailed)._tag).toBe("DecompressionFailed")
      expect((caught as DecompressionFailed).message).toMatch(message)
    }
    // Exactly 64 KiB is one chunk: allowed.
    expect(unpack("zstd", zlib.zstdCompressSync(Buffer.alloc(64 * 1024))).length).toBe(64 * 1024)
  })
})
