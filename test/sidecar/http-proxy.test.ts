// HTTP through two sidecars, as an app sees it: a test client calls sidecar A's outbound listener
// naming the service "catalog" (Host header, `catalog.mesh`, or a proxy-style absolute URI), A
// carries the request over IIP (mesh mode) to sidecar B, and B forwards it to a real node:http
// app. Methods, paths, queries, statuses and end-to-end headers arrive unchanged; hop-by-hop
// headers are dropped, x-forwarded-* added, repeated response headers kept apart, and one
// keep-alive socket to the outbound carries many requests.
import * as http from "node:http"
import type * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { call, echoed, echoRequest, LOOPBACK, type Mesh, rawValues, startMesh } from "../support/sidecarHarness.ts"

/** The app: `/status/NNN` answers with that status; `/cookies` sets two cookies; anything else echoes the request. */
const app: http.RequestListener = (req, res) => {
  const url = req.url ?? "/"
  const status = /^\/status\/(\d{3})/.exec(url)
  if (status !== null) {
    req.resume()
    req.on("end", () => {
      const code = Number(status[1])
      if (code === 204) {
        res.writeHead(204, { "x-app": "yes" })
        res.end()
      } else if (code === 301) {
        res.writeHead(301, { location: "http://catalog/moved-here", "content-length": 0 })
        res.end()
      } else {
        const body = `status ${code}`
        res.writeHead(code, { "content-type": "text/plain", "content-length": Buffer.byteLength(body), "x-app": "yes" })
        res.end(body)
      }
    })
    return
  }
  if (url === "/cookies") {
    req.resume()
    res.setHeader("set-cookie", ["a=1; Path=/", "b=2; Path=/"])
    res.setHeader("x-multi", ["one", "two"])
    res.end("cookies")
    return
  }
  echoRequest(req, res)
}

