// Our server role (src/h2/h2Connection.ts) against a raw socket that breaks the rules: each guard
// of h2Guards.ts tripped (rapid reset, PING, SETTINGS, CONTINUATION, empty DATA, tiny
// WINDOW_UPDATE and PRIORITY floods, a peer that never reads while we write), stream ids going
// backwards, frames on closed streams, refused streams, GOAWAY mid-call, SETTINGS never acknowledged.
// Each trip must end the connection with GOAWAY(code, reason) and a typed reason to the leg.
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { ErrorCode } from "../../src/h2/frames.ts"
import { H2Connection } from "../../src/h2/h2Connection.ts"
import type { H2ConnectionEnded } from "../../src/h2/h2Streams.ts"
import { startEchoServer } from "../helpers/h2ConnLegs.ts"
import { connectRawH2, headerFrames, requestBlock, resetCode, streamOver } from "../helpers/h2RawClient.ts"
import { Flag, type Frame, frame, HpackEncoder, PREFACE, priority, rst, settings, Type, windowUpdate } from "../helpers/h2Wire.ts"
import { grpcMessage } from "../support/grpcRaw.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const call = (path: string): Buffer => requestBlock("POST", `/demo.Echo/${path}`, [["content-type", "application/grpc"], ["te", "trailers"]])
const goAway = (frames: ReadonlyArray<Frame>): { last: number; code: number; reason: string } | undefined => {
  const f = frames.find((x) => x.type === Type.goaway)
  return f === undefined ? undefined : { last: f.payload.readUInt32BE(0), code: f.payload.readUInt32BE(4), reason: f.payload.subarray(8).toString() }
}
const hasGoAway = (frames: ReadonlyArray<Frame>): boolean => goAway(frames) !== undefined
const ping = (n: number): Buffer => frame(Type.ping, 0, 0, Buffer.alloc(8, n & 0xff))

