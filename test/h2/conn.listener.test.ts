// What the outbound listener (src/sidecar/outboundH2*.ts) needs of our server role beyond the
// connection layer's first cut: a request's content-length held against its DATA (RFC 9113 8.1.1),
// heads decoded past the announced SETTINGS_MAX_HEADER_LIST_SIZE up to a budget (so the leg can
// answer 431) and refused ENHANCE_YOUR_CALM past it, a PING hook before the ACK (the leg's PING
// floor), and a graceful close with a deadline the leg chooses (a drain's).
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { ErrorCode, SettingId } from "../../src/h2/frames.ts"
import { H2Connection, type H2ServerHandler } from "../../src/h2/h2Connection.ts"
import type { H2ConnectionEnded, H2Stream, H2StreamEnded } from "../../src/h2/h2Streams.ts"
import { startEchoServer } from "../helpers/h2ConnLegs.ts"
import { connectRawH2, headerFrames, literal, requestBlock, resetCode, streamOver } from "../helpers/h2RawClient.ts"
import { Flag, type Frame, frame, Type } from "../helpers/h2Wire.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

interface Seen {
  requests: Array<{ stream: H2Stream; bytes: number }>
  data: Array<number>
  ends: Array<H2StreamEnded>
  /** The streams whose trailers were handed over. */
  trailers: Array<number>
  pings: number
  closed: Array<H2ConnectionEnded>
  connections: Array<H2Connection>
}

/** A server on our role that answers nothing on its own; `onPing` is the leg's hook. */
const startServer = async (limits: ConstructorParameters<typeof H2Connection>[3], onPing?: (connection: H2Connection, seen: Seen) => void): Promise<{ port: number; seen: Seen }> => {
  const seen: Seen = { requests: [], data: [], ends: [], trailers: [], pings: 0, closed: [], connections: [] }
  const server = net.createServer((socket) => {
    const handler: H2ServerHandler = {
      onRequest: (stream, fields) => void seen.requests.push({ stream, bytes: fields.reduce((total, field) => total + field.length, 0) }),
      onData: (stream, chunk) => {
        seen.data.push(chunk.length)
        connection.consumed(stream, chunk.length)
      },
      onTrailers: (stream) => void seen.trailers.push(stream.id),
      onReset: () => {},
      onEnd: (_stream, ended) => void seen.ends.push(ended),
      onWritable: () => {},
      onClose: (ended) => void seen.closed.push(ended),
      ...(onPing === undefined ? {} : { onPing: () => onPing(connection, seen) })
    }
    const connection = new H2Connection(socket, "server", handler, limits)
    seen.connections.push(connection)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    for (const connection of seen.connections) connection.destroy("test-over", 0)
    server.close(() => resolve())
  }))
  return { port: (server.address() as net.AddressInfo).port, seen }
}

const post = (length: string | ReadonlyArray<string>): Buffer =>
  requestBlock("POST", "/upload", (typeof length === "string" ? [length] : length).map((value) => ["content-length", value] as const))
const data = (stream: number, bytes: number, end: boolean): Buffer => frame(Type.data, end ? Flag.endStream : 0, stream, Buffer.alloc(bytes, 1))
const ping = (n: number): Buffer => frame(Type.ping, 0, 0, Buffer.alloc(8, n))
const goAway = (frames: ReadonlyArray<Frame>): { code: number; reason: string } | undefined => {
  const f = frames.find((x) => x.type === Type.goaway)
  return f === undefined ? undefined : { code: f.payload.readUInt32BE(4), reason: f.payload.subarray(8).toString() }
}

