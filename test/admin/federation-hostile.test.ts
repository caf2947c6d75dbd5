// A federation peer that answers with what no sidecar's admin writes (a rogue or broken admin
// listener found through discovery): golden views whose entries are not objects, whose windows
// are missing or hold strings, series whose points are not arrays of numbers. Before, one such
// peer made this admin's /federation and /federation/series a 500 for everyone (a TypeError in
// the merge) or summed strings into the counts; now its answer is refused as it comes: the peer is
// listed with an error, and the view and the series are this admin's own (and the good peers').
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import type * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { FederationView } from "../../src/admin/federation.ts"
import { startAdminedSidecar } from "../support/adminHarness.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { call } from "../support/sidecarHarness.ts"

const token = "federation-token-0123456789"
const MESH = "federation-hostile"

/** A view whose every list holds something a merge cannot read. */
const badView = (variant: number): unknown => {
  const windows = { "10s": { requests: "5", errors: 0, seconds: 10, buckets: [], stats: {} }, "1m": null, "10m": 7 }
  switch (variant) {
    case 0:
      return { generatedAt: 1, services: [null], edges: [], routes: [] }
    case 1:
      return { generatedAt: 1, services: [{ service: "web", windows }], edges: [], routes: [] }
    default:
      return { generatedAt: "x", services: [{ service: "web" }], edges: [7], routes: [{ service: "web", route: {} }] }
  }
}

describe("a federation peer answering with malformed data", () => {
  let cleanup: Cleanup
  let dir: string
  beforeEach(() => {
    cleanup = new Cleanup()
    dir = mkdtempSync(join(tmpdir(), "iip-mesh-federation-hostile-"))
  })
  afterEach(async () => {
    await cleanup.run()
    rmSync(dir, { recursive: true, force: true })
  })

  /** This admin (sidecar "web") and one rogue peer admin found through discovery, answering every GET with `answer(url)`. */
  const withRogue = async (answer: (url: string) => unknown) => {
    const rogue = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify(answer(req.url ?? "/")))
    })
    await new Promise<void>((resolve) => rogue.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => rogue.close(() => resolve())))
    const roguePort = (rogue.address() as net.AddressInfo).port
    // Announced in the shared directory as a live sidecar (this process's pid) with that admin port.
    writeFileSync(join(dir, "rogue-node.json"), JSON.stringify({ service: "rogue", host: "127.0.0.1", port: 1, weight: 1, node: "rogue-node", mesh: MESH, pid: process.pid, adminPort: roguePort }))
    const { running, control } = await startAdminedSidecar(cleanup, token, { service: "web", node: "web-node", localDiscovery: dir, meshName: MESH })
    await waitFor(() => running.sidecar.discovery.endpoints("rogue").length > 0, 5000, "web to discover the rogue peer")
    return control
  }

  it.each([0, 1, 2])("is listed with an error, and /federation and /federation/series still answer (variant %i)", async (variant) => {
    // The rogue admin: any path, bad JSON shapes.
    const port = await withRogue((url) => (url.startsWith("/golden/series") ? { points: [[1, "2", 3, null], 5, null] } : badView(variant)))
    const headers = { host: "127.0.0.1", authorization: `Bearer ${token}` }
    const answer = await call(port, { path: "/federation", headers })
    expect(answer.status, answer.body.toString()).toBe(200)
    const view = JSON.parse(answer.body.toString()) as FederationView
    expect(view.peers).toHaveLength(1)
    expect(view.peers[0]!.error).toMatch(/not a golden metrics view/)
    expect(view.golden.services.every((s) => typeof s.windows["1m"].requests === "number")).toBe(true)
    const series = await call(port, { path: "/federation/series?service=web", headers })
    expect(series.status, series.body.toString()).toBeLessThan(500)
  })
  const windows = { "10s": { requests: 1, errors: 0, seconds: 10, buckets: [] }, "1m": { requests: 1, errors: 0, seconds: 60, buckets: [] }, "10m": { requests: 1, errors: 0, seconds: 600, buckets: [] } }
  const headers = { host: "127.0.0.1", authorization: `Bearer ${token}` }

  // 40,000 services fit in federationMaxBytes (8 MiB): merged, they made this admin hold ~40 MB,
  // spend ~11 s of its event loop (the data plane's too) on one /federation and answer 44 MB. The
  // case sends 5,000 (1 MB), over the cap, so the answer comes whole within federationTimeoutMs here.
  it.each([
    ["more series than a sidecar keeps", { generatedAt: 1, services: Array.from({ length: 5_000 }, (_, i) => ({ service: `s${i}`, windows })), edges: [], routes: [] }],
    ["a name longer than any sidecar's", { generatedAt: 1, services: [{ service: "x".repeat(100_000), windows }], edges: [], routes: [] }]
  ])("a view with %s is refused: the admin holds and serves its own", async (_what, view) => {
    const port = await withRogue(() => view)
    const answer = await call(port, { path: "/federation", headers, timeoutMs: 30_000 })
    expect(answer.status).toBe(200)
    const merged = JSON.parse(answer.body.toString()) as FederationView
    expect(merged.peers[0]!.error).toMatch(/not a golden metrics view/)
    expect(merged.golden.services.every((s) => s.service.length < 100)).toBe(true)
    expect(merged.golden.services.length).toBeLessThan(10)
  }, 60_000)

  it("a series of more points than 10 minutes hold is refused", async () => {
    const port = await withRogue((url) =>
      url.startsWith("/golden/series")
        ? { points: Array.from({ length: 100_000 }, (_, i) => [i * 10_000, 1, 0, null]) }
        : { generatedAt: 1, services: [{ service: "web", windows }], edges: [], routes: [] })
    // The peer counts as fresh for /federation/series once its view was taken.
    expect((JSON.parse((await call(port, { path: "/federation", headers })).body.toString()) as FederationView).peers[0]!.error).toBeNull()
    const series = await call(port, { path: "/federation/series?service=web", headers })
    expect(series.status).toBeLessThan(500)
    if (series.status === 200) expect((JSON.parse(series.body.toString()) as { points: Array<[number, number]> }).points.every((p) => p[1] === 0)).toBe(true)
  })

  it("a series answer that is JSON null is left out, not a 500 for every asker of the round", async () => {
    const port = await withRogue((url) => (url.startsWith("/golden/series") ? null : { generatedAt: 1, services: [{ service: "web", windows }], edges: [], routes: [] }))
    expect((JSON.parse((await call(port, { path: "/federation", headers })).body.toString()) as FederationView).peers[0]!.error).toBeNull()
    const series = await call(port, { path: "/federation/series?service=web", headers })
    expect(series.status, series.body.toString()).toBeLessThan(500)
  })
})
