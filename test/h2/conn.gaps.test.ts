// Three things the client role (sidecar B's gRPC app leg) needs of src/h2/h2Connection.ts: a signal
// when our own last frame closes a stream the peer had already ended (G1), the peer's GOAWAY and
// SETTINGS as hooks (G2), and streams cut before the peer ever spoke reported retryable (G7).
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { H2Connection, type H2ClientHandler } from "../../src/h2/h2Connection.ts"
import { H2RequestRefused, type H2Stream, type H2StreamEnded } from "../../src/h2/h2Streams.ts"
import { Cleanup, untilTurn, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const head = [":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/x.Y/Z", "content-type", "application/grpc", "te", "trailers"]

interface Log { events: Array<string>; ends: Array<H2StreamEnded>; goAways: Array<[number, number]>; settings: number }

const client = (socket: net.Socket, log: Log): H2Connection => {
  const handler: H2ClientHandler = {
    onResponse: (s, _f, end) => log.events.push(`response:${s.id}:${end}`),
    onData: (s, chunk, end) => {
      connection.consumed(s, chunk.length)
      if (end) log.events.push(`data-end:${s.id}`)
    },
    onTrailers: (s) => log.events.push(`trailers:${s.id}`),
    onReset: (s, code) => log.events.push(`reset:${s.id}:${code}`),
    onEnd: (s, ended) => {
      log.events.push(`end:${s.id}:${ended.reason}`)
      log.ends.push(ended)
    },
    onWritable: () => {},
    onClose: (ended) => log.events.push(`close:${ended.reason}`),
    onGoAway: (lastStreamId, code) => log.goAways.push([lastStreamId, code]),
    onSettings: () => log.settings++
  }
  const connection = new H2Connection(socket, "client", handler)
  cleanup.add(() => connection.destroy("test-over", 0))
  return connection
}

const newLog = (): Log => ({ events: [], ends: [], goAways: [], settings: 0 })

const listen = async (app: http2.Http2Server | net.Server): Promise<number> => {
  await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
  return (app.address() as net.AddressInfo).port
}

const connected = async (port: number): Promise<net.Socket> => {
  const socket = net.connect(port, "127.0.0.1")
  await withTimeout(new Promise<void>((resolve) => socket.once("connect", () => resolve())), 2000, "the connection")
  return socket
}

const request = (connection: H2Connection): H2Stream => {
  const stream = connection.request(head, false)
  if (stream instanceof H2RequestRefused) throw new Error(stream.reason)
  return stream
}

describe("client role: the gaps sidecar B's leg needs", () => {
  it("G1: our END_STREAM sent after the peer's end (past the window) ends the stream with onEnd 'complete', once", async () => {
    const app = http2.createServer()
    app.on("stream", (stream) => {
      // The whole answer before the request's body is read: our END_STREAM comes after the peer's.
      stream.respond({ ":status": 200 }, { endStream: true })
      stream.resume()
      stream.on("error", () => {})
    })
    const log = newLog()
    const connection = client(await connected(await listen(app)), log)
    const stream = request(connection)
    // Past the 65,535-byte initial window: the END_STREAM waits in the queue until the server reads.
    expect(connection.write(stream, Buffer.alloc(200_000, 1), true)).toBe(false)
    await untilTurn(() => log.ends.length > 0, "the stream's end")
    expect(log.events).toStrictEqual([`response:${stream.id}:true`, `end:${stream.id}:complete`])
    expect(log.ends[0]!.retryable).toBe(false)
    expect(connection.streamCount).toBe(0)
  })

  it("G2: the peer's SETTINGS (MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE) and GOAWAY reach the leg", async () => {
    const app = http2.createServer({ settings: { maxConcurrentStreams: 7, maxHeaderListSize: 12_345 } })
    const sessions: Array<http2.ServerHttp2Session> = []
    app.on("session", (s) => sessions.push(s))
    const log = newLog()
    const connection = client(await connected(await listen(app)), log)
    expect(connection.peerMaxConcurrentStreams).toBe(Infinity)
    expect(connection.peerMaxHeaderListSize).toBe(Infinity)
    await untilTurn(() => log.settings > 0, "the peer's SETTINGS")
    expect(connection.peerMaxConcurrentStreams).toBe(7)
    expect(connection.peerMaxHeaderListSize).toBe(12_345)
    sessions[0]!.goaway(http2.constants.NGHTTP2_NO_ERROR, 0)
    await untilTurn(() => log.goAways.length > 0, "the peer's GOAWAY")
    expect(log.goAways).toStrictEqual([[0, 0]])
  })

  it("G7: a request cut by ECONNREFUSED is retryable (the peer never spoke)", async () => {
    const closed = net.createServer()
    const port = await listen(closed)
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const log = newLog()
    const socket = net.connect(port, "127.0.0.1")
    const connection = client(socket, log)
    const stream = request(connection)
    await untilTurn(() => log.ends.length > 0, "the stream's end")
    expect(log.events[0]).toBe(`end:${stream.id}:socket-error`)
    expect(log.ends[0]!.retryable).toBe(true)
  })

  it("G7: a request cut when the server dies before its SETTINGS is retryable; after them it is not", async () => {
    let sendSettings = false
    const raw = net.createServer((socket) => {
      socket.on("error", () => {})
      // A server's SETTINGS (empty), then the connection dies once the request arrives.
      if (sendSettings) socket.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]))
      let seen = 0
      socket.on("data", (chunk: Buffer) => {
        seen += chunk.length
        // The preface (24) and our SETTINGS and WINDOW_UPDATE, then the HEADERS.
        if (seen > 100) socket.destroy()
      })
    })
    const port = await listen(raw)
    for (const spoke of [false, true]) {
      sendSettings = spoke
      const log = newLog()
      const connection = client(await connected(port), log)
      if (spoke) await untilTurn(() => log.settings > 0, "the server's SETTINGS")
      const stream = request(connection)
      await untilTurn(() => log.ends.length > 0, "the stream's end")
      expect(log.events[0]).toMatch(new RegExp(`^end:${stream.id}:socket-`))
      expect(log.ends[0]!.retryable).toBe(!spoke)
    }
  })
})