describe("flood guards end the connection with GOAWAY ENHANCE_YOUR_CALM", () => {
  it("rapid reset: streams opened and reset before any answer", async () => {
    const { port, stats } = await startEchoServer(cleanup, { prematureResets: { burst: 100, perSecond: 1 } })
    const raw = await connectRawH2(cleanup, port, true)
    const batch: Array<Buffer> = []
    for (let id = 1; id < 2 * 300; id += 2) batch.push(headerFrames(id, call("Hang"), false), rst(id, ErrorCode.CANCEL))
    raw.socket.write(Buffer.concat(batch))
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toStrictEqual({ last: 201, code: ErrorCode.ENHANCE_YOUR_CALM, reason: "too_many_premature_resets" })
    // 101 streams reached the app (the 101st reset spent the budget); the rest of the read was not processed.
    expect(stats.requests).toBe(101)
    await untilTurn(() => stats.closed.length === 1, "the connection's end")
    expect(stats.closed[0]!.reason).toBe("too_many_premature_resets")
  })

  it("resets after an answer are not premature", async () => {
    const { port, stats } = await startEchoServer(cleanup, { prematureResets: { burst: 10, perSecond: 1 } })
    const raw = await connectRawH2(cleanup, port, true)
    for (let id = 1; id < 2 * 50; id += 2) raw.socket.write(headerFrames(id, call("Unary"), false))
    await raw.until((f) => f.filter((x) => x.type === Type.headers).length === 50, "50 answer heads")
    raw.socket.write(Buffer.concat(Array.from({ length: 50 }, (_, i) => rst(2 * i + 1, ErrorCode.CANCEL))))
    await untilTurn(() => stats.resets.length === 50, "the 50 resets")
    expect(hasGoAway(raw.frames)).toBe(false)
    expect(stats.connections[0]!.streamCount).toBe(0)
  })

  it("PING flood", async () => {
    const { port, stats } = await startEchoServer(cleanup, { ping: { burst: 50, perSecond: 1 } })
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat(Array.from({ length: 200 }, (_, i) => ping(i))))
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM, reason: "ping-flood" })
    expect(raw.frames.filter((f) => f.type === Type.ping && (f.flags & Flag.ack) !== 0)).toHaveLength(50)
    await untilTurn(() => stats.closed.length === 1, "the end")
    expect(stats.closed[0]!.reason).toBe("ping-flood")
  })

  it("SETTINGS flood", async () => {
    const { port } = await startEchoServer(cleanup, { settings: { burst: 20, perSecond: 1 } })
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat(Array.from({ length: 100 }, () => settings([[4, 70_000]]))))
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM, reason: "settings-flood" })
    // The preface's SETTINGS took one of the 20.
    expect(raw.frames.filter((f) => f.type === Type.settings && (f.flags & Flag.ack) !== 0)).toHaveLength(20)
  })

  it("a SETTINGS frame's repeated INITIAL_WINDOW_SIZE: only its last value is applied (once, not per entry)", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat([headerFrames(1, call("Hang"), false), windowUpdate(1, 1000)]))
    await untilTurn(() => stats.requests === 1, "the stream")
    // Applied entry by entry, the first would push stream 1's window past 2^31-1 (FLOW_CONTROL_ERROR);
    // a 16 KiB frame of 2,730 such entries walked every open stream 2,730 times (~9 ms with 256 streams).
    raw.socket.write(Buffer.concat([settings([[4, 2 ** 31 - 1], [4, 65_535]]), ping(7)]))
    await raw.until((f) => f.some((x) => x.type === Type.ping && (x.flags & Flag.ack) !== 0), "the PING's answer")
    expect(hasGoAway(raw.frames)).toBe(false)
    expect(stats.closed).toHaveLength(0)
  })

  it("CONTINUATION flood", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    const block = call("Unary")
    const frames = [frame(Type.headers, 0, 1, block.subarray(0, 4))]
    for (let i = 0; i < 20; i++) frames.push(frame(Type.continuation, 0, 1, Buffer.alloc(0)))
    raw.socket.write(Buffer.concat(frames))
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM, reason: "continuation-flood" })
    expect(stats.requests).toBe(0)
  })

  it("empty DATA, tiny WINDOW_UPDATE and PRIORITY floods", async () => {
    const limits = { emptyFrames: { burst: 30, perSecond: 1 }, tinyWindowUpdates: { burst: 30, perSecond: 1 }, ignoredFrames: { burst: 30, perSecond: 1 } }
    const { port } = await startEchoServer(cleanup, limits)
    const floods: Array<[string, (i: number) => Buffer]> = [
      ["empty-frames", () => frame(Type.data, 0, 1, Buffer.alloc(0))],
      ["tiny-window-updates", () => windowUpdate(0, 1)],
      ["ignored-frames", (i) => priority(1, i + 3)]
    ]
    for (const [reason, make] of floods) {
      const raw = await connectRawH2(cleanup, port, true)
      raw.socket.write(Buffer.concat([headerFrames(1, call("Hang"), false), ...Array.from({ length: 100 }, (_, i) => make(i))]))
      await raw.until(hasGoAway, `the GOAWAY for ${reason}`)
      expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM, reason })
    }
  })

  it("a peer that never reads while we write: past the buffer budget, and stalled", async () => {
    for (const [limits, reason] of [
      [{ maxBufferedBytes: 512 << 10, writeStallMs: 60_000 }, "peer-not-reading"],
      [{ maxBufferedBytes: 64 << 20, writeStallMs: 200, tickMs: 20 }, "write-stall"]
    ] as const) {
      const { port, stats } = await startEchoServer(cleanup, limits)
      const socket = net.connect(port, "127.0.0.1")
      cleanup.add(() => socket.destroy())
      socket.on("error", () => {})
      await new Promise<void>((resolve) => socket.once("connect", resolve))
      // Grants every window, then sends 8 echo streams of 1 MiB each and never reads a byte.
      socket.pause()
      const message = grpcMessage(Buffer.alloc((1 << 20) - 64, 0x61))
      const out = [PREFACE, settings([[4, 2 ** 31 - 1]]), windowUpdate(0, 2 ** 31 - 1 - 65_535), frame(Type.settings, Flag.ack, 0)]
      for (let id = 1; id <= 15; id += 2) {
        out.push(headerFrames(id, call("Chat"), false))
        for (let at = 0; at < message.length; at += 16_384) out.push(frame(Type.data, 0, id, message.subarray(at, at + 16_384)))
      }
      socket.write(Buffer.concat(out))
      await untilTurn(() => stats.closed.length === 1, `the end (${reason})`, 10_000)
      expect(stats.closed[0]!.reason).toBe(reason)
      expect(stats.closed[0]!.code).toBe(ErrorCode.ENHANCE_YOUR_CALM)
    }
  })
})

