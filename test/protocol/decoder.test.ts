// Pins the incremental PacketDecoder (iip-protocol.md §2, §2.5): any split of a valid stream yields
// exactly the encoded packets, whole-in-chunk bodies are zero-copy views, and every broken rule
// (bad status, status 8, empty or unterminated path, length 0 or > 16 MiB, a header the sink
// rejects) stops decoding with its ProtocolError rule before any body byte is read or allocated.
import { afterEach, describe, expect, it, vi } from "vitest"
import { Limits } from "../../src/protocol/constants.ts"
import { type DecodeResult, type DecoderLimits, PacketDecoder } from "../../src/protocol/decoder.ts"
import { ProtocolError } from "../../src/protocol/errors.ts"
import { encodePacket } from "../../src/protocol/packet.ts"
import { type Prng, prng, randomSplit } from "../helpers/prng.ts"

interface Seen {
  readonly status: number
  readonly path: string
  readonly channelId: number
  readonly data: Buffer
}

/** A decoder whose sink accepts every header and records every packet (data copied). */
const recorder = (limits: Partial<DecoderLimits> = {}) => {
  const packets: Array<Seen> = []
  const headers: Array<[number, number]> = []
  const decoder = new PacketDecoder(
    {
      checkHeader: (status, channelId) => {
        headers.push([status, channelId])
        return undefined
      },
      onPacket: (status, path, channelId, data) => packets.push({ status, path, channelId, data: Buffer.from(data) })
    },
    limits
  )
  return { decoder, packets, headers }
}

/** Pushes every chunk; returns the first non-undefined result and how many chunks it took. */
const feed = (decoder: PacketDecoder, chunks: ReadonlyArray<Buffer>): { result: DecodeResult; used: number } => {
  for (let i = 0; i < chunks.length; i++) {
    const result = decoder.push(chunks[i]!)
    if (result !== undefined) return { result, used: i + 1 }
  }
  return { result: undefined, used: chunks.length }
}

const bytesOf = (buffer: Buffer): Array<Buffer> => Array.from(buffer, (_, i) => buffer.subarray(i, i + 1))

const header = (status: number, path: string, channelId: number, length: number): Buffer => {
  const fixed = Buffer.alloc(8)
  fixed.writeUInt32BE(channelId, 0)
  fixed.writeUInt32BE(length, 4)
  return Buffer.concat([Buffer.from([status]), Buffer.from(path, "utf8"), Buffer.from([0]), fixed])
}

const expectRule = (result: DecodeResult, rule: string) => {
  expect(result).toBeInstanceOf(ProtocolError)
  expect((result as ProtocolError).rule).toBe(rule)
}

const PATH_PIECES = ["/", "echo", "sys", "_", "?", "a=1", "&", "%20", "é", "中", "😀", "x", "/q"]

const randomPacket = (rng: Prng): Seen => {
  let path = ""
  const pieces = rng.int(1, 6)
  for (let i = 0; i < pieces; i++) path += rng.pick(PATH_PIECES)
  const size = rng.next() < 0.05 ? rng.int(1000, 70_000) : rng.int(1, 40)
  return {
    status: rng.int(0, 7),
    path,
    channelId: rng.pick([0, 1, 2, 255, 256, 65_536, 0x7fff_ffff, 0xffff_ffff, rng.int(0, 0xffff_ffff)]),
    data: rng.bytes(size)
  }
}

const encodeAll = (packets: ReadonlyArray<Seen>): Buffer =>
  Buffer.concat(packets.map((p) => encodePacket(p.status, p.path, p.channelId, p.data)))

const MiB16 = Limits.maxPacketData

afterEach(() => {
  vi.restoreAllMocks()
})

