// The traceparent sidecar B gives its app (src/sidecar/observe.ts's callApp), whether B's spans
// record or not (issue 14: a span that records nothing draws its id only when read, and keeps no
// parent id): the caller's trace, sampled as it came, and as parent id the app span's own, the
// same at each read; when the spans record, the stored app span has that very id and the server
// span as its parent, the server span the caller's span.
import { SpanKind } from "@opentelemetry/api"
import { describe, expect, it } from "vitest"
import { InboundObservation } from "../../src/sidecar/observe.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"
import { Cleanup } from "../support/iipRaw.ts"

const traceId = "5bf92f3577b34da6a3ce929d0e0e4736"
const callerSpan = "00f067aa0ba902b7"

describe("the traceparent B gives its app", () => {
  const telemetryOf = (cleanup: Cleanup, budgetSpent: boolean) => {
    const traces = new TraceStore({ maxNewTracesPerSecond: 1, now: () => 5_000 })
    const tracing = makeTracing({ service: "catalog", store: traces, env: {} })
    cleanup.add(() => tracing.shutdown())
    // The second's one new trace taken by another request: this one's spans only carry ids.
    if (budgetSpent) tracing.spans!.end(tracing.spans!.start("GET other", SpanKind.CLIENT, undefined))
    return { tracing, metrics: makeMetrics(), traces }
  }
  const callApp = (telemetry: ReturnType<typeof telemetryOf>) => {
    const observation = new InboundObservation(telemetry, "catalog", "GET", "/items", [["x-a", "1"], ["traceparent", `00-${traceId}-${callerSpan}-01`]], "127.0.0.1:40000")
    const headers: Array<readonly [string, string]> = [["x-a", "1"], ["traceparent", `00-${traceId}-${callerSpan}-01`]]
    observation.callApp("127.0.0.1", 8080, headers)
    observation.end("127.0.0.1:8080", 200, undefined)
    return headers.filter(([name]) => name === "traceparent").map(([, value]) => value)
  }

  it("not recording: the caller's trace and sampled flag, a parent id of its own (not the caller's), one per request", async () => {
    const cleanup = new Cleanup()
    try {
      const telemetry = telemetryOf(cleanup, true)
      const [first] = callApp(telemetry)
      const [second] = callApp(telemetry)
      for (const value of [first, second]) expect(value).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`))
      const ids = [first!.slice(36, 52), second!.slice(36, 52)]
      expect(ids[0]).not.toBe(callerSpan)
      expect(ids[0]).not.toBe("0".repeat(16))
      expect(ids[1]).not.toBe(ids[0])
      expect(telemetry.traces.get(traceId)).toBeUndefined()
    } finally {
      await cleanup.run()
    }
  })

  it("recording: the stored app span's id is the app's parent id, under the server span, under the caller's", async () => {
    const cleanup = new Cleanup()
    try {
      const telemetry = telemetryOf(cleanup, false)
      const [value] = callApp(telemetry)
      const spans = telemetry.traces.get(traceId)!
      const server = spans.find((span) => span.kind === "server")!
      const app = spans.find((span) => span.kind === "client")!
      expect(value).toBe(`00-${traceId}-${app.spanId}-01`)
      expect([server.parentSpanId, app.parentSpanId]).toStrictEqual([callerSpan, server.spanId])
    } finally {
      await cleanup.run()
    }
  })
})
