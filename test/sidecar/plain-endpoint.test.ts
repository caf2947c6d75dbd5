// A plain IIP service (an IipServer with mesh: false, which behaves as a Go IIP server) as a mesh
// endpoint: sidecar A's hello is answered with the unknown-path error, the connection stays plain,
// and A speaks the reference HTTP adapter's convention (iip-protocol.md §9): the IIP path is the request
// URI plus `__http_hdr__` (the headers as Go http.Header JSON, base64url WITH `=` padding), the
// data is the body or `{}` (PROTOCOL.md §17.2). The plain in-band errors (§6) become HTTP statuses:
// unknown path 404, a failing handler 502 naming the app hop.
import type { IncomingRequest } from "../../src/iip/server.ts"
import { headersFromPlainQuery, plainRequestPath } from "../../src/sidecar/httpEnvelope.ts"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"
import { call, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

interface Echo {
  readonly path: string
  readonly rawPath: string
  readonly rawQuery: string
  readonly k: ReadonlyArray<string>
  readonly hdr: string
  readonly headers: Array<readonly [string, string]>
  readonly data: string
}

/** Base64url with `=` padding, as Go's base64.URLEncoding writes it (written here, not taken from src). */
const goBase64Url = (text: string): string => {
  const unpadded = Buffer.from(text, "utf8").toString("base64url")
  return unpadded + "=".repeat((4 - (unpadded.length % 4)) % 4)
}

describe("a plain IIP service as an endpoint (reference HTTP adapter convention)", () => {
  const cleanup = new Cleanup()
  let a: RunningSidecar
  const paths: Array<string> = []

  beforeAll(async () => {
    const server = await startServer(cleanup, { mesh: false })
    server.handle("/http_header_echo", (request: IncomingRequest) => {
      const hdr = request.query.get("__http_hdr__")?.[0] ?? ""
      const echo: Echo = {
        path: request.path,
        rawPath: request.rawPath,
        rawQuery: request.rawQuery,
        k: request.query.get("k") ?? [],
        hdr,
        headers: headersFromPlainQuery(hdr),
        data: request.data.toString("utf8")
      }
      return JSON.stringify(echo)
    })
    server.handle("/boom", () => {
      throw new Error("kaput")
    })
    server.handle("/empty", () => "")
    // Record every path the server gets (the hello included) to see the convention on the wire.
    const original = server.router.lookup.bind(server.router)
    server.router.lookup = (path: string) => {
      paths.push(path)
      return original(path)
    }
    // Tracing off: with it on, a traceparent joins the headers and the byte vectors below change.
    a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { legacy: [{ address: `127.0.0.1:${server.address.port}`, weight: 1 }] } }))
  })
  afterAll(() => cleanup.run())

  it("the sidecar's connection stays plain: the server saw the hello as an unknown path", async () => {
    const answer = await call(a.outboundPort, { path: "/http_header_echo", headers: { host: "legacy" } })
    expect(answer.status).toBe(200)
    expect(paths[0]).toBe("/sys/hello")
    const client = a.sidecar.registry.clientOf(a.sidecar.registry.endpointsOf("legacy")[0]!)
    expect(await client.mode()).toBe("plain")
  })

  it("a GET with headers arrives as path + __http_hdr__ (Go http.Header JSON, base64url with = padding) and data {}", async () => {
    const answer = await call(a.outboundPort, {
      path: "/http_header_echo?k=v",
      headers: ["Host", "legacy", "Accept", "*/*", "Test-Header-Name", "test header value", "User-Agent", "t", "X-Rep", "1", "X-Rep", "2"]
    })
    expect(answer.status).toBe(200)
    const echo = JSON.parse(answer.body.toString()) as Echo
    expect(echo.path).toBe("/http_header_echo")
    expect(echo.k).toStrictEqual(["v"])
    expect(echo.data).toBe("{}")
    // Canonical names, value lists, keys sorted (as Go's json.Marshal of a map writes them); Host is not a header.
    const expectedJson = JSON.stringify({
      Accept: ["*/*"],
      "Test-Header-Name": ["test header value"],
      "User-Agent": ["t"],
      "X-Forwarded-For": ["127.0.0.1"],
      "X-Forwarded-Host": ["legacy"],
      "X-Forwarded-Proto": ["http"],
      "X-Rep": ["1", "2"]
    })
    expect(echo.hdr).toBe(goBase64Url(expectedJson))
    expect(echo.hdr).toMatch(/^[A-Za-z0-9_-]+={0,2}$/)
    expect(echo.hdr.length % 4).toBe(0)
    // Appended unescaped after the original query with "&".
    expect(echo.rawPath).toBe(`/http_header_echo?k=v&__http_hdr__=${echo.hdr}`)
    expect(echo.headers).toStrictEqual([
      ["accept", "*/*"],
      ["test-header-name", "test header value"],
      ["user-agent", "t"],
      ["x-forwarded-for", "127.0.0.1"],
      ["x-forwarded-host", "legacy"],
      ["x-forwarded-proto", "http"],
      ["x-rep", "1"],
      ["x-rep", "2"]
    ])
  })

  it("padding is kept when the JSON length is not a multiple of 3", async () => {
    // Two header values whose lengths differ by one: one of the two encodings needs padding.
    const encodings: Array<string> = []
    for (const value of ["a", "ab", "abc"]) {
      const echo = JSON.parse((await call(a.outboundPort, { path: "/http_header_echo", headers: { host: "legacy", "x-pad": value } })).body.toString()) as Echo
      expect(echo.rawPath).toBe(`/http_header_echo?__http_hdr__=${echo.hdr}`)
      expect(echo.hdr.length % 4).toBe(0)
      encodings.push(echo.hdr)
    }
    expect(encodings.filter((e) => e.endsWith("=")).length).toBe(2)
    expect(encodings.filter((e) => e.endsWith("==")).length).toBe(1)
  })

  it("reproduces the reference adapter's verified bytes (iip-protocol.md §9)", () => {
    expect(plainRequestPath("/http_header_echo?k=v", [["accept", "*/*"], ["test-header-name", "test header value"], ["user-agent", "t"]])).toBe(
      "/http_header_echo?k=v&__http_hdr__=eyJBY2NlcHQiOlsiKi8qIl0sIlRlc3QtSGVhZGVyLU5hbWUiOlsidGVzdCBoZWFkZXIgdmFsdWUiXSwiVXNlci1BZ2VudCI6WyJ0Il19"
    )
  })

  it("a POST body arrives as the IIP data, and the answer is the HTTP body", async () => {
    const answer = await call(a.outboundPort, { method: "POST", path: "/http_header_echo", headers: { host: "legacy", "content-type": "text/plain" }, body: "hello adapter" })
    expect(answer.status).toBe(200)
    expect(answer.headers["content-length"]).toBe(String(answer.body.length))
    const echo = JSON.parse(answer.body.toString()) as Echo
    expect(echo.data).toBe("hello adapter")
    expect(echo.headers).toContainEqual(["content-type", "text/plain"])
  })

  it("an unknown path is HTTP 404, not 200 with the error JSON", async () => {
    const answer = await call(a.outboundPort, { path: "/nosuch?x=1", headers: { host: "legacy" } })
    expect(answer.status).toBe(404)
    expect(paths).toContain("/nosuch")
  })

  it("a handler that throws is 502 with x-iip-mesh-error naming the app hop", async () => {
    const answer = await call(a.outboundPort, { path: "/boom", headers: { host: "legacy" } })
    expect(answer.status).toBe(502)
    expect(answer.headers["x-iip-mesh-error"]).toBe("app; reason=handler_failed")
    const body = JSON.parse(answer.body.toString()) as { error: string; hop: string; message: string }
    expect(body).toMatchObject({ error: "handler_failed", hop: "app" })
    expect(body.message).toContain("kaput")
  })

  it("a handler that answers nothing is 502 no_response from the app hop", async () => {
    const answer = await call(a.outboundPort, { path: "/empty", headers: { host: "legacy" } })
    expect(answer.status).toBe(502)
    expect(answer.headers["x-iip-mesh-error"]).toBe("app; reason=no_response")
  })
})
