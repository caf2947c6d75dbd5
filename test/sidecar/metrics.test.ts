// /metrics of two sidecars, scraped from their admin servers and parsed as Prometheus text
// (test/support/prometheusText.ts, strict): app -> sidecar A ("store", no app) -> sidecar B
// ("catalog") -> far app. A known mix goes through A: successful POSTs, requests the far app
// answers with 500, requests for a service nobody provides (503 no_endpoint at A), and requests
// for a service whose two endpoints refuse connections (one retry each, then 502 connect_failed).
// The counts must match what was sent exactly: requests by code, mesh errors by code, hop and
// reason, the duration histogram's count, retries, body bytes, in flight back to 0; outbound on A,
// inbound on B; plus the process metrics.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { histogram, type MetricFamily, parsePrometheusText, samples, sum, value } from "../support/prometheusText.ts"
import { type App, call, refusingAddress, type RunningSidecar, sidecarConfig, startAdmin, startApp, startSidecar } from "../support/sidecarHarness.ts"

const OK = 7
const APP_FAILS = 3
const NO_ENDPOINT = 4
const REFUSED = 2
const BODY = Buffer.alloc(100, "x")

const scrape = async (admin: string): Promise<Map<string, MetricFamily>> => {
  const response = await fetch(`${admin}/metrics`)
  expect(response.status).toBe(200)
  expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/)
  return parsePrometheusText(await response.text())
}