describe("PacketDecoder: valid streams", () => {
  it("property: any split of concatenated packets yields exactly those packets (300 seeds)", () => {
    for (let seed = 1; seed <= 300; seed++) {
      const rng = prng(seed)
      const packets = Array.from({ length: rng.int(1, 12) }, () => randomPacket(rng))
      const stream = encodeAll(packets)
      const { decoder, packets: seen } = recorder()
      const maxChunk = rng.pick([1, 2, 3, 7, 16, 64, 1024, 100_000])
      const { result } = feed(decoder, randomSplit(rng, stream, maxChunk))
      expect(result, `seed ${seed}`).toBeUndefined()
      expect(seen, `seed ${seed}`).toStrictEqual(packets)
      expect(decoder.idle, `seed ${seed}`).toBe(true)
    }
  })

  it("property: packets whose sink asks for parts (odd channels) arrive as views of the chunks, in order, first and last marked, nothing held (300 seeds)", () => {
    for (let seed = 2000; seed < 2300; seed++) {
      const rng = prng(seed)
      const packets = Array.from({ length: rng.int(1, 12) }, () => randomPacket(rng))
      const stream = encodeAll(packets)
      const seen: Array<Seen> = []
      let parts: Array<Buffer> = []
      let views = true
      // Kept as a flag and asserted once per seed: an expect per part (one per byte when split
      // into 1-byte chunks, about 700,000 in all) made this case 37 s under load.
      let firstMarked = true
      let holding = 0
      const chunks = randomSplit(rng, stream, rng.pick([1, 7, 64, 1024, 100_000]))
      let current: Buffer = Buffer.alloc(0)
      const decoder: PacketDecoder = new PacketDecoder({
        checkHeader: () => undefined,
        onPacket: (status, path, channelId, data) => seen.push({ status, path, channelId, data: Buffer.from(data) }),
        splits: (_status, channelId) => channelId % 2 === 1,
        onPart: (status, path, channelId, part, first, last) => {
          firstMarked &&= first === (parts.length === 0)
          views &&= part.buffer === current.buffer
          holding = Math.max(holding, decoder.pendingBytes)
          parts.push(Buffer.from(part))
          if (!last) return
          seen.push({ status, path, channelId, data: Buffer.concat(parts) })
          parts = []
        }
      })
      // One result kept and asserted per seed too: an expect per chunk (one per byte again) made
      // this case 7 s on a quiet machine and past the 30 s timeout beside another test file.
      let failure: unknown
      for (const chunk of chunks) {
        current = chunk
        failure = decoder.push(chunk)
        if (failure !== undefined) break
      }
      expect(failure, `seed ${seed}`).toBeUndefined()
      expect(seen, `seed ${seed}`).toStrictEqual(packets)
      expect(views, `seed ${seed}`).toBe(true)
      expect(firstMarked, `seed ${seed}: first marks the first part of each packet, and only it`).toBe(true)
      expect(holding, `seed ${seed}`).toBe(0)
      expect(decoder.idle, `seed ${seed}`).toBe(true)
    }
  })

  it("property: one byte at a time (50 seeds), idle only on packet boundaries", () => {
    for (let seed = 1000; seed < 1050; seed++) {
      const rng = prng(seed)
      const packets = Array.from({ length: rng.int(1, 5) }, () => ({ ...randomPacket(rng), data: rng.bytes(rng.int(1, 20)) }))
      const encoded = packets.map((p) => encodePacket(p.status, p.path, p.channelId, p.data))
      const boundaries = new Set<number>()
      let at = 0
      for (const e of encoded) boundaries.add((at += e.length))
      const stream = Buffer.concat(encoded)
      const { decoder, packets: seen } = recorder()
      for (let i = 0; i < stream.length; i++) {
        expect(decoder.push(stream.subarray(i, i + 1))).toBeUndefined()
        expect(decoder.idle, `seed ${seed} byte ${i}`).toBe(boundaries.has(i + 1))
      }
      expect(seen, `seed ${seed}`).toStrictEqual(packets)
    }
  })

  it("passes status and channel id to checkHeader once per packet", () => {
    const { decoder, headers } = recorder()
    const stream = Buffer.concat([
      encodePacket(0, "/a", 1, Buffer.from("x")),
      encodePacket(3, "/a", 0xffff_ffff, Buffer.from("y"))
    ])
    expect(feed(decoder, randomSplit(prng(7), stream, 3)).result).toBeUndefined()
    expect(headers).toStrictEqual([
      [0, 1],
      [3, 0xffff_ffff]
    ])
  })

  it("a body wholly inside the chunk is handed out as an exact view of it (no copy)", () => {
    const views: Array<Buffer> = []
    const decoder = new PacketDecoder({ checkHeader: () => undefined, onPacket: (_s, _p, _c, data) => views.push(data) })
    const first = encodePacket(1, "/echo", 1, Buffer.from("hello"))
    const second = encodePacket(5, "/x", 2, Buffer.from("AB"))
    const chunk = Buffer.concat([first, second])
    expect(decoder.push(chunk)).toBeUndefined()
    expect(views.map((v) => v.toString())).toStrictEqual(["hello", "AB"])
    expect(views[0]!.buffer).toBe(chunk.buffer)
    expect(views[0]!.byteOffset).toBe(chunk.byteOffset + first.length - 5)
    expect(views[0]!.length).toBe(5)
    expect(views[1]!.buffer).toBe(chunk.buffer)
    expect(views[1]!.byteOffset).toBe(chunk.byteOffset + chunk.length - 2)
    expect(views[1]!.length).toBe(2)
  })

  it("a header split from its body also gives a view when the body arrives whole", () => {
    const views: Array<Buffer> = []
    const decoder = new PacketDecoder({ checkHeader: () => undefined, onPacket: (_s, _p, _c, data) => views.push(data) })
    const packet = encodePacket(1, "/echo", 1, Buffer.from("hello"))
    expect(decoder.push(packet.subarray(0, 3))).toBeUndefined()
    const rest = packet.subarray(3)
    expect(decoder.push(rest)).toBeUndefined()
    expect(views[0]!.toString()).toBe("hello")
    expect(views[0]!.buffer).toBe(rest.buffer)
  })

  it("paths read from the same reused memory: a repeated one and one with other bytes of the same length both decode right", () => {
    const { decoder, packets } = recorder()
    const memory = Buffer.alloc(64)
    const read = (path: string) => {
      const packet = encodePacket(1, path, 1, Buffer.from("x"))
      packet.copy(memory)
      expect(decoder.push(memory.subarray(0, packet.length))).toBeUndefined()
    }
    for (const path of ["/echo", "/echo", "/echa", "/éch", "/echo", "/echo"]) read(path)
    expect(packets.map((p) => p.path)).toStrictEqual(["/echo", "/echo", "/echa", "/éch", "/echo", "/echo"])
  })

  it("a body split across chunks is assembled into one buffer of exactly its length", () => {
    const { decoder, packets } = recorder()
    const packet = encodePacket(1, "/p", 9, Buffer.from("0123456789"))
    expect(feed(decoder, [packet.subarray(0, 15), packet.subarray(15, 17), packet.subarray(17)]).result).toBeUndefined()
    expect(packets).toStrictEqual([{ status: 1, path: "/p", channelId: 9, data: Buffer.from("0123456789") }])
  })

  it("a path of exactly maxPathBytes is accepted, in one chunk and split", () => {
    const packet = encodePacket(1, "/abc", 1, Buffer.from("x"))
    for (const chunks of [[packet], bytesOf(packet)]) {
      const { decoder, packets } = recorder({ maxPathBytes: 4 })
      expect(feed(decoder, chunks).result).toBeUndefined()
      expect(packets.map((p) => p.path)).toStrictEqual(["/abc"])
    }
  })

  it("stop() in onPacket ends decoding: later packets of the same chunk are not delivered", () => {
    const paths: Array<string> = []
    const decoder: PacketDecoder = new PacketDecoder({
      checkHeader: () => undefined,
      onPacket: (_s, path) => {
        paths.push(path)
        decoder.stop()
      }
    })
    const chunk = Buffer.concat([encodePacket(1, "/a", 1, Buffer.from("x")), encodePacket(1, "/b", 1, Buffer.from("y"))])
    expect(decoder.push(chunk)).toBeUndefined()
    expect(decoder.push(encodePacket(1, "/c", 1, Buffer.from("z")))).toBeUndefined()
    expect(paths).toStrictEqual(["/a"])
  })
})

