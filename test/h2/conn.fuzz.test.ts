// A seeded fuzz of both roles of src/h2/h2Connection.ts: real captures (what a grpc-js client sends
// our server role, what a grpc-js server sends our client role, over TCP on 127.0.0.1) mutated frame by
// frame and byte by byte, fed in random chunks to a fresh connection over an in-process socket. Each
// case must end with no throw, every stream ended at most once, the open streams and the bytes we
// wrote bounded, and after destroy nothing left open.
import * as grpc from "@grpc/grpc-js"
import { EventEmitter } from "node:events"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { H2Connection, type H2ClientHandler, type H2ServerHandler, type H2Socket } from "../../src/h2/h2Connection.ts"
import { type H2ConnectionEnded, H2RequestRefused, type H2Stream } from "../../src/h2/h2Streams.ts"
import { grpcClient, methods, startEchoServer, startGrpcServer, unary } from "../helpers/h2ConnLegs.ts"
import { grpcMessage, identity } from "../support/grpcRaw.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

/** mulberry32: the same cases every run for a seed. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** A socket in the same process: what the connection writes is counted, what the test feeds is a read. */
class FakeSocket extends EventEmitter {
  written = 0
  destroyed = false
  writableLength = 0
  write(chunk: Buffer): boolean {
    this.written += chunk.length
    return true
  }
  cork(): void {}
  uncork(): void {}
  end(): this {
    return this
  }
  destroy(): this {
    this.destroyed = true
    return this
  }
}

/** Splits a capture into frames (after `skip` bytes of preface); a tail that is no whole frame stays one piece. */
const framesOf = (bytes: Buffer, skip: number): Array<Buffer> => {
  const out: Array<Buffer> = [bytes.subarray(0, skip)]
  let at = skip
  while (at + 9 <= bytes.length) {
    const end = Math.min(bytes.length, at + 9 + bytes.readUIntBE(at, 3))
    out.push(Buffer.from(bytes.subarray(at, end)))
    at = end
  }
  if (at < bytes.length) out.push(bytes.subarray(at))
  return out
}

const SPECIAL = [0, 1, 0x7f, 0x80, 0xff]

const mutate = (frames: ReadonlyArray<Buffer>, random: () => number): Buffer => {
  const pick = (n: number) => Math.floor(random() * n)
  const list = frames.map((f) => Buffer.from(f))
  const edits = 1 + pick(4)
  for (let e = 0; e < edits; e++) {
    const i = 1 + pick(list.length - 1)
    const f = list[i]!
    switch (pick(8)) {
      case 0: if (f.length > 3) f[3] = pick(12); break // type
      case 1: if (f.length > 4) f[4] = pick(256); break // flags
      case 2: if (f.length > 8) f.writeUInt32BE(pick(12), 5); break // stream id
      case 3: if (f.length > 2) f[pick(3)] = SPECIAL[pick(SPECIAL.length)]!; break // length
      case 4: if (f.length > 9) f[9 + pick(f.length - 9)] = pick(256); break // payload byte
      case 5: list.splice(i, 0, Buffer.from(f)); break // duplicate
      case 6: list.splice(i, 1); break // drop
      case 7: list.splice(pick(list.length), 0, list.splice(i, 1)[0]!); break // move
    }
  }
  const bytes = Buffer.concat(list)
  return random() < 0.2 ? bytes.subarray(0, pick(bytes.length + 1)) : bytes
}

/** Feeds `bytes` to the connection in random chunks; returns once done (no await: it must not throw). */
const feed = (socket: FakeSocket, bytes: Buffer, random: () => number): void => {
  let at = 0
  while (at < bytes.length) {
    const n = 1 + Math.floor(random() * Math.min(4096, bytes.length - at))
    socket.emit("data", Buffer.from(bytes.subarray(at, at + n)))
    at += n
  }
}

interface Tally { ends: Map<H2Stream, number>; opened: number; closed: number; reason: string }

