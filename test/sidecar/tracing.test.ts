// One trace across two sidecars, as issue 7 asks: a calling app (an instrumented app: it continues
// the trace it was given under a span id of its own and passes tracestate and baggage on) calls
// sidecar A ("store", no app of its own), which carries the request over IIP to sidecar B
// ("catalog"), which calls the far app. Both sidecars export to a real OTLP/HTTP receiver on
// loopback (OTEL_* given through the sidecars' `env` option, never process.env); the test
// synchronises on each sidecar's forceFlush (the spans have ended by the time the answer is back).
// Checked: one trace id over A's client span, B's server span and B's app span, each the parent
// of the next (and the calling app's span the parent of the first); the far app gets a
// traceparent naming B's app span, and tracestate and baggage as sent; a request without context
// starts a trace; the attribute names are the semantic conventions'; each admin's /traces/<id>
// serves the spans its sidecar holds; request after request through the sidecars' kept heads, the
// far app gets one traceparent of that request's own trace (a caller's repeated ones: a new trace);
// with `tracing: false` the app's own traceparent reaches the far app unchanged and nothing is
// exported or stored.
import { randomBytes } from "node:crypto"
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { type ExportedSpan, type OtlpReceiver, spansOf, startOtlpReceiver } from "../support/otlpReceiver.ts"
import {
  type App,
  call,
  echoed,
  echoRequest,
  type EchoedRequest,
  LOOPBACK,
  quietLog,
  rawValues,
  type RunningSidecar,
  sidecarConfig,
  startAdmin,
  startApp,
  startSidecar
} from "../support/sidecarHarness.ts"

/** OTLP numbering of span kinds. */
const SERVER = 2
const CLIENT = 3

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/

const BAGGAGE = "userId=alice,cart=3;ttl=60,tenant=acme%20corp"
const TRACESTATE = "vendor=opaque-value,other=1"

/** What the calling app reports: the trace headers it sent to sidecar A, and what came back. */
interface CallerReport {
  readonly sent: Readonly<Record<string, string>>
  readonly status: number
  readonly far: EchoedRequest
}

/**
 * The calling app. Given a traceparent it continues that trace under a new span id of its own (as
 * an instrumented app's server span would), passing tracestate and baggage on; `?plain` sends no
 * trace headers at all (an app that knows nothing of tracing). It calls `catalog` through the
 * sidecar's outbound listener and reports what it sent.
 */
const callerApp = (outboundPort: () => number): http.RequestListener => (req, res) => {
  const sent: Record<string, string> = {}
  if (!(req.url ?? "").includes("plain")) {
    const incoming = TRACEPARENT.exec(String(req.headers.traceparent ?? ""))
    const traceId = incoming?.[1] ?? randomBytes(16).toString("hex")
    sent.traceparent = `00-${traceId}-${randomBytes(8).toString("hex")}-01`
    for (const name of ["tracestate", "baggage"]) {
      const value = req.headers[name]
      if (typeof value === "string") sent[name] = value
    }
  }
  call(outboundPort(), { path: "/items/7?color=red", headers: { host: "catalog", ...sent } }).then(
    (answer) => {
      const body = JSON.stringify({ sent, status: answer.status, far: echoed(answer) } satisfies CallerReport)
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
      res.end(body)
    },
    (error: Error) => {
      res.writeHead(500, { "content-type": "text/plain" })
      res.end(error.message)
    }
  )
}

interface Pair {
  readonly a: RunningSidecar
  readonly b: RunningSidecar
  readonly far: App
  readonly caller: App
  readonly adminA: string
  readonly adminB: string
}

/** far app <- B ("catalog") <- A ("store") <- calling app, both sidecars exporting to `otlp`, each with its admin server. */
const startPair = async (cleanup: Cleanup, otlp: OtlpReceiver, tracing: boolean): Promise<Pair> => {
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }
  const far = await startApp(cleanup, echoRequest)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: far.address, tracing }), quietLog, { env })
  const a = await startSidecar(
    cleanup,
    sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, tracing }),
    quietLog,
    { env }
  )
  const caller = await startApp(cleanup, callerApp(() => a.outboundPort))
  return { a, b, far, caller, adminA: await startAdmin(cleanup, a), adminB: await startAdmin(cleanup, b) }
}

