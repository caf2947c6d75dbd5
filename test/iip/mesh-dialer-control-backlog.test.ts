// A hand-played mesh acceptor that pings the dialer and never reads the echoes (PROTOCOL.md §8,
// §11). A dialer does not stop reading when its answers back up (it reads its own calls' answers
// there, and two peers each waiting for the other to read would both stall), so it bounds what it
// queues for the peer's control requests instead: past that bound it closes the connection,
// logged and counted. Before, the echoes piled up to the write queue's hard limit and `Overloaded`
// was thrown out of the socket's read callback.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { defaultConnectionLimits } from "../../src/mux/connection.ts"
import { AcceptorControlChannel, MeshPath } from "../../src/protocol/mesh.ts"
import { meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { collectLog, settle, startClient, startDeafAcceptor } from "../support/meshTest.ts"

const KiB = 1024
const MiB = 1024 * KiB
/** Each ping carries this much, echoed whole. */
const PING_BYTES = 32 * KiB
/** The most pings written (64 MiB): far more than loopback's socket buffers and the dialer's bound take together. */
const MAX_PINGS = 2048

describe("mesh dialer: control answers the acceptor does not read", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("closes the connection, never throws, when an acceptor pings and does not read the echoes", async () => {
    let sent = 0
    let closed!: () => void
    const acceptorClosed = new Promise<void>((resolve) => (closed = resolve))
    const port = await startDeafAcceptor(cleanup, (socket) => {
      socket.once("close", () => closed())
      // Ping on the acceptor's control channel.
      const body = Buffer.alloc(PING_BYTES, 7)
      const pump = () => {
        while (sent < MAX_PINGS && !socket.destroyed) {
          sent++
          if (!socket.write(meshRequest(1, MeshPath.ping, AcceptorControlChannel, sent, body))) return void socket.once("drain", pump)
        }
      }
      pump()
    })
    const { events, log } = collectLog()
    // A small hard limit: on the old code the echoes reach it within a few MiB, and it threw.
    const client = startClient(cleanup, port, { log, connectionLimits: { ...defaultConnectionLimits, maxWriteQueueBytes: 8 * MiB } })
    const call = settle(client.call("/never-answered", "x", { timeoutMs: 10_000 }))
    await withTimeout(acceptorClosed, 10_000, "the dialer to close the connection")
    // Closed before the pump ran out: the dialer stopped taking pings, they did not stop coming.
    expect(sent).toBeLessThan(MAX_PINGS)
    const outcome = await withTimeout(call, 5000, "the call to fail")
    expect(outcome.ok).toBe(false)
    expect(String(outcome.ok ? "" : (outcome.error as Error).message)).toContain("does not read the answers to its control requests")
    const line = events.find((e) => e.event === "peer-not-reading")
    expect(line?.fields).toMatchObject({ closedSoFar: expect.any(Number), backedUpBytes: expect.any(Number) })
    expect(line!.fields["backedUpBytes"] as number).toBeGreaterThan(MiB)
  })
})
