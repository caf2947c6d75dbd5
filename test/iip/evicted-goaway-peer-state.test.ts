// A go-away `closing` (PROTOCOL.md §11) is one connection closed at the server's connection cap
// (one-way: idle, closed now; expecting an answer: busy, drained first),
// not the server stopping: the client (src/iip/client.ts) moves off that connection but does not
// tell its owner the peer went away (onPeerState "go-away"), which the sidecar's balancer takes as a
// graceful stop (a refused redial soon after held out as a restart, its stats reset on return).
// A plain go-away still tells it, and so does a request refused `draining` after it (the server
// stopping), but not one refused after a go-away `closing` (the connection drained alone). A
// hand-played acceptor plays them.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import {
  AcceptorControlChannel,
  decodeEnvelope,
  emptyMeta,
  encodeEnvelope,
  encodeErrorBody,
  EnvelopeFlag,
  EnvelopeKind,
  MeshErrorCode,
  MeshPath
} from "../../src/protocol/mesh.ts"
import { Status } from "../../src/protocol/constants.ts"
import { Cleanup, frame, withTimeout } from "../support/iipRaw.ts"
import { settle, startClient, startRawMeshPeer } from "../support/meshTest.ts"

describe("a go-away closing", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const peerStatesAfter = async (body: object, flags: number = EnvelopeFlag.oneway): Promise<Array<string>> => {
    const peer = await startRawMeshPeer(cleanup)
    const states: Array<string> = []
    const client = startClient(cleanup, peer.port, { maxConnections: 1, onPeerState: (state) => states.push(state) })
    const call = settle(client.call("/echo", "in the air"))
    await peer.take((p) => p.path === "/echo", 5000, "the request")
    const goAway = encodeEnvelope(EnvelopeKind.request, flags, 1, emptyMeta, Buffer.from(JSON.stringify(body)), 8192)
    peer.sockets[0]!.end(frame(Status.RequestWhole, MeshPath.goAway, AcceptorControlChannel, goAway))
    // The call ends once the connection does: the go-away was read before it.
    await withTimeout(call, 5000, "the request to end")
    return states
  }

  // The go-away expecting an answer, then the request it crossed refused `draining` (not processed), as a busy evicted connection does.
  const peerStatesAfterRefusal = async (body: object): Promise<Array<string>> => {
    const peer = await startRawMeshPeer(cleanup)
    const states: Array<string> = []
    const client = startClient(cleanup, peer.port, { maxConnections: 1, onPeerState: (state) => states.push(state) })
    const call = settle(client.call("/echo", "crossing"))
    const request = await peer.take((p) => p.path === "/echo", 5000, "the request")
    const requestId = decodeEnvelope(request.data, 8192).requestId
    const goAway = encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, Buffer.from(JSON.stringify(body)), 8192)
    const refusal = encodeErrorBody({ code: MeshErrorCode.draining, message: "draining", processed: false })
    peer.sockets[0]!.write(Buffer.concat([
      frame(Status.RequestWhole, MeshPath.goAway, AcceptorControlChannel, goAway),
      frame(Status.ResponseWhole, "/echo", request.channelId, encodeEnvelope(EnvelopeKind.error, 0, requestId, emptyMeta, refusal, 8192))
    ]))
    // Its only connection draining, the refusal is handed back, for the caller to go to another server.
    const outcome = await withTimeout(call, 5000, "the request to end")
    expect(outcome.ok).toBe(false)
    expect((outcome as { error: unknown }).error).toMatchObject({ _tag: "RemoteError", code: MeshErrorCode.draining, processed: false })
    return states
  }

  it("a request refused draining after it is not reported as the peer going away either; after a plain go-away it is", async () => {
    expect(await peerStatesAfterRefusal({ reason: "evicted", closing: true })).toEqual([])
    expect(await peerStatesAfterRefusal({ reason: "stopping" })).toContain("go-away")
  }, 30_000)

  it("is not reported as the peer going away; a plain go-away is", async () => {
    expect(await peerStatesAfter({ reason: "evicted", closing: true })).toEqual([])
    expect(await peerStatesAfter({ reason: "stopping" })).toEqual(["go-away"])
    // Expecting an answer: one connection drained (evicted busy), not the server stopping either.
    expect(await peerStatesAfter({ reason: "evicted", closing: true }, 0)).toEqual([])
    expect(await peerStatesAfter({ reason: "stopping" }, 0)).toEqual(["go-away"])
  }, 30_000)
})
