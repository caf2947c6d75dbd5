// Event streams known only by their answer (appPool.ts): B held GETs accepting text/event-stream to
// half its app pool from their start, but a request nothing in whose head says it will last (a POST,
// as fetch-based SSE clients send; a GET with no `accept`) whose answer is text/event-stream held
// its pool socket outside that share until its deadline. Measured before, a pool of 8 (the attack,
// each stream one POST): 8 opened, every socket held, and 4 plain GETs beside them 504 at their 3 s
// deadline. Now such a stream counts in the share from its answer head: past it the exchange is
// closed there (the app sees its socket close), the caller gets 503 `inbound; reason=overloaded`
// as processed (the app saw the request: A retries it nowhere), counted in
// iip_mesh_app_event_streams_refused_total, and the plain requests keep the rest of the pool.
// The same hole to an h2c app (--app-protocol h2c, 4 places): four POST event streams held every
// place and plain GETs 504; now such a stream joins the long-lived share from its answer head, cut
// past it (iip_mesh_app_long_streams_refused_total).
// Real peers: a node:http app and node:http callers, through two sidecars.
import * as http from "node:http"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, expect, it } from "vitest"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { metric, plainGets, startEventsApp } from "../support/eventStreamApp.ts"
import { call, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const POOL = 8

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

interface Opened {
  readonly status: number
  readonly error: string | undefined
  readonly close: () => void
}

/** A request through A's outbound port to /events: its status once its first body bytes came (an event, or a refusal's body). */
const open = (port: number, method: string, headers: http.OutgoingHttpHeaders): Promise<Opened> =>
  new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path: "/events", headers: { host: "catalog", "iip-timeout": "10000", ...headers }, agent: false })
    cleanup.add(() => req.destroy())
    // Bounded by the mesh: its iip-timeout answers 504 with a body, which resolves this too.
    req.on("error", reject)
    req.on("response", (res) => {
      res.once("data", () => {
        resolve({ status: res.statusCode ?? 0, error: res.headers["x-iip-mesh-error"] as string | undefined, close: () => req.destroy() })
      })
    })
    req.end(method === "POST" ? "subscribe" : undefined)
  })

const mesh = async (app: { address: string }) => {
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolSize: POOL }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  return { a, b }
}

it.each([
  ["POST", {}],
  ["GET without accept", {}],
  ["POST accepting text/event-stream", { accept: "text/event-stream" }]
])("a %s answered by an event stream counts in B's share from its answer head: past it closed, 503 overloaded, and plain requests keep their sockets", async (kind, headers) => {
  const app = await startEventsApp(cleanup, { contentType: "Text/Event-Stream; charset=utf-8" })
  const { a, b } = await mesh(app)
  const method = kind.startsWith("POST") ? "POST" : "GET"
  // As many as the pool has sockets, one after another (before: all 8 open, every socket held).
  const streams: Array<Opened> = []
  for (let i = 0; i < POOL; i++) streams.push(await open(a.outboundPort, method, headers))
  expect(streams.map((s) => [s.status, s.error])).toEqual([...Array(POOL / 2).fill([200, undefined]), ...Array(POOL / 2).fill([503, "inbound; reason=overloaded"])])
  expect(await metric(b, /^iip_mesh_app_event_streams_refused_total /)).toBe(POOL / 2)
  expect(await metric(a, /^iip_mesh_endpoint_ejections_total/)).toBe(0)
  // The app saw the refused ones close: their sockets are free again.
  await waitFor(() => app.ended.events === POOL / 2, 3000, "the app to see the refused streams close")
  const started = performance.now()
  const plain = await plainGets(a.outboundPort, POOL / 2)
  expect(plain.map((p) => [p.status, p.body.toString()])).toEqual(Array(POOL / 2).fill([200, "plain"]))
  expect(performance.now() - started).toBeLessThan(2000)
})

it("event streams known from their start and from their answer share one count; a closed one gives its place back", async () => {
  const app = await startEventsApp(cleanup, { contentType: "Text/Event-Stream; charset=utf-8" })
  const { a } = await mesh(app)
  const gets = [await open(a.outboundPort, "GET", { accept: "text/event-stream" }), await open(a.outboundPort, "GET", { accept: "text/event-stream" })]
  const posts = [await open(a.outboundPort, "POST", {}), await open(a.outboundPort, "POST", {})]
  expect([...gets, ...posts].map((s) => s.status)).toEqual([200, 200, 200, 200])
  // The share is full either way in.
  expect((await open(a.outboundPort, "POST", {})).status).toBe(503)
  expect((await open(a.outboundPort, "GET", { accept: "text/event-stream" })).status).toBe(503)
  // A POST stream its caller leaves gives its place back.
  posts[0]!.close()
  await waitFor(() => app.ended.events === 2, 3000, "the app to see the left stream and the refused one close")
  // (the refused POST closed at the app; the refused GET never reached it)
  expect((await open(a.outboundPort, "POST", {})).status).toBe(200)
  expect((await open(a.outboundPort, "POST", {})).status).toBe(503)
})

