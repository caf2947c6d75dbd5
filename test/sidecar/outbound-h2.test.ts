// Plain HTTP/2 (not gRPC) callers on the outbound listener, served on node's core stream API
// (outboundH2.ts): answers whose head ends the stream (HEAD, 204) come as one HEADERS frame and
// close cleanly, a streamed answer without trailers ends cleanly, a streamed request body arrives
// whole at an HTTP/1.1 app. A request whose Host names another origin than its :authority is
// malformed (RFC 9113 §8.3.1): before, Host won (`:authority: catalog`, `host: evil` went to
// "evil"); now it is answered 400 bad_target and reaches no app.
import * as http from "node:http"
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startApp, startMesh, startSidecar } from "../support/sidecarHarness.ts"

/** GET and HEAD /doc: a 5-byte document; /empty: 204; POST /echo: the body back, in two writes. */
const app: http.RequestListener = (req, res) => {
  if (req.url === "/empty") {
    res.writeHead(204)
    return res.end()
  }
  if (req.url === "/doc") {
    res.writeHead(200, { "content-type": "text/plain", "content-length": "5" })
    return res.end("hello")
  }
  const parts: Array<Buffer> = []
  req.on("data", (chunk: Buffer) => parts.push(chunk))
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/octet-stream" })
    res.write(Buffer.concat(parts).subarray(0, 3))
    setImmediate(() => res.end(Buffer.concat(parts).subarray(3)))
  })
}

interface Answer {
  readonly head: http2.IncomingHttpHeaders
  readonly body: string
  readonly trailers: http2.IncomingHttpHeaders | undefined
  readonly rstCode: number
}

/** One request on `session`; the answer once its stream closed. */
const call = (session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: ReadonlyArray<string>): Promise<Answer> =>
  withTimeout(
    new Promise<Answer>((resolve, reject) => {
      const stream = session.request(headers, { endStream: body === undefined })
      let head: http2.IncomingHttpHeaders = {}
      let text = ""
      let trailers: http2.IncomingHttpHeaders | undefined
      stream.on("response", (h) => (head = h))
      stream.on("data", (chunk: Buffer) => (text += chunk.toString()))
      stream.on("trailers", (t) => (trailers = t))
      stream.on("error", reject)
      stream.on("close", () => resolve({ head, body: text, trailers, rstCode: stream.rstCode ?? -1 }))
      if (body !== undefined) {
        // The body's parts in separate turns: the request streams rather than being held whole at once.
        const [first, ...rest] = body
        stream.write(first)
        setImmediate(() => stream.end(rest.join("")))
      }
    }),
    5000,
    "the answer"
  )

describe("plain HTTP/2 callers on the outbound listener", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("answers HEAD and 204 with a head that ends the stream, closed cleanly", async () => {
    const { a } = await startMesh(cleanup, app)
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    const head = await call(session, { ":method": "HEAD", ":path": "/doc", ":authority": "catalog" })
    expect(head.head[":status"]).toBe(200)
    expect(head.head["content-length"]).toBe("5")
    expect(head.body).toBe("")
    expect(head.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR)
    const empty = await call(session, { ":path": "/empty", ":authority": "catalog" })
    expect(empty.head[":status"]).toBe(204)
    expect(empty.body).toBe("")
    expect(empty.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR)
    // The session is still good for the next call.
    const get = await call(session, { ":path": "/doc", ":authority": "catalog" })
    expect(get.body).toBe("hello")
  })

  it("streams a request body to the app and a streamed answer back, ending cleanly without trailers", async () => {
    const { a } = await startMesh(cleanup, app)
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    const answer = await call(session, { ":method": "POST", ":path": "/echo", ":authority": "catalog" }, ["abc", "defgh"])
    expect(answer.head[":status"]).toBe(200)
    expect(answer.body).toBe("abcdefgh")
    expect(answer.trailers).toBeUndefined()
    expect(answer.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR)
  })

  it("answers a request whose Host and :authority name different origins 400 bad_target, reaching neither; agreeing ones are served", async () => {
    // "evil": a service of its own the caller's sidecar knows, so a request routed by Host reaches it.
    const evilApp = await startApp(cleanup, (_req, res) => res.end("evil"))
    const evil = await startSidecar(cleanup, sidecarConfig({ service: "evil", app: evilApp.address }))
    const mesh = await startMesh(cleanup, app)
    // The caller's sidecar knows both services.
    const a = await startSidecar(cleanup, sidecarConfig({
      service: "store",
      endpoints: { catalog: [{ address: mesh.b.inboundAddress, weight: 1 }], evil: [{ address: evil.inboundAddress, weight: 1 }] }
    }))
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    const get = (host: string | undefined) => call(session, { ":method": "GET", ":path": "/doc", ":authority": "catalog", ...(host === undefined ? {} : { host }) })

    const conflicting = await get("evil")
    expect(conflicting.head[":status"]).toBe(400)
    expect(String(conflicting.head["x-iip-mesh-error"])).toMatch(/^outbound; reason=bad_target/)
    // Another port is another origin.
    expect((await get("catalog:81")).head[":status"]).toBe(400)
    expect(evilApp.seen).toHaveLength(0)
    expect(mesh.app.seen).toHaveLength(0)

    // No Host, the same, and the same origin after the normalization RFC 9113 asks of a proxy (case, http's default port).
    for (const host of [undefined, "catalog", "CATALOG:80"]) {
      const served = await get(host)
      expect([served.head[":status"], served.body], String(host)).toStrictEqual([200, "hello"])
    }
    expect(mesh.app.seen).toHaveLength(3)
    expect(evilApp.seen).toHaveLength(0)
  })
})
