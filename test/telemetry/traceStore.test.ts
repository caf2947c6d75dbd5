// The embedded trace store (src/telemetry/traceStore.ts): bounded by traces (the oldest evicted)
// and by spans per trace (the rest counted); summaries name the root, the services, the timing
// and any error; a trace reads back as JSON spans in start order; the root of a trace continued
// from elsewhere is its first local span; the request path's spans (kept packed) read back
// exactly as recorded; unsampled spans are not kept; a sidecar's shutdown leaves a shared store
// alone.
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api"
import { afterEach, describe, expect, it, vi } from "vitest"
import { extractContext } from "../../src/telemetry/propagation.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing, type Tracing } from "../../src/telemetry/tracing.ts"
import { Cleanup } from "../support/iipRaw.ts"

describe("TraceStore", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  const tracingFor = (service: string, store: TraceStore, env: Record<string, string> = {}): Tracing => {
    const tracing = makeTracing({ service, store, env, instanceId: `${service}-1` })
    cleanup.add(() => tracing.shutdown())
    return tracing
  }

  it("keeps the newest maxTraces traces, evicting the oldest first", () => {
    const store = new TraceStore({ maxTraces: 3 })
    const tracing = tracingFor("catalog", store)
    const ids: Array<string> = []
    for (let i = 0; i < 5; i++) {
      const span = tracing.tracer.startSpan(`request ${i}`)
      span.end()
      ids.push(span.spanContext().traceId)
    }
    expect(store.size).toBe(3)
    expect(store.recent(10).map((summary) => summary.rootName)).toStrictEqual(["request 4", "request 3", "request 2"])
    expect(store.recent(2).map((summary) => summary.traceId)).toStrictEqual([ids[4], ids[3]])
    expect(store.get(ids[0]!)).toBeUndefined()
    expect(store.get(ids[1]!)).toBeUndefined()
    expect(store.get(ids[2]!)).toHaveLength(1)
  })

  it("keeps at most maxNewTracesPerSecond new traces a second; spans of a kept trace still join it, those of one not kept do not", () => {
    let now = 5_000
    const store = new TraceStore({ maxNewTracesPerSecond: 2, now: () => now })
    const tracing = tracingFor("catalog", store)
    const traceOf = (name: string) => {
      const root = tracing.tracer.startSpan(name)
      const child = tracing.tracer.startSpan(`${name} child`, {}, trace.setSpan(extractContext({}), root))
      child.end()
      root.end()
      return root.spanContext().traceId
    }
    const first = traceOf("a")
    const second = traceOf("b")
    const third = traceOf("c")
    expect(store.size).toBe(2)
    expect(store.get(first)!.map((span) => span.name)).toStrictEqual(["a", "a child"])
    expect(store.get(second)).toHaveLength(2)
    expect(store.get(third)).toBeUndefined()
    now += 999
    expect(store.get(traceOf("d"))).toBeUndefined()
    now += 1
    const fifth = traceOf("e")
    expect(store.get(fifth)!.map((span) => span.name)).toStrictEqual(["e", "e child"])
    expect(store.recent(10).map((summary) => summary.rootName)).toStrictEqual(["e", "b", "a"])
  })

  it("the per-second budget of new traces runs on the monotonic clock: a wall clock step neither renews it nor holds it back", () => {
    // Fakes Date and performance: setSystemTime steps the wall clock alone, advanceTimersByTime both.
    vi.useFakeTimers()
    cleanup.add(() => vi.useRealTimers())
    const store = new TraceStore({ maxNewTracesPerSecond: 2 })
    const tracing = tracingFor("catalog", store)
    const traceOf = (name: string) => {
      const root = tracing.tracer.startSpan(name)
      root.end()
      return root.spanContext().traceId
    }
    traceOf("a")
    traceOf("b")
    // Stepped back an hour within the second: no new second's budget (before, Date.now()'s second changed).
    vi.setSystemTime(Date.now() - 3_600_000)
    expect(store.get(traceOf("c"))).toBeUndefined()
    // A second later, whatever the wall clock says: a new budget.
    vi.advanceTimersByTime(1000)
    expect(store.get(traceOf("d"))).toHaveLength(1)
    expect(store.recent(10).map((summary) => summary.rootName)).toStrictEqual(["d", "b", "a"])
  })

  it("past the budget, a trace held or under way is still kept and one evicted or ended is not, ids alike in their last digits included", () => {
    let now = 7_000
    const store = new TraceStore({ maxTraces: 2, maxNewTracesPerSecond: 3, now: () => now })
    const spans = tracingFor("catalog", store).spans!
    // Three ids ending alike (wouldKeep's digest of them is the same), then one ending otherwise.
    const [x, y, z, w] = ["1", "2", "3", "4"].map((first, i) => `${first}${"0".repeat(27)}${i === 3 ? "9999" : "beef"}`) as [string, string, string, string]
    const remote = (traceId: string) => spans.start("GET catalog", SpanKind.SERVER, { traceId, spanId: "00f067aa0ba902b7", sampled: true })
    for (const id of [x, y, z]) spans.end(remote(id))
    // The second's budget is spent; z's trace took x's place (maxTraces 2).
    expect([store.wouldKeep(x), store.wouldKeep(y), store.wouldKeep(z), store.wouldKeep(w)]).toStrictEqual([false, true, true, false])
    now += 1000
    const open = remote(w)
    expect(open.recording).toBe(true)
    for (const id of ["5", "6", "7"]) spans.end(remote(`${id}${"0".repeat(31)}`))
    // Past this second's budget too: w's span under way keeps its trace wanted; y and z are evicted.
    expect([store.wouldKeep(w), store.wouldKeep(y), store.wouldKeep(z)]).toStrictEqual([true, false, false])
    spans.end(open)
    expect(store.wouldKeep(w)).toBe(false)
  })

  it("keeps maxSpansPerTrace spans of a trace and counts the rest", () => {
    const store = new TraceStore({ maxSpansPerTrace: 2 })
    const tracing = tracingFor("catalog", store)
    const root = tracing.tracer.startSpan("root")
    const context = trace.setSpan(extractContext({}), root)
    for (let i = 0; i < 4; i++) tracing.tracer.startSpan(`child ${i}`, {}, context).end()
    root.end()
    const [summary] = store.recent(1)
    expect(summary).toMatchObject({ spanCount: 2, droppedSpans: 3 })
    expect(store.get(summary!.traceId)!.map((span) => span.name)).toStrictEqual(["child 0", "child 1"])
  })

  it("summarises a trace across two sidecars sharing the store", () => {
    const store = new TraceStore()
    const storefront = tracingFor("storefront", store)
    const catalog = tracingFor("catalog", store)
    const client = storefront.tracer.startSpan("GET catalog", { kind: SpanKind.CLIENT })
    const server = catalog.tracer.startSpan("GET /items", { kind: SpanKind.SERVER }, trace.setSpan(extractContext({}), client))
    server.setStatus({ code: SpanStatusCode.ERROR, message: "app failed" })
    server.end()
    client.end()

    const [summary] = store.recent(5)
    expect(summary).toMatchObject({
      traceId: client.spanContext().traceId,
      rootName: "GET catalog",
      rootService: "storefront",
      services: ["catalog", "storefront"],
      spanCount: 2,
      droppedSpans: 0,
      error: true
    })
    const spans = store.get(summary!.traceId)!
    const end = Math.max(...spans.map((span) => span.startTimeMs + span.durationMs))
    expect(summary!.startTimeMs).toBe(spans[0]!.startTimeMs)
    expect(summary!.durationMs).toBeCloseTo(end - spans[0]!.startTimeMs, 6)
  })

  it("reads a trace back as JSON spans in start order", () => {
    const store = new TraceStore()
    const tracing = tracingFor("catalog", store)
    const server = tracing.tracer.startSpan("GET /items", { kind: SpanKind.SERVER, attributes: { "http.response.status_code": 200, "url.path": "/items" } })
    const app = tracing.tracer.startSpan("app", { kind: SpanKind.CLIENT }, trace.setSpan(extractContext({}), server))
    app.addEvent("first byte", { bytes: 12 })
    app.end()
    server.setStatus({ code: SpanStatusCode.OK })
    server.end()

    const traceId = server.spanContext().traceId
    const spans = store.get(traceId)!
    expect(JSON.parse(JSON.stringify(spans))).toStrictEqual(spans)
    const [first, second] = spans
    expect(first).toMatchObject({
      traceId,
      spanId: server.spanContext().spanId,
      parentSpanId: null,
      name: "GET /items",
      kind: "server",
      service: "catalog",
      instance: "catalog-1",
      status: { code: "ok" },
      attributes: { "http.response.status_code": 200, "url.path": "/items" },
      events: []
    })
    expect(second).toMatchObject({ parentSpanId: server.spanContext().spanId, kind: "client", status: { code: "unset" } })
    expect(second!.events).toMatchObject([{ name: "first byte", attributes: { bytes: 12 } }])
    expect(Math.abs(Number(BigInt(first!.startTimeUnixNano) / 1000n) / 1000 - first!.startTimeMs)).toBeLessThan(0.01)
    expect(Math.abs(second!.events[0]!.timeMs - Number(second!.events[0]!.timeUnixNano) / 1e6)).toBeLessThan(0.01)
    expect(first!.durationMs).toBeGreaterThanOrEqual(0)
    expect(first!.startTimeMs).toBeLessThanOrEqual(second!.startTimeMs)
  })

  it("reads the request path's spans back exactly as recorded (kept packed), beside SDK spans of the same trace and another sidecar's", () => {
    const store = new TraceStore({ maxSpansPerTrace: 4 })
    const a = tracingFor("client", store)
    const b = tracingFor("echo", store)
    const client = a.spans!.start("POST echo", SpanKind.CLIENT, undefined)
    client.attributes["url.path"] = "/say \"hi\"\nand more"
    client.attributes["iip_mesh.attempts"] = 2
    client.attributes["tags"] = ["x", "y\n"]
    const server = b.spans!.start("POST echo", SpanKind.SERVER, { traceId: client.traceId, spanId: client.spanId, sampled: true }, "k=v")
    server.attributes["url.path"] = "/other"
    server.statusCode = SpanStatusCode.ERROR
    server.statusMessage = "app: refused\n"
    b.spans!.end(server)
    const internal = b.tracer.startSpan("effect step", {}, trace.setSpan(extractContext({}), trace.wrapSpanContext({ traceId: client.traceId, spanId: server.spanId, traceFlags: 1 })))
    internal.end()
    a.spans!.end(client)
    const late = a.spans!.start("late", SpanKind.INTERNAL, client)
    a.spans!.end(late)
    const dropped = a.spans!.start("dropped", SpanKind.INTERNAL, client)
    a.spans!.end(dropped)

    const spans = store.get(client.traceId)!
    const bySpanId = (spanId: string) => spans.find((span) => span.spanId === spanId)
    expect(spans.map((span) => span.name).sort()).toStrictEqual(["POST echo", "POST echo", "effect step", "late"])
    expect(bySpanId(client.spanId)).toStrictEqual({
      traceId: client.traceId,
      spanId: client.spanId,
      parentSpanId: null,
      name: "POST echo",
      kind: "client",
      service: "client",
      instance: "client-1",
      startTimeUnixNano: `${client.start}000000`,
      startTimeMs: client.start,
      durationMs: client.durationMs,
      status: { code: "unset" },
      attributes: { "url.path": "/say \"hi\"\nand more", "iip_mesh.attempts": 2, tags: ["x", "y\n"] },
      events: []
    })
    expect(bySpanId(server.spanId)).toMatchObject({
      parentSpanId: client.spanId,
      kind: "server",
      service: "echo",
      instance: "echo-1",
      durationMs: server.durationMs,
      status: { code: "error", message: "app: refused\n" },
      attributes: { "url.path": "/other" }
    })
    expect(bySpanId(internal.spanContext().spanId)).toMatchObject({ name: "effect step", parentSpanId: server.spanId, service: "echo" })
    expect(bySpanId(late.spanId)).toMatchObject({ parentSpanId: client.spanId, kind: "internal", attributes: {} })
    expect(store.recent(1)).toMatchObject([{ traceId: client.traceId, rootName: "POST echo", rootService: "client", services: ["client", "echo"], spanCount: 4, droppedSpans: 1, error: true }])
  })

  it("keeps the request path's spans within maxBytes: when full the oldest trace goes whole, the rest read back", () => {
    // A packed span here is ~200 bytes (+16 of header): 2 KiB holds a few traces of two spans, not 20.
    const store = new TraceStore({ maxBytes: 2048 })
    const tracing = tracingFor("echo", store)
    const ids: Array<string> = []
    for (let i = 0; i < 20; i++) {
      const server = tracing.spans!.start(`request ${i}`, SpanKind.SERVER, undefined)
      server.attributes["url.path"] = `/items/${i}`
      const app = tracing.spans!.start("app", SpanKind.CLIENT, server)
      tracing.spans!.end(app)
      tracing.spans!.end(server)
      ids.push(server.traceId)
    }
    const held = store.recent(100)
    expect(held.length).toBeGreaterThan(1)
    expect(held.length).toBeLessThan(10)
    expect(store.size).toBe(held.length)
    // The newest traces, each whole (both spans), newest first.
    expect(held.map((summary) => summary.traceId)).toStrictEqual(ids.slice(-held.length).reverse())
    for (const summary of held) expect(summary).toMatchObject({ spanCount: 2, droppedSpans: 0 })
    expect(store.get(ids[19]!)!.map((span) => span.name)).toStrictEqual(["request 19", "app"])
    expect(store.get(ids[0]!)).toBeUndefined()
  })

  it("the root of a trace continued from elsewhere is the first span whose parent it does not hold", () => {
    const store = new TraceStore()
    const tracing = tracingFor("catalog", store)
    const remote = extractContext({ traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" })
    const server = tracing.tracer.startSpan("GET /items", { kind: SpanKind.SERVER }, remote)
    tracing.tracer.startSpan("app", {}, trace.setSpan(remote, server)).end()
    server.end()
    const [summary] = store.recent(1)
    expect(summary).toMatchObject({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", rootName: "GET /items", spanCount: 2 })
    expect(store.get(summary!.traceId)![0]!.parentSpanId).toBe("00f067aa0ba902b7")
  })

  it("keeps no unsampled span", () => {
    const store = new TraceStore()
    const tracing = tracingFor("catalog", store)
    tracing.tracer.startSpan("unsampled", {}, extractContext({ traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00" })).end()
    expect(store.size).toBe(0)
  })

  it("one sidecar's shutdown leaves the shared store to the others", async () => {
    const store = new TraceStore()
    const a = makeTracing({ service: "a", store, env: {} })
    const b = tracingFor("b", store)
    a.tracer.startSpan("from a").end()
    await a.shutdown()
    b.tracer.startSpan("from b").end()
    expect(store.recent(10).map((summary) => [summary.rootName, summary.rootService])).toStrictEqual([["from b", "b"], ["from a", "a"]])
  })
})
