// A hand-played mesh peer that sends request bodies nobody reads (their requests were answered at
// once: no handler) and never reads what it is sent (PROTOCOL.md §8, §13). What such a body
// receives is granted back as it comes, so the sender can finish: one grant per body per read, so
// the peer spreads 1-byte chunks over many bodies to have a grant sent for nearly every one. The
// grants back up in the writer like any packet: an acceptor stops reading while they do, as for
// its answers; a dialer, which reads on, closes the connection once they reach its hard limit.
// Nothing is thrown out of the socket's read callback (before, `Overloaded` was, uncaught).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { defaultConnectionLimits } from "../../src/mux/connection.ts"
import { meshChunk, meshDialer, meshRequest } from "../support/budgetAttack.ts"
import { AcceptorControlChannel } from "../../src/protocol/mesh.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, settle, startClient, startDeafAcceptor, startServer } from "../support/meshTest.ts"

const KiB = 1024
const MiB = 1024 * KiB
/** Continuation packets written at once, each a 1-byte chunk the server grants back. */
const CHUNKS_PER_WRITE = 4096
/** The most writes of chunks (about 64 MiB of them): far more than loopback's socket buffers and the hard limit take together. */
const MAX_WRITES = 1200
/** The acceptor's first channel (it opens the high ids). */
const ACCEPTOR_CHANNEL = AcceptorControlChannel + 1

/** One write's continuation packets on `channel`: 1-byte chunks of the body of request 1. */
const continuations = (channel: number): Buffer => Buffer.concat(Array.from({ length: CHUNKS_PER_WRITE }, () => meshChunk(2, "/x", channel, Buffer.of(2))))
/**
 * Bodies dropped unread at once, one per channel, that the chunks of a write take turns on: as
 * many as a dialer takes channels from its acceptor (1024). An acceptor is given one per chunk
 * of a write (it takes more channels): then every chunk of a read is granted apart, whatever the
 * socket buffers make a read hold.
 */
const BODIES = 1000
/** One write's continuation packets: 1-byte chunks on channels `first` .. `first + count - 1` in turn. */
const spreadContinuations = (first: number, count = BODIES): Buffer => Buffer.concat(Array.from({ length: CHUNKS_PER_WRITE }, (_, i) => meshChunk(2, "/x", first + (i % count), Buffer.of(2))))
/** The first packets of the bodies on channels `first` .. `first + count - 1`. */
const bodies = (first: number, count = BODIES): Buffer => Buffer.concat(Array.from({ length: count }, (_, i) => meshRequest(0, "/x", first + i, 1, Buffer.of(1))))

describe("mesh grants a peer does not read", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("a dialer whose grants for discarded bodies back up to its hard limit closes the connection, never throws", async () => {
    let writes = 0
    const port = await startDeafAcceptor(cleanup, (socket) => {
      // Bodies on the acceptor's first channels.
      socket.write(bodies(ACCEPTOR_CHANNEL))
      const chunks = spreadContinuations(ACCEPTOR_CHANNEL)
      const pump = () => {
        while (writes < MAX_WRITES && !socket.destroyed) {
          writes++
          if (!socket.write(chunks)) return void socket.once("drain", pump)
        }
      }
      pump()
    })
    const { events, log } = collectLog()
    // A small hard limit: the grants reach it once the sockets took what they take, a few MiB of
    // grants, and each read of chunks is granted in at most a grant per body (about 0.6 bytes of
    // grant per byte of chunks in a 64 KiB read): with 16 MiB socket buffers tens of MiB of chunks
    // go first, several seconds on a loaded machine, hence the bound.
    const client = startClient(cleanup, port, { log, connectionLimits: { ...defaultConnectionLimits, writeHighWaterBytes: 64 * KiB, maxWriteQueueBytes: 256 * KiB } })
    const call = settle(client.call("/never-answered", "x", { timeoutMs: 40_000 }))
    const outcome = await withTimeout(call, 40_000, "the dialer to close the connection")
    // Closed before the pump ran out: the dialer stopped taking chunks, they did not stop coming.
    expect(writes).toBeLessThan(MAX_WRITES)
    expect(String(outcome.ok ? "" : (outcome.error as Error).message)).toContain("cannot send /sys/window")
    const line = events.find((e) => e.event === "control-not-sent")
    expect(line?.fields).toMatchObject({ path: "/sys/window", message: expect.stringContaining("write queue holds") })
  }, 60_000)

  it("an acceptor stops reading while those grants back up, as it does for its answers, and reads again once the peer reads", async () => {
    // A hard limit far above the high-water mark: what backs up stays near the latter.
    const server = await startServer(cleanup, { maxChannelsPerConnection: 2 * CHUNKS_PER_WRITE, connectionLimits: { ...defaultConnectionLimits, writeHighWaterBytes: 64 * KiB, maxWriteQueueBytes: 8 * MiB } })
    const raw = await meshDialer(server.address.port, cleanup, { maxChannels: 2 * CHUNKS_PER_WRITE })
    raw.socket.pause()
    const session = () => [...server.meshSessions].find((s) => s.connection.socket.remotePort === raw.socket.localPort)
    await waitFor(() => session() !== undefined, 5000, "the mesh session")
    const connection = session()!.connection
    raw.write(bodies(1, CHUNKS_PER_WRITE))
    const chunks = spreadContinuations(1, CHUNKS_PER_WRITE)
    let writes = 0
    let stopped = false
    const pump = () => {
      while (writes < MAX_WRITES && !stopped && !raw.socket.destroyed) {
        writes++
        if (!raw.socket.write(chunks)) return void raw.socket.once("drain", pump)
      }
    }
    pump()
    // The state waited for, however much the sockets took first. Without the pause the grants
    // pile up to the hard limit and the connection closes. Paused, and not for its budget: for its
    // writer, which may since have handed the socket enough to be just under the high-water mark
    // (it reads again at the socket's drain), so `congested` is not asked.
    await waitFor(() => (connection.socket.isPaused() && !connection.budget.pausedForBudget) || connection.closed, 10_000, "the acceptor to stop reading while its grants back up")
    stopped = true
    // Queued: about the high-water mark plus what one read's chunks are granted, not the hard limit.
    expect({ paused: connection.socket.isPaused(), closed: connection.closed }).toEqual({ paused: true, closed: false })
    expect(connection.writer.pendingBytes).toBeLessThan(4 * MiB)
    raw.socket.resume()
    await waitFor(() => !connection.socket.isPaused(), 10_000, "the acceptor to read again")
    expect(connection.closed).toBe(false)
  })
})

