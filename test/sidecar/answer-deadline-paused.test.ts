// A streamed answer whose deadline passes while its caller at A is paused (reads nothing): B's
// deadline error waited behind the answer's queued bytes for a window A's paused caller never
// opened, and once an answer failed (that error, a take-back, A's connection lost), A's pipe to the
// caller sat in the caller's drain wait with its unread bytes until the answer idle timeout (60 s).
// The failure must free them at once, and the caller learn it as a failed answer: its HTTP/1.1
// connection closed, its h2c stream reset.
import * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { scrapeMetrics, unlabelledValue } from "../support/adminMetrics.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { paceAnswer } from "../support/paceAnswer.ts"
import { LOOPBACK, sidecarConfig, startAdmin, startApp, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const ANSWER = 8 * MiB
const chunk = Buffer.alloc(64 * 1024, 0x61)

/** The outbound requests A counted as failed at B's deadline (504, the inbound hop's deadline_exceeded). */
const deadlineFailures = async (admin: string): Promise<number> =>
  (await scrapeMetrics(admin)).split("\n")
    .filter((l) => l.startsWith("iip_mesh_request_errors_total{") && l.includes('direction="outbound"') && l.includes('code="504"'))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0)

const waitFor = async (what: string, ok: () => Promise<boolean> | boolean, withinMs: number): Promise<void> => {
  const deadline = performance.now() + withinMs
  while (!(await ok())) {
    if (performance.now() > deadline) throw new Error(`not within ${withinMs} ms: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** A raw HTTP/1.1 call at A with a short deadline that reads `readFirst` bytes, then pauses. */
const pausedCaller = (port: number, cleanup: Cleanup, readFirst: number, timeoutMs: number): Promise<{ socket: net.Socket; closed: () => boolean }> =>
  new Promise((resolve) => {
    const socket = net.connect(port, LOOPBACK)
    socket.on("error", () => {})
    cleanup.add(() => socket.destroy())
    let closed = false
    socket.on("close", () => (closed = true))
    let read = 0
    const onData = (data: Buffer) => {
      read += data.length
      if (read < readFirst) return
      socket.off("data", onData)
      socket.pause()
      resolve({ socket, closed: () => closed })
    }
    socket.on("data", onData)
    socket.write(`GET /big HTTP/1.1\r\nhost: feed\r\niip-timeout: ${timeoutMs}\r\n\r\n`)
  })

describe("a streamed answer failed under a paused caller", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("frees its held bytes at once; the HTTP/1.1 caller's connection is closed, the h2c stream reset", { timeout: 90_000 }, async () => {
    const open = new Set<http.ServerResponse>()
    const server = await startApp(cleanup, (_req, res) => {
      open.add(res)
      res.on("close", () => open.delete(res))
      paceAnswer(res, ANSWER, chunk)
    })
    cleanup.add(() => open.forEach((res) => res.destroy()))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "feed", app: server.address, requestTimeoutMs: 30_000 }))
    // The answer idle timeout far off: what frees the bytes within the test must be the failure.
    const a = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { feed: [{ address: b.inboundAddress, weight: 1 }] }, requestTimeoutMs: 30_000, answerIdleTimeoutMs: 120_000 }))
    const admin = await startAdmin(cleanup, a)
    // Long enough for all six to start and pause first on a loaded machine (5 s was not at a load of 13).
    const DEADLINE_MS = 15_000
    const started = performance.now()
    const callers = await Promise.all(Array.from({ length: 4 }, () => pausedCaller(a.outboundPort, cleanup, 100 * 1024, DEADLINE_MS)))
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    session.on("error", () => {})
    cleanup.add(() => session.destroy())
    const streams = await Promise.all(Array.from({ length: 2 }, () => {
      const stream = session.request({ ":path": "/big", ":authority": "feed", "iip-timeout": String(DEADLINE_MS) })
      stream.on("error", () => {})
      let read = 0
      return new Promise<{ stream: http2.ClientHttp2Stream; closed: () => boolean }>((resolve) => {
        let closed = false
        stream.on("close", () => (closed = true))
        const onData = (data: Buffer) => {
          read += data.length
          if (read < 100 * 1024) return
          stream.off("data", onData)
          stream.pause()
          resolve({ stream, closed: () => closed })
        }
        stream.on("data", onData)
      })
    }))
    // Paused before their deadline, with answer bytes held at A for them.
    expect(performance.now() - started).toBeLessThan(DEADLINE_MS)
    await waitFor("answer bytes held for the paused callers", async () => (await unlabelledValue(admin, "iip_mesh_outbound_answer_held_bytes")) > 0, 10_000)
    // Past the deadline (and well before the 120 s idle timeout): all freed, every caller told.
    await waitFor("the held bytes back to 0", async () => (await unlabelledValue(admin, "iip_mesh_outbound_answer_held_bytes")) === 0, DEADLINE_MS + 10_000 - (performance.now() - started))
    await waitFor("the answers' windows back to 0", async () => (await unlabelledValue(admin, "iip_mesh_outbound_answer_window_bytes")) === 0, 10_000)
    // Every request ended as the deadline's failure at A (the answer no longer waits for its caller to read).
    await waitFor("6 requests failed 504", async () => (await deadlineFailures(admin)) === 6, 10_000)
    await waitFor("the h2c streams reset", () => streams.every((s) => s.closed()), 10_000)
    for (const { stream } of streams) expect(stream.rstCode).not.toBe(http2.constants.NGHTTP2_NO_ERROR)
    // A paused socket reads nothing, its reset included: read on, each finds its connection cut short of the answer.
    for (const { socket } of callers) socket.resume()
    await waitFor("the HTTP/1.1 callers' connections closed", () => callers.every((c) => c.closed()), 10_000)
    for (const { socket } of callers) expect(socket.bytesRead).toBeLessThan(ANSWER)
    expect(session.closed).toBe(false)
  })
})
