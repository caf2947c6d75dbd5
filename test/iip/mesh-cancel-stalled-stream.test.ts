// A cancel sent behind a channel's lane (src/mux/writer.ts, `sendEnvelope`'s `behind`) waits only
// for what the lane holds, which the writer hands to the socket whatever the peer's window says:
// the stream sender queues a chunk only once the window has room for it. Against a hand-played
// peer that grants nothing, a streamed request body is cancelled while its window's worth of
// chunks still waits in the lane (the order forced without socket buffers: the sender queues in
// microtasks, the writer flushes a tick later), and so is a call on another channel: the other
// cancel goes out at once, ahead of the chunks; the stream's after the window's worth and nothing
// more, with no grant; both callers are told at once.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cancellation } from "../../src/mux/cancellation.ts"
import type { MeshCallError } from "../../src/mux/meshSession.ts"
import { decodeChannelPair, decodeEnvelope, emptyMeta, encodeEnvelope, EnvelopeKind, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { isFirstPacket } from "../../src/protocol/status.ts"
import { Cleanup, frame, type RawPacket, waitFor } from "../support/iipRaw.ts"
import { helloOf, startClient, startRawMeshPeer } from "../support/meshTest.ts"

const window = 2 * MeshDefaults.chunkBytes
const bodyOf = (packet: RawPacket): Buffer => packet.data.subarray(decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes).bodyOffset)

async function* stalled(): AsyncIterable<Uint8Array> {
  yield Buffer.alloc(2 * window, 7)
}

describe("a cancel behind a stream the peer's window holds back", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("waits behind the window's worth of chunks queued, no more, and goes out with no grant; another channel's goes ahead", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ streamWindow: window }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    const warmUp = client.call("/x", "warm-up", { timeoutMs: 5000 })
    const first = await peer.take((p) => p.path === "/x", 5000, "the warm-up call")
    peer.sockets[0]!.write(frame(5, first.path, first.channelId, encodeEnvelope(EnvelopeKind.response, 0, first.data.readUInt32BE(4), emptyMeta, Buffer.from("ok"), 8192)))
    expect((await warmUp).toString()).toBe("ok")
    const session = client.meshSessions[0]!
    const [up, other] = [session.openChannel(), session.openChannel()]
    const outcomes: Array<string> = []
    const record = (name: string) => (error: MeshCallError | undefined) => outcomes.push(`${name} ${error === undefined ? "ok" : error._tag}`)
    const cancelUp = new Cancellation()
    const cancelOther = new Cancellation()
    session.call(up, "/up", stalled(), { timeoutMs: 5000, signal: cancelUp }, record("up"))
    // The sender queues the window's worth of chunks in microtasks, then waits for a grant.
    const writer = session.connection.writer
    for (let i = 0; i < 1000 && writer.queuedChunks < window / MeshDefaults.chunkBytes; i++) await Promise.resolve()
    expect(writer.queuedChunks).toBe(window / MeshDefaults.chunkBytes)
    expect(up.sending).toBeDefined()
    session.call(other, "/other", Buffer.from("x"), { timeoutMs: 5000, signal: cancelOther }, record("other"))
    cancelOther.abort()
    cancelUp.abort()
    expect(outcomes).toEqual(["other Cancelled", "up Cancelled"])
    // Another control message (a liveness ping) may come at any time: not part of the order asserted.
    const seen = (): Array<string> =>
      peer.packets.filter((p) => p.path === MeshPath.cancel || !p.path.startsWith("/sys/")).map((p) => (p.path === MeshPath.cancel ? `cancel ${decodeChannelPair(bodyOf(p))!.join("/")}` : `${p.path} ${isFirstPacket(p.status) ? "first" : p.data.length - 1}`))
    await waitFor(() => seen().includes(`cancel ${up.id}/1`), 5000, "the stream's cancel")
    const chunk = MeshDefaults.chunkBytes
    expect(seen()).toEqual(["/up first", "/other first", `cancel ${other.id}/1`, `/up ${chunk}`, `/up ${chunk}`, `cancel ${up.id}/1`])
  })
})
