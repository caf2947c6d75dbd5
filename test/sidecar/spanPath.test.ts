// A span's url.path (src/sidecar/observe.ts) as a peer's IIP path can make it: the path arrives as
// UTF-8 up to 64 KiB, so past the 2,048-character cut it may hold astral characters (two UTF-16
// units each). The cut must not split one: a lone surrogate is not a Unicode string (OTLP/JSON
// carries it as a bare \ud83d escape, protobuf as U+FFFD).
import { describe, expect, it } from "vitest"
import { InboundObservation } from "../../src/sidecar/observe.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"

describe("a span's url.path", () => {
  it("is cut to 2048 UTF-16 units without splitting a surrogate pair", async () => {
    const traces = new TraceStore()
    const tracing = makeTracing({ service: "catalog", store: traces, env: {} })
    const telemetry = { tracing, metrics: makeMetrics(), traces }
    const traceId = "5bf92f3577b34da6a3ce929d0e0e4736"
    // "/" and then emoji: unit 2047 is a high surrogate, its low half at 2048.
    const path = `/${"😀".repeat(3000)}`
    const observation = new InboundObservation(telemetry, "catalog", "GET", path, [["traceparent", `00-${traceId}-00f067aa0ba902b7-01`]], "127.0.0.1:40000")
    observation.end("127.0.0.1:8080", 200, undefined)
    const kept = String(traces.get(traceId)![0]!.attributes["url.path"])
    expect(kept.isWellFormed()).toBe(true)
    expect(kept).toBe(`/${"😀".repeat(1023)}`)
    await tracing.shutdown()
  })
})
