// A sidecar whose OTLP collector misbehaves: answers 503 or 429 forever, answers a 100 MiB body or
// garbage, redirects, or never answers. Real sidecar pairs (A -> B -> far app; B exports to a
// collector stub written with node:http on 127.0.0.1:0). Checked: every request is answered as
// usual; the spans B could not deliver are counted on its /metrics
// (iip_mesh_spans_dropped_total{reason="export_failed"}), not dropped silently; B stops within its
// drain timeout whatever the collector does.
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { call, echoRequest, sidecarConfig, startAdmin, startApp, startSidecar } from "../support/sidecarHarness.ts"

type Misbehaviour = "503" | "429" | "huge" | "garbage" | "redirect" | "silent"

/** A collector that answers every export the same wrong way. */
const startCollector = async (cleanup: Cleanup, how: Misbehaviour): Promise<string> => {
  const server = http.createServer((req, res) => {
    req.resume()
    req.on("end", () => {
      switch (how) {
        case "503":
        case "429":
          res.writeHead(Number(how), { "retry-after": "0" }).end()
          return
        case "huge": {
          // 100 MiB, written as the reader takes it (it stops reading long before).
          res.writeHead(200, { "content-type": "application/x-protobuf", "content-length": 100 * 1024 * 1024 })
          const chunk = Buffer.alloc(64 * 1024, 0x41)
          let left = 1600
          const more = () => {
            while (left > 0) {
              left--
              if (!res.write(chunk)) return void res.once("drain", more)
            }
            res.end()
          }
          more()
          return
        }
        case "garbage":
          res.writeHead(200, { "content-type": "application/x-protobuf" }).end(Buffer.from([0xff, 0xfe, 0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x7b]))
          return
        case "redirect":
          res.writeHead(307, { location: "http://127.0.0.1:9/v1/traces" }).end()
          return
        case "silent":
          return
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  cleanup.add(() => server.closeAllConnections())
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

const droppedSpans = (metrics: string, reason: string): number => Number(new RegExp(`^iip_mesh_spans_dropped_total\\{reason="${reason}"\\} (\\d+)`, "m").exec(metrics)?.[1] ?? NaN)

describe("a misbehaving OTLP collector", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  const pairExportingTo = async (collector: string) => {
    const far = await startApp(cleanup, echoRequest)
    // A short export timeout: a failing batch is given up on quickly (retries included).
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: collector, OTEL_EXPORTER_OTLP_TIMEOUT: "300" }
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: far.address }), undefined, { env })
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    return { a, b, adminB: await startAdmin(cleanup, b) }
  }

  for (const how of ["503", "429", "huge", "garbage", "redirect"] as const) {
    it(`answers ${how}: requests are served, the spans it did not take are counted as dropped, B stops in time`, async () => {
      const { a, b, adminB } = await pairExportingTo(await startCollector(cleanup, how))
      for (let i = 0; i < 20; i++) expect((await call(a.outboundPort, { path: `/items/${i}` })).status).toBe(200)
      await withTimeout(b.sidecar.telemetry.tracing.forceFlush(), 5000, "B's flush")
      const metrics = await (await fetch(`${adminB}/metrics`)).text()
      // B's server and app span of each request; a garbage answer with 200 is taken as delivered.
      expect(droppedSpans(metrics, "export_failed")).toBe(how === "garbage" ? 0 : 40)
      expect(droppedSpans(metrics, "queue_full")).toBe(0)
      const started = performance.now()
      await b.stop()
      expect(performance.now() - started).toBeLessThan(3000)
    })
  }

  it("refuses every export: at most 20 trace-export-failed lines a minute, not one per failed batch", async () => {
    const refusing = http.createServer((req, res) => req.resume().on("end", () => res.writeHead(400).end()))
    await new Promise<void>((resolve) => refusing.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => refusing.close(() => resolve())))
    cleanup.add(() => refusing.closeAllConnections())
    const lines: Array<Record<string, unknown>> = []
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(refusing.address() as AddressInfo).port}` }
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog" }), (event, fields) => lines.push({ event, ...fields }), { env })
    const tracing = b.sidecar.telemetry.tracing
    // One span a batch: each flush is one export, refused (400 is not retried).
    for (let i = 0; i < 25; i++) {
      tracing.tracer.startSpan(`batch ${i}`).end()
      await withTimeout(tracing.forceFlush(), 5000, "the flush")
    }
    const failed = lines.filter((line) => line.event === "trace-export-failed")
    expect(failed).toHaveLength(20)
    expect(failed.some((line) => "suppressedBefore" in line)).toBe(false)
    expect(tracing.droppedSpans.exportFailed).toBe(25)
  })

  it("never answers: requests are served and B stops within its drain timeout", async () => {
    const far = await startApp(cleanup, echoRequest)
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: await startCollector(cleanup, "silent"), OTEL_EXPORTER_OTLP_TIMEOUT: "600000" }
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: far.address }), undefined, { env })
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    for (let i = 0; i < 20; i++) expect((await call(a.outboundPort, { path: `/items/${i}` })).status).toBe(200)
    const started = performance.now()
    await b.stop()
    // drainTimeoutMs is 1000 in these tests.
    expect(performance.now() - started).toBeLessThan(3000)
  })
})
