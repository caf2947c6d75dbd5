// Our client role (src/h2/h2Connection.ts) against servers nobody here wrote (@grpc/grpc-js and
// node:http2), and a relay of both our roles between a grpc-js client and a grpc-js server: the four
// call kinds, metadata and trailers byte-exact, a status error, cancel, deadline, messages past the
// windows, 1,000 unary calls and a 10,000-message bidi stream.
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { H2Connection, type H2ClientHandler } from "../../src/h2/h2Connection.ts"
import { ErrorCode } from "../../src/h2/frames.ts"
import { H2RequestRefused, type H2Stream, type H2StreamEnded } from "../../src/h2/h2Streams.ts"
import { grpcClient, methods, MessageSplitter, startGrpcServer, startRelay, unary } from "../helpers/h2ConnLegs.ts"
import { grpcMessage, identity } from "../support/grpcRaw.ts"
import { Cleanup, untilTurn, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

interface Answer { head: Array<string>; messages: Array<Buffer>; trailers: Array<string>; reset: number | undefined; ended: H2StreamEnded | undefined; done: boolean }

/** A client-role connection to `port` collecting each stream's answer on `stream.user`. */
const connectClient = async (port: number): Promise<H2Connection> => {
  const socket = net.connect(port, "127.0.0.1")
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject))
  const answer = (s: H2Stream) => s.user as Answer & { splitter: MessageSplitter }
  const handler: H2ClientHandler = {
    onResponse: (s, fields, end) => {
      answer(s).head = fields
      if (end) answer(s).done = true
    },
    onData: (s, chunk, end) => {
      answer(s).messages.push(...answer(s).splitter.push(chunk).map((m) => Buffer.from(m)))
      connection.consumed(s, chunk.length)
      if (end) answer(s).done = true
    },
    onTrailers: (s, fields) => {
      answer(s).trailers = fields
      answer(s).done = true
    },
    onReset: (s, code) => {
      answer(s).reset = code
      answer(s).done = true
    },
    onEnd: (s, ended) => {
      answer(s).ended = ended
      answer(s).done = true
    },
    onWritable: () => {},
    onClose: () => {}
  }
  const connection = new H2Connection(socket, "client", handler)
  cleanup.add(() => connection.destroy("test-over", 0))
  return connection
}

const call = (connection: H2Connection, method: keyof typeof methods, messages: ReadonlyArray<Buffer>, extra: ReadonlyArray<string> = []): H2Stream => {
  const stream = connection.request([":method", "POST", ":scheme", "http", ":authority", "app", ":path", methods[method].path, "content-type", "application/grpc", "te", "trailers", ...extra], false)
  if (stream instanceof H2RequestRefused) throw new Error(stream.reason)
  stream.user = { head: [], messages: [], trailers: [], reset: undefined, ended: undefined, done: false, splitter: new MessageSplitter() }
  messages.forEach((m, i) => connection.write(stream, grpcMessage(m), i === messages.length - 1))
  if (messages.length === 0) connection.write(stream, Buffer.alloc(0), true)
  return stream
}

const answered = async (stream: H2Stream): Promise<Answer> => {
  await untilTurn(() => (stream.user as Answer).done, "the answer", 10_000)
  return stream.user as Answer
}

const field = (fields: ReadonlyArray<string>, name: string): string | undefined => {
  const i = fields.indexOf(name)
  return i >= 0 && i % 2 === 0 ? fields[i + 1] : undefined
}

