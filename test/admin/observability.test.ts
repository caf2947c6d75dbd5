// Golden metrics and the live tap through real sidecars (app <- sidecar B "catalog" <- sidecar A
// "store") and their admin control listeners: /golden counts what went through (the served
// service and its routes on B, the store -> catalog edge on A), /golden/series gives 10 minutes in
// 10 s points, /tap streams only the records its filter takes, with the fields an operator needs,
// and a reader that stops reading loses records to its bounded queue, every one accounted for
// (received + dropped + sampled out = published). Nobody listening: the tap is idle.
import * as http from "node:http"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { GoldenView } from "../../src/telemetry/golden.ts"
import { TAP_MAX_PATH, type TapRecord } from "../../src/telemetry/tap.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { call, startAdmin, startMesh } from "../support/sidecarHarness.ts"
import { openSse } from "../support/sse.ts"

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

const app: http.RequestListener = (req, res) => {
  const status = req.url?.startsWith("/fail") === true ? 500 : 200
  res.writeHead(status, { "content-type": "text/plain" })
  res.end("ok")
}

const getJson = async <T>(base: string, path: string): Promise<T> => {
  const answer = await call(Number(new URL(base).port), { path, headers: { host: "127.0.0.1" } })
  expect(answer.status, path).toBe(200)
  return JSON.parse(answer.body.toString()) as T
}

