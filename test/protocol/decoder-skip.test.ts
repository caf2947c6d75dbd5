// Pins PacketDecoder's skipping (limitPackets, skipPacket): under any split of the byte stream, a
// packet its sink marks at checkHeader, or one above the oversize limit, is handed to onOversize
// exactly once with exactly its first `prefix` bytes and its declared length, as soon as those are
// read (before the rest of it), and its rest never reaches onPacket or onPart; the packets around
// it arrive exactly as sent; the decoder is idle only on packet boundaries and holds no more than
// the prefix of a skipped packet.
import { describe, expect, it } from "vitest"
import { Limits } from "../../src/protocol/constants.ts"
import { PacketDecoder } from "../../src/protocol/decoder.ts"
import { encodePacket } from "../../src/protocol/packet.ts"
import { prng, randomSplit } from "../helpers/prng.ts"

type Event =
  | { readonly kind: "packet"; readonly status: number; readonly channelId: number; readonly data: Buffer }
  | { readonly kind: "oversize"; readonly status: number; readonly channelId: number; readonly prefix: Buffer; readonly length: number }

const PREFIX = 24
const OVERSIZE = 200
/** Status, "/p", its NUL, channel id and length. */
const HEADER = 12

/** Skipped by the sink at its header: channels whose id is a multiple of 3. */
const skips = (channelId: number) => channelId % 3 === 0

