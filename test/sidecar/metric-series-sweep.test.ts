// The endpoint-series sweep (src/telemetry/endpointSeries.ts) through a running sidecar: A's
// endpoints file lists B1, then B2 in its place; with --metric-series-idle at its least (1 s), A's
// series of B1 (no source lists it, no request since) is removed at a later scrape of /metrics,
// while B2's, as idle but still listed, stays with its count. The wiring under test: the sidecar's
// config to the budget's grace, discovery's lists() to the sweep, the admin's scrape to the sweep.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { MinEndpointSeriesGraceMs } from "../../src/telemetry/metrics.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { type MetricFamily, parsePrometheusText, samples, value } from "../support/prometheusText.ts"
import { call, sidecarConfig, startAdmin, startApp, startSidecar } from "../support/sidecarHarness.ts"

describe("metric series of an endpoint discovery no longer lists", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it("are removed at a scrape once idle for --metric-series-idle, those still listed kept", async () => {
    const app1 = await startApp(cleanup, (_req, res) => res.end("one"))
    const app2 = await startApp(cleanup, (_req, res) => res.end("two"))
    const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app1.address }))
    const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app2.address }))
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-endpoints-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, "endpoints.json")
    const list = (address: string) => {
      writeFileSync(`${file}.tmp`, JSON.stringify({ catalog: [{ address, weight: 1 }] }))
      renameSync(`${file}.tmp`, file)
    }
    list(b1.inboundAddress)
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpointsFile: file, metricSeriesIdleMs: MinEndpointSeriesGraceMs }))
    const admin = await startAdmin(cleanup, a)
    const scrape = async (): Promise<Map<string, MetricFamily>> => {
      const response = await fetch(`${admin}/metrics`)
      expect(response.status).toBe(200)
      return parsePrometheusText(await response.text())
    }
    const calls = async (expected: string, count: number) => {
      for (let i = 0; i < count; i++) expect((await call(a.outboundPort, { headers: { host: "catalog" }, timeoutMs: 5000 })).body.toString()).toBe(expected)
    }
    const seriesOf = (address: string) => ({ direction: "outbound", service: "catalog", endpoint: address, method: "GET", code: "200" })

    await waitFor(() => a.sidecar.registry.endpointsOf("catalog").length === 1, 5000, "B1 listed")
    await calls("one", 3)
    expect(value(await scrape(), "iip_mesh_requests_total", seriesOf(b1.inboundAddress))).toBe(3)

    list(b2.inboundAddress)
    await waitFor(() => a.sidecar.registry.endpointsOf("catalog")[0]?.port === b2.sidecar.inbound.port, 5000, "B2 listed in B1's place")
    await calls("two", 2)
    const { value: after } = await readUntil(scrape, (m) => samples(m, "iip_mesh_requests_total", seriesOf(b1.inboundAddress)).length === 0, 15_000)
    // B1's series removed (not added to _other); B2's, idle as long but listed, kept whole.
    expect(samples(after, "iip_mesh_requests_total", seriesOf(b1.inboundAddress))).toStrictEqual([])
    expect(samples(after, "iip_mesh_request_duration_seconds_count", { service: "catalog", endpoint: b1.inboundAddress })).toStrictEqual([])
    expect(samples(after, "iip_mesh_requests_total", { service: "catalog", endpoint: "_other" })).toStrictEqual([])
    expect(value(after, "iip_mesh_requests_total", seriesOf(b2.inboundAddress))).toBe(2)
    expect(value(after, "iip_mesh_request_duration_seconds_count", { service: "catalog", endpoint: b2.inboundAddress })).toBe(2)
  })
})
