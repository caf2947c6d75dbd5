// The outbound listener's HTTP/1.1 (issue 14: our own server over llhttp in place of node:http's)
// keeps what node:http's server guaranteed the app. Through a sidecar pair, byte by byte from a
// raw client: pipelined requests answered in order; `Expect: 100-continue` answered 100 before
// the body is sent, other expectations 417; a body in a coding besides chunked 501; no Host (or two) on HTTP/1.1, Transfer-Encoding with
// Content-Length: 400 and the close, the app seeing nothing; CONNECT: 400 bad_target and the close
// (it was cut without an answer); a head over node's 16 KiB: 431;
// a request line in HTTP/0.9 or HTTP/2.0: 505 and the close, never routed;
// HTTP/1.0 and `Connection: close` end the connection after the answer; HEAD gets no body and the
// connection goes on. On the listener alone, with short timeouts: a slow head or a slow body is
// answered 408 and closed, an idle keep-alive connection closed; one request at a time (the next
// waits its turn); a body nobody reads holds the client back, then arrives whole; each
// connection's llhttp parser is closed once the connection is done; past maxConnections a new
// connection is closed at once (an app, or any process in the pod, held every descriptor before).
import * as net from "node:net"
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest"
import type { Http1ListenerOptions } from "../../src/sidecar/http1Listener.ts"
import { HTTPParser } from "../../src/sidecar/llhttp.ts"
import type { OutboundCall } from "../../src/sidecar/outboundCall.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { listenOutbound } from "../support/outboundListener.ts"
import { HttpStreamParser, type RawMessage, RawHttpClient } from "../support/rawHttp.ts"
import { echoRequest, type Mesh, sidecarConfig, startMesh, startSidecar } from "../support/sidecarHarness.ts"

const bodyOf = (message: RawMessage) => JSON.parse(message.body.toString("utf8")) as { url: string; body: string; method: string }
const header = (message: RawMessage, name: string) => message.headers.find(([n]) => n.toLowerCase() === name)?.[1]

