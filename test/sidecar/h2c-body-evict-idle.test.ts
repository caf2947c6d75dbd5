// Several h2c caller connections of one client together filling A's request-body budget
// (src/sidecar/h2BodyCredit.ts) with body streams they never send on. A connection holds at most a
// quarter of the budget, so four such connections filled it, and every new caller's request with a
// body was refused REFUSED_STREAM for as long as they stayed. Now a connection holding less than
// its fair part (the budget over the connections holding windows, it included) is admitted by
// resetting the body idle longest of the connection holding the most (RST_STREAM ENHANCE_YOUR_CALM:
// grpc-js's RESOURCE_EXHAUSTED); idle: its caller has sent nothing on it for 5 s though its window
// is open. A body that moves is never reset. Real peers: node:http2 callers, a grpc-js app (test/support/feedMesh.ts), two sidecars.
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { ECHO, startFeedMesh, WATCH } from "../support/feedMesh.ts"
import { grpcMessage } from "../support/grpcRaw.ts"
import { FrameType, h2Frame } from "../support/h2Raw.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, type RunningSidecar } from "../support/sidecarHarness.ts"

const KiB = 1024
/** Room for 16 first windows of 64 KiB; a connection's share: 4 of them. */
const BUDGET = 1024 * KiB
/** The hostile client's connections and the idle bodies each opens (twice what its share admits). */
const HOSTILE = 8
const IDLE = 8
const REFUSED_STREAM = 0x7
const ENHANCE_YOUR_CALM = 0xb
/** How long the honest caller may take, sending again each time it is refused (RFC 9113 8.7) after RETRY_MS. */
const WITHIN_MS = 10_000
const RETRY_MS = 100

/** A gRPC message of `size` bytes on the wire's framing. */
const message = (size: number): Buffer => grpcMessage(Buffer.alloc(size, 0x61))

