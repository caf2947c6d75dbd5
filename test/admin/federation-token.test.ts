// The admin control token must never reach an address learned from discovery: anyone on the LAN
// can announce an mDNS instance whose `admin` port is their own listener. Before, opening
// /federation sent every listed "peer admin" this admin's bearer token in cleartext, and its holder
// could then drive the control API of every sidecar sharing it (weights to 0). Here a fake peer
// announced through the shared discovery directory records the headers it receives: no token, on
// /federation nor /federation/series. The views federation needs (/golden?scope=self and
// /golden/series?scope=self, what /metrics already tells anyone) are answered without the token;
// everything else on the control listener still needs it.
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
const MESH = "federation-token"
const windows = { "10s": { requests: 1, errors: 0, seconds: 10, buckets: [] }, "1m": { requests: 1, errors: 0, seconds: 60, buckets: [] }, "10m": { requests: 1, errors: 0, seconds: 600, buckets: [] } }

let cleanup: Cleanup
let dir: string
beforeEach(() => {
  cleanup = new Cleanup()
  dir = mkdtempSync(join(tmpdir(), "iip-mesh-federation-token-"))
})
afterEach(async () => {
  await cleanup.run()
  rmSync(dir, { recursive: true, force: true })
})

/** This admin, requiring `token`, and the sidecar "web" it reports on, in the shared directory. */
const startWeb = () => startAdminedSidecar(cleanup, token, { service: "web", node: "web-node", localDiscovery: dir, meshName: MESH })

describe("federation and the admin control token", () => {
  it("a peer admin announced through discovery never receives the token", async () => {
    const seen: Array<{ url: string; headers: http.IncomingHttpHeaders }> = []
    const fake = http.createServer((req, res) => {
      seen.push({ url: req.url ?? "", headers: req.headers })
      const body = (req.url ?? "").startsWith("/golden/series") ? { points: [] } : { generatedAt: 1, services: [{ service: "fake", windows }], edges: [], routes: [] }
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify(body))
    })
    await new Promise<void>((resolve) => fake.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => fake.close(() => resolve())))
    const fakePort = (fake.address() as net.AddressInfo).port
    writeFileSync(join(dir, "fake-node.json"), JSON.stringify({ service: "fake", host: "127.0.0.1", port: 1, weight: 1, node: "fake-node", mesh: MESH, pid: process.pid, adminPort: fakePort }))
    const web = await startWeb()
    await waitFor(() => web.running.sidecar.discovery.endpoints("fake").length > 0, 5000, "web to discover the fake peer")

    const headers = { host: "127.0.0.1", authorization: `Bearer ${token}` }
    const view = await call(web.control, { path: "/federation", headers })
    expect(view.status).toBe(200)
    // The fake answered: federation works with it, and it was asked.
    expect((JSON.parse(view.body.toString()) as FederationView).peers.map((p) => [p.node, p.error])).toStrictEqual([["fake-node", null]])
    expect((await call(web.control, { path: "/federation/series?service=fake", headers })).status).toBeLessThan(500)
    expect(seen.map((s) => s.url.split("?")[0]).sort()).toStrictEqual(["/golden", "/golden/series"])
    for (const { headers: received } of seen) {
      expect(received.authorization).toBeUndefined()
      expect(JSON.stringify(received)).not.toContain(token)
    }
  })

  it("the control listener answers the views federation asks for without the token, and nothing else", async () => {
    const web = await startWeb()
    const host = { host: "127.0.0.1" }
    const golden = await call(web.control, { path: "/golden?scope=self", headers: host })
    expect(golden.status).toBe(200)
    expect(Object.keys(JSON.parse(golden.body.toString()) as object)).toContain("services")
    const series = await call(web.control, { path: "/golden/series?scope=self&service=web", headers: host })
    expect([200, 404]).toContain(series.status)
    // Everything else still needs the token: the whole process's views, the mesh, weights, the federation itself.
    for (const path of ["/golden", "/golden?scope=all", "/golden/series?service=web", "/mesh", "/config", "/federation", "/traces"]) {
      expect((await call(web.control, { path, headers: host })).status, path).toBe(401)
    }
    expect((await call(web.control, { method: "PUT", path: "/mesh/web/127.0.0.1:1/weight", headers: host })).status).toBe(401)
    expect((await call(web.control, { method: "POST", path: "/golden?scope=self", headers: host })).status).toBe(401)
  })
})
