// A gRPC call whose deadline passes while its caller at A reads nothing of a streamed answer: the
// mesh's failure is grpc-status trailers, and HTTP/2 sends trailers only after the stream's queued
// DATA, which waits for a window the paused caller never opens. Before: the caller learnt nothing
// until A's answer idle timeout (60 s by default) swept the stream as answer_stalled, A holding the
// stream and its queued bytes (32-64 KiB here) that long. Now A resets the stream (RST_STREAM
// CANCEL) once the queue stays still for 2 s, and drops it; while the queue moves
// (a caller that reads on) the trailers wait for it, as before. Real peers: a grpc-js client and a
// node:http2 one, a grpc-js far app that streams as fast as it may.
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { grpcMessage, identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const METHODS = { flood: rawMethod("demo.Feed", "Flood", false, true), echo: rawMethod("demo.Feed", "Echo", false, false) }
const FeedClient = grpc.makeGenericClientConstructor(METHODS, "Feed")
const MESSAGE = Buffer.alloc(16 * 1024, 0x61)

/** The far app: Flood writes 16 KiB messages as fast as its stream takes them until the call ends; each call's cancellation counted. */
const startFarApp = async (cleanup: Cleanup) => {
  const far = { cancelled: 0 }
  const server = new grpc.Server()
  server.addService(METHODS, {
    flood: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      let over = false
      call.on("cancelled", () => {
        over = true
        far.cancelled++
      })
      const pump = (): void => {
        while (!over && call.write(MESSAGE));
        if (!over) call.once("drain", pump)
      }
      pump()
    },
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request)
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
  cleanup.add(() => server.forceShutdown())
  return { far, port }
}

/** Polls `ok` (a metric read) every 50 ms until it holds, within `withinMs`. */
const waitFor = async (ok: () => Promise<boolean> | boolean, withinMs: number, what: string): Promise<void> => {
  const deadline = performance.now() + withinMs
  while (!(await ok())) {
    if (performance.now() > deadline) throw new Error(`not within ${withinMs} ms: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

const heldAtA = (a: RunningSidecar) => metric(a, /^iip_mesh_outbound_held_answer_bytes /)
const deadlinesAtA = (a: RunningSidecar) => metric(a, /^iip_mesh_request_errors_total\{direction="outbound",service="feed",code="504",hop="inbound",reason="deadline"\}/)
const stalledAtA = (a: RunningSidecar) => metric(a, /^iip_mesh_h2_streams_reset_total\{reason="answer_stalled"\}/)

describe("a gRPC call's deadline under a caller that reads nothing of its streamed answer", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** B before the far app, A before B (answer idle timeout far off: what ends the call within the test must be the deadline). */
  const mesh = async () => {
    const { far, port } = await startFarApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "feed", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, answerIdleTimeoutMs: 120_000, endpoints: { feed: [{ address: b.inboundAddress, weight: 1 }] } }))
    return { far, a, b }
  }

  /** A grpc-js client of A, its path warm (its channel, A to B, B to the app): a deadline's second is the answer's. */
  const warmClient = async (a: RunningSidecar): Promise<grpc.Client> => {
    const client = new FeedClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "feed" })
    cleanup.add(() => client.close())
    const echoed = new Promise<void>((resolve, reject) => client.makeUnaryRequest(METHODS.echo.path, identity, identity, Buffer.from("warm"), (error) => (error === null ? resolve() : reject(error))))
    await withTimeout(echoed, 10_000, "the warm-up call")
    return client
  }

  /** A Flood call with `iip-timeout` (the mesh's deadline; none: grpc-js's own alone) and grpc-js's `deadlineMs`: the call, and its status with when it came. */
  const flood = (client: grpc.Client, iipTimeout: string | undefined, deadlineMs: number) => {
    const metadata = new grpc.Metadata()
    if (iipTimeout !== undefined) metadata.set("iip-timeout", iipTimeout)
    const started = performance.now()
    const call = client.makeServerStreamRequest(METHODS.flood.path, identity, identity, Buffer.from("go"), metadata, { deadline: Date.now() + deadlineMs })
    const status = new Promise<{ code: number; details: string; ms: number }>((resolve) => {
      call.on("error", () => {})
      call.on("status", (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details, ms: performance.now() - started }))
    })
    return { call, started, status: withTimeout(status, 20_000, "the caller's status") }
  }

  it("a grpc-js caller whose mesh deadline (iip-timeout 5000) is shorter than its own learns at it: its stream reset CANCEL once its queued answer stays still, A holding nothing, counted as the deadline", { timeout: 30_000 }, async () => {
    const { far, a } = await mesh()
    // grpc-js's own deadline far off: only the mesh's can end the call within the test.
    const { call, status, started } = flood(await warmClient(a), "5000", 60_000)
    // Its first message read, then none: grpc-js reads on into its call's buffer (16 messages), then
    // pauses its HTTP/2 stream, and node's http2 grants no more window. (A call paused before any
    // read is not one: grpc-js then keeps reading the stream into a buffer of its own, without bound.)
    call.once("data", () => call.pause())
    // Paused before the deadline: A holds the same bytes for it twice 300 ms apart (on a loaded
    // machine grpc-js may still be filling its buffer at 1 s, and a queue that moves gets its trailers).
    let last = -1
    await waitFor(async () => {
      const held = await heldAtA(a)
      const still = held > 0 && held === last
      last = held
      if (!still) await new Promise((resolve) => setTimeout(resolve, 300))
      return still
    }, 10_000, "A to hold the same answer bytes for the paused caller")
    expect(performance.now() - started).toBeLessThan(5000)
    // Before: no status within 20 s (A held the stream, its trailers behind ~64 KiB of queued DATA, until its 120 s answer idle timeout).
    const ended = await status
    // CANCELLED: what grpc-js reads a RST_STREAM CANCEL as before its own deadline (gRPC's HTTP/2 mapping).
    expect(ended.code).toBe(grpc.status.CANCELLED)
    // The deadline (5 s), then the queue found still at two looks 2 s apart (at most 4 s).
    expect(ended.ms).toBeLessThan(15_000)
    await waitFor(async () => (await heldAtA(a)) === 0, 5_000, "A to free the bytes it held")
    await waitFor(() => far.cancelled === 1, 5_000, "the far app to see the call cancelled")
    expect(await deadlinesAtA(a)).toBe(1)
    expect(await stalledAtA(a)).toBe(0)
  })

  it("a grpc-js caller that reads on gets the mesh's DEADLINE_EXCEEDED with its message (its trailers wait behind the queued answer while that moves)", { timeout: 30_000 }, async () => {
    const { far, a } = await mesh()
    const { call, status } = flood(await warmClient(a), "1000", 60_000)
    let read = 0
    call.on("data", (message: Buffer) => (read += message.length))
    const ended = await status
    // B's message (the deadline B was given: what A had left of 1000 ms).
    expect(ended.code).toBe(grpc.status.DEADLINE_EXCEEDED)
    expect(ended.details).toMatch(/^the call's deadline of \d+ ms passed while the app's answer streamed$/)
    expect(ended.ms).toBeLessThan(10_000)
    expect(read).toBeGreaterThan(0)
    await waitFor(() => far.cancelled === 1, 5_000, "the far app to see the call cancelled")
    expect(await deadlinesAtA(a)).toBe(1)
  })

  it("a grpc-js caller that reads on slowly (a message per 300 ms, A's queue still ~1.2 s at a time) gets the mesh's DEADLINE_EXCEEDED, not a reset", { timeout: 30_000 }, async () => {
    const { far, a } = await mesh()
    const { call, status } = flood(await warmClient(a), "1000", 60_000)
    let read = 0
    // The caller's pace, not a wait for anything: each message read, the next one 300 ms later.
    call.on("data", () => {
      read++
      call.pause()
      const next = setTimeout(() => call.resume(), 300)
      cleanup.add(() => clearTimeout(next))
    })
    const ended = await status
    // A reset (the stream's queue judged still) reads as CANCELLED.
    expect({ code: ended.code, details: ended.details }).toStrictEqual({ code: grpc.status.DEADLINE_EXCEEDED, details: expect.stringMatching(/^the call's deadline of \d+ ms passed while the app's answer streamed$/) })
    expect(read).toBeGreaterThan(1)
    await waitFor(async () => (await heldAtA(a)) === 0, 5_000, "A to free the bytes it held")
    await waitFor(() => far.cancelled === 1, 5_000, "the far app to see the call cancelled")
    expect(await deadlinesAtA(a)).toBe(1)
  })

  it("a grpc-js caller's own deadline (1 s) ends it with DEADLINE_EXCEEDED, the far app's call cancelled, A holding nothing", { timeout: 30_000 }, async () => {
    const { far, a } = await mesh()
    const { call, status } = flood(await warmClient(a), undefined, 1000)
    call.once("data", () => call.pause())
    const ended = await status
    expect(ended.code).toBe(grpc.status.DEADLINE_EXCEEDED)
    expect(ended.ms).toBeLessThan(10_000)
    await waitFor(async () => (await heldAtA(a)) === 0, 5_000, "A to free the bytes it held")
    await waitFor(() => far.cancelled === 1, 5_000, "the far app to see the call cancelled")
    expect(await stalledAtA(a)).toBe(0)
  })

  it("a node:http2 caller that never opens its stream window (grpc-timeout 1000m) gets its stream reset CANCEL at the deadline, A holding nothing", { timeout: 30_000 }, async () => {
    const { far, a } = await mesh()
    // Its streams' windows 0: the answer's head comes, none of its DATA can.
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`, { settings: { initialWindowSize: 0 } })
    session.on("error", () => {})
    cleanup.add(() => session.destroy())
    const started = performance.now()
    const stream = session.request({ ":method": "POST", ":path": METHODS.flood.path, ":authority": "feed", "content-type": "application/grpc", te: "trailers", "grpc-timeout": "1000m" })
    stream.on("error", () => {})
    const trailers: Array<http2.IncomingHttpHeaders> = []
    stream.on("trailers", (t) => trailers.push(t))
    const closed = new Promise<{ rstCode: number; ms: number }>((resolve) => stream.on("close", () => resolve({ rstCode: stream.rstCode, ms: performance.now() - started })))
    stream.end(grpcMessage(Buffer.from("go")))
    await waitFor(async () => (await heldAtA(a)) > 0, 10_000, "A to hold answer bytes for the closed window")
    // Before: not closed within 20 s (its trailers queued behind the DATA).
    const ended = await withTimeout(closed, 20_000, "the caller's stream to close")
    expect({ rstCode: ended.rstCode, trailers }).toStrictEqual({ rstCode: http2.constants.NGHTTP2_CANCEL, trailers: [] })
    expect(ended.ms).toBeLessThan(10_000)
    await waitFor(async () => (await heldAtA(a)) === 0, 5_000, "A to free the bytes it held")
    await waitFor(() => far.cancelled === 1, 5_000, "the far app to see the call cancelled")
    expect(await deadlinesAtA(a)).toBe(1)
    expect(session.closed).toBe(false)
  })
})
