// A caller's deadline bounds the whole request to an HTTP/1.1 app or an h2c one, its streamed
// answer included (README: a long download is bounded by its deadline). The mesh session at B
// enforces the caller's deadline only until the answer settles as a stream; before, nothing did
// after that: an app that sent its head and some of its body, then stopped, held the caller until
// an idle timeout (A's 60 s), while a request without a deadline ended at B's default one. The
// h2c leg kept a non-gRPC request's deadline for its answer's head only, so the same held there.
import * as http from "node:http"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { requestMeta } from "../../src/sidecar/httpEnvelope.ts"
import { metric } from "../support/eventStreamApp.ts"
import { listenH2App } from "../support/h2AppListen.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startClient, streamEndError } from "../support/meshTest.ts"
import { call, LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** A plain HTTP/1.1 call to A's outbound port with `iip-timeout: 300`: how its answer ended, what of it came, and when. */
const downloadWithDeadline = (port: number, started: number) =>
  new Promise<{ status: number; read: number; how: string; ms: number }>((resolve, reject) => {
    const req = http.request({ host: LOOPBACK, port, path: "/download", headers: { host: "catalog", "iip-timeout": "300" }, agent: false })
    const timer = setTimeout(() => {
      req.destroy()
      reject(new Error("the caller's request did not end within 10 s"))
    }, 10_000)
    req.on("response", (res) => {
      let read = 0
      res.on("data", (chunk: Buffer) => (read += chunk.length))
      const end = (how: string) => {
        clearTimeout(timer)
        resolve({ status: res.statusCode ?? 0, read, how, ms: performance.now() - started })
      }
      res.on("end", () => end("whole"))
      res.on("error", () => end("cut"))
    })
    // The cut reaches the request too (ECONNRESET): the response's end says it.
    req.on("error", () => undefined)
    req.end()
  })

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

describe("a caller's deadline once its answer streams from an HTTP/1.1 app", () => {
  it("an answer that streams then stops ends at the caller's deadline (iip-timeout 300): cut, counted as a deadline at B and A, the app's request aborted", { timeout: 20_000 }, async () => {
    const app = { closed: 0, sockets: new Set<net.Socket>() }
    // Its head and 128 KiB (past what B gathers whole: it streams), then nothing, never its end.
    const server = http.createServer((req, res) => {
      if (req.url === "/warm") return res.end("ok")
      req.socket.once("close", () => app.closed++)
      res.writeHead(200, { "content-type": "application/octet-stream" })
      res.write(Buffer.alloc(128 * 1024, 0x61))
    })
    server.on("connection", (socket) => app.sockets.add(socket))
    await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => {
      for (const socket of app.sockets) socket.destroy()
      server.close(() => resolve())
    }))
    const port = (server.address() as net.AddressInfo).port
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${port}`, tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    // A's connection to B and B's to the app first, so the deadline's 300 ms are the answer's (cold,
    // on a loaded machine, the dials took them: 504 before the head, 1 run in 10).
    expect((await call(a.outboundPort, { path: "/warm" })).status).toBe(200)
    // Before: no end within 10 s (A's answer idle timeout, 60 s, would have cut it).
    const ended = await downloadWithDeadline(a.outboundPort, performance.now())
    // Its head and some of its body came, then the answer was cut (an HTTP/1.1 caller cannot be told more once its head went).
    expect({ status: ended.status, how: ended.how, some: ended.read > 0 }).toEqual({ status: 200, how: "cut", some: true })
    // At its deadline (300 ms), with room for a loaded machine.
    expect(ended.ms).toBeLessThan(5_000)
    await waitFor(() => app.closed === 1, 5_000, "B to close the download's socket (its request aborted)")
    expect(await metric(b, /^iip_mesh_request_errors_total\{.*direction="inbound".*reason="deadline_exceeded"/)).toBe(1)
    // And at A as the far side's deadline.
    expect(await metric(a, /^iip_mesh_request_errors_total\{direction="outbound",service="catalog",code="504",hop="inbound",reason="deadline"\}/)).toBe(1)
  })
})

describe("a caller's deadline once its answer streams from an h2c app", () => {
  it("an answer that streams then stops ends at the caller's deadline (iip-timeout 300): cut, counted as a deadline at B and A, the app's stream reset CANCEL", { timeout: 20_000 }, async () => {
    const resets: Array<number> = []
    // Its head and 128 KiB (past the 64 KiB B gathers whole: it streams), then nothing, never its END_STREAM.
    const server = http2.createServer()
    server.on("stream", (stream, headers) => {
      if (headers[":path"] === "/warm") return stream.respond({ ":status": 200 }, { endStream: true })
      stream.on("close", () => resets.push(stream.rstCode))
      stream.respond({ ":status": 200, "content-type": "application/octet-stream" })
      stream.write(Buffer.alloc(128 * 1024, 0x61))
    })
    const { port, sessionErrors } = await listenH2App(cleanup, server)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    // B's h2c leg loads and dials the app on its first call: that one first, so the deadline's 300 ms are the answer's.
    expect((await call(a.outboundPort, { path: "/warm" })).status).toBe(200)
    // Before: no end within 10 s (nothing at B bounded a non-gRPC answer once it streamed).
    const ended = await downloadWithDeadline(a.outboundPort, performance.now())
    expect({ status: ended.status, how: ended.how, some: ended.read > 0 }).toEqual({ status: 200, how: "cut", some: true })
    // At its deadline (300 ms), with room for a loaded machine.
    expect(ended.ms).toBeLessThan(5_000)
    await waitFor(() => resets.length === 1, 5_000, "B to reset the app's stream")
    expect(resets).toStrictEqual([http2.constants.NGHTTP2_CANCEL])
    expect(sessionErrors).toStrictEqual([])
    expect(await metric(b, /^iip_mesh_request_errors_total\{.*direction="inbound".*reason="deadline_exceeded"/)).toBe(1)
    expect(await metric(a, /^iip_mesh_request_errors_total\{direction="outbound",service="catalog",code="504",hop="inbound",reason="deadline"\}/)).toBe(1)
  })

  // As the HTTP/1.1 leg's (app-pool.test.ts: same default, same error): a peer that sends no
  // deadline gets B's default (--inbound-default-timeout); A always sends one (its own timeout).
  it("a request without a deadline whose answer streams and never ends gets deadline_exceeded at B's default deadline, saying the answer streamed", { timeout: 20_000 }, async () => {
    const resets: Array<number> = []
    const server = http2.createServer()
    server.on("stream", (stream) => {
      stream.on("close", () => resets.push(stream.rstCode))
      stream.respond({ ":status": 200, "content-type": "text/event-stream" })
      stream.write(Buffer.alloc(128 * 1024, 0x61))
    })
    const { port } = await listenH2App(cleanup, server)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false, inboundDefaultTimeoutMs: 500 }))
    const client = startClient(cleanup, b.sidecar.inbound.port)
    // No deadline on the wire (timeoutMs 0): B's default bounds it, the answer's streaming included.
    const reply = await withTimeout(client.stream("/events", new Uint8Array(0), { meta: requestMeta("GET", "catalog", []), timeoutMs: 0 }), 5000, "the streamed answer's start")
    const error = await streamEndError(reply.stream!, 5000)
    expect(error).toBeInstanceOf(RemoteError)
    expect({ code: (error as RemoteError).code, message: (error as RemoteError).message }).toStrictEqual({ code: "deadline_exceeded", message: "the call's deadline of 500 ms passed while the app's answer streamed" })
    await waitFor(() => resets.length === 1, 5_000, "B to reset the app's stream")
    expect(resets).toStrictEqual([http2.constants.NGHTTP2_CANCEL])
  })
})
