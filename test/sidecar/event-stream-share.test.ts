// Event streams (GETs that accept text/event-stream: EventSource) and B's app pool (appPool.ts): each
// holds one of the pool's sockets for its whole life, and requests past the pool's size wait for a
// socket. At the shipped sizes, 256 open event streams to one app (--app-pool-size) left every other
// request to it waiting for its deadline (measured: 250 streams, a plain GET 200 in 28-62 ms; 256,
// 504 at its 3 s deadline). Now event streams take at most half the pool; past that one is refused
// at once (503 overloaded, not processed: A may take it elsewhere) and the other requests keep the
// rest. At A, each held a channel of its connections to the endpoint, and past the stream places
// they took the requests' too (measured with --app-pool-size 4096 at B: 1,000 streams, a plain GET
// 200 in 5-15 ms; 1,024, 504 at its deadline): now they take stream places only, as upgrades do
// (tunnel-channels.test.ts), past them refused at once. Small channel limits at B so that tens of
// streams reach A's bound. B's refusals are no failure of B at A: a burst of them ejects no endpoint.
// Real peers: a node:http app and node:http callers.
import * as http from "node:http"
import { afterEach, beforeEach, expect, it } from "vitest"
import { REQUEST_CHANNELS_PER_CONNECTION } from "../../src/sidecar/endpoints.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { metric, plainGets, startEventsApp } from "../support/eventStreamApp.ts"
import { call, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const POOL = 8

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

/** An event stream through A's outbound port: 200 once its first event came, else the status it was refused with. */
const openEventStream = (cleanup: Cleanup, port: number, accept: string | Array<string> = "text/event-stream"): Promise<{ readonly status: number; readonly error: string | undefined; readonly ms: number; readonly close: () => void }> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    // An array: one accept line each.
    const req = http.request({ host: "127.0.0.1", port, path: "/events", headers: { host: "catalog", accept }, agent: false })
    cleanup.add(() => req.destroy())
    req.on("error", reject)
    req.on("response", (res) => {
      const status = res.statusCode ?? 0
      const error = res.headers["x-iip-mesh-error"] as string | undefined
      if (status !== 200) res.resume()
      res.once("data", () => resolve({ status, error, ms: performance.now() - started, close: () => req.destroy() }))
    })
    req.end()
  })

it("event streams take at most half of B's app pool: past it refused at once (503 overloaded), and plain requests keep their sockets", async () => {
  const app = await startEventsApp(cleanup)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolSize: POOL }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  // As many as the pool has sockets, one after another (before: all 8 open, every socket held).
  const streams = []
  for (let i = 0; i < POOL; i++) streams.push(await openEventStream(cleanup, a.outboundPort))
  expect(streams.filter((s) => s.status === 200)).toHaveLength(POOL / 2)
  const refused = streams.filter((s) => s.status !== 200)
  expect(refused.map((s) => [s.status, s.error])).toEqual(Array(POOL / 2).fill([503, "inbound; reason=overloaded"]))
  for (const s of refused) expect(s.ms).toBeLessThan(1000)
  // B counts them: A's callers see 503s, B's operator sees why.
  expect(await metric(b, /^iip_mesh_app_event_streams_refused_total /)).toBe(POOL / 2)
  // The other half is the requests': as many plain GETs at once are answered (before: 504 at their deadline).
  const started = performance.now()
  const plain = await plainGets(a.outboundPort, POOL / 2)
  expect(plain.map((p) => [p.status, p.body.toString()])).toEqual(Array(POOL / 2).fill([200, "plain"]))
  expect(performance.now() - started).toBeLessThan(2000)
})

it.each([
  ["in another case (media types are case-blind)", "Text/Event-Stream"],
  ["in a second accept line", ["text/html", "text/event-stream"]]
])("an event stream accepting text/event-stream %s is held to half of B's app pool too", async (_, accept) => {
  const app = await startEventsApp(cleanup)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolSize: POOL }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  // Before: neither A nor B (the first accept line only) took these for event streams, and all 8 held B's sockets.
  const streams = []
  for (let i = 0; i < POOL; i++) streams.push(await openEventStream(cleanup, a.outboundPort, accept))
  expect(streams.map((s) => [s.status, s.error])).toEqual([...Array(POOL / 2).fill([200, undefined]), ...Array(POOL / 2).fill([503, "inbound; reason=overloaded"])])
})

