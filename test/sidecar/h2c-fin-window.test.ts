// An h2c caller's FIN (its socket half-closed) and the answers that come after it (outboundH2.ts):
// HTTP/2 half-closes streams, never the connection, so the caller may still read; but it can never
// send a WINDOW_UPDATE again. An answer that comes after the FIN and meets a spent window can never
// go: it was kept, its bytes held and its far request in flight at A and B, until the answer idle
// sweep (60 s by default). Now it is released within a second. An answer that waits only for the
// caller's socket (a slow reader, its window open) is not cut: it goes whole once read.
// Real peers: node:http apps behind the mesh, node:http2 as the caller (over its own socket, which
// the test half-closes), a TCP relay the test pauses as the slow reader.
import * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { Cleanup, readUntil, waitFor, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, startMesh } from "../support/sidecarHarness.ts"

const KiB = 1024
const STREAMS = 8
const MAX_WINDOW = 2 ** 31 - 1

/** An app that answers each request only when the test says: `release(size)` answers them all with `size` bytes. */
const heldApp = () => {
  const held: Array<http.ServerResponse> = []
  const handler: http.RequestListener = (_req, res) => void held.push(res)
  const release = (size: number) => {
    for (const res of held.splice(0)) {
      res.writeHead(200, { "content-length": String(size) })
      res.end(Buffer.alloc(size, 97))
    }
  }
  return { handler, held, release }
}

/** A node:http2 caller over a socket of its own (half-closed by the test: node's session never ends it). */
const caller = (cleanup: Cleanup, port: number, settings: http2.Settings) => {
  const socket = net.connect({ port, host: LOOPBACK, allowHalfOpen: true })
  const session = http2.connect(`http://${LOOPBACK}:${port}`, { createConnection: () => socket, settings })
  cleanup.add(() => {
    session.destroy()
    socket.destroy()
  })
  session.on("error", () => {})
  return { socket, session }
}

const inFlight = (sidecar: Parameters<typeof metric>[0], direction: "outbound" | "inbound") =>
  metric(sidecar, new RegExp(`^iip_mesh_requests_in_flight\\{direction="${direction}"`))

describe("answers that come after an h2c caller's FIN", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`${STREAMS} answers meeting a spent window after the FIN are released within a second or so: held bytes and in-flight gauges back to 0`, async () => {
    const app = heldApp()
    const { a, b } = await startMesh(cleanup, app.handler)
    const { socket, session } = caller(cleanup, a.outboundPort, { initialWindowSize: 0 })
    const closed: Array<Promise<void>> = []
    for (let i = 0; i < STREAMS; i++) {
      const stream = session.request({ ":path": `/big${i}`, ":authority": "catalog" })
      stream.on("error", () => {})
      closed.push(new Promise((resolve) => stream.once("close", () => resolve())))
    }
    await waitFor(() => app.held.length === STREAMS, 5_000, "the app to hold every request")
    expect(await inFlight(a, "outbound")).toBe(STREAMS)
    // The FIN: A keeps the streams (whole requests, answers still to come).
    await new Promise<void>((resolve) => socket.end(resolve))
    app.release(256 * KiB)
    // Before: the gauges stayed at 8 until the answer idle sweep (60 s).
    expect((await readUntil(() => inFlight(a, "outbound"), (n) => n === 0, 5_000)).value).toBe(0)
    expect((await readUntil(() => metric(a, /^iip_mesh_outbound_held_answer_bytes /), (bytes) => bytes === 0, 5_000)).value).toBe(0)
    expect((await readUntil(() => inFlight(b, "inbound"), (n) => n === 0, 5_000)).value).toBe(0)
    // Each was reset to the caller, which reads still (half-closed).
    await withTimeout(Promise.all(closed), 5_000, "the caller's streams to close")
  }, 30_000)

  it("an answer after the FIN that waits only for a slow reader's socket (its window open) goes whole", async () => {
    // A's graceful close after the FIN gives its answers 5 s (closeTimeoutMs), then cuts them (CANCEL):
    // with 16 MiB and a 1.5 s pause the whole took 2.1-3.2 s at load 12 and once 6.9 s (a CI flake,
    // rstCode 8); 8 MiB (still past what A's socket and the relay's buffer) and 1 s: 1.5-2.5 s.
    const ANSWER = 8 * 1024 * KiB
    const app = heldApp()
    const { a } = await startMesh(cleanup, app.handler)
    // A relay between the caller and A whose reading from A the test pauses: A's socket fills.
    let toCaller: net.Socket | undefined
    let fromA: net.Socket | undefined
    const relay = net.createServer({ allowHalfOpen: true }, (down) => {
      const up = net.connect({ port: a.outboundPort, host: LOOPBACK, allowHalfOpen: true })
      toCaller = down
      fromA = up
      down.pipe(up)
      up.pipe(down)
      down.on("error", () => {})
      up.on("error", () => {})
      cleanup.add(() => {
        down.destroy()
        up.destroy()
      })
    })
    await new Promise<void>((resolve) => relay.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => relay.close(() => resolve())))
    const { socket, session } = caller(cleanup, (relay.address() as net.AddressInfo).port, { initialWindowSize: MAX_WINDOW })
    // Every window the answer needs is granted before the FIN (no WINDOW_UPDATE can follow it).
    await new Promise<void>((resolve) => session.once("connect", () => resolve()))
    session.setLocalWindowSize(MAX_WINDOW)
    const stream = session.request({ ":path": "/whole", ":authority": "catalog" })
    let received = 0
    stream.on("data", (chunk: Buffer) => (received += chunk.length))
    const ended = new Promise<number>((resolve, reject) => {
      stream.once("end", () => resolve(stream.rstCode ?? 0))
      stream.once("error", reject)
    })
    await waitFor(() => app.held.length === 1, 5_000, "the app to hold the request")
    await new Promise<void>((resolve) => socket.end(resolve))
    // The slow reader: nothing read from A while the answer comes and for 1 s (several of A's looks) after.
    fromA!.unpipe(toCaller!)
    fromA!.pause()
    app.release(ANSWER)
    await readUntil(() => metric(a, /^iip_mesh_outbound_held_answer_bytes /), (bytes) => bytes > 0, 5_000)
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    // Held up by the reader, not sent already: part of it still waits in A's stream.
    expect(received).toBeLessThan(ANSWER)
    expect(await metric(a, /^iip_mesh_outbound_held_answer_bytes /)).toBeGreaterThan(0)
    fromA!.pipe(toCaller!)
    expect(await withTimeout(ended, 10_000, "the whole answer")).toBe(0)
    expect(received).toBe(ANSWER)
  }, 30_000)
})
