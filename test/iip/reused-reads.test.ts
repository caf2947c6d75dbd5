// The read path without an allocation per read (src/mux/reusedReads.ts): a plain TCP connection
// reads into one buffer the process reuses for every read, so nothing handed to a session may be
// a view of it. Pinned here over real TCP:
// - both ends of a plain TCP connection read into the shared buffer; a socket holding bytes
//   already read (a sniffed first byte put back) and a stream that is no socket keep 'data';
// - a consumer that holds every chunk of a streamed upload (mesh mode, pieces that split packets
//   across reads) until the end finds every byte as sent;
// - handlers that keep every small request's data (mesh and plain mode, 1 KiB and 40 KiB bodies,
//   calls interleaved on one connection) find each intact after hundreds of later reads.
// A view of the read buffer that escaped would hold bytes of later reads: these tests fail then.
import * as net from "node:net"
import { PassThrough } from "node:stream"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { Connection } from "../../src/mux/connection.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { startClient, startServer } from "../support/meshTest.ts"

const KiB = 1024

/** Bytes that depend on their position in the whole body and on `seed`: a byte from elsewhere shows. */
const pattern = (seed: number, start: number, length: number): Buffer => {
  const out = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) {
    const at = start + i
    out[i] = (at * 31 + (at >>> 8) * 7 + seed * 101) & 0xff
  }
  return out
}

/** Offset of the first byte of `data` that differs from the pattern, or -1. */
const firstWrong = (seed: number, start: number, data: Uint8Array): number => {
  const expected = pattern(seed, start, data.length)
  for (let i = 0; i < data.length; i++) if (data[i] !== expected[i]) return start + i
  return -1
}

describe("reused read buffer", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("is used by both ends of a plain TCP connection, not by a socket with bytes put back or a non-socket stream", async () => {
    const accepted = deferred<Connection>()
    const server = net.createServer((socket) => accepted.resolve(new Connection(socket, "server")))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise((resolve) => server.close(resolve)))
    const socket = net.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port })
    cleanup.add(() => socket.destroy())
    await new Promise((resolve) => socket.once("connect", resolve))
    const dialer = new Connection(socket, "client")
    const acceptor = await withTimeout(accepted.promise, 5000, "the accepted connection")
    cleanup.add(() => acceptor.close("test over", false))
    expect(dialer.readsBorrowed).toBe(true)
    expect(acceptor.readsBorrowed).toBe(true)

    const other = net.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port })
    cleanup.add(() => other.destroy())
    await new Promise((resolve) => other.once("connect", resolve))
    other.unshift(Buffer.of(1))
    expect(new Connection(other, "client").readsBorrowed).toBe(false)
    expect(new Connection(new PassThrough(), "client").readsBorrowed).toBe(false)
  })

  describe("data a consumer keeps stays intact", () => {
    let server: IipServer
    const kept: Array<{ readonly seed: number; readonly data: Buffer }> = []
    const streamed: Array<Buffer> = []

    beforeEach(async () => {
      kept.length = 0
      streamed.length = 0
      server = await startServer(cleanup)
      // Keeps a reference to every request body, to be checked after many later reads.
      server.handle("/keep", (request) => {
        kept.push({ seed: request.data.readUInt32BE(0), data: request.data })
        return "kept"
      })
      // Keeps every streamed chunk as it came, uncopied.
      server.handle("/keep-stream", async (request) => {
        for await (const chunk of request.context.stream ?? [request.data]) streamed.push(chunk)
        return String(streamed.reduce((bytes, chunk) => bytes + chunk.length, 0))
      })
    })

    /** A body whose first 4 bytes name its seed and whose rest follows the seed's pattern. */
    const body = (seed: number, length: number): Buffer => {
      const data = pattern(seed, 0, length)
      data.writeUInt32BE(seed, 0)
      return data
    }

    const checkKept = (count: number) => {
      expect(kept.length).toBe(count)
      const wrong = kept.filter(({ seed, data }) => firstWrong(seed, 4, data.subarray(4)) !== -1).map(({ seed }) => seed)
      expect(wrong).toStrictEqual([])
    }

    it("a streamed upload held chunk by chunk until its end, beside small calls on the same connection (mesh)", async () => {
      const client = startClient(cleanup, server.address.port, { maxConnections: 1 })
      const total = 6 * 1024 * 1024 + 17
      const piece = 100_003
      async function* source(): AsyncIterable<Uint8Array> {
        for (let sent = 0; sent < total; sent += piece) yield pattern(0, sent, Math.min(piece, total - sent))
      }
      const calls = Array.from({ length: 200 }, (_, i) => client.call("/keep", body(i + 1, i % 2 === 0 ? KiB : 40 * KiB)))
      const answer = await withTimeout(client.stream("/keep-stream", source()), 30_000, "the streamed upload")
      await withTimeout(Promise.all(calls), 30_000, "the small calls")
      expect(Buffer.from(answer.data).toString()).toBe(String(total))
      let offset = 0
      const wrong: Array<number> = []
      for (const chunk of streamed) {
        const at = firstWrong(0, offset, chunk)
        if (at !== -1) wrong.push(at)
        offset += chunk.length
      }
      expect(offset).toBe(total)
      expect(wrong).toStrictEqual([])
      checkKept(200)
    })

    it("small requests' bodies kept by their handler (plain mode, 1 KiB and 40 KiB interleaved)", async () => {
      const client = startClient(cleanup, server.address.port, { maxConnections: 1, mesh: false })
      for (let round = 0; round < 5; round++) {
        await withTimeout(
          Promise.all(Array.from({ length: 64 }, (_, i) => client.call("/keep", body(round * 64 + i + 1, i % 3 === 0 ? 40 * KiB : KiB)))),
          30_000,
          "a round of calls"
        )
      }
      checkKept(320)
    })
  })
})
