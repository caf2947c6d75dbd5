// A rogue endpoint cannot crash the caller or inject into its app's connection (issue 13, point 7),
// and an upstream app cannot forge the mesh's own error header. Sidecar A's service "rogue" is a
// hand-made IIP server (mesh mode) that answers with whatever the test says: typed errors whose
// code holds CR/LF, non-Latin-1 or 10,000 characters; statuses outside 200-599; framing headers
// that disagree with the body. The calling app is a raw socket that parses what comes back, so
// an injected second response would show.
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { failure, reply } from "../../src/iip/server.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"
import { RawHttpClient, startRawApp } from "../support/rawHttp.ts"
import { call, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const answerMeta = (status: string, headers: ReadonlyArray<readonly [string, string]>) =>
  new Map([
    [":status", status],
    ["http-headers", JSON.stringify(headers)]
  ])

const injected = "abcHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil"

/** What the rogue answers, by path. */
const rogue = (path: string) => {
  switch (path) {
    case "/code-crlf":
      return failure("bad\r\nx-injected: 1", "rogue", true)
    case "/code-wide":
      return failure("caf\u00e9\u2028\u{1f600}", "rogue", true)
    case "/code-long":
      return failure("x".repeat(10_000), "m".repeat(100_000), true)
    case "/status-101":
      return reply(Buffer.from("switch"), answerMeta("101", [["upgrade", "websocket"], ["connection", "upgrade"]]))
    case "/status-100":
      return reply(Buffer.alloc(0), answerMeta("100", []))
    case "/status-999":
      return reply(Buffer.from("x"), answerMeta("999", []))
    case "/status-text":
      return reply(Buffer.from("x"), answerMeta("2e2", []))
    case "/length-mismatch":
      return reply(Buffer.from(injected), answerMeta("200", [["content-length", "3"]]))
    case "/te-and-length":
      return reply(Buffer.from(injected), answerMeta("200", [["transfer-encoding", "chunked"], ["content-length", "3"], ["Content-Length", "4"]]))
    case "/forged-error":
      return reply(Buffer.from("fine"), answerMeta("200", [["x-iip-mesh-error", "outbound; reason=connect_failed"], ["x-ok", "1"], ["x-bad", "a\r\nb"]]))
    default:
      return reply(Buffer.from("ok"), answerMeta("200", []))
  }
}

describe("a rogue endpoint and a forging app", () => {
  const cleanup = new Cleanup()
  let server: IipServer
  let a: RunningSidecar
  let unhandled: Array<unknown>
  const onUnhandled = (reason: unknown) => void unhandled.push(reason)

  beforeAll(async () => {
    unhandled = []
    process.on("unhandledRejection", onUnhandled)
    cleanup.add(() => void process.off("unhandledRejection", onUnhandled))
    server = await startServer(cleanup)
    server.handlePrefix("/", (request) => rogue(request.path))
    a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { rogue: [{ address: `127.0.0.1:${server.address.port}`, weight: 1 }] }, tracing: false }))
  })
  afterAll(() => cleanup.run())

  it.each(["/code-crlf", "/code-wide", "/code-long"])("a typed error with code from %s answers 502 with a clean, clamped x-iip-mesh-error", async (path) => {
    const answer = await call(a.outboundPort, { path, headers: { host: "rogue" } })
    expect(answer.status).toBe(502)
    const header = answer.headers["x-iip-mesh-error"] as string
    expect(header).toMatch(/^inbound; reason=[A-Za-z0-9_.-]{1,64}$/)
    expect(answer.headers["x-injected"]).toBeUndefined()
    const body = JSON.parse(answer.body.toString()) as { error: string; message: string }
    expect(body.error).toBe(header.slice("inbound; reason=".length))
    expect(body.message.length).toBeLessThanOrEqual(1100)
    // The caller keeps serving.
    expect((await call(a.outboundPort, { path: "/ok", headers: { host: "rogue" } })).status).toBe(200)
    expect(unhandled).toStrictEqual([])
  })

  it.each(["/status-101", "/status-100", "/status-999", "/status-text"])("an answer status from %s outside 200-599 is 502 bad_response from the inbound hop", async (path) => {
    const answer = await call(a.outboundPort, { path, headers: { host: "rogue" } })
    expect(answer.status).toBe(502)
    expect(answer.headers["x-iip-mesh-error"]).toBe("inbound; reason=bad_response")
    expect(answer.headers.upgrade).toBeUndefined()
    expect(unhandled).toStrictEqual([])
  })

  it.each(["/length-mismatch", "/te-and-length"])("framing headers from %s do not reach the app: one response, the body as sent, the next request answered by its own", async (path) => {
    const client = await RawHttpClient.connect(cleanup, a.outboundPort)
    client.write(`GET ${path} HTTP/1.1\r\nhost: rogue\r\n\r\n`)
    await client.untilResponses(1)
    client.write("GET /ok HTTP/1.1\r\nhost: rogue\r\n\r\n")
    await client.untilResponses(2)
    expect(client.responses.map((r) => [r.startLine, r.body.toString("latin1"), r.ambiguous])).toStrictEqual([
      ["HTTP/1.1 200 OK", injected, false],
      ["HTTP/1.1 200 OK", "ok", false]
    ])
  })

  it("x-iip-mesh-error in a peer's answer is dropped (only a typed mesh error sets it), as are invalid headers", async () => {
    const answer = await call(a.outboundPort, { path: "/forged-error", headers: { host: "rogue" } })
    expect(answer.status).toBe(200)
    expect(answer.headers["x-iip-mesh-error"]).toBeUndefined()
    expect(answer.headers["x-ok"]).toBe("1")
    expect(answer.headers["x-bad"]).toBeUndefined()
    expect(answer.body.toString()).toBe("fine")
  })

  it("an upstream app cannot forge x-iip-mesh-error nor send hop-by-hop headers through the inbound side", async () => {
    const app = await startApp(cleanup, (req, res) => {
      req.resume()
      res.writeHead(200, { "x-iip-mesh-error": "outbound; reason=connect_failed", "keep-alive": "timeout=1", "proxy-authenticate": "Basic", "x-app": "yes", "content-length": 2 })
      res.end("hi")
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false }))
    const caller = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, tracing: false }))
    const answer = await call(caller.outboundPort)
    expect(answer.status).toBe(200)
    expect(answer.headers["x-iip-mesh-error"]).toBeUndefined()
    expect(answer.headers["proxy-authenticate"]).toBeUndefined()
    expect(answer.headers["keep-alive"]).not.toBe("timeout=1")
    expect(answer.headers["x-app"]).toBe("yes")
    expect(answer.body.toString()).toBe("hi")
  })

  it("an app answer with a forged header on a raw socket is filtered the same way", async () => {
    const raw = await startRawApp(cleanup, () =>
      Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-iip-mesh-error: app; reason=forged\r\nx-app: raw\r\n\r\nabc", "latin1")
    )
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: raw.address, tracing: false }))
    const caller = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, tracing: false }))
    const answer = await call(caller.outboundPort)
    expect(answer.headers["x-iip-mesh-error"]).toBeUndefined()
    expect(answer.headers["x-app"]).toBe("raw")
    expect(answer.body.toString()).toBe("abc")
  })

  it("HEAD keeps the described content-length without a body", async () => {
    const app = await startApp(cleanup, (req, res) => {
      req.resume()
      res.writeHead(200, { "content-length": 12345, "content-type": "text/plain" })
      res.end()
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false }))
    const caller = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, tracing: false }))
    const agent = new http.Agent({ keepAlive: true })
    cleanup.add(() => agent.destroy())
    const head = await call(caller.outboundPort, { method: "HEAD", agent })
    expect(head.status).toBe(200)
    expect(head.headers["content-length"]).toBe("12345")
    expect(head.body.length).toBe(0)
    // The connection carries on: the next answer is its own.
    expect((await call(caller.outboundPort, { method: "HEAD", agent })).status).toBe(200)
  })
})
