// A request the server refuses `overloaded` is refused once its header is read, its body skipped as
// it arrives, never stored (src/mux/connection.ts checkHeader): read whole first, a peer's flood of
// whole 1 MB bodies past the budget was allocated a packet at a time only to be dropped, garbage
// beside what the budget counts (B's RSS at 2x its budget under flood-rss.solo.test.ts). And a
// request let in when its header was read is not refused once whole: the packets of a peer's other
// connections, counted while they are read, had tipped the budget in the meantime, and were read
// whole one after another to be refused.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { decodeEnvelope, decodeErrorBody, emptyMeta, encodeEnvelope, EnvelopeKind, MeshDefaults } from "../../src/protocol/mesh.ts"
import { meshDialer, meshRequest, MiB } from "../support/budgetAttack.ts"
import { Cleanup, frame, type RawPacket, waitFor } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"

const BODY = 1_000_000

/** The error code an answer packet carries, or its kind when it is no error. */
const codeOf = (packet: RawPacket): string => {
  const envelope = decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes)
  return envelope.kind === EnvelopeKind.error ? decodeErrorBody(packet.data.subarray(envelope.bodyOffset)).code : `kind ${envelope.kind}`
}

describe("a request refused overloaded is not read into memory", () => {
  let cleanup: Cleanup
  let parked: Array<() => void>
  let started: number

  /** Shared bytes 4 MiB: one source holds at most 2 MiB. /hang holds its request until cleanup. */
  const hangingServer = async (): Promise<IipServer> => {
    const server = await startServer(cleanup, { maxQueuedBytesPerConnection: 4 * MiB, maxQueuedBytes: 4 * MiB })
    server.handle("/hang", () => {
      started++
      return new Promise<string>((resolve) => parked.push(() => resolve("late")))
    })
    cleanup.add(() => parked.splice(0).forEach((resolve) => resolve()))
    return server
  }

  beforeEach(() => {
    cleanup = new Cleanup()
    parked = []
    started = 0
  })
  afterEach(() => cleanup.run())

  it("the source full: a whole 1 MB request is answered overloaded before its body is sent, the rest skipped, the connection serving on", async () => {
    const server = await hangingServer()
    const peer = await meshDialer(server.address.port, cleanup)
    const body = Buffer.alloc(BODY, 0x62)
    // Three held requests: 3 MB, past the source's 2 MiB.
    for (let id = 1; id <= 3; id++) peer.write(meshRequest(1, "/hang", id, id, body))
    await waitFor(() => started === 3, 10_000, "the three requests to run")
    // The fourth: its header, envelope and 64 KiB of its body, the rest held back.
    const head = encodeEnvelope(EnvelopeKind.request, 0, 4, emptyMeta, Buffer.alloc(0), 8192)
    peer.write(frame(1, "/hang", 4, head, head.length + BODY), body.subarray(0, 64 * 1024))
    const refusal = await peer.next(5000)
    expect(refusal.channelId).toBe(4)
    expect(codeOf(refusal)).toBe("overloaded")
    // What the server holds: the three requests, and of the fourth at most its envelope's room, never its body.
    expect(server.budget.bytes).toBeLessThan(3 * BODY + 128 * 1024)
    peer.write(body.subarray(64 * 1024))
    // The connection reads on: the next request is read as a packet (refused too, the source still full) and nothing else was answered.
    peer.write(meshRequest(1, "/hang", 5, 5, Buffer.from("small")))
    const next = await peer.next(5000)
    expect([next.channelId, codeOf(next)]).toEqual([5, "overloaded"])
    expect(peer.isClosed).toBe(false)
    expect(started).toBe(3)
  })

  it("a request let in at its header runs once whole, though its own bytes, counted while it was read, filled the source", async () => {
    const server = await hangingServer()
    const body = Buffer.alloc(BODY, 0x62)
    const first = await meshDialer(server.address.port, cleanup)
    for (let id = 1; id <= 2; id++) first.write(meshRequest(1, "/hang", id, id, body))
    await waitFor(() => started === 2, 10_000, "the two requests to run")
    // 2,000,000 bytes held, under the source's 2 MiB: the next header is let in. Its packet is
    // counted as it is read (3 MB then, past the 2 MiB) and must not be refused for that once whole.
    const second = await meshDialer(server.address.port, cleanup)
    const head = encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, Buffer.alloc(0), 8192)
    second.write(frame(1, "/hang", 1, head, head.length + BODY), body.subarray(0, 64 * 1024))
    await waitFor(() => server.budget.bytes >= 3 * BODY, 5000, "the packet being read to be counted")
    second.write(body.subarray(64 * 1024))
    await waitFor(() => started === 3 || second.packets.length > 0, 5000, "the third request to run or be answered")
    expect(second.packets.map(codeOf)).toEqual([])
    expect(started).toBe(3)
  })
})