describe("PacketDecoder: data length", () => {
  it("0xFFFFFFFF: length-too-large as soon as the 4 length bytes arrive, nothing allocated", () => {
    for (const split of ["one chunk", "byte by byte"] as const) {
      const alloc = vi.spyOn(Buffer, "allocUnsafe")
      const bytes = header(1, "/echo", 1, 0xffff_ffff)
      const { decoder, packets } = recorder()
      const chunks = split === "one chunk" ? [bytes] : bytesOf(bytes)
      const { result, used } = feed(decoder, chunks)
      expectRule(result, "length-too-large")
      expect(used, split).toBe(chunks.length) // the error comes with the last length byte, no body byte needed
      expect(alloc.mock.calls.filter(([size]) => size > MiB16)).toStrictEqual([])
      expect(packets).toStrictEqual([])
      // Later bytes are ignored: the connection is closing.
      expect(decoder.push(Buffer.from("body"))).toBeUndefined()
      expect(packets).toStrictEqual([])
      vi.restoreAllMocks()
    }
  })

  it("16 MiB + 1: length-too-large before any body byte", () => {
    const alloc = vi.spyOn(Buffer, "allocUnsafe")
    const bytes = header(1, "/echo", 1, MiB16 + 1)
    for (const chunks of [[bytes], bytesOf(bytes)]) {
      const { decoder } = recorder()
      const { result, used } = feed(decoder, chunks)
      expectRule(result, "length-too-large")
      expect(used).toBe(chunks.length)
    }
    expect(alloc.mock.calls.filter(([size]) => size > MiB16)).toStrictEqual([])
  })

  it("exactly 16 MiB is accepted, whole and split", () => {
    const data = Buffer.alloc(MiB16, 0x61)
    data[0] = 0x41
    data[MiB16 - 1] = 0x5a
    const packet = encodePacket(1, "/big", 3, data)
    expect(packet.length).toBe(Limits.packetOverhead + 4 + MiB16)
    const cases: ReadonlyArray<ReadonlyArray<Buffer>> = [
      [packet],
      [packet.subarray(0, 7), packet.subarray(7, 20), packet.subarray(20, 1 << 20), packet.subarray(1 << 20)]
    ]
    for (const chunks of cases) {
      const alloc = vi.spyOn(Buffer, "allocUnsafe")
      let got: Buffer | undefined
      const decoder = new PacketDecoder({
        checkHeader: () => undefined,
        onPacket: (status, path, channelId, d) => {
          expect([status, path, channelId]).toStrictEqual([1, "/big", 3])
          got = d
        }
      })
      expect(feed(decoder, chunks).result).toBeUndefined()
      expect(got?.length).toBe(MiB16)
      expect(got!.equals(data)).toBe(true)
      expect(decoder.idle).toBe(true)
      // Whole: a view, nothing allocated. Split: one buffer of exactly the length (this also shows the
      // spy sees the decoder's allocations, so the "nothing huge allocated" checks above are not vacuous).
      expect(alloc.mock.calls.filter(([size]) => size >= 1 << 20)).toStrictEqual(chunks.length === 1 ? [] : [[MiB16]])
      vi.restoreAllMocks()
    }
  })

  it("0: length-zero, in one chunk and byte by byte", () => {
    const bytes = header(1, "/echo", 1, 0)
    for (const chunks of [[bytes], bytesOf(bytes)]) {
      const { decoder, packets } = recorder()
      const { result, used } = feed(decoder, chunks)
      expectRule(result, "length-zero")
      expect(used).toBe(chunks.length)
      expect(packets).toStrictEqual([])
    }
  })

  it("a custom maxDataBytes is inclusive", () => {
    const ok = recorder({ maxDataBytes: 3 })
    expect(ok.decoder.push(encodePacket(1, "/a", 1, Buffer.from("abc")))).toBeUndefined()
    expect(ok.packets).toHaveLength(1)
    const tooLong = recorder({ maxDataBytes: 3 })
    expectRule(tooLong.decoder.push(encodePacket(1, "/a", 1, Buffer.from("abcd"))), "length-too-large")
  })
})

