// The frame layer against a peer nobody here wrote: node:http2 (nghttp2) on 127.0.0.1 port 0. Our
// writer's frames go to it and its frames come back through our reader, with header blocks built
// by hand (HPACK literals without indexing, RFC 7541 6.2.2, and the indexed `:status 200`): (a) as
// a client to a node:http2 server, (b) as a server to a node:http2 client, (c) bodies larger than
// the peer's windows and frame size, both ways, through SendWindows and ReceiveWindow; and curl
// (--http2-prior-knowledge, its own nghttp2) against a server made of our reader and writer.
import { spawn } from "node:child_process"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { ReceiveWindow, SendWindows } from "../../src/h2/flowWindow.ts"
import { FrameReader } from "../../src/h2/frameReader.ts"
import { ErrorCode, SettingId } from "../../src/h2/frames.ts"
import { FrameWriter } from "../../src/h2/frameWriter.ts"
import { type Recorder, recorder } from "../helpers/h2FrameRecorder.ts"
import { literal } from "../helpers/h2RawClient.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const requestBlock = (path: string): Buffer =>
  Buffer.concat([literal(":method", "POST"), literal(":scheme", "http"), literal(":authority", "localhost"), literal(":path", path), literal("content-type", "application/grpc"), literal("te", "trailers")])

/** A body whose every byte depends on its offset, so a lost, repeated or reordered piece shows. */
const body = (length: number, seed: number): Buffer => {
  const out = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed + (i >> 8)) & 0xff
  return out
}

/**
 * One end of an HTTP/2 connection made of our reader and writer over `socket`: it ACKs SETTINGS,
 * answers PING, applies the peer's frame size and windows, and flushes the writer once per chunk.
 */
const endpoint = (socket: net.Socket, role: "client" | "server", announce: ReadonlyArray<readonly [number, number]>) => {
  const writer = new FrameWriter()
  const windows = new SendWindows<{ sendWindow: number }>()
  const flush = () => writer.writeTo(socket)
  let afterTurn: () => void = () => {}
  const rec: Recorder = recorder((event) => {
    if (event[0] === "setting" && event[1] === SettingId.MAX_FRAME_SIZE) writer.peerMaxFrameSize = event[2]
    if (event[0] === "setting" && event[1] === SettingId.INITIAL_WINDOW_SIZE) expect(windows.setInitial(event[2])).toBeUndefined()
    if (event[0] === "settingsEnd") writer.settingsAck()
    if (event[0] === "ping" && !event[2]) writer.ping(event[1], true)
    if (event[0] === "windowUpdate" && event[1] === 0) expect(windows.growConnection(event[2])).toBeUndefined()
  })
  const reader = new FrameReader(rec, { role })
  socket.on("data", (chunk: Buffer) => {
    reader.feed(chunk)
    afterTurn()
    flush()
  })
  if (role === "client") writer.preface()
  writer.settings(announce)
  flush()
  return { writer, reader, rec, windows, flush, setAfterTurn: (f: () => void) => void (afterTurn = f) }
}

const listenH2 = async (server: http2.Http2Server, sessions = new Set<http2.ServerHttp2Session>()): Promise<number> => {
  server.on("session", (session) => sessions.add(session))
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    for (const session of sessions) session.destroy()
    server.close(() => resolve())
  }))
  return (server.address() as net.AddressInfo).port
}

const connect = async (port: number): Promise<net.Socket> => {
  const socket = net.connect(port, "127.0.0.1")
  cleanup.add(() => socket.destroy())
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject))
  return socket
}

/** An echo server: answers each request with :status 200, its body back, and grpc-status 0 in trailers. */
const echoServer = (options: http2.ServerOptions = {}) => {
  const server = http2.createServer(options)
  server.on("stream", (stream, headers) => {
    const parts: Array<Buffer> = []
    stream.on("data", (part: Buffer) => parts.push(part))
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc", "x-path": String(headers[":path"]) }, { waitForTrailers: true })
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
      stream.end(Buffer.concat(parts))
    })
  })
  return server
}

const headersOf = (rec: Recorder, streamId: number) => rec.events.filter((e) => e[0] === "headers" && e[1] === streamId) as Array<readonly ["headers", number, Buffer, boolean]>