const tallyEnd = (tally: Tally, stream: H2Stream): void => void tally.ends.set(stream, (tally.ends.get(stream) ?? 0) + 1)

/** The handler methods both roles' cases share: every end counted per stream, the connection's reason kept. */
const ends = (tally: Tally) => ({
  onReset: (stream: H2Stream) => tallyEnd(tally, stream),
  onEnd: (stream: H2Stream) => tallyEnd(tally, stream),
  onWritable: () => {},
  onClose: (ended: H2ConnectionEnded) => {
    tally.closed++
    tally.reason = ended.reason
  }
})

const serverCase = (bytes: Buffer, random: () => number): Tally => {
  const tally: Tally = { ends: new Map(), opened: 0, closed: 0, reason: "" }
  const socket = new FakeSocket()
  const handler: H2ServerHandler = {
    onRequest(stream, _fields, end) {
      tally.opened++
      connection.respond(stream, [":status", "200", "content-type", "application/grpc"], false)
      if (end) connection.trailers(stream, ["grpc-status", "0"])
    },
    onData(stream, chunk, end) {
      connection.consumed(stream, chunk.length)
      connection.write(stream, chunk, false)
      if (end) connection.trailers(stream, ["grpc-status", "0"])
    },
    onTrailers: (stream) => connection.trailers(stream, ["grpc-status", "0"]),
    ...ends(tally)
  }
  const connection = new H2Connection(socket as unknown as H2Socket, "server", handler, { maxConcurrentStreams: 32 })
  feed(socket, bytes, random)
  expect(connection.streamCount).toBeLessThanOrEqual(32)
  connection.destroy("case-over", 0)
  expect(connection.streamCount).toBe(0)
  expect(socket.written).toBeLessThan(8 << 20)
  return tally
}

const clientCase = (bytes: Buffer, random: () => number, requests: number): Tally => {
  const tally: Tally = { ends: new Map(), opened: 0, closed: 0, reason: "" }
  const socket = new FakeSocket()
  const handler: H2ClientHandler = {
    onResponse: () => {},
    onData: (stream, chunk) => connection.consumed(stream, chunk.length),
    onTrailers: () => {},
    ...ends(tally)
  }
  const connection = new H2Connection(socket as unknown as H2Socket, "client", handler)
  for (let i = 0; i < requests; i++) {
    const stream = connection.request([":method", "POST", ":scheme", "http", ":authority", "a", ":path", methods.Chat.path, "content-type", "application/grpc"], false)
    if (stream instanceof H2RequestRefused) throw new Error(stream.reason)
    tally.opened++
    connection.write(stream, grpcMessage(Buffer.from(`m${i}`)), true)
  }
  feed(socket, bytes, random)
  connection.destroy("case-over", 0)
  expect(connection.streamCount).toBe(0)
  expect(socket.written).toBeLessThan(8 << 20)
  return tally
}

/** What a grpc-js client sends our server role for a unary call with metadata, a bidi stream and a cancel. */
const captureClientBytes = async (): Promise<Buffer> => {
  const { port } = await startEchoServer(cleanup)
  const recorded: Array<Buffer> = []
  const proxy = net.createServer((inbound) => {
    const outbound = net.connect(port, "127.0.0.1")
    inbound.on("data", (c: Buffer) => recorded.push(Buffer.from(c)))
    inbound.pipe(outbound).pipe(inbound)
    inbound.on("error", () => outbound.destroy())
    outbound.on("error", () => inbound.destroy())
  })
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => proxy.close(() => resolve())))
  const client = grpcClient(cleanup, (proxy.address() as net.AddressInfo).port)
  const metadata = new grpc.Metadata()
  metadata.set("x-one", "uno")
  metadata.set("x-raw-bin", Buffer.from([1, 2, 3]))
  await unary(client, "Unary", Buffer.from("hello"), metadata)
  await new Promise<void>((resolve) => {
    const chat = client.makeBidiStreamRequest(methods.Chat.path, identity, identity, metadata, {})
    chat.on("data", () => {})
    chat.on("status", () => resolve())
    for (let i = 0; i < 5; i++) chat.write(Buffer.alloc(100 * i, i))
    chat.end()
  })
  const hung = client.makeUnaryRequest(methods.Hang.path, identity, identity, Buffer.from("x"), () => {})
  const before = recorded.length
  await untilTurn(() => recorded.length > before, "the hung call's bytes")
  hung.cancel()
  await untilTurn(() => recorded.length > before + 1, "the cancel's bytes")
  return Buffer.concat(recorded)
}

