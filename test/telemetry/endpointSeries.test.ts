// The endpoint-series budget of iip_mesh_requests_total and iip_mesh_request_duration_seconds
// (src/telemetry/endpointSeries.ts, through makeMetrics): shared fairly across services, freed when
// an endpoint has left discovery and gone idle (removed: no count grows without a request), and said
// when full (a throttled metric-series-full line, iip_mesh_metric_series_dropped_total). Read back
// through the text exposition; liveness from a real Discovery; time on an injected clock.
import { describe, expect, it } from "vitest"
import { Discovery } from "../../src/discovery/discovery.ts"
import type { EndpointUpdate } from "../../src/discovery/types.ts"
import { EndpointSeriesGraceMs, makeMetrics, MaxEndpointSeries } from "../../src/telemetry/metrics.ts"
import { type MetricFamily, parsePrometheusText, samples, value } from "../support/prometheusText.ts"

const scrape = async (metrics: ReturnType<typeof makeMetrics>) => parsePrometheusText((await metrics.text()).body)

const request = (metrics: ReturnType<typeof makeMetrics>, service: string, endpoint: string) => {
  const s = metrics.service("outbound", service)
  s.requestStarted()
  s.requestFinished(endpoint, "GET", 200, 0.003)
}

/** The endpoint series each outbound service holds (requests_total, GET 200), _other apart. */
const seriesOf = (m: ReadonlyMap<string, MetricFamily>): Map<string, number> => {
  const held = new Map<string, number>()
  for (const s of samples(m, "iip_mesh_requests_total")) {
    const service = s.labels["service"]!
    if (s.labels["endpoint"] !== "_other") held.set(service, (held.get(service) ?? 0) + 1)
  }
  return held
}

/** Metrics on `clock`, freeing series by what a real Discovery lists, and the emit of its one source. */
const watchedMetrics = (clock: { now: number }) => {
  const metrics = makeMetrics({ now: () => clock.now, log: () => {} })
  const discovery = new Discovery({ log: () => {} })
  let emitTo: (update: EndpointUpdate) => void = () => {}
  discovery.register({ start: (e) => ((emitTo = e), () => {}) })
  metrics.watchLiveEndpoints((endpoint) => discovery.lists(endpoint))
  return { metrics, discovery, emit: (update: EndpointUpdate) => emitTo(update) }
}

