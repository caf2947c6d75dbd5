// A mesh connection evicted at the IIP server's connection cap (src/iip/server.ts evictUnfair,
// fairPlaces.ts) while its peer has a request in the air. An idle one is told first: a go-away
// saying the server is closing now, having answered everything it read (PROTOCOL.md §11), in the
// same write as its FIN; the peer (our IipClient, the sidecar's dialer) then ends every request
// it still waits for as not processed (ConnectionClosed, sent: false), which its callers retry
// whatever the method. A busy one is drained instead (evicted-busy-drain.test.ts). Two loopback
// sources: the peer's 127.0.0.1 holds every place, a newcomer from 127.0.0.3 takes one. A hand-played acceptor
// checks what the client trusts: only a one-way go-away whose body is a JSON object with
// `closing: true`. The evicted sockets still carrying their go-away (half-closed, at most 5 s)
// are bounded by maxConnections: past that an eviction closes untold.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IncomingRequest } from "../../src/iip/server.ts"
import { ConnectionClosed } from "../../src/mux/errors.ts"
import { AcceptorControlChannel, encodeEnvelope, encodeHello, EnvelopeFlag, EnvelopeKind, goAwaySaysClosing, MeshPath } from "../../src/protocol/mesh.ts"
import { holdConnection } from "../support/heldConnections.ts"
import { Cleanup, frame, RawParser, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, helloOf, settle, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"

/** A raw mesh dialer that keeps its side open after the server's FIN (so the server's socket stays), recording a go-away `closing`. */
const lingeringMesh = async (cleanup: Cleanup, port: number, localAddress: string) => {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress, allowHalfOpen: true })
  cleanup.add(() => socket.destroy())
  const held = { socket, hello: false, toldClosing: false, ended: false }
  const parser = new RawParser()
  socket.on("error", () => {})
  socket.on("data", (chunk: Buffer) => {
    for (const packet of parser.push(chunk)) {
      if (packet.path === MeshPath.hello) held.hello = true
      // The envelope is 8 bytes and carries no metadata here.
      if (packet.path === MeshPath.goAway && goAwaySaysClosing(packet.data.subarray(8))) held.toldClosing = true
    }
  })
  socket.once("end", () => (held.ended = true))
  socket.once("close", () => (held.ended = true))
  socket.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf(), false)))
  await waitFor(() => held.hello || held.ended, 5000, "the hello's answer")
  if (held.ended) throw new Error(`the ${localAddress} connection was closed at accept`)
  return held
}

const CAP = 2

