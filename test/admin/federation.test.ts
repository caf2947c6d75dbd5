// Admin federation in one process: three sidecars (web, catalog, pricing) find each other through
// a shared discovery directory, each announcing its admin control port; every admin requires the
// same token. web's /federation lists the other two admins (found through discovery, called with
// the token), merges their golden metrics with its own (catalog's served requests, web's edges),
// and once catalog's admin stops answering shows it stale within 5 s, still listed with its last
// view. Without the token /federation is refused.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import * as Admin from "../../src/admin/adminServer.ts"
import type { FederationView } from "../../src/admin/federation.ts"
import type { Sidecar } from "../../src/sidecar/sidecar.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { call, quietLog, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const token = "federation-token-0123456789"

let cleanup: Cleanup
let dir: string
beforeEach(() => {
  cleanup = new Cleanup()
  dir = mkdtempSync(join(tmpdir(), "iip-mesh-federation-"))
})
afterEach(async () => {
  await cleanup.run()
  rmSync(dir, { recursive: true, force: true })
})

/** An admin (its own Scope: `stop` closes its listeners), then the sidecar announcing its control port. */
const startHost = async (service: string, withApp: boolean) => {
  const scope = await Effect.runPromise(Scope.make())
  const stop = () => Effect.runPromise(Scope.close(scope, Exit.void))
  cleanup.add(stop)
  let sidecar: Sidecar | undefined
  const addresses = await Effect.runPromise(Admin.make({ admin: "127.0.0.1:0", control: "127.0.0.1:0", token }, () => sidecar).pipe(Scope.provide(scope)))
  const app = withApp ? await startApp(cleanup, (_req, res) => res.end(service)) : undefined
  const running = await startSidecar(
    cleanup,
    sidecarConfig({ service, node: `${service}-node`, localDiscovery: dir, meshName: "federation-test", ...(app === undefined ? {} : { app: app.address }) }),
    quietLog,
    { adminPort: addresses.control.port }
  )
  sidecar = running.sidecar
  return { running, control: addresses.control.port, stopAdmin: stop }
}

const federation = async (port: number): Promise<FederationView> => {
  const answer = await call(port, { path: "/federation", headers: { host: "127.0.0.1", authorization: `Bearer ${token}` } })
  expect(answer.status).toBe(200)
  return JSON.parse(answer.body.toString()) as FederationView
}

describe("admin federation", () => {
  it("lists the peer admins discovery finds, merges their golden metrics, and marks one that stops answering stale within 5 s", async () => {
    const web = await startHost("web", false)
    const catalog = await startHost("catalog", true)
    const pricing = await startHost("pricing", true)
    // web learns catalog and pricing from the directory; then some traffic. The outbound routes by
    // the registry, which the discovery feed updates up to an interval after discovery.
    const { registry } = web.running.sidecar
    await waitFor(() => registry.endpointsOf("catalog").length > 0 && registry.endpointsOf("pricing").length > 0, 5000, "web's registry to hold catalog and pricing")
    for (let i = 0; i < 10; i++) {
      expect((await call(web.running.outboundPort, { path: "/x", headers: { host: "catalog" } })).status).toBe(200)
      expect((await call(web.running.outboundPort, { path: "/y", headers: { host: "pricing" } })).status).toBe(200)
    }
    const view = await federation(web.control)
    expect(view.peers.map((p) => [p.admin, p.node, p.services, p.stale])).toStrictEqual(
      [[`127.0.0.1:${catalog.control}`, "catalog-node", ["catalog"], false], [`127.0.0.1:${pricing.control}`, "pricing-node", ["pricing"], false]].sort((a, b) =>
        String(a[0]).localeCompare(String(b[0])))
    )
    // The chart's series of a peer's service, through web's admin.
    const series = await call(web.control, { path: "/federation/series?service=catalog", headers: { host: "127.0.0.1", authorization: `Bearer ${token}` } })
    expect(series.status).toBe(200)
    expect((JSON.parse(series.body.toString()) as { points: Array<[number, number, number, number | null]> }).points.reduce((sum, p) => sum + p[1], 0)).toBe(10)
    const served = Object.fromEntries(view.golden.services.map((s) => [s.service, s.windows["1m"].requests]))
    expect(served).toStrictEqual({ catalog: 10, pricing: 10 })
    expect(view.golden.edges.map((e) => `${e.caller}->${e.callee}:${e.windows["1m"].requests}`).sort()).toStrictEqual(["web->catalog:10", "web->pricing:10"])

    // catalog's admin goes away: stale within 5 s, still listed, its last view kept.
    await catalog.stopAdmin()
    const cut = await readUntil(() => federation(web.control), (v) => v.peers.find((p) => p.node === "catalog-node")?.stale === true, 5000)
    const after = cut.value
    const staleMs = cut.elapsedMs
    console.log(`a peer admin that stopped answering shown stale after ${staleMs.toFixed(0)} ms`)
    const gone = after.peers.find((p) => p.node === "catalog-node")!
    expect(gone.stale).toBe(true)
    expect(gone.error).not.toBeNull()
    expect(staleMs).toBeLessThan(5000)
    expect(after.peers.find((p) => p.node === "pricing-node")!.stale).toBe(false)
    expect(after.golden.services.find((s) => s.service === "catalog")?.windows["1m"].requests).toBe(10)
  })

  it("without the token, /federation is refused", async () => {
    const web = await startHost("web", false)
    const answer = await call(web.control, { path: "/federation", headers: { host: "127.0.0.1" } })
    expect(answer.status).toBe(401)
  })
})
