// A hand-played mesh dialer that sends a request body the server does not read (its request was
// answered at once) and never reads what the server sends back (PROTOCOL.md §8, §13). Each chunk
// of a body nobody reads is granted back at once, so the sender can finish; the grants back up in
// the server's writer like any packet. Once they reach its hard limit the connection closes:
// nothing is thrown out of the socket's read callback (before, `Overloaded` was, uncaught).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { defaultConnectionLimits } from "../../src/mux/connection.ts"
import { meshChunk, meshDialer, meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { collectLog, startServer } from "../support/meshTest.ts"

const KiB = 1024
/** Continuation packets written at once, each a 1-byte chunk the server grants back. */
const CHUNKS_PER_WRITE = 4096
/** The most bytes of chunks written (64 MiB): far more than loopback's socket buffers and the server's hard limit take together. */
const MAX_WRITES = 1200

describe("mesh grants a peer does not read", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("a server whose grants for a discarded body back up to its hard limit closes the connection, never throws", async () => {
    // A small hard limit: the grants reach it after a few MiB of chunks.
    const { events, log } = collectLog()
    const server = await startServer(cleanup, { log, connectionLimits: { ...defaultConnectionLimits, writeHighWaterBytes: 64 * KiB, maxWriteQueueBytes: 256 * KiB } })
    const raw = await meshDialer(server.address.port, cleanup)
    raw.socket.pause() // never reads again
    // No handler: answered not_found at once, its body discarded; every chunk after it is granted back.
    raw.write(meshRequest(0, "/x", 1, 1, Buffer.of(1)))
    const chunks = Buffer.concat(Array.from({ length: CHUNKS_PER_WRITE }, () => meshChunk(2, "/x", 1, Buffer.of(2))))
    let writes = 0
    const pump = () => {
      while (writes < MAX_WRITES && !raw.socket.destroyed) {
        writes++
        if (!raw.socket.write(chunks)) return void raw.socket.once("drain", pump)
      }
    }
    pump()
    await waitFor(() => server.meshSessions.size === 0, 10_000, "the server to close the connection")
    // Closed before the pump ran out: the server stopped taking chunks, they did not stop coming.
    expect(writes).toBeLessThan(MAX_WRITES)
    const line = events.find((e) => e.event === "control-not-sent")
    expect(line?.fields).toMatchObject({ path: "/sys/window", message: expect.stringContaining("write queue holds") })
  })
})
