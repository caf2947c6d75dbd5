// The inbound side's own HTTP/1.1 client (src/sidecar/appPool.ts), against real apps on loopback:
// sockets reused and bounded, the head refused before a byte is sent when it cannot be written,
// a refused connection told apart (the app never saw the request), llhttp's strictness on the
// answer (a framing it rejects ends the exchange and the socket), bytes nobody asked for end the
// socket, and a streamed body framed from what really comes; a closed socket's llhttp parser is
// closed too.
import * as http from "node:http"
import type * as net from "node:net"
import { afterEach, describe, expect, it, vi } from "vitest"
import { type AppController, AppPool, type AppPoolHandler } from "../../src/sidecar/appPool.ts"
import { type AppPoolRequest, InvalidRequestHead } from "../../src/sidecar/appRequestHead.ts"
import { HTTPParser } from "../../src/sidecar/llhttp.ts"
import { Cleanup, startRawServer, waitFor, withTimeout } from "../support/iipRaw.ts"

interface Outcome {
  readonly controller: AppController | undefined
  readonly status: number
  readonly headers: ReadonlyArray<string>
  readonly body: string
  readonly error: (Error & { code?: string }) | undefined
}

/** Runs one exchange to its end: the answer, or the error the handler was told of. */
const exchange = (pool: AppPool, request: Partial<AppPoolRequest>): Promise<Outcome> =>
  new Promise((resolve) => {
    let status = 0
    let controller: AppController | undefined
    let headers: ReadonlyArray<string> = []
    const parts: Array<Buffer> = []
    const handler: AppPoolHandler = {
      onRequestStart: (c) => void (controller = c),
      onResponseStart: (_c, s, h) => {
        status = s
        headers = h
      },
      onResponseData: (_c, chunk) => void parts.push(chunk),
      onResponseEnd: () => resolve({ controller, status, headers, body: Buffer.concat(parts).toString(), error: undefined }),
      onResponseError: (_c, error) => resolve({ controller, status, headers, body: Buffer.concat(parts).toString(), error })
    }
    pool.dispatch({ method: "GET", path: "/", headers: [], body: Buffer.alloc(0), ...request }, handler)
  })

/** A node:http app answering with what it saw; counts its connections. */
const startApp = async (cleanup: Cleanup) => {
  const seen: Array<{ method: string; url: string; rawHeaders: Array<string>; body: string }> = []
  const server = http.createServer((req, res) => {
    let body = ""
    req.on("data", (c: Buffer) => (body += c.toString()))
    req.on("end", () => {
      seen.push({ method: req.method!, url: req.url!, rawHeaders: req.rawHeaders, body })
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) })
      res.end(body)
    })
  })
  let connections = 0
  server.on("connection", () => connections++)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { port: (server.address() as net.AddressInfo).port, seen, connections: () => connections }
}

const valueOf = (rawHeaders: ReadonlyArray<string>, name: string): string | undefined => {
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) return rawHeaders[i + 1]
  return undefined
}

