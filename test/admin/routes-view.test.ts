// The routes in the admin's /mesh view and dashboard data (src/admin/views.ts,
// src/sidecar/routeCounters.ts), through real sidecars: each route with its source, its split as
// written and as observed, its requests and errors; what the sticky baggage member routed; the
// rate limits and what each refused; none of it for a sidecar without routes.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { dashboardData, meshView } from "../../src/admin/views.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { call, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

let cleanup: Cleanup
let dir: string
beforeEach(() => {
  cleanup = new Cleanup()
  dir = mkdtempSync(join(tmpdir(), "iip-mesh-routes-view-"))
})
afterEach(async () => {
  await cleanup.run()
  rmSync(dir, { recursive: true, force: true })
})

describe("routes in /mesh", () => {
  it("each route: source, split written and observed, requests and errors; the baggage member's too; nothing without routes", async () => {
    const endpoint = async (version: string) => {
      const app = await startApp(cleanup, (_req, res) => res.end(version))
      const sidecar = await startSidecar(cleanup, sidecarConfig({ service: "pricing", app: app.address, node: `pricing-${version}` }))
      return { address: sidecar.inboundAddress, weight: 1, version }
    }
    const endpoints = { pricing: [await endpoint("v1"), await endpoint("v2")] }
    const path = join(dir, "routes.json")
    writeFileSync(path, JSON.stringify({
      routes: [
        { name: "faulty", service: "pricing", matches: [{ path: { prefix: "/faulty" } }], split: [{ subset: "v1", weight: 1 }], fault: { abort: { status: 503, percent: 50 } } },
        { name: "canary", service: "pricing", split: [{ subset: "v1", weight: 3 }, { subset: "v2", weight: 1 }] }
      ],
      rateLimits: [
        { name: "faulty-cap", service: "pricing", route: "faulty", perSecond: 0.001, burst: 10, key: { header: "x-user" } },
        { name: "mine", service: "store", direction: "inbound", perSecond: 5 }
      ]
    }))
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", routes: path, routesPollMs: 60_000, endpoints }))
    for (let i = 0; i < 40; i++) expect((await call(running.outboundPort, { headers: { host: "pricing" } })).status).toBe(200)
    for (let i = 0; i < 12; i++) await call(running.outboundPort, { path: "/faulty", headers: { host: "pricing" } })
    for (let i = 0; i < 3; i++) expect((await call(running.outboundPort, { headers: { host: "pricing", baggage: "iip-mesh-subset=v2" } })).body.toString()).toBe("v2")

    const view = meshView(running.sidecar)
    expect(view.routes).toEqual({
      source: "2 routes for 1 service, 2 rate limits",
      routes: [
        // 12 requests: 10 through the rate limit (half of them aborted by the fault), 2 refused 429.
        { name: "faulty", service: "pricing", source: "file", sticky: false, split: [{ backend: "v1", weight: 1 }], requests: 12, errors: 7, observed: { v1: 12 } },
        { name: "canary", service: "pricing", source: "file", sticky: false, split: [{ backend: "v1", weight: 3 }, { backend: "v2", weight: 1 }], requests: 40, errors: 0, observed: { v1: 30, v2: 10 } }
      ],
      baggage: { requests: 3, errors: 0, observed: { v2: 3 } },
      rateLimits: [
        { name: "faulty-cap", service: "pricing", direction: "outbound", route: "faulty", perSecond: 0.001, burst: 10, key: "header x-user", refused: 2 },
        { name: "mine", service: "store", direction: "inbound", perSecond: 5, burst: 5, key: "none", refused: 0 }
      ]
    })
    expect(dashboardData([running.sidecar], []).sidecars[0]!.routes).toEqual(view.routes)

    const plain = await startSidecar(cleanup, sidecarConfig({ service: "other", endpoints }))
    expect(meshView(plain.sidecar).routes).toBeUndefined()
    expect(dashboardData([plain.sidecar], []).sidecars[0]!.routes).toBeUndefined()
  })
})