describe("client role against a grpc-js server", () => {
  it("makes the four kinds of call with metadata and trailers byte-exact", async () => {
    const connection = await connectClient(await startGrpcServer(cleanup))
    const u = await answered(call(connection, "Unary", [Buffer.from("hello")], ["x-one", "uno", "x-raw-bin", Buffer.from([9, 0, 255]).toString("base64")]))
    expect(field(u.head, ":status")).toBe("200")
    expect(field(u.head, "x-one")).toBe("uno")
    expect(Buffer.from(field(u.head, "x-raw-bin")!, "base64")).toStrictEqual(Buffer.from([9, 0, 255]))
    expect(u.messages.map(String)).toStrictEqual(["hello"])
    expect(field(u.trailers, "grpc-status")).toBe("0")
    expect(field(u.trailers, "x-trailer")).toBe("done")
    expect(Buffer.from(field(u.trailers, "x-trailer-bin")!, "base64")).toStrictEqual(Buffer.from([0, 1, 2, 255]))
    const c = await answered(call(connection, "Collect", ["a", "bb", "ccc"].map((t) => Buffer.from(t))))
    expect(c.messages.map(String)).toStrictEqual(["abbccc"])
    const f = await answered(call(connection, "Fan", [Buffer.from("x")]))
    expect(f.messages.map(String)).toStrictEqual(["x", "x", "x"])
    const b = await answered(call(connection, "Chat", ["1", "2", "3"].map((t) => Buffer.from(t))))
    expect(b.messages.map(String)).toStrictEqual(["1", "2", "3"])
    expect(connection.streamCount).toBe(0)
  })

  it("reads a status error as a trailers-only answer", async () => {
    const connection = await connectClient(await startGrpcServer(cleanup))
    const a = await answered(call(connection, "Fail", [Buffer.from("?")]))
    expect(field(a.head, "grpc-status")).toBe("5")
    // As on the wire: grpc-js percent-encodes grpc-message (the gRPC HTTP/2 spec).
    expect(field(a.head, "grpc-message")).toBe("no%20such%20thing")
    expect(field(a.head, "x-why")).toBe("missing")
  })

  it("cancels a call with RST_STREAM and keeps the connection", async () => {
    const connection = await connectClient(await startGrpcServer(cleanup))
    const hung = call(connection, "Hang", [Buffer.from("x")])
    await untilTurn(() => connection.streamCount === 1, "the hung call")
    connection.reset(hung, ErrorCode.CANCEL)
    expect(connection.streamCount).toBe(0)
    const after = await answered(call(connection, "Unary", [Buffer.from("still")]))
    expect(after.messages.map(String)).toStrictEqual(["still"])
  })

  it("sends a deadline the server enforces (grpc-timeout)", async () => {
    const connection = await connectClient(await startGrpcServer(cleanup))
    const a = await answered(call(connection, "Hang", [Buffer.from("x")], ["grpc-timeout", "50m"]))
    expect(field(a.trailers.length > 0 ? a.trailers : a.head, "grpc-status")).toBe(String(grpc.status.DEADLINE_EXCEEDED))
  })

  it("carries messages past the windows and 300 concurrent calls", async () => {
    const connection = await connectClient(await startGrpcServer(cleanup))
    const big = Buffer.alloc(3 << 20, 0x5a)
    big.writeUInt32BE(0xdeadbeef, big.length - 4)
    const a = await answered(call(connection, "Unary", [big]))
    expect(a.messages).toHaveLength(1)
    expect(a.messages[0]!.equals(big)).toBe(true)
    const streams = Array.from({ length: 300 }, (_, i) => call(connection, "Unary", [Buffer.from(`n${i}`)]))
    const answers = await Promise.all(streams.map(answered))
    expect(answers.map((x) => x.messages.map(String).join())).toStrictEqual(Array.from({ length: 300 }, (_, i) => `n${i}`))
  })
})

