// A mesh dialer that pings and never reads the echoes (PROTOCOL.md §8, §11): the acceptor's
// answers on the control channel back up in its writer like any others, so once the writer is
// congested (1 MiB past what the sockets take) it stops reading from that peer, as it does for
// answers to ordinary requests, instead of queueing echoes up to the hard limit (256 MiB).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { MeshPath } from "../../src/protocol/mesh.ts"
import { meshDialer, meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"

const KiB = 1024
const MiB = 1024 * KiB
/** Each ping carries this much, echoed whole. */
const PING_BYTES = 32 * KiB
/** The most pings written (128 MiB): far more than loopback's socket buffers and the writer's high-water mark take together. */
const MAX_PINGS = 4096

describe("mesh control answers and back-pressure", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("an acceptor stops reading from a dialer that pings and never reads the echoes", async () => {
    const server = await startServer(cleanup)
    const raw = await meshDialer(server.address.port, cleanup)
    raw.socket.pause() // never reads the echoes
    const session = () => [...server.meshSessions].find((s) => s.connection.socket.remotePort === raw.socket.localPort)
    await waitFor(() => session() !== undefined, 5000, "the mesh session")

    const body = Buffer.alloc(PING_BYTES, 7)
    let sent = 0
    let stopped = false
    const pump = () => {
      while (sent < MAX_PINGS && !stopped) {
        sent++
        if (!raw.socket.write(meshRequest(1, MeshPath.ping, 0, sent, body))) return void raw.socket.once("drain", pump)
      }
    }
    pump()

    // The writer backs up (the state waited for, however much the sockets took first): reading
    // pauses with it. Without the pause the echoes pile up: waited for until they pass 32 MiB.
    const connection = () => session()!.connection
    await waitFor(
      () => (connection().writer.congested && connection().socket.isPaused()) || connection().writer.pendingBytes > 32 * MiB || connection().closed,
      10_000,
      "the acceptor to stop reading while its echoes back up"
    )
    stopped = true
    // Queued: about the high-water mark plus what one read's pings answer, not what the dialer tries to send.
    expect({ paused: connection().socket.isPaused(), closed: connection().closed, queuedMiB: Math.ceil(connection().writer.pendingBytes / MiB) }).toEqual({
      paused: true,
      closed: false,
      queuedMiB: expect.any(Number)
    })
    expect(connection().writer.pendingBytes).toBeLessThan(16 * MiB)

    // The dialer reads: the acceptor reads again.
    raw.socket.resume()
    await waitFor(() => !connection().socket.isPaused(), 10_000, "the acceptor to read again")
    expect(connection().closed).toBe(false)
  })
})
