// A caller that asks for a large answer and never reads it (a reverse slowloris), through app <-
// sidecar B <- sidecar A. Memory stays bounded by back-pressure; the time must be too: each such
// answer held one of B's app pool sockets for as long as the caller liked, so a few stalled
// callers left every other caller of the service waiting for a socket. B gives up an answer the
// mesh takes nothing of for the answer idle timeout: the app's socket goes back, the stalled caller's
// connection is cut.
import type * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import type { AddressInfo } from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { call, LOOPBACK, sidecarConfig, startMesh, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024

/** /big: `size` bytes as fast as the socket takes them (`onClose` when its response closes); anything else: "small". */
const bigAnswers = (size: number, onClose: () => void): http.RequestListener => (req, res) => {
  if (req.url !== "/big") return res.end("small")
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(size) })
  const chunk = Buffer.alloc(64 * 1024)
  let written = 0
  const pump = () => {
    while (written < size && !res.destroyed) {
      written += chunk.length
      if (!res.write(chunk)) return void res.once("drain", pump)
    }
    res.end()
  }
  res.on("close", onClose)
  pump()
}

describe("a caller that never reads its answer", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("gives up the stalled answer after the answer idle timeout: the app's socket is released and the next caller is answered", async () => {
    let bigClosed: () => void = () => {}
    const bigGone = new Promise<void>((resolve) => (bigClosed = resolve))
    const { a } = await startMesh(cleanup, bigAnswers(256 * MiB, () => bigClosed()), { b: { appPoolSize: 1, answerIdleTimeoutMs: 300 } })
    // The stalled caller: asks, then reads nothing.
    const stalled = net.connect(a.outboundPort, "127.0.0.1")
    cleanup.add(() => stalled.destroy())
    stalled.on("error", () => {})
    stalled.pause()
    const cut = new Promise<void>((resolve) => stalled.once("close", () => resolve()))
    stalled.write("GET /big HTTP/1.1\r\nhost: catalog\r\n\r\n")
    await withTimeout(bigGone, 5000, "B to let go of the app's socket")
    const next = await call(a.outboundPort, { path: "/small", timeoutMs: 3000 })
    expect(next.status).toBe(200)
    expect(next.body.toString()).toBe("small")
    // The stalled caller's connection is cut (its answer can never be whole); reading drains it to the close.
    stalled.resume()
    await withTimeout(cut, 5000, "the stalled caller's connection to close")
  })

  it("a slow reader that pauses for less than the answer idle timeout gets its whole answer", async () => {
    const { a } = await startMesh(cleanup, bigAnswers(4 * MiB, () => {}), { b: { answerIdleTimeoutMs: 300 } })
    const socket = net.connect(a.outboundPort, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    let received = 0
    let nextPause = MiB
    const done = new Promise<number>((resolve, reject) => {
      socket.on("data", (chunk: Buffer) => {
        received += chunk.length
        // Every MiB or so, 150 ms without reading.
        if (received < nextPause) return
        nextPause += MiB
        socket.pause()
        setTimeout(() => socket.resume(), 150)
      })
      socket.on("end", () => resolve(received))
      socket.on("error", reject)
    })
    socket.write("GET /big HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n")
    const total = await withTimeout(done, 5000, "the whole answer")
    // The head, then 4 MiB of body.
    expect(total).toBeGreaterThan(4 * MiB)
    expect(total).toBeLessThan(4 * MiB + 1024)
  })

  it("to an h2c app (plain HTTP, no deadline once it streams): the app's stream is reset after the answer idle timeout", async () => {
    const app = http2.createServer()
    let reset: () => void = () => {}
    const appStreamGone = new Promise<void>((resolve) => (reset = resolve))
    app.on("stream", (stream) => {
      stream.on("error", () => {})
      stream.on("close", () => reset())
      stream.respond({ ":status": 200, "content-type": "application/octet-stream" })
      const chunk = Buffer.alloc(64 * 1024)
      let written = 0
      const pump = () => {
        while (written < 256 * MiB && !stream.destroyed) {
          written += chunk.length
          if (!stream.write(chunk)) return void stream.once("drain", pump)
        }
        stream.end()
      }
      pump()
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const appPort = (app.address() as AddressInfo).port
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c", answerIdleTimeoutMs: 300 }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const stalled = net.connect(a.outboundPort, "127.0.0.1")
    cleanup.add(() => stalled.destroy())
    stalled.on("error", () => {})
    stalled.pause()
    stalled.write("GET /big HTTP/1.1\r\nhost: catalog\r\n\r\n")
    await withTimeout(appStreamGone, 5000, "B to reset the app's stream")
  })
})
