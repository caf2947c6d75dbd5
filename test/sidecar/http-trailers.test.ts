// HTTP/1.1 chunked trailers across the mesh (issue 17, PROTOCOL.md §17.5): an app's chunked answer
// with trailers reaches the caller (HTTP/1.1, and HTTP/2 through the same outbound port) with its
// trailers after the body, through the header filter: a trailer that may not cross (a framing
// header, an invalid value) is dropped, the others pass in order, repeated names kept (and a name
// every plain object has, `constructor`, as sent).
import * as http from "node:http"
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, startMesh } from "../support/sidecarHarness.ts"

/** An app answering chunked, in two writes, with trailers (a checksum, a repeated name, one that may not cross). */
const trailingApp: http.RequestListener = (_req, res) => {
  res.writeHead(200, { "content-type": "text/plain", trailer: "x-checksum, x-part, te" })
  res.write("hello ")
  setImmediate(() => {
    res.addTrailers([["x-checksum", "sha256=abc"], ["x-part", "1"], ["x-part", "2"], ["te", "trailers"]])
    res.end("world")
  })
}

describe("HTTP/1.1 chunked trailers across the mesh", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("reach an HTTP/1.1 caller after the body, filtered", async () => {
    const { a } = await startMesh(cleanup, trailingApp)
    const answer = await withTimeout(
      new Promise<{ body: string; trailers: Array<string>; chunked: string | undefined }>((resolve, reject) => {
        const req = http.request({ host: LOOPBACK, port: a.outboundPort, path: "/t", headers: { host: "catalog" }, agent: false }, (res) => {
          let body = ""
          res.on("data", (chunk: Buffer) => (body += chunk.toString()))
          res.on("end", () => resolve({ body, trailers: res.rawTrailers, chunked: res.headers["transfer-encoding"] }))
        })
        req.on("error", reject)
        req.end()
      }),
      5000,
      "the answer"
    )
    expect(answer.body).toBe("hello world")
    expect(answer.chunked).toBe("chunked")
    expect(answer.trailers).toEqual(["x-checksum", "sha256=abc", "x-part", "1", "x-part", "2"])
  })

  it("reach an HTTP/2 caller as HTTP/2 trailers", async () => {
    const { a } = await startMesh(cleanup, trailingApp)
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    const stream = session.request({ ":path": "/t", ":authority": "catalog" })
    let body = ""
    stream.on("data", (chunk: Buffer) => (body += chunk.toString()))
    const trailing = new Promise<http2.IncomingHttpHeaders>((resolve) => stream.on("trailers", resolve))
    const ended = new Promise<void>((resolve) => stream.on("end", resolve))
    const trailers = await withTimeout(trailing, 5000, "the trailers")
    await withTimeout(ended, 5000, "the end")
    expect(body).toBe("hello world")
    expect(trailers["x-checksum"]).toBe("sha256=abc")
    expect(trailers["x-part"]).toBe("1, 2")
    expect(trailers.te).toBeUndefined()
  })

  it("named like a property every plain object has (constructor), reach an HTTP/2 caller as the app sent them", async () => {
    const app: http.RequestListener = (_req, res) => {
      res.writeHead(200, { "content-type": "text/plain", trailer: "constructor" })
      res.write("hello ")
      setImmediate(() => {
        res.addTrailers([["constructor", "v"]])
        res.end("world")
      })
    }
    const { a } = await startMesh(cleanup, app)
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    const stream = session.request({ ":path": "/t", ":authority": "catalog" })
    stream.resume()
    const trailers = await withTimeout(new Promise<http2.IncomingHttpHeaders>((resolve) => stream.on("trailers", resolve)), 5000, "the trailers")
    expect(trailers.constructor).toBe("v")
  })
})
