// HPACK against nghttp2 (node:http2), the peer nobody here wrote. Decoding: a node client and a
// node server talk through a transparent TCP tap that decodes every header block both ways with our
// decoder (nghttp2's dynamic table and Huffman coding at work over many requests); what we decode must
// be exactly what node's other end received (its raw headers). Encoding: blocks of our encoder, in
// HEADERS frames written by hand, to a node server and a node client, which must see exactly our fields,
// also after the peer lowers SETTINGS_HEADER_TABLE_SIZE.
import * as http2 from "node:http2"
import * as net from "node:net"
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { checkRequestHead, checkResponseHead, checkTrailers } from "../../src/h2/headerCheck.ts"
import { blockLengthBound, HpackEncoder } from "../../src/h2/hpackEncoder.ts"
import { connectRawH2, headerFrames } from "../helpers/h2RawClient.ts"
import { ECHO_PATH, grpcThroughTap, listen, startTap } from "../helpers/h2Tap.ts"
import { Flag, FrameReader, frame, PREFACE, settingsAck, Type } from "../helpers/h2Wire.ts"
import { Cleanup, startRawServer, withTimeout } from "../support/iipRaw.ts"

const GRPC_REQUEST = (i: number): http2.OutgoingHttpHeaders => ({
  ":method": "POST",
  ":path": `/mesh.test.Echo/Call${i % 3}`,
  "content-type": "application/grpc",
  te: "trailers",
  "user-agent": "grpc-node-js/1.14.7",
  "grpc-accept-encoding": "identity,deflate,gzip",
  "accept-encoding": "identity",
  "grpc-timeout": `${1000 + i}m`,
  "x-request-id": `req-${i}-${"0123456789abcdef".repeat(2)}`,
  "x-latin": "caf\u00e9 \u00a0\u00ff",
  "x-rep": ["a", "b", `c${i}`],
  ...(i % 4 === 0 ? { "x-long": "L".repeat(3000 + i), ...Object.fromEntries(Array.from({ length: 40 }, (_, k) => [`x-field-${k}`, `value-${k}-${i}`])) } : {})
})

describe("HpackDecoder against nghttp2 (node:http2)", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it.each([
    ["default table sizes", 4096, 4096],
    ["small tables announced by both ends", 256, 100]
  ])("decodes exactly what node's client and server receive over 60 gRPC-like calls on one connection (%s)", async (_name, serverTable, clientTable) => {
    const received: Array<ReadonlyArray<string>> = []
    const server = http2.createServer({ settings: { headerTableSize: serverTable } })
    server.on("stream", (stream, _headers, _flags, raw) => {
      received.push(raw)
      const i = received.length
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-encoding": "identity", "x-answer": `answer-${i % 5}`, "x-latin": "\u00e9t\u00e9" }, { waitForTrailers: true })
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": String(i % 2 === 0 ? 0 : 5), "grpc-message": i % 2 === 0 ? "" : `not found: ${i} \u00e9` }))
      stream.end(Buffer.alloc(5))
    })
    const tap = await startTap(cleanup, await listen(cleanup, server))
    const client = http2.connect(`http://127.0.0.1:${tap.port}`, { settings: { headerTableSize: clientTable } })
    cleanup.add(() => client.destroy())
    const answered: Array<ReadonlyArray<string>> = []
    for (let i = 0; i < 60; i++) {
      const request = client.request(GRPC_REQUEST(i))
      request.on("response", (_h, _f, raw) => answered.push(raw))
      request.on("trailers", (_h, _f, raw) => answered.push(raw))
      request.end(Buffer.alloc(5))
      request.resume()
      await withTimeout(new Promise((resolve) => request.on("close", resolve)), 5000, `call ${i}`)
    }
    expect(received.length).toBe(60)
    expect(answered.length).toBe(120)
    expect(tap.decoded.toServer).toStrictEqual(received)
    expect(tap.decoded.toClient).toStrictEqual(answered)
    // nghttp2's dynamic table and Huffman coding were at work: the third request's block is a
    // fraction of its fields' octets (the second's table was flushed by the first's 40 extra fields),
    // the first (all literals, Huffman-coded) below them too.
    const octets = (fields: ReadonlyArray<string>): number => fields.reduce((sum, text) => sum + text.length, 0)
    // With small tables announced, each encoder's size update within them (which each decoder then requires) was decoded.
    const sizeUpdates = (blocks: ReadonlyArray<Buffer>): Array<number> =>
      blocks.filter((block) => (block[0]! & 0xe0) === 0x20).map((block) => ((block[0]! & 0x1f) < 31 ? block[0]! & 0x1f : 31 + (block[1]! & 0x7f) + (block[1]! >= 0x80 ? block[2]! << 7 : 0)))
    if (serverTable < 4096) expect(sizeUpdates(tap.decoded.blocksToServer)).toStrictEqual([serverTable])
    if (clientTable < 4096) expect(sizeUpdates(tap.decoded.blocksToClient)).toStrictEqual([clientTable])
    if (serverTable === 4096) expect(tap.decoded.blocksToServer[2]!.length).toBeLessThan(octets(received[2]!) / 4)
    expect(tap.decoded.blocksToServer[0]!.length).toBeLessThan(octets(received[0]!) - 300)
  })
})