describe("stream rules", () => {
  it("a stream id going backwards is a connection PROTOCOL_ERROR", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat([headerFrames(5, call("Hang"), false), headerFrames(3, call("Hang"), false)]))
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toStrictEqual({ last: 5, code: ErrorCode.PROTOCOL_ERROR, reason: "stream-id-backwards" })
    await untilTurn(() => stats.ends.length === 1, "stream 5's end")
    expect(stats.ends[0]!.reason).toBe("stream-id-backwards")
  })

  it("an even stream id from a client is a connection PROTOCOL_ERROR", async () => {
    const { port } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(headerFrames(2, call("Hang"), false))
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.PROTOCOL_ERROR, reason: "even-stream-id" })
  })

  it("DATA on a closed stream is STREAM_CLOSED; the connection goes on", async () => {
    const { port } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat([headerFrames(1, call("Unary"), false), frame(Type.data, Flag.endStream, 1, grpcMessage(Buffer.from("a")))]))
    await raw.until(streamOver(1), "stream 1's answer")
    raw.socket.write(frame(Type.data, 0, 1, Buffer.from("late")))
    raw.socket.write(Buffer.concat([headerFrames(3, call("Unary"), false), frame(Type.data, Flag.endStream, 3, grpcMessage(Buffer.from("b")))]))
    await raw.until(streamOver(3), "stream 3's answer")
    expect(resetCode(raw.frames, 1)).toBe(ErrorCode.STREAM_CLOSED)
    expect(resetCode(raw.frames, 3)).toBeUndefined()
    expect(hasGoAway(raw.frames)).toBe(false)
  })

  it("DATA the peer sent before it saw our reset is dropped, not answered", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(headerFrames(1, call("Hang"), false))
    await untilTurn(() => stats.requests === 1, "the request")
    // The leg resets the stream; the peer's DATA was already on its way.
    stats.connections[0]!.reset(stats.streams[0]!, ErrorCode.CANCEL)
    raw.socket.write(frame(Type.data, 0, 1, Buffer.from("in flight")))
    raw.socket.write(headerFrames(3, call("Unary"), true))
    await raw.until(streamOver(3), "stream 3's answer")
    expect(raw.frames.filter((f) => f.type === Type.rst && f.stream === 1)).toHaveLength(1)
  })

  it("DATA and WINDOW_UPDATE on idle streams are connection errors", async () => {
    const { port } = await startEchoServer(cleanup)
    for (const bad of [frame(Type.data, 0, 7, Buffer.from("x")), windowUpdate(9, 100), rst(11, 0)]) {
      const raw = await connectRawH2(cleanup, port, true)
      raw.socket.write(bad)
      await raw.until(hasGoAway, "the GOAWAY")
      expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.PROTOCOL_ERROR, reason: "idle-stream" })
    }
  })

  it("refuses streams past our MAX_CONCURRENT_STREAMS", async () => {
    const { port, stats } = await startEchoServer(cleanup, { maxConcurrentStreams: 2 })
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(Buffer.concat([1, 3, 5].map((id) => headerFrames(id, call("Hang"), false))))
    await raw.until((f) => resetCode(f, 5) !== undefined, "stream 5's refusal")
    expect(resetCode(raw.frames, 5)).toBe(ErrorCode.REFUSED_STREAM)
    expect(stats.requests).toBe(2)
  })

  it("decodes the head of a refused, a reset and a malformed stream: HPACK's table stays in step", async () => {
    const { port, stats } = await startEchoServer(cleanup, { maxConcurrentStreams: 1 })
    const raw = await connectRawH2(cleanup, port, true)
    // Every field indexed: each block's new entries are what the next blocks name by index only.
    const hpack = new HpackEncoder()
    const head = (path: string, extra: string) =>
      hpack.block([[":method", "POST"], [":scheme", "http"], [":authority", "app"], [":path", path], ["content-type", "application/grpc"], ["x-extra", extra]], () => ({ index: true, huffman: true }))
    raw.socket.write(headerFrames(1, head("/demo.Echo/Hang", "a"), false))
    // Refused (one stream at a time), then malformed (a connection-specific field), each adding entries.
    raw.socket.write(headerFrames(3, head("/demo.Echo/Unary", "b"), true))
    raw.socket.write(headerFrames(5, Buffer.concat([head("/demo.Echo/Unary", "c"), hpack.block([["connection", "close"]], () => ({ index: true, huffman: false }))]), true))
    await raw.until((f) => resetCode(f, 5) !== undefined, "stream 5's reset")
    raw.socket.write(rst(1, ErrorCode.CANCEL))
    // Now all by index: wrong if any block above was skipped.
    raw.socket.write(headerFrames(7, head("/demo.Echo/Unary", "c"), true))
    await raw.until(streamOver(7), "stream 7's answer")
    expect(resetCode(raw.frames, 3)).toBe(ErrorCode.REFUSED_STREAM)
    expect(resetCode(raw.frames, 5)).toBe(ErrorCode.PROTOCOL_ERROR)
    expect(resetCode(raw.frames, 7)).toBeUndefined()
    expect(hasGoAway(raw.frames)).toBe(false)
    expect(stats.requests).toBe(2)
  })

  it("stream errors past their budget end the connection", async () => {
    const { port } = await startEchoServer(cleanup, { streamErrors: { burst: 20, perSecond: 1 } })
    const raw = await connectRawH2(cleanup, port, true)
    const bad = requestBlock("POST", "/x", [["connection", "close"]])
    raw.socket.write(Buffer.concat(Array.from({ length: 50 }, (_, i) => headerFrames(2 * i + 1, bad, true))))
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM, reason: "stream-errors" })
    expect(raw.frames.filter((f) => f.type === Type.rst)).toHaveLength(20)
  })

  it("a malformed request head is a stream error, not a connection one", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(headerFrames(1, requestBlock("POST", "/x", [["connection", "close"]]), true))
    raw.socket.write(headerFrames(3, call("Unary"), true))
    await raw.until(streamOver(3), "stream 3's answer")
    expect(resetCode(raw.frames, 1)).toBe(ErrorCode.PROTOCOL_ERROR)
    expect(stats.requests).toBe(1)
  })
})