describe("PacketDecoder: status byte", () => {
  it.each([9, 10, 0x7f, 0xff])("status %i: invalid-status on the first byte", (status) => {
    const { decoder, headers } = recorder()
    expectRule(decoder.push(Buffer.from([status])), "invalid-status")
    expect(headers).toStrictEqual([])
  })

  it("status 8 as the first byte: close, without reading anything after it", () => {
    const { decoder, packets, headers } = recorder()
    expect(decoder.push(Buffer.from([8]))).toBe("close")
    const full = recorder()
    // The rest of the chunk (here a whole valid-looking packet) is not looked at.
    expect(full.decoder.push(encodePacket(8, "/testpath", 1234, Buffer.from("test data")))).toBe("close")
    expect([packets, headers, full.packets, full.headers]).toStrictEqual([[], [], [], []])
  })

  it("status 8 after a valid packet in the same chunk: the packet is delivered, then close", () => {
    const { decoder, packets } = recorder()
    const chunk = Buffer.concat([encodePacket(1, "/a", 1, Buffer.from("x")), Buffer.from([8, 0x2f])])
    expect(decoder.push(chunk)).toBe("close")
    expect(packets.map((p) => p.path)).toStrictEqual(["/a"])
  })

  it("status 9 after a valid packet: invalid-status", () => {
    const { decoder, packets } = recorder()
    const chunk = Buffer.concat([encodePacket(5, "/a", 1, Buffer.from("x")), Buffer.from([9])])
    expectRule(decoder.push(chunk), "invalid-status")
    expect(packets).toHaveLength(1)
  })
})