describe("our frames as a client to a node:http2 server", () => {
  it("sends requests with DATA of many sizes and reads back answers, trailers, SETTINGS, PING ack and GOAWAY", async () => {
    const server = echoServer()
    const sessions = new Set<http2.ServerHttp2Session>()
    const port = await listenH2(server, sessions)
    const socket = await connect(port)
    const client = endpoint(socket, "client", [[SettingId.ENABLE_PUSH, 0], [SettingId.INITIAL_WINDOW_SIZE, 1 << 20]])
    client.writer.windowUpdate(0, 1 << 20)
    const sizes = [0, 1, 100, 2047, 2048, 5000, 16_384, 16_385, 40_000]
    sizes.forEach((size, i) => {
      const id = 1 + 2 * i
      client.writer.headers(id, requestBlock(`/echo/${size}`), false)
      client.writer.data(id, body(size, i), true)
    })
    client.writer.ping(Buffer.from("pingpong"), false)
    client.flush()
    const lastId = 1 + 2 * (sizes.length - 1)
    await untilTurn(() => sizes.every((_s, i) => headersOf(client.rec, 1 + 2 * i).length === 2), "every answer and its trailers")
    expect(client.rec.errors).toStrictEqual([])
    expect(client.rec.events.some((e) => e[0] === "settingsEnd")).toBe(true)
    expect(client.rec.events.some((e) => e[0] === "settingsAck")).toBe(true)
    expect(client.rec.events).toContainEqual(["ping", Buffer.from("pingpong"), true])
    sizes.forEach((size, i) => {
      const id = 1 + 2 * i
      const [answer, trailers] = headersOf(client.rec, id)
      // nghttp2 encodes `:status 200` as the static table's index 8: one byte, 0x88.
      expect([answer![2][0], answer![3], trailers![3]]).toStrictEqual([0x88, false, true])
      const got = client.rec.body(id)
      expect([got.bytes.equals(body(size, i)), got.ended]).toStrictEqual([true, false])
    })
    for (const session of sessions) session.goaway(ErrorCode.NO_ERROR, lastId, Buffer.from("bye"))
    await untilTurn(() => client.rec.events.some((e) => e[0] === "goaway"), "the server's GOAWAY")
    expect(client.rec.events.filter((e) => e[0] === "goaway")).toStrictEqual([["goaway", lastId, ErrorCode.NO_ERROR, Buffer.from("bye")]])
    expect(client.rec.errors).toStrictEqual([])
  })
})

