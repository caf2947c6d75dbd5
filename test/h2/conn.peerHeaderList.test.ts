// The peer's SETTINGS_MAX_HEADER_LIST_SIZE held against the header blocks we send (RFC 9113 6.5.2:
// name + value + 32 per field), both roles, against node:http2 announcing a small limit: a list
// past it is not sent (request refused "past-peer-header-limit"; respond / trailers say false, the
// stream left as it was for the leg to answer otherwise); one within it goes.
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { H2Connection, type H2ServerHandler } from "../../src/h2/h2Connection.ts"
import { H2RequestRefused, type H2Stream, type H2StreamEnded } from "../../src/h2/h2Streams.ts"
import { headerListSize } from "../../src/h2/headerCheck.ts"
import { listenH2 } from "../helpers/h2ConnLegs.ts"
import { Flag, frame, settings, settingsAck, Type } from "../helpers/h2Wire.ts"
import { STATUS_200 } from "../support/h2Raw.ts"
import { Cleanup, startRawServer, untilTurn, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const LIMIT = 1000

describe("client role: a request head past the server's limit is never sent", () => {
  it("refused past-peer-header-limit; one at the limit goes and is answered", async () => {
    const seen: Array<string> = []
    const server = http2.createServer({ settings: { maxHeaderListSize: LIMIT } }, (req, res) => {
      seen.push(String(req.headers["x-pad"]).length.toString())
      res.end("ok")
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const socket = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1")
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject))
    const answers: Array<string> = []
    const connection: H2Connection = new H2Connection(socket, "client", {
      onResponse: (_s, fields) => void answers.push(fields[1]!),
      onData: (s, chunk) => connection.consumed(s, chunk.length),
      onTrailers: () => {},
      onReset: () => {},
      onEnd: () => {},
      onWritable: () => {},
      onClose: () => {}
    })
    cleanup.add(() => connection.destroy("test-over", 0))
    await untilTurn(() => connection.peerMaxHeaderListSize === LIMIT, "the server's SETTINGS")
    const head = (pad: number): Array<string> => [":method", "GET", ":scheme", "http", ":authority", "app", ":path", "/", "x-pad", "p".repeat(pad)]
    const base = headerListSize(head(0))
    const over = connection.request(head(LIMIT - base + 1), true)
    expect(over).toStrictEqual(new H2RequestRefused({ reason: "past-peer-header-limit" }))
    const at = connection.request(head(LIMIT - base), true)
    expect(at).not.toBeInstanceOf(H2RequestRefused)
    await untilTurn(() => answers.length === 1, "the answer to the request at the limit")
    expect({ answers, seen }).toStrictEqual({ answers: ["200"], seen: [String(LIMIT - base)] })
    expect(connection.ended).toBeUndefined()
  })
})

describe("client role: a queued request whose head the limit that came while it waited is past", () => {
  it("never goes: it ends past-peer-header-limit, not retryable", async () => {
    // A raw server allowing one stream; once it read stream 1's HEADERS, a SETTINGS with a limit of 100, then stream 1's answer.
    let headers = 0
    const { port } = await startRawServer(cleanup, (socket) => {
      socket.write(Buffer.concat([settings([[3, 1]]), settingsAck()]))
      let read = Buffer.alloc(0)
      let at = 24
      socket.on("data", (data: Buffer) => {
        read = Buffer.concat([read, data])
        for (let length = 0; at + 9 <= read.length && at + 9 + (length = read.readUIntBE(at, 3)) <= read.length; at += 9 + length) {
          if (read[at + 3] !== Type.headers) continue
          if (++headers === 1) socket.write(Buffer.concat([settings([[6, 100]]), frame(Type.headers, Flag.endHeaders | Flag.endStream, 1, STATUS_200)]))
        }
      })
    })
    const socket = net.connect(port, "127.0.0.1")
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject))
    const ends: Array<H2StreamEnded> = []
    let answered = 0
    const connection: H2Connection = new H2Connection(socket, "client", {
      onResponse: () => void answered++,
      onData: () => {},
      onTrailers: () => {},
      onReset: () => {},
      onEnd: (_s, ended) => void ends.push(ended),
      onWritable: () => {},
      onClose: () => {}
    })
    cleanup.add(() => connection.destroy("test-over", 0))
    await untilTurn(() => connection.peerMaxConcurrentStreams === 1, "the server's SETTINGS")
    const head = [":method", "GET", ":scheme", "http", ":authority", "app", ":path", "/"]
    connection.request(head, true)
    const queued = connection.request([...head, "x-pad", "p".repeat(200)], true)
    expect(queued).not.toBeInstanceOf(H2RequestRefused)
    await untilTurn(() => ends.length === 1, "the queued request's end")
    expect({ answered, headers, end: ends[0]!.reason, retryable: ends[0]!.retryable }).toStrictEqual({ answered: 1, headers: 1, end: "past-peer-header-limit", retryable: false })
  })
})

describe("server role: an answer's head or trailers past the client's limit are not sent", () => {
  it("respond and trailers say false and send nothing; the leg's smaller answer reaches node's client", async () => {
    const said: Array<boolean> = []
    const port = await listenH2(cleanup, (connectionOf) => {
      const handler: H2ServerHandler = {
        onRequest: (stream: H2Stream) => {
          const connection = connectionOf()
          said.push(connection.respond(stream, [":status", "200", "x-big", "b".repeat(LIMIT)], false))
          said.push(connection.respond(stream, [":status", "200", "x-small", "s"], false))
          connection.write(stream, Buffer.from("body"), false)
          said.push(connection.trailers(stream, ["x-trailer", "t".repeat(LIMIT)]))
          said.push(connection.trailers(stream, ["x-trailer", "small"]))
        },
        onData: () => {},
        onTrailers: () => {},
        onReset: () => {},
        onEnd: () => {},
        onWritable: () => {},
        onClose: () => {}
      }
      return handler
    })
    const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { maxHeaderListSize: LIMIT } })
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    const request = session.request({ ":path": "/", ":method": "GET" })
    request.on("error", () => {})
    const got = await withTimeout(
      new Promise<{ head: http2.IncomingHttpHeaders; body: string; trailers: http2.IncomingHttpHeaders; rst: number }>((resolve) => {
        let head: http2.IncomingHttpHeaders = {}
        let trailers: http2.IncomingHttpHeaders = {}
        let body = ""
        request.on("response", (h) => (head = h))
        request.on("trailers", (t) => (trailers = t))
        request.on("data", (chunk: Buffer) => (body += chunk.toString()))
        request.on("close", () => resolve({ head, body, trailers, rst: request.rstCode ?? -1 }))
      }),
      5000,
      "the answer"
    )
    expect(said).toStrictEqual([false, true, false, true])
    expect({ status: got.head[":status"], small: got.head["x-small"], big: got.head["x-big"], body: got.body, trailer: got.trailers["x-trailer"], rst: got.rst }).toStrictEqual({
      status: 200,
      small: "s",
      big: undefined,
      body: "body",
      trailer: "small",
      rst: 0
    })
  })
})