it("a finite answer of another type, or an event stream the app ends, holds no place after its end", async () => {
  const app = await startApp(cleanup, (req, res) => {
    req.resume()
    if (req.url === "/events") return res.writeHead(200, { "content-type": "text/event-stream" }).end("data: bye\n\n")
    res.writeHead(200, { "content-type": "text/event-streams" }).end("not one")
  })
  const { a, b } = await mesh(app)
  for (let i = 0; i < 3 * POOL; i++) {
    const [ended, other] = await Promise.all([
      call(a.outboundPort, { method: "POST", path: "/events", headers: { host: "catalog" }, body: "x" }),
      call(a.outboundPort, { method: "POST", path: "/other", headers: { host: "catalog" }, body: "x" })
    ])
    expect([ended.status, other.status]).toEqual([200, 200])
  }
  expect(await metric(b, /^iip_mesh_app_event_streams_refused_total /)).toBe(0)
})

it("event streams B closes at their answer head are failures of B, as an app's 503 is: at most one of two endpoints is ejected, and plain requests are answered", async () => {
  const app = await startEventsApp(cleanup, { contentType: "Text/Event-Stream; charset=utf-8" })
  // Two catalog sidecars with one event stream's place each (a pool of 2 sockets).
  const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-1", app: app.address, appPoolSize: 2 }))
  const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-2", app: app.address, appPoolSize: 2 }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b1.inboundAddress, weight: 1 }, { address: b2.inboundAddress, weight: 1 }] } }))
  // 20 POSTs one after another: 2 open, 18 closed at their answer head. Those refusals count
  // against B (else a B refusing everything so kept its traffic: the test below); the outlier
  // detector's cap (half the endpoints) keeps the other in.
  const streams: Array<Opened> = []
  for (let i = 0; i < 20; i++) streams.push(await open(a.outboundPort, "POST", {}))
  expect(streams.filter((s) => s.status === 200)).toHaveLength(2)
  expect(new Set(streams.filter((s) => s.status !== 200).map((s) => `${s.status} ${s.error}`))).toEqual(new Set(["503 inbound; reason=overloaded"]))
  const { body } = await a.sidecar.telemetry.metrics.text()
  const ejections = body.split("\n").filter((l) => /^iip_mesh_endpoint_ejections_total\{/.test(l)).map((l) => Number(l.slice(l.lastIndexOf(" ") + 1)))
  expect(ejections.reduce((sum, n) => sum + n, 0)).toBeLessThanOrEqual(1)
  // Processed: retried nowhere, so each refused POST reached the app once.
  expect(await metric(b1, /^iip_mesh_app_event_streams_refused_total /) + await metric(b2, /^iip_mesh_app_event_streams_refused_total /)).toBe(18)
  expect((await plainGets(a.outboundPort, 8)).map((p) => p.status)).toEqual(Array(8).fill(200))
  await waitFor(() => app.ended.events === 18, 3000, "the app to see the refused streams close")
})

it("to an h2c app (--app-protocol h2c): a POST answered by an event stream counts in the long-lived share from its answer head; past it cut, 503 overloaded; a plain GET is answered", async () => {
  const app = http2.createServer()
  const sessions: Array<http2.ServerHttp2Session> = []
  app.on("session", (session) => sessions.push(session))
  app.on("stream", (stream, headers) => {
    stream.on("error", () => {})
    if (headers[":path"] === "/batch") {
      stream.respond({ ":status": 200, "content-type": "text/event-stream", "content-length": "11" })
      return void stream.end("data: one\n\n")
    }
    if (headers[":path"] !== "/events") return void stream.respond({ ":status": 200 }, { endStream: true })
    stream.respond({ ":status": 200, "content-type": "text/event-stream" })
    stream.write("data: hi\n\n")
  })
  await new Promise<void>((listening) => app.listen(0, "127.0.0.1", listening))
  cleanup.add(() => new Promise<void>((closed) => app.close(() => closed())))
  cleanup.add(() => sessions.forEach((session) => session.destroy()))
  const port = (app.address() as net.AddressInfo).port
  // 4 places to the app: 2 for long-lived streams.
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${port}`, appProtocol: "h2c", appH2MaxStreams: 4 }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  const streams: Array<Opened> = []
  for (let i = 0; i < 4; i++) streams.push(await open(a.outboundPort, "POST", {}))
  // Before: all 4 open, every place held, and the GETs below 504 at their deadline.
  expect(streams.map((s) => [s.status, s.error])).toEqual([[200, undefined], [200, undefined], [503, "inbound; reason=overloaded"], [503, "inbound; reason=overloaded"]])
  expect(await metric(b, /^iip_mesh_app_long_streams_refused_total /)).toBe(2)
  const plain = await plainGets(a.outboundPort, 2)
  expect(plain.map((p) => p.status)).toEqual([200, 200])
  // A finite one (its length stated) holds nothing: answered, not cut (before: 503).
  const batch = await call(a.outboundPort, { method: "POST", path: "/batch", headers: { host: "catalog" }, body: "x" })
  expect([batch.status, batch.body.toString()]).toEqual([200, "data: one\n\n"])
})

it("an endpoint whose every answer is refused overloaded (processed) gets less traffic: of three, the one refusing everything takes few of 90 POSTs", async () => {
  // A broken app behind B3 answers every request with an event stream that never ends: B3's share
  // (a pool of 2: one place) is held by the first, and every later request is closed at its answer
  // head, 503 overloaded, processed. Before: A neither blamed nor penalised B3 for those (released
  // its lease as if never sent), so it kept its third of the traffic for ever, each of those
  // answered 503 (a POST is retried nowhere).
  const streams = await startApp(cleanup, (req, res) => {
    req.resume()
    res.writeHead(200, { "content-type": "text/event-stream" })
    res.write("data: hi\n\n")
  })
  const plain = await startApp(cleanup, (req, res) => {
    req.resume()
    res.end("plain")
  })
  const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-1", app: plain.address }))
  const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-2", app: plain.address }))
  const b3 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-3", app: streams.address, appPoolSize: 2 }))
  const a = await startSidecar(cleanup, sidecarConfig({
    service: "store",
    endpoints: { catalog: [b1, b2, b3].map((b) => ({ address: b.inboundAddress, weight: 1 })) }
  }))
  const statuses: Array<number> = []
  // Each left open (cleanup closes them): the plain answers end by themselves, and the one event
  // stream B3 took holds its share.
  for (let i = 0; i < 90; i++) statuses.push((await open(a.outboundPort, "POST", {})).status)
  const refused = statuses.filter((s) => s === 503).length
  expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([])
  // Before: about a third (30 measured: 28-33). The failure penalty steers traffic off it.
  expect(refused).toBeLessThan(10)
  expect(await metric(b3, /^iip_mesh_app_event_streams_refused_total /)).toBe(refused)
})

it("with the share held, an answer saying text/event-stream that is finite (a content-length, a 304) is answered, not cut", async () => {
  // Before: any answer head naming the type joined the share, so past it a finite one (a fixed batch
  // of events with its length, a 304 to a conditional GET) was closed 503 though it held nothing.
  const app = await startApp(cleanup, (req, res) => {
    req.resume()
    if (req.url === "/events") {
      res.writeHead(200, { "content-type": "text/event-stream" })
      return void res.write("data: hi\n\n")
    }
    if (req.url === "/batch") return void res.writeHead(200, { "content-type": "text/event-stream", "content-length": "11" }).end("data: one\n\n")
    res.writeHead(304, { "content-type": "text/event-stream" }).end()
  })
  const { a } = await mesh(app)
  for (let i = 0; i < POOL / 2; i++) expect((await open(a.outboundPort, "GET", { accept: "text/event-stream" })).status).toBe(200)
  const batch = await call(a.outboundPort, { method: "POST", path: "/batch", headers: { host: "catalog" }, body: "x" })
  expect([batch.status, batch.body.toString()]).toEqual([200, "data: one\n\n"])
  const notModified = await call(a.outboundPort, { path: "/cached", headers: { host: "catalog", "if-none-match": "\"1\"" } })
  expect(notModified.status).toBe(304)
})

it("a POST whose body still streams when its event-stream answer is closed past the share: the caller gets 503 at once, mid-body, and the pool serves on", async () => {
  const app = await startEventsApp(cleanup, { contentType: "Text/Event-Stream; charset=utf-8" })
  const { a, b } = await mesh(app)
  for (let i = 0; i < POOL / 2; i++) expect((await open(a.outboundPort, "GET", { accept: "text/event-stream" })).status).toBe(200)
  // A body that never ends: 64 KiB sent, the rest held back.
  const answered = new Promise<{ status: number; error: string | undefined }>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: a.outboundPort, method: "POST", path: "/events", headers: { host: "catalog", "iip-timeout": "10000", "transfer-encoding": "chunked" }, agent: false })
    cleanup.add(() => req.destroy())
    req.on("error", reject)
    req.on("response", (res) => {
      res.resume()
      resolve({ status: res.statusCode ?? 0, error: res.headers["x-iip-mesh-error"] as string | undefined })
    })
    req.write(Buffer.alloc(64 * 1024, 1))
  })
  expect(await withTimeout(answered, 5000, "the streaming POST's answer")).toEqual({ status: 503, error: "inbound; reason=overloaded" })
  expect(await metric(b, /^iip_mesh_app_event_streams_refused_total /)).toBe(1)
  await waitFor(() => app.ended.events === 1, 3000, "the app to see the refused stream close")
  expect((await plainGets(a.outboundPort, POOL / 2)).map((p) => p.status)).toEqual(Array(POOL / 2).fill(200))
})
