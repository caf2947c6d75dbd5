// A drained connection the client closes itself (src/iip/client.ts closeDrained, round three of
// the red team) waits for what the peer asked of it: here a peer that never closes its
// connections calls the client (calls in both directions), then says go-away. The call runs 1.5 s,
// past the first look 1 s after the go-away, which left the connection open for the call. Nothing
// looked again: the call's end is no answer or stream of the client's own, so the connection the
// peer never closes stayed open for good. The call must be answered, then the connection closed.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { AcceptorChannelBase, AcceptorControlChannel, encodeEnvelope, encodeGoAway, encodeHello, EnvelopeFlag, EnvelopeKind, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, RawParser, startRawServer, waitFor } from "../support/iipRaw.ts"
import { helloOf, settle, startClient } from "../support/meshTest.ts"

describe("a drained connection with a call of the peer's still served on it", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("is closed by the client once that call is answered, not left open for good", async () => {
    const callChannel = AcceptorChannelBase + 1
    const answers: Array<string> = []
    let firstClosed = false
    let accepted = 0
    const { port } = await startRawServer(cleanup, (socket) => {
      // The client redials (a channel kept open ahead): the first connection is the one looked at.
      if (accepted++ === 0) socket.once("close", () => (firstClosed = true))
      const parser = new RawParser()
      socket.on("data", (chunk: Buffer) => {
        for (const packet of parser.push(chunk)) {
          if (packet.channelId === callChannel) answers.push(packet.data.subarray(8).toString())
          if (packet.path !== MeshPath.hello || packet.channelId !== 0) continue
          const call = encodeEnvelope(EnvelopeKind.request, 0, 1, new Map(), Buffer.from("hi"), 8192)
          const goAway = encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, 1, new Map(), encodeGoAway("stopping", false), 8192)
          socket.write(Buffer.concat([frame(5, MeshPath.hello, 0, encodeHello(helloOf(), true)), frame(1, "/slow", callChannel, call), frame(1, MeshPath.goAway, AcceptorControlChannel, goAway)]))
        }
      })
    })
    const client = startClient(cleanup, port, { reconnect: { baseMs: 1000, maxMs: 1000 } })
    // The call's length is the scenario (past the first look at 1 s), not a wait for an event.
    client.handle("/slow", () => new Promise((resolve) => setTimeout(() => resolve("slow done"), 1500)))
    await settle(client.call("/x", "hi", { timeoutMs: 200 }))
    await waitFor(() => answers.length > 0, 5000, "the client's answer to the peer's call")
    expect(answers.join("")).toContain("slow done")
    await waitFor(() => firstClosed, 5000, "the client to close the drained connection")
  })
})