describe("connection credit grants a peer does not read (conncredit)", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("an acceptor stops reading while its /sys/credit grants back up, as for its other control messages, and never throws them into a handler", async () => {
    // A 64 KiB byte budget: the peer never has more than a batch left, so every byte a handler
    // takes is granted back at once, a /sys/credit per chunk. Each request's body stays under
    // half a window (no /sys/window) and no handler answers: credit grants are all it is sent.
    const errors: Array<string> = []
    const parked: Array<() => void> = []
    const server = await startServer(cleanup, {
      maxQueuedBytesPerConnection: 64 * KiB,
      connectionLimits: { ...defaultConnectionLimits, writeHighWaterBytes: 64 * KiB, maxWriteQueueBytes: MiB }
    })
    cleanup.add(() => parked.forEach((resolve) => resolve()))
    server.handle("/x", async (request) => {
      try {
        for await (const _ of request.context.stream!) {
        }
      } catch (error) {
        errors.push(String(error))
      }
      return new Promise<string>((resolve) => parked.push(() => resolve("done")))
    })
    const raw = await meshDialer(server.address.port, cleanup)
    raw.socket.pause()
    const session = () => [...server.meshSessions].find((s) => s.connection.socket.remotePort === raw.socket.localPort)
    await waitFor(() => session() !== undefined, 5000, "the mesh session")
    const connection = session()!.connection
    // What the sockets take is filled first, with pushes of 64 KiB (cheap): the grants then meet a
    // writer that stays congested, whatever the kernel's buffers hold. Buffers that grow (to 16 MiB)
    // go on taking the writer's bytes after it looked full, in real time: it is topped up again
    // whenever the kernel emptied it below the high-water mark, until the state waited for holds.
    const fill = session()!.openChannel()
    const topUp = () => {
      if (connection.writer.congested || connection.closed) return
      while (connection.writer.pendingBytes < 512 * KiB) session()!.push(fill, "/fill", Buffer.alloc(64 * KiB))
    }
    for (const deadline = Date.now() + 5000; connection.writer.pendingBytes < 448 * KiB; ) {
      if (Date.now() > deadline) throw new Error(`the sockets never filled (${connection.writer.pendingBytes} bytes pending)`)
      topUp()
      await new Promise((resolve) => setImmediate(resolve))
    }
    const packetsBefore = connection.packetsReceived
    // Requests on channels 1, 2, ...: each a body of 16 writes of 4096 1-byte chunks, then its end.
    let writes = 0
    let stopped = false
    let chunks: Buffer = Buffer.alloc(0)
    const pump = () => {
      while (writes < MAX_WRITES && !stopped && !raw.socket.destroyed) {
        const channel = 1 + Math.floor(writes / 16)
        if (writes % 16 === 0) chunks = continuations(channel)
        const first = writes % 16 === 0 ? meshRequest(0, "/x", channel, 1, Buffer.alloc(0)) : Buffer.alloc(0)
        const last = writes % 16 === 15 ? meshChunk(3, "/x", channel, Buffer.alloc(0)) : Buffer.alloc(0)
        writes++
        if (!raw.socket.write(Buffer.concat([first, chunks, last]))) return void raw.socket.once("drain", pump)
      }
    }
    pump()
    await waitFor(() => {
      topUp()
      return (connection.writer.congested && connection.socket.isPaused()) || connection.closed || errors.length > 0
    }, 10_000, "the acceptor to stop reading while its credit grants back up")
    stopped = true
    expect({ paused: connection.socket.isPaused(), closed: connection.closed, errors }).toEqual({ paused: true, closed: false, errors: [] })
    // Chunks were read and granted on the way there, not only the fill.
    expect(connection.packetsReceived).toBeGreaterThan(packetsBefore)
    expect(connection.writer.pendingBytes).toBeLessThan(MiB)
    raw.socket.resume()
    await waitFor(() => !connection.socket.isPaused(), 10_000, "the acceptor to read again")
    expect({ closed: connection.closed, errors }).toEqual({ closed: false, errors: [] })
  })
})
