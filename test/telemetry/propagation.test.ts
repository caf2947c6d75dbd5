// W3C trace context and baggage across hops (src/telemetry/propagation.ts): extracted from an
// HTTP header record or from header pairs, injected into either, replacing stale values; a round
// trip keeps trace id, parent, flags, tracestate and baggage; an invalid traceparent is ignored,
// so the next span starts a new trace.
import { propagation, ROOT_CONTEXT, trace, TraceFlags } from "@opentelemetry/api"
import { afterEach, describe, expect, it } from "vitest"
import { extractContext, injectContext } from "../../src/telemetry/propagation.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"
import { Cleanup } from "../support/iipRaw.ts"

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
const parentId = "00f067aa0ba902b7"
const traceparent = `00-${traceId}-${parentId}-01`

const baggageOf = (context: ReturnType<typeof extractContext>) =>
  Object.fromEntries((propagation.getBaggage(context)?.getAllEntries() ?? []).map(([key, entry]) => [key, entry.value]))

describe("extractContext", () => {
  it("reads traceparent, tracestate and baggage from a header record", () => {
    const context = extractContext({ traceparent, tracestate: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", baggage: "user=alice, tier=gold;ttl=60", "content-length": 12 })
    expect(trace.getSpanContext(context)).toMatchObject({ traceId, spanId: parentId, traceFlags: TraceFlags.SAMPLED, isRemote: true })
    expect(trace.getSpanContext(context)!.traceState!.serialize()).toBe("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    expect(baggageOf(context)).toStrictEqual({ user: "alice", tier: "gold" })
  })

  it("reads header pairs whatever the case, joining repeated tracestate and baggage headers", () => {
    const context = extractContext([
      ["TraceParent", traceparent],
      ["tracestate", "a=1"],
      ["x-other", "y"],
      ["TRACESTATE", "b=2"],
      ["baggage", "user=alice"],
      ["Baggage", "region=eu"]
    ])
    expect(trace.getSpanContext(context)!.traceState!.serialize()).toBe("a=1,b=2")
    expect(baggageOf(context)).toStrictEqual({ user: "alice", region: "eu" })
  })

  it("ignores an invalid traceparent (and the tracestate that came with it), but keeps baggage", () => {
    for (const bad of [
      `ff-${traceId}-${parentId}-01`, // version ff is forbidden
      `00-${"0".repeat(32)}-${parentId}-01`, // all-zero trace id
      `00-${traceId}-${"0".repeat(16)}-01`, // all-zero parent id
      `00-${traceId.slice(1)}-${parentId}-01`, // short trace id
      `00-${traceId.toUpperCase()}-${parentId}-01`, // upper case hex
      "garbage"
    ]) {
      const context = extractContext({ traceparent: bad, tracestate: "a=1", baggage: "user=alice" })
      expect(trace.getSpanContext(context), bad).toBeUndefined()
      expect(baggageOf(context)).toStrictEqual({ user: "alice" })
    }
  })

  it("builds on the base context it is given", () => {
    const base = propagation.setBaggage(ROOT_CONTEXT, propagation.createBaggage({ kept: { value: "yes" } }))
    const context = extractContext({ traceparent }, base)
    expect(trace.getSpanContext(context)?.traceId).toBe(traceId)
    expect(baggageOf(context)).toStrictEqual({ kept: "yes" })
  })
})

describe("injectContext", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it("round trip through header pairs keeps trace id, parent, flags, tracestate and baggage", () => {
    const incoming = extractContext({ traceparent: `00-${traceId}-${parentId}-00`, tracestate: "vendor=opaque", baggage: "user=alice%20smith,id=42;meta" })
    const pairs: Array<[string, string]> = [["accept", "*/*"]]
    injectContext(incoming, pairs)
    expect(pairs).toStrictEqual([
      ["accept", "*/*"],
      ["traceparent", `00-${traceId}-${parentId}-00`],
      ["tracestate", "vendor=opaque"],
      ["baggage", "user=alice%20smith,id=42;meta"]
    ])
    const again = extractContext(pairs)
    expect(trace.getSpanContext(again)).toMatchObject({ traceId, spanId: parentId, traceFlags: TraceFlags.NONE, isRemote: true })
    expect(trace.getSpanContext(again)!.traceState!.serialize()).toBe("vendor=opaque")
    expect(baggageOf(again)).toStrictEqual({ user: "alice smith", id: "42" })
  })

  it("a child span's context replaces stale headers in pairs (any case) and in records", () => {
    const store = new TraceStore()
    const tracing = makeTracing({ service: "catalog", store, env: {} })
    cleanup.add(() => tracing.shutdown())
    const incoming = extractContext({ traceparent, baggage: "user=alice" })
    const span = tracing.tracer.startSpan("client", {}, incoming)
    const outgoing = trace.setSpan(incoming, span)
    const expected = `00-${traceId}-${span.spanContext().spanId}-01`

    const pairs: Array<[string, string]> = [["TraceParent", traceparent], ["x-a", "1"], ["tracestate", "stale=1"], ["baggage", "old=1"], ["x-b", "2"]]
    injectContext(outgoing, pairs)
    expect(pairs).toStrictEqual([["x-a", "1"], ["x-b", "2"], ["traceparent", expected], ["baggage", "user=alice"]])

    const record: Record<string, string | number> = { traceparent, tracestate: "stale=1", "content-length": 3 }
    injectContext(outgoing, record)
    expect(record).toStrictEqual({ "content-length": 3, traceparent: expected, baggage: "user=alice" })
    span.end()
  })

  it("a context without a span removes the trace headers and writes none", () => {
    const pairs: Array<[string, string]> = [["traceparent", traceparent], ["tracestate", "a=1"], ["host", "x"]]
    injectContext(extractContext({ traceparent: "garbage" }), pairs)
    expect(pairs).toStrictEqual([["host", "x"]])
  })

  it("a span started from an invalid traceparent starts a new trace", () => {
    const store = new TraceStore()
    const tracing = makeTracing({ service: "catalog", store, env: {} })
    cleanup.add(() => tracing.shutdown())
    const span = tracing.tracer.startSpan("server", {}, extractContext({ traceparent: `00-${"0".repeat(32)}-${parentId}-01` }))
    span.end()
    expect(span.spanContext().traceId).not.toBe("0".repeat(32))
    expect(store.get(span.spanContext().traceId)![0]!.parentSpanId).toBeNull()
  })
})