describe("HpackDecoder against grpc-js", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("decodes every head and trailer of 30 unary calls, which pass RFC 9113's checks", async () => {
    const { tap, call } = await grpcThroughTap(cleanup)
    for (let i = 0; i < 30; i++) {
      const metadata = new grpc.Metadata()
      metadata.set("x-call", `call-${i}`)
      metadata.set("x-trace-bin", Buffer.from([i, 0, 255]))
      await withTimeout(call(Buffer.from("hi"), metadata), 5000, `call ${i}`)
    }
    const requests = tap.decoded.toServer as Array<Array<string>>
    const answers = tap.decoded.toClient as Array<Array<string>>
    expect([requests.length, answers.length]).toStrictEqual([30, 60])
    requests.forEach((fields, i) => {
      expect(checkRequestHead(fields)).toBeUndefined()
      const value = (name: string): string | undefined => fields[fields.indexOf(name) + 1]
      expect([value(":path"), value("content-type"), value("te"), value("x-call"), value("x-trace-bin")]).toStrictEqual([
        ECHO_PATH, "application/grpc", "trailers", `call-${i}`, Buffer.from([i, 0, 255]).toString("base64").replace(/=+$/, "")
      ])
    })
    answers.forEach((fields, i) => expect(i % 2 === 0 ? checkResponseHead(fields) : checkTrailers(fields)).toBeUndefined())
    expect(answers.filter((_, i) => i % 2 === 1).map((fields) => fields[fields.indexOf("grpc-status") + 1])).toStrictEqual(Array(30).fill("0"))
  })
})

describe("the decoding tap (test/helpers/h2Tap.ts)", () => {
  it("ends its sockets on cleanup even when both ends stay connected", async () => {
    const cleanup = new Cleanup()
    const backend = net.createServer((socket) => socket.on("error", () => {}))
    const tap = await startTap(cleanup, await listen(cleanup, backend))
    const client = net.connect(tap.port, "127.0.0.1")
    client.on("error", () => {})
    const closed = new Promise<void>((resolve) => client.on("close", () => resolve()))
    await new Promise<void>((resolve) => client.on("connect", () => resolve()))
    try {
      // Neither the client nor the backend closes: the tap's own cleanup must, or its server's close waits forever.
      await withTimeout(cleanup.run(), 2000, "tap cleanup")
      await withTimeout(closed, 2000, "client closed by the tap")
    } finally {
      client.destroy()
    }
  })
})

const REQUEST_FIELDS = (port: number, i: number): Array<string> => [
  ":method", "POST", ":scheme", "http", ":path", `/mesh.test.Echo/Call${i}`, ":authority", `127.0.0.1:${port}`,
  "content-type", "application/grpc", "te", "trailers", "user-agent", "grpc-node-js/1.14.7",
  "grpc-accept-encoding", "identity,deflate,gzip", "accept-encoding", "identity", "grpc-timeout", "100m",
  "x-latin", "caf\u00e9 \u00ff", "x-rep", "a", "x-rep", "b", "authorization", `Bearer t${i}`, "x-long", "L".repeat(i === 2 ? 20_000 : 300)
]
const RESPONSE_FIELDS = (i: number): Array<string> => [":status", i % 2 === 0 ? "200" : "203", "content-type", "application/grpc", "grpc-encoding", "identity", "x-answer", `\u00e9${i}`]
const TRAILER_FIELDS = (i: number): Array<string> => ["grpc-status", String(i % 3), "grpc-message", "m".repeat(i * 50)]