describe("a request's content-length against its DATA", () => {
  it("DATA short of it at END_STREAM, or past it, is a stream error (PROTOCOL_ERROR); one that agrees is whole; the connection goes on", async () => {
    const { port, seen } = await startServer({})
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat([headerFrames(1, post("10"), false), data(1, 6, true)]))
    raw.socket.write(Buffer.concat([headerFrames(3, post("10"), false), data(3, 6, false), data(3, 6, false)]))
    raw.socket.write(Buffer.concat([headerFrames(5, post("10"), false), data(5, 4, false), data(5, 6, true)]))
    await raw.until((frames) => streamOver(1)(frames) && streamOver(3)(frames), "both streams' resets")
    await untilTurn(() => seen.data.length === 3, "stream 5's DATA")
    expect([resetCode(raw.frames, 1), resetCode(raw.frames, 3), resetCode(raw.frames, 5)]).toStrictEqual([ErrorCode.PROTOCOL_ERROR, ErrorCode.PROTOCOL_ERROR, undefined])
    expect(seen.ends.map((ended) => ended.reason)).toStrictEqual(["content-length", "content-length"])
    // DATA that contradicts the length is never handed over: stream 1's none, stream 3's first (within it), stream 5's both.
    expect(seen.data).toStrictEqual([6, 4, 6])
  })

  it("trailers that end the request short of it are a stream error too, never handed over; trailers after DATA that agrees are", async () => {
    const { port, seen } = await startServer({})
    const raw = await connectRawH2(cleanup, port, true)
    const trailer = literal("x-checksum", "1")
    raw.socket.write(Buffer.concat([headerFrames(1, post("10"), false), data(1, 4, false), headerFrames(1, trailer, true)]))
    raw.socket.write(Buffer.concat([headerFrames(3, post("4"), false), data(3, 4, false), headerFrames(3, trailer, true)]))
    await raw.until(streamOver(1), "stream 1's reset")
    await untilTurn(() => seen.trailers.length === 1, "stream 3's trailers")
    expect({ reset1: resetCode(raw.frames, 1), reset3: resetCode(raw.frames, 3), trailers: seen.trailers, ends: seen.ends.map((ended) => ended.reason) }).toStrictEqual({ reset1: ErrorCode.PROTOCOL_ERROR, reset3: undefined, trailers: [3], ends: ["content-length"] })
  })

  it("a repeated content-length (even equal), or one on a head that ends the stream, refuses the stream before the leg hears of it", async () => {
    const { port, seen } = await startServer({})
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(headerFrames(1, post(["5", "5"]), false))
    raw.socket.write(headerFrames(3, post("5"), true))
    raw.socket.write(headerFrames(5, post("x5"), false))
    await raw.until((frames) => [1, 3, 5].every((id) => streamOver(id)(frames)), "three resets")
    expect([1, 3, 5].map((id) => resetCode(raw.frames, id))).toStrictEqual([ErrorCode.PROTOCOL_ERROR, ErrorCode.PROTOCOL_ERROR, ErrorCode.PROTOCOL_ERROR])
    expect(seen.requests).toHaveLength(0)
  })
})

describe("heads past the announced MAX_HEADER_LIST_SIZE", () => {
  it("announces maxHeaderListSize, hands over heads up to decodeHeaderListSize, refuses larger ones ENHANCE_YOUR_CALM", async () => {
    const { port, seen } = await startServer({ maxHeaderListSize: 1_000, decodeHeaderListSize: 8_000 })
    const raw = await connectRawH2(cleanup, port, true)
    const announced = raw.frames.find((f) => f.type === Type.settings && (f.flags & Flag.ack) === 0)!.payload
    const settings = new Map<number, number>()
    for (let at = 0; at < announced.length; at += 6) settings.set(announced.readUInt16BE(at), announced.readUInt32BE(at + 2))
    expect(settings.get(SettingId.MAX_HEADER_LIST_SIZE)).toBe(1_000)
    raw.socket.write(headerFrames(1, requestBlock("GET", "/between", [["x-big", "b".repeat(4_000)]]), true))
    raw.socket.write(headerFrames(3, requestBlock("GET", "/past", [["x-big", "b".repeat(9_000)]]), true))
    await raw.until(streamOver(3), "stream 3's reset")
    await untilTurn(() => seen.requests.length === 1, "stream 1's head")
    expect(seen.requests[0]!.stream.id).toBe(1)
    expect(resetCode(raw.frames, 3)).toBe(ErrorCode.ENHANCE_YOUR_CALM)
    expect(resetCode(raw.frames, 1)).toBeUndefined()
  })
})

describe("the leg's PING hook", () => {
  it("runs before each PING's ACK; a leg that ends the connection from it sends no ACK, the GOAWAY carries its reason", async () => {
    const { port, seen } = await startServer({}, (connection, s) => {
      if (++s.pings === 3) connection.destroy("too_many_pings", ErrorCode.ENHANCE_YOUR_CALM)
    })
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat([ping(1), ping(2), ping(3), ping(4)]))
    await raw.until((frames) => goAway(frames) !== undefined, "the GOAWAY")
    expect(raw.frames.filter((f) => f.type === Type.ping && (f.flags & Flag.ack) !== 0).map((f) => f.payload[0])).toStrictEqual([1, 2])
    expect(goAway(raw.frames)).toStrictEqual({ code: ErrorCode.ENHANCE_YOUR_CALM, reason: "too_many_pings" })
    expect(seen.pings).toBe(3)
  })
})

describe("a graceful close with the leg's deadline", () => {
  it("close(ms) cuts the streams left after ms, a sooner deadline asked later wins, and a later one never postpones it", async () => {
    const { port, stats } = await startEchoServer(cleanup, { tickMs: 10 })
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(headerFrames(1, requestBlock("POST", "/demo.Echo/Hang", [["content-type", "application/grpc"]]), false))
    await untilTurn(() => stats.requests === 1, "the hanging call")
    const connection = stats.connections[0]!
    const asked = performance.now()
    connection.close(600_000)
    connection.close(50)
    connection.close(600_000)
    await raw.until((frames) => goAway(frames)?.code === ErrorCode.NO_ERROR && raw.isClosed(), "the close")
    await untilTurn(() => stats.closed.length === 1, "the connection's end")
    expect(stats.closed[0]!.reason).toBe("close-timeout")
    expect(performance.now() - asked).toBeLessThan(5_000)
  })
})
