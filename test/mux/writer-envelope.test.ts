// The writer encodes a mesh message's first packet from its parts (src/mux/writer.ts
// sendEnvelope, src/mux/batch.ts) straight into its batch instead of a buffer per message: the
// bytes on the wire are exactly those of the envelope encoded on its own (src/protocol/mesh.ts
// encodeEnvelope), for small bodies copied into the batch, large ones written by reference, a
// message queued behind its channel's stream chunks, metadata with a deadline entry, and a batch
// mixing envelope packets with plain ones; bad metadata throws at the send and queues nothing.
import { describe, expect, it, vi } from "vitest"
import { PacketWriter } from "../../src/mux/writer.ts"
import { EnvelopeError, encodeEnvelope, EnvelopeFlag, EnvelopeKind } from "../../src/protocol/mesh.ts"
import { encodePacket } from "../../src/protocol/packet.ts"
import { recordingSink } from "../support/recordingSink.ts"

const tick = () => new Promise<void>((resolve) => setImmediate(resolve))
const limits = { highWaterBytes: 1 << 30, maxQueuedBytes: 1 << 30 }
const meta = new Map([["traceparent", "00-abc-def-01"], ["deadline-ms", "99"], ["ключ", "значение"]])

describe("PacketWriter.sendEnvelope", () => {
  it("writes the same bytes as encodeEnvelope, small and large bodies, plain packets between", async () => {
    const { wire, sink } = recordingSink()
    const writer = new PacketWriter(sink, limits)
    const small = Buffer.from("a small body")
    const large = Buffer.alloc(20 * 1024, 0x61)
    writer.sendEnvelope(1, "/a", 3, EnvelopeKind.request, 0, 7, meta, 8192, 250, small)
    writer.send(1, "/plain", 4, Buffer.from("plain"))
    writer.sendEnvelope(1, "/b", 5, EnvelopeKind.response, EnvelopeFlag.compressed, 0xffff_fffe, new Map(), 8192, 0, large)
    writer.sendEnvelope(1, "/c", 6, EnvelopeKind.error, 0, 9, meta, 8192, 0, Buffer.from("{}"))
    await tick()
    expect(wire().equals(Buffer.concat([
      encodePacket(1, "/a", 3, encodeEnvelope(EnvelopeKind.request, 0, 7, meta, small, 8192, 250)),
      encodePacket(1, "/plain", 4, Buffer.from("plain")),
      encodePacket(1, "/b", 5, encodeEnvelope(EnvelopeKind.response, EnvelopeFlag.compressed, 0xffff_fffe, new Map(), large, 8192)),
      encodePacket(1, "/c", 6, encodeEnvelope(EnvelopeKind.error, 0, 9, meta, Buffer.from("{}"), 8192))
    ]))).toBe(true)
    expect(writer.pendingBytes).toBe(0)
  })

  it("a message sent behind its channel's stream chunks keeps its place, with the same bytes", async () => {
    const { wire, sink, taken } = recordingSink()
    const writer = new PacketWriter(sink, limits)
    const chunk = Buffer.alloc(64 * 1024, 1)
    // Its deadline is what is left when it is written (writer-lanes.test.ts): the (monotonic) clock stands still here.
    vi.useFakeTimers({ toFake: ["performance"] })
    try {
      writer.sendChunk(2, "/up", 5, 0, chunk)
      writer.sendChunk(2, "/up", 5, 0, chunk)
      writer.sendEnvelope(1, "/next", 5, EnvelopeKind.request, 0, 2, meta, 8192, 10, Buffer.from("next"))
      for (let i = 0; i < 5; i++) {
        await tick()
        taken()
      }
    } finally {
      vi.useRealTimers()
    }
    const chunkPacket = encodePacket(2, "/up", 5, Buffer.concat([Buffer.of(0), chunk]))
    expect(wire().equals(Buffer.concat([chunkPacket, chunkPacket, encodePacket(1, "/next", 5, encodeEnvelope(EnvelopeKind.request, 0, 2, meta, Buffer.from("next"), 8192, 10))]))).toBe(true)
    expect(writer.pendingBytes).toBe(0)
  })

  it("batches written one after another (their arrays reused) carry only their own packets: a small batch after a larger one, after a burst", async () => {
    const { wire, sink } = recordingSink()
    const writer = new PacketWriter(sink, limits)
    const expected: Array<Buffer> = []
    const envelope = (path: string, channel: number, requestId: number, m: Map<string, string>, body: Buffer, deadlineMs: number) => {
      writer.sendEnvelope(1, path, channel, EnvelopeKind.request, 0, requestId, m, 8192, deadlineMs, body)
      expected.push(encodePacket(1, path, channel, encodeEnvelope(EnvelopeKind.request, 0, requestId, m, body, 8192, deadlineMs)))
    }
    const plain = (path: string, channel: number, body: Buffer) => {
      writer.send(1, path, channel, body)
      expected.push(encodePacket(1, path, channel, body))
    }
    envelope("/a", 3, 1, meta, Buffer.from("first batch, envelope"), 250)
    plain("/plain", 4, Buffer.from("first batch, plain"))
    envelope("/b", 5, 2, new Map(), Buffer.from("first batch, no metadata"), 0)
    await tick()
    plain("/after", 6, Buffer.from("second batch, one plain packet"))
    await tick()
    for (let i = 0; i < 300; i++) envelope("/burst", 7, 100 + i, i % 2 === 0 ? meta : new Map(), Buffer.from(`burst ${i}`), i % 3 === 0 ? 0 : 1000 + i)
    await tick()
    envelope("/last", 8, 9, new Map(), Buffer.from("after the burst"), 5)
    await tick()
    expect(wire().equals(Buffer.concat(expected))).toBe(true)
    expect(writer.pendingBytes).toBe(0)
  })

  it("metadata over the limit throws EnvelopeError at the send and queues nothing", async () => {
    const { wire, sink } = recordingSink()
    const writer = new PacketWriter(sink, limits)
    expect(() => writer.sendEnvelope(1, "/a", 3, EnvelopeKind.request, 0, 1, new Map([["k", "v".repeat(100)]]), 64, 0, Buffer.from("x"))).toThrow(EnvelopeError)
    await tick()
    expect(wire().length).toBe(0)
    expect(writer.pendingBytes).toBe(0)
  })
})