/** What a grpc-js server sends our client role for three bidi calls. */
const captureServerBytes = async (): Promise<Buffer> => {
  const port = await startGrpcServer(cleanup)
  const socket = net.connect(port, "127.0.0.1")
  await new Promise<void>((resolve) => socket.once("connect", resolve))
  const recorded: Array<Buffer> = []
  socket.on("data", (c: Buffer) => recorded.push(Buffer.from(c)))
  let done = 0
  const handler: H2ClientHandler = {
    onResponse: () => {},
    onData: (s, c) => connection.consumed(s, c.length),
    onTrailers: () => void done++,
    onReset: () => void done++,
    onEnd: () => void done++,
    onWritable: () => {},
    onClose: () => {}
  }
  const connection = new H2Connection(socket, "client", handler)
  cleanup.add(() => connection.destroy("test-over", 0))
  for (let i = 0; i < 3; i++) {
    const s = connection.request([":method", "POST", ":scheme", "http", ":authority", "a", ":path", methods.Chat.path, "content-type", "application/grpc", "te", "trailers"], false)
    if (s instanceof H2RequestRefused) throw new Error(s.reason)
    connection.write(s, grpcMessage(Buffer.alloc(50 * (i + 1), 0x41 + i)), true)
  }
  await untilTurn(() => done === 3, "three answers")
  return Buffer.concat(recorded)
}

const CASES = 600

describe("seeded fuzz of mutated captures", () => {
  it("server role: typed ends only, no throw, bounded", async () => {
    const capture = await captureClientBytes()
    const frames = framesOf(capture, 24)
    expect(frames.length).toBeGreaterThan(10)
    // The capture itself is served whole.
    const clean = serverCase(capture, prng(1))
    expect(clean.opened).toBe(3)
    const reasons = new Map<string, number>()
    for (let seed = 1; seed <= CASES; seed++) {
      const random = prng(seed)
      const tally = serverCase(mutate(frames, random), random)
      reasons.set(tally.reason, (reasons.get(tally.reason) ?? 0) + 1)
      for (const count of tally.ends.values()) expect(count, `seed ${seed}`).toBe(1)
      expect(tally.closed, `seed ${seed}`).toBe(1)
    }
    // The mutations reach many rules, and many cases survive to our own destroy.
    expect(reasons.size).toBeGreaterThan(6)
    expect(reasons.get("case-over")).toBeGreaterThan(CASES / 10)
  })

  it("client role: typed ends only, no throw, bounded", async () => {
    const capture = await captureServerBytes()
    const frames = framesOf(capture, 0)
    expect(frames.length).toBeGreaterThan(5)
    const clean = clientCase(capture, prng(1), 3)
    expect(clean.ends.size).toBe(0)
    const reasons = new Map<string, number>()
    for (let seed = 1; seed <= CASES; seed++) {
      const random = prng(seed)
      const tally = clientCase(mutate(frames, random), random, 3)
      reasons.set(tally.reason, (reasons.get(tally.reason) ?? 0) + 1)
      for (const count of tally.ends.values()) expect(count, `seed ${seed}`).toBe(1)
      expect(tally.closed, `seed ${seed}`).toBe(1)
    }
    // The mutations reach many rules, and many cases survive to our own destroy.
    expect(reasons.size).toBeGreaterThan(6)
    expect(reasons.get("case-over")).toBeGreaterThan(CASES / 10)
  })
})
