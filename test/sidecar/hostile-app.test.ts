// The far app as the attacker (wave 2's hostile-input rule, on the answers B takes from its app):
// raw-TCP apps on 127.0.0.1 port 0 write exact bytes behind a real sidecar B, reached by plain IIP
// or through sidecar A. What other tests already pin is not repeated here: llhttp's strictness
// (app-pool-client.test.ts), a caller that stops reading (hostile-slow-reader.test.ts), an app
// that never answers (app-pool.test.ts, errors.test.ts). Pinned here: the bounds nothing else
// tested (a plain caller's gathered answer, 1xx answers, a 101 nobody asked for, a trickling
// answer against the deadline) and the defects this pass found, each with the test that failed
// before its fix (an endless answer to a plain caller, a 103 taken for the answer, a bare close
// for an answer that broke before its first byte, an h2c answer cut short taken for complete, an
// answer in a transfer coding other than chunked passed on as plain bytes).
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Limits } from "../../src/protocol/constants.ts"
import { FrameFlag, FrameType, h2Frame, rstStream, startRawH2App } from "../support/h2Raw.ts"
import { Cleanup, startRawServer, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { call, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** A raw app: `answer` gets each connection's socket at the end of every request head it reads (no request here has a body). */
const startScriptedApp = async (cleanup: Cleanup, answer: (socket: net.Socket, head: string) => void) => {
  const counts = { connections: 0, requests: 0, closed: 0 }
  const app = await startRawServer(cleanup, (socket) => {
    counts.connections++
    socket.once("close", () => counts.closed++)
    let pending = ""
    socket.on("data", (data: Buffer) => {
      pending += data.toString("latin1")
      for (let end = pending.indexOf("\r\n\r\n"); end !== -1; end = pending.indexOf("\r\n\r\n")) {
        const head = pending.slice(0, end)
        pending = pending.slice(end + 4)
        counts.requests++
        answer(socket, head)
      }
    })
  })
  return { port: app.port, counts }
}

const MiB = 1024 * 1024

/** App <- B <- A, B with one socket to the app (so every request shares it, or the socket is replaced). */
const startPair = async (cleanup: Cleanup, appPort: number) => {
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${appPort}`, tracing: false, appPoolSize: 1 }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  return { a, b }
}

const early = (n: number) => "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n".repeat(n)

describe("a hostile far app's answers at the inbound side", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a plain IIP caller's answer that never ends is given up once past one packet's limit, not gathered until the deadline", async () => {
    // 64 MiB of chunked body, then nothing and no end: gathered whole (a plain caller takes one
    // packet), it would grow B's memory until the deadline, and an endless one without bound.
    const app = await startScriptedApp(cleanup, (socket) => {
      socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
      const chunk = Buffer.concat([Buffer.from("100000\r\n"), Buffer.alloc(MiB, 0x61), Buffer.from("\r\n")])
      let sent = 0
      const pump = (): void => {
        while (sent < 64 && !socket.destroyed) {
          sent++
          if (!socket.write(chunk)) return void socket.once("drain", pump)
        }
      }
      pump()
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${app.port}`, tracing: false, inboundDefaultTimeoutMs: 20_000 }))
    const plain = startClient(cleanup, b.sidecar.inbound.port, { mesh: false })
    const answer = await withTimeout(plain.call("/endless", "{}", { timeoutMs: 30_000 }), 10_000, "the answer that outgrew a packet")
    expect(answer.toString()).toContain(`exceeds the ${Limits.maxPacketData} bytes`)
    // The app's socket is closed, not held to the deadline.
    await waitFor(() => app.counts.closed === 1, 5000, "the app's socket to close")
  })
  it("interim answers (100, 103) before the final one are passed over, as RFC 9110 asks of a client; more than 5 (Go's bound) end the exchange, app_failed", async () => {
    const app = await startScriptedApp(cleanup, (socket, head) => {
      const interim = head.startsWith("POST /flood") ? early(6) : `HTTP/1.1 100 Continue\r\n\r\n${early(4)}`
      socket.write(`${interim}HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-final: yes\r\n\r\nok`)
    })
    const { a } = await startPair(cleanup, app.port)
    const answer = await call(a.outboundPort, { path: "/hints", timeoutMs: 5000 })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("ok")
    expect(answer.headers["x-final"]).toBe("yes")
    expect(answer.headers.link).toBeUndefined()
    // The socket stays the pool's: the interim answers were part of the exchange.
    expect((await call(a.outboundPort, { path: "/again", timeoutMs: 5000 })).status).toBe(200)
    expect(app.counts.connections).toBe(1)
    const flood = await call(a.outboundPort, { method: "POST", path: "/flood", body: "x", timeoutMs: 5000 })
    expect(flood.status).toBe(502)
    expect(flood.headers["x-iip-mesh-error"]).toBe("app; reason=app_failed")
    expect(flood.body.toString()).toContain("TOO_MANY_INTERIM_ANSWERS")
    expect(app.counts.requests).toBe(3)
  })

  it("an answer in a transfer coding other than chunked (gzip, chunked) is app_failed, not its coded bytes passed on as plain", async () => {
    // B drops Transfer-Encoding (hop-by-hop): the caller would get gzip bytes with nothing saying so.
    const gzipped = "\x1f\x8b\x08\x00\x00\x00\x00\x00"
    const app = await startScriptedApp(cleanup, (socket, head) => {
      if (head.startsWith("GET /coded")) socket.write(`HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n8\r\n${gzipped}\r\n0\r\n\r\n`, "latin1")
      else socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    })
    const { a } = await startPair(cleanup, app.port)
    const coded = await call(a.outboundPort, { path: "/coded", timeoutMs: 5000 })
    expect(coded.status).toBe(502)
    expect(coded.headers["x-iip-mesh-error"]).toBe("app; reason=app_failed")
    expect(coded.body.toString()).toContain("UNSUPPORTED_TRANSFER_CODING")
    // Chunked alone, in any case, is the answer as before.
    const chunked = await call(a.outboundPort, { path: "/chunked", timeoutMs: 5000 })
    expect(chunked.status).toBe(200)
    expect(chunked.body.toString()).toBe("ok")
  })

  it("a 101 to a request that asked no upgrade is app_failed, and the socket is not used again", async () => {
    const app = await startScriptedApp(cleanup, (socket, head) => {
      if (head.startsWith("POST /switch")) socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil")
      else socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    })
    const { a } = await startPair(cleanup, app.port)
    const switched = await call(a.outboundPort, { method: "POST", path: "/switch", body: "x", timeoutMs: 5000 })
    expect(switched.status).toBe(502)
    expect(switched.headers["x-iip-mesh-error"]).toBe("app; reason=app_failed")
    const next = await call(a.outboundPort, { path: "/next", timeoutMs: 5000 })
    expect(next.body.toString()).toBe("ok")
    expect(app.counts.connections).toBe(2)
  })
  it("a second answer begun after the first in the same write is never the next caller's: the socket closes, the next request gets a fresh one, the close is counted", async () => {
    // The first answer, then the start of a second nobody asked for; its rest comes once the next
    // request arrives on that socket, so a pool that kept the socket would hand it to that request.
    const app = await startScriptedApp(cleanup, (socket, head) => {
      if (head.startsWith("GET /first")) socket.write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\ncontent-le")
      else if (app.counts.requests === 2 && app.counts.connections === 1) socket.write("ngth: 5\r\n\r\nstray")
      else socket.write("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond")
    })
    const { b, a } = await startPair(cleanup, app.port)
    expect((await call(a.outboundPort, { path: "/first", timeoutMs: 5000 })).body.toString()).toBe("first")
    const second = await call(a.outboundPort, { path: "/second", timeoutMs: 5000 })
    expect(second.status).toBe(200)
    expect(second.body.toString()).toBe("second")
    expect(app.counts.connections).toBe(2)
    expect(value(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), "iip_mesh_http1_stray_bytes_total", { direction: "inbound" })).toBe(1)
  })

  it("a streamed answer that breaks before a byte of it reached A's caller (a chunk size past 64 bits) is a 502 naming the hop, not a bare close", async () => {
    const app = await startScriptedApp(cleanup, (socket, head) => {
      if (head.startsWith("GET /overflow")) socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc")
      else socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    })
    const { a } = await startPair(cleanup, app.port)
    const broken = await call(a.outboundPort, { path: "/overflow", timeoutMs: 5000 })
    expect(broken.status).toBe(502)
    expect(broken.headers["x-iip-mesh-error"]).toMatch(/^app; reason=/)
    expect(broken.body.toString()).toContain("HPE_INVALID_CHUNK_SIZE")
    expect((await call(a.outboundPort, { path: "/next", timeoutMs: 5000 })).body.toString()).toBe("ok")
  })
  it("an h2c app whose connection drops mid-answer: the caller gets app_failed (whole) or a cut answer (streamed), never a truncated one taken for complete", async () => {
    // node ends the readable side of a stream its session lost as if the answer had ended.
    const server = http2.createServer()
    server.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      stream.respond({ ":status": 200 })
      if (headers[":path"] === "/ok") return void stream.end("whole")
      stream.write("partial")
      // At once: B still holds the answer to send it whole. Later: it streams by then.
      if (headers[":path"] === "/whole") setImmediate(() => stream.session?.destroy())
      else setTimeout(() => stream.session?.destroy(), 50)
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const appPort = (server.address() as net.AddressInfo).port
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${appPort}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    // Held whole (usually /whole): a 502 naming the hop. Streamed (usually /streamed; /whole too when
    // the close comes after B's short wait for a whole answer, on a loaded machine): the caller's
    // connection is cut, or, when A had written none of it yet, the same 502.
    const outcome = (path: string) =>
      call(a.outboundPort, { method: "POST", path, body: "x", timeoutMs: 5000 }).then(
        (answer) => (answer.status === 502 ? String(answer.headers["x-iip-mesh-error"]) : `${answer.status} ${answer.body.toString()}`),
        (error: Error) => (/aborted|ECONNRESET|socket hang up/.test(error.message) ? "cut" : error.message)
      )
    expect(["app; reason=app_failed", "cut"]).toContain(await outcome("/whole"))
    expect(["app; reason=app_failed", "cut"]).toContain(await outcome("/streamed"))
    expect((await call(a.outboundPort, { path: "/ok", timeoutMs: 5000 })).body.toString()).toBe("whole")
  })
  it("an h2c app that resets its stream (NO_ERROR) after 7 of the 10 bytes its content-length declared: app_failed, not a truncated answer taken for complete", async () => {
    // Raw frames, so the reset comes exactly there. RFC 9113 §8.1 allows that code only after a
    // complete answer; node ends the stream's readable side on it as on END_STREAM, with rstCode
    // NO_ERROR. nghttp2 holds an END_STREAM to the declared length, a reset not.
    // HPACK: :status 200 (static index 8), content-length (static name 28, not indexed) "10".
    const head = Buffer.from([0x88, 0x0f, 0x0d, 0x02, 0x31, 0x30])
    // HEADERS, DATA 'partial' without END_STREAM, RST_STREAM NO_ERROR.
    const app = await startRawH2App(cleanup, (socket, id) =>
      socket.write(Buffer.concat([h2Frame(FrameType.headers, FrameFlag.endHeaders, id, head), h2Frame(FrameType.data, 0, id, Buffer.from("partial")), rstStream(id)]))
    )
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${app.port}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const answer = await call(a.outboundPort, { path: "/reset", timeoutMs: 5000 })
    expect(`${answer.status} ${answer.headers["x-iip-mesh-error"]}`).toBe("502 app; reason=app_failed")
    expect(answer.body.toString()).toContain("7 of the 10 bytes")
  })
  it("an answer that trickles (its head at once, then a byte every 50 ms) still ends at the caller's deadline: 504, the app's socket closed", async () => {
    const app = await startScriptedApp(cleanup, (socket) => {
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
      const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write("a")), 50)
      socket.once("close", () => clearInterval(timer))
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${app.port}`, tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, requestTimeoutMs: 300, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const started = performance.now()
    const answer = await call(a.outboundPort, { method: "POST", path: "/trickle", body: "x", timeoutMs: 5000 })
    expect(answer.status).toBe(504)
    // The whole answer would take 5 s (100 bytes, one per 50 ms): the deadline (300 ms) ends it, with room for a loaded machine.
    expect(performance.now() - started).toBeLessThan(4000)
    await waitFor(() => app.counts.closed === 1, 3000, "B to close the trickling app's socket")
  })
})
