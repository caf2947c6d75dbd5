// Our own PINGs (src/h2/h2Pings.ts) and the server role's graceful close in two GOAWAYs (RFC 9113
// 6.8), against a raw peer on 127.0.0.1 that ACKs, ACKs wrongly, floods ACKs, or never ACKs: each
// costs bounded work and memory, and a stream the peer opened as we closed is still taken.
import { afterEach, describe, expect, it } from "vitest"
import { ErrorCode } from "../../src/h2/frames.ts"
import { startEchoServer } from "../helpers/h2ConnLegs.ts"
import { connectRawH2, headerFrames, requestBlock, streamOver } from "../helpers/h2RawClient.ts"
import { Flag, type Frame, frame, Type } from "../helpers/h2Wire.ts"
import { grpcMessage } from "../support/grpcRaw.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const MAX_ID = 2 ** 31 - 1
const unary = (id: number): Buffer =>
  Buffer.concat([
    headerFrames(id, requestBlock("POST", "/demo.Echo/Unary", [["content-type", "application/grpc"], ["te", "trailers"]]), false),
    frame(Type.data, Flag.endStream, id, grpcMessage(Buffer.from(`call-${id}`)))
  ])
const ourPings = (frames: ReadonlyArray<Frame>): Array<Frame> => frames.filter((f) => f.type === Type.ping && (f.flags & Flag.ack) === 0)
const pingAck = (payload: Buffer): Buffer => frame(Type.ping, Flag.ack, 0, payload)
const goAways = (frames: ReadonlyArray<Frame>): Array<{ last: number; code: number }> =>
  frames.filter((f) => f.type === Type.goaway).map((f) => ({ last: f.payload.readUInt32BE(0), code: f.payload.readUInt32BE(4) }))

describe("our PING", () => {
  it("goes with an 8-byte payload of its own; its ACK calls back once and measures the round trip", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    const connection = stats.connections[0]!
    let acked = 0
    expect(connection.ping(() => acked++)).toBe(true)
    expect(connection.ping(() => (acked += 10))).toBe(true)
    await raw.until((f) => ourPings(f).length === 2, "our two PINGs")
    const [first, second] = ourPings(raw.frames)
    expect(first!.payload).toHaveLength(8)
    expect(first!.payload.equals(second!.payload)).toBe(false)
    expect(Number.isNaN(connection.roundTripMs)).toBe(true)
    // The second's ACK first, then the first's twice (the repeat matches nothing any more).
    raw.socket.write(Buffer.concat([pingAck(second!.payload), pingAck(first!.payload), pingAck(first!.payload)]))
    await untilTurn(() => acked === 11, "both ACKs")
    expect(connection.roundTripMs).toBeGreaterThanOrEqual(0)
    expect(connection.roundTripMs).toBeLessThan(5000)
    expect(acked).toBe(11)
  })

  it("an ACK with a wrong payload calls nobody back", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    const connection = stats.connections[0]!
    let acked = 0
    connection.ping(() => acked++)
    await raw.until((f) => ourPings(f).length === 1, "our PING")
    const wrong = Buffer.from(ourPings(raw.frames)[0]!.payload)
    wrong[7]! ^= 0xff
    raw.socket.write(pingAck(wrong))
    // A request after it: once its answer came, the ACK before it was read.
    raw.socket.write(unary(1))
    await raw.until(streamOver(1), "the call's answer")
    expect(acked).toBe(0)
    expect(connection.ended).toBeUndefined()
  })

  it("a flood of ACKs nobody asked for spends the ping budget: the connection ends ENHANCE_YOUR_CALM", async () => {
    const { port, stats } = await startEchoServer(cleanup, { ping: { burst: 50, perSecond: 1 } })
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat(Array.from({ length: 200 }, (_, i) => pingAck(Buffer.alloc(8, i)))))
    await raw.until((f) => goAways(f).length > 0, "the GOAWAY")
    expect(goAways(raw.frames)[0]!.code).toBe(ErrorCode.ENHANCE_YOUR_CALM)
    await untilTurn(() => stats.closed.length === 1, "the connection's end")
    expect(stats.closed[0]!.reason).toBe("ping-flood")
  })

  it("a peer that never ACKs holds at most maxOwnPings of them", async () => {
    const { port, stats } = await startEchoServer(cleanup, { maxOwnPings: 3 })
    const raw = await connectRawH2(cleanup, port, true)
    const connection = stats.connections[0]!
    const sent = Array.from({ length: 10 }, () => connection.ping(() => {}))
    expect(sent).toStrictEqual([true, true, true, false, false, false, false, false, false, false])
    await raw.until((f) => ourPings(f).length === 3, "three PINGs")
    // One ACKed: one more may go.
    raw.socket.write(pingAck(ourPings(raw.frames)[1]!.payload))
    await untilTurn(() => connection.ping(() => {}), "room for one more PING")
    expect(connection.ping(() => {})).toBe(false)
  })
})