describe("a mesh connection evicted at the connection cap", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const serve = async () => {
    const log = collectLog()
    const started: Array<string> = []
    const aborted: Array<string> = []
    const server = await startServer(cleanup, { maxConnections: CAP, log: log.log })
    server.handle("/echo", (request) => {
      started.push(Buffer.from(request.data).toString())
      return request.data
    })
    server.handle("/hold", (request: IncomingRequest) =>
      new Promise<Uint8Array>((resolve) => {
        started.push(Buffer.from(request.data).toString())
        request.signal.addEventListener("abort", () => {
          aborted.push(String(request.signal.reason))
          resolve(new Uint8Array())
        })
      }))
    return { server, events: log.events, started, aborted }
  }

  it("idle at the server: a request it never read ends not processed (sent: false), and the newcomer gets the place", async () => {
    const { server, events, started, aborted } = await serve()
    const peer = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await peer.call("/echo", "first")).toString()).toBe("first")
    const [mesh] = [...server.meshSessions]
    // A second place of the peer's source, busy: the peer's connection is the idle one that goes.
    const other = await holdConnection(cleanup, server.address.port, "127.0.0.1", "plain")
    other.socket.write(frame(1, "/hold", 0, "other"))
    await waitFor(() => started.includes("other"), 5000, "the held request to reach the handler")
    expect(server.connectionCount).toBe(CAP)
    // The server reads nothing more from the peer: its next request waits unread in the socket.
    mesh!.connection.pauseReading()
    const unread = settle(peer.call("/echo", "never read"))
    const socket = mesh!.connection.socket as net.Socket
    await waitFor(() => socket.readableLength > 0, 5000, "the request to reach the server's socket")
    const newcomer = await holdConnection(cleanup, server.address.port, "127.0.0.3", "plain")
    expect(newcomer.closed).toBe(false)
    expect(server.connectionCount).toBe(CAP)
    const outcome = await withTimeout(unread, 5000, "the unread request to end")
    expect(outcome.ok).toBe(false)
    const error = (outcome as { error: unknown }).error
    expect(error).toBeInstanceOf(ConnectionClosed)
    expect((error as ConnectionClosed).sent).toBe(false)
    expect(started.filter((s) => s !== "x")).toEqual(["first", "other"])
    expect(other.closed).toBe(false)
    expect(aborted).toEqual([])
    expect(events.filter((e) => e.event === "connection-evicted")).toHaveLength(1)
    // Paused here, the evicted socket never sees the peer's FIN: it would stay its 5 s.
    socket.destroy()
  }, 30_000)

  // A hand-played acceptor reads the client's request, says go-away with `body` (one-way or not), and ends the connection.
  const goAwayThenFin = async (body: Buffer, flags: number) => {
    const peer = await startRawMeshPeer(cleanup)
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    const call = settle(client.call("/echo", "in the air"))
    await peer.take((p) => p.path === "/echo", 5000, "the request")
    const socket = peer.sockets[0]!
    socket.end(frame(1, MeshPath.goAway, AcceptorControlChannel, encodeEnvelope(EnvelopeKind.request, flags, 1, new Map(), body, 8192)))
    const outcome = await withTimeout(call, 5000, "the request to end")
    expect(outcome.ok).toBe(false)
    const error = (outcome as { error: unknown }).error
    expect(error).toBeInstanceOf(ConnectionClosed)
    return (error as ConnectionClosed).sent
  }

  it("the client trusts only a one-way go-away whose JSON object says closing: true; anything else is a plain go-away, a connection loss", async () => {
    const closing = Buffer.from(JSON.stringify({ reason: "evicted", closing: true }))
    expect(await goAwayThenFin(closing, EnvelopeFlag.oneway)).toBe(false)
    // Expecting an answer: the sender goes on reading, so it may have read what is in the air.
    expect(await goAwayThenFin(closing, 0)).toBe(true)
    expect(await goAwayThenFin(Buffer.from(JSON.stringify({ reason: "stopping" })), EnvelopeFlag.oneway)).toBe(true)
    expect(await goAwayThenFin(Buffer.from(JSON.stringify({ reason: "x", closing: "true" })), EnvelopeFlag.oneway)).toBe(true)
    expect(await goAwayThenFin(Buffer.from("{\"closing\":true"), EnvelopeFlag.oneway)).toBe(true)
    expect(await goAwayThenFin(Buffer.from(JSON.stringify([{ closing: true }])), EnvelopeFlag.oneway)).toBe(true)
    // Over 4 KiB: not parsed at all.
    expect(await goAwayThenFin(Buffer.from(JSON.stringify({ reason: "r".repeat(5000), closing: true })), EnvelopeFlag.oneway)).toBe(true)
  }, 30_000)

  it("evicted sockets still carrying their go-away are bounded: past maxConnections of them, an eviction closes untold", async () => {
    const { server } = await serve()
    const port = server.address.port
    const hog = [await lingeringMesh(cleanup, port, "127.0.0.2"), await lingeringMesh(cleanup, port, "127.0.0.2")]
    const told = []
    // Each round: a newcomer from a new source takes one of the hog's two places, then leaves; the hog fills it again.
    for (let round = 0; round < 3; round++) {
      const newcomer = await holdConnection(cleanup, port, `127.0.0.${3 + round}`, "plain")
      await waitFor(() => hog.some((h) => h.ended), 5000, "a hog connection to be evicted")
      const evicted = hog.splice(hog.findIndex((h) => h.ended), 1)[0]!
      told.push(evicted.toldClosing)
      expect(server.connectionCount).toBe(CAP)
      newcomer.socket.destroy()
      await waitFor(() => server.connectionCount === CAP - 1, 5000, "the newcomer's place to be free")
      hog.push(await lingeringMesh(cleanup, port, "127.0.0.2"))
    }
    // The first two (CAP) linger half-closed, the hog never closing: the third is closed at once, untold.
    expect(told).toEqual([true, true, false])
  }, 30_000)
})