it("at A, event streams take the stream places on the connections to the endpoint, never the requests' channels: past them refused at once (503 overloaded)", async () => {
  const app = await startEventsApp(cleanup)
  // B takes 140 channels a connection: A opens 70, 64 the requests', 6 stream places; 12 on its two connections.
  const streamPlaces = 2 * 6
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolSize: 1024, maxChannelsPerConnection: 2 * (REQUEST_CHANNELS_PER_CONNECTION + 6) }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  // As many as A's two connections have channels in all (before: all 140 open, then every request waited for its deadline).
  const streams = []
  for (let i = 0; i < 140; i += 20) streams.push(...(await Promise.all(Array.from({ length: 20 }, () => openEventStream(cleanup, a.outboundPort)))))
  expect(streams.filter((s) => s.status === 200)).toHaveLength(streamPlaces)
  const refused = streams.filter((s) => s.status !== 200)
  expect(new Set(refused.map((s) => `${s.status} ${s.error}`))).toEqual(new Set(["503 outbound; reason=overloaded"]))
  for (const s of refused) expect(s.ms).toBeLessThan(1000)
  // A counts its own refusals, as B does its share's (before: counted nowhere).
  expect(await metric(a, /^iip_mesh_outbound_event_streams_refused_total /)).toBe(refused.length)
  const started = performance.now()
  const plain = await plainGets(a.outboundPort, 16)
  expect(plain.map((p) => p.status)).toEqual(Array(16).fill(200))
  expect(performance.now() - started).toBeLessThan(2000)
})

it("event streams refused for B's share are no failure of B: A ejects neither, its plain requests answered", async () => {
  const app = await startEventsApp(cleanup)
  // Two catalog sidecars with one event stream's place each (a pool of 2 sockets).
  const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-1", app: app.address, appPoolSize: 2 }))
  const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-2", app: app.address, appPoolSize: 2 }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b1.inboundAddress, weight: 1 }, { address: b2.inboundAddress, weight: 1 }] } }))
  // 20 asked for, one after another: at most 2 open, the rest refused by one B or both (before:
  // each refusal a failure of that B, 5 in a row ejected it, and every plain request went to the other).
  const streams = []
  for (let i = 0; i < 20; i++) streams.push(await openEventStream(cleanup, a.outboundPort))
  const refused = streams.filter((s) => s.status !== 200)
  expect(refused.length).toBeGreaterThanOrEqual(18)
  expect(new Set(refused.map((s) => `${s.status} ${s.error}`))).toEqual(new Set(["503 inbound; reason=overloaded"]))
  expect(await metric(a, /^iip_mesh_endpoint_ejections_total/)).toBe(0)
  // B's refusals, counted at B: not A's.
  expect(await metric(a, /^iip_mesh_outbound_event_streams_refused_total /)).toBe(0)
  expect(await metric(b1, /^iip_mesh_app_event_streams_refused_total /) + await metric(b2, /^iip_mesh_app_event_streams_refused_total /)).toBeGreaterThanOrEqual(refused.length)
  expect((await plainGets(a.outboundPort, 4)).map((p) => p.status)).toEqual([200, 200, 200, 200])
})

it("a burst of event streams at once, refused for B's share by both endpoints, ejects neither: plain requests still go to both", async () => {
  const app = await startEventsApp(cleanup)
  const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-1", app: app.address, appPoolSize: 2 }))
  const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-2", app: app.address, appPoolSize: 2 }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b1.inboundAddress, weight: 1 }, { address: b2.inboundAddress, weight: 1 }] } }))
  // 40 at once: refusals from both Bs land together, several a second try's, at most 2 open.
  const streams = await Promise.all(Array.from({ length: 40 }, () => openEventStream(cleanup, a.outboundPort)))
  expect(streams.filter((s) => s.status === 200).length).toBeLessThanOrEqual(2)
  expect(new Set(streams.filter((s) => s.status !== 200).map((s) => `${s.status} ${s.error}`))).toEqual(new Set(["503 inbound; reason=overloaded"]))
  // Every endpoint's series, not the first line's alone.
  const { body } = await a.sidecar.telemetry.metrics.text()
  expect(body.split("\n").filter((l) => /^iip_mesh_endpoint_ejections_total/.test(l) && !l.endsWith(" 0"))).toEqual([])
  expect((await plainGets(a.outboundPort, 16)).map((p) => p.status)).toEqual(Array(16).fill(200))
})

it("an event stream with no stream place left on the connections to one endpoint goes to another that has one", async () => {
  const app = await startEventsApp(cleanup)
  // As above: 12 stream places on A's two connections to each catalog sidecar, 24 in all.
  const channels = 2 * (REQUEST_CHANNELS_PER_CONNECTION + 6)
  const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-1", app: app.address, appPoolSize: 1024, maxChannelsPerConnection: channels }))
  const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "catalog-2", app: app.address, appPoolSize: 1024, maxChannelsPerConnection: channels }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b1.inboundAddress, weight: 1 }, { address: b2.inboundAddress, weight: 1 }] } }))
  // One after another (before: once the endpoint picked had none left, refused, the other's places free).
  const streams = []
  for (let i = 0; i < 30; i++) streams.push(await openEventStream(cleanup, a.outboundPort))
  expect(streams.filter((s) => s.status === 200)).toHaveLength(24)
  expect(new Set(streams.slice(24).map((s) => `${s.status} ${s.error}`))).toEqual(new Set(["503 outbound; reason=overloaded"]))
  // Once a refused request, though each was refused by the connections to both endpoints.
  expect(await metric(a, /^iip_mesh_outbound_event_streams_refused_total /)).toBe(6)
})

