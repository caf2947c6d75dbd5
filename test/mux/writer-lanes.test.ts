// The writer's per-channel scheduling of stream chunks (src/mux/writer.ts): with bulk chunks of
// two channels queued, a small packet on a third channel goes out behind at most the one chunk
// the socket is taking; the channels' chunks alternate; a packet sent on a channel behind its
// chunks keeps its place; the writer holds one chunk in the socket at a time, so congestion and
// memory stay as bounded as before; finish() waits for every lane; a chunk's `written` callback
// (a leased chunk's release) runs once the socket took that chunk, not before, in order; a request
// that waits in a lane carries the deadline left when it is written, not when it was queued, on
// the monotonic clock: a wall clock set back meanwhile changes nothing.
import { describe, expect, it, vi } from "vitest"
import { PacketWriter } from "../../src/mux/writer.ts"
import { PacketDecoder } from "../../src/protocol/decoder.ts"
import { decodeEnvelope, EnvelopeKind, MeshDefaults, MetaKey } from "../../src/protocol/mesh.ts"
import { recordingSink } from "../support/recordingSink.ts"
import { steppedWallClock } from "../support/wallClock.ts"

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

  it("a request waiting in its channel's lane carries the deadline left when it is written, not the one it was queued with", async () => {
    const { sent, writer } = await deadlinesThroughLane(400, 0) // 400 ms in the lane
    // What is left: 600 ms; none for the second, which still goes with the least there is (its deadline passes at the far end).
    expect(sent).toEqual([{ id: 7, deadline: "600", x: "1", body: "a" }, { id: 8, deadline: "1", x: "1", body: "b" }])
    expect(writer.queuedChunks).toBe(0)
    expect(writer.pendingBytes).toBe(0)
  })

  it("a wall clock set back 5 s while requests wait 400 ms in a lane: they carry what is left on the monotonic clock, and nothing is written past their packets", async () => {
    const { sent, writer } = await deadlinesThroughLane(400, -5000)
    expect(sent).toEqual([{ id: 7, deadline: "600", x: "1", body: "a" }, { id: 8, deadline: "1", x: "1", body: "b" }])
    expect(writer.queuedChunks).toBe(0)
    expect(writer.pendingBytes).toBe(0)
  })
})

/**
 * Two requests (1000 ms and 10 ms left) queued behind channel 5's chunks, the monotonic clock moved
 * on by `waitMs` and the wall clock by `wallStepMs` while they wait, then the lane drained: the
 * requests as written, and the writer.
 */
const deadlinesThroughLane = async (waitMs: number, wallStepMs: number) => {
  const { wire, sink, taken, waiting } = recordingSink()
  const writer = new PacketWriter(sink, { highWaterBytes: 1 << 30, maxQueuedBytes: 1 << 30 })
  // The clocks are the test's: only performance (the monotonic clock) and Date.now are faked, the writer's ticks run as ever.
  vi.useFakeTimers({ toFake: ["performance"] })
  const wall = steppedWallClock()
  try {
    writer.sendChunk(2, "/up", 5, 0, chunk(1))
    writer.sendChunk(2, "/up", 5, 0, chunk(2))
    await tick() // the first chunk is in the socket, not taken: the lane holds the second
    const meta = new Map([["x", "1"]])
    // Behind channel 5's chunks; with 1000 ms left, then 10 ms left.
    writer.sendEnvelope(1, "/call", 5, EnvelopeKind.request, 0, 7, meta, MeshDefaults.maxMetaBytes, 1000, Buffer.from("a"))
    writer.sendEnvelope(1, "/call", 5, EnvelopeKind.request, 0, 8, meta, MeshDefaults.maxMetaBytes, 10, Buffer.from("b"))
    writer.sendChunk(2, "/up", 5, 0, chunk(3)) // one more bulk behind them: what they are written with is cut apart right
    vi.advanceTimersByTime(waitMs)
    wall.step(wallStepMs)
    for (let i = 0; i < 10 && waiting() > 0; i++) {
      taken()
      await tick()
    }
  } finally {
    wall.restore()
    vi.useRealTimers()
  }
  const requests: Array<Buffer> = []
  new PacketDecoder({ checkHeader: () => undefined, onPacket: (_s, path, _c, data) => void (path === "/call" && requests.push(Buffer.from(data))) }).push(wire())
  const sent = requests.map((data) => {
    const envelope = decodeEnvelope(data, MeshDefaults.maxMetaBytes)
    return { id: envelope.requestId, deadline: envelope.meta.get(MetaKey.deadline), x: envelope.meta.get("x"), body: data.subarray(envelope.bodyOffset).toString() }
  })
  return { sent, writer }
}