describe("outbound HTTP/1.1 through the sidecars", () => {
  const cleanup = new Cleanup()
  let mesh: Mesh

  beforeAll(async () => {
    mesh = await startMesh(cleanup, echoRequest, { a: { tracing: false }, b: { tracing: false } })
  })
  afterAll(() => cleanup.run())

  const connect = () => RawHttpClient.connect(cleanup, mesh.a.outboundPort)

  it("answers pipelined requests in order, each with its own body", async () => {
    const client = await connect()
    client.write(
      "GET /one HTTP/1.1\r\nhost: catalog\r\n\r\n" +
        "POST /two HTTP/1.1\r\nhost: catalog\r\ncontent-length: 3\r\n\r\nabc" +
        "POST /three HTTP/1.1\r\nhost: catalog\r\ntransfer-encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
    )
    await client.untilResponses(3)
    expect(client.responses.map((r) => r.startLine)).toStrictEqual(["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
    expect(client.responses.map((r) => [bodyOf(r).url, bodyOf(r).body])).toStrictEqual([["/one", ""], ["/two", "abc"], ["/three", "def"]])
    expect(client.closed).toBe(false)
  })

  it("a chunked request's trailers are no part of the next request: neither their fields nor the URL llhttp hands over with them (its own again)", async () => {
    const client = await connect()
    const many = Array.from({ length: 40 }, (_, i) => `x-t${i}: v\r\n`).join("")
    client.write(
      "POST /first-url HTTP/1.1\r\nhost: catalog\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-injected: 1\r\n\r\n" +
        "GET /second-url HTTP/1.1\r\nhost: catalog\r\n\r\n" +
        // More trailer fields than llhttp hands over at once (32): some go before the message's end.
        `POST /third-url HTTP/1.1\r\nhost: catalog\r\ntransfer-encoding: chunked\r\n\r\n0\r\n${many}\r\n` +
        "GET /fourth-url HTTP/1.1\r\nhost: catalog\r\n\r\n"
    )
    await client.untilResponses(4)
    const answers = client.responses.map((r) => JSON.parse(r.body.toString("utf8")) as { url: string; headers: Record<string, string> })
    expect(answers.map((a) => a.url)).toStrictEqual(["/first-url", "/second-url", "/third-url", "/fourth-url"])
    for (const answer of answers) expect(Object.keys(answer.headers).filter((name) => name.startsWith("x-t") || name === "x-injected")).toStrictEqual([])
  })

  it("Expect: 100-continue is answered 100 before the body is sent; another expectation 417", async () => {
    const client = await connect()
    client.write("POST /continued HTTP/1.1\r\nhost: catalog\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
    await client.untilResponses(1)
    expect(client.responses[0]!.startLine).toBe("HTTP/1.1 100 Continue")
    client.write("hello")
    await client.untilResponses(2)
    expect(bodyOf(client.responses[1]!).body).toBe("hello")
    client.write("GET /teapot HTTP/1.1\r\nhost: catalog\r\nexpect: tea\r\n\r\n")
    await client.untilResponses(3)
    expect(client.responses[2]!.startLine).toBe("HTTP/1.1 417 Expectation Failed")
    const seen = mesh.app.seen.map((r) => r.url)
    expect(seen).toContain("/continued")
    expect(seen).not.toContain("/teapot")
  })

  it("refuses an HTTP/1.1 request without Host, with two Host fields, and Transfer-Encoding with Content-Length, with 400 and the close; the app sees none", async () => {
    for (const head of [
      "GET /no-host HTTP/1.1\r\n\r\n",
      // RFC 9112 3.2: a server MUST answer 400 to more than one Host field (the first went to one service, a proxy before us may have checked the second).
      "GET /two-hosts HTTP/1.1\r\nhost: catalog\r\nhost: billing\r\n\r\n",
      "GET /two-hosts HTTP/1.1\r\nhost: catalog\r\nHost: catalog\r\n\r\n",
      "POST /smuggle HTTP/1.1\r\nhost: catalog\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
    ]) {
      const client = await connect()
      client.write(head)
      await client.untilResponses(1)
      expect(client.responses[0]!.startLine, head).toBe("HTTP/1.1 400 Bad Request")
      await waitFor(() => client.closed, 5000, "the close after a 400")
    }
    expect(mesh.app.seen.map((r) => r.url)).not.toContain("/no-host")
    expect(mesh.app.seen.map((r) => r.url)).not.toContain("/two-hosts")
    expect(mesh.app.seen.map((r) => r.url)).not.toContain("/smuggle")
  })

  it("a request line whose version is neither HTTP/1.0 nor HTTP/1.1 (llhttp lets HTTP/0.9 and HTTP/2.0 through) is answered 505 and the close, after the answers owed before it; the app sees none", async () => {
    for (const bytes of [
      "GET /v09 HTTP/0.9\r\nhost: catalog\r\nconnection: keep-alive\r\n\r\nGET /after-version HTTP/1.1\r\nhost: catalog\r\n\r\n",
      "POST /v20 HTTP/2.0\r\nhost: catalog\r\nconnection: keep-alive\r\ncontent-length: 5\r\n\r\nhelloGET /after-version HTTP/1.1\r\nhost: catalog\r\n\r\n",
      "POST /v20 HTTP/2.0\r\nhost: catalog\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /after-version HTTP/1.1\r\nhost: catalog\r\n\r\n",
      "GET /v20-upgrade HTTP/2.0\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nGET /after-version HTTP/1.1\r\nhost: catalog\r\n\r\n"
    ]) {
      const client = await connect()
      client.write(bytes)
      await waitFor(() => client.closed, 5000, "the close after a 505")
      expect(client.responses.map((r) => r.startLine), bytes).toStrictEqual(["HTTP/1.1 505 HTTP Version Not Supported"])
    }
    // Behind a request kept alive: its answer first, then the 505 in its turn, then the close.
    const client = await connect()
    client.write("GET /before-version HTTP/1.1\r\nhost: catalog\r\n\r\nGET /v20 HTTP/2.0\r\nhost: catalog\r\n\r\n")
    await waitFor(() => client.closed, 5000, "the close after a 505")
    expect(client.responses.map((r) => r.startLine)).toStrictEqual(["HTTP/1.1 200 OK", "HTTP/1.1 505 HTTP Version Not Supported"])
    const seen = mesh.app.seen.map((r) => r.url)
    expect(seen).toContain("/before-version")
    for (const url of ["/v09", "/v20", "/v20-upgrade", "/after-version"]) expect(seen).not.toContain(url)
  })

  it("a body in a transfer coding besides chunked (gzip, chunked; or split over two fields) is answered 501 and the close: the mesh would drop the coding and hand the app gzip bytes as plain; the app sees none", async () => {
    const gzipped = "1f8b0800000000000003cb48cdc9c90700867a36c305000000"
    const chunked = `${(gzipped.length / 2).toString(16)}\r\n${Buffer.from(gzipped, "hex").toString("latin1")}\r\n0\r\n\r\n`
    for (const codings of ["transfer-encoding: gzip, chunked\r\n", "transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n", "Transfer-Encoding: deflate ,chunked\r\n"]) {
      const client = await connect()
      client.write(Buffer.from(`POST /coded HTTP/1.1\r\nhost: catalog\r\n${codings}\r\n${chunked}`, "latin1"))
      await client.untilResponses(1)
      expect(client.responses[0]!.startLine, codings).toBe("HTTP/1.1 501 Not Implemented")
      await waitFor(() => client.closed, 5000, "the close after a 501")
    }
    // Asked for a 100 first: the 501 in its place, not a 100 that has the body sent for nothing.
    const asking = await connect()
    asking.write("POST /coded HTTP/1.1\r\nhost: catalog\r\nexpect: 100-continue\r\ntransfer-encoding: gzip, chunked\r\n\r\n")
    await asking.untilResponses(1)
    expect(asking.responses[0]!.startLine).toBe("HTTP/1.1 501 Not Implemented")
    // Plain chunked still goes through.
    const client = await connect()
    client.write(`POST /chunked HTTP/1.1\r\nhost: catalog\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`)
    await client.untilResponses(1)
    expect(bodyOf(client.responses[0]!)).toMatchObject({ url: "/chunked", body: "abc" })
    expect(mesh.app.seen.map((r) => r.url)).not.toContain("/coded")
  })

  it("CONNECT (a tunnel, as an app with HTTPS_PROXY asks) is answered 400 bad_target and closed, not cut without a word; the app sees nothing", async () => {
    const client = await connect()
    client.write("CONNECT catalog:443 HTTP/1.1\r\nhost: catalog:443\r\n\r\n")
    await client.untilResponses(1)
    const answer = client.responses[0]!
    expect(answer.startLine).toBe("HTTP/1.1 400 Bad Request")
    expect(header(answer, "x-iip-mesh-error")).toBe("outbound; reason=bad_target")
    expect(JSON.parse(answer.body.toString("utf8"))).toMatchObject({ error: "bad_target", hop: "outbound" })
    await waitFor(() => client.closed, 5000, "the close after the answer")
    expect(mesh.app.seen.map((r) => r.method)).not.toContain("CONNECT")
  })

  it("a head over node's 16 KiB is answered 431", async () => {
    const client = await connect()
    client.write(`GET /huge HTTP/1.1\r\nhost: catalog\r\nx-big: ${"a".repeat(17 * 1024)}\r\n\r\n`)
    await client.untilResponses(1)
    expect(client.responses[0]!.startLine).toBe("HTTP/1.1 431 Request Header Fields Too Large")
    await waitFor(() => client.closed, 5000, "the close after a 431")
  })

  it("HTTP/1.0 and Connection: close end the connection after the answer", async () => {
    for (const head of ["GET /old HTTP/1.0\r\nhost: catalog\r\n\r\n", "GET /last HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n"]) {
      const client = await connect()
      client.write(head)
      await client.untilResponses(1)
      expect(client.responses[0]!.startLine, head).toBe("HTTP/1.1 200 OK")
      expect(header(client.responses[0]!, "connection"), head).toBe("close")
      await waitFor(() => client.closed, 5000, "the close after the answer")
    }
  })

  it("HEAD gets the head alone, and the connection goes on", async () => {
    const socket = net.connect(mesh.a.outboundPort, "127.0.0.1")
    cleanup.add(() => void socket.destroy())
    const parser = new HttpStreamParser("response")
    const responses: Array<RawMessage> = []
    // The first answer (HEAD's) is bodiless, whichever read brings it.
    let heads = 0
    socket.on("data", (chunk: Buffer) => responses.push(...parser.push(chunk, () => heads++ === 0)))
    socket.write("HEAD /head HTTP/1.1\r\nhost: catalog\r\n\r\nGET /after HTTP/1.1\r\nhost: catalog\r\n\r\n")
    await waitFor(() => responses.length >= 2, 5000, "two answers")
    expect(responses[0]!.startLine).toBe("HTTP/1.1 200 OK")
    expect(responses[0]!.body.length).toBe(0)
    expect(Number(header(responses[0]!, "content-length"))).toBeGreaterThan(0)
    expect(bodyOf(responses[1]!).url).toBe("/after")
  })
})

describe("the sidecar's --max-app-connections", () => {
  const cleanup = new Cleanup()
  afterAll(() => cleanup.run())

  it("closes an app connection past the cap and logs outbound-connections-full with the cap (throttled: 20 lines, then the count left out)", async () => {
    const lines: Array<Record<string, unknown>> = []
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", maxAppConnections: 2 }), (event, fields) => {
      if (event === "outbound-connections-full") lines.push(fields)
    })
    const held = await Promise.all([0, 1].map(async () => {
      const client = await RawHttpClient.connect(cleanup, running.outboundPort)
      client.write("GET /slow HTTP/1.1\r\nhost: catalog\r\n")
      return client
    }))
    const extras: Array<RawHttpClient> = []
    for (let i = 0; i < 25; i++) {
      const extra = await RawHttpClient.connect(cleanup, running.outboundPort)
      extra.write("GET / HTTP/1.1\r\nhost: catalog\r\n\r\n")
      extras.push(extra)
      await waitFor(() => extra.closed, 5000, "the connection past the cap to be closed")
    }
    expect(extras.every((extra) => extra.responses.length === 0)).toBe(true)
    expect(held.every((client) => !client.closed)).toBe(true)
    expect(lines).toHaveLength(20)
    expect(lines[0]).toMatchObject({ maxAppConnections: 2 })
  })
})

describe("the outbound listener alone", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const start = async (onRequest: (call: OutboundCall) => void, options: Partial<Http1ListenerOptions> = {}) => {
    const { listener, port } = await listenOutbound(cleanup, onRequest, options)
    const sockets: Array<net.Socket> = []
    listener.server.on("connection", (socket: net.Socket) => sockets.push(socket))
    return { port, sockets }
  }

  const answer = (call: OutboundCall, text: string) => {
    call.writeHead(200, [["content-length", String(text.length)]])
    call.end(text)
  }

  it("frees each connection's llhttp parser once it is done: Connection: close, a bad request, a client that leaves", async () => {
    // An open node HTTPParser is never garbage collected (nor its native half, about 10 KB, nor
    // what its callbacks reach): close() is the only way it goes.
    // The parsers this test's connections make (initialize), and the ones closed (another test's may close meanwhile).
    const made = vi.spyOn(HTTPParser.prototype, "initialize")
    const closes = vi.spyOn(HTTPParser.prototype, "close")
    cleanup.add(() => {
      made.mockRestore()
      closes.mockRestore()
    })
    const { port } = await start((call) => answer(call, "ok"))
    const byClose = await RawHttpClient.connect(cleanup, port)
    byClose.write("GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
    const bad = await RawHttpClient.connect(cleanup, port)
    bad.write("GET / HTTP/1.1\r\n\r\n")
    await waitFor(() => byClose.closed && bad.closed, 5000, "both closed by the listener")
    expect(byClose.responses.map((r) => r.startLine)).toStrictEqual(["HTTP/1.1 200 OK"])
    expect(bad.responses.map((r) => r.startLine)).toStrictEqual(["HTTP/1.1 400 Bad Request"])
    const leaving = net.connect(port, "127.0.0.1")
    cleanup.add(() => void leaving.destroy())
    leaving.on("error", () => {})
    leaving.write("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    await new Promise((resolve) => leaving.once("data", resolve))
    leaving.destroy()
    expect(made.mock.contexts).toHaveLength(3)
    await waitFor(() => made.mock.contexts.every((parser) => closes.mock.contexts.includes(parser)), 5000, "the three parsers closed")
  })

  it("holds at most maxConnections: one past it is closed at once, unread, and said (onDropped); once one closes, a new one is served", async () => {
    let dropped = 0
    const { port } = await start((call) => answer(call, "ok"), { maxConnections: 3, onDropped: () => dropped++ })
    // Three apps' connections that never finish a head (slowloris): each holds its place until the head timeout.
    const held = await Promise.all([0, 1, 2].map(async () => {
      const client = await RawHttpClient.connect(cleanup, port)
      client.write("GET /slow HTTP/1.1\r\nhost: a\r\n")
      return client
    }))
    const extra = await RawHttpClient.connect(cleanup, port)
    extra.write("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    await waitFor(() => extra.closed, 5000, "the connection past the cap to be closed")
    expect(extra.responses).toEqual([])
    expect(dropped).toBe(1)
    held[0]!.destroy()
    // The listener counts the close once it sees it: a new connection is served from then on.
    await waitFor(() => held[0]!.closed, 5000, "the held connection's close")
    let served: RawHttpClient | undefined
    for (let tries = 0; served === undefined; tries++) {
      const client = await RawHttpClient.connect(cleanup, port)
      client.write("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
      await client.untilResponses(1, 5000)
      if (client.responses.length === 1) served = client
      else expect(tries, "a place freed by the close").toBeLessThan(50)
    }
    expect(served.responses[0]!.body.toString()).toBe("ok")
  })

  it("CONNECT: a caller that keeps its side open after the 400 does not hold its connection (nor its place under maxConnections)", async () => {
    // The answer is written and the listener's end sent; no timer watches the socket after that,
    // so a caller that never closes its side would hold the connection (and a place) for ever.
    const { port, sockets } = await start((call) => answer(call, "ok"), { maxConnections: 1 })
    const client = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
    cleanup.add(() => void client.destroy())
    client.on("error", () => {})
    const chunks: Array<Buffer> = []
    client.on("data", (chunk: Buffer) => chunks.push(chunk))
    let ended = false
    client.once("end", () => (ended = true))
    client.write("CONNECT catalog:443 HTTP/1.1\r\nhost: catalog:443\r\n\r\n")
    await waitFor(() => ended, 5000, "the answer and the listener's end")
    expect(Buffer.concat(chunks).toString("latin1")).toMatch(/^HTTP\/1\.1 400 /)
    await waitFor(() => sockets.length === 1 && sockets[0]!.destroyed, 5000, "the listener's socket closed although the caller keeps its side open")
    const next = await RawHttpClient.connect(cleanup, port)
    next.write("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    await next.untilResponses(1, 5000)
    expect(next.responses.map((r) => r.body.toString())).toEqual(["ok"])
  })

  it("a slow head, then a slow body, are answered 408 and closed", async () => {
    const { port } = await start((call) => void call.readBody(1024).then(() => answer(call, "late"), () => {}), { headersTimeoutMs: 200, requestTimeoutMs: 400 })
    for (const partial of ["GET /slow HTTP/1.1\r\nhost: a\r\n", "POST /slow HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc"]) {
      const client = await RawHttpClient.connect(cleanup, port)
      const started = performance.now()
      client.write(partial)
      await client.untilResponses(1, 5000)
      expect(client.responses[0]!.startLine, partial).toBe("HTTP/1.1 408 Request Timeout")
      expect(performance.now() - started).toBeGreaterThanOrEqual(150)
      await waitFor(() => client.closed, 5000, "the close after a 408")
    }
  })

  it("a body too slow while its answer streams to the close (HTTP/1.0): the connection is reset, not ended as if the answer were whole", async () => {
    // The answer's head and a first part are out, with no length: to an HTTP/1.0 caller its end is the close.
    const { port } = await start((call) => {
      call.writeHead(200, [])
      call.write(Buffer.from("partial"))
    }, { requestTimeoutMs: 300 })
    const socket = net.connect(port, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    const ending = new Promise<string>((resolve) => {
      socket.on("end", () => resolve("end"))
      socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    })
    socket.resume()
    socket.write("POST /slow HTTP/1.0\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")
    expect(await withTimeout(ending, 10_000, "the connection's end")).toBe("ECONNRESET")
  })

  it("an h2c-only upgrade's broken body read while the request before it is at the far app: that request's answer first, then the 400, then the close", async () => {
    const calls: Array<OutboundCall> = []
    let strays = 0
    const { port } = await start((call) => void calls.push(call), { onStray: () => strays++ })
    const client = await RawHttpClient.connect(cleanup, port)
    client.write("GET /1 HTTP/1.1\r\nhost: a\r\n\r\n")
    await waitFor(() => calls.length === 1, 5000, "the first request")
    client.write("POST /2 HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
    // Its bytes refused (counted as any others after a request), or the first request cut off for them.
    await waitFor(() => strays === 1 || calls[0]!.destroyed, 5000, "the broken body to be read")
    expect(calls[0]!.destroyed).toBe(false)
    answer(calls[0]!, "one")
    await client.untilResponses(2, 5000)
    expect(client.responses.map((r) => r.startLine)).toStrictEqual(["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"])
    expect(client.responses[0]!.body.toString()).toBe("one")
    await waitFor(() => client.closed, 5000, "the close after the 400")
    expect(calls.length).toBe(1)
  })

  it("closes a keep-alive connection idle past its timeout (announced in keep-alive), not before", async () => {
    const { port } = await start((call) => answer(call, "ok"), { keepAliveTimeoutMs: 1000 })
    const client = await RawHttpClient.connect(cleanup, port)
    client.write("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    await client.untilResponses(1)
    const answered = performance.now()
    expect(header(client.responses[0]!, "keep-alive")).toBe("timeout=1")
    await waitFor(() => client.closed, 5000, "the idle close")
    expect(performance.now() - answered).toBeGreaterThanOrEqual(950)
  })

  it("takes one request at a time: the next one waits until the answer before it is written", async () => {
    const calls: Array<OutboundCall> = []
    const { port } = await start((call) => void calls.push(call))
    const client = await RawHttpClient.connect(cleanup, port)
    client.write("GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\n\r\nGET /3 HTTP/1.1\r\nhost: a\r\n\r\n")
    await waitFor(() => calls.length === 1, 5000, "the first request")
    // Given time to go wrong, nothing more reaches the handler before the first answer.
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(calls.map((c) => c.url)).toStrictEqual(["/1"])
    answer(calls[0]!, "one")
    await waitFor(() => calls.length === 2, 5000, "the second request")
    answer(calls[1]!, "two")
    await waitFor(() => calls.length === 3, 5000, "the third request")
    answer(calls[2]!, "three")
    await client.untilResponses(3)
    expect(client.responses.map((r) => r.body.toString())).toStrictEqual(["one", "two", "three"])
  })

  it("hands over a body that came with its head at once (bodyIfHere); one still on its way, or over the limit, only through readBody", async () => {
    const taken: Array<string> = []
    const calls: Array<OutboundCall> = []
    const { port } = await start((call) => {
      calls.push(call)
      const limit = call.url === "/small-limit" ? 2 : 1024
      const here = call.bodyIfHere!(limit)
      taken.push(here === undefined ? "-" : here.toString())
      if (here !== undefined) return answer(call, `now:${here}`)
      void call.readBody(1024).then((body) => answer(call, `later:${body}`))
    })
    const client = await RawHttpClient.connect(cleanup, port)
    client.write("POST /whole HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc")
    await client.untilResponses(1)
    client.write("POST /small-limit HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\ndef")
    await client.untilResponses(2)
    client.write("POST /split HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n")
    await waitFor(() => calls.length === 3, 5000, "the third request's head")
    client.write("ghi")
    await client.untilResponses(3)
    client.write("GET /none HTTP/1.1\r\nhost: a\r\n\r\n")
    await client.untilResponses(4)
    expect(taken).toStrictEqual(["abc", "-", "-", ""])
    expect(client.responses.map((r) => r.body.toString())).toStrictEqual(["now:abc", "later:def", "later:ghi", "now:"])
  })

  it("header names that are Object.prototype's are headers like any other in the record: __proto__, constructor; absent ones read undefined", async () => {
    const calls: Array<OutboundCall> = []
    const { port } = await start((call) => {
      calls.push(call)
      answer(call, "ok")
    })
    const client = await RawHttpClient.connect(cleanup, port)
    client.write("GET / HTTP/1.1\r\nhost: a\r\n__proto__: p\r\nConstructor: c\r\nx-twice: 1\r\nx-twice: 2\r\n\r\n")
    await client.untilResponses(1)
    const headers = calls[0]!.headers as Record<string, unknown>
    expect([headers["__proto__"], headers["constructor"], headers["x-twice"], headers["toString"], headers["hasOwnProperty"]]).toStrictEqual(["p", "c", "1, 2", undefined, undefined])
    expect(Object.keys(headers)).toStrictEqual(["host", "__proto__", "constructor", "x-twice"])
  })

  it("an upgrade after a request on the same keep-alive connection gets the socket with the bytes after its head, and what follows", async () => {
    // After the first read llhttp reads the socket itself (consume mode): the upgrade hands it back.
    let upgraded: { url: string; head: Buffer; socket: net.Socket } | undefined
    const { port } = await start((call) => answer(call, "ok"), {
      onUpgrade: (request, socket, head) => void (upgraded = { url: request.url, head, socket })
    })
    const client = await RawHttpClient.connect(cleanup, port)
    client.write("GET /first HTTP/1.1\r\nhost: a\r\n\r\n")
    await client.untilResponses(1)
    client.write("GET /second HTTP/1.1\r\nhost: a\r\n\r\n")
    await client.untilResponses(2)
    client.write("GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nfirst-bytes")
    await waitFor(() => upgraded !== undefined, 5000, "the upgrade")
    expect([upgraded!.url, upgraded!.head.toString("latin1")]).toStrictEqual(["/ws", "first-bytes"])
    const later: Array<Buffer> = []
    upgraded!.socket.on("data", (data: Buffer) => later.push(data))
    client.write("more-bytes")
    await waitFor(() => Buffer.concat(later).toString("latin1") === "more-bytes", 5000, "the bytes after the upgrade")
    upgraded!.socket.destroy()
  })

  it("answers in a row with the same status and headers, then others: each head says its own status, headers, length and date", async () => {
    const answers: Array<[number, ReadonlyArray<readonly [string, string]>, string]> = [
      [200, [["content-type", "text/plain"], ["content-length", "2"]], "ab"],
      [200, [["content-type", "text/plain"], ["content-length", "2"]], "cd"],
      [200, [["content-type", "text/html"], ["content-length", "2"]], "ef"],
      [201, [["content-type", "text/html"], ["content-length", "2"]], "gh"],
      [200, [["content-type", "text/html"], ["date", "Mon, 01 Jan 2024 00:00:00 GMT"], ["content-length", "2"]], "ij"],
      [200, [["content-type", "text/html"]], "klm"]
    ]
    let next = 0
    const { port } = await start((call) => {
      const [status, headers, body] = answers[next++]!
      call.writeHead(status, headers)
      call.end(body)
    })
    const client = await RawHttpClient.connect(cleanup, port)
    for (let i = 0; i < answers.length; i++) {
      client.write("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
      await client.untilResponses(i + 1)
    }
    const seen = client.responses.map((r) => ({ status: Number(r.startLine.split(" ")[1]), type: header(r, "content-type"), length: header(r, "content-length"), date: header(r, "date") !== undefined, body: r.body.toString() }))
    expect(seen).toStrictEqual([
      { status: 200, type: "text/plain", length: "2", date: true, body: "ab" },
      { status: 200, type: "text/plain", length: "2", date: true, body: "cd" },
      { status: 200, type: "text/html", length: "2", date: true, body: "ef" },
      { status: 201, type: "text/html", length: "2", date: true, body: "gh" },
      { status: 200, type: "text/html", length: "2", date: true, body: "ij" },
      { status: 200, type: "text/html", length: "3", date: true, body: "klm" }
    ])
    expect(header(client.responses[4]!, "date")).toBe("Mon, 01 Jan 2024 00:00:00 GMT")
    for (const r of client.responses) expect(r.headers.filter(([n]) => n === "date")).toHaveLength(1)
  })

  it("a body that came in several reads before anyone read it is handed over whole and in order, by readBody and by body()", async () => {
    const calls: Array<OutboundCall> = []
    const { port, sockets } = await start((call) => void calls.push(call))
    const client = await RawHttpClient.connect(cleanup, port)
    let sent = 0
    const send = async (text: string) => {
      client.write(text)
      sent += text.length
      await waitFor(() => sockets[0]?.bytesRead === sent, 5000, "the listener to read what was sent")
    }
    for (const [url, take] of [["/whole", "readBody"], ["/streamed", "body"]] as const) {
      await send(`POST ${url} HTTP/1.1\r\nhost: a\r\ncontent-length: 9\r\n\r\n`)
      await send("abc")
      await send("def")
      await send("ghi")
      const call = calls.at(-1)!
      if (take === "readBody") answer(call, `${take}:${await call.readBody(1024)}`)
      else {
        const parts: Array<Buffer> = []
        for await (const part of call.body()) parts.push(part)
        answer(call, `${take}:${parts.length}:${Buffer.concat(parts)}`)
      }
      await client.untilResponses(calls.length)
    }
    expect(client.responses.map((r) => r.body.toString())).toStrictEqual(["readBody:abcdefghi", "body:3:abcdefghi"])
  })

  it("a body nobody reads holds the client back; read, it arrives whole and in order", async () => {
    let current: OutboundCall | undefined
    const { port, sockets } = await start((call) => void (current = call))
    const client = net.connect(port, "127.0.0.1")
    cleanup.add(() => void client.destroy())
    const piece = `${(64 * 1024).toString(16)}\r\n${"a".repeat(64 * 1024)}\r\n`
    const pieces = 128 // 8 MiB
    client.write("POST /upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
    for (let i = 0; i < pieces; i++) client.write(piece, "latin1")
    client.write("0\r\n\r\n")
    await waitFor(() => current !== undefined && sockets[0]?.isPaused() === true, 5000, "the listener to stop reading")
    // Held back: a bounded part of the 8 MiB was read (the body's high-water mark and a socket read or two).
    expect(sockets[0]!.bytesRead).toBeLessThan(1024 * 1024)
    let bytes = 0
    for await (const part of current!.body()) {
      if (part.some((byte) => byte !== 0x61)) throw new Error("a byte out of place")
      bytes += part.length
    }
    expect(bytes).toBe(pieces * 64 * 1024)
  })
})
