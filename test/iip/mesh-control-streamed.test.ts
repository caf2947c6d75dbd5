// A control message is one packet (PROTOCOL.md §11): a peer that streams one (a `/sys/ping` whose
// first packet says more follow) breaks the protocol and its connection closes (rule
// `bad-control`). Before, the receiver gave the message's body a stream, as for a request, that
// nothing read or dropped: its bytes stayed charged to the connection's budget and the server's
// shared one for the connection's life. A few such connections filled the shared budget, and the
// server refused every other caller's requests `overloaded`; one alone paused its own reading for good.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { DialerControlChannel, encodeHello, MeshPath } from "../../src/protocol/mesh.ts"
import { meshChunk, meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, frame, RawClient, waitFor } from "../support/iipRaw.ts"
import { collectLog, helloOf, settle, startClient, startServer } from "../support/meshTest.ts"

const KiB = 1024
/** Each streamed ping's body: within the stream window (1 MiB) and the connection's budget, most of it. */
const CHUNKS = 14
const CHUNK_BYTES = 64 * KiB

describe("a control message streamed in several packets", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("closes its connection (bad-control), so two such connections cannot fill the shared budget against other callers", async () => {
    const { events, log } = collectLog()
    // The shared budget holds one connection's worth and a half: two streamed pings' bodies fill it.
    const server = await startServer(cleanup, { log, maxQueuedBytesPerConnection: 1024 * KiB, maxQueuedBytes: 1536 * KiB })
    server.handle("/echo", (request) => request.data)
    for (let attacker = 0; attacker < 2; attacker++) {
      const raw = await RawClient.connect(server.address.port, cleanup)
      raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: `streamer-${attacker}` }), false)))
      await raw.next(5000)
      raw.write(meshRequest(0, MeshPath.ping, DialerControlChannel, 1, Buffer.alloc(8)))
      for (let i = 0; i < CHUNKS; i++) raw.write(meshChunk(2, MeshPath.ping, DialerControlChannel, Buffer.alloc(CHUNK_BYTES)))
      raw.write(meshChunk(3, MeshPath.ping, DialerControlChannel, Buffer.alloc(1)))
      // A whole ping behind it: answered once all of the above was read, unless the connection closed first.
      raw.write(meshRequest(1, MeshPath.ping, DialerControlChannel, 2, Buffer.alloc(8)))
      await waitFor(() => raw.isClosed || raw.packets.some((p) => p.path === MeshPath.ping && p.data.readUInt32BE(4) === 2), 5000, `attacker ${attacker}'s connection to close, or its whole ping answered`)
      expect(raw.isClosed).toBe(true)
    }
    expect(events.filter((e) => e.event === "protocol-violation").map((e) => e.fields.rule)).toEqual(["bad-control", "bad-control"])
    const client = startClient(cleanup, server.address.port)
    const answer = await settle(client.call("/echo", "still served", { timeoutMs: 5000 }))
    expect(answer.ok ? answer.value.toString() : String(answer.error)).toBe("still served")
  })
})
