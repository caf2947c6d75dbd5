// Hostile input on the outbound listener's HTTP/2 side (outboundH2.ts) and what reaches it from
// far apps: answers node:http2 refuses to write as they came (a field HTTP/2 allows once, given
// twice), a caller that opens streams and resets them at once, half of them POSTs whose body has
// begun (the rapid reset attack, CVE-2023-44487). Each must end as a clean answer or a reset
// stream, never a thrown exception in the sidecar, and leave nothing running.
import * as http from "node:http"
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import type * as net from "node:net"
import { call, LOOPBACK, sidecarConfig, startMesh, startSidecar } from "../support/sidecarHarness.ts"

interface H2Answer {
  readonly head: http2.IncomingHttpHeaders
  readonly body: string
  readonly trailers: http2.IncomingHttpHeaders | undefined
  readonly rstCode: number
}

/** One GET on `session`; the answer once its stream closed. */
const get = (session: http2.ClientHttp2Session, path: string): Promise<H2Answer> =>
  withTimeout(
    new Promise<H2Answer>((resolve) => {
      const stream = session.request({ ":path": path, ":authority": "catalog" })
      let head: http2.IncomingHttpHeaders = {}
      let body = ""
      let trailers: http2.IncomingHttpHeaders | undefined
      stream.on("response", (h) => (head = h))
      stream.on("data", (chunk: Buffer) => (body += chunk.toString()))
      stream.on("trailers", (t) => (trailers = t))
      stream.on("error", () => {})
      stream.on("close", () => resolve({ head, body, trailers, rstCode: stream.rstCode ?? -1 }))
    }),
    5000,
    `the answer to ${path}`
  )

/**
 * /head: `content-type` and `etag` twice in the head (HTTP/1.1 carries it; node:http2 throws on a
 * second value of either). /trailers: a chunked answer whose trailers repeat `content-type`.
 */
const repeatingApp: http.RequestListener = (req, res) => {
  if (req.url === "/head") {
    res.writeHead(201, [["content-type", "text/plain"], ["content-type", "text/html"], ["etag", '"a"'], ["etag", '"b"'], ["set-cookie", "a=1"], ["set-cookie", "b=2"], ["content-length", "2"]])
    return res.end("ok")
  }
  res.writeHead(200, { "content-type": "text/plain", trailer: "content-type, x-part" })
  res.write("hello ")
  setImmediate(() => {
    res.addTrailers([["content-type", "a/b"], ["content-type", "c/d"], ["x-part", "1"], ["x-part", "2"]])
    res.end("world")
  })
}

describe("hostile HTTP/2 on the outbound listener", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a far app's head or trailers giving a single-value field twice reach an HTTP/2 caller as they came (a node client reads the first), the status kept", async () => {
    const { a } = await startMesh(cleanup, repeatingApp)
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    const head = await get(session, "/head")
    expect(head.head[":status"]).toBe(201)
    expect(head.head["content-type"]).toBe("text/plain")
    expect(head.head.etag).toBe('"a"')
    expect(head.head["set-cookie"]).toEqual(["a=1", "b=2"])
    expect(head.body).toBe("ok")
    expect(head.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR)
    const trailed = await get(session, "/trailers")
    expect(trailed.body).toBe("hello world")
    expect(trailed.trailers?.["content-type"]).toBe("a/b")
    expect(trailed.trailers?.["x-part"]).toBe("1, 2")
    expect(trailed.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR)
    // The sidecar is still there for the next call on the same session.
    expect((await get(session, "/head")).head[":status"]).toBe(201)
  })

  it("a request giving a single-value field twice reaches an h2c app as it came, not refused by node at the inbound side", async () => {
    const app = http2.createServer()
    app.on("stream", (stream, _headers, _flags, raw: Array<string>) => {
      const agents = raw.filter((_, i) => i % 2 === 1 && raw[i - 1] === "user-agent")
      stream.respond({ ":status": 200, "content-type": "text/plain" })
      stream.end(agents.join("|"))
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const appPort = (app.address() as net.AddressInfo).port
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c" }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const answer = await call(a.outboundPort, { path: "/ua", headers: ["host", "catalog", "user-agent", "one", "user-agent", "two"], timeoutMs: 5000 })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("one|two")
  })

  it("rapid reset (CVE-2023-44487): streams opened and reset at once cost no far call that keeps running, and the session is sent away (GOAWAY) past A's budget of requests reset before they went on (outboundH2Session.ts) or node's reset burst", async () => {
    let seen = 0
    let closed = 0
    // The app never answers: a call that kept running would stay open here.
    const { a, b } = await startMesh(cleanup, (_req, res) => {
      seen++
      res.on("close", () => closed++)
    })
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    await withTimeout(new Promise((resolve) => session.once("connect", resolve)), 2000, "the session")
    let goaway = false
    session.on("goaway", () => (goaway = true))
    session.on("error", () => {})
    let opened = 0
    // In batches of 100, each taken by A before the next, so the GOAWAY is seen when it comes:
    // counting what the client had queued counted the kernel's buffers too (4 KiB ones held back
    // enough for 3,700 opened before it came). The batch leaves the client (nghttp2's queue and the
    // socket's, which announce it with no event), then a PING, which A answers after reading it.
    const ended = () => goaway || session.destroyed || session.closed
    const batchTaken = async () => {
      await waitFor(() => ended() || (session.state.outboundQueueSize === 0 && session.socket.writableLength === 0), 10_000, "the batch to leave the client")
      await new Promise<void>((resolve) => (ended() ? resolve() : void session.ping(() => resolve())))
    }
    while (!goaway && !session.destroyed && opened < 5000) {
      for (let i = 0; i < 100 && !session.closed && !session.destroyed; i++, opened++) {
        // Every other one a POST whose body has begun (held whole if it ended in the turn, streamed if not).
        const post = opened % 2 === 1
        const stream = session.request({ ":method": post ? "POST" : "GET", ":path": `/r${opened}`, ":authority": "catalog" }, { endStream: !post })
        stream.on("error", () => {})
        if (post) stream.write("part of a body")
        stream.close(http2.constants.NGHTTP2_CANCEL)
      }
      await batchTaken()
    }
    expect(goaway).toBe(true)
    expect(opened).toBeLessThan(2000)
    await waitFor(() => a.sidecar.inFlight() === 0 && b.sidecar.inFlight() === 0 && closed === seen, 2000, "every call ended")
    // A new session is served as usual.
    const fresh = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => fresh.destroy())
    const stream = fresh.request({ ":path": "/after", ":authority": "catalog" })
    stream.on("error", () => {})
    await waitFor(() => seen > 0 && seen > closed, 2000, "the next call reaching the app")
    stream.close(http2.constants.NGHTTP2_CANCEL)
    await waitFor(() => closed === seen && a.sidecar.inFlight() === 0, 2000, "the next call cancelled at the app")
  })
})