describe("a graceful close, server role: GOAWAY 2^31-1 and a PING, then at its ACK the last stream id", () => {
  it("a stream the peer opened before it read the first GOAWAY is taken; one after the second is not", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(unary(1))
    await raw.until(streamOver(1), "stream 1's answer")
    const connection = stats.connections[0]!
    connection.close(10_000)
    await raw.until((f) => goAways(f).length === 1 && ourPings(f).length === 1, "the first GOAWAY and its PING")
    expect(goAways(raw.frames)).toStrictEqual([{ last: MAX_ID, code: ErrorCode.NO_ERROR }])
    // In flight as we closed: taken and answered.
    raw.socket.write(unary(3))
    await raw.until(streamOver(3), "stream 3's answer")
    raw.socket.write(pingAck(ourPings(raw.frames)[0]!.payload))
    await raw.until((f) => goAways(f).length === 2, "the second GOAWAY")
    expect(goAways(raw.frames)[1]).toStrictEqual({ last: 3, code: ErrorCode.NO_ERROR })
    expect(stats.requests).toBe(2)
    await untilTurn(() => stats.closed.length === 1, "the connection's end")
    expect(stats.closed[0]!.reason).toBe("closed")
  })

  it("a peer that never ACKs gets the second GOAWAY after goAwayWaitMs; streams after it are not processed", async () => {
    const { port, stats } = await startEchoServer(cleanup, { goAwayWaitMs: 50 })
    const raw = await connectRawH2(cleanup, port, true)
    const connection = stats.connections[0]!
    raw.socket.write(headerFrames(1, requestBlock("POST", "/demo.Echo/Hang", [["content-type", "application/grpc"]]), false))
    await untilTurn(() => stats.requests === 1, "stream 1 at the app")
    connection.close(10_000)
    await raw.until((f) => goAways(f).length === 2, "both GOAWAYs")
    expect(goAways(raw.frames)).toStrictEqual([{ last: MAX_ID, code: ErrorCode.NO_ERROR }, { last: 1, code: ErrorCode.NO_ERROR }])
    raw.socket.write(unary(3))
    // Stream 1 is left to end: reset by the peer, the connection finishes, stream 3 never reached the app.
    raw.socket.write(frame(Type.rst, 0, 1, Buffer.from([0, 0, 0, 8])))
    await untilTurn(() => stats.closed.length === 1, "the connection's end")
    expect(stats.requests).toBe(1)
    expect(stats.closed[0]!.reason).toBe("closed")
  })

  it("a peer that never ACKs and opens streams between the two: at most MAX_CONCURRENT_STREAMS taken, the rest refused; it ends at the close deadline", async () => {
    const { port, stats } = await startEchoServer(cleanup, { tickMs: 20 })
    const raw = await connectRawH2(cleanup, port, true)
    // Sooner than goAwayWaitMs (1 s): the deadline bounds the wait for the ACK too.
    stats.connections[0]!.close(500)
    await raw.until((f) => goAways(f).length === 1, "the first GOAWAY")
    const hang = (id: number): Buffer => headerFrames(id, requestBlock("POST", "/demo.Echo/Hang", [["content-type", "application/grpc"]]), false)
    raw.socket.write(Buffer.concat(Array.from({ length: 400 }, (_, i) => hang(2 * i + 1))))
    await untilTurn(() => stats.closed.length === 1, "the connection's end")
    const refused = raw.frames.filter((f) => f.type === Type.rst && f.payload.readUInt32BE(0) === ErrorCode.REFUSED_STREAM).length
    expect({ taken: stats.requests, refused, reason: stats.closed[0]!.reason }).toStrictEqual({ taken: 256, refused: 144, reason: "close-timeout" })
    // After the first, every GOAWAY names the last stream read: none was dropped unanswered.
    await raw.until((f) => goAways(f).length >= 2, "the last GOAWAY")
    expect(goAways(raw.frames).slice(1).every((g) => g.last === 799)).toBe(true)
  })

  it("with no stream open, the connection ends at the ACK, not before", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    const connection = stats.connections[0]!
    connection.close(10_000)
    await raw.until((f) => ourPings(f).length === 1, "the PING")
    expect(stats.closed).toHaveLength(0)
    raw.socket.write(pingAck(ourPings(raw.frames)[0]!.payload))
    await untilTurn(() => stats.closed.length === 1, "the connection's end")
    await raw.until((f) => goAways(f).length === 2, "the second GOAWAY")
    expect(goAways(raw.frames)).toStrictEqual([{ last: MAX_ID, code: ErrorCode.NO_ERROR }, { last: 0, code: ErrorCode.NO_ERROR }])
  })
})
