// Trailers closing a stream in mesh mode (PROTOCOL.md §13), over real TCP: a handler's streamed
// answer whose body carries trailers reaches the caller's stream with them after its last byte; a
// streamed request body's trailers reach the handler's stream; an IncomingStream relayed as a body
// passes its sender's trailers on; a peer whose hello does not name `trailers` gets a plain last
// packet (header byte 00), never 03; a malformed trailers chunk fails its stream, not the connection.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type IipServer, reply } from "../../src/iip/server.ts"
import { ChunkHeader, encodeEnvelope, encodeHello, EnvelopeKind, MeshFeatures, MeshPath, type Meta } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, RawParser, startRawServer, withTimeout } from "../support/iipRaw.ts"
import { helloOf, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"

/** A streamed body of `pieces`, ending with `trailers`. */
const withTrailers = (pieces: ReadonlyArray<string>, trailers: Meta): AsyncIterable<Uint8Array> & { readonly trailers: Meta } => ({
  trailers,
  async *[Symbol.asyncIterator]() {
    for (const piece of pieces) yield Buffer.from(piece)
  }
})

const read = async (stream: AsyncIterable<Uint8Array>): Promise<string> => {
  let text = ""
  for await (const chunk of stream) text += Buffer.from(chunk).toString()
  return text
}

describe("trailers closing a stream", () => {
  let cleanup: Cleanup
  let server: IipServer
  beforeEach(async () => {
    cleanup = new Cleanup()
    server = await startServer(cleanup)
    server.handle("/answer", () => reply(withTrailers(["a", "b", "c"], new Map([["grpc-status", "0"], ["x", "y"]]))))
    // Reads the request body, then answers with the trailers it came with.
    server.handle("/upload", async (request) => {
      const stream = request.context.stream!
      const text = await read(stream)
      return JSON.stringify({ text, trailers: Object.fromEntries(stream.trailers ?? []) })
    })
    server.handle("/relay", (request) => reply(request.context.stream!))
    // Answers with the request's own metadata as its trailers: a Meta as an envelope decodes it (a MetaEntries, not a Map).
    server.handle("/meta-back", (request) => reply(withTrailers(["m"], request.meta)))
  })
  afterEach(() => cleanup.run())

  it("a streamed answer's trailers reach the caller after its last byte", async () => {
    const client = startClient(cleanup, server.address.port)
    const answer = await client.stream("/answer", Buffer.alloc(0), { timeoutMs: 5000 })
    expect(await read(answer.stream!)).toBe("abc")
    // Decoded as a MetaEntries (protocol/mesh.ts): its entries, in order.
    expect([...(answer.stream!.trailers ?? [])]).toStrictEqual([["grpc-status", "0"], ["x", "y"]])
  })

  it("a streamed request body's trailers reach the handler; a relayed stream passes them on", async () => {
    const client = startClient(cleanup, server.address.port)
    const uploaded = await client.stream("/upload", withTrailers(["hello", " ", "world"], new Map([["checksum", "c1"]])), { timeoutMs: 5000 })
    expect(JSON.parse(uploaded.stream === undefined ? uploaded.data.toString() : await read(uploaded.stream))).toStrictEqual({ text: "hello world", trailers: { checksum: "c1" } })
    const relayed = await client.stream("/relay", withTrailers(["x", "y"], new Map([["t", "1"]])), { timeoutMs: 5000 })
    expect(await read(relayed.stream!)).toBe("xy")
    expect([...(relayed.stream!.trailers ?? [])]).toStrictEqual([["t", "1"]])
  })

  it("trailers that are a decoded envelope's metadata reach the caller as a Map's do", async () => {
    const client = startClient(cleanup, server.address.port)
    const answer = await client.stream("/meta-back", Buffer.alloc(0), { timeoutMs: 0, meta: new Map([["x-c", "1"]]) })
    expect(await read(answer.stream!)).toBe("m")
    expect([...(answer.stream!.trailers ?? [])]).toStrictEqual([["x-c", "1"]])
  })

  it("a peer that did not name `trailers` in its hello gets a plain last packet", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ node: "old", features: MeshFeatures.filter((f) => f !== "trailers") }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    void client.stream("/up", withTrailers(["ab"], new Map([["t", "1"]])), { timeoutMs: 0 }).catch(() => {})
    const last = await peer.take((p) => p.path === "/up" && p.status === 3, 5000, "the body's last packet")
    expect(last.data).toStrictEqual(Buffer.of(ChunkHeader.data))
    client.close()
  })

  it("a malformed trailers chunk fails its stream; the connection goes on", async () => {
    // A hand-played acceptor that answers /bad with a stream closed by a trailers chunk whose length lies, and /ok whole.
    const { port } = await startRawServer(cleanup, (socket) => {
      const parser = new RawParser()
      socket.on("data", (chunk: Buffer) => {
        for (const packet of parser.push(chunk)) {
          if (packet.path === MeshPath.hello) socket.write(frame(5, MeshPath.hello, 0, encodeHello(helloOf({ node: "liar" }), true)))
          else if (packet.path === "/bad" && packet.status === 1) {
            const id = packet.data.readUInt32BE(4)
            socket.write(frame(4, "/bad", packet.channelId, encodeEnvelope(EnvelopeKind.response, 0, id, new Map(), Buffer.from("ab"), 8192)))
            socket.write(frame(7, "/bad", packet.channelId, Buffer.of(ChunkHeader.trailers, 0, 50, 1, 0x74)))
          } else if (packet.path === "/ok" && packet.status === 1) {
            socket.write(frame(5, "/ok", packet.channelId, encodeEnvelope(EnvelopeKind.response, 0, packet.data.readUInt32BE(4), new Map(), Buffer.from("fine"), 8192)))
          }
        }
      })
    })
    const client = startClient(cleanup, port, { maxConnections: 1 })
    const bad = await client.stream("/bad", Buffer.alloc(0), { timeoutMs: 5000 })
    await expect(withTimeout(read(bad.stream!), 5000, "the bad stream")).rejects.toThrow(/unreadable trailers/)
    expect((await client.call("/ok", "x", { timeoutMs: 5000 })).toString()).toBe("fine")
    expect(client.stats.mesh).toBe(1)
  })
})
