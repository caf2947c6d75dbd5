// The request path's spans (src/telemetry/spanRecord.ts) and their header form (propagation.ts's
// compact half): the hand-written traceparent reader agrees with @opentelemetry/core's on valid,
// invalid and randomly mutated values; the recorder decides sampling as the SDK's samplers do
// (OTEL_TRACES_SAMPLER), keeps sampled records in the trace store with their parents, passes
// tracestate and baggage on normalized. (Export as ReadableSpans over OTLP: test/sidecar/tracing.test.ts.)
import { SpanKind, SpanStatusCode, TraceFlags } from "@opentelemetry/api"
import { parseTraceParent } from "@opentelemetry/core"
import { afterEach, describe, expect, it } from "vitest"
import {
  formatTraceparent,
  incomingTraceOfPairs,
  incomingTraceOfRecord,
  parseTraceparent,
  replaceTraceHeaders
} from "../../src/telemetry/propagation.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing, type Tracing } from "../../src/telemetry/tracing.ts"
import { prng } from "../helpers/prng.ts"
import { Cleanup } from "../support/iipRaw.ts"

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
const parentId = "00f067aa0ba902b7"
const sampledParent = `00-${traceId}-${parentId}-01`
const unsampledParent = `00-${traceId}-${parentId}-00`

const SEED = Number(process.env.TRACEPARENT_SEED ?? 0x7ace)

describe("parseTraceparent", () => {
  const reference = (value: string) => {
    const parsed = parseTraceParent(value)
    return parsed === null ? undefined : { traceId: parsed.traceId, spanId: parsed.spanId, sampled: (parsed.traceFlags & TraceFlags.SAMPLED) === 1 }
  }

  it("agrees with @opentelemetry/core's reader on chosen cases", () => {
    for (const value of [
      sampledParent,
      unsampledParent,
      `00-${traceId}-${parentId}-03`,
      ` ${sampledParent}`,
      `${sampledParent}\t`,
      `  ${sampledParent}`,
      `01-${traceId}-${parentId}-01-extra`,
      `00-${traceId}-${parentId}-01-extra`,
      `01-${traceId}-${parentId}-01extra`,
      `ff-${traceId}-${parentId}-01`,
      `00-${"0".repeat(32)}-${parentId}-01`,
      `00-${traceId}-${"0".repeat(16)}-01`,
      `00-${traceId.toUpperCase()}-${parentId}-01`,
      `00-${traceId}-${parentId}-0g`,
      `00_${traceId}-${parentId}-01`,
      `00-${traceId.slice(1)}-${parentId}-01`,
      "",
      "garbage"
    ]) {
      expect(parseTraceparent(value), JSON.stringify(value)).toStrictEqual(reference(value))
    }
  })

  it("agrees with it on random mutations of a valid value", () => {
    const rng = prng(SEED)
    const alphabet = ["0", "1", "9", "a", "f", "g", "A", "F", "-", " ", "\t", "x", "ff", "00", "-extra"]
    for (let run = 0; run < 20_000; run++) {
      let value = rng.pick([sampledParent, unsampledParent, `0${rng.int(0, 9)}-${traceId}-${parentId}-0${rng.int(0, 9)}`])
      for (let edits = rng.int(1, 3); edits > 0; edits--) {
        const at = rng.int(0, value.length)
        const roll = rng.next()
        if (roll < 0.4) value = value.slice(0, at) + rng.pick(alphabet) + value.slice(at + 1)
        else if (roll < 0.7) value = value.slice(0, at) + rng.pick(alphabet) + value.slice(at)
        else value = value.slice(0, at) + value.slice(at + 1)
      }
      expect(parseTraceparent(value), `seed ${SEED} run ${run}: ${JSON.stringify(value)}`).toStrictEqual(reference(value))
    }
  })

  it("formats what it reads", () => {
    expect(formatTraceparent(traceId, parentId, true)).toBe(sampledParent)
    expect(formatTraceparent(traceId, parentId, false)).toBe(unsampledParent)
  })
})

