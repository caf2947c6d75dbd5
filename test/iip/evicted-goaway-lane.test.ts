// An idle mesh connection evicted at the connection cap says go-away `closing` (MeshSession.closeNow,
// PROTOCOL.md §11): the peer then takes every call still unanswered as never read. "Idle" counts
// requests running or waiting, not answers the writer still holds: a whole answer sent on a channel
// whose lane still holds a streamed answer's chunks waits behind them (writer.ts), and a go-away,
// a whole packet, goes out ahead of every lane. Told there, the peer would hold a request the
// server ran and answered as unread until that answer came, and as unread for good if the
// connection died first (the 5 s the evicted socket is given). A hand-played dialer pipelines a
// streamed download and a small request on one channel; the eviction comes the moment the small
// one is answered, its answer behind the download's chunks (queued in microtasks, flushed a tick
// later: no socket buffers needed for the order). Untold, it still sends what it answered, then its FIN.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { reply } from "../../src/mux/request.ts"
import { decodeEnvelope, emptyMeta, encodeEnvelope, encodeHello, EnvelopeKind, goAwaySaysClosing, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { Status } from "../../src/protocol/constants.ts"
import { Cleanup, frame, RawParser, waitFor } from "../support/iipRaw.ts"
import { helloOf, startServer } from "../support/meshTest.ts"

describe("an idle mesh connection evicted with answers behind a stream lane", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("never says closing ahead of an answer it still holds", async () => {
    const server = await startServer(cleanup, {})
    let idleAtEviction = false
    server.handle("/down", () => reply((async function*() {
      yield Buffer.alloc(2 * MeshDefaults.chunkBytes, 7)
    })()))
    server.handle("/small", () => {
      // Answered now; the eviction runs once the answer is queued (the next microtask).
      const [mesh] = [...server.meshSessions]
      queueMicrotask(() => {
        // Idle as the eviction sees it (server.ts isIdle): nothing running, nothing waiting.
        idleAtEviction = mesh!.servingCount === 0 && mesh!.callingCount === 0
        mesh!.closeNow("evicted at the connection limit (fair share)")
      })
      return Buffer.from("done")
    })
    const socket = net.connect({ host: "127.0.0.1", port: server.address.port })
    cleanup.add(() => socket.destroy())
    const parser = new RawParser()
    const seen: Array<string> = []
    let hello = false
    let ended = false
    socket.on("error", () => {})
    socket.on("close", () => (ended = true))
    socket.on("data", (chunk: Buffer) => {
      for (const packet of parser.push(chunk)) {
        if (packet.path === MeshPath.hello) hello = true
        else if (packet.path === MeshPath.goAway) seen.push(goAwaySaysClosing(packet.data.subarray(decodeEnvelope(packet.data, 8192).bodyOffset)) ? "go-away closing" : "go-away")
        else if (packet.path === "/small") seen.push("/small answer")
      }
    })
    socket.write(frame(Status.RequestWhole, MeshPath.hello, 0, encodeHello(helloOf(), false)))
    await waitFor(() => hello, 5000, "the hello's answer")
    const request = (path: string, id: number) => frame(Status.RequestWhole, path, 1, encodeEnvelope(EnvelopeKind.request, 0, id, emptyMeta, Buffer.from("x"), 8192))
    // One write: both read at once, /small waiting in the channel's mailbox behind /down.
    socket.write(Buffer.concat([request("/down", 1), request("/small", 2)]))
    await waitFor(() => ended, 5000, "the server to close")
    expect(idleAtEviction).toBe(true)
    // No answer after a go-away closing: it said the server read none of what was unanswered.
    const closing = seen.indexOf("go-away closing")
    expect(closing === -1 ? [] : seen.slice(closing + 1)).toEqual([])
    // What the server answered still goes out before its FIN.
    expect(seen).toContain("/small answer")
  })
})