describe("PacketDecoder: skipped packets under any split", () => {
  it("property: each skipped or oversize packet gives one onOversize with its prefix, nothing of its rest; the others arrive whole (400 seeds)", () => {
    for (let seed = 1; seed <= 400; seed++) {
      const rng = prng(seed)
      const sent: Array<{ status: number; channelId: number; data: Buffer }> = []
      for (let n = rng.int(1, 10); n > 0; n--) {
        // Lengths around the edges: 1, the prefix, prefix + 1, the oversize limit and past it.
        const length = rng.pick([1, 2, PREFIX - 1, PREFIX, PREFIX + 1, OVERSIZE, OVERSIZE + 1, rng.int(1, 600)])
        sent.push({ status: rng.int(0, 7), channelId: rng.int(0, 8), data: rng.bytes(length) })
      }
      const expected: Array<Event> = sent.map(({ status, channelId, data }) =>
        data.length > OVERSIZE || (skips(channelId) && data.length > PREFIX)
          ? { kind: "oversize", status, channelId, prefix: data.subarray(0, PREFIX), length: data.length }
          : { kind: "packet", status, channelId, data }
      )
      const encoded = sent.map((p) => encodePacket(p.status, "/p", p.channelId, p.data))
      const stream = Buffer.concat(encoded)
      // Where each packet's prefix ends in the stream: its onOversize comes once those bytes are pushed.
      const prefixEnds: Array<number> = []
      let at = 0
      for (const e of encoded) {
        prefixEnds.push(at + HEADER + PREFIX)
        at += e.length
      }
      const seen: Array<Event> = []
      let pushed = 0
      let chunkStart = 0
      let early = true
      let maxPending = 0
      const decoder: PacketDecoder = new PacketDecoder({
        checkHeader: (_status, channelId) => {
          if (skips(channelId)) decoder.skipPacket()
          return undefined
        },
        onPacket: (status, _path, channelId, data) => seen.push({ kind: "packet", status, channelId, data: Buffer.from(data) }),
        onOversize: (status, _path, channelId, prefix, length) => {
          // Handed on while the chunk holding the prefix's last byte is pushed, not once the rest is skipped: its refusal goes out at once.
          const prefixEnd = prefixEnds[seen.length]!
          early &&= chunkStart < prefixEnd && prefixEnd <= pushed
          seen.push({ kind: "oversize", status, channelId, prefix: Buffer.from(prefix), length })
        },
        splits: () => false
      })
      decoder.limitPackets(OVERSIZE, PREFIX)
      for (const chunk of randomSplit(rng, stream, rng.pick([1, 2, 9, 13, 64, 4096]))) {
        chunkStart = pushed
        pushed += chunk.length
        expect(decoder.push(chunk), `seed ${seed}`).toBeUndefined()
        maxPending = Math.max(maxPending, decoder.pendingBytes)
      }
      expect(seen, `seed ${seed}`).toStrictEqual(expected)
      expect(early, `seed ${seed}`).toBe(true)
      expect(decoder.idle, `seed ${seed}`).toBe(true)
      expect(decoder.skipsPacket, `seed ${seed}`).toBe(false)
      expect(maxPending, `seed ${seed}`).toBeLessThanOrEqual(OVERSIZE)
    }
  })

  it("a skipped packet ending exactly at a read, then the next header split byte by byte", () => {
    const seen: Array<string> = []
    const decoder: PacketDecoder = new PacketDecoder({
      checkHeader: (_status, channelId) => {
        if (channelId === 3) decoder.skipPacket()
        return undefined
      },
      onPacket: (_status, _path, channelId, data) => seen.push(`packet ${channelId} ${data.length}`),
      onOversize: (_status, _path, channelId, prefix, length) => seen.push(`oversize ${channelId} ${prefix.length}/${length}`)
    })
    decoder.limitPackets(1 << 20, PREFIX)
    const skipped = encodePacket(1, "/p", 3, Buffer.alloc(100_000, 1))
    // The prefix and a little more, then the rest in many reads, the last ending on the boundary.
    expect(decoder.push(skipped.subarray(0, HEADER + 2 + PREFIX))).toBeUndefined()
    expect(seen).toEqual([`oversize 3 ${PREFIX}/100000`])
    expect(decoder.skipsPacket).toBe(true)
    for (let at = HEADER + 2 + PREFIX; at < skipped.length; at += 7000) expect(decoder.push(skipped.subarray(at, Math.min(at + 7000, skipped.length)))).toBeUndefined()
    expect(decoder.idle).toBe(true)
    expect(decoder.skipsPacket).toBe(false)
    // The next packet on the same channel, not skipped this time: its header one byte at a time.
    const next = encodePacket(1, "/p", 4, Buffer.alloc(50, 2))
    for (let i = 0; i < next.length; i++) expect(decoder.push(next.subarray(i, i + 1))).toBeUndefined()
    expect(seen).toEqual([`oversize 3 ${PREFIX}/100000`, "packet 4 50"])
  })

  it("a skipped packet of the largest length (16 MiB) is read holding only its prefix; one of length 0 is still length-zero", () => {
    const seen: Array<string> = []
    let most = 0
    const decoder: PacketDecoder = new PacketDecoder({
      checkHeader: () => {
        decoder.skipPacket()
        return undefined
      },
      onPacket: (_status, _path, channelId) => seen.push(`packet ${channelId}`),
      onOversize: (_status, _path, channelId, prefix, length) => seen.push(`oversize ${channelId} ${prefix.length}/${length}`)
    })
    decoder.limitPackets(Infinity, PREFIX)
    const header = encodePacket(1, "/p", 3, Buffer.alloc(1)).subarray(0, HEADER)
    header.writeUInt32BE(Limits.maxPacketData, HEADER - 4)
    expect(decoder.push(header)).toBeUndefined()
    const mib = Buffer.alloc(1024 * 1024, 7)
    for (let i = 0; i < 16; i++) {
      expect(decoder.push(mib)).toBeUndefined()
      most = Math.max(most, decoder.pendingBytes)
    }
    expect(seen).toEqual([`oversize 3 ${PREFIX}/${Limits.maxPacketData}`])
    expect(most).toBeLessThanOrEqual(PREFIX)
    expect(decoder.idle).toBe(true)
    const empty = encodePacket(1, "/p", 3, Buffer.alloc(1)).subarray(0, HEADER)
    empty.writeUInt32BE(0, HEADER - 4)
    expect(decoder.push(empty)).toMatchObject({ rule: "length-zero" })
  })
})
