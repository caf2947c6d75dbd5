// When the writer (src/mux/writer.ts) writes small packets sent outside a read: at a low rate each
// at once, with no `setImmediate`; once a turn of the event loop carries more than one, all of them
// in one write at the turn's end, until a turn-end write carries a single packet again. Whatever
// the mode, every packet is written once, in order; a socket that pushes back holds the next ones
// until it drains; what a read makes a side send still waits for the read's end.
import * as fs from "node:fs"
import { describe, expect, it } from "vitest"
import { PacketWriter } from "../../src/mux/writer.ts"
import { encodePacket } from "../../src/protocol/packet.ts"
import { TurnEnd } from "../../src/mux/turnEnd.ts"

const recordingSink = () => {
  const writes: Array<Buffer> = []
  let drain: (() => void) | undefined
  const state = { full: false }
  return {
    writes,
    state,
    wire: () => Buffer.concat(writes),
    drain: () => {
      state.full = false
      const listener = drain
      drain = undefined
      listener?.()
    },
    sink: {
      write: (chunk: Uint8Array) => {
        writes.push(Buffer.from(chunk))
        return !state.full
      },
      cork: () => {},
      uncork: () => {},
      writableLength: 0,
      once: (_event: "drain", listener: () => void) => {
        drain = listener
      }
    }
  }
}

/** Resolves in a later turn of the event loop (an immediate queued from the check phase runs in the next turn's). */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))
const limits = { highWaterBytes: 1 << 30, maxQueuedBytes: 1 << 30 }

/** Sends `${path} ${i}` on channel 5 of `writer`, noting its packet as expected on the wire. */
const sender = (writer: PacketWriter, expected: Array<Buffer>) => (path: string, i: number) => {
  const data = Buffer.from(`${path} ${i}`)
  writer.send(1, path, 5, data)
  expected.push(encodePacket(1, path, 5, data))
}

describe("PacketWriter, small packets outside a read", () => {
  it("one per turn: each written at once, within send", async () => {
    const { writes, wire, sink } = recordingSink()
    const writer = new PacketWriter(sink, limits)
    const expected: Array<Buffer> = []
    for (let i = 0; i < 5; i++) {
      await nextTurn()
      const data = Buffer.from(`call ${i}`)
      writer.send(1, "/one", 3, data)
      expected.push(encodePacket(1, "/one", 3, data))
      expect(writes).toHaveLength(i + 1)
    }
    expect(wire().equals(Buffer.concat(expected))).toBe(true)
    expect(writer.pendingBytes).toBe(0)
  })

  it("many in one turn: the first at once, the rest in one write at the turn's end; later turns batched until one carries a single packet", async () => {
    const { writes, wire, sink } = recordingSink()
    const writer = new PacketWriter(sink, limits)
    const expected: Array<Buffer> = []
    const send = sender(writer, expected)
    await nextTurn()
    for (let i = 0; i < 50; i++) send("/burst", i)
    expect(writes).toHaveLength(1)
    await nextTurn()
    expect(writes).toHaveLength(2)
    // A loaded turn: all ten wait for its end, one write.
    for (let i = 0; i < 10; i++) send("/loaded", i)
    expect(writes).toHaveLength(2)
    await nextTurn()
    expect(writes).toHaveLength(3)
    // A turn with one packet: still at the turn's end (the mode changes with that write) ...
    send("/alone", 0)
    expect(writes).toHaveLength(3)
    await nextTurn()
    expect(writes).toHaveLength(4)
    // ... and the next one goes at once.
    send("/quiet", 0)
    expect(writes).toHaveLength(5)
    expect(wire().equals(Buffer.concat(expected))).toBe(true)
    expect(writer.pendingBytes).toBe(0)
  })

  it("a socket that pushes back on a packet written at once holds the next ones until it drains, then writes them together", async () => {
    const { writes, wire, sink, state, drain } = recordingSink()
    const writer = new PacketWriter(sink, limits)
    const expected: Array<Buffer> = []
    const send = (i: number) => {
      const data = Buffer.alloc(100, i)
      writer.send(1, "/full", 7, data)
      expected.push(encodePacket(1, "/full", 7, data))
    }
    await nextTurn()
    state.full = true
    send(0)
    expect(writes).toHaveLength(1)
    await nextTurn()
    send(1)
    send(2)
    await nextTurn()
    await nextTurn()
    expect(writes).toHaveLength(1)
    expect(writer.pendingBytes).toBeGreaterThan(0)
    drain()
    expect(writes).toHaveLength(2)
    expect(wire().equals(Buffer.concat(expected))).toBe(true)
    expect(writer.pendingBytes).toBe(0)
  })

  it("during a read nothing is written before the read's end, then all in one write", async () => {
    const { writes, wire, sink } = recordingSink()
    const writer = new PacketWriter(sink, limits)
    await nextTurn()
    writer.beginRead()
    writer.send(1, "/answer", 1, Buffer.from("a"))
    writer.send(1, "/answer", 2, Buffer.from("b"))
    expect(writes).toHaveLength(0)
    writer.endRead(true)
    expect(writes).toHaveLength(1)
    expect(wire().equals(Buffer.concat([encodePacket(1, "/answer", 1, Buffer.from("a")), encodePacket(1, "/answer", 2, Buffer.from("b"))]))).toBe(true)
  })
})

describe("PacketWriter, packets sent from work left for the turn's end (TurnEnd)", () => {
  // An h2c request whose hold began outside a read goes on from the turn's end (outboundH2Call.ts), in the check
  // phase, after the read it came in: an immediate the writer queues there runs only in the next
  // turn, after that turn's I/O. What that work sends is written as it returns, in one write.
  it("are written in the turn they were sent in, in one write after the work, whatever the writer's mode", async () => {
    const { writes, wire, sink } = recordingSink()
    const loopTurn = () => performance.nodeTiming.uvMetricsInfo.loopCount
    const writtenIn: Array<number> = []
    const write = sink.write
    sink.write = (chunk) => {
      writtenIn.push(loopTurn())
      return write(chunk)
    }
    const writer = new PacketWriter(sink, limits)
    const expected: Array<Buffer> = []
    const send = sender(writer, expected)
    let before = 0
    let sentIn = -1
    let writtenWithin = false
    const atEnd = new TurnEnd<number>((i) => {
      sentIn = loopTurn()
      if (i === 0) before = writes.length
      send("/kept", i)
      // Not within the work: after it, all of it at once.
      writtenWithin ||= writes.length > before
    })
    // At a low rate (one packet written at once in this turn's I/O already) and loaded (batched).
    for (const first of [1, 3]) {
      // An I/O callback (the poll phase), as a read of the caller's session is.
      await new Promise<void>((resolve) => {
        fs.stat(import.meta.filename, () => {
          for (let i = 0; i < first; i++) send("/read", i)
          for (let i = 0; i < 4; i++) atEnd.add(i)
          setImmediate(resolve)
        })
      })
      for (let turns = 0; turns < 5 && writes.length === before; turns++) await nextTurn()
      expect(writes).toHaveLength(before + 1)
      expect(writtenIn.at(-1)).toBe(sentIn)
      expect(writtenWithin).toBe(false)
    }
    expect(wire().equals(Buffer.concat(expected))).toBe(true)
  })
})
