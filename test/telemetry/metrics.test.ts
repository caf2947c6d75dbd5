// The sidecar's Prometheus metrics (src/telemetry/metrics.ts), read back through the text
// exposition with the strict parser in test/support/prometheusText.ts: counts match what was
// recorded, per direction, service, endpoint, method and code; histograms are consistent; two
// registries in one process stay apart and both carry the process metrics; a flood of service
// names is capped. Plus the parser itself on the format's corners.
import { describe, expect, it } from "vitest"
import { Discovery } from "../../src/discovery/discovery.ts"
import { type EndpointUpdate, MaxEndpointsPerService } from "../../src/discovery/types.ts"
import { makeMetrics, MaxEndpointSeries } from "../../src/telemetry/metrics.ts"
import { histogram, parsePrometheusText, samples, sum, value } from "../support/prometheusText.ts"

const scrape = async (metrics: ReturnType<typeof makeMetrics>) => {
  const { contentType, body } = await metrics.text()
  expect(contentType).toBe("text/plain; version=0.0.4; charset=utf-8")
  return parsePrometheusText(body)
}

describe("mesh metrics", () => {
  it("counts requests, errors, retries, bytes, in-flight, ejections, connections and channels", async () => {
    const metrics = makeMetrics()
    const pricing = metrics.service("outbound", "pricing")
    expect(metrics.service("outbound", "pricing")).toBe(pricing)
    for (let i = 0; i < 7; i++) {
      pricing.requestStarted()
      pricing.requestBytes(100)
      pricing.responseBytes(1000)
      pricing.requestFinished(i < 5 ? "10.0.0.7:4143" : "10.0.0.8:4143", "GET", 200, 0.003)
    }
    pricing.requestStarted()
    pricing.retried()
    pricing.requestFinished("10.0.0.8:4143", "POST", 502, 0.2)
    pricing.requestFailed(502, "app", "app_unavailable")
    pricing.requestStarted()
    pricing.requestFinished("-", "BREW", 503, 0.0001)
    pricing.requestFailed(503, "outbound", "no_endpoint")
    pricing.requestStarted() // still in flight
    const inbound = metrics.service("inbound", "catalog")
    inbound.requestStarted()
    inbound.requestFinished("127.0.0.1:3000", "GET", 404, 0.02)
    metrics.endpointEjected("pricing", "10.0.0.8:4143")
    metrics.endpointEjected("pricing", "10.0.0.8:4143")
    metrics.watchConnections(() => ({ outbound: { connections: 1, channels: 2 }, inbound: { connections: 1, channels: 0 } }))

    const m = await scrape(metrics)
    const out = { direction: "outbound", service: "pricing" }
    expect(value(m, "iip_mesh_requests_total", { ...out, endpoint: "10.0.0.7:4143", method: "GET", code: "200" })).toBe(5)
    expect(value(m, "iip_mesh_requests_total", { ...out, endpoint: "10.0.0.8:4143", method: "GET", code: "200" })).toBe(2)
    expect(value(m, "iip_mesh_requests_total", { ...out, endpoint: "10.0.0.8:4143", method: "POST", code: "502" })).toBe(1)
    expect(value(m, "iip_mesh_requests_total", { ...out, endpoint: "-", method: "_OTHER", code: "503" })).toBe(1)
    expect(sum(m, "iip_mesh_requests_total", out)).toBe(9)
    expect(value(m, "iip_mesh_requests_total", { direction: "inbound", service: "catalog", endpoint: "127.0.0.1:3000", code: "404" })).toBe(1)

    const endpoint7 = histogram(m, "iip_mesh_request_duration_seconds", { ...out, endpoint: "10.0.0.7:4143" })
    expect(endpoint7.count).toBe(5)
    expect(endpoint7.sum).toBeCloseTo(0.015, 9)
    expect(endpoint7.buckets.find((b) => b.le === 0.0025)!.count).toBe(0)
    expect(endpoint7.buckets.find((b) => b.le === 0.005)!.count).toBe(5)
    expect(histogram(m, "iip_mesh_request_duration_seconds", { ...out, endpoint: "10.0.0.8:4143" }).count).toBe(3)

    expect(value(m, "iip_mesh_request_errors_total", { ...out, code: "502", hop: "app", reason: "app_unavailable" })).toBe(1)
    expect(value(m, "iip_mesh_request_errors_total", { ...out, code: "503", hop: "outbound", reason: "no_endpoint" })).toBe(1)
    expect(value(m, "iip_mesh_requests_in_flight", out)).toBe(1)
    expect(value(m, "iip_mesh_requests_in_flight", { direction: "inbound", service: "catalog" })).toBe(0)
    expect(value(m, "iip_mesh_retries_total", out)).toBe(1)
    expect(value(m, "iip_mesh_request_bytes_total", out)).toBe(700)
    expect(value(m, "iip_mesh_response_bytes_total", out)).toBe(7000)
    expect(value(m, "iip_mesh_endpoint_ejections_total", { service: "pricing", endpoint: "10.0.0.8:4143" })).toBe(2)
    expect(value(m, "iip_mesh_open_connections", { direction: "outbound" })).toBe(1)
    expect(value(m, "iip_mesh_open_connections", { direction: "inbound" })).toBe(1)
    expect(value(m, "iip_mesh_open_channels", { direction: "outbound" })).toBe(2)
    expect(value(m, "iip_mesh_open_channels", { direction: "inbound" })).toBe(0)

    expect(m.get("iip_mesh_requests_total")!.type).toBe("counter")
    expect(m.get("iip_mesh_requests_in_flight")!.type).toBe("gauge")
    expect(m.get("iip_mesh_request_duration_seconds")!.type).toBe("histogram")
    for (const family of m.values()) expect(family.help, family.name).not.toBe("")
  })

  it("the identity's trust bundle refreshes are read at each scrape, by result; without an identity there is no series", async () => {
    const metrics = makeMetrics()
    expect(samples(await scrape(metrics), "iip_mesh_trust_bundle_refreshes_total")).toHaveLength(0)
    const refreshes = { updated: 1, unchanged: 7, failed: 2, refused: 0 }
    metrics.watchBundleRefreshes(() => refreshes)
    refreshes.unchanged++
    const m = await scrape(metrics)
    expect(Object.fromEntries(["updated", "unchanged", "failed", "refused"].map((result) => [result, value(m, "iip_mesh_trust_bundle_refreshes_total", { result })]))).toStrictEqual({ updated: 1, unchanged: 8, failed: 2, refused: 0 })
  })

  it("the endpoints discovery leaves out at its cap are a gauge read at each scrape: a source re-listing the same ones reads the same, one making room reads fewer", async () => {
    const metrics = makeMetrics()
    const discovery = new Discovery({ log: () => {} })
    metrics.watchDiscoveryLeftOut(() => discovery.leftOut())
    let emit: (update: EndpointUpdate) => void = () => {}
    discovery.register({ start: (e) => ((emit = e), () => {}) })
    const listed = Array.from({ length: MaxEndpointsPerService + 5 }, (_, i) => ({ service: "web", host: `10.0.${i >> 8}.${i & 255}`, port: 80, weight: 1, features: [], source: "kubernetes" }))
    for (let round = 0; round < 4; round++) emit({ _tag: "Reset", service: "web", endpoints: listed })
    const { body } = await metrics.text()
    expect(body).toContain("# TYPE iip_mesh_discovery_endpoints_left_out gauge")
    expect(body).not.toContain("iip_mesh_discovery_endpoints_left_out_total")
    // Before: a counter at 20 (5 left out, counted on each of the 4 answers).
    expect(value(await scrape(metrics), "iip_mesh_discovery_endpoints_left_out", { source: "kubernetes" })).toBe(5)
    emit({ _tag: "Reset", service: "web", endpoints: listed.slice(3) })
    expect(value(await scrape(metrics), "iip_mesh_discovery_endpoints_left_out", { source: "kubernetes" })).toBe(2)
    discovery.close()
  })

  it("a later scrape sees later counts, not doubled ones", async () => {
    const metrics = makeMetrics()
    const catalog = metrics.service("outbound", "catalog")
    catalog.requestStarted()
    catalog.requestFinished("a:1", "GET", 200, 0.01)
    expect(value(await scrape(metrics), "iip_mesh_requests_total", { service: "catalog" })).toBe(1)
    catalog.requestStarted()
    catalog.requestFinished("a:1", "GET", 200, 0.01)
    const m = await scrape(metrics)
    expect(value(m, "iip_mesh_requests_total", { service: "catalog" })).toBe(2)
    expect(histogram(m, "iip_mesh_request_duration_seconds", { service: "catalog" }).count).toBe(2)
  })

  it("two registries in one process keep their own counts and both show the process metrics", async () => {
    const a = makeMetrics()
    const b = makeMetrics()
    a.service("outbound", "catalog").requestFinished("x:1", "GET", 200, 0.01)
    for (let i = 0; i < 3; i++) b.service("outbound", "catalog").requestFinished("x:1", "GET", 200, 0.01)
    const [ma, mb] = [await scrape(a), await scrape(b)]
    expect(sum(ma, "iip_mesh_requests_total")).toBe(1)
    expect(sum(mb, "iip_mesh_requests_total")).toBe(3)
    for (const m of [ma, mb]) {
      expect(m.get("process_cpu_user_seconds_total")!.type).toBe("counter")
      expect(value(m, "process_resident_memory_bytes")).toBeGreaterThan(0)
      expect(samples(m, "nodejs_heap_size_used_bytes")).toHaveLength(1)
      expect(m.get("nodejs_eventloop_lag_seconds")!.type).toBe("gauge")
    }
  })

  it("bounds the endpoint series of refused dials, ejections and refusals: names a hostile source rotates through over time end in _other, every count kept", async () => {
    const metrics = makeMetrics()
    // Discovery bounds the endpoints listed at once, not those listed one after another: 5,000 names, each refused and ejected once.
    for (let i = 0; i < 5000; i++) {
      metrics.dialRefused("catalog", `evil-${i}.example:9901`)
      metrics.endpointEjected("catalog", `evil-${i}.example:9901`)
      metrics.endpointRefused("catalog", `evil-${i}.example:9901`)
    }
    const m = await scrape(metrics)
    for (const name of ["iip_mesh_dials_refused_total", "iip_mesh_endpoint_ejections_total", "iip_mesh_endpoint_refusals_total"]) {
      expect(samples(m, name).length, name).toBeLessThanOrEqual(1001)
      expect(sum(m, name), name).toBe(5000)
      expect(value(m, name, { service: "_other", endpoint: "_other" }), name).toBeGreaterThan(0)
    }
  })

  it("bounds the endpoint series of requests and durations: endpoint names a hostile source rotates through over time (an mDNS host moving ports) end in the service's _other, every request counted", async () => {
    const metrics = makeMetrics()
    const web = metrics.service("outbound", "web")
    const other = metrics.service("outbound", "catalog")
    // Discovery bounds the endpoints listed at once, not those listed one after another: 5,000 names, one request each.
    for (let i = 0; i < 5000; i++) {
      web.requestStarted()
      web.requestFinished(`10.77.${i >> 8}.${i & 255}:${1024 + (i % 7)}`, "GET", 200, 0.003)
    }
    other.requestStarted()
    other.requestFinished("10.0.0.9:4143", "GET", 200, 0.003)
    const m = await scrape(metrics)
    const requests = samples(m, "iip_mesh_requests_total")
    expect(requests.length).toBeLessThanOrEqual(MaxEndpointSeries + 2)
    expect(sum(m, "iip_mesh_requests_total")).toBe(5001)
    expect(value(m, "iip_mesh_requests_total", { direction: "outbound", service: "web", endpoint: "_other", method: "GET", code: "200" })).toBeGreaterThan(0)
    // A service's _other takes what is past the budget; the series it had keep counting as they were.
    expect(histogram(m, "iip_mesh_request_duration_seconds", { direction: "outbound", service: "web", endpoint: "10.77.0.0:1024" }).count).toBe(1)
    expect(samples(m, "iip_mesh_request_duration_seconds_count").length).toBeLessThanOrEqual(MaxEndpointSeries + 2)
  })

  it("caps the services per direction; the rest count as _other", async () => {
    const metrics = makeMetrics({ maxServices: 2 })
    for (const service of ["a", "b", "c", "d", "c"]) metrics.service("outbound", service).requestFinished("x:1", "GET", 200, 0.01)
    metrics.service("inbound", "z").requestFinished("app", "GET", 200, 0.01)
    const m = await scrape(metrics)
    expect(samples(m, "iip_mesh_requests_total").map((s) => [s.labels["direction"], s.labels["service"], s.value])).toStrictEqual([
      ["outbound", "a", 1],
      ["outbound", "b", 1],
      ["outbound", "_other", 3],
      ["inbound", "z", 1]
    ])
  })
})