describe("ends", () => {
  it("our graceful close mid-call: the call finishes, a later stream is never processed", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(headerFrames(1, call("Unary"), false))
    await untilTurn(() => stats.requests === 1, "the first request")
    stats.connections[0]!.close()
    // Two GOAWAYs (RFC 9113 6.8): 2^31-1 with a PING, then, at its ACK, the last stream taken.
    await raw.until((f) => hasGoAway(f) && f.some((x) => x.type === Type.ping), "the first GOAWAY and its PING")
    expect(goAway(raw.frames)).toMatchObject({ last: 2 ** 31 - 1, code: ErrorCode.NO_ERROR })
    raw.socket.write(frame(Type.ping, Flag.ack, 0, raw.frames.find((f) => f.type === Type.ping)!.payload))
    await raw.until((f) => f.filter((x) => x.type === Type.goaway).length === 2, "the second GOAWAY")
    expect(raw.frames.filter((f) => f.type === Type.goaway)[1]!.payload.readUInt32BE(0)).toBe(1)
    // A stream above the GOAWAY's last id, its head and its DATA: dropped, not answered.
    raw.socket.write(Buffer.concat([headerFrames(3, call("Unary"), false), frame(Type.data, Flag.endStream, 3, grpcMessage(Buffer.from("late")))]))
    raw.socket.write(frame(Type.data, Flag.endStream, 1, grpcMessage(Buffer.from("last"))))
    await raw.until(streamOver(1), "stream 1's answer")
    await untilTurn(() => raw.isClosed(), "the socket's close")
    expect(stats.requests).toBe(1)
    expect(stats.closed[0]!.reason).toBe("closed")
    expect(raw.frames.some((f) => f.stream === 3)).toBe(false)
  })

  it("the peer's GOAWAY mid-call: the call finishes, then the connection ends", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(headerFrames(1, call("Unary"), false))
    await untilTurn(() => stats.requests === 1, "the request")
    raw.socket.write(frame(Type.goaway, 0, 0, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0])))
    raw.socket.write(frame(Type.data, Flag.endStream, 1, grpcMessage(Buffer.from("x"))))
    await raw.until(streamOver(1), "stream 1's answer")
    await untilTurn(() => stats.closed.length === 1, "the end")
    expect(stats.closed[0]!.reason).toBe("closed")
    // The answer's END_STREAM, after the request's, is what closed stream 1: its one end, no error.
    expect(stats.ends.map((e) => [e.reason, e.retryable])).toStrictEqual([["complete", false]])
  })

  it("our SETTINGS never acknowledged: GOAWAY SETTINGS_TIMEOUT, open streams ended once", async () => {
    const { port, stats } = await startEchoServer(cleanup, { settingsTimeoutMs: 100, tickMs: 20 })
    const raw = await connectRawH2(cleanup, port, false)
    raw.socket.write(headerFrames(1, call("Hang"), false))
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.SETTINGS_TIMEOUT, reason: "settings-timeout" })
    await untilTurn(() => stats.closed.length === 1, "the end")
    expect(stats.ends.map((e) => e.reason)).toStrictEqual(["settings-timeout"])
  })

  it("an idle connection ends", async () => {
    const { port, stats } = await startEchoServer(cleanup, { idleTimeoutMs: 100, tickMs: 20 })
    const raw = await connectRawH2(cleanup, port, true)
    await raw.until(hasGoAway, "the GOAWAY")
    expect(goAway(raw.frames)).toMatchObject({ code: ErrorCode.NO_ERROR, reason: "idle-timeout" })
    expect(stats.closed[0]!.reason).toBe("idle-timeout")
  })

  it("streams that outlive a graceful close are ended at its deadline", async () => {
    const { port, stats } = await startEchoServer(cleanup, { closeTimeoutMs: 100, tickMs: 20 })
    const raw = await connectRawH2(cleanup, port, true)
    raw.socket.write(headerFrames(1, call("Hang"), false))
    await untilTurn(() => stats.requests === 1, "the request")
    stats.connections[0]!.close()
    await untilTurn(() => stats.closed.length === 1, "the end")
    expect(stats.closed[0]!.reason).toBe("close-timeout")
    expect(stats.ends.map((e) => e.reason)).toStrictEqual(["close-timeout"])
  })

  it("client role: a server that never sends SETTINGS gets GOAWAY SETTINGS_TIMEOUT", async () => {
    const received: Array<Buffer> = []
    const silent = net.createServer((socket) => {
      socket.on("data", (c: Buffer) => received.push(c))
      socket.on("error", () => {})
      cleanup.add(() => socket.destroy())
    })
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => silent.close(() => resolve())))
    const socket = net.connect((silent.address() as net.AddressInfo).port, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    await new Promise<void>((resolve) => socket.once("connect", resolve))
    const closed: Array<H2ConnectionEnded> = []
    const noop = () => {}
    new H2Connection(socket, "client", { onResponse: noop, onData: noop, onTrailers: noop, onReset: noop, onEnd: noop, onWritable: noop, onClose: (e) => closed.push(e) }, { settingsTimeoutMs: 100, tickMs: 20 })
    await untilTurn(() => closed.length === 1, "the end")
    expect(closed[0]!.reason).toBe("settings-timeout")
    expect(closed[0]!.code).toBe(ErrorCode.SETTINGS_TIMEOUT)
    // The preface, our SETTINGS and WINDOW_UPDATE, then the GOAWAY.
    await untilTurn(() => Buffer.concat(received).includes(Buffer.from("settings-timeout")), "the GOAWAY's debug data")
  })
})
