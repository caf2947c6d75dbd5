// A request refused `overloaded` at its header is skipped unread (connection.ts checkHeader,
// decoder.ts skipPacket); what a hostile peer can do around that skip: stream the refused
// request's continuations after it, cancel it, reuse its channel and request id at once, or go
// away in the middle of its envelope or of its skipped body. Each refused request gets exactly one
// answer, nothing of it reaches a handler, the channel serves on, and every budget counter goes
// back to 0 once the peers are gone.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { decodeEnvelope, decodeErrorBody, emptyMeta, encodeChannelPair, encodeEnvelope, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { meshChunk, meshDialer, meshRequest, MiB } from "../support/budgetAttack.ts"
import { Cleanup, frame, type RawClient, type RawPacket, waitFor } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"

const BODY = 1_000_000

const codeOf = (packet: RawPacket): string => {
  const envelope = decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes)
  return envelope.kind === EnvelopeKind.error ? decodeErrorBody(packet.data.subarray(envelope.bodyOffset)).code : `kind ${envelope.kind}`
}

/** A one-way control message on the dialer's control channel. */
const control = (path: string, id: number, body: Buffer) => frame(1, path, 0, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, id, emptyMeta, body, 8192))

describe("a request skipped unread, under a hostile peer", () => {
  let cleanup: Cleanup
  let server: IipServer
  let parked: Array<() => void>
  let started: Array<string>

  beforeEach(async () => {
    cleanup = new Cleanup()
    parked = []
    started = []
    // Shared bytes 4 MiB: one source holds at most 2 MiB.
    server = await startServer(cleanup, { maxQueuedBytesPerConnection: 4 * MiB, maxQueuedBytes: 4 * MiB })
    server.handle("/hang", () => {
      started.push("/hang")
      return new Promise<string>((resolve) => parked.push(() => resolve("late")))
    })
    server.handle("/echo", (request) => {
      started.push("/echo")
      return `echo ${request.data.length}`
    })
    cleanup.add(() => parked.splice(0).forEach((resolve) => resolve()))
  })
  afterEach(() => cleanup.run())

  /** Three 1 MB requests held on channels 1-3: the source (2 MiB) is full. */
  const fill = async (peer: RawClient): Promise<void> => {
    const body = Buffer.alloc(BODY, 0x62)
    for (let id = 1; id <= 3; id++) peer.write(meshRequest(1, "/hang", id, id, body))
    await waitFor(() => started.length === 3, 10_000, "the three requests to run")
  }

  it("a refused streamed request: one answer; its continuations, a cancel for it and its id reused reach no handler and get no second answer", async () => {
    const peer = await meshDialer(server.address.port, cleanup)
    await fill(peer)
    // Channel 5, request 7: a first packet of 100 KB that more packets follow, refused at its header.
    peer.write(meshRequest(0, "/echo", 5, 7, Buffer.alloc(100_000, 1)))
    const refusal = await peer.next(5000)
    expect([refusal.channelId, codeOf(refusal)]).toEqual([5, "overloaded"])
    // Its body goes on streaming, then the caller cancels it: dropped, nothing answered.
    peer.write(meshChunk(2, "/echo", 5, Buffer.alloc(30_000, 2)), meshChunk(3, "/echo", 5, Buffer.alloc(10, 3)), control(MeshPath.cancel, 1, encodeChannelPair(5, 7)))
    // The held requests answered, the source has room: the same channel and id again, a whole request this time.
    parked.splice(0).forEach((resolve) => resolve())
    await waitFor(() => peer.packets.length >= 3, 5000, "the three held requests' answers")
    peer.write(meshRequest(1, "/echo", 5, 7, Buffer.from("again")))
    await waitFor(() => peer.packets.some((p) => p.channelId === 5), 5000, "the answer on channel 5")
    // A ping after it, answered in order: nothing else is coming on channel 5.
    peer.write(meshRequest(1, "/echo", 6, 8, Buffer.from("x")))
    await waitFor(() => peer.packets.some((p) => p.channelId === 6), 5000, "the answer on channel 6")
    const onFive = peer.packets.filter((p) => p.channelId === 5)
    expect(onFive.map(codeOf)).toEqual([`kind ${EnvelopeKind.response}`])
    expect(decodeEnvelope(onFive[0]!.data, MeshDefaults.maxMetaBytes).requestId).toBe(7)
    expect(started).toEqual(["/hang", "/hang", "/hang", "/echo", "/echo"])
    expect(peer.isClosed).toBe(false)
    await waitFor(() => server.budget.requests === 0 && server.budget.bytes === 0, 5000, "the budget to empty")
  })

  it("a peer gone in the middle of a refused request's envelope, or of its skipped body: the budgets go back to what the others hold, then to 0", async () => {
    const holder = await meshDialer(server.address.port, cleanup)
    await fill(holder)
    const held = { requests: server.budget.requests, bytes: server.budget.bytes }
    expect(held.requests).toBe(3)
    const head = encodeEnvelope(EnvelopeKind.request, 0, 4, emptyMeta, Buffer.alloc(0), 8192)
    // One goes away with half its envelope read (its prefix allocated and held), one in its skipped body.
    const midEnvelope = await meshDialer(server.address.port, cleanup)
    midEnvelope.write(frame(1, "/hang", 1, head.subarray(0, 4), head.length + BODY))
    const midSkip = await meshDialer(server.address.port, cleanup)
    midSkip.write(frame(1, "/hang", 1, head, head.length + BODY), Buffer.alloc(64 * 1024))
    expect(codeOf(await midSkip.next(5000))).toBe("overloaded")
    await waitFor(() => server.budget.bytes > held.bytes, 5000, "the half-read envelope to be held")
    midEnvelope.destroy()
    midSkip.destroy()
    await waitFor(() => server.budget.requests === held.requests && server.budget.bytes === held.bytes, 5000, "the gone peers' counts to go")
    expect(server.sources.size).toBe(1)
    holder.destroy()
    await waitFor(() => server.budget.requests === 0 && server.budget.bytes === 0 && server.sources.size === 0, 5000, "the budget to empty")
    expect(started).toHaveLength(3)
  })

  it("eight connections starting 1 MB requests at once: those let in at their headers take the source's half and at most one packet more, the rest refused unread", async () => {
    const body = Buffer.alloc(BODY, 0x62)
    const head = encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, Buffer.alloc(0), 8192)
    const peers: Array<RawClient> = []
    for (let i = 0; i < 8; i++) peers.push(await meshDialer(server.address.port, cleanup))
    // Every header and the first 64 KiB of its body (past the envelope and the room for metadata a
    // refused one is read to before it is answered). A packet let in is counted from the read that
    // holds its header on (the bytes allocated for it), so every header judged after it sees it: the
    // budget goes past its limit by the one packet let in last, not by one per connection.
    for (const peer of peers) peer.write(frame(1, "/hang", 1, head, head.length + BODY), body.subarray(0, 64 * 1024))
    // Each let in holds its packet's bytes from the read of its header on; each refused is answered.
    const judged = () => peers.filter((p) => p.packets.length > 0).length + server.budget.bytes / (head.length + BODY)
    await waitFor(() => judged() === 8, 10_000, "every header to be judged")
    for (const peer of peers) peer.write(body.subarray(64 * 1024))
    const refused = peers.filter((p) => p.packets.length > 0)
    expect(refused.map((p) => codeOf(p.packets[0]!))).toEqual(refused.map(() => "overloaded"))
    await waitFor(() => started.length === 8 - refused.length, 10_000, "the requests let in to run")
    // The source's 2 MiB (2,097,152 bytes): two packets, and the third let in under it.
    expect(started).toHaveLength(3)
    expect(server.budget.bytes).toBeLessThanOrEqual(2 * MiB + head.length + BODY)
  })
})

