// Compression negotiated in mesh mode, over real TCP on 127.0.0.1 (PROTOCOL.md §10, §12.1, §13):
// - Negotiation matrix: both offer zstd+gzip -> zstd; the acceptor's preference wins; one side
//   with none, or no codec in common -> off; a plain IIP server, or an iip-mesh peer that does not
//   know the field -> off, and its bodies arrive as they were given.
// - On the wire: a compressible body (whole, and streamed chunk by chunk) costs a fraction of its
//   size in socket bytes, both ways; an incompressible one, or one under the threshold, goes with
//   flag 0; a side that did not ask to compress only reads.
// - Corruption: a compressed request that does not decompress is answered bad_request (not
//   processed) and a push like it is dropped, while the other requests on the connection, on the
//   same channel and on others, are answered; a compressed answer that does not decompress fails
//   its call with DecompressionFailed (a streamed one also cancels at the peer), and the next call
//   on the same connection succeeds; a corrupt chunk fails only its own stream (request or answer).
import type * as net from "node:net"
import * as zlib from "node:zlib"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { ClientOptions } from "../../src/iip/clientOptions.ts"
import { reply, type ServerOptions } from "../../src/iip/server.ts"
import { DecompressionFailed } from "../../src/protocol/compression.ts"
import { encodeHello, MeshPath } from "../../src/protocol/mesh.ts"
import { prng } from "../helpers/prng.ts"
import { Cleanup, frame, type RawPacket, RawClient } from "../support/iipRaw.ts"
import { collectLog, helloOf, rejection, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"
import { jsonLike } from "../helpers/jsonLike.ts"

const KiB = 1024


/** A mesh envelope by hand (§12): kind, flags, no metadata, request id, body. */
const envelope = (kind: number, flags: number, requestId: number, body: Uint8Array | string): Buffer => {
  const head = Buffer.alloc(8)
  head[0] = kind
  head[1] = flags
  head.writeUInt32BE(requestId, 4)
  return Buffer.concat([head, typeof body === "string" ? Buffer.from(body, "utf8") : body])
}

const flagsOf = (packet: RawPacket): number => packet.data[1]!
const bodyOf = (packet: RawPacket): Buffer => packet.data.subarray(8 + packet.data.readUInt16BE(2))
const requestIdOf = (packet: RawPacket): number => packet.data.readUInt32BE(4)
/** 1024 bytes of "a" as a zstd frame (PROTOCOL.md §16). */
const zstdFrame = Buffer.from("28b52ffd6400034d00001061610100fb2b800509986b45", "hex")

describe("mesh compression", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  const pair = async (serverOptions: ServerOptions, clientOptions: Partial<ClientOptions>) => {
    const server = await startServer(cleanup, serverOptions)
    server.handle("/echo", (request) => request.data)
    server.handle("/stream-echo", (request) => reply(request.context.stream ?? request.data))
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, ...clientOptions })
    expect((await client.call("/echo", "hello", { timeoutMs: 5000 })).toString()).toBe("hello")
    return { server, client, serverSide: () => [...server.meshSessions][0]! }
  }

  /** Bytes the server's socket read and wrote while `run` ran. */
  const socketBytes = async (socket: net.Socket, run: () => Promise<unknown>): Promise<{ readonly up: number; readonly down: number }> => {
    const read = socket.bytesRead
    const written = socket.bytesWritten
    await run()
    return { up: socket.bytesRead - read, down: socket.bytesWritten - written }
  }

  it("negotiation matrix: zstd when both offer both, the acceptor's preference, off with none or nothing in common", async () => {
    const cases: Array<{ readonly client: ClientOptions["compression"]; readonly server: ServerOptions["compression"]; readonly codec: string | undefined }> = [
      { client: {}, server: {}, codec: "zstd" },
      { client: undefined, server: undefined, codec: "zstd" },
      { client: { codecs: ["gzip"] }, server: {}, codec: "gzip" },
      { client: { codecs: ["zstd", "gzip"] }, server: { codecs: ["gzip", "zstd"] }, codec: "gzip" },
      { client: false, server: {}, codec: undefined },
      { client: {}, server: false, codec: undefined },
      { client: { codecs: ["zstd"] }, server: { codecs: ["gzip"] }, codec: undefined },
      { client: { codecs: [] }, server: {}, codec: undefined }
    ]
    const body = jsonLike(32 * KiB)
    for (const c of cases) {
      const { client, serverSide } = await pair(
        c.server === undefined ? {} : { compression: c.server },
        c.client === undefined ? {} : { compression: c.client }
      )
      const label = JSON.stringify({ client: c.client ?? "default", server: c.server ?? "default" })
      expect(client.meshSessions[0]!.codec, label).toBe(c.codec)
      expect(serverSide().codec, label).toBe(c.codec)
      expect(Buffer.compare(await client.call("/echo", body, { timeoutMs: 5000 }), body), label).toBe(0)
    }
  })

  it("a plain IIP server, and an iip-mesh peer that does not know the field: off, and bodies arrive as they were given", async () => {
    const body = jsonLike(32 * KiB)
    const plainServer = await startServer(cleanup, { mesh: false })
    let received: Buffer | undefined
    plainServer.handle("/echo", (request) => (received = request.data))
    const toPlain = startClient(cleanup, plainServer.address.port, { maxConnections: 1, compression: {} })
    expect(Buffer.compare(await toPlain.call("/echo", body, { timeoutMs: 5000 }), body)).toBe(0)
    expect(await toPlain.mode()).toBe("plain")
    expect(Buffer.compare(received!, body)).toBe(0)
    const plainSocket = [...plainServer.sessions][0]!.connection.socket as net.Socket
    expect(plainSocket.bytesRead).toBeGreaterThan(body.length)

    // A mesh peer whose hello has no `compression`: its answer carries none, so nothing is compressed.
    const older = await startRawMeshPeer(cleanup, helloOf({ node: "older" }))
    const client = startClient(cleanup, older.port, { maxConnections: 1, compression: { minBytes: 1 } })
    const call = client.call("/x", body, { timeoutMs: 5000 })
    const request = await older.take((p) => p.path === "/x", 5000, "the request")
    expect(client.meshSessions[0]!.codec).toBeUndefined()
    expect(flagsOf(request)).toBe(0)
    expect(Buffer.compare(bodyOf(request), body)).toBe(0)
    older.sockets[0]!.write(frame(5, "/x", request.channelId, envelope(2, 0, requestIdOf(request), "ok")))
    expect((await call).toString()).toBe("ok")
  })

  it("compressed stream chunks of ~half their size, most spanning socket reads (assembled whole, the plain ones read in parts), arrive intact both ways", async () => {
    const { client } = await pair({ compression: {} }, { compression: {} })
    // Random bytes of a 16-symbol alphabet: each 64 KiB chunk compresses to about half.
    const rng = prng(16)
    const big = Buffer.alloc(8 * 1024 * KiB)
    for (let i = 0; i < big.length; i++) big[i] = 0x41 + rng.int(0, 15)
    const answer = await client.stream("/stream-echo", big, { timeoutMs: 20_000 })
    const parts: Array<Buffer> = []
    for await (const chunk of answer.stream!) parts.push(chunk)
    expect(Buffer.compare(Buffer.concat(parts), big)).toBe(0)
  })

  it("a compressible body costs a fraction of its size on the socket, both ways, whole and streamed", async () => {
    const body = jsonLike(60 * KiB)
    const measure = async (compression: NonNullable<ClientOptions["compression"]>) => {
      const { client, serverSide } = await pair({ compression: {} }, { compression })
      const socket = serverSide().connection.socket as net.Socket
      const whole = await socketBytes(socket, async () => {
        expect(Buffer.compare(await client.call("/echo", body, { timeoutMs: 5000 }), body)).toBe(0)
      })
      const big = jsonLike(1024 * KiB)
      const streamed = await socketBytes(socket, async () => {
        const answer = await client.stream("/stream-echo", big, { timeoutMs: 10_000 })
        const parts: Array<Buffer> = []
        for await (const chunk of answer.stream!) parts.push(chunk)
        expect(Buffer.compare(Buffer.concat(parts), big)).toBe(0)
      })
      return { whole, streamed }
    }
    const off = await measure(false)
    const on = await measure({})
    // Off: every byte crosses as it is, each way.
    expect(off.whole.up).toBeGreaterThan(60 * KiB)
    expect(off.whole.down).toBeGreaterThan(60 * KiB)
    expect(off.streamed.up).toBeGreaterThan(1024 * KiB)
    // On: the client compresses its request, the server its answer (it was configured to).
    expect(on.whole.up).toBeLessThan(off.whole.up / 5)
    expect(on.whole.down).toBeLessThan(off.whole.down / 5)
    expect(on.streamed.up).toBeLessThan(off.streamed.up / 5)
    expect(on.streamed.down).toBeLessThan(off.streamed.down / 5)
    console.log(
      `[mesh-compression] socket bytes, JSON-like: 60 KiB call up ${off.whole.up} -> ${on.whole.up}, down ${off.whole.down} -> ${on.whole.down}; ` +
        `1 MiB stream up ${off.streamed.up} -> ${on.streamed.up}, down ${off.streamed.down} -> ${on.streamed.down}`
    )
  })

  it("an incompressible body, a small one, and anything from a side that did not ask to compress go with flag 0", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ node: "peer", compression: ["zstd"] }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1, compression: {} })
    const sendAndTake = async (path: string, body: Buffer) => {
      const call = client.call(path, body, { timeoutMs: 5000 })
      const packet = await peer.take((p) => p.path === path, 5000, path)
      peer.sockets[0]!.write(frame(5, path, packet.channelId, envelope(2, 0, requestIdOf(packet), "ok")))
      expect((await call).toString()).toBe("ok")
      return packet
    }
    const random = prng(11).bytes(32 * KiB)
    const incompressible = await sendAndTake("/random", random)
    expect(client.meshSessions[0]!.codec).toBe("zstd")
    expect(flagsOf(incompressible)).toBe(0)
    expect(Buffer.compare(bodyOf(incompressible), random)).toBe(0)

    const small = jsonLike(1000)
    const under = await sendAndTake("/small", small)
    expect(flagsOf(under)).toBe(0)
    expect(Buffer.compare(bodyOf(under), small)).toBe(0)

    const text = jsonLike(32 * KiB)
    const compressed = await sendAndTake("/json", text)
    expect(flagsOf(compressed)).toBe(2)
    expect(bodyOf(compressed).length).toBeLessThan(text.length / 5)
    expect(Buffer.compare(zlib.zstdDecompressSync(bodyOf(compressed)), text)).toBe(0)

    // The default client offers codecs (it reads what the peer compresses) but sends as it is.
    const reader = await startRawMeshPeer(cleanup, helloOf({ node: "peer", compression: ["zstd"] }))
    const readOnly = startClient(cleanup, reader.port, { maxConnections: 1 })
    const call = readOnly.call("/json", text, { timeoutMs: 5000 })
    const plainRequest = await reader.take((p) => p.path === "/json", 5000, "/json")
    expect(readOnly.meshSessions[0]!.codec).toBe("zstd")
    expect(flagsOf(plainRequest)).toBe(0)
    reader.sockets[0]!.write(frame(5, "/json", plainRequest.channelId, envelope(2, 2, requestIdOf(plainRequest), zstdFrame)))
    expect(Buffer.compare(await call, Buffer.alloc(1024, 0x61))).toBe(0)
  })

  it("a compressed request that does not decompress is refused bad_request; a push like it is dropped; nothing else on the connection is lost", async () => {
    const log = collectLog()
    const server = await startServer(cleanup, { compression: {}, log: log.log })
    server.handle("/echo", (request) => request.data)
    const pushed: Array<string> = []
    server.handle("/event", (request) => {
      pushed.push(request.data.toString())
      return request.data
    })
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "raw", compression: ["zstd", "gzip"] }), false)))
    const hello = await raw.next()
    expect(JSON.parse(hello.data.toString()).compression).toStrictEqual(["zstd"])

    const corrupt = Buffer.from(zstdFrame)
    corrupt[corrupt.length - 2]! ^= 0x01
    // A push with a corrupt body, a corrupt request and a good one on channel 1, and a plain one on channel 2.
    raw.write(
      frame(1, "/event", 1, envelope(1, 3, 1, corrupt)),
      frame(1, "/echo", 1, envelope(1, 2, 2, corrupt)),
      frame(1, "/echo", 1, envelope(1, 2, 3, zstdFrame)),
      frame(1, "/event", 2, envelope(1, 1, 1, "after")),
      frame(1, "/echo", 2, envelope(1, 0, 2, "plain"))
    )
    const answers = [await raw.next(), await raw.next(), await raw.next()]
    const on = (channel: number) => answers.filter((a) => a.channelId === channel)
    const [refused, good] = on(1)
    expect(requestIdOf(refused!)).toBe(2)
    expect(refused!.data[0]).toBe(3)
    expect(JSON.parse(bodyOf(refused!).toString())).toMatchObject({ code: "bad_request", processed: false })
    expect(JSON.parse(bodyOf(refused!).toString()).message).toMatch(/zstd body cannot be decompressed/)
    // The good request is answered, compressed by the server (it was configured to).
    expect(requestIdOf(good!)).toBe(3)
    expect(flagsOf(good!)).toBe(2)
    expect(Buffer.compare(zlib.zstdDecompressSync(bodyOf(good!)), Buffer.alloc(1024, 0x61))).toBe(0)
    expect(bodyOf(on(2)[0]!).toString()).toBe("plain")
    expect(pushed).toStrictEqual(["after"])
    expect(log.events.filter((e) => e.event === "push-failed").map((e) => e.fields.code)).toStrictEqual(["bad_request"])
    expect(log.events.filter((e) => e.event === "protocol-violation")).toStrictEqual([])
    expect(raw.isClosed).toBe(false)
    expect(server.meshSessions.size).toBe(1)
  })

  it("a compressed answer that does not decompress fails its call with DecompressionFailed; a streamed one is cancelled; the next call works", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ node: "peer", compression: ["zstd"] }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    const answerWith = async (path: string, status: number, flags: number, body: Buffer) => {
      const request = await peer.take((p) => p.path === path, 5000, path)
      peer.sockets[0]!.write(frame(status, path, request.channelId, envelope(2, flags, requestIdOf(request), body)))
      return request
    }
    const first = client.call("/a", "x", { timeoutMs: 5000 })
    await answerWith("/a", 5, 2, Buffer.from("definitely not zstd"))
    const error = await rejection(first)
    expect(error).toBeInstanceOf(DecompressionFailed)
    expect(error).toMatchObject({ _tag: "DecompressionFailed", codec: "zstd" })

    // A streamed answer whose first bytes do not decompress: the call fails and the peer is told to stop.
    const streamed = client.stream("/s", Buffer.from("x"), { timeoutMs: 5000 })
    const request = await answerWith("/s", 4, 2, Buffer.from("not zstd either"))
    expect(await rejection(streamed)).toBeInstanceOf(DecompressionFailed)
    const cancel = await peer.take((p) => p.path === MeshPath.cancel, 5000, "the cancel")
    expect(bodyOf(cancel).readUInt32BE(0)).toBe(request.channelId)
    expect(bodyOf(cancel).readUInt32BE(4)).toBe(requestIdOf(request))
    // The peer ends the cancelled stream.
    peer.sockets[0]!.write(frame(7, "/s", request.channelId, Buffer.of(0)))

    const next = client.call("/b", "y", { timeoutMs: 5000 })
    await answerWith("/b", 5, 2, zstdFrame)
    expect(Buffer.compare(await next, Buffer.alloc(1024, 0x61))).toBe(0)
    expect(client.stats.connections).toBe(1)
    expect(client.meshSessions.length).toBe(1)
  })

  it("a chunk that does not decompress fails its stream only: the handler reading the request body, the caller reading the answer", async () => {
    // Request side: a raw dialer streams a body whose second chunk is corrupt.
    const server = await startServer(cleanup, {})
    server.handle("/count", async (request) => {
      let bytes = 0
      try {
        for await (const chunk of request.context.stream!) bytes += chunk.length
        return `read ${bytes}`
      } catch (error) {
        return `failed after ${bytes}: ${(error as { _tag?: string })._tag}`
      }
    })
    server.handle("/echo", (request) => request.data)
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "raw", compression: ["zstd"] }), false)))
    await raw.next()
    raw.write(
      frame(0, "/count", 1, envelope(1, 0, 1, "ab")),
      frame(2, "/count", 1, Buffer.concat([Buffer.of(2), Buffer.from("corrupt")])),
      frame(3, "/count", 1, Buffer.of(0)),
      frame(1, "/echo", 1, envelope(1, 2, 2, zstdFrame))
    )
    const counted = await raw.next()
    expect(bodyOf(counted).toString()).toBe("failed after 2: DecompressionFailed")
    const echoed = await raw.next()
    expect(requestIdOf(echoed)).toBe(2)
    expect(flagsOf(echoed)).toBe(0) // the server reads compressed bodies but was not asked to compress
    expect(bodyOf(echoed).length).toBe(1024)

    // Answer side: a raw acceptor streams an answer whose second chunk is corrupt.
    const peer = await startRawMeshPeer(cleanup, helloOf({ node: "peer", compression: ["zstd"] }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    const answer = client.stream("/s", Buffer.from("x"), { timeoutMs: 5000 })
    const request = await peer.take((p) => p.path === "/s", 5000, "/s")
    peer.sockets[0]!.write(
      Buffer.concat([
        frame(4, "/s", request.channelId, envelope(2, 0, requestIdOf(request), "first ")),
        frame(6, "/s", request.channelId, Buffer.concat([Buffer.of(2), zstdFrame])),
        frame(6, "/s", request.channelId, Buffer.concat([Buffer.of(2), Buffer.from("corrupt")]))
      ])
    )
    const parts: Array<string> = []
    let failed: unknown
    try {
      for await (const chunk of (await answer).stream!) parts.push(chunk.toString())
    } catch (error) {
      failed = error
    }
    expect(parts).toStrictEqual(["first ", "a".repeat(1024)])
    expect(failed).toBeInstanceOf(DecompressionFailed)
    const cancel = await peer.take((p) => p.path === MeshPath.cancel, 5000, "the cancel")
    expect(bodyOf(cancel).readUInt32BE(4)).toBe(requestIdOf(request))
    peer.sockets[0]!.write(frame(7, "/s", request.channelId, Buffer.of(0)))
    const next = client.call("/b", "y", { timeoutMs: 5000 })
    const b = await peer.take((p) => p.path === "/b", 5000, "/b")
    peer.sockets[0]!.write(frame(5, "/b", b.channelId, envelope(2, 0, requestIdOf(b), "fine")))
    expect((await next).toString()).toBe("fine")
  })
})
