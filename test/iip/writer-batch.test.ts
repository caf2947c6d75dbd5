// The connection writer (src/mux/writer.ts), once a turn of the event loop has carried more than
// one packet, writes once per turn: packets sent from separate callbacks of one turn (requests
// that arrived on many sockets at once, each handled in its own I/O callback with its own nextTick
// queue) leave in one write, in order (one packet a turn goes at once: test/mux/writer-flush.test.ts).
// What the connection's own read callback sends (answers given at once, a client's next requests)
// leaves in one write as that callback ends instead, and later packets of that turn at its end.
import { describe, expect, it } from "vitest"
import { PacketWriter } from "../../src/mux/writer.ts"
import { PacketDecoder } from "../../src/protocol/decoder.ts"

/** The packets in one written buffer: path, channel, body. */
const decodePackets = (bytes: Buffer): Array<[string, number, string]> => {
  const packets: Array<[string, number, string]> = []
  const decoder = new PacketDecoder({ checkHeader: () => undefined, onPacket: (_status, path, channelId, data) => packets.push([path, channelId, data.toString()]) })
  expect(decoder.push(bytes)).toBeUndefined()
  return packets
}

/** A socket stand-in that records each write. */
const recordingSink = () => {
  const writes: Array<Buffer> = []
  return {
    writes,
    sink: {
      write: (chunk: Uint8Array) => {
        writes.push(Buffer.from(chunk))
        return true
      },
      cork: () => {},
      uncork: () => {},
      writableLength: 0,
      once: () => undefined
    }
  }
}

describe("PacketWriter batching", () => {
  it("packets sent from a callback, its nextTick queue and a later microtask of the same turn leave in one write, in order", async () => {
    const { writes, sink } = recordingSink()
    const writer = new PacketWriter(sink, { highWaterBytes: 1 << 20, maxQueuedBytes: 1 << 24 })
    // A loaded turn first (the first of its packets written at once, the next at its end): from then on, one write per turn.
    await new Promise<void>((resolve) => setImmediate(resolve))
    writer.send(1, "/load", 1, Buffer.from("first"))
    writer.send(1, "/load", 1, Buffer.from("second"))
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(writes.length).toBe(2)
    writes.length = 0
    await new Promise<void>((resolve) => {
      setImmediate(() => {
        writer.send(1, "/a", 1, Buffer.from("one"))
        process.nextTick(() => writer.send(1, "/b", 2, Buffer.from("two")))
        void Promise.resolve().then(() => writer.send(1, "/c", 3, Buffer.from("three")))
        setImmediate(resolve)
      })
    })
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(writes.length).toBe(1)
    expect(decodePackets(writes[0]!)).toStrictEqual([
      ["/a", 1, "one"],
      ["/b", 2, "two"],
      ["/c", 3, "three"]
    ])
  })
  it("packets sent while the connection's read callback runs leave in one write as it ends; later ones of the turn, at its end", async () => {
    const { writes, sink } = recordingSink()
    const writer = new PacketWriter(sink, { highWaterBytes: 1 << 20, maxQueuedBytes: 1 << 24 })
    let writtenDuringRead = -1
    let writtenAtReadEnd = -1
    await new Promise<void>((resolve) => {
      setImmediate(() => {
        writer.beginRead()
        writer.send(1, "/a", 1, Buffer.from("one"))
        writer.send(1, "/b", 2, Buffer.from("two"))
        writtenDuringRead = writes.length
        writer.endRead(true)
        writtenAtReadEnd = writes.length
        writer.send(1, "/c", 3, Buffer.from("three"))
        process.nextTick(() => writer.send(1, "/d", 4, Buffer.from("four")))
        setImmediate(resolve)
      })
    })
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(writtenDuringRead).toBe(0)
    expect(writtenAtReadEnd).toBe(1)
    expect(writes.map(decodePackets)).toStrictEqual([
      [["/a", 1, "one"], ["/b", 2, "two"]],
      [["/c", 3, "three"], ["/d", 4, "four"]]
    ])
  })
})