describe("h2c callers' connections together filling A's request-body budget with idle bodies", () => {
  let cleanup: Cleanup
  let a: RunningSidecar
  /** Bidi calls B's app had cancelled by their callers. */
  let cancelled: number
  beforeEach(async () => {
    cleanup = new Cleanup()
    cancelled = 0
    a = await startFeedMesh(cleanup, BUDGET, () => {}, () => cancelled++)
  })
  afterEach(() => cleanup.run())

  const connect = (): http2.ClientHttp2Session => {
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    session.on("error", () => {})
    cleanup.add(() => session.destroy())
    return session
  }

  /** A bidi call on `session`: open until it is reset (its code) or the test ends. */
  const bidi = (session: http2.ClientHttp2Session) => {
    const stream = session.request({ ":method": "POST", ":path": WATCH.path, ":authority": "feed", "content-type": "application/grpc", te: "trailers" })
    const state = { reset: -1, closed: false }
    stream.on("error", () => {})
    stream.on("data", () => {})
    stream.on("close", () => {
      state.closed = true
      state.reset = stream.rstCode ?? -1
    })
    return { stream, state }
  }

  /** A unary upload of `size` bytes on a new connection, sent again RETRY_MS after each refusal: what it was told, and how many times it was refused. */
  const honestUpload = async (size: number) => {
    const session = connect()
    const started = performance.now()
    let refused = 0
    for (;;) {
      const stream = session.request({ ":method": "POST", ":path": ECHO.path, ":authority": "feed", "content-type": "application/grpc", te: "trailers" })
      const told = { status: 0, grpcStatus: "", bytes: 0, reset: -1 }
      stream.on("error", () => {})
      stream.on("response", (headers) => (told.status = Number(headers[":status"])))
      stream.on("trailers", (trailers) => (told.grpcStatus = String(trailers["grpc-status"])))
      stream.on("data", (chunk: Buffer) => (told.bytes += chunk.length))
      const closed = new Promise<void>((resolve) => stream.on("close", resolve))
      stream.end(message(size))
      await closed
      if (told.status !== 0 || stream.rstCode !== REFUSED_STREAM || performance.now() - started > WITHIN_MS) {
        told.reset = told.status === 0 ? (stream.rstCode ?? -1) : -1
        return { told, refused, elapsedMs: performance.now() - started }
      }
      refused++
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS))
    }
  }

  const granted = () => metric(a, /^iip_mesh_outbound_h2_body_window_bytes /)

  it(`${HOSTILE} connections of ${IDLE} idle bodies each and one of bodies that move: a new connection's upload is answered within ${WITHIN_MS} ms, idle bodies of the biggest holders reset ENHANCE_YOUR_CALM, the moving ones never; the windows stay within the budget`, { timeout: 60_000 }, async () => {
    // A caller whose 4 bidi calls each send a message every 50 ms: its share, all of it moving.
    const moving = connect()
    const movers = Array.from({ length: 4 }, () => bidi(moving))
    const ticker = setInterval(() => {
      for (const { stream, state } of movers) if (!state.closed) stream.write(message(100))
    }, 50)
    cleanup.add(() => clearInterval(ticker))
    expect((await readUntil(granted, (bytes) => bytes === 4 * 64 * KiB, 10_000)).value).toBe(4 * 64 * KiB)
    const hostile = Array.from({ length: HOSTILE }, () => {
      const session = connect()
      return Array.from({ length: IDLE }, () => bidi(session))
    })
    // The budget full: the mover's 4 windows and 12 of the hostile bodies'; the hostile rest refused.
    await waitFor(() => hostile.flat().filter(({ state }) => state.closed).length >= HOSTILE * IDLE - 12, 10_000, "the hostile bodies past the budget refused")
    expect(await granted()).toBe(BUDGET)
    for (const { state } of hostile.flat().filter(({ state }) => state.closed)) expect(state.reset).toBe(REFUSED_STREAM)

    const { told, refused, elapsedMs } = await honestUpload(256 * KiB)
    // Before: refused each time until WITHIN_MS.
    expect(told).toStrictEqual({ status: 200, grpcStatus: "0", bytes: 5 + 256 * KiB, reset: -1 })
    expect(elapsedMs).toBeLessThan(WITHIN_MS)
    // The idle bodies reset to make room, told so; the moving ones untouched.
    const reset = hostile.flat().filter(({ state }) => state.reset === ENHANCE_YOUR_CALM)
    expect(reset.length).toBeGreaterThanOrEqual(1)
    expect(movers.map(({ state }) => state.closed)).toStrictEqual([false, false, false, false])
    expect(await granted()).toBeLessThanOrEqual(BUDGET)
    expect(await metric(a, /^iip_mesh_outbound_h2_bodies_idle_reset_total /)).toBe(reset.length)
    // Their calls went on to B's app: each is cancelled there (none other is).
    await waitFor(() => cancelled >= reset.length, 5000, "B's app told of the reset calls")
    expect(cancelled).toBe(reset.length)
    console.log(`honest upload answered after ${Math.round(elapsedMs)} ms, refused ${refused} times; ${reset.length} idle bodies reset`)
  })

  it("an honest caller's bidi calls quiet for 5.5 s, connected before three connections of bodies never sent on: those go first", { timeout: 60_000 }, async () => {
    // Its 4 calls send a message at their start and 2 s on, then nothing until the newcomer came.
    const slow = connect()
    const quiet = Array.from({ length: 4 }, () => bidi(slow))
    const send = () => {
      for (const { stream, state } of quiet) if (!state.closed) stream.write(message(100))
    }
    send()
    expect((await readUntil(granted, (bytes) => bytes === 4 * 64 * KiB, 10_000)).value).toBe(4 * 64 * KiB)
    const hostile = Array.from({ length: 3 }, () => {
      const session = connect()
      return Array.from({ length: 4 }, () => bidi(session))
    })
    expect((await readUntil(granted, (bytes) => bytes === BUDGET, 10_000)).value).toBe(BUDGET)
    const sentAt = performance.now()
    await new Promise((resolve) => setTimeout(resolve, 2000))
    send()
    // Its calls idle 5.5 s when the newcomer comes, the hostile ones 7.5 s: both past BODY_IDLE_MS.
    await new Promise((resolve) => setTimeout(resolve, 7500 - (performance.now() - sentAt)))
    const { told } = await honestUpload(1024)
    expect(told.status).toBe(200)
    // By connection order (before), the honest caller's first call went (RESOURCE_EXHAUSTED to grpc-js).
    expect(quiet.map(({ state }) => state.reset)).toStrictEqual([-1, -1, -1, -1])
    expect(hostile.flat().filter(({ state }) => state.reset === ENHANCE_YOUR_CALM).length).toBe(1)
  })

  /**
   * A raw caller connection opening `bodies` bidi calls and sending on each DATA frames of padding
   * only (PADDED, 255 bytes: 256 of its window each), past half its window, then nothing: the
   * RST_STREAM codes it was sent, by stream. src/h2 gives padding back with the next data consumed.
   */
  const paddedCaller = async (bodies: number) => {
    const socket = net.connect(a.outboundPort, LOOPBACK)
    socket.on("error", () => {})
    cleanup.add(() => socket.destroy())
    const resets = new Map<number, number>()
    let pending = Buffer.alloc(0)
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk])
      while (pending.length >= 9 && pending.length >= 9 + pending.readUIntBE(0, 3)) {
        const [type, flags] = [pending[3], pending[4]! & 1]
        // Acknowledged, or A ends the connection (its SETTINGS) or takes the caller for gone (its PINGs).
        if (type === FrameType.settings && flags === 0) socket.write(h2Frame(FrameType.settings, 1, 0))
        if (type === FrameType.ping && flags === 0) socket.write(h2Frame(FrameType.ping, 1, 0, pending.subarray(9, 17)))
        if (type === FrameType.rstStream) resets.set(pending.readUInt32BE(5), pending.readUInt32BE(9))
        pending = pending.subarray(9 + pending.readUIntBE(0, 3))
      }
    })
    await new Promise((resolve) => socket.once("connect", resolve))
    // HPACK, no table: :method POST, :scheme http (static), :path, :authority, content-type and te literal.
    const string = (value: string) => Buffer.concat([Buffer.from([value.length]), Buffer.from(value)])
    const head = Buffer.concat([Buffer.from([0x83, 0x86, 0x04]), string(WATCH.path), Buffer.from([0x01]), string("feed"), Buffer.from([0x0f, 0x10]), string("application/grpc"), Buffer.from([0x00]), string("te"), string("trailers")])
    const padding = Buffer.concat([Buffer.from([255]), Buffer.alloc(255)])
    const frames = [Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2Frame(FrameType.settings, 0, 0)]
    for (let id = 1; id < 2 * bodies; id += 2) {
      frames.push(h2Frame(FrameType.headers, 4, id, head))
      for (let sent = 0; sent <= 32 * KiB; sent += padding.length) frames.push(h2Frame(FrameType.data, 0x8, id, padding))
    }
    socket.write(Buffer.concat(frames))
    return resets
  }

  it(`bodies sent half a window of padding and nothing more are idle too: a new connection's upload is answered within ${WITHIN_MS} ms`, { timeout: 60_000 }, async () => {
    // Four connections' shares: the budget, each body's window under half open (was: never idle).
    const callers = await Promise.all(Array.from({ length: 4 }, () => paddedCaller(4)))
    expect((await readUntil(granted, (bytes) => bytes === BUDGET, 10_000)).value).toBe(BUDGET)
    const { told, elapsedMs } = await honestUpload(1024)
    expect(told).toStrictEqual({ status: 200, grpcStatus: "0", bytes: 5 + 1024, reset: -1 })
    expect(elapsedMs).toBeLessThan(WITHIN_MS)
    const codes = callers.flatMap((resets) => [...resets.values()])
    expect(codes.length).toBeGreaterThanOrEqual(1)
    expect(new Set(codes)).toStrictEqual(new Set([ENHANCE_YOUR_CALM]))
    expect(await metric(a, /^iip_mesh_outbound_h2_bodies_idle_reset_total /)).toBe(codes.length)
  })
})