describe("incoming trace headers and their replacement", () => {
  it("tracestate only with a valid traceparent; repeated tracestate and baggage headers join; both normalized", () => {
    const trace = incomingTraceOfPairs([
      ["traceparent", sampledParent],
      ["tracestate", "a=1"],
      ["x-other", "y"],
      ["TraceState", "b=2,not valid"],
      ["baggage", "user=alice%20smith"],
      ["Baggage", "id=42;meta"]
    ])
    expect(trace).toStrictEqual({ parent: { traceId, spanId: parentId, sampled: true }, traceState: "a=1,b=2", baggage: "user=alice%20smith,id=42;meta" })
    expect(incomingTraceOfRecord({ traceparent: "garbage", tracestate: "a=1", baggage: "user=alice" })).toStrictEqual({ parent: undefined, traceState: undefined, baggage: "user=alice" })
    expect(incomingTraceOfRecord({ traceparent: [sampledParent, "garbage"], tracestate: ["a=1", "b=2"] }).traceState).toBe("a=1,b=2")
    expect(incomingTraceOfRecord({ "content-length": 3 })).toStrictEqual({ parent: undefined, traceState: undefined, baggage: undefined })
  })

  it("replaceTraceHeaders drops every case of the old ones and writes this hop's", () => {
    const pairs: Array<[string, string]> = [["TraceParent", sampledParent], ["x-a", "1"], ["tracestate", "stale=1"], ["BAGGAGE", "old=1"], ["x-b", "2"]]
    replaceTraceHeaders(pairs, formatTraceparent(traceId, "b7ad6b7169203331", true), { parent: undefined, traceState: "v=1", baggage: "user=alice" })
    expect(pairs).toStrictEqual([["x-a", "1"], ["x-b", "2"], ["traceparent", `00-${traceId}-b7ad6b7169203331-01`], ["tracestate", "v=1"], ["baggage", "user=alice"]])
  })
})