describe("parsePrometheusText", () => {
  it("reads help, types, escaped label values, special values and timestamps", () => {
    const m = parsePrometheusText([
      "# HELP x_total A \\\\ help\\nline.",
      "# TYPE x_total counter",
      'x_total{path="/a\\"b\\\\c\\nd",code="200"} 3 1700000000000',
      "# a comment",
      "",
      "# TYPE h histogram",
      'h_bucket{le="0.5"} 1',
      'h_bucket{le="+Inf"} 2',
      "h_sum 1.5e0",
      "h_count 2",
      "up NaN",
      "down -Inf",
      ""
    ].join("\n"))
    expect(m.get("x_total")).toStrictEqual({
      name: "x_total",
      type: "counter",
      help: "A \\ help\nline.",
      samples: [{ name: "x_total", labels: { path: '/a"b\\c\nd', code: "200" }, value: 3, timestampMs: 1700000000000 }]
    })
    expect(histogram(m, "h")).toStrictEqual({ buckets: [{ le: 0.5, count: 1 }, { le: Infinity, count: 2 }], sum: 1.5, count: 2 })
    expect(m.get("up")!.type).toBe("untyped")
    expect(value(m, "up")).toBeNaN()
    expect(value(m, "down")).toBe(-Infinity)
  })

  it("rejects what the format does not allow", () => {
    for (const bad of [
      "x{a=\"1\"",
      "x{a=1} 2",
      "x{a=\"1\",a=\"2\"} 2",
      "x 1 2 3",
      "x one",
      "9x 1",
      "x{a=\"\\q\"} 1",
      "# TYPE x countr",
      "x 1\n# TYPE x counter"
    ]) expect(() => parsePrometheusText(bad), bad).toThrow()
  })

  it("an inconsistent histogram fails the lookup", () => {
    const m = parsePrometheusText(["# TYPE h histogram", 'h_bucket{le="1"} 3', 'h_bucket{le="+Inf"} 2', "h_sum 1", "h_count 2"].join("\n"))
    expect(() => histogram(m, "h")).toThrow(/cumulative/)
  })
})