describe("PacketDecoder: path", () => {
  it("empty path: path-empty (one chunk and split), checkHeader not called", () => {
    const bytes = Buffer.from("01000000000100000001" + "78", "hex")
    for (const chunks of [[bytes], bytesOf(bytes)]) {
      const { decoder, headers } = recorder()
      const { result, used } = feed(decoder, chunks)
      expectRule(result, "path-empty")
      expect(used).toBe(Math.min(2, chunks.length)) // status byte then the NUL
      expect(headers).toStrictEqual([])
    }
  })

  it("no NUL within maxPathBytes: path-too-long, in one chunk", () => {
    const { decoder, headers } = recorder({ maxPathBytes: 4 })
    expectRule(decoder.push(Buffer.concat([Buffer.from([1]), Buffer.from("/abcdefgh")])), "path-too-long")
    expect(headers).toStrictEqual([])
  })

  it("no NUL within maxPathBytes: path-too-long on the first byte beyond the limit, when split", () => {
    const bytes = Buffer.concat([Buffer.from([1]), Buffer.from("/abcdefgh")])
    for (const chunks of [bytesOf(bytes), [bytes.subarray(0, 3), bytes.subarray(3, 5), bytes.subarray(5)]]) {
      const { decoder } = recorder({ maxPathBytes: 4 })
      const { result, used } = feed(decoder, chunks)
      expectRule(result, "path-too-long")
      if (chunks.length === bytes.length) expect(used).toBe(1 + 4 + 1) // status, 4 path bytes, then the 5th
    }
  })

  it("a NUL found beyond the limit in one chunk is still path-too-long", () => {
    const { decoder } = recorder({ maxPathBytes: 4 })
    expectRule(decoder.push(encodePacket(1, "/abcd", 1, Buffer.from("x"))), "path-too-long")
  })

  it("the default receive limit is Limits.maxReceivePathBytes", () => {
    const atLimit = "/" + "a".repeat(Limits.maxReceivePathBytes - 1)
    const bytes = Buffer.concat([header(1, atLimit, 1, 1), Buffer.from("x")])
    const ok = recorder()
    expect(ok.decoder.push(bytes)).toBeUndefined()
    expect(ok.packets[0]!.path).toBe(atLimit)
    const over = recorder()
    expectRule(over.decoder.push(Buffer.concat([header(1, atLimit + "b", 1, 1), Buffer.from("x")])), "path-too-long")
  })

  it("a multi-byte UTF-8 path split inside a character decodes whole", () => {
    const packet = encodePacket(1, "/中文/😀", 1, Buffer.from("x"))
    const { decoder, packets } = recorder()
    expect(feed(decoder, [packet.subarray(0, 3), packet.subarray(3, 9), packet.subarray(9)]).result).toBeUndefined()
    expect(packets[0]!.path).toBe("/中文/😀")
  })
})

describe("PacketDecoder: checkHeader", () => {
  const refusal = new ProtocolError({ rule: "invalid-channel", message: "invalid channel id: 7" })

  it("an error from checkHeader stops decoding before the length is used or the body allocated", () => {
    for (const length of [0, 5, MiB16 + 1, 0xffff_ffff]) {
      const bytes = Buffer.concat([header(2, "/echo", 7, length), Buffer.from("hello")])
      for (const chunks of [[bytes], bytesOf(bytes)]) {
        const alloc = vi.spyOn(Buffer, "allocUnsafe")
        const seen: Array<[number, number]> = []
        const packets: Array<Buffer> = []
        const decoder = new PacketDecoder({
          checkHeader: (status, channelId) => {
            seen.push([status, channelId])
            return refusal
          },
          onPacket: (_s, _p, _c, data) => packets.push(data)
        })
        const { result, used } = feed(decoder, chunks)
        expect(result).toBe(refusal) // not length-zero / length-too-large: the header check comes first
        expect(seen).toStrictEqual([[2, 7]])
        expect(packets).toStrictEqual([])
        // Byte by byte: the channel is judged as soon as its 4 bytes are in, before the length
        // (status + "/echo" + NUL + channel id), as the reference does.
        if (chunks.length > 1) expect(used).toBe(1 + 5 + 1 + 4)
        expect(alloc).not.toHaveBeenCalled()
        vi.restoreAllMocks()
      }
    }
  })

  it("a refused second packet still lets the first one through", () => {
    let calls = 0
    const paths: Array<string> = []
    const decoder = new PacketDecoder({
      checkHeader: () => (++calls === 2 ? refusal : undefined),
      onPacket: (_s, path) => paths.push(path)
    })
    const chunk = Buffer.concat([encodePacket(1, "/a", 1, Buffer.from("x")), encodePacket(1, "/b", 1, Buffer.from("y"))])
    expect(decoder.push(chunk)).toBe(refusal)
    expect(paths).toStrictEqual(["/a"])
  })
})