const encodeBlock = (encoder: HpackEncoder, fields: ReadonlyArray<string>): Buffer => {
  const out = Buffer.alloc(blockLengthBound(fields))
  return out.subarray(0, encoder.encode(fields, out, 0))
}

describe("HpackEncoder against nghttp2 (node:http2)", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a node server receives exactly our request fields, with a small table announced", async () => {
    const received: Array<ReadonlyArray<string>> = []
    const server = http2.createServer({ settings: { headerTableSize: 64 } })
    server.on("stream", (stream, _headers, _flags, raw) => {
      received.push(raw)
      stream.respond({ ":status": 200 }, { endStream: true })
    })
    const port = await listen(cleanup, server)
    const raw = await connectRawH2(cleanup, port, true)
    // The server's SETTINGS came and were acknowledged: our next block must fit its table.
    const encoder = new HpackEncoder()
    encoder.setPeerTableSize(64)
    const sent: Array<Array<string>> = []
    for (let i = 0; i < 6; i++) {
      const stream = 1 + 2 * i
      const fields = REQUEST_FIELDS(port, i)
      sent.push(fields)
      raw.socket.write(headerFrames(stream, encodeBlock(encoder, fields), true))
      await raw.until((frames) => frames.some((f) => f.stream === stream && (f.flags & Flag.endStream) !== 0), `answer ${i}`)
    }
    expect(received).toStrictEqual(sent)
  })

  it("a node client receives exactly our response and trailer fields, also after it lowers its table size", async () => {
    const encoder = new HpackEncoder()
    const { port } = await startRawServer(cleanup, (socket) => {
      socket.write(frame(Type.settings, 0, 0))
      const reader = new FrameReader()
      let at = 0
      let i = 0
      socket.on("data", (data: Buffer) => {
        if (at < PREFACE.length) {
          const n = Math.min(PREFACE.length - at, data.length)
          at += n
          data = data.subarray(n)
        }
        reader.push(data, (f) => {
          if (f.type === Type.settings && (f.flags & Flag.ack) === 0) {
            for (let at = 0; at + 6 <= f.payload.length; at += 6) if (f.payload.readUInt16BE(at) === 1) encoder.setPeerTableSize(f.payload.readUInt32BE(at + 2))
            socket.write(settingsAck())
          }
          if (f.type === Type.headers) {
            const n = i++
            socket.write(Buffer.concat([
              frame(Type.headers, Flag.endHeaders, f.stream, encodeBlock(encoder, RESPONSE_FIELDS(n))),
              frame(Type.headers, Flag.endHeaders | Flag.endStream, f.stream, encodeBlock(encoder, TRAILER_FIELDS(n)))
            ]))
          }
        })
      })
    })
    const client = http2.connect(`http://127.0.0.1:${port}`, { settings: { headerTableSize: 4096 } })
    cleanup.add(() => client.destroy())
    const got: Array<ReadonlyArray<string>> = []
    const expected: Array<Array<string>> = []
    for (let i = 0; i < 8; i++) {
      // Halfway, the client lowers SETTINGS_HEADER_TABLE_SIZE: our next block starts with a size update.
      if (i === 4) await new Promise<void>((resolve) => client.settings({ headerTableSize: 32 }, () => resolve()))
      const request = client.request({ ":method": "POST", ":path": "/x" })
      request.on("response", (_h, _f, raw) => got.push(raw))
      request.on("trailers", (_h, _f, raw) => got.push(raw))
      request.end()
      request.resume()
      await withTimeout(new Promise((resolve) => request.on("close", resolve)), 5000, `call ${i}`)
      expected.push(RESPONSE_FIELDS(i), TRAILER_FIELDS(i))
    }
    expect(got).toStrictEqual(expected)
  })
})