it("an event stream gives its place at B back when its caller goes: as many open again", async () => {
  const app = await startEventsApp(cleanup)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolSize: POOL }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  for (let round = 1; round <= 2; round++) {
    // One past the share too: refused, so the places are B's bound's, not merely free.
    const streams = []
    for (let i = 0; i < POOL / 2 + 1; i++) streams.push(await openEventStream(cleanup, a.outboundPort))
    expect(streams.map((s) => [s.status, s.error])).toEqual([...Array(POOL / 2).fill([200, undefined]), [503, "inbound; reason=overloaded"]])
    for (const s of streams) s.close()
    await waitFor(() => app.ended.events === round * (POOL / 2), 3000, "the app to see its event streams end")
  }
})

it.each([
  // B's pool of 8: 4 event streams; A's places many.
  { places: "B's share", appPoolSize: POOL, open: POOL / 2, refused: "inbound; reason=overloaded" },
  // B's share 512; A's 12 stream places on its two connections to B (B takes 140 channels a connection).
  { places: "A's stream places", appPoolSize: 1024, open: 12, refused: "outbound; reason=overloaded" }
])("an event stream the app ends or refuses (a plain 200 or 404, a reset, its deadline) gives $places back: as many open after as before", async ({ appPoolSize, open, refused }) => {
  const app = await startEventsApp(cleanup, { other: (req, res) => {
    if (req.url === "/plain-200") res.end("not a stream")
    else if (req.url === "/plain-404") res.writeHead(404).end()
    else if (req.url === "/reset") req.socket.destroy()
    // "/silent": no answer before A's deadline.
  } })
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolSize, maxChannelsPerConnection: 2 * (REQUEST_CHANNELS_PER_CONNECTION + 6) }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  const asked = (path: string, timeout = "3000") => call(a.outboundPort, { path, headers: { host: "catalog", accept: "text/event-stream", "iip-timeout": timeout }, timeoutMs: 5000 })
  // 13 of each at once, past both A's 12 places and B's 4 (the rest refused 503 there: one more
  // ending), so that each place is held when its ending comes, not one reused after another.
  const endings = { "/plain-200": 200, "/plain-404": 404, "/reset": 502, "/silent": 504 }
  for (const [path, status] of Object.entries(endings)) {
    const statuses = (await Promise.all(Array.from({ length: 13 }, () => asked(path, path === "/silent" ? "200" : "3000")))).map((answer) => answer.status)
    expect(new Set(statuses.map((s) => (s === 503 ? status : s)))).toEqual(new Set([status]))
    expect(statuses.filter((s) => s === status).length).toBeGreaterThanOrEqual(4)
  }
  const toB = a.sidecar.registry.clientOf(a.sidecar.registry.endpointsOf("catalog")[0]!)
  await waitFor(() => toB.meshSessions.every((session) => session.callingCount === 0), 3000, "A's calls to B to end")
  // Then all the places open, and the next is refused by the bound, no place kept by an ending.
  const streams = []
  for (let i = 0; i < open + 1; i++) streams.push(await openEventStream(cleanup, a.outboundPort))
  expect(streams.map((s) => [s.status, s.error])).toEqual([...Array(open).fill([200, undefined]), [503, refused]])
  expect(app.ended.events).toBe(0)
})

it("an event stream gives its stream place at A back when its caller goes: as many open again", async () => {
  const app = await startEventsApp(cleanup)
  // As above: 12 stream places on A's two connections to B.
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolSize: 1024, maxChannelsPerConnection: 2 * (REQUEST_CHANNELS_PER_CONNECTION + 6) }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  const toB = a.sidecar.registry.clientOf(a.sidecar.registry.endpointsOf("catalog")[0]!)
  for (let round = 1; round <= 2; round++) {
    // One past the places too: refused, so the places are A's bound's, not merely free.
    const streams = []
    for (let i = 0; i < 13; i++) streams.push(await openEventStream(cleanup, a.outboundPort))
    expect(streams.map((s) => [s.status, s.error])).toEqual([...Array(12).fill([200, undefined]), [503, "outbound; reason=overloaded"]])
    for (const s of streams) s.close()
    // Ended once B has answered each cancel (until then their channels are still held).
    await waitFor(() => toB.meshSessions.every((session) => session.callingCount === 0), 3000, "A's streams to B to end")
  }
})