describe("/metrics counts what went through the sidecars", () => {
  const cleanup = new Cleanup()
  let far: App
  let a: RunningSidecar
  let b: RunningSidecar
  let adminA: string
  let adminB: string
  let responseBytes = 0

  beforeAll(async () => {
    far = await startApp(cleanup, (req, res) => {
      req.resume()
      req.on("end", () => {
        const body = req.url === "/fail" ? "boom" : `ok ${req.url}`
        res.writeHead(req.url === "/fail" ? 500 : 200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) })
        res.end(body)
      })
    })
    b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: far.address }))
    const gone = [await refusingAddress(cleanup), await refusingAddress(cleanup)].map((address) => ({ address, weight: 1 }))
    a = await startSidecar(
      cleanup,
      sidecarConfig({
        service: "store",
        endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }], gone },
        // No ejections (a refused connection would eject at once): every request to `gone` tries
        // both endpoints, so it retries exactly once.
        ejectConsecutiveFailures: 0,
        ejectErrorRatePercent: 0,
        maxEjectedPercent: 0
      })
    )
    adminA = await startAdmin(cleanup, a)
    adminB = await startAdmin(cleanup, b)

    // The traffic, one request at a time so nothing overlaps.
    for (let i = 0; i < OK; i++) {
      const answer = await call(a.outboundPort, { method: "POST", path: `/items/${i}`, headers: { host: "catalog", "content-length": BODY.length }, body: BODY })
      expect(answer.status).toBe(200)
      responseBytes += answer.body.length
    }
    for (let i = 0; i < APP_FAILS; i++) {
      const answer = await call(a.outboundPort, { path: "/fail", headers: { host: "catalog" } })
      expect(answer.status).toBe(500)
      responseBytes += answer.body.length
    }
    for (let i = 0; i < NO_ENDPOINT; i++) {
      const answer = await call(a.outboundPort, { path: "/", headers: { host: "nosuch" } })
      expect(answer.status).toBe(503)
      expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=no_endpoint")
    }
    for (let i = 0; i < REFUSED; i++) {
      const answer = await call(a.outboundPort, { path: "/", headers: { host: "gone" } })
      expect(answer.status).toBe(502)
      expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=connect_failed")
    }
  })
  afterAll(() => cleanup.run())

  it("sidecar A (outbound): requests by service, endpoint and code; mesh errors; histogram count; retries; bytes; in flight 0", async () => {
    const m = await scrape(adminA)
    const outbound = { direction: "outbound" }
    expect(m.get("iip_mesh_requests_total")?.type).toBe("counter")
    expect(m.get("iip_mesh_request_errors_total")?.type).toBe("counter")
    expect(m.get("iip_mesh_request_duration_seconds")?.type).toBe("histogram")
    expect(m.get("iip_mesh_requests_in_flight")?.type).toBe("gauge")
    expect(m.get("iip_mesh_retries_total")?.type).toBe("counter")

    // Every request once, under the code the app got back.
    expect(sum(m, "iip_mesh_requests_total", outbound)).toBe(OK + APP_FAILS + NO_ENDPOINT + REFUSED)
    const catalog = { ...outbound, service: "catalog", endpoint: b.inboundAddress }
    expect(value(m, "iip_mesh_requests_total", { ...catalog, method: "POST", code: "200" })).toBe(OK)
    expect(value(m, "iip_mesh_requests_total", { ...catalog, method: "GET", code: "500" })).toBe(APP_FAILS)
    expect(value(m, "iip_mesh_requests_total", { ...outbound, service: "nosuch", endpoint: "-", method: "GET", code: "503" })).toBe(NO_ENDPOINT)
    expect(sum(m, "iip_mesh_requests_total", { ...outbound, service: "gone", method: "GET", code: "502" })).toBe(REFUSED)

    // Mesh errors by code, hop and reason; the app's own 500s are requests, not mesh errors.
    expect(sum(m, "iip_mesh_request_errors_total")).toBe(NO_ENDPOINT + REFUSED)
    expect(value(m, "iip_mesh_request_errors_total", { ...outbound, service: "nosuch", code: "503", hop: "outbound", reason: "no_endpoint" })).toBe(NO_ENDPOINT)
    expect(value(m, "iip_mesh_request_errors_total", { ...outbound, service: "gone", code: "502", hop: "outbound", reason: "connect_failed" })).toBe(REFUSED)
    expect(sum(m, "iip_mesh_request_errors_total", { service: "catalog" })).toBe(0)

    // One duration observation per request, per service and endpoint.
    expect(histogram(m, "iip_mesh_request_duration_seconds", catalog).count).toBe(OK + APP_FAILS)
    expect(histogram(m, "iip_mesh_request_duration_seconds", { ...outbound, service: "nosuch", endpoint: "-" }).count).toBe(NO_ENDPOINT)
    expect(sum(m, "iip_mesh_request_duration_seconds_count", { ...outbound, service: "gone" })).toBe(REFUSED)
    expect(sum(m, "iip_mesh_request_duration_seconds_count")).toBe(OK + APP_FAILS + NO_ENDPOINT + REFUSED)

    // Retries: one per request to `gone` (its second endpoint), none elsewhere.
    expect(value(m, "iip_mesh_retries_total", { ...outbound, service: "gone" })).toBe(REFUSED)
    expect(sum(m, "iip_mesh_retries_total")).toBe(REFUSED)
    expect(m.get("iip_mesh_endpoint_ejections_total")?.type).toBe("counter")
    expect(sum(m, "iip_mesh_endpoint_ejections_total")).toBe(0)

    // Body bytes both ways.
    expect(value(m, "iip_mesh_request_bytes_total", { ...outbound, service: "catalog" })).toBe(OK * BODY.length)
    expect(value(m, "iip_mesh_response_bytes_total", { ...outbound, service: "catalog" })).toBe(responseBytes)

    // Nothing in flight, in any series; no inbound traffic at a sidecar with no app.
    // Every series with its value, so that a failure says which one and by how much.
    const inFlight = samples(m, "iip_mesh_requests_in_flight").map((s) => `${s.labels.direction} ${s.labels.service} ${s.value}`)
    expect(inFlight.sort()).toStrictEqual(["outbound catalog 0", "outbound gone 0", "outbound nosuch 0"])
    expect(sum(m, "iip_mesh_requests_total", { direction: "inbound" })).toBe(0)
  })

  it("sidecar B (inbound): the requests that reached it, by the far app's code; no mesh errors; in flight 0", async () => {
    const m = await scrape(adminB)
    const inbound = { direction: "inbound", service: "catalog", endpoint: far.address }
    expect(sum(m, "iip_mesh_requests_total")).toBe(OK + APP_FAILS)
    expect(value(m, "iip_mesh_requests_total", { ...inbound, method: "POST", code: "200" })).toBe(OK)
    expect(value(m, "iip_mesh_requests_total", { ...inbound, method: "GET", code: "500" })).toBe(APP_FAILS)
    expect(sum(m, "iip_mesh_request_errors_total")).toBe(0)
    expect(histogram(m, "iip_mesh_request_duration_seconds", inbound).count).toBe(OK + APP_FAILS)
    expect(value(m, "iip_mesh_requests_in_flight", { direction: "inbound", service: "catalog" })).toBe(0)
    expect(sum(m, "iip_mesh_retries_total")).toBe(0)
    expect(value(m, "iip_mesh_request_bytes_total", { direction: "inbound", service: "catalog" })).toBe(OK * BODY.length)
    expect(value(m, "iip_mesh_response_bytes_total", { direction: "inbound", service: "catalog" })).toBe(responseBytes)
  })

  it("the connection and channel gauges match both ends: A dialed what B accepted", async () => {
    const a = await scrape(adminA)
    const b = await scrape(adminB)
    const dialed = value(a, "iip_mesh_open_connections", { direction: "outbound" })
    expect(dialed).toBeGreaterThan(0)
    expect(value(b, "iip_mesh_open_connections", { direction: "inbound" })).toBe(dialed)
    expect(value(a, "iip_mesh_open_channels", { direction: "outbound" })).toBeGreaterThan(0)
    expect(value(b, "iip_mesh_open_channels", { direction: "inbound" })).toBeGreaterThan(0)
    expect(value(b, "iip_mesh_open_connections", { direction: "outbound" })).toBe(0)
  })

  it("both expose the process metrics", async () => {
    for (const admin of [adminA, adminB]) {
      const m = await scrape(admin)
      expect(m.get("process_cpu_user_seconds_total")?.type).toBe("counter")
      expect(m.get("process_resident_memory_bytes")?.type).toBe("gauge")
      expect(m.get("nodejs_heap_size_used_bytes")?.type).toBe("gauge")
      expect(value(m, "process_resident_memory_bytes")).toBeGreaterThan(0)
      expect(value(m, "process_start_time_seconds")).toBeGreaterThan(0)
    }
  })
})
