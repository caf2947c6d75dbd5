// Sidecar B's leg to an h2c app on the sidecar's own HTTP/2 (src/h2, appH2Session.ts), against a
// raw app that breaks the protocol in ways only a hand-written peer can: an answer head past the
// 64 KiB header list B announces (its call alone fails, the session and its other calls go on), a
// header block that never ends (CONTINUATION after CONTINUATION), a GOAWAY then a flood of
// RST_STREAMs, an app that never sends its SETTINGS. Each call ends in a typed error to its caller;
// a broken session B ends (a GOAWAY naming why), and the next call is answered on a fresh one. And a caller's header value past Latin-1 never reaches the HPACK encoder (which
// writes latin1): the header filter drops it, the rest of the request goes on.
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { Flag, frame, Type } from "../helpers/h2Wire.ts"
import { headerFrames, literal } from "../helpers/h2RawClient.ts"
import { STATUS_200 } from "../support/h2Raw.ts"
import { Cleanup, startRawServer, waitFor } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { call, LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** What the raw app does with a request on its connection `connection` (0 the first). */
type Answer = (socket: net.Socket, stream: number, connection: number) => void

const sound: Answer = (socket, stream) => socket.write(Buffer.concat([frame(Type.headers, Flag.endHeaders, stream, STATUS_200), frame(Type.data, Flag.endStream, stream, Buffer.from("ok"))]))

/**
 * A raw h2c app: its SETTINGS first unless `silent`, B's acknowledged; each request HEADERS to
 * `answer`. Records per connection B's GOAWAY codes, its request HEADERS, and whether B ended it.
 */
const startApp = async (cleanup: Cleanup, answer: Answer, silent: (connection: number) => boolean = () => false) => {
  const goAways: Array<Array<number>> = []
  const requests: Array<number> = []
  const ended: Array<boolean> = []
  let connections = 0
  const server = await startRawServer(cleanup, (socket) => {
    const connection = connections++
    goAways[connection] = []
    requests[connection] = 0
    ended[connection] = false
    socket.once("end", () => (ended[connection] = true))
    if (!silent(connection)) socket.write(frame(Type.settings, 0, 0))
    let read = Buffer.alloc(0)
    let at = 24
    socket.on("data", (data: Buffer) => {
      read = Buffer.concat([read, data])
      for (let length = 0; at + 9 <= read.length && at + 9 + (length = read.readUIntBE(at, 3)) <= read.length; at += 9 + length) {
        const type = read[at + 3]
        const stream = read.readUInt32BE(at + 5) & 0x7fffffff
        if (type === Type.headers) requests[connection]!++
        if (silent(connection)) continue
        if (type === Type.settings && (read[at + 4]! & Flag.ack) === 0) socket.write(frame(Type.settings, Flag.ack, 0))
        if (type === Type.goaway) goAways[connection]!.push(read.readUInt32BE(at + 13))
        if (type === Type.headers) answer(socket, stream, connection)
      }
    })
  })
  return { port: server.port, goAways, requests, ended, connections: () => connections }
}

describe("B's own HTTP/2 leg against a hostile h2c app", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** A in front of B in front of the app: a GET through both. */
  const pair = async (appPort: number) => {
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    return async (headers: Record<string, string> = {}) => {
      const answer = await call(a.outboundPort, { path: "/x", headers: { host: "inventory", ...headers }, timeoutMs: 5000 })
      return `${answer.status} ${answer.headers["x-iip-mesh-error"] ?? answer.body.toString()}`
    }
  }

  /** The first connection's answer hostile, every later one sound. */
  const firstHostile = (hostile: Answer): Answer => (socket, stream, connection) => (connection === 0 ? hostile(socket, stream, connection) : sound(socket, stream, connection))

  const ENHANCE_YOUR_CALM = 11

  it("an answer head past 64 KiB ends only its own call: another call open on the session is answered there, as node's client reset one stream", async () => {
    const fields = Array.from({ length: 18 }, (_, i) => literal(`x-big-${i}`, "v".repeat(4000)))
    let held: number | undefined
    // The first request waits; the second is answered with the large head, then the first soundly, in one write.
    const app = await startApp(cleanup, (socket, stream) => {
      if (held === undefined) return void (held = stream)
      socket.write(Buffer.concat([headerFrames(stream, Buffer.concat([STATUS_200, ...fields]), true), frame(Type.headers, Flag.endHeaders, held, STATUS_200), frame(Type.data, Flag.endStream, held, Buffer.from("ok"))]))
    })
    const get = await pair(app.port)
    const first = get()
    await waitFor(() => app.requests[0] === 1, 5000, "the first request at the app")
    expect(await get()).toBe("502 app; reason=app_failed")
    expect(await first).toBe("200 ok")
    expect(app.connections()).toBe(1)
    expect(app.goAways[0]).toStrictEqual([])
  })

  it("a header block that never ends (HEADERS, then CONTINUATION after CONTINUATION): the call fails app_failed, B ends the session ENHANCE_YOUR_CALM after nghttp2's 8 CONTINUATIONs, the next call is answered on a new one", async () => {
    const app = await startApp(
      cleanup,
      firstHostile((socket, stream) => socket.write(Buffer.concat([frame(Type.headers, 0, stream, STATUS_200), ...Array.from({ length: 100 }, () => frame(Type.continuation, 0, stream, literal("x-a", "b")))])))
    )
    const get = await pair(app.port)
    expect(await get()).toBe("502 app; reason=app_failed")
    await waitFor(() => app.goAways[0]!.length > 0, 5000, "B's GOAWAY")
    expect(app.goAways[0]).toStrictEqual([ENHANCE_YOUR_CALM])
    expect(await get()).toBe("200 ok")
  })

  it("a GOAWAY, then the stream reset and 3,000 more RST_STREAMs for it: the call fails app_failed (processed), B ends the session (its last stream over after the GOAWAY: the rest is not read), the next call is answered on a new one", async () => {
    const goAway = (last: number) => frame(Type.goaway, 0, 0, Buffer.from([0, 0, 0, last, 0, 0, 0, 0]))
    const reset = (stream: number) => frame(Type.rst, 0, stream, Buffer.from([0, 0, 0, 8]))
    const app = await startApp(cleanup, firstHostile((socket, stream) => socket.write(Buffer.concat([goAway(stream), ...Array.from({ length: 3001 }, () => reset(stream))]))))
    const get = await pair(app.port)
    expect(await get()).toBe("502 app; reason=app_failed")
    await waitFor(() => app.ended[0] === true, 5000, "B's end of the session")
    expect(await get()).toBe("200 ok")
  })

  it("interim (1xx) heads without end (103 after 103, 100,000 of them): the call fails app_failed at the sixth, not at its deadline; B resets the stream and ends the session when the flood goes on; the next call is answered", async () => {
    // :status 103, a literal with the static table's :status name (index 8).
    const earlyHints = frame(Type.headers, Flag.endHeaders, 1, Buffer.from([0x08, 0x03, 0x31, 0x30, 0x33]))
    const app = await startApp(
      cleanup,
      firstHostile((socket, stream) => {
        const one = Buffer.from(earlyHints)
        one.writeUInt32BE(stream, 5)
        socket.write(Buffer.concat(Array.from({ length: 100_000 }, () => one)))
      })
    )
    const get = await pair(app.port)
    const started = performance.now()
    expect(await get({ "iip-timeout": "4000" })).toBe("502 app; reason=app_failed")
    expect(performance.now() - started).toBeLessThan(3000)
    await waitFor(() => app.ended[0] === true, 5000, "B's end of the flooding session")
    expect(await get()).toBe("200 ok")
  })

  it("five interim heads (100 Continue, then 103s) before the final head are passed over: the call is answered", async () => {
    const interim = (stream: number, status: string) => frame(Type.headers, Flag.endHeaders, stream, Buffer.from([0x08, 0x03, ...Buffer.from(status)]))
    const app = await startApp(cleanup, (socket, stream) =>
      socket.write(Buffer.concat([interim(stream, "100"), ...Array.from({ length: 4 }, () => interim(stream, "103")), frame(Type.headers, Flag.endHeaders, stream, STATUS_200), frame(Type.data, Flag.endStream, stream, Buffer.from("ok"))]))
    )
    const get = await pair(app.port)
    expect(await get()).toBe("200 ok")
  })

  it("an app that never sends its SETTINGS: two calls end at their deadline (504), one stream sent on the session (B's limit until the app's SETTINGS)", async () => {
    const app = await startApp(cleanup, sound, () => true)
    const get = await pair(app.port)
    const ends = await Promise.all([get({ "iip-timeout": "500" }), get({ "iip-timeout": "500" })])
    expect(ends.map((end) => end.slice(0, 3))).toStrictEqual(["504", "504"])
    expect(app.connections()).toBe(1)
    expect(app.requests[0]).toBe(1)
  })

  it("a caller's header value past Latin-1 is dropped before the encoder; the request and its other headers reach a node:http2 app", async () => {
    const seen: Array<http2.IncomingHttpHeaders> = []
    const app = http2.createServer()
    app.on("stream", (stream, headers) => {
      seen.push(headers)
      stream.respond({ ":status": 200 }, { endStream: true })
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${(app.address() as net.AddressInfo).port}`, appProtocol: "h2c", tracing: false }))
    const client = startClient(cleanup, b.sidecar.inbound.port)
    const headers = JSON.stringify([["x-euro", "5 \u20ac"], ["x-cafe", "caf\u00e9"], ["x-plain", "yes"]])
    const meta = new Map<string, string>().set(HttpMeta.method, "GET").set(HttpMeta.authority, "inventory").set(HttpMeta.headers, headers)
    const reply = await client.stream("/latin", new Uint8Array(0), { meta, timeoutMs: 5000 })
    expect(reply.meta.get(HttpMeta.status)).toBe("200")
    expect(seen).toHaveLength(1)
    expect(seen[0]!["x-euro"]).toBeUndefined()
    expect(seen[0]!["x-cafe"]).toBe("caf\u00e9")
    expect(seen[0]!["x-plain"]).toBe("yes")
  })
})

describe("callers that stop reading, on B's own HTTP/2 leg", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  // Each stalled answer holds its stream's window at B (and the mesh's window and B's queue before
  // it); with the connection's window given back only as the legs consume past a few MiB held, 64
  // of them spent the session's connection window and every other call on it waited out its
  // deadline. Node's client gave the connection's window back at once; so does B's session now.
  it("64 answers of 4 MiB nobody reads do not stall another caller's call on the same session", { timeout: 30_000 }, async () => {
    // Node's server refuses streams (ENHANCE_YOUR_CALM) past 10 MB of answers queued on a session by default.
    const app = http2.createServer({ maxSessionMemory: 1000 })
    app.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      stream.respond({ ":status": 200 })
      if (headers[":path"] === "/big") stream.end(Buffer.alloc(4 << 20, 0x61))
      else stream.end("small")
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    const sessions = new Set<http2.ServerHttp2Session>()
    app.on("session", (session) => sessions.add(session))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    cleanup.add(() => sessions.forEach((session) => session.destroy()))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${(app.address() as net.AddressInfo).port}`, appProtocol: "h2c", tracing: false }))
    const meta = () => new Map<string, string>().set(HttpMeta.method, "GET").set(HttpMeta.authority, "inventory")
    // One mesh connection each: a caller's own connection window is not what is tested.
    const stalled = await Promise.all(
      Array.from({ length: 64 }, () => startClient(cleanup, b.sidecar.inbound.port).stream("/big", new Uint8Array(0), { meta: meta(), timeoutMs: 20_000 }))
    )
    expect(stalled.every((reply) => reply.meta.get(HttpMeta.status) === "200")).toBe(true)
    const reader = startClient(cleanup, b.sidecar.inbound.port)
    const small = await reader.stream("/small", new Uint8Array(0), { meta: meta(), timeoutMs: 5000 })
    // Whole (data) or streamed, as the answer's wait at B went.
    let body = small.data.toString()
    if (small.stream !== undefined) for await (const chunk of small.stream) body += Buffer.from(chunk).toString()
    expect(body).toBe("small")
    expect(sessions.size).toBe(1)
  })
})