describe("SpanRecorder", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  const tracingFor = (store: TraceStore, env: Record<string, string> = {}): Tracing => {
    const tracing = makeTracing({ service: "catalog", store, env, instanceId: "catalog-1" })
    cleanup.add(() => tracing.shutdown())
    return tracing
  }

  it("a server span under a remote parent and an app span under it are stored with their parents, origin and status", () => {
    const store = new TraceStore()
    const spans = tracingFor(store).spans!
    const server = spans.start("GET catalog", SpanKind.SERVER, parseTraceparent(sampledParent), "vendor=1")
    const app = spans.start("GET", SpanKind.CLIENT, server)
    expect(app.traceparent()).toBe(`00-${traceId}-${app.spanId}-01`)
    expect([server.traceState, app.traceState]).toStrictEqual(["vendor=1", "vendor=1"])
    server.attributes["http.request.method"] = "GET"
    app.statusCode = SpanStatusCode.ERROR
    app.statusMessage = "app: app_failed"
    spans.end(app)
    spans.end(server)
    const stored = store.get(traceId)!
    expect(stored.map((span) => [span.name, span.kind, span.parentSpanId, span.service, span.instance])).toStrictEqual([
      ["GET catalog", "server", parentId, "catalog", "catalog-1"],
      ["GET", "client", server.spanId, "catalog", "catalog-1"]
    ])
    expect(stored[0]!.attributes).toStrictEqual({ "http.request.method": "GET" })
    expect(stored[1]!.status).toStrictEqual({ code: "error", message: "app: app_failed" })
    expect(stored[0]!.startTimeUnixNano).toBe(String(BigInt(stored[0]!.startTimeMs) * 1_000_000n))
    expect(stored[0]!.durationMs).toBeGreaterThanOrEqual(stored[1]!.durationMs)
  })

  it("the default sampler follows the parent's flag: an unsampled parent gives an unsampled child, written 00 and not stored", () => {
    const store = new TraceStore()
    const spans = tracingFor(store).spans!
    const child = spans.start("GET catalog", SpanKind.SERVER, parseTraceparent(unsampledParent))
    expect(child.sampled).toBe(false)
    expect(child.traceparent()).toBe(`00-${traceId}-${child.spanId}-00`)
    spans.end(child)
    const root = spans.start("GET catalog", SpanKind.CLIENT, undefined)
    expect(root.sampled).toBe(true)
    expect(root.traceId).toMatch(/^[0-9a-f]{32}$/)
    expect(root.spanId).toMatch(/^[0-9a-f]{16}$/)
    spans.end(root)
    expect(store.recent(10).map((summary) => summary.traceId)).toStrictEqual([root.traceId])
  })

  it("always_off records nothing even under a sampled parent; traceidratio 0 and 1; parentbased_always_off samples no root", () => {
    const store = new TraceStore()
    expect(tracingFor(store, { OTEL_TRACES_SAMPLER: "always_off" }).spans!.start("x", SpanKind.SERVER, parseTraceparent(sampledParent)).sampled).toBe(false)
    const none = tracingFor(store, { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" }).spans!
    const all = tracingFor(store, { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1" }).spans!
    for (let i = 0; i < 20; i++) {
      expect(none.start("none", SpanKind.CLIENT, undefined).sampled).toBe(false)
      expect(all.start("all", SpanKind.CLIENT, undefined).sampled).toBe(true)
    }
    const off = tracingFor(store, { OTEL_TRACES_SAMPLER: "parentbased_always_off" }).spans!
    expect(off.start("root", SpanKind.CLIENT, undefined).sampled).toBe(false)
    expect(off.start("child", SpanKind.SERVER, parseTraceparent(sampledParent)).sampled).toBe(true)
  })

  it("a span whose trace the store will not keep records nothing (nor its children) and still carries its context; with room, it records", () => {
    let now = 5_000
    const store = new TraceStore({ maxNewTracesPerSecond: 1, now: () => now })
    const spans = tracingFor(store).spans!
    const kept = spans.start("GET catalog", SpanKind.CLIENT, undefined)
    expect(kept.recording).toBe(true)
    kept.attributes["http.request.method"] = "GET"
    spans.end(kept)
    // The second's one new trace is taken: the next trace is only passed on.
    const passed = spans.start("GET catalog", SpanKind.SERVER, parseTraceparent(sampledParent))
    const child = spans.start("GET", SpanKind.CLIENT, passed)
    expect([passed.sampled, passed.recording, child.sampled, child.recording]).toStrictEqual([true, false, true, false])
    expect(child.traceparent()).toBe(`00-${traceId}-${child.spanId}-01`)
    expect(() => {
      passed.attributes["http.request.method"] = "GET"
    }).toThrow(TypeError)
    spans.end(child)
    spans.end(passed)
    expect(store.get(traceId)).toBeUndefined()
    // A span of a trace the store holds records, whatever the budget; so does a new trace in the next second.
    expect(spans.start("GET", SpanKind.SERVER, { traceId: kept.traceId, spanId: kept.spanId, sampled: true }).recording).toBe(true)
    now += 1000
    const next = spans.start("GET catalog", SpanKind.SERVER, parseTraceparent(sampledParent))
    expect(next.recording).toBe(true)
    spans.end(next)
    expect(store.get(traceId)!.map((span) => span.spanId)).toStrictEqual([next.spanId])
  })

  it("a span that records nothing has a span id when read, the same at each read and apart from its child's; its child keeps no parent id", () => {
    const store = new TraceStore({ maxNewTracesPerSecond: 1, now: () => 5_000 })
    const spans = tracingFor(store).spans!
    // The second's one new trace is taken; then sidecar B's pair at saturation: a server span passed on only, and the app span under it.
    spans.end(spans.start("GET other", SpanKind.CLIENT, undefined))
    const server = spans.start("GET catalog", SpanKind.SERVER, parseTraceparent(sampledParent))
    const app = spans.start("GET", SpanKind.CLIENT, server)
    expect([server.recording, app.recording, server.parentSpanId, app.parentSpanId]).toStrictEqual([false, false, null, null])
    const traceparent = app.traceparent()
    expect(traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`))
    expect(app.traceparent()).toBe(traceparent)
    expect(app.spanId).toBe(traceparent.slice(36, 52))
    expect(server.spanId).toMatch(/^[0-9a-f]{16}$/)
    expect(server.spanId).toBe(server.spanId)
    expect(server.spanId).not.toBe(app.spanId)
    expect(server.spanId).not.toBe(parentId)
    // A recording child still names its parent (the records' own ids are drawn at the start).
    const roomy = new TraceStore({ maxNewTracesPerSecond: 1, now: () => 9_000 })
    const recorder = tracingFor(roomy).spans!
    const kept = recorder.start("GET catalog", SpanKind.SERVER, parseTraceparent(sampledParent))
    const keptApp = recorder.start("GET", SpanKind.CLIENT, kept)
    expect([kept.recording, keptApp.recording]).toStrictEqual([true, true])
    expect([kept.parentSpanId, keptApp.parentSpanId]).toStrictEqual([parentId, kept.spanId])
  })

  it("the store's second is the caller's clock reading when the store keeps time by performance.now(), its own clock's otherwise", () => {
    const unknown = "5bf92f3577b34da6a3ce929d0e0e4736"
    for (;;) {
      const store = new TraceStore({ maxNewTracesPerSecond: 1 })
      const spans = tracingFor(store).spans!
      const before = Math.floor(performance.now() / 1000)
      // The second's one new trace is taken.
      spans.end(spans.start("GET other", SpanKind.CLIENT, undefined))
      const after = Math.floor(performance.now() / 1000)
      // Crossed into the next second while taking it: which second the store counted is not known.
      if (before !== after) continue
      expect(store.wouldKeep(unknown, false, before * 1000 + 999)).toBe(false)
      expect(store.wouldKeep(unknown, false, (before + 1) * 1000)).toBe(true)
      expect(spans.start("GET", SpanKind.SERVER, parseTraceparent(sampledParent), undefined, before * 1000).recording).toBe(false)
      expect(spans.start("GET", SpanKind.SERVER, parseTraceparent(sampledParent), undefined, (before + 1) * 1000).recording).toBe(true)
      break
    }
    // A store with a clock of its own (tests, TestClock) reads that one, whatever the caller read.
    const clocked = new TraceStore({ maxNewTracesPerSecond: 1, now: () => 5_000 })
    const spans = tracingFor(clocked).spans!
    spans.end(spans.start("GET other", SpanKind.CLIENT, undefined))
    expect(clocked.wouldKeep(unknown, false, 99_000)).toBe(false)
  })

  it("sidecars sharing a store: a trace whose span records under one records under the next even past the budget, and is kept whole", () => {
    let now = 9_000
    const store = new TraceStore({ maxNewTracesPerSecond: 1, now: () => now })
    const caller = tracingFor(store).spans!
    const callee = tracingFor(store).spans!
    const client = caller.start("GET catalog", SpanKind.CLIENT, undefined)
    // Another trace takes the second's budget before the callee's spans start.
    const other = caller.start("GET other", SpanKind.CLIENT, undefined)
    caller.end(other)
    const server = callee.start("GET catalog", SpanKind.SERVER, { traceId: client.traceId, spanId: client.spanId, sampled: true })
    const app = callee.start("GET", SpanKind.CLIENT, server)
    expect([client.recording, server.recording, app.recording]).toStrictEqual([true, true, true])
    // A trace not under way and past the budget still records nothing.
    expect(caller.start("GET late", SpanKind.CLIENT, undefined).recording).toBe(false)
    // They end in the next second, with room for the trace: all three spans are there.
    now += 1000
    callee.end(app)
    callee.end(server)
    caller.end(client)
    expect(store.get(other.traceId)).toHaveLength(1)
    expect(store.get(client.traceId)!.map((span) => span.spanId)).toStrictEqual([client.spanId, server.spanId, app.spanId])
  })

  it("tracing off has no recorder", () => {
    expect(makeTracing({ service: "catalog", store: new TraceStore(), env: {}, enabled: false }).spans).toBeUndefined()
  })
})
