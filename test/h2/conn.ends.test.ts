// Every stream of our connection (src/h2/h2Connection.ts) ends exactly once, and the leg hears
// `onClose` only after every stream's end: the paths where a stream's end makes the connection's
// (the last stream ended by a peer's GOAWAY, a stream error after our graceful close, a leg that
// destroys from onEnd). Also what follows an end: `retryable` only where the peer did not process
// the stream, nothing written after the socket's end, no timer left, and the client role's queue
// rid of requests reset while they waited.
import * as asyncHooks from "node:async_hooks"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { H2Connection, type H2ClientHandler, type H2ServerHandler } from "../../src/h2/h2Connection.ts"
import { H2RequestRefused, type H2Stream, type H2StreamEnded } from "../../src/h2/h2Streams.ts"
import { connectRawH2, headerFrames, requestBlock } from "../helpers/h2RawClient.ts"
import { methods } from "../helpers/h2ConnLegs.ts"
import { frame, Type } from "../helpers/h2Wire.ts"
import { Cleanup, untilTurn, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

/** A handler that records every event in order as "event:stream id". */
const recording = (log: Array<string>): H2ServerHandler & H2ClientHandler => ({
  onRequest: (s) => log.push(`request:${s.id}`),
  onResponse: (s) => log.push(`response:${s.id}`),
  onData: () => {},
  onTrailers: (s) => log.push(`trailers:${s.id}`),
  onReset: (s) => log.push(`reset:${s.id}`),
  onEnd: (s, ended) => log.push(`end:${s.id}:${ended.reason}`),
  onWritable: () => {},
  onClose: (ended) => log.push(`close:${ended.reason}`)
})

const ends = (log: ReadonlyArray<string>, id: number): number => log.filter((e) => e.startsWith(`end:${id}:`) || e === `reset:${id}`).length

describe("stream ends and the connection's end", () => {
  it.each([false, true])("a peer's GOAWAY below every open stream: each stream ends once, before onClose (the leg destroys from onEnd: %s)", async (destroyInEnd) => {
    const app = http2.createServer()
    const sessions: Array<http2.ServerHttp2Session> = []
    let streamsSeen = 0
    app.on("session", (s) => sessions.push(s))
    app.on("stream", (stream, headers) => {
      streamsSeen++
      // node closes the streams above its own GOAWAY with REFUSED_STREAM.
      stream.on("error", () => {})
      if (headers[":path"] === methods.Unary.path) stream.respond({ ":status": 200 }, { endStream: true })
    })
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const socket = net.connect((app.address() as net.AddressInfo).port, "127.0.0.1")
    await withTimeout(new Promise<void>((resolve) => socket.once("connect", () => resolve())), 2000, "the connection")
    const log: Array<string> = []
    const handler = recording(log)
    const connection = new H2Connection(socket, "client", {
      ...handler,
      onEnd: (s, ended) => {
        handler.onEnd(s, ended)
        if (destroyInEnd) connection.destroy("leg-gave-up")
      }
    })
    cleanup.add(() => connection.destroy("test-over", 0))
    const head = (path: string) => [":method", "POST", ":scheme", "http", ":authority", "app", ":path", path, "content-type", "application/grpc"]
    // Stream 1 is answered and over; 3 and 5 hang, so a GOAWAY(1) leaves every open stream above its last id.
    expect(connection.request(head(methods.Unary.path), true)).not.toBeInstanceOf(H2RequestRefused)
    await untilTurn(() => log.includes("response:1"), "the first answer")
    const streams = [connection.request(head(methods.Hang.path), false), connection.request(head(methods.Hang.path), false)] as Array<H2Stream>
    await untilTurn(() => streamsSeen === 3, "the hanging streams at the server")
    sessions[0]!.goaway(http2.constants.NGHTTP2_NO_ERROR, 1)
    await untilTurn(() => log.some((e) => e.startsWith("close:")), "the connection's end")
    expect(streams.map((s) => ends(log, s.id))).toStrictEqual([1, 1])
    expect(log.at(-1)).toMatch(/^close:/)
  })

  it("a stream error on the last stream after our graceful close: its end comes before onClose", async () => {
    const log: Array<string> = []
    let connection: H2Connection | undefined
    const server = net.createServer((socket) => {
      connection = new H2Connection(socket, "server", recording(log))
      cleanup.add(() => connection!.destroy("test-over", 0))
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const raw = await connectRawH2(cleanup, (server.address() as net.AddressInfo).port, true)
    raw.socket.write(headerFrames(1, requestBlock("POST", methods.Hang.path), false))
    await untilTurn(() => log.includes("request:1"), "the request")
    connection!.close()
    // A second header block without END_STREAM: a stream error (PROTOCOL_ERROR) on the last stream.
    raw.socket.write(headerFrames(1, requestBlock("POST", methods.Hang.path), false))
    await untilTurn(() => log.some((e) => e.startsWith("close:")), "the connection's end")
    expect(ends(log, 1)).toBe(1)
    expect(log.at(-1)).toMatch(/^close:/)
  })

  it.each(["onReset", "onData"] as const)("a leg that destroys the connection from %s: that stream's end is the one it is hearing", async (where) => {
    const log: Array<string> = []
    const streams = new Map<number, H2Stream>()
    let connection: H2Connection | undefined
    const server = net.createServer((socket) => {
      const handler = recording(log)
      connection = new H2Connection(socket, "server", {
        ...handler,
        onRequest: (s, fields, end) => {
          handler.onRequest(s, fields, end)
          streams.set(s.id, s)
        },
        onReset: (s, code) => {
          handler.onReset(s, code)
          if (where === "onReset") connection!.destroy("leg-gave-up")
        },
        onData: (s, _chunk, end) => {
          if (end) log.push(`last-data:${s.id}`)
          if (where === "onData") connection!.destroy("leg-gave-up")
        }
      })
      cleanup.add(() => connection!.destroy("test-over", 0))
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const raw = await connectRawH2(cleanup, (server.address() as net.AddressInfo).port, true)
    raw.socket.write(Buffer.concat([headerFrames(1, requestBlock("POST", methods.Hang.path), false), headerFrames(3, requestBlock("POST", methods.Hang.path), false)]))
    await untilTurn(() => log.includes("request:3"), "both requests")
    // Stream 1 was answered (so, with its END_STREAM, it is over both ways on its last DATA).
    connection!.respond(streams.get(1)!, [":status", "200"], true)
    raw.socket.write(where === "onReset" ? frame(Type.rst, 0, 1, Buffer.from([0, 0, 0, 8])) : frame(Type.data, 1, 1, Buffer.from("x")))
    await untilTurn(() => log.some((e) => e.startsWith("close:")), "the connection's end")
    expect(log.filter((e) => e.startsWith("end:1:"))).toStrictEqual([])
    expect(ends(log, 3)).toBe(1)
  })

  it("server role: a stream the client's GOAWAY left open, cut by the socket's close, is not retryable (we processed it)", async () => {
    const ended: Array<H2StreamEnded> = []
    const server = net.createServer((socket) => {
      const connection = new H2Connection(socket, "server", { ...recording([]), onEnd: (_s, e) => void ended.push(e) })
      cleanup.add(() => connection.destroy("test-over", 0))
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const raw = await connectRawH2(cleanup, (server.address() as net.AddressInfo).port, true)
    // A client's GOAWAY names the last stream we opened (none: 0); its own streams go on.
    const goAway = frame(Type.goaway, 0, 0, Buffer.alloc(8))
    raw.socket.write(Buffer.concat([headerFrames(1, requestBlock("POST", methods.Hang.path), false), goAway, frame(Type.ping, 0, 0, Buffer.alloc(8))]))
    // Frames are read in order: the PING's answer means the GOAWAY was read.
    await raw.until((f) => f.some((x) => x.type === Type.ping), "the PING's answer")
    raw.socket.destroy()
    await untilTurn(() => ended.length === 1, "the stream's end")
    expect(ended[0]).toMatchObject({ reason: "socket-closed", retryable: false })
  })

  it("a leg consuming after the connection ended writes nothing more (no write after the socket's end)", async () => {
    const held = new Map<number, { stream: H2Stream; bytes: number }>()
    const socketErrors: Array<Error> = []
    let connection: H2Connection | undefined
    const server = net.createServer((socket) => {
      socket.on("error", (error) => socketErrors.push(error))
      connection = new H2Connection(socket, "server", {
        ...recording([]),
        // The leg holds every byte: it consumes only after the connection is over.
        onData: (s, chunk) => void held.set(s.id, { stream: s, bytes: (held.get(s.id)?.bytes ?? 0) + chunk.length })
      }, { connectionWindow: 65_535, heldBytes: 50_000 })
      cleanup.add(() => connection!.destroy("test-over", 0))
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const raw = await connectRawH2(cleanup, (server.address() as net.AddressInfo).port, true)
    const data = (id: number, bytes: number): Buffer =>
      Buffer.concat(Array.from({ length: Math.ceil(bytes / 15_000) }, (_, i) => frame(Type.data, 0, id, Buffer.alloc(Math.min(15_000, bytes - 15_000 * i)))))
    // 60,000 bytes: 45,000 of them are given back at once (under heldBytes), the rest held back.
    raw.socket.write(Buffer.concat([headerFrames(1, requestBlock("POST", methods.Hang.path), false), data(1, 60_000)]))
    await raw.until((f) => f.some((x) => x.type === Type.windowUpdate && x.stream === 0), "the connection's WINDOW_UPDATE")
    raw.socket.write(Buffer.concat([headerFrames(3, requestBlock("POST", methods.Hang.path), false), data(3, 45_000)]))
    await untilTurn(() => held.get(3)?.bytes === 45_000, "stream 3's DATA")
    connection!.destroy("leg-gone")
    // Consumed now, the held-back bytes would make a connection WINDOW_UPDATE due.
    for (const { stream, bytes } of held.values()) connection!.consumed(stream, bytes)
    await raw.until((f) => f.some((x) => x.type === Type.goaway), "the GOAWAY")
    await untilTurn(() => raw.isClosed(), "the socket's end")
    expect(socketErrors).toStrictEqual([])
    const goAwayAt = raw.frames.findIndex((x) => x.type === Type.goaway)
    expect(raw.frames.slice(goAwayAt + 1)).toStrictEqual([])
  })
})

describe("timers", () => {
  it("a connection's timers are all gone once its socket closed (1,000 streams, then destroy)", async () => {
    // Timers with these periods are the connection's own: the tick and the close deadline.
    const tickMs = 977
    const closeTimeoutMs = 60_013
    const live = new Set<number>()
    const hook = asyncHooks.createHook({
      init: (id, type, _trigger, resource) => {
        const ms = (resource as { _idleTimeout?: number })._idleTimeout
        if (type === "Timeout" && (ms === tickMs || ms === closeTimeoutMs)) live.add(id)
      },
      destroy: (id) => void live.delete(id)
    })
    hook.enable()
    cleanup.add(() => hook.disable())
    const log: Array<string> = []
    let connection: H2Connection | undefined
    let closed: Promise<void> | undefined
    const server = net.createServer((socket) => {
      closed = new Promise((resolve) => socket.once("close", () => resolve()))
      const handler = recording(log)
      connection = new H2Connection(socket, "server", { ...handler, onRequest: (s) => connection!.respond(s, [":status", "200"], true) }, { tickMs, closeTimeoutMs })
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const raw = await connectRawH2(cleanup, (server.address() as net.AddressInfo).port, true)
    for (let id = 1; id < 2000; id += 2) raw.socket.write(headerFrames(id, requestBlock("GET", "/x"), true))
    await raw.until((f) => f.filter((x) => x.type === Type.headers).length === 1000, "1,000 answers")
    expect(connection!.streamCount).toBe(0)
    expect(live.size).toBe(1)
    connection!.destroy()
    await raw.until(() => raw.isClosed(), "the socket's end")
    await closed
    await new Promise((resolve) => setImmediate(resolve))
    expect(live.size).toBe(0)
  })
})

describe("client role: the request queue", () => {
  it("requests reset while queued leave the queue: 2,000 reset in turn never make the queue full", async () => {
    const app = http2.createServer({ settings: { maxConcurrentStreams: 1 } })
    let streamsSeen = 0
    app.on("stream", (stream) => {
      streamsSeen++
      stream.on("error", () => {})
    })
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const socket = net.connect((app.address() as net.AddressInfo).port, "127.0.0.1")
    await withTimeout(new Promise<void>((resolve) => socket.once("connect", () => resolve())), 2000, "the connection")
    const log: Array<string> = []
    const connection = new H2Connection(socket, "client", recording(log), { maxQueuedRequests: 1024 })
    cleanup.add(() => connection.destroy("test-over", 0))
    const head = [":method", "POST", ":scheme", "http", ":authority", "app", ":path", methods.Hang.path]
    // The server's one stream is taken, and its SETTINGS are in force.
    expect(connection.request(head, false)).not.toBeInstanceOf(H2RequestRefused)
    await untilTurn(() => streamsSeen === 1, "the first stream at the server")
    for (let i = 0; i < 2000; i++) {
      const queued = connection.request(head, false)
      if (queued instanceof H2RequestRefused) throw new Error(`request ${i} refused: ${queued.reason}`)
      connection.reset(queued, 8)
    }
  })
})
