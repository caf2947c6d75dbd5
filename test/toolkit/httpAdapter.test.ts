// The HTTP adapter over real HTTP and IIP on 127.0.0.1 (iip-protocol.md §9): routing by Host
// (regular expressions, with an optional URI pattern, and functions; no route is 404), the
// reference's `__http_hdr__` bytes towards a plain IIP server (the captured vector), the method as
// metadata towards a mesh server, IIP errors mapped to HTTP statuses instead of 200 (404 unknown
// path, 502 handler failure or no response, 400, 503, 504), a backend that is down (502, and 503
// with retry-after when no backend is left), and the `iip-mesh http-adapter` command.
import { spawn } from "node:child_process"
import * as http from "node:http"
import * as net from "node:net"
import { resolve } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { failure, type IipServer } from "../../src/iip/server.ts"
import { HttpAdapter, type HttpAdapterOptions } from "../../src/toolkit/httpAdapter.ts"
import { decodeHttpHeader } from "../../src/toolkit/httpHeader.ts"
import type { LoadBalanceClient } from "../../src/toolkit/loadBalanceClient.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { addressOf, deadPort, namedServer, startLb } from "./support.ts"

interface Answer {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

const request = (port: number, options: { path?: string; method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> =>
  new Promise((done, fail) => {
    const req = http.request({ host: "127.0.0.1", port, agent: false, path: options.path ?? "/", method: options.method ?? "GET", headers: options.headers ?? {} }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () => done({ status: res.statusCode!, headers: res.headers, body }))
    })
    req.on("error", fail)
    req.end(options.body)
  })

/** Writes `text` on a raw TCP connection and resolves with the whole HTTP response text. */
/** Go's base64.URLEncoding: base64url with = padding. */
const goBase64Url = (text: string): string => Buffer.from(text, "utf8").toString("base64").replace(/\+/g, "-").replace(/\//g, "_")

const rawHttp = (port: number, text: string): Promise<string> =>
  new Promise((done, fail) => {
    // The request says Connection: close; the server ends the connection after its response.
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(text))
    let out = ""
    socket.on("data", (chunk: Buffer) => (out += chunk.toString("utf8")))
    socket.on("end", () => done(out))
    socket.on("error", fail)
  })

describe("HTTP adapter", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  const startAdapter = async (options: HttpAdapterOptions): Promise<HttpAdapter> => {
    const adapter = new HttpAdapter(options)
    await adapter.listen()
    cleanup.add(() => adapter.close())
    return adapter
  }

  const lbFor = (server: IipServer, mesh = true): LoadBalanceClient =>
    startLb(cleanup, { backends: `${addressOf(server)}#1`, client: { mesh, maxConnections: 1 } })

  it("routes by Host: whole-host regex strings, RegExp objects with a URI pattern, and functions, tried in order; no route is 404", async () => {
    const api = lbFor(await namedServer(cleanup, "api"))
    const v2Server = await namedServer(cleanup, "v2")
    v2Server.handle("/v2/who", () => "v2")
    const v2 = lbFor(v2Server)
    const tenant = lbFor(await namedServer(cleanup, "tenant"))
    const fallback = lbFor(await namedServer(cleanup, "fallback"))
    const adapter = await startAdapter({
      routes: [
        { host: /^api\./, uri: /^\/v2\//, to: v2 },
        { host: "api\\.example\\.com|api\\.test", to: api },
        (r) => (r.host.endsWith(".tenant.test") && r.headers["x-tenant"] !== undefined ? tenant : undefined),
        { host: ".*\\.internal", to: fallback }
      ]
    })
    const port = adapter.address.port
    const who = async (host: string, path = "/who", headers: Record<string, string> = {}) => {
      const answer = await request(port, { path, headers: { host, ...headers } })
      return `${answer.status} ${answer.body}`
    }
    expect(await who("api.example.com")).toBe("200 api")
    expect(await who("API.TEST:8080")).toBe("200 api")
    expect(await who("api.test", "/v2/who")).toBe("200 v2")
    expect(await who("a.tenant.test", "/who", { "x-tenant": "1" })).toBe("200 tenant")
    expect(await who("db.internal")).toBe("200 fallback")
    const none = await request(port, { path: "/who", headers: { host: "api.example.com.evil" } })
    expect(none.status).toBe(404)
    expect(none.headers["x-iip-error"]).toBe("no_route")
    expect(JSON.parse(none.body)).toStrictEqual({ error: "no_route", message: `no route for host "api.example.com.evil"` })
    expect((await request(port, { path: "/who", headers: { host: "a.tenant.test" } })).status).toBe(404)
  })

  it("sends a plain IIP server the reference's bytes: URI + __http_hdr__ (Go http.Header JSON, base64url) and data {}", async () => {
    const seen = deferred<{ rawPath: string; data: string; header: Record<string, Array<string>> }>()
    const server = await namedServer(cleanup, "plain", { mesh: false })
    server.handle("/http_header_echo", (r) => {
      seen.resolve({ rawPath: r.rawPath, data: r.data.toString(), header: decodeHttpHeader(r.query.get("__http_hdr__")![0]!) })
      return "ok"
    })
    const adapter = await startAdapter({ routes: [{ host: ".*", to: lbFor(server, false) }] })
    const response = await rawHttp(
      adapter.address.port,
      "GET /http_header_echo?k=v HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nTest-Header-Name: test header value\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
    )
    expect(response).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/)
    const got = await seen.promise
    // The vector captured from the Go adapter (iip-protocol.md §9), with "Connection" added by this request.
    const goHeader = { Accept: ["*/*"], Connection: ["close"], "Test-Header-Name": ["test header value"], "User-Agent": ["t"] }
    expect(got.rawPath).toBe(`/http_header_echo?k=v&__http_hdr__=${goBase64Url(JSON.stringify(goHeader))}`)
    expect(got.data).toBe("{}")
    expect(got.header).toStrictEqual(goHeader)
    const captured = "eyJBY2NlcHQiOlsiKi8qIl0sIlRlc3QtSGVhZGVyLU5hbWUiOlsidGVzdCBoZWFkZXIgdmFsdWUiXSwiVXNlci1BZ2VudCI6WyJ0Il19"
    expect(decodeHttpHeader(captured)).toStrictEqual({ Accept: ["*/*"], "Test-Header-Name": ["test header value"], "User-Agent": ["t"] })
  })

  it("a POST body is the IIP data; the header value keeps its = padding; repeated headers become a list", async () => {
    const seen = deferred<{ rawPath: string; data: string }>()
    const server = await namedServer(cleanup, "plain", { mesh: false })
    server.handle("/echo", (r) => {
      seen.resolve({ rawPath: r.rawPath, data: r.data.toString() })
      return r.data
    })
    const adapter = await startAdapter({ routes: [{ host: ".*", to: lbFor(server, false) }] })
    const response = await rawHttp(
      adapter.address.port,
      "POST /echo HTTP/1.1\r\nHost: x\r\nX-Rep: 1\r\nX-Rep: <2>\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello adapter"
    )
    expect(response.endsWith("\r\n\r\nhello adapter")).toBe(true)
    const got = await seen.promise
    expect(got.data).toBe("hello adapter")
    const value = got.rawPath.slice("/echo?__http_hdr__=".length)
    expect(got.rawPath.startsWith("/echo?__http_hdr__=")).toBe(true)
    const json = `{"Connection":["close"],"Content-Length":["13"],"X-Rep":["1","\\u003c2\\u003e"]}`
    expect(value).toBe(goBase64Url(json))
    expect(value.endsWith("=")).toBe(json.length % 3 !== 0)
    expect(decodeHttpHeader(value)["X-Rep"]).toStrictEqual(["1", "<2>"])
  })

  it("maps a plain server's IIP error bodies to 404 and 502 instead of 200", async () => {
    const server = await namedServer(cleanup, "plain", { mesh: false })
    server.handle("/boom", () => {
      throw new Error("kaput")
    })
    server.handle("/empty", () => "")
    const adapter = await startAdapter({ routes: [{ host: ".*", to: lbFor(server, false) }] })
    const port = adapter.address.port
    const missing = await request(port, { path: "/nosuch" })
    expect([missing.status, missing.headers["x-iip-error"], JSON.parse(missing.body).error]).toStrictEqual([404, "not_found", "not_found"])
    const boom = await request(port, { path: "/boom" })
    expect([boom.status, JSON.parse(boom.body)]).toStrictEqual([502, { error: "handler_failed", message: "kaput" }])
    const empty = await request(port, { path: "/empty" })
    expect([empty.status, JSON.parse(empty.body).error]).toStrictEqual([502, "no_response"])
  })

  it("maps a mesh server's typed errors (404, 400, 502, 503) and a timeout (504); the method travels as :method", async () => {
    const server = await namedServer(cleanup, "mesh")
    server.handle("/method", (r) => r.meta.get(":method") ?? "none")
    server.handle("/bad", () => failure("bad_request", "no such field", false))
    server.handle("/busy", () => failure("overloaded", "too busy", false))
    server.handle("/boom", () => Promise.reject(new Error("kaput")))
    server.handle("/slow", (r) => new Promise<string>((done) => r.signal.addEventListener("abort", () => done("late"))))
    const adapter = await startAdapter({ routes: [{ host: ".*", to: lbFor(server) }], requestTimeoutMs: 300 })
    const port = adapter.address.port
    expect((await request(port, { path: "/method", method: "DELETE" })).body).toBe("DELETE")
    const status = async (path: string) => {
      const answer = await request(port, { path })
      return [answer.status, JSON.parse(answer.body).error, answer.headers["retry-after"]]
    }
    expect(await status("/nosuch")).toStrictEqual([404, "not_found", undefined])
    expect(await status("/bad")).toStrictEqual([400, "bad_request", undefined])
    expect(await status("/boom")).toStrictEqual([502, "handler_failed", undefined])
    expect(await status("/busy")).toStrictEqual([503, "overloaded", "1"])
    // The caller's timer or the server's deadline (the remaining time travels with the call) ends it first.
    const [slow, reason] = await status("/slow")
    expect(slow).toBe(504)
    expect(["timeout", "deadline_exceeded"]).toContain(reason)
  })

  it("a typed error whose code holds CR/LF, wide characters or 10,000 characters is a 502 with a safe, clamped x-iip-error, never a crash", async () => {
    const unhandled: Array<unknown> = []
    const onUnhandled = (reason: unknown) => void unhandled.push(reason)
    process.on("unhandledRejection", onUnhandled)
    cleanup.add(() => void process.off("unhandledRejection", onUnhandled))
    const server = await namedServer(cleanup, "rogue")
    server.handle("/crlf", () => failure("bad\r\nx-injected: 1", "rogue", true))
    server.handle("/wide", () => failure("caf\u00e9\u2028", "rogue", true))
    server.handle("/long", () => failure("x".repeat(10_000), "m".repeat(100_000), true))
    const adapter = await startAdapter({ routes: [{ host: ".*", to: lbFor(server) }] })
    for (const path of ["/crlf", "/wide", "/long"]) {
      const answer = await request(adapter.address.port, { path })
      expect(answer.status, path).toBe(502)
      expect(answer.headers["x-iip-error"], path).toMatch(/^[A-Za-z0-9_.-]{1,64}$/)
      expect(answer.headers["x-injected"], path).toBeUndefined()
      expect(JSON.parse(answer.body).message.length, path).toBeLessThanOrEqual(1100)
    }
    expect((await request(adapter.address.port, { path: "/who" })).status).toBe(200)
    expect(unhandled).toStrictEqual([])
  })

  it("a backend that is down gives 502 naming it; with no backend left, 503 with retry-after", async () => {
    const port = await deadPort()
    const lb = startLb(cleanup, { backends: `127.0.0.1:${port}#1` })
    const adapter = await startAdapter({ routes: [{ host: ".*", to: lb }] })
    const down = await request(adapter.address.port, { path: "/who" })
    expect(down.status).toBe(502)
    expect(JSON.parse(down.body)).toStrictEqual({ error: "connect_failed", message: `cannot connect to 127.0.0.1:${port}: ECONNREFUSED` })
    lb.removeBackend(`127.0.0.1:${port}`)
    const none = await request(adapter.address.port, { path: "/who" })
    expect([none.status, none.headers["retry-after"], JSON.parse(none.body)]).toStrictEqual([503, "1", { error: "no_backend", message: "there are no backends" }])
  })

  it("a URI too long for an IIP path is 414, not a broken connection", async () => {
    const adapter = await startAdapter({ routes: [{ host: ".*", to: lbFor(await namedServer(cleanup, "a")) }] })
    const answer = await request(adapter.address.port, { path: `/who?q=${"x".repeat(2100)}` })
    expect([answer.status, JSON.parse(answer.body).error]).toStrictEqual([414, "uri_too_long"])
    expect((await request(adapter.address.port, { path: "/who" })).body).toBe("a")
  })

  it("iip-mesh http-adapter routes by --route HOSTREGEX=list and rejects a list entry without weight in one line", async () => {
    const a = await namedServer(cleanup, "a")
    const b = await namedServer(cleanup, "b")
    const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
    // The refused start runs alongside the good one (each start loads the CLI: about 2 s here).
    const bad = spawn(process.execPath, [main, "http-adapter", "--route", `.*=${addressOf(a)}`], { stdio: ["ignore", "pipe", "pipe"] })
    cleanup.add(() => bad.kill("SIGKILL"))
    let stderr = ""
    bad.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    const badExit = withTimeout(new Promise<number | null>((done) => bad.on("close", done)), CHILD_START_MS, "the refused http-adapter to exit")
    const child = spawn(
      process.execPath,
      [main, "http-adapter", "--listen", "127.0.0.1:0", "--route", `a\\.test=${addressOf(a)}#1`, "--route", `.*=${addressOf(b)}#2`],
      { stdio: ["ignore", "pipe", "pipe"] }
    )
    cleanup.add(() => child.kill("SIGKILL"))
    const listening = new Promise<number>((found, failed) => {
      let out = ""
      child.stdout.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        const match = /listening on 127\.0\.0\.1:(\d+)\n/.exec(out)
        if (match !== null) found(Number(match[1]))
      })
      child.once("exit", (code) => failed(new Error(`http-adapter exited with ${code}`)))
    })
    const port = await withTimeout(listening, CHILD_START_MS, "http-adapter to listen")
    expect((await request(port, { path: "/who", headers: { host: "a.test" } })).body).toBe("a")
    expect((await request(port, { path: "/who", headers: { host: "other" } })).body).toBe("b")
    expect(await badExit).toBe(1)
    expect(stderr).toBe(
      `iip-mesh http-adapter: --route ".*=${addressOf(a)}": invalid backend list "${addressOf(a)}": "${addressOf(a)}" has no weight (expected HOST:PORT#WEIGHT with WEIGHT an integer from 1 to 100)\n`
    )
  }, holdsStarts(1, 10_000))
})
