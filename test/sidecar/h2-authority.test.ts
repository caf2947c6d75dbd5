// An HTTP/2 request names its target in `:authority` (RFC 9113 §8.3.1); one whose Host header
// names another is malformed. Before, the outbound h2c listener let Host win: `:authority:
// catalog` with `host: evil` went to "evil" (a caller's HTTP/2 library and a proxy in front that
// reads :authority disagreed with the mesh about where the request went). Now it is answered 400
// bad_target with x-iip-mesh-error, reaching no app; an honest request (no Host, or the same origin:
// case and http's default port aside) is served. The client is node:http2.
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startApp, startMesh, startSidecar } from "../support/sidecarHarness.ts"

interface Answer {
  readonly head: http2.IncomingHttpHeaders
  readonly body: string
}

/** One GET on `session`; the answer once its stream closed. */
const call = (session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<Answer> =>
  withTimeout(
    new Promise<Answer>((resolve, reject) => {
      const stream = session.request(headers)
      let head: http2.IncomingHttpHeaders = {}
      let body = ""
      stream.on("response", (h) => (head = h))
      stream.on("data", (chunk: Buffer) => (body += chunk.toString()))
      stream.on("error", reject)
      stream.on("close", () => resolve({ head, body }))
    }),
    5000,
    "the answer"
  )

describe("an HTTP/2 request whose Host and :authority differ", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("is answered 400 bad_target and reaches neither service; agreeing ones are served", async () => {
    // "evil": a service of its own the caller's sidecar knows, so a request routed by Host reaches it.
    const evilApp = await startApp(cleanup, (_req, res) => res.end("evil"))
    const evil = await startSidecar(cleanup, sidecarConfig({ service: "evil", app: evilApp.address }))
    const mesh = await startMesh(cleanup, (_req, res) => res.end("catalog"), {})
    const a = await startSidecar(cleanup, sidecarConfig({
      service: "store",
      endpoints: { catalog: [{ address: mesh.b.inboundAddress, weight: 1 }], evil: [{ address: evil.inboundAddress, weight: 1 }] }
    }))
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => new Promise<void>((resolve) => session.close(() => resolve())))

    const conflicting = await call(session, { ":method": "GET", ":path": "/x", ":authority": "catalog", host: "evil" })
    expect(conflicting.head[":status"]).toBe(400)
    expect(String(conflicting.head["x-iip-mesh-error"])).toMatch(/^outbound; reason=bad_target/)
    // Another port is another origin: refused as well.
    expect((await call(session, { ":method": "GET", ":path": "/x", ":authority": "catalog", host: "catalog:81" })).head[":status"]).toBe(400)
    expect(evilApp.seen).toHaveLength(0)
    expect(mesh.app.seen).toHaveLength(0)

    const plain = await call(session, { ":method": "GET", ":path": "/x", ":authority": "catalog" })
    expect([plain.head[":status"], plain.body]).toStrictEqual([200, "catalog"])
    const same = await call(session, { ":method": "GET", ":path": "/x", ":authority": "catalog", host: "catalog" })
    expect([same.head[":status"], same.body]).toStrictEqual([200, "catalog"])
    // The same origin after the normalization RFC 9113 asks of a proxy (case, http's default port).
    const normalized = await call(session, { ":method": "GET", ":path": "/x", ":authority": "catalog", host: "CATALOG:80" })
    expect([normalized.head[":status"], normalized.body]).toStrictEqual([200, "catalog"])
    expect(mesh.app.seen).toHaveLength(3)
    expect(evilApp.seen).toHaveLength(0)
  })
})
