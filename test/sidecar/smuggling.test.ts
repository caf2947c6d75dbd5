// Request smuggling at the app through the inbound side (issue 13, point 2), and what the app gets
// of the request head (point 8): a peer crafts the envelope (mesh mode) or the `__http_hdr__`
// query (plain IIP) and sidecar B forwards to an app on a raw socket that records every byte and
// parses requests as a naive server would. The app must read exactly the one request sent, with
// the body sent, framed by B, with no hop-by-hop or framing header of the peer's.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { rejection } from "../support/meshTest.ts"
import type { RawApp, RawMessage } from "../support/rawHttp.ts"
import { startInboundOverRawApp } from "../support/inboundOverRawApp.ts"

const smuggled = "GET /smuggled HTTP/1.1\r\nhost: catalog\r\n\r\n"

/** Header names a proxy must never forward (hop-by-hop, framing, our own); `connection` is B's own (keep-alive). */
const forbidden = ["keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "expect", "proxy-authorization", "proxy-connection", "x-secret", "x-iip-mesh-error"]

const meta = (method: string, headers: ReadonlyArray<readonly [string, string]>) =>
  new Map([
    [":method", method],
    [":authority", "catalog"],
    ["http-headers", JSON.stringify(headers)]
  ])

const namesOf = (request: RawMessage) => request.headers.map(([name]) => name.toLowerCase())
const valueOf = (request: RawMessage, name: string) => request.headers.find(([n]) => n.toLowerCase() === name)?.[1]

/** The reference adapter's `__http_hdr__`: Go's http.Header as JSON, base64url. */
const plainHeaderArg = (header: Record<string, Array<string>>) => Buffer.from(JSON.stringify(header), "utf8").toString("base64url")

describe("inbound side: request smuggling and header filtering", () => {
  const cleanup = new Cleanup()
  let app: RawApp
  let mesh: IipClient
  let plain: IipClient

  beforeAll(async () => {
    ;({ app, mesh, plain } = await startInboundOverRawApp(cleanup))
  })
  afterAll(() => cleanup.run())

  /** The requests the app parsed since `before`, once `count` more arrived. */
  const parsedSince = async (before: number, count: number): Promise<Array<RawMessage>> => {
    await app.untilRequests(before + count)
    return app.requests.slice(before)
  }

  it("mesh mode: content-length 0 with a second request in the body reaches the app as one request with that body", async () => {
    const before = app.requests.length
    const reply = await mesh.stream("/submit", Buffer.from(smuggled), { meta: meta("POST", [["content-length", "0"], ["x-ok", "1"]]), timeoutMs: 5000 })
    for await (const _ of reply.stream ?? []) void _
    const legit = await mesh.stream("/legit", Buffer.alloc(0), { meta: meta("GET", []), timeoutMs: 5000 })
    expect(JSON.parse(legit.data.toString()).startLine).toBe("GET /legit HTTP/1.1")
    const seen = await parsedSince(before, 2)
    expect(seen.map((r) => r.startLine)).toStrictEqual(["POST /submit HTTP/1.1", "GET /legit HTTP/1.1"])
    expect(seen[0]!.body.toString("latin1")).toBe(smuggled)
    expect(valueOf(seen[0]!, "content-length")).toBe(String(smuggled.length))
    expect(valueOf(seen[0]!, "x-ok")).toBe("1")
    expect(app.requests.some((r) => r.startLine.includes("/smuggled"))).toBe(false)
  })

  it("mesh mode: hop-by-hop, framing and invalid headers never reach the app; end-to-end ones do", async () => {
    const before = app.requests.length
    const headers: Array<[string, string]> = [
      ["Connection", "close, X-Secret"],
      ["x-secret", "named by connection"],
      ["keep-alive", "timeout=5"],
      ["upgrade", "websocket"],
      ["te", "trailers"],
      ["trailer", "x-t"],
      ["Transfer-Encoding", "chunked"],
      ["content-length", "5"],
      ["content-length", "7"],
      ["expect", "100-continue"],
      ["proxy-authorization", "Basic c2VjcmV0"],
      ["proxy-connection", "keep-alive"],
      ["host", "evil.example"],
      ["x-iip-mesh-error", "outbound; reason=forged"],
      ["bad name", "space in the name"],
      ["x-crlf", "a\r\nInjected: 1"],
      ["x-lf", "a\nInjected: 2"],
      ["x-nul", "a\u0000b"],
      ["x-wide", "\u0100\u2028"],
      ["", "empty name"],
      ["x-kept", "yes"],
      ["x-latin", "caf\u00e9"]
    ]
    const body = "hello, app"
    await mesh.call("/submit", body, { meta: meta("PUT", headers), timeoutMs: 5000 })
    const [seen] = await parsedSince(before, 1)
    expect(app.requests.length).toBe(before + 1)
    expect(seen!.ambiguous).toBe(false)
    expect(seen!.startLine).toBe("PUT /submit HTTP/1.1")
    expect(seen!.body.toString()).toBe(body)
    const names = namesOf(seen!)
    for (const name of forbidden) expect(names, name).not.toContain(name)
    expect(valueOf(seen!, "connection")).toBe("keep-alive")
    expect(names.filter((n) => n === "content-length")).toStrictEqual(["content-length"])
    expect(valueOf(seen!, "content-length")).toBe(String(body.length))
    expect(valueOf(seen!, "host")).toBe("catalog")
    expect(valueOf(seen!, "x-kept")).toBe("yes")
    expect(Buffer.from(valueOf(seen!, "x-latin")!, "latin1").toString("latin1")).toBe("caf\u00e9")
    for (const name of ["bad name", "x-crlf", "x-lf", "x-nul", "x-wide", "injected", ""]) expect(names, name).not.toContain(name)
  })

  it("mesh mode: a streamed body is framed by the inbound side (chunked), whatever the method", async () => {
    const before = app.requests.length
    async function* body() {
      yield Buffer.from("GET /smuggled ")
      yield Buffer.from("HTTP/1.1\r\nhost: catalog\r\n\r\n")
    }
    const reply = await mesh.stream("/upload", body(), { meta: meta("GET", []), timeoutMs: 5000 })
    for await (const _ of reply.stream ?? []) void _
    const [seen] = await parsedSince(before, 1)
    expect(seen!.startLine).toBe("GET /upload HTTP/1.1")
    expect(seen!.ambiguous).toBe(false)
    expect(valueOf(seen!, "transfer-encoding")).toBe("chunked")
    expect(seen!.body.toString("latin1")).toBe(smuggled)
    expect(app.requests.some((r) => r.startLine.includes("/smuggled"))).toBe(false)
  })

  it("mesh mode: a streamed body that overruns or falls short of its declared content-length is cut off, never written past it", async () => {
    const before = app.requests.length
    async function* body() {
      yield Buffer.from("GET /smuggled ")
      yield Buffer.from("HTTP/1.1\r\nhost: catalog\r\n\r\n")
    }
    for (const declared of ["0", "14", String(smuggled.length + 10)]) {
      const error = await rejection(
        mesh.stream("/upload", body(), { meta: meta("POST", [["content-length", declared]]), timeoutMs: 5000 }).then(async (reply) => {
          for await (const _ of reply.stream ?? []) void _
        })
      )
      expect(error, declared).toBeInstanceOf(RemoteError)
      expect((error as RemoteError).code).toBe("bad_request")
    }
    const after = await mesh.call("/after", "", { meta: meta("GET", []), timeoutMs: 5000 })
    expect(JSON.parse(after.toString()).startLine).toBe("GET /after HTTP/1.1")
    // What the app parsed: at most the declared bytes of an upload (the connection is cut there), then /after.
    const seen = app.requests.slice(before)
    expect(seen.at(-1)!.startLine).toBe("GET /after HTTP/1.1")
    for (const request of seen.slice(0, -1)) {
      expect(request.startLine).toBe("POST /upload HTTP/1.1")
      expect(request.body.length).toBe(Number(valueOf(request, "content-length")))
    }
    expect(app.requests.some((r) => r.startLine.includes("/smuggled"))).toBe(false)
  })

  it("mesh mode: a method or path that would break the request line is refused as bad_request, the app sees nothing", async () => {
    const before = app.requests.length
    for (const [method, path] of [["GET /evil HTTP/1.1\r\nx:", "/x"], ["GET", "/x y"], ["GET", "/x\u0001"], ["", "/x"]] as const) {
      const error = await rejection(mesh.call(path, "", { meta: meta(method, []), timeoutMs: 5000 }))
      expect(error, `${JSON.stringify(method)} ${JSON.stringify(path)}`).toBeInstanceOf(RemoteError)
      expect((error as RemoteError).code).toBe("bad_request")
      expect((error as RemoteError).processed).toBe(false)
    }
    // A request after them is the next thing the app reads.
    await mesh.call("/after", "", { meta: meta("GET", []), timeoutMs: 5000 })
    const seen = await parsedSince(before, 1)
    expect(seen.map((r) => r.startLine)).toStrictEqual(["GET /after HTTP/1.1"])
  })

  it.each([["CONNECT", []], ["connect", []], ["Connect", []], ["connect", [["http-upgrade", "websocket"]]]] as const)("mesh mode: %s (upgrade %j) is refused as bad_request, not processed; the app never reads one, nor a later request on its socket", async (method, extra) => {
    // An app's 2xx to CONNECT makes its connection a tunnel (RFC 9110 §9.3.6): had B sent it and
    // kept the socket (it did, the answer framed by content-length), the next caller's request went
    // into the tunnel. The outbound side refuses CONNECT; a peer's is refused the same, in any case:
    // node:http's client (the upgrade leg) upper-cases a method, so a `connect` asking an upgrade
    // reached the app as `CONNECT / HTTP/1.1`, and its caller waited out its deadline.
    const before = app.requests.length
    const error = await rejection(mesh.call("/", "tunnel bytes", { meta: new Map([...meta(method, []), ...extra]), timeoutMs: 2000 }))
    expect(error).toBeInstanceOf(RemoteError)
    expect((error as RemoteError).code).toBe("bad_request")
    expect((error as RemoteError).processed).toBe(false)
    await mesh.call("/after", "", { meta: meta("GET", []), timeoutMs: 5000 })
    const seen = await parsedSince(before, 1)
    expect(seen.map((r) => r.startLine)).toStrictEqual(["GET /after HTTP/1.1"])
  })

  it("plain IIP (`__http_hdr__`): framing and hop-by-hop headers in the query are dropped, the body framed by B", async () => {
    const before = app.requests.length
    const header = plainHeaderArg({
      "Content-Length": ["0"],
      "Transfer-Encoding": ["chunked"],
      Connection: ["keep-alive, X-Secret"],
      "X-Secret": ["1"],
      Upgrade: ["h2c"],
      Expect: ["100-continue"],
      "Proxy-Authorization": ["Basic eA=="],
      "X-Crlf": ["a\r\nInjected: 1"],
      "X-Kept": ["yes"]
    })
    await plain.call(`/submit?a=1&__http_hdr__=${header}`, smuggled, { timeoutMs: 5000 })
    await plain.call("/legit", "{}", { timeoutMs: 5000 })
    const seen = await parsedSince(before, 2)
    expect(seen.map((r) => r.startLine)).toStrictEqual(["POST /submit?a=1 HTTP/1.1", "GET /legit HTTP/1.1"])
    expect(seen[0]!.ambiguous).toBe(false)
    expect(seen[0]!.body.toString("latin1")).toBe(smuggled)
    const names = namesOf(seen[0]!)
    for (const name of forbidden) expect(names, name).not.toContain(name)
    expect(valueOf(seen[0]!, "connection")).toBe("keep-alive")
    expect(names).not.toContain("injected")
    expect(names).not.toContain("x-crlf")
    expect(valueOf(seen[0]!, "x-kept")).toBe("yes")
    expect(app.requests.some((r) => r.startLine.includes("/smuggled"))).toBe(false)
  })

  it("plain IIP: the app gets the path and query exactly as the caller sent them, not percent-decoded", async () => {
    const before = app.requests.length
    await plain.call(`/a%2F..%2Fadmin?x=%2F&y=a+b&__http_hdr__=${plainHeaderArg({ "X-Kept": ["yes"] })}&z=%41`, "{}", { timeoutMs: 5000 })
    await plain.call("/b%2F..%2Fadmin", "{}", { timeoutMs: 5000 })
    const seen = await parsedSince(before, 2)
    expect(seen.map((r) => r.startLine)).toStrictEqual(["GET /a%2F..%2Fadmin?x=%2F&y=a+b&z=%41 HTTP/1.1", "GET /b%2F..%2Fadmin HTTP/1.1"])
  })
})