describe("sidecar HTTP proxying (app <- B <- A <- client)", () => {
  const cleanup = new Cleanup()
  let mesh: Mesh

  beforeAll(async () => {
    mesh = await startMesh(cleanup, app)
  })
  afterAll(() => cleanup.run())

  const port = () => mesh.a.outboundPort

  it.each(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])("%s reaches the app with method, path and query intact", async (method) => {
    const withBody = method === "POST" || method === "PUT" || method === "PATCH"
    const answer = await call(port(), {
      method,
      path: "/items/42?x=1&y=a%20b&y=c",
      headers: { host: "catalog", ...(withBody ? { "content-type": "text/plain" } : {}) },
      ...(withBody ? { body: `body of ${method}` } : {})
    })
    expect(answer.status).toBe(200)
    const seen = echoed(answer)
    expect(seen.method).toBe(method)
    expect(seen.url).toBe("/items/42?x=1&y=a%20b&y=c")
    expect(seen.body).toBe(withBody ? `body of ${method}` : "")
  })

  it("HEAD reaches the app with path and query intact and gets the head without a body", async () => {
    const before = mesh.app.seen.length
    const answer = await call(port(), { method: "HEAD", path: "/items/7?q=head" })
    expect(answer.status).toBe(200)
    expect(answer.body.length).toBe(0)
    expect(answer.headers["content-type"]).toBe("application/json")
    const seen = mesh.app.seen.slice(before)
    expect(seen.map((s) => [s.method, s.url])).toStrictEqual([["HEAD", "/items/7?q=head"]])
  })

  it.each([200, 201, 404, 418, 500])("status %i comes back unchanged, with its body and headers", async (code) => {
    const answer = await call(port(), { path: `/status/${code}` })
    expect(answer.status).toBe(code)
    expect(answer.body.toString()).toBe(`status ${code}`)
    expect(answer.headers["x-app"]).toBe("yes")
    expect(answer.headers["x-iip-mesh-error"]).toBeUndefined()
  })

  it("status 204 comes back unchanged with no body", async () => {
    const answer = await call(port(), { path: "/status/204" })
    expect(answer.status).toBe(204)
    expect(answer.body.length).toBe(0)
    expect(answer.headers["x-app"]).toBe("yes")
  })

  it("status 301 comes back unchanged with its location (not followed)", async () => {
    const answer = await call(port(), { path: "/status/301" })
    expect(answer.status).toBe(301)
    expect(answer.headers.location).toBe("http://catalog/moved-here")
  })

  it("custom request headers arrive at the app, repeated ones in order", async () => {
    const answer = await call(port(), {
      path: "/h",
      headers: ["Host", "catalog", "X-Custom", "hello", "X-Trace-Id", "abc-123", "Accept", "text/plain", "X-Rep", "1", "X-Rep", "2"]
    })
    const seen = echoed(answer)
    expect(seen.headers["x-custom"]).toBe("hello")
    expect(seen.headers["x-trace-id"]).toBe("abc-123")
    expect(seen.headers.accept).toBe("text/plain")
    expect(rawValues(seen.rawHeaders, "x-rep")).toStrictEqual(["1", "2"])
  })

  it("hop-by-hop request headers (and one named in Connection) are removed before the app", async () => {
    const answer = await call(port(), {
      path: "/hop",
      headers: [
        "Host", "catalog",
        "Connection", "keep-alive, x-drop",
        "Keep-Alive", "timeout=5",
        "Proxy-Authorization", "Basic c2VjcmV0",
        "TE", "trailers",
        "Upgrade", "websocket",
        "X-Drop", "1",
        "X-Keep", "kept"
      ]
    })
    expect(answer.status).toBe(200)
    const seen = echoed(answer)
    expect(seen.headers["x-keep"]).toBe("kept")
    expect(seen.headers["x-drop"]).toBeUndefined()
    expect(seen.headers["proxy-authorization"]).toBeUndefined()
    expect(seen.headers.te).toBeUndefined()
    expect(seen.headers.upgrade).toBeUndefined()
    expect(seen.headers["keep-alive"]).toBeUndefined()
    // The last hop (sidecar B's own keep-alive agent) sets its own Connection; never the caller's.
    expect(String(seen.headers.connection ?? "")).not.toMatch(/x-drop/)
  })

  it("a caller's Transfer-Encoding is not forwarded: the body arrives, framed by the last hop only", async () => {
    // A chunked POST: A streams it, B writes it to the app with its own framing.
    const chunked = await new Promise<http.IncomingMessage & { text?: string }>((resolve, reject) => {
      const req = http.request({ host: LOOPBACK, port: port(), method: "POST", path: "/te", headers: { host: "catalog", "transfer-encoding": "chunked" }, agent: false })
      req.on("error", reject)
      req.on("response", (res) => {
        let text = ""
        res.on("data", (c: Buffer) => (text += c.toString()))
        res.on("end", () => resolve(Object.assign(res, { text })))
      })
      req.write("part one, ")
      req.end("part two")
    })
    const seen = JSON.parse(chunked.text!) as { body: string; rawHeaders: Array<string> }
    expect(seen.body).toBe("part one, part two")
    expect(rawValues(seen.rawHeaders, "transfer-encoding").length).toBeLessThanOrEqual(1)
    // A GET with a chunked (empty) body: the caller's framing ends at A; the body streams, so B
    // frames its GET to the app itself from what really came: nothing, so a GET with no body
    // framing (chunked only once a byte is sent: an unframed body would read as the next
    // request), and the caller's TE goes no further.
    const get = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: LOOPBACK, port: port(), path: "/te-get", headers: { host: "catalog", "transfer-encoding": "chunked", te: "trailers" }, agent: false })
      req.on("error", reject)
      req.on("response", (res) => {
        let text = ""
        res.on("data", (c: Buffer) => (text += c.toString()))
        res.on("end", () => resolve(text))
      })
      req.end()
    })
    const seenGet = JSON.parse(get) as { method: string; body: string; headers: Record<string, string | undefined> }
    expect(seenGet.method).toBe("GET")
    expect(seenGet.body).toBe("")
    expect(seenGet.headers["transfer-encoding"]).toBeUndefined()
    expect(seenGet.headers["content-length"]).toBeUndefined()
    expect(seenGet.headers.te).toBeUndefined()
  })

  it("x-forwarded-for/-proto/-host are added, x-forwarded-for appended to an existing one", async () => {
    const fresh = echoed(await call(port(), { path: "/xff" }))
    expect(fresh.headers["x-forwarded-for"]).toBe("127.0.0.1")
    expect(fresh.headers["x-forwarded-proto"]).toBe("http")
    expect(fresh.headers["x-forwarded-host"]).toBe("catalog")
    const chained = echoed(await call(port(), { path: "/xff", headers: { host: "catalog", "x-forwarded-for": "10.1.2.3" } }))
    expect(chained.headers["x-forwarded-for"]).toBe("10.1.2.3, 127.0.0.1")
    expect(rawValues(chained.rawHeaders, "x-forwarded-for")).toHaveLength(1)
  })

  it("repeated response headers (two set-cookie) arrive as two", async () => {
    const answer = await call(port(), { path: "/cookies" })
    expect(answer.status).toBe(200)
    expect(rawValues(answer.rawHeaders, "set-cookie")).toStrictEqual(["a=1; Path=/", "b=2; Path=/"])
    expect(rawValues(answer.rawHeaders, "x-multi")).toStrictEqual(["one", "two"])
    expect(answer.body.toString()).toBe("cookies")
  })

  it("the Host the app sees is the name the caller used", async () => {
    expect(echoed(await call(port(), { path: "/host", headers: { host: "catalog" } })).headers.host).toBe("catalog")
    expect(echoed(await call(port(), { path: "/host", headers: { host: "catalog:8080" } })).headers.host).toBe("catalog:8080")
  })

  it("`catalog.mesh` names the same service", async () => {
    const answer = await call(port(), { path: "/via-mesh-suffix?z=9", headers: { host: "catalog.mesh" } })
    expect(answer.status).toBe(200)
    const seen = echoed(answer)
    expect(seen.url).toBe("/via-mesh-suffix?z=9")
    expect(seen.headers.host).toBe("catalog.mesh")
  })

  it("a proxy-style absolute URI (as HTTP_PROXY sends it) reaches the same app", async () => {
    const before = mesh.app.seen.length
    const answer = await call(port(), { path: "http://catalog/absolute/path?k=v", headers: { host: "catalog" } })
    expect(answer.status).toBe(200)
    const seen = echoed(answer)
    expect(seen.url).toBe("/absolute/path?k=v")
    expect(seen.headers.host).toBe("catalog")
    expect(mesh.app.seen.length).toBe(before + 1)
    // The Host header may disagree with the URI: the URI wins (RFC 9112 §3.2.2).
    const mismatched = echoed(await call(port(), { path: "http://catalog.mesh:81/abs2", headers: { host: "elsewhere" } }))
    expect(mismatched.url).toBe("/abs2")
    expect(mismatched.headers.host).toBe("catalog.mesh:81")
  })

  it("an absolute URI's path and query reach the app as sent; one the URL parser reads another way than RFC 3986 is refused", async () => {
    // A proxy must not modify the path and query (RFC 9110 §7.7): no dot segment removed, nothing percent-encoded.
    const asSent = echoed(await call(port(), { path: "http://catalog/a/../b/%2e%2e/c\"?q=\"x\"", headers: { host: "catalog" } }))
    expect(asSent.url).toBe("/a/../b/%2e%2e/c\"?q=\"x\"")
    expect(echoed(await call(port(), { path: "http://catalog?k=v", headers: { host: "catalog" } })).url).toBe("/?k=v")
    // The WHATWG parser reads these as http://catalog/...; RFC 3986 does not (no authority, or a `\` in it).
    for (const path of ["http:/catalog/f", "http:catalog/f", "http://catalog\\@evil/f"]) {
      expect((await call(port(), { path, headers: { host: "catalog" } })).status, path).toBe(400)
    }
  })

  it("keep-alive: many requests over one agent socket to the outbound all work", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const sockets = new Set<net.Socket>()
    try {
      for (let i = 0; i < 50; i++) {
        const answer = await new Promise<{ status: number; url: string }>((resolve, reject) => {
          const req = http.request({ host: LOOPBACK, port: port(), path: `/ka/${i}?n=${i}`, headers: { host: "catalog" }, agent })
          req.on("socket", (socket) => sockets.add(socket))
          req.on("error", reject)
          req.on("response", (res) => {
            let text = ""
            res.on("data", (c: Buffer) => (text += c.toString()))
            res.on("end", () => resolve({ status: res.statusCode ?? 0, url: (JSON.parse(text) as { url: string }).url }))
          })
          req.end()
        })
        expect(answer).toStrictEqual({ status: 200, url: `/ka/${i}?n=${i}` })
      }
      // And some at once: the agent queues them onto the same single socket.
      const parallel = await Promise.all(
        Array.from({ length: 10 }, (_, i) => call(port(), { path: `/kap/${i}`, agent, onSocket: (s) => sockets.add(s) }).then((a) => [a.status, echoed(a).url]))
      )
      expect(parallel).toStrictEqual(Array.from({ length: 10 }, (_, i) => [200, `/kap/${i}`]))
      expect(sockets.size).toBe(1)
    } finally {
      agent.destroy()
    }
  })
})