describe("our frames as a server to a node:http2 client", () => {
  it("reads the client's preface, request and PING, answers with headers, DATA and trailers, then GOAWAY", async () => {
    const ends: Array<ReturnType<typeof endpoint>> = []
    const server = net.createServer((socket) => {
      const end = endpoint(socket, "server", [[SettingId.MAX_CONCURRENT_STREAMS, 100], [SettingId.INITIAL_WINDOW_SIZE, 1 << 20]])
      end.writer.windowUpdate(0, 1 << 20)
      end.flush()
      ends.push(end)
      let answered = false
      end.setAfterTurn(() => {
        const got = end.rec.body(1)
        if (answered || !got.ended || headersOf(end.rec, 1).length !== 1) return
        answered = true
        end.writer.headers(1, Buffer.concat([Buffer.from([0x88]), literal("content-type", "application/grpc")]), false)
        end.writer.data(1, got.bytes, false)
        end.writer.headers(1, literal("grpc-status", "0"), true)
      })
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const session = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`)
    cleanup.add(() => session.destroy())
    // A GOAWAY with an error code ends node's session with that error.
    const sessionErrors: Array<string> = []
    session.on("error", (error: Error) => sessionErrors.push(error.message))
    const request = session.request({ ":method": "POST", ":path": "/svc/Method", "content-type": "application/grpc", te: "trailers" })
    const sent = body(70_000, 3)
    request.end(sent)
    const parts: Array<Buffer> = []
    request.on("data", (part: Buffer) => parts.push(part))
    const [response, trailers] = await Promise.all([
      new Promise<http2.IncomingHttpHeaders>((resolve) => request.once("response", resolve)),
      new Promise<http2.IncomingHttpHeaders>((resolve) => request.once("trailers", resolve)),
      new Promise<void>((resolve) => request.once("end", resolve))
    ])
    expect([response[":status"], response["content-type"], trailers["grpc-status"]]).toStrictEqual([200, "application/grpc", "0"])
    expect(Buffer.concat(parts).equals(sent)).toBe(true)
    const rtt = await new Promise<Buffer>((resolve, reject) => session.ping(Buffer.from("12345678"), (error, _ms, payload) => (error ? reject(error) : resolve(payload))))
    expect(rtt).toStrictEqual(Buffer.from("12345678"))
    const [end] = ends
    expect(end!.rec.errors).toStrictEqual([])
    const goaway = new Promise<[number, number, Buffer | undefined]>((resolve) => session.once("goaway", (code, last, data) => resolve([code, last, data])))
    end!.writer.goAway(1, ErrorCode.ENHANCE_YOUR_CALM, Buffer.from("calm down"))
    end!.flush()
    expect(await goaway).toStrictEqual([ErrorCode.ENHANCE_YOUR_CALM, 1, Buffer.from("calm down")])
    await untilTurn(() => sessionErrors.length > 0, "the session's error")
    expect(sessionErrors).toStrictEqual(["Session closed with error code 11"])
  })
})

describe("bodies larger than the peer's windows and frame size", () => {
  it("sends 300,000 bytes to a server announcing a 20,000-byte window: every byte arrives once, as the window opens", async () => {
    const received: Array<Buffer> = []
    const server = http2.createServer({ settings: { initialWindowSize: 20_000 } })
    server.on("stream", (stream) => {
      stream.on("data", (part: Buffer) => received.push(part))
      stream.on("end", () => stream.respond({ ":status": 200 }, { endStream: true }))
    })
    const port = await listenH2(server)
    const client = endpoint(await connect(port), "client", [[SettingId.ENABLE_PUSH, 0]])
    const sent = body(300_000, 9)
    const stream = { sendWindow: 0 }
    let offset = 0
    let blocked = 0
    let started = false
    const pump = () => {
      if (!started) {
        // The request waits for the server's SETTINGS, so its stream starts with their window.
        if (!client.rec.events.some((e) => e[0] === "settingsEnd")) return
        started = true
        client.windows.add(stream)
        client.writer.headers(1, requestBlock("/upload"), false)
      }
      for (const event of client.rec.events.splice(0)) if (event[0] === "windowUpdate" && event[1] === 1) expect(client.windows.growStream(stream, 1, event[2])).toBeUndefined()
      while (offset < sent.length) {
        const n = client.windows.allowance(stream, Math.min(sent.length - offset, 50_000))
        if (n === 0) {
          blocked++
          return
        }
        client.writer.data(1, sent.subarray(offset, offset + n), offset + n === sent.length)
        client.windows.consume(stream, n)
        offset += n
      }
    }
    client.setAfterTurn(pump)
    await untilTurn(() => received.reduce((n, b) => n + b.length, 0) >= sent.length, "the upload to arrive")
    expect(client.rec.errors).toStrictEqual([])
    expect(Buffer.concat(received).equals(sent)).toBe(true)
    expect(blocked).toBeGreaterThan(3)
  })

  it("receives 300,000 bytes through a 16,384-byte stream window, announcing WINDOW_UPDATEs as it consumes", async () => {
    const sent = body(300_000, 5)
    const server = http2.createServer()
    server.on("stream", (stream) => {
      stream.respond({ ":status": 200 })
      stream.end(sent)
    })
    const port = await listenH2(server)
    const client = endpoint(await connect(port), "client", [[SettingId.ENABLE_PUSH, 0], [SettingId.INITIAL_WINDOW_SIZE, 16_384]])
    const connectionWindow = new ReceiveWindow()
    const streamWindow = new ReceiveWindow(16_384)
    let overrun = false
    let updates = 0
    let seen = 0
    client.setAfterTurn(() => {
      for (; seen < client.rec.events.length; seen++) {
        const event = client.rec.events[seen]!
        if (event[0] !== "data") continue
        if (!connectionWindow.receive(event[3]) || !streamWindow.receive(event[3])) overrun = true
        connectionWindow.release(event[3])
        streamWindow.release(event[3])
      }
      const connectionIncrement = connectionWindow.takeUpdate()
      if (connectionIncrement > 0) client.writer.windowUpdate(0, connectionIncrement)
      const streamIncrement = streamWindow.takeUpdate()
      if (streamIncrement > 0) client.writer.windowUpdate(1, streamIncrement)
      updates += (connectionIncrement > 0 ? 1 : 0) + (streamIncrement > 0 ? 1 : 0)
    })
    client.writer.headers(1, requestBlock("/download"), true)
    client.flush()
    await untilTurn(() => client.rec.body(1).ended, "the download's end")
    expect([client.rec.errors, overrun]).toStrictEqual([[], false])
    expect(client.rec.body(1).bytes.equals(sent)).toBe(true)
    expect(updates).toBeGreaterThan(300_000 / 16_384)
  })
})

describe("curl against a server made of our reader and writer", () => {
  it("uploads 100,000 bytes with --http2-prior-knowledge and reads our answer", async () => {
    const server = net.createServer((socket) => {
      const end = endpoint(socket, "server", [[SettingId.INITIAL_WINDOW_SIZE, 1 << 20]])
      end.writer.windowUpdate(0, 1 << 20)
      end.flush()
      let answered = false
      end.setAfterTurn(() => {
        const got = end.rec.body(1)
        if (answered || !got.ended) return
        answered = true
        end.writer.headers(1, Buffer.concat([Buffer.from([0x88]), literal("x-frames", "ours")]), false)
        end.writer.data(1, Buffer.from(`got ${got.bytes.length} bytes, sum ${got.bytes.reduce((a, b) => a + b, 0)}\n`), true)
      })
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const upload = body(100_000, 1)
    const curl = spawn("curl", ["--http2-prior-knowledge", "-s", "-S", "-i", "--max-time", "10", "--data-binary", "@-", `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/up`])
    cleanup.add(() => curl.kill())
    const out: Array<Buffer> = []
    curl.stdout.on("data", (part: Buffer) => out.push(part))
    curl.stdin.end(upload)
    const code = await new Promise<number | null>((resolve) => curl.once("close", resolve))
    const text = Buffer.concat(out).toString()
    expect(code).toBe(0)
    expect(text).toMatch(/^HTTP\/2 200 ?\r\nx-frames: ours\r\n/)
    expect(text.endsWith(`got 100000 bytes, sum ${upload.reduce((a, b) => a + b, 0)}\n`)).toBe(true)
  })
})