/** Asks the calling app to make its call (with these headers for it to continue from). */
const viaCaller = async (pair: Pair, path: string, headers: http.OutgoingHttpHeaders = {}): Promise<CallerReport & { readonly rawFar: ReadonlyArray<string> }> => {
  const answer = await call(pair.caller.port, { path, headers: { host: "caller", ...headers } })
  expect(answer.status, answer.body.toString()).toBe(200)
  const report = JSON.parse(answer.body.toString("utf8")) as CallerReport
  expect(report.status).toBe(200)
  return { ...report, rawFar: report.far.rawHeaders }
}

/** Every span the receiver got so far for `traceId`, after both sidecars flushed their exporters. */
const exported = async (otlp: OtlpReceiver, pair: Pair, traceId: string): Promise<Array<ExportedSpan>> => {
  await Promise.all([pair.a.sidecar.telemetry.tracing.forceFlush(), pair.b.sidecar.telemetry.tracing.forceFlush()])
  return otlp.requests.flatMap((request) => spansOf(request.body)).filter((span) => span.traceId === traceId)
}

/** The three spans of one request, by role; fails unless there are exactly these. */
const roles = (spans: ReadonlyArray<ExportedSpan>) => {
  const described = spans.map((s) => `${s.service}/${s.kind}/${s.name}`).join(", ")
  expect(spans, described).toHaveLength(3)
  const client = spans.filter((s) => s.service === "store" && s.kind === CLIENT)
  const server = spans.filter((s) => s.service === "catalog" && s.kind === SERVER)
  const app = spans.filter((s) => s.service === "catalog" && s.kind === CLIENT)
  expect([client.length, server.length, app.length], described).toStrictEqual([1, 1, 1])
  return { client: client[0]!, server: server[0]!, app: app[0]! }
}

const getJson = async (url: string): Promise<{ readonly status: number; readonly body: unknown }> => {
  const response = await fetch(url)
  return { status: response.status, body: await response.json() }
}

interface TraceAnswer {
  readonly traceId: string
  readonly spans: ReadonlyArray<{ readonly spanId: string; readonly parentSpanId: string | null; readonly service: string; readonly kind: string }>
}