const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`

describe("endpoint-series budget", () => {
  it("is shared fairly: a service that took it all gives series back to services that want them, each service's first endpoints get theirs", async () => {
    const metrics = makeMetrics({ log: () => {} })
    // One churning service's pod names take the whole budget while it is alone.
    for (let i = 0; i < 1500; i++) request(metrics, "churn", address(i))
    // Then nine services want 150 endpoints each, and a late one wants 1.
    for (let s = 0; s < 9; s++) for (let i = 0; i < 150; i++) request(metrics, `svc${s}`, address(100_000 + s * 1000 + i))
    request(metrics, "late", "10.9.9.9:80")
    // The churner goes on naming new pods: capped at its part, it takes nothing back.
    for (let i = 1500; i < 2500; i++) request(metrics, "churn", address(i))

    const m = await scrape(metrics)
    const held = seriesOf(m)
    expect([...held.values()].reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(MaxEndpointSeries)
    expect(held.get("late")).toBe(1)
    // 1,000 over 11 services wanting: each of the ten wanting more holds its part, within one.
    for (const service of ["churn", ...Array.from({ length: 9 }, (_, s) => `svc${s}`)]) {
      expect(held.get(service), service).toBeGreaterThanOrEqual(98)
      expect(held.get(service), service).toBeLessThanOrEqual(101)
    }
    // A series given back is removed; _other counts the requests that had no series, no more.
    const churnOther = { direction: "outbound", service: "churn", endpoint: "_other" }
    expect(value(m, "iip_mesh_requests_total", churnOther)).toBe(value(m, "iip_mesh_metric_series_dropped_total", { direction: "outbound", service: "churn" }))
    expect(value(m, "iip_mesh_request_duration_seconds_count", churnOther)).toBe(value(m, "iip_mesh_requests_total", churnOther))
  })

  it("frees the series of an endpoint that left discovery and saw no request for the grace period: removed, not added to _other, so no count grows without a request", async () => {
    const clock = { now: 1_000 }
    const { metrics, discovery, emit } = watchedMetrics(clock)
    const pods = (from: number, count: number) => Array.from({ length: count }, (_, i) => ({ service: "web", host: `10.1.${(from + i) >> 8}.${(from + i) & 255}`, port: 80, weight: 1, features: [], source: "kubernetes" }))
    const key = (e: { host: string; port: number }) => `${e.host}:${e.port}`

    // 1,000 pods, two requests each: the budget is full.
    const first = pods(0, 1000)
    emit({ _tag: "Reset", service: "web", endpoints: first })
    for (const pod of first) for (let r = 0; r < 2; r++) request(metrics, "web", key(pod))
    const before = await scrape(metrics)
    expect(seriesOf(before).get("web")).toBe(1000)

    // All are replaced but one kept, and one gone that still gets a request late in the grace period.
    const second = [first[0]!, ...pods(1000, 999)]
    emit({ _tag: "Reset", service: "web", endpoints: second })
    request(metrics, "web", key(second[1]!)) // a new pod: no room yet
    clock.now += EndpointSeriesGraceMs - 1000
    request(metrics, "web", key(first[1]!)) // gone from discovery, still called
    clock.now += 2000 // past the grace period for all but first[1]
    const after = await scrape(metrics)
    const web = { direction: "outbound", service: "web" }
    // The kept pod and the gone one called late keep their series; the other 998 are removed.
    expect(value(after, "iip_mesh_requests_total", { ...web, endpoint: key(first[0]!) })).toBe(2)
    expect(value(after, "iip_mesh_requests_total", { ...web, endpoint: key(first[1]!) })).toBe(3)
    expect(samples(after, "iip_mesh_requests_total", { ...web, endpoint: key(first[2]!) })).toStrictEqual([])
    // What Prometheus' rate() and increase() read between the two scrapes (a series gone is ended, one
    // new starts from 0): the two requests made, no more. Adding a removed series' 2 to _other read as
    // 1,996 requests in one interval.
    for (const name of ["iip_mesh_requests_total", "iip_mesh_request_duration_seconds_count"]) {
      const was = new Map(samples(before, name, web).map((s) => [JSON.stringify(s.labels), s.value]))
      const grown = samples(after, name, web).map((s) => s.value - (was.get(JSON.stringify(s.labels)) ?? 0))
      expect(grown.filter((d) => d < 0), name).toStrictEqual([])
      expect(grown.reduce((a, b) => a + b, 0), name).toBe(2)
    }
    expect(value(after, "iip_mesh_requests_total", { ...web, endpoint: "_other" })).toBe(1)

    // The slots are back: the new pods get series of their own.
    for (const pod of second.slice(1)) request(metrics, "web", key(pod))
    const refilled = await scrape(metrics)
    expect(value(refilled, "iip_mesh_requests_total", { ...web, endpoint: key(second[2]!) })).toBe(1)
    expect(seriesOf(refilled).get("web")).toBe(1000)
    expect(value(refilled, "iip_mesh_requests_total", { ...web, endpoint: "_other" })).toBe(value(refilled, "iip_mesh_metric_series_dropped_total", web))
    discovery.close()
  })

  it("frees nothing while the endpoint is still in discovery, nor inbound series (the app's address is no discovery endpoint)", async () => {
    const clock = { now: 1_000 }
    const { metrics, discovery, emit } = watchedMetrics(clock)
    emit({ _tag: "Reset", service: "web", endpoints: [{ service: "web", host: "10.2.0.1", port: 80, weight: 1, features: [], source: "kubernetes" }] })
    request(metrics, "web", "10.2.0.1:80")
    metrics.service("inbound", "self").requestFinished("127.0.0.1:3000", "GET", 200, 0.01)
    await scrape(metrics)
    clock.now += 10 * EndpointSeriesGraceMs
    await scrape(metrics)
    clock.now += 10 * EndpointSeriesGraceMs
    const m = await scrape(metrics)
    expect(value(m, "iip_mesh_requests_total", { service: "web", endpoint: "10.2.0.1:80" })).toBe(1)
    expect(value(m, "iip_mesh_requests_total", { direction: "inbound", service: "self", endpoint: "127.0.0.1:3000" })).toBe(1)
    discovery.close()
  })

  it("keeps the series of an endpoint another service lists (a route's backend: counted under the target's name), frees it once none does", async () => {
    const clock = { now: 1_000 }
    const { metrics, discovery, emit } = watchedMetrics(clock)
    const canary = { service: "web-v2", host: "10.3.0.1", port: 80, weight: 1, features: [], source: "kubernetes" }
    emit({ _tag: "Reset", service: "web-v2", endpoints: [canary] })
    request(metrics, "web", "10.3.0.1:80") // routed from web to its web-v2 backend
    const idle = async () => {
      for (let i = 0; i < 3; i++) {
        clock.now += EndpointSeriesGraceMs
        await scrape(metrics)
      }
      return scrape(metrics)
    }
    expect(value(await idle(), "iip_mesh_requests_total", { service: "web", endpoint: "10.3.0.1:80" })).toBe(1)
    emit({ _tag: "Reset", service: "web-v2", endpoints: [] })
    expect(samples(await idle(), "iip_mesh_requests_total", { service: "web", endpoint: "10.3.0.1:80" })).toStrictEqual([])
    discovery.close()
  })

  it("says it is full: one metric-series-full line per service a minute at most, and iip_mesh_metric_series_dropped_total counts the requests that went to _other", async () => {
    let now = 1_000
    const lines: Array<{ event: string; fields: Record<string, unknown> }> = []
    const metrics = makeMetrics({ now: () => now, log: (event, fields) => lines.push({ event, fields: { ...fields } }) })
    for (let i = 0; i < MaxEndpointSeries; i++) request(metrics, "web", address(i))
    expect(lines).toStrictEqual([])
    for (let i = 0; i < 500; i++) request(metrics, "web", address(5000 + i))
    now += 30_000
    for (let i = 0; i < 10; i++) request(metrics, "web", address(6000 + i))
    expect(lines).toStrictEqual([{ event: "metric-series-full", fields: { direction: "outbound", service: "web", budget: MaxEndpointSeries, series: MaxEndpointSeries, serviceSeries: MaxEndpointSeries } }])
    now += 30_000
    request(metrics, "web", address(7000))
    expect(lines).toHaveLength(2)
    expect(lines[1]!.fields).toMatchObject({ service: "web", suppressedBefore: 509 })
    const m = await scrape(metrics)
    expect(m.get("iip_mesh_metric_series_dropped_total")!.type).toBe("counter")
    expect(value(m, "iip_mesh_metric_series_dropped_total", { direction: "outbound", service: "web" })).toBe(511)
    expect(value(m, "iip_mesh_requests_total", { service: "web", endpoint: "_other" })).toBe(511)
  })
})

describe("endpoint-series take-back", () => {
  it("takes the holder's least recently used series, not its oldest: busy endpoints created first keep their series and counts while the holder has idle ones", async () => {
    const clock = { now: 1_000 }
    const metrics = makeMetrics({ now: () => clock.now, log: () => {} })
    // web's first 100 endpoints stay busy (more than a take-back looks at: sweeps put them last); its other 900 were called once, long ago.
    const busy = Array.from({ length: 100 }, (_, i) => address(i))
    for (let i = 0; i < MaxEndpointSeries; i++) request(metrics, "web", address(i))
    await scrape(metrics)
    let calls = 1
    const callBusy = () => {
      for (const endpoint of busy) request(metrics, "web", endpoint)
      calls++
    }
    for (let round = 0; round < 4; round++) {
      clock.now += 15_000
      callBusy()
      await scrape(metrics)
    }
    // api wants 500 endpoints (fair: it takes 500 of web's) while web's busy ones go on, scraped every 15 s.
    for (let i = 0; i < 500; i++) {
      request(metrics, "api", address(100_000 + i))
      callBusy()
      clock.now += 100
      if (i % 150 === 149) await scrape(metrics)
    }
    const m = await scrape(metrics)
    expect(seriesOf(m)).toStrictEqual(new Map([["web", 500], ["api", 500]]))
    const web = { direction: "outbound", service: "web" }
    // Every busy endpoint's series counted all its calls (never removed and started over), none went to _other.
    for (const endpoint of busy) expect(value(m, "iip_mesh_requests_total", { ...web, endpoint }), endpoint).toBe(calls)
    expect(samples(m, "iip_mesh_requests_total", { ...web, endpoint: "_other" })).toStrictEqual([])
    expect(samples(m, "iip_mesh_metric_series_dropped_total", web).filter((s) => s.value > 0)).toStrictEqual([])
  })

  it("with every series of the holder busy, takes one per series a smaller service is owed, no more: the series kept are not churned at later scrapes", async () => {
    const clock = { now: 1_000 }
    const metrics = makeMetrics({ now: () => clock.now, log: () => {} })
    const webEndpoints = Array.from({ length: MaxEndpointSeries }, (_, i) => address(i))
    const callWeb = () => {
      for (const endpoint of webEndpoints) request(metrics, "web", endpoint)
    }
    callWeb()
    await scrape(metrics)
    for (let i = 0; i < 100; i++) request(metrics, "api", address(100_000 + i))
    const keptAt = async () => {
      clock.now += 15_000
      callWeb()
      const m = await scrape(metrics)
      return new Set(samples(m, "iip_mesh_requests_total", { service: "web" }).map((s) => s.labels["endpoint"]))
    }
    const first = await keptAt()
    expect(first.size).toBe(901) // 900 of its own, and _other
    for (let scrapes = 0; scrapes < 5; scrapes++) expect(await keptAt()).toStrictEqual(first)
  })
})

describe("endpoint-series take-back between sweeps", () => {
  it("passes over a series that moved since the last sweep (idle then, busy now): it takes the next one idle, not the first in the sweep's order", async () => {
    const clock = { now: 1_000 }
    const metrics = makeMetrics({ now: () => clock.now, log: () => {} })
    for (let i = 0; i < MaxEndpointSeries; i++) request(metrics, "web", address(i))
    await scrape(metrics) // all moved: seen, order kept
    clock.now += 15_000
    await scrape(metrics) // all idle since: web's first series are first in line
    // web's first 10 become busy after that sweep; api's 5 new endpoints come before the next one.
    for (let i = 0; i < 10; i++) request(metrics, "web", address(i))
    for (let i = 0; i < 5; i++) request(metrics, "api", address(100_000 + i))
    const m = await scrape(metrics)
    expect(seriesOf(m)).toStrictEqual(new Map([["web", 995], ["api", 5]]))
    // The busy 10 kept their series and both calls; the 5 taken are the idle ones after them.
    for (let i = 0; i < 10; i++) expect(value(m, "iip_mesh_requests_total", { direction: "outbound", service: "web", endpoint: address(i) }), address(i)).toBe(2)
    for (let i = 10; i < 15; i++) expect(samples(m, "iip_mesh_requests_total", { service: "web", endpoint: address(i) }), address(i)).toStrictEqual([])
  })
})