describe("golden metrics and tap on the admin control listener", () => {
  it("/golden: B's served service and routes, A's edge to catalog, 10 % errors; /golden/series in 10 s points", async () => {
    const mesh = await startMesh(cleanup, app)
    for (let i = 0; i < 20; i++) {
      const path = i % 10 === 9 ? `/fail/${i}` : `/items/${i}?page=2`
      const answer = await call(mesh.a.outboundPort, { path, headers: { host: "catalog" } })
      expect(answer.status).toBe(i % 10 === 9 ? 500 : 200)
    }
    const served = await getJson<GoldenView>(await startAdmin(cleanup, mesh.b), "/golden")
    const catalog = served.services.find((s) => s.service === "catalog")!
    expect(catalog.windows["1m"].stats.requests).toBe(20)
    expect(catalog.windows["1m"].stats.successRate).toBeCloseTo(0.9, 10)
    expect(catalog.windows["1m"].stats.p99).toBeGreaterThan(0)
    expect(Object.fromEntries(served.routes.map((r) => [r.route, r.windows["10m"].requests]))).toStrictEqual({ "/items/{id}": 18, "/fail/{id}": 2 })
    const adminA = await startAdmin(cleanup, mesh.a)
    const calling = await getJson<GoldenView>(adminA, "/golden")
    const edge = calling.edges.find((e) => e.caller === "store" && e.callee === "catalog")!
    expect(edge.windows["10s"].stats.requests).toBe(20)
    expect(edge.windows["10s"].stats.successRate).toBeCloseTo(0.9, 10)
    const series = await getJson<{ points: Array<[number, number, number, number | null]> }>(adminA, "/golden/series?caller=store&callee=catalog")
    expect(series.points).toHaveLength(60)
    expect(series.points.reduce((sum, p) => sum + p[1], 0)).toBe(20)
    expect(series.points.reduce((sum, p) => sum + p[2], 0)).toBe(2)
    expect((await call(Number(new URL(adminA).port), { path: "/golden/series?service=nobody", headers: { host: "127.0.0.1" } })).status).toBe(404)
    expect((await call(Number(new URL(adminA).port), { path: "/golden/series", headers: { host: "127.0.0.1" } })).status).toBe(400)
  })

  it("/tap streams the records its filter takes (service, path prefix, status class), with trace id, endpoint and error hop", async () => {
    const mesh = await startMesh(cleanup, app)
    const adminA = await startAdmin(cleanup, mesh.a)
    expect(mesh.a.sidecar.telemetry.metrics.tap.active).toBe(false)
    const tap = await openSse(`${adminA}/tap?service=catalog&path=/items&status=2`)
    cleanup.add(() => tap.close())
    expect(tap.status).toBe(200)
    expect(mesh.a.sidecar.telemetry.metrics.tap.active).toBe(true)
    const failing = await openSse(`${adminA}/tap?status=5xx`)
    cleanup.add(() => failing.close())
    for (const path of ["/items/1", "/fail/1", "/other", "/items/2?x=1", "/fail/2"]) await call(mesh.a.outboundPort, { path, headers: { host: "catalog" } })
    await tap.until((events) => events.filter((e) => e.event === "record").length >= 2, 5000, "two /items records")
    await failing.until((events) => events.filter((e) => e.event === "record").length >= 2, 5000, "two 5xx records")
    const records = tap.events.filter((e) => e.event === "record").map((e) => JSON.parse(e.data) as TapRecord)
    expect(records.map((r) => [r.path, r.status])).toStrictEqual([["/items/1", 200], ["/items/2", 200]])
    expect(records[0]).toMatchObject({ direction: "outbound", service: "catalog", caller: "store", method: "GET", endpoint: mesh.b.inboundAddress, errorHop: null })
    expect(records[0]!.traceId).toMatch(/^[0-9a-f]{32}$/)
    expect(records[0]!.latencyMs).toBeGreaterThan(0)
    const failures = failing.events.filter((e) => e.event === "record").map((e) => JSON.parse(e.data) as TapRecord)
    expect(failures.map((r) => r.path)).toStrictEqual(["/fail/1", "/fail/2"])
    tap.close()
    failing.close()
    const deadline = Date.now() + 5000
    while (mesh.a.sidecar.telemetry.metrics.tap.active && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    expect(mesh.a.sidecar.telemetry.metrics.tap.active).toBe(false)
    expect((await call(Number(new URL(adminA).port), { path: "/tap?status=9", headers: { host: "127.0.0.1" } })).status).toBe(400)
  })

  it("a slow tap reader: records past its queue are dropped and counted; received + dropped + sampled out = published", async () => {
    const mesh = await startMesh(cleanup, app, { a: { tapQueue: 5, tapRate: 100_000 } })
    const adminA = await startAdmin(cleanup, mesh.a)
    const tap = await openSse(`${adminA}/tap`)
    cleanup.add(() => tap.close())
    tap.pause()
    const hub = mesh.a.sidecar.telemetry.metrics.tap
    const published = 30_000
    // A record keeps 1 KiB of its path (TAP_MAX_PATH): 30 MB for a reader that reads nothing, the socket buffers fill, then the queue.
    const longPath = `/${"p".repeat(TAP_MAX_PATH)}`
    for (let i = 0; i < published; i++) {
      hub.publish({ time: Date.now(), direction: "outbound", service: "catalog", caller: "store", method: "GET", path: longPath, status: 200, latencyMs: 1, endpoint: "-", traceId: null, errorHop: null, errorReason: null })
      if (i % 50 === 0) await new Promise((r) => setImmediate(r))
    }
    tap.resume()
    const lastStats = () => {
      const stats = tap.events.filter((e) => e.event === "stats").at(-1)
      return stats === undefined ? { dropped: 0, sampledOut: 0 } : (JSON.parse(stats.data) as { dropped: number; sampledOut: number })
    }
    const received = () => tap.events.filter((e) => e.event === "record").length
    await tap.until(() => received() + lastStats().dropped + lastStats().sampledOut === published, 15_000, "every record received or counted")
    console.log(`slow tap reader: ${received()} received, ${lastStats().dropped} dropped of ${published}`)
    expect(lastStats().dropped).toBeGreaterThan(0)
    expect(received()).toBeGreaterThan(0)
  })

  it("a listener past tapListeners is refused with 503", async () => {
    const mesh = await startMesh(cleanup, app, { a: { tapListeners: 1 } })
    const adminA = await startAdmin(cleanup, mesh.a)
    const first = await openSse(`${adminA}/tap`)
    cleanup.add(() => first.close())
    const second = await openSse(`${adminA}/tap`)
    cleanup.add(() => second.close())
    expect(second.status).toBe(503)
  })
})
