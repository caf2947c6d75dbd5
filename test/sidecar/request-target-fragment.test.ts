// A request target with a fragment (`#`), and an authority whose port is not 1-65535, from every
// side a request enters the mesh. A fragment is no part of a target (RFC 9112 §3.2, RFC 9113
// §8.3.1); apps and proxies disagree on `/admin#x` (nginx matches its locations on `/admin` and
// forwards `/admin#x`; another server takes `#x` as data, another refuses it), which is how an
// authorization check is made to read another path than the app serves. Before, an h2 caller's
// `:path /admin#x` and an HTTP/1.1 caller's `GET /admin#x` reached B's app as `GET /admin#x`, and
// `catalog:99999` was routed to catalog, its port ignored. Now: A answers both 400 bad_target over
// HTTP/1.1 and HTTP/2, B refuses a peer's `#` bad_request, not processed (a plain IIP caller's
// in-band), and the app, a raw socket recording every request line, sees none of them; `%23` is
// ordinary data and passes as sent.
import * as http2 from "node:http2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { rejection, startClient } from "../support/meshTest.ts"
import { type RawApp, RawHttpClient, startRawApp } from "../support/rawHttp.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

interface H2Answer {
  readonly status: unknown
  readonly error: string | undefined
  readonly body: string
}

const meshMeta = new Map([[":method", "GET"], [":authority", "catalog"], ["http-headers", "[]"]])

describe("a fragment in a request target, a port outside 1-65535 in an authority", () => {
  const cleanup = new Cleanup()
  let app: RawApp
  let a: RunningSidecar
  let peer: IipClient
  let plainPeer: IipClient
  let h2: http2.ClientHttp2Session

  beforeAll(async () => {
    app = await startRawApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false }))
    a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    peer = startClient(cleanup, b.sidecar.inbound.port)
    plainPeer = startClient(cleanup, b.sidecar.inbound.port, { mesh: false })
    h2 = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => h2.destroy())
  })
  afterAll(() => cleanup.run())

  /** One request on a fresh HTTP/1.1 connection to A: its status line, mesh error and body. */
  const http1 = async (target: string, host: string) => {
    const client = await RawHttpClient.connect(cleanup, a.outboundPort)
    client.write(`GET ${target} HTTP/1.1\r\nhost: ${host}\r\n\r\n`)
    await client.untilResponses(1)
    const answer = client.responses[0]!
    return [answer.startLine, answer.headers.find(([n]) => n.toLowerCase() === "x-iip-mesh-error")?.[1]]
  }

  const overH2 = (path: string, authority: string): Promise<H2Answer> =>
    withTimeout(
      new Promise<H2Answer>((resolve, reject) => {
        const stream = h2.request({ ":method": "GET", ":path": path, ":authority": authority })
        let head: http2.IncomingHttpHeaders = {}
        let body = ""
        stream.on("response", (h) => (head = h))
        stream.on("data", (chunk: Buffer) => (body += chunk.toString()))
        stream.on("error", reject)
        stream.on("close", () => resolve({ status: head[":status"], error: head["x-iip-mesh-error"] as string | undefined, body }))
      }),
      5000,
      "the h2 answer"
    )

  const refusedAtA = ["HTTP/1.1 400 Bad Request", "outbound; reason=bad_target"]

  it("HTTP/1.1 at A: `GET /admin#x` (origin or absolute form) is answered 400 bad_target; `/admin%23x` reaches the app as sent", async () => {
    const before = app.requests.length
    expect(await http1("/admin#x", "catalog")).toStrictEqual(refusedAtA)
    expect(await http1("/admin#", "catalog")).toStrictEqual(refusedAtA)
    expect(await http1("http://catalog/admin#x", "catalog")).toStrictEqual(refusedAtA)
    expect(await http1("/admin%23x", "catalog")).toStrictEqual(["HTTP/1.1 200 OK", undefined])
    expect(app.requests.slice(before).map((r) => r.startLine)).toStrictEqual(["GET /admin%23x HTTP/1.1"])
  })

  it("HTTP/2 at A: `:path /admin#x` is answered 400 bad_target; `/admin%23x` reaches the app as sent", async () => {
    const before = app.requests.length
    for (const path of ["/admin#x", "/a#frag", "/#"]) {
      expect(await overH2(path, "catalog"), path).toMatchObject({ status: 400, error: "outbound; reason=bad_target" })
    }
    expect(await overH2("/admin%23x", "catalog")).toMatchObject({ status: 200 })
    expect(app.requests.slice(before).map((r) => r.startLine)).toStrictEqual(["GET /admin%23x HTTP/1.1"])
  })

  it("a peer at B (mesh mode or plain IIP): a path holding `#` is refused bad_request, not processed; `%23` passes", async () => {
    const before = app.requests.length
    for (const path of ["/admin#x", "/admin#", "/#/../admin"]) {
      const error = await rejection(peer.call(path, "", { meta: meshMeta, timeoutMs: 5000 }))
      expect(error, path).toBeInstanceOf(RemoteError)
      expect(error, path).toMatchObject({ code: "bad_request", processed: false })
      // A plain IIP caller gets the refusal in-band, as the reference adapter's convention has it.
      const plainAnswer = await plainPeer.call(path, "{}", { timeoutMs: 5000 })
      expect(JSON.parse(plainAnswer.toString()), `plain ${path}`).toMatchObject({ code: -1, message: expect.stringContaining("no fragment") })
    }
    const served = await peer.call("/admin%23x", "", { meta: meshMeta, timeoutMs: 5000 })
    expect(JSON.parse(served.toString()).startLine).toBe("GET /admin%23x HTTP/1.1")
    expect(app.requests.slice(before).map((r) => r.startLine)).toStrictEqual(["GET /admin%23x HTTP/1.1"])
  })

  it("an authority whose port is not 1-65535 is answered 400 bad_target over HTTP/1.1 and HTTP/2; a valid port is served", async () => {
    const before = app.requests.length
    for (const host of ["catalog:99999", "catalog:65536", "catalog:0", "catalog:", "catalog:80x", "catalog:123456", "user@catalog"]) {
      expect(await http1("/ports", host), host).toStrictEqual(refusedAtA)
      expect(await overH2("/ports", host), host).toMatchObject({ status: 400, error: "outbound; reason=bad_target" })
    }
    expect(await http1("/port", "catalog:65535")).toStrictEqual(["HTTP/1.1 200 OK", undefined])
    expect(await overH2("/port", "catalog:8080")).toMatchObject({ status: 200 })
    expect(app.requests.slice(before).map((r) => r.startLine)).toStrictEqual(["GET /port HTTP/1.1", "GET /port HTTP/1.1"])
  })
})