describe("client role against a node:http2 server", () => {
  it("queues requests past the server's MAX_CONCURRENT_STREAMS and sends them as streams end", async () => {
    const app = http2.createServer({ settings: { maxConcurrentStreams: 2 } })
    let open = 0
    let most = 0
    app.on("stream", (stream) => {
      open++
      most = Math.max(most, open)
      stream.on("close", () => open--)
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
      stream.on("data", (c: Buffer) => stream.write(c))
      stream.on("end", () => setImmediate(() => stream.end()))
    })
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const connection = await connectClient((app.address() as net.AddressInfo).port)
    // The first request learns the server's settings.
    await answered(call(connection, "Unary", [Buffer.from("first")]))
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => answered(call(connection, "Unary", [Buffer.from(`q${i}`)]))))
    expect(answers.map((a) => a.messages.map(String).join())).toStrictEqual(Array.from({ length: 10 }, (_, i) => `q${i}`))
    expect(most).toBe(2)
  })

  it("ends streams above a GOAWAY's last stream as retryable", async () => {
    const app = http2.createServer()
    const sessions: Array<http2.ServerHttp2Session> = []
    app.on("session", (s) => sessions.push(s))
    app.on("stream", (stream, headers) => {
      if (headers[":path"] === methods.Unary.path) {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
        stream.end(grpcMessage(Buffer.from("ok")))
      }
    })
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const connection = await connectClient((app.address() as net.AddressInfo).port)
    const kept = call(connection, "Hang", [Buffer.from("a")])
    await untilTurn(() => sessions.length === 1 && connection.streamCount === 1, "the first stream")
    await withTimeout(new Promise<void>((resolve) => app.once("stream", () => resolve())), 2000, "the server's stream")
    const later = call(connection, "Hang", [Buffer.from("b")])
    sessions[0]!.goaway(http2.constants.NGHTTP2_NO_ERROR, kept.id)
    const refused = await answered(later)
    expect(refused.ended?.reason).toBe("goaway")
    expect(refused.ended?.retryable).toBe(true)
    // The stream at the GOAWAY's last id goes on.
    expect(connection.streamCount).toBe(1)
    expect(connection.request([":method", "GET"], true)).toBeInstanceOf(H2RequestRefused)
  })
})

describe("a relay of both roles between grpc-js peers", () => {
  it("passes 1,000 unary calls with their metadata and a status error", async () => {
    const target = await startGrpcServer(cleanup)
    const relay = await startRelay(cleanup, target)
    const client = grpcClient(cleanup, relay.port)
    for (let round = 0; round < 10; round++) {
      const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => unary(client, "Unary", Buffer.from(`r${round}-${i}`))))
      expect(answers.map((a) => a.answer?.toString())).toStrictEqual(Array.from({ length: 100 }, (_, i) => `r${round}-${i}`))
    }
    const metadata = new grpc.Metadata()
    metadata.set("x-one", "uno")
    const one = await unary(client, "Unary", Buffer.from("m"), metadata)
    expect(one.head!.get("x-one")).toStrictEqual(["uno"])
    expect(one.trailers!.get("x-trailer-bin")).toStrictEqual([Buffer.from([0, 1, 2, 255])])
    const failed = await unary(client, "Fail", Buffer.from("?"))
    expect(failed.error!.code).toBe(grpc.status.NOT_FOUND)
    expect(failed.error!.metadata.get("x-why")).toStrictEqual(["missing"])
  })

  it("passes a 10,000-message bidi stream in order, and a 3 MiB message", async () => {
    const target = await startGrpcServer(cleanup)
    const relay = await startRelay(cleanup, target)
    const client = grpcClient(cleanup, relay.port)
    const got: Array<string> = []
    await withTimeout(new Promise<void>((resolve, reject) => {
      const chat = client.makeBidiStreamRequest(methods.Chat.path, identity, identity, new grpc.Metadata(), {})
      chat.on("data", (m: Buffer) => got.push(m.toString()))
      chat.on("error", reject)
      chat.on("status", () => resolve())
      let i = 0
      const pump = () => {
        while (i < 10_000) if (!chat.write(Buffer.from(`message ${i++}`))) return void chat.once("drain", pump)
        chat.end()
      }
      pump()
    }), 30_000, "the bidi stream")
    expect(got).toHaveLength(10_000)
    expect(got.every((m, i) => m === `message ${i}`)).toBe(true)
    const big = Buffer.alloc(3 << 20, 0x33)
    big.writeUInt32BE(0x01020304, 1000)
    const answer = await unary(client, "Unary", big)
    expect(answer.answer!.equals(big)).toBe(true)
  })

  it("carries a cancel and a deadline through to the far server", async () => {
    const target = await startGrpcServer(cleanup)
    const relay = await startRelay(cleanup, target)
    const client = grpcClient(cleanup, relay.port)
    const expired = await unary(client, "Hang", Buffer.from("slow"), new grpc.Metadata(), 100)
    expect(expired.error!.code).toBe(grpc.status.DEADLINE_EXCEEDED)
    const after = await unary(client, "Unary", Buffer.from("after"))
    expect(after.answer!.toString()).toBe("after")
  })
})
