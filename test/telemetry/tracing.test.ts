// makeTracing (src/telemetry/tracing.ts): Effect spans land in the trace of the OpenTelemetry span
// they run under, through the sidecar's own provider; sidecars in one process keep their service
// names; OTEL_TRACES_SAMPLER and its argument decide what is recorded; tracing off is a no-op
// that still carries the parent's context to the next hop.
import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import { ROOT_CONTEXT, SpanKind, trace, TraceFlags } from "@opentelemetry/api"
import * as Effect from "effect/Effect"
import { afterEach, describe, expect, it } from "vitest"
import { extractContext, injectContext } from "../../src/telemetry/propagation.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing, type Tracing, withOtelParent } from "../../src/telemetry/tracing.ts"
import { Cleanup } from "../support/iipRaw.ts"

const remoteParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
const unsampledParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"

describe("makeTracing", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  const tracingFor = (service: string, store: TraceStore, env: Record<string, string> = {}, enabled?: boolean): Tracing => {
    const tracing = makeTracing({ service, store, env, ...(enabled === undefined ? {} : { enabled }) })
    cleanup.add(() => tracing.shutdown())
    return tracing
  }

  it("an Effect span run under an OpenTelemetry span joins its trace, and its children nest", async () => {
    const store = new TraceStore()
    const tracing = tracingFor("catalog", store)
    const server = tracing.tracer.startSpan("GET /items", { kind: SpanKind.SERVER }, extractContext({ traceparent: remoteParent }))
    const program = Effect.gen(function*() {
      yield* Effect.annotateCurrentSpan("items", 3)
      yield* Effect.void.pipe(Effect.withSpan("query", { kind: "client" }))
    }).pipe(Effect.withSpan("handle"))
    await Effect.runPromise(program.pipe(withOtelParent(trace.setSpan(extractContext({}), server)), Effect.provide(tracing.layer)))
    server.end()

    const traceId = server.spanContext().traceId
    expect(traceId).toBe("0af7651916cd43dd8448eb211c80319c")
    const spans = new Map(store.get(traceId)!.map((span) => [span.name, span]))
    expect(spans.get("GET /items")!.parentSpanId).toBe("b7ad6b7169203331")
    expect(spans.get("handle")!.parentSpanId).toBe(server.spanContext().spanId)
    expect(spans.get("handle")!.attributes["items"]).toBe(3)
    expect(spans.get("handle")!.status.code).toBe("ok")
    expect(spans.get("query")!.parentSpanId).toBe(spans.get("handle")!.spanId)
    expect(spans.get("query")!.kind).toBe("client")
    for (const span of spans.values()) expect(span.service).toBe("catalog")
    // Effect spans are timed as the SDK times its own (start at Date.now(), in whole ms; duration on
    // the monotonic clock), so a child never starts before its parent; its end may pass the
    // parent's by less than the 1 ms of the starts' rounding, as between two SDK spans.
    const within = (child: string, parent: string) => {
      const [c, p] = [spans.get(child)!, spans.get(parent)!]
      expect(c.startTimeMs, `${child} starts within ${parent}`).toBeGreaterThanOrEqual(p.startTimeMs)
      expect(c.startTimeMs + c.durationMs, `${child} ends within ${parent}`).toBeLessThan(p.startTimeMs + p.durationMs + 1)
    }
    within("handle", "GET /items")
    within("query", "handle")
  })

  it("an OpenTelemetry span started inside Effect code joins through OtelTracer.currentOtelSpan", async () => {
    const store = new TraceStore()
    const tracing = tracingFor("catalog", store)
    const program = Effect.gen(function*() {
      const parent = yield* OtelTracer.currentOtelSpan
      tracing.tracer.startSpan("plain", {}, trace.setSpan(ROOT_CONTEXT, parent)).end()
    }).pipe(Effect.withSpan("effect"))
    await Effect.runPromise(program.pipe(Effect.provide(tracing.layer)))
    const [summary] = store.recent(1)
    const [effect, plain] = store.get(summary!.traceId)!
    expect([effect!.name, plain!.name]).toStrictEqual(["effect", "plain"])
    expect(plain!.parentSpanId).toBe(effect!.spanId)
  })

  it("a failing Effect span is stored with status error", async () => {
    const store = new TraceStore()
    const tracing = tracingFor("catalog", store)
    const exit = await Effect.runPromiseExit(Effect.fail("boom").pipe(Effect.withSpan("fails"), Effect.provide(tracing.layer)))
    expect(exit._tag).toBe("Failure")
    const [summary] = store.recent(1)
    expect(summary!.rootName).toBe("fails")
    expect(summary!.error).toBe(true)
  })

  it("two sidecars sharing a store keep their own service names, Effect spans included", async () => {
    const store = new TraceStore()
    const a = tracingFor("storefront", store)
    const b = tracingFor("catalog", store)
    const client = a.tracer.startSpan("call", { kind: SpanKind.CLIENT })
    const headers: Record<string, string> = {}
    injectContext(trace.setSpan(extractContext({}), client), headers)
    await Effect.runPromise(Effect.void.pipe(Effect.withSpan("serve", { kind: "server" }), withOtelParent(extractContext(headers)), Effect.provide(b.layer)))
    client.end()

    const [summary] = store.recent(1)
    expect(summary!.services).toStrictEqual(["catalog", "storefront"])
    expect(summary!.rootName).toBe("call")
    expect(summary!.rootService).toBe("storefront")
    const spans = store.get(summary!.traceId)!
    expect(spans.map((span) => [span.name, span.service])).toStrictEqual([["call", "storefront"], ["serve", "catalog"]])
    expect(spans[1]!.parentSpanId).toBe(client.spanContext().spanId)
  })

  it("OTEL_TRACES_SAMPLER=always_off records nothing, even under a sampled parent", () => {
    const store = new TraceStore()
    const tracing = tracingFor("catalog", store, { OTEL_TRACES_SAMPLER: "always_off" })
    const span = tracing.tracer.startSpan("dropped", {}, extractContext({ traceparent: remoteParent }))
    expect(span.isRecording()).toBe(false)
    span.end()
    expect(store.size).toBe(0)
  })

  it("traceidratio with OTEL_TRACES_SAMPLER_ARG=0 samples no root; 1 samples every root", () => {
    const store = new TraceStore()
    const none = tracingFor("catalog", store, { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" })
    const all = tracingFor("catalog", store, { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1" })
    for (let i = 0; i < 20; i++) {
      none.tracer.startSpan("none").end()
      all.tracer.startSpan("all").end()
    }
    expect(store.recent(100).map((summary) => summary.rootName)).toStrictEqual(Array(20).fill("all"))
  })

  it("the default (parentbased_always_on) follows the parent's flag; parentbased_always_off samples no root", () => {
    const store = new TraceStore()
    const byDefault = tracingFor("catalog", store)
    expect(byDefault.tracer.startSpan("root").isRecording()).toBe(true)
    expect(byDefault.tracer.startSpan("child", {}, extractContext({ traceparent: unsampledParent })).isRecording()).toBe(false)
    const off = tracingFor("catalog", store, { OTEL_TRACES_SAMPLER: "parentbased_always_off" })
    expect(off.tracer.startSpan("root").isRecording()).toBe(false)
    const child = off.tracer.startSpan("child", {}, extractContext({ traceparent: remoteParent }))
    expect(child.isRecording()).toBe(true)
    expect(child.spanContext().traceFlags & TraceFlags.SAMPLED).toBe(TraceFlags.SAMPLED)
  })

  it("an unknown sampler is reported and the default used", () => {
    const tracing = tracingFor("catalog", new TraceStore(), { OTEL_TRACES_SAMPLER: "jaeger_remote" })
    expect(tracing.warnings.map((w) => w.variable)).toStrictEqual(["OTEL_TRACES_SAMPLER"])
    expect(tracing.tracer.startSpan("root").isRecording()).toBe(true)
  })

  it("OTEL_SERVICE_NAME wins over the configured service", () => {
    const store = new TraceStore()
    const tracing = tracingFor("catalog", store, { OTEL_SERVICE_NAME: "from-env" })
    expect(tracing.serviceName).toBe("from-env")
    tracing.tracer.startSpan("x").end()
    expect(store.recent(1)[0]!.services).toStrictEqual(["from-env"])
  })

  describe("disabled", () => {
    it("records nothing, and a span still carries the incoming context to the next hop", async () => {
      const store = new TraceStore()
      const tracing = tracingFor("catalog", store, { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" }, false)
      expect(tracing.enabled).toBe(false)
      expect(tracing.exporters).toStrictEqual([])
      const incoming = extractContext({ traceparent: remoteParent, tracestate: "vendor=x", baggage: "user=alice" })
      const span = tracing.tracer.startSpan("GET /items", { kind: SpanKind.SERVER }, incoming)
      expect(span.isRecording()).toBe(false)
      const outgoing: Array<[string, string]> = []
      injectContext(trace.setSpan(incoming, span), outgoing)
      expect(outgoing).toStrictEqual([["traceparent", remoteParent], ["tracestate", "vendor=x"], ["baggage", "user=alice"]])
      span.end()

      const result = await Effect.runPromise(Effect.succeed(1).pipe(Effect.withSpan("effect"), withOtelParent(incoming), Effect.provide(tracing.layer)))
      expect(result).toBe(1)
      expect(store.size).toBe(0)
      await tracing.forceFlush()
    })

    it("follows OTEL_SDK_DISABLED unless the option says otherwise", () => {
      const store = new TraceStore()
      expect(tracingFor("catalog", store, { OTEL_SDK_DISABLED: "true" }).enabled).toBe(false)
      expect(tracingFor("catalog", store, { OTEL_SDK_DISABLED: "true" }, true).enabled).toBe(true)
      expect(tracingFor("catalog", store, { OTEL_SDK_DISABLED: "false" }).enabled).toBe(true)
    })
  })
})