describe("tracing across two sidecars, exported over OTLP/HTTP", () => {
  const cleanup = new Cleanup()
  let otlp: OtlpReceiver
  let pair: Pair

  beforeAll(async () => {
    otlp = await startOtlpReceiver()
    cleanup.add(() => otlp.close())
    pair = await startPair(cleanup, otlp, true)
  })
  afterAll(() => cleanup.run())

  it("one trace id across A's client span, B's server span and B's app span, each the parent of the next", async () => {
    const traceId = randomBytes(16).toString("hex")
    const report = await viaCaller(pair, "/", { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`, tracestate: TRACESTATE, baggage: BAGGAGE })
    const callerSpanId = TRACEPARENT.exec(report.sent.traceparent!)![2]!

    const { client, server, app } = roles(await exported(otlp, pair, traceId))
    expect(client.parentSpanId).toBe(callerSpanId)
    expect(server.parentSpanId).toBe(client.spanId)
    expect(app.parentSpanId).toBe(server.spanId)
    expect(new Set([client.spanId, server.spanId, app.spanId, callerSpanId]).size).toBe(4)
    expect(client.resource["service.instance.id"]).toBe("test-store")
    expect(server.resource["service.instance.id"]).toBe("test-catalog")
  })

  it("the far app gets a traceparent whose parent is B's app span; tracestate and baggage arrive intact", async () => {
    const traceId = randomBytes(16).toString("hex")
    const report = await viaCaller(pair, "/", { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`, tracestate: TRACESTATE, baggage: BAGGAGE })
    const { app } = roles(await exported(otlp, pair, traceId))

    // Exactly one of each: the sidecar replaced the caller's, it did not add a second.
    expect(rawValues(report.rawFar, "traceparent")).toStrictEqual([`00-${traceId}-${app.spanId}-01`])
    expect(rawValues(report.rawFar, "baggage")).toStrictEqual([BAGGAGE])
    expect(rawValues(report.rawFar, "tracestate")).toStrictEqual([TRACESTATE])
    expect(report.sent.baggage).toBe(BAGGAGE)
  })

  it("request after request through the kept heads, the far app gets one traceparent, B's, of that request's own trace; a caller's repeated ones start a new trace", async () => {
    // Sent to A's outbound listener as raw lines, the same head but for the ids, so that every kept
    // head (A's header JSON, B's decoded head and app head lines) is reused from the second on.
    const id = (bytes: number) => randomBytes(bytes).toString("hex")
    const seen = new Set<string>()
    for (let i = 0; i < 24; i++) {
      const traceId = id(16)
      const repeated = i >= 12
      const rawHeaders = ["host", "catalog", "traceparent", `00-${traceId}-${id(8)}-01`, "x-a", "1", "tracestate", TRACESTATE]
      // Node joins repeated lines into one value, which is no traceparent: A starts a trace of its own.
      if (repeated) rawHeaders.push("TraceParent", `00-${id(16)}-${id(8)}-01`, "traceparent", `ff-${id(16)}-${id(8)}-01`, "traceparent", "00-forged-01")
      const answer = await call(pair.a.outboundPort, { path: "/items/1", headers: rawHeaders as unknown as http.OutgoingHttpHeaders })
      expect(answer.status, answer.body.toString()).toBe(200)
      const far = echoed(answer).rawHeaders
      const arrived = rawValues(far, "traceparent")
      expect(arrived, `request ${i}`).toHaveLength(1)
      const [, arrivedTrace, arrivedSpan] = TRACEPARENT.exec(arrived[0]!) ?? []
      if (repeated) expect(seen.has(arrivedTrace!) || arrivedTrace === traceId, `request ${i}: ${arrived[0]}`).toBe(false)
      else expect(arrivedTrace, `request ${i}`).toBe(traceId)
      expect(seen.has(arrivedSpan!), `request ${i}: ${arrived[0]}`).toBe(false)
      seen.add(arrivedTrace!).add(arrivedSpan!)
      expect(rawValues(far, "tracestate"), `request ${i}`).toStrictEqual(repeated ? [] : [TRACESTATE])
      expect(rawValues(far, "x-a"), `request ${i}`).toStrictEqual(["1"])
    }
  })

  it("a request without a traceparent starts a new trace: A's client span is its root", async () => {
    const report = await viaCaller(pair, "/plain")
    expect(report.sent).toStrictEqual({})
    const arrived = TRACEPARENT.exec(String(report.far.headers.traceparent ?? ""))
    expect(arrived, "the far app gets a traceparent").not.toBeNull()
    const traceId = arrived![1]!

    const { client, server, app } = roles(await exported(otlp, pair, traceId))
    expect(client.parentSpanId).toBe("")
    expect(server.parentSpanId).toBe(client.spanId)
    expect(app.parentSpanId).toBe(server.spanId)
    expect(arrived![2]).toBe(app.spanId)
    expect(report.far.headers.baggage).toBeUndefined()
  })

  it("span attributes use the semantic-convention names", async () => {
    const traceId = randomBytes(16).toString("hex")
    await viaCaller(pair, "/", { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` })
    const { client, server, app } = roles(await exported(otlp, pair, traceId))

    expect(client.attributes).toMatchObject({
      "http.request.method": "GET",
      "http.response.status_code": 200,
      "server.address": LOOPBACK,
      "server.port": pair.b.sidecar.inbound.port,
      "url.path": "/items/7"
    })
    expect(server.attributes).toMatchObject({ "http.request.method": "GET", "http.response.status_code": 200, "url.path": "/items/7", "client.address": LOOPBACK })
    expect(server.attributes["client.port"]).toBeTypeOf("number")
    expect(app.attributes).toMatchObject({ "http.request.method": "GET", "http.response.status_code": 200, "server.address": LOOPBACK, "server.port": pair.far.port })
    // None of the deprecated (pre-1.21) HTTP names.
    for (const span of [client, server, app]) {
      for (const old of ["http.method", "http.status_code", "http.url", "http.target", "net.peer.name", "net.peer.port", "net.host.name"]) {
        expect(span.attributes, `${span.name}: ${old}`).not.toHaveProperty([old])
      }
    }
  })

  it("/traces/<id> on each admin serves the spans its sidecar holds", async () => {
    const traceId = randomBytes(16).toString("hex")
    const callerSpanId = randomBytes(8).toString("hex")
    // The calling app replaces the span id; what matters here is the trace id.
    await viaCaller(pair, "/", { traceparent: `00-${traceId}-${callerSpanId}-01` })
    const { client, server, app } = roles(await exported(otlp, pair, traceId))

    const atA = await getJson(`${pair.adminA}/traces/${traceId}`)
    expect(atA.status).toBe(200)
    const traceA = atA.body as TraceAnswer
    expect(traceA.traceId).toBe(traceId)
    expect(traceA.spans.map((s) => [s.spanId, s.parentSpanId, s.service, s.kind])).toStrictEqual([[client.spanId, client.parentSpanId, "store", "client"]])

    const atB = await getJson(`${pair.adminB}/traces/${traceId}`)
    expect(atB.status).toBe(200)
    const traceB = atB.body as TraceAnswer
    expect(traceB.spans.map((s) => [s.spanId, s.parentSpanId, s.service, s.kind])).toStrictEqual([
      [server.spanId, client.spanId, "catalog", "server"],
      [app.spanId, server.spanId, "catalog", "client"]
    ])

    // Listed among the recent traces of both; an unknown id is a 404.
    for (const admin of [pair.adminA, pair.adminB]) {
      const recent = (await getJson(`${admin}/traces`)).body as { traces: ReadonlyArray<{ traceId: string }> }
      expect(recent.traces.map((t) => t.traceId)).toContain(traceId)
      expect((await getJson(`${admin}/traces/${randomBytes(16).toString("hex")}`)).status).toBe(404)
    }
  })
})

describe("tracing: false", () => {
  const cleanup = new Cleanup()
  let otlp: OtlpReceiver
  let pair: Pair

  beforeAll(async () => {
    otlp = await startOtlpReceiver()
    cleanup.add(() => otlp.close())
    pair = await startPair(cleanup, otlp, false)
  })
  afterAll(() => cleanup.run())

  it("the app's traceparent, tracestate and baggage reach the far app unchanged, and nothing is exported or stored", async () => {
    const traceId = randomBytes(16).toString("hex")
    const report = await viaCaller(pair, "/", { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`, tracestate: TRACESTATE, baggage: BAGGAGE })
    expect(rawValues(report.rawFar, "traceparent")).toStrictEqual([report.sent.traceparent])
    expect(rawValues(report.rawFar, "tracestate")).toStrictEqual([TRACESTATE])
    expect(rawValues(report.rawFar, "baggage")).toStrictEqual([BAGGAGE])

    // A request without context gets none either.
    const plain = await viaCaller(pair, "/plain")
    expect(rawValues(plain.rawFar, "traceparent")).toStrictEqual([])

    expect(await exported(otlp, pair, traceId)).toStrictEqual([])
    expect(otlp.requests).toHaveLength(0)
    for (const admin of [pair.adminA, pair.adminB]) {
      expect((await getJson(`${admin}/traces`)).body).toStrictEqual({ traces: [] })
      expect((await getJson(`${admin}/traces/${traceId}`)).status).toBe(404)
    }
    // Stopping flushes what there is to flush: still nothing.
    await Promise.all([pair.a.stop(), pair.b.stop()])
    expect(otlp.requests).toHaveLength(0)
  })
})