describe("the inbound side's app client", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  const poolFor = (port: number, size: number) => {
    const pool = new AppPool("127.0.0.1", port, size)
    cleanup.add(() => pool.destroy())
    return pool
  }

  it("reuses a kept-alive socket, opens at most `size`, and serves the requests past it in order", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 2)
    for (let i = 0; i < 3; i++) expect((await exchange(pool, { method: "POST", path: `/one/${i}`, body: Buffer.from(`b${i}`) })).body).toBe(`b${i}`)
    expect(app.connections()).toBe(1)
    const many = await withTimeout(Promise.all(Array.from({ length: 8 }, (_, i) => exchange(pool, { method: "POST", path: `/many/${i}`, body: Buffer.from(`m${i}`) }))), 5000, "eight requests")
    expect(many.map((o) => o.body)).toStrictEqual(Array.from({ length: 8 }, (_, i) => `m${i}`))
    expect(app.connections()).toBe(2)
    // The host the pool names when the request names none; content-length from the body.
    const last = app.seen.at(-1)!
    expect(valueOf(last.rawHeaders, "host")).toBe(`127.0.0.1:${app.port}`)
    expect(valueOf(last.rawHeaders, "content-length")).toBe("2")
  })

  it("closeIdle closes the idle sockets but the most recently used one, never a busy one: the app sees them close, and the next request takes the kept socket", async () => {
    // A burst's sockets otherwise wait out the app's keep-alive timeout (60 s here, node's default 5 s).
    let held: (() => void) | undefined
    const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      req.resume()
      const answer = () => res.writeHead(200, { "content-length": 2 }).end("ok")
      if (req.url === "/hold") held = answer
      else answer()
    })
    let opened = 0
    let live = 0
    server.on("connection", (socket: net.Socket) => {
      opened++
      live++
      socket.on("close", () => live--)
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }))
    const pool = poolFor((server.address() as net.AddressInfo).port, 8)
    const burst = await withTimeout(Promise.all(Array.from({ length: 8 }, () => exchange(pool, {}))), 5000, "the burst")
    expect(burst.map((o) => o.body)).toStrictEqual(Array(8).fill("ok"))
    expect(opened).toBe(8)
    // One socket busy (its answer held), seven idle: six close, the most recently used idle one stays.
    const busy = exchange(pool, { path: "/hold" })
    await waitFor(() => held !== undefined, 5000, "the held request at the app")
    expect(pool.closeIdle(1)).toBe(6)
    await waitFor(() => live === 2, 5000, "the app's connections down to the busy one and the kept one")
    held!()
    expect((await withTimeout(busy, 5000, "the held answer")).body).toBe("ok")
    expect(pool.closeIdle(1)).toBe(1)
    await waitFor(() => live === 1, 5000, "the app's connections down to the kept one")
    expect((await withTimeout(exchange(pool, {}), 5000, "a request after")).body).toBe("ok")
    expect(opened).toBe(8)
    expect(pool.closeIdle(1)).toBe(0)
  })

  it("a checked head like the last one (its lines kept) still carries each request's own time left, traceparent, path, headers and length; an unchecked one is checked every time", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 1)
    /** A traced request's own traceparent (the inbound side's app span, new every request), from its body. */
    const traceparentOf = (body: string) => `00-${Buffer.from(body.padEnd(16, ".")).toString("hex")}-00000000000000${(body.length % 256).toString(16).padStart(2, "0")}-01`
    const send = (path: string, timeLeft: string | undefined, body: string, extra: ReadonlyArray<string> = [], checked = true) =>
      exchange(pool, {
        method: "POST",
        path,
        headers: ["x-a", "1", "host", "svc", "traceparent", traceparentOf(body), ...(timeLeft === undefined ? [] : ["iip-timeout", timeLeft]), ...extra],
        body: Buffer.from(body),
        ...(checked ? { checked: true as const } : {})
      })
    await send("/p", "100", "one")
    await send("/p", "200", "second")
    await send("/p", undefined, "3")
    await send("/q", "300", "4")
    await send("/q", "300", "5", ["x-b", "2"])
    await send("/q", "300", "6", ["x-b", "3"])
    for (const s of app.seen) expect(valueOf(s.rawHeaders, "traceparent"), s.body).toBe(traceparentOf(s.body))
    const seen = app.seen.map((s) => ({ url: s.url, timeLeft: valueOf(s.rawHeaders, "iip-timeout"), b: valueOf(s.rawHeaders, "x-b"), length: valueOf(s.rawHeaders, "content-length"), body: s.body }))
    expect(seen).toStrictEqual([
      { url: "/p", timeLeft: "100", b: undefined, length: "3", body: "one" },
      { url: "/p", timeLeft: "200", b: undefined, length: "6", body: "second" },
      { url: "/p", timeLeft: undefined, b: undefined, length: "1", body: "3" },
      { url: "/q", timeLeft: "300", b: undefined, length: "1", body: "4" },
      { url: "/q", timeLeft: "300", b: "2", length: "1", body: "5" },
      { url: "/q", timeLeft: "300", b: "3", length: "1", body: "6" }
    ])
    for (const s of app.seen) expect(s.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())).toStrictEqual(["x-a", "host", ...(s.rawHeaders.some((n) => n.toLowerCase() === "x-b") ? ["x-b"] : []), "traceparent", ...(s.rawHeaders.some((n) => n === "iip-timeout") ? ["iip-timeout"] : []), "connection", "content-length"])
    // The same head unchecked, with a value that cannot be written: refused, though its lines were kept before.
    const refused = await send("/q", "300", "7", ["x-b", "bad\r\nx-c: 1"], false)
    expect(refused.error).toBeInstanceOf(InvalidRequestHead)
    await send("/q", "300", "8", ["x-b", "3"], false)
    expect(app.seen.at(-1)!.body).toBe("8")
  })

  it("frees a socket's llhttp parser once the socket closes (an open node HTTPParser is never garbage collected)", async () => {
    // The parsers this test's sockets make (initialize), and the ones closed (another test's may close meanwhile).
    const made = vi.spyOn(HTTPParser.prototype, "initialize")
    const closes = vi.spyOn(HTTPParser.prototype, "close")
    cleanup.add(() => {
      made.mockRestore()
      closes.mockRestore()
    })
    // A raw app: one answer per connection, then the close.
    const app = await startRawServer(cleanup, (socket) => socket.once("data", () => socket.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")))
    const pool = poolFor(app.port, 1)
    // Each answer says Connection: close: the pool closes that socket and opens another.
    for (let i = 0; i < 2; i++) expect((await exchange(pool, {})).body).toBe("ok")
    expect(made.mock.contexts).toHaveLength(2)
    await waitFor(() => made.mock.contexts.every((parser) => closes.mock.contexts.includes(parser)), 5000, "both parsers closed")
  })

  it("a head it cannot write is refused before a byte is sent", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 2)
    for (const headers of [["x-a", "one\r\ninjected: yes"], ["bad name", "v"], ["x-nul", "a\0b"], ["transfer-encoding", "chunked"]]) {
      const outcome = await exchange(pool, { headers })
      expect(outcome.error).toBeInstanceOf(InvalidRequestHead)
    }
    expect(app.connections()).toBe(0)
    expect((await exchange(pool, { headers: ["x-a", "fine"] })).status).toBe(200)
  })

  it("a refused connection keeps ECONNREFUSED (the app never saw the request)", async () => {
    const app = await startApp(cleanup)
    const port = app.port
    await cleanup.run()
    cleanup = new Cleanup()
    const outcome = await withTimeout(exchange(poolFor(port, 2), {}), 5000, "the refused request")
    expect(outcome.error?.code).toBe("ECONNREFUSED")
  })

  it("an answer llhttp rejects (content-length with transfer-encoding) ends the exchange and its socket", async () => {
    let connections = 0
    const raw = await startRawServer(cleanup, (socket) => {
      connections++
      socket.once("data", () => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
    })
    const pool = poolFor(raw.port, 1)
    const first = await withTimeout(exchange(pool, {}), 5000, "the smuggling answer")
    expect(first.error?.code).toMatch(/^HPE_/)
    expect(first.status).toBe(0)
    await withTimeout(exchange(pool, {}), 5000, "a second request")
    expect(connections).toBe(2)
  })

  it("writes the request byte for byte: the head as given, host when none named, keep-alive, the body's length; a body past 16 KiB alike", async () => {
    const received: Array<Buffer> = []
    const raw = await startRawServer(cleanup, (socket) => {
      let seen = Buffer.alloc(0)
      socket.on("data", (data: Buffer) => {
        seen = Buffer.concat([seen, data])
        const end = seen.indexOf("\r\n\r\n")
        if (end === -1) return
        const length = Number(/content-length: (\d+)/.exec(seen.subarray(0, end).toString("latin1"))?.[1] ?? 0)
        if (seen.length < end + 4 + length) return
        received.push(seen)
        seen = Buffer.alloc(0)
        socket.write("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
      })
    })
    const pool = poolFor(raw.port, 1)
    const headers = ["x-one", "a value", "X-Two", "caf\u00e9"]
    const small = Buffer.from("small body")
    const large = Buffer.alloc(20 * 1024, 0x62)
    for (const body of [small, large, Buffer.alloc(0)]) expect((await withTimeout(exchange(pool, { method: "PUT", path: "/p?q=1", headers, body }), 5000, "the answer")).status).toBe(200)
    expect((await withTimeout(exchange(pool, { method: "GET", path: "/g", headers: ["host", "named"], body: Buffer.alloc(0) }), 5000, "the answer")).status).toBe(200)
    const head = (length: number) => `PUT /p?q=1 HTTP/1.1\r\nx-one: a value\r\nX-Two: caf\u00e9\r\nhost: 127.0.0.1:${raw.port}\r\nconnection: keep-alive\r\ncontent-length: ${length}\r\n\r\n`
    expect(received.map((bytes) => bytes.toString("latin1"))).toStrictEqual([
      `${head(small.length)}small body`,
      `${head(large.length)}${"b".repeat(large.length)}`,
      head(0),
      "GET /g HTTP/1.1\r\nhost: named\r\nconnection: keep-alive\r\n\r\n"
    ])
  })

  it("bytes the app sends with no request waiting end the socket; the next request gets a fresh one", async () => {
    let connections = 0
    const raw = await startRawServer(cleanup, (socket) => {
      connections++
      // A whole answer, then a second one nobody asked for, in the same write.
      socket.once("data", () => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil"))
    })
    const pool = poolFor(raw.port, 1)
    const first = await withTimeout(exchange(pool, {}), 5000, "the first answer")
    expect(first.body).toBe("ok")
    const second = await withTimeout(exchange(pool, {}), 5000, "the second request")
    expect(second.body).toBe("ok")
    expect(connections).toBe(2)
  })

  it("bytes after an answer within its read (a second answer begun) end the socket, even when its rest would come only with the next request", async () => {
    let connections = 0
    const raw = await startRawServer(cleanup, (socket) => {
      const connection = ++connections
      let requests = 0
      socket.on("data", () => {
        requests++
        if (connection === 1 && requests === 1) socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-le")
        else if (connection === 1) socket.write("ngth: 4\r\n\r\nevil")
        else socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
      })
    })
    let strays = 0
    const pool = new AppPool("127.0.0.1", raw.port, 1, () => strays++)
    cleanup.add(() => pool.destroy())
    // Two at once: the second waits for the one socket, and would take it as the first's answer ends.
    const [first, second] = await withTimeout(Promise.all([exchange(pool, {}), exchange(pool, {})]), 5000, "both answers")
    expect(first.body).toBe("ok")
    expect(second.body).toBe("ok")
    expect(connections).toBe(2)
    expect(strays).toBe(1)
  })

  it("a 204 or 304 that frames a body and sends it in the same write is answered, its socket not reused, and not counted stray (it is no desync)", async () => {
    const answers = [
      "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello",
      "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ]
    let connections = 0
    const raw = await startRawServer(cleanup, (socket) => {
      const answer = answers[connections++]
      socket.on("data", () => socket.write(answer ?? "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"))
    })
    let strays = 0
    const pool = new AppPool("127.0.0.1", raw.port, 1, () => strays++)
    cleanup.add(() => pool.destroy())
    const outcomes = []
    for (let i = 0; i < 3; i++) outcomes.push(await withTimeout(exchange(pool, {}), 5000, `answer ${i}`))
    expect(outcomes.map((o) => `${o.status} ${o.body} ${o.error?.message ?? ""}`)).toStrictEqual(["204  ", "304  ", "200 ok "])
    expect(connections).toBe(3)
    expect(strays).toBe(0)
  })

  it("an answer's trailers are dropped: they never become the next answer's headers", async () => {
    let connections = 0
    const raw = await startRawServer(cleanup, (socket) => {
      connections++
      let answered = 0
      socket.on("data", () => {
        answered++
        if (answered === 1) socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-trailer\r\n\r\n2\r\nok\r\n0\r\nx-trailer: late\r\n\r\n")
        else socket.write("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-second: yes\r\n\r\ntwo")
      })
    })
    const pool = poolFor(raw.port, 1)
    expect((await withTimeout(exchange(pool, {}), 5000, "the chunked answer")).body).toBe("ok")
    const second = await withTimeout(exchange(pool, {}), 5000, "the second answer")
    expect(second.body).toBe("two")
    expect(second.headers).toStrictEqual(["content-length", "3", "x-second", "yes"])
    expect(connections).toBe(1)
  })

  it("a socket is not reused after an answer that came before the body was all sent, nor when the app's keep-alive timeout is too short", async () => {
    let connections = 0
    const raw = await startRawServer(cleanup, (socket) => {
      connections++
      socket.once("data", (data: Buffer) => {
        const early = data.toString("latin1").startsWith("POST /early")
        socket.write(early ? "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n" : "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=1\r\n\r\nok")
      })
    })
    const pool = poolFor(raw.port, 1)
    const never = Promise.withResolvers<void>()
    cleanup.add(() => never.resolve())
    async function* stuck(): AsyncGenerator<Buffer> {
      yield Buffer.from("first bytes, then nothing")
      await never.promise
    }
    expect((await withTimeout(exchange(pool, { method: "POST", path: "/early", body: stuck() }), 5000, "the early answer")).status).toBe(413)
    // timeout=1 s, less the pool's 2 s margin: nothing left, so the socket is not kept.
    expect((await withTimeout(exchange(pool, {}), 5000, "the short keep-alive answer")).body).toBe("ok")
    expect((await withTimeout(exchange(pool, {}), 5000, "a third request")).body).toBe("ok")
    expect(connections).toBe(3)
  })

  it("sockets read into one shared buffer, yet every chunk handed over stays its exchange's own: large answers on four sockets at once arrive intact, a paused one after its resume", async () => {
    const bodies = ["a", "b", "c", "d"].map((letter) => letter.repeat(300 * 1024))
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 4)
    const kept: Array<Array<Buffer>> = [[], [], [], []]
    let paused: AppController | undefined
    const ends: Array<Promise<void>> = bodies.map((body, i) => new Promise<void>((resolve, reject) => {
      pool.dispatch({ method: "POST", path: `/big/${i}`, headers: [], body: Buffer.from(body) }, {
        onRequestStart: () => {},
        onResponseStart: (controller) => {
          if (i !== 0) return
          paused = controller
          controller.pause()
        },
        onResponseData: (_c, chunk) => void kept[i]!.push(chunk),
        onResponseEnd: () => resolve(),
        onResponseError: (_c, error) => reject(error)
      })
    }))
    await withTimeout(Promise.all(ends.slice(1)), 5000, "the three answers not paused")
    expect(paused?.paused).toBe(true)
    paused!.resume()
    await withTimeout(ends[0]!, 5000, "the paused answer after its resume")
    // Checked only now, after every read: a chunk that were a view of the shared buffer would hold later bytes.
    expect(kept.map((chunks) => Buffer.concat(chunks).toString())).toStrictEqual(bodies)
    expect(kept.every((chunks) => chunks.length > 1)).toBe(true)
  })

  it("an exchange that is over cannot pause or resume the socket the next one holds", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 1)
    const first = await exchange(pool, { method: "POST", body: Buffer.from("one") })
    // A reader that pauses late (a streamed answer read after its end) touches nothing any more.
    first.controller!.pause()
    const second = await withTimeout(exchange(pool, { method: "POST", body: Buffer.from("two") }), 5000, "the second answer on the same socket")
    expect(second.body).toBe("two")
    expect(app.connections()).toBe(1)
  })

  it("a streamed body is framed from what comes: nothing on GET, content-length 0 on POST, chunked once a byte is sent", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 1)
    async function* nothing(): AsyncGenerator<Buffer> {}
    async function* twoParts(): AsyncGenerator<Buffer> {
      yield Buffer.from("part one, ")
      yield Buffer.from("part two")
    }
    await exchange(pool, { method: "GET", path: "/get", body: nothing() })
    await exchange(pool, { method: "POST", path: "/post-empty", body: nothing() })
    const chunked = await exchange(pool, { method: "POST", path: "/post", body: twoParts() })
    expect(chunked.body).toBe("part one, part two")
    const [get, postEmpty, post] = app.seen
    expect([valueOf(get!.rawHeaders, "content-length"), valueOf(get!.rawHeaders, "transfer-encoding")]).toStrictEqual([undefined, undefined])
    expect([valueOf(postEmpty!.rawHeaders, "content-length"), valueOf(postEmpty!.rawHeaders, "transfer-encoding")]).toStrictEqual(["0", undefined])
    expect([valueOf(post!.rawHeaders, "content-length"), valueOf(post!.rawHeaders, "transfer-encoding")]).toStrictEqual([undefined, "chunked"])
    expect(app.connections()).toBe(1)
  })
  it("an idle socket closes the app's keep-alive timeout (less the margin) after it last went idle, not after it first did", async () => {
    let connections = 0
    let closedAt = 0
    const closed = Promise.withResolvers<void>()
    const raw = await startRawServer(cleanup, (socket) => {
      connections++
      socket.on("data", () => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=3\r\n\r\nok"))
      socket.once("close", () => {
        closedAt = performance.now()
        closed.resolve()
      })
    })
    // timeout=3 s less the 2 s margin: 1 s idle. Requests at 0, 0.6 and 1.3 s: the timer armed at
    // 0 fires at 1 s while the socket has been idle only 0.4 s, so it stays for the third.
    const pool = poolFor(raw.port, 1)
    const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
    expect((await exchange(pool, {})).body).toBe("ok")
    await wait(600)
    expect((await exchange(pool, {})).body).toBe("ok")
    await wait(700)
    expect((await exchange(pool, {})).body).toBe("ok")
    const idleFrom = performance.now()
    expect(connections).toBe(1)
    await withTimeout(closed.promise, 5000, "the idle socket's close")
    expect(closedAt - idleFrom).toBeGreaterThanOrEqual(950)
    expect(connections).toBe(1)
  })
})
