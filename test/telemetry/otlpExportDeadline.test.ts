// OTLP/HTTP export against a collector that answers 200 with its headers and then trickles the
// body for ever (src/telemetry/exportDeadline.ts, tracing.ts): the exporter's own timeout is a
// socket idle timeout, which a byte every 10 ms never lets fire, and the exporter holds one of its
// 30 concurrent export slots per request until the request ends. Each exchange must be cut at the
// export timeout, so the slots come back: once the collector answers again, spans reach it.
// Synchronised on forceFlush (each answered at the export timeout) and on the server's requests.
import { SpanKind } from "@opentelemetry/api"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"

/** The exporter's concurrency limit (otlp-exporter-base's default): one more export than it holds. */
const ROUNDS = 31

describe("OTLP export against a collector that trickles its answer", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it.each(["http/protobuf", "http/json"])("%s: each exchange ends at the export timeout, the export slots come back, and spans reach the collector once it answers", async (protocol) => {
    let trickling = true
    const open = new Set<http.ServerResponse>()
    const bodies: Array<Buffer> = []
    const collector = http.createServer((req, res) => {
      if (!trickling) {
        const chunks: Array<Buffer> = []
        req.on("data", (chunk: Buffer) => chunks.push(chunk))
        req.on("end", () => {
          bodies.push(Buffer.concat(chunks))
          res.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
        return
      }
      req.resume()
      res.writeHead(200, { "content-type": "application/json" })
      res.flushHeaders()
      // A byte of body every 10 ms: the socket is never idle, the answer never ends.
      const trickle = setInterval(() => res.write(" "), 10)
      open.add(res)
      res.on("close", () => {
        clearInterval(trickle)
        open.delete(res)
      })
    })
    await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => collector.close(() => resolve())))
    cleanup.add(() => collector.closeAllConnections())
    const errors: Array<string> = []
    const tracing = makeTracing({
      service: "catalog",
      store: new TraceStore(),
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`, OTEL_EXPORTER_OTLP_PROTOCOL: protocol, OTEL_EXPORTER_OTLP_TIMEOUT: "100" },
      onExportError: (error) => errors.push(error.message)
    })
    cleanup.add(() => tracing.shutdown())
    const spans = tracing.spans!
    for (let round = 0; round < ROUNDS; round++) {
      spans.end(spans.start("GET catalog", SpanKind.SERVER, undefined))
      await withTimeout(tracing.forceFlush(), 2000, `export ${round + 1}`)
    }
    expect(tracing.droppedSpans).toStrictEqual({ queueFull: 0, exportFailed: ROUNDS })
    // Each cut export is one failure, said once: BoundedExport's own timeout (set first, at the export) answers it, and the
    // exporter's failure when the agent destroys its socket comes after and is ignored.
    expect(errors).toStrictEqual(Array.from({ length: ROUNDS }, () => "span export not answered within 100 ms (1 spans)"))
    // Before: every request stayed open, trickling, and from the 31st on the exporter refused at once.
    expect(errors.filter((message) => message.includes("Concurrent export limit"))).toStrictEqual([])
    await waitFor(() => open.size === 0, 2000, "the trickled answers closed by the exporter")

    trickling = false
    spans.end(spans.start("after the trickle", SpanKind.SERVER, undefined))
    await withTimeout(tracing.forceFlush(), 2000, "the export after the trickle")
    expect(bodies.some((body) => body.includes(Buffer.from("after the trickle")))).toBe(true)
    expect(tracing.droppedSpans).toStrictEqual({ queueFull: 0, exportFailed: ROUNDS })
  }, 20_000)
})
