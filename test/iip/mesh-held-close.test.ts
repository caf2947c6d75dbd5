// A mesh connection that closes with calls held for the peer's request budget (PROTOCOL.md §10
// `maxRequests`) fails them one by one, in the order they were made, and each channel stops
// counting its held call only as that call's caller is told: a caller that looks at the pool
// from its callback (the client's does, to take a waiting request to a free channel) still sees
// the channels of the held calls not yet failed as taken. Against a hand-played peer stating a
// budget of 1: one call written, two held on two other channels, then the peer's socket closes.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { ConnectionClosed } from "../../src/mux/errors.ts"
import { decodeEnvelope, emptyMeta, encodeEnvelope, EnvelopeKind, MeshDefaults } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, type RawPacket, waitFor } from "../support/iipRaw.ts"
import { helloOf, startClient, startRawMeshPeer } from "../support/meshTest.ts"

const requestIdOf = (packet: RawPacket): number => packet.data.readUInt32BE(4)
const bodyOf = (packet: RawPacket): string => packet.data.subarray(decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes).bodyOffset).toString()

describe("held calls failed by the connection's close", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("each in turn, the channels of those not yet failed still taken while a caller is told", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxRequests: 1 }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 1 })
    const warmUp = client.call("/x", "warm-up", { timeoutMs: 5000 })
    const first = await peer.take((p) => p.path === "/x", 5000, "the warm-up call")
    peer.sockets[0]!.write(frame(5, first.path, first.channelId, encodeEnvelope(EnvelopeKind.response, 0, requestIdOf(first), emptyMeta, Buffer.from("ok"), 8192)))
    expect((await warmUp).toString()).toBe("ok")
    const session = client.meshSessions[0]!
    const [a, b, c] = [session.openChannel(), session.openChannel(), session.openChannel()]
    const told: Array<string> = []
    const callback = (name: string) => (error: unknown) => {
      told.push(`${name} ${error instanceof ConnectionClosed ? `closed sent=${error.sent}` : String(error)}: b ${b.outstanding}, c ${c.outstanding}`)
    }
    session.call(a, "/x", Buffer.from("c0"), { timeoutMs: 5000 }, callback("c0"))
    session.call(b, "/x", Buffer.from("c1"), { timeoutMs: 5000 }, callback("c1"))
    session.call(c, "/x", Buffer.from("c2"), { timeoutMs: 5000 }, callback("c2"))
    expect(bodyOf(await peer.take((p) => p.path === "/x", 5000, "c0"))).toBe("c0")
    expect([b.held, c.held]).toEqual([1, 1])
    peer.sockets[0]!.destroy()
    await waitFor(() => told.length === 3, 5000, `every call to be told (told ${told.length})`)
    expect(told).toEqual(["c1 closed sent=false: b 0, c 1", "c2 closed sent=false: b 0, c 0", "c0 closed sent=true: b 0, c 0"])
  })
})
