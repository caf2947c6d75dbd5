// Admin federation never fetches from this host for a peer learned from another host
// (src/iip/dialGuard.ts, as the data plane's dials): an EndpointSlice from the (fake, real HTTP)
// API server lists a "catalog" pod at 127.0.0.1 and at localhost (a name: resolved by the system,
// /etc/hosts), its admin-control port a listener on this host standing for this pod's app or
// admin port. /federation lists both peers with the refusal as their error; the listener sees no
// connection; the refusals are counted in iip_mesh_dials_refused_total and logged. With
// dialLocalEndpoints the operator opts out, and the same listener is fetched from (the control).
// This admin's own listeners stay refused either way (src/iip/ownListeners.ts): a peer admin
// announced at its own control port under another node's name would have it fetch from itself.
import type { V1EndpointSlice } from "@kubernetes/client-node"
import { afterEach, describe, expect, it } from "vitest"
import { AdminCallFailed, getAdminJson } from "../../src/admin/adminClient.ts"
import type { FederationView } from "../../src/admin/federation.ts"
import { endpointSlice, FakeKubeApi } from "../discovery/fakeKubeApi.ts"
import { startAdminedSidecar } from "../support/adminHarness.ts"
import { acceptedSockets } from "../support/acceptedSockets.ts"
import { countingListener } from "../support/countingListener.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { call } from "../support/sidecarHarness.ts"

const token = "federation-dial-guard-token-0123456789"
const headers = { host: "127.0.0.1", authorization: `Bearer ${token}` }

/** A slice of "catalog" at `address`, announcing `adminPort` as its admin control port (the data port, 1, is never used). */
const catalogSlice = (name: string, address: string, adminPort: number): V1EndpointSlice => {
  const slice = endpointSlice(name, [{ ip: address, node: "catalog-node" }], { service: "catalog", port: 1 })
  return { ...slice, ports: [...(slice.ports ?? []), { name: "admin-control", port: adminPort, protocol: "TCP" }] }
}

describe("admin federation's fetches from peers learned from another host", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  /** This admin ("web") discovering "catalog" from the API server, its admin port the counting listener's. */
  const start = async (dialLocalEndpoints: boolean) => {
    const victim = await countingListener(cleanup)
    const api = await FakeKubeApi.start("shop")
    cleanup.add(() => api.close())
    api.apply("ADDED", catalogSlice("catalog-a", "127.0.0.1", victim.port))
    api.apply("ADDED", catalogSlice("catalog-b", "localhost", victim.port))
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const { running, control } = await startAdminedSidecar(
      cleanup,
      token,
      { service: "web", node: "web-node", kubernetes: { catalog: "shop/catalog" }, dialLocalEndpoints },
      (event, fields) => events.push({ event, fields: { ...fields } }),
      { kubeConfig: api.kubeConfig() }
    )
    await waitFor(() => running.sidecar.discovery.endpoints("catalog").length === 2, 5000, "both catalog endpoints")
    const answer = await call(control, { path: "/federation", headers })
    expect(answer.status, answer.body.toString()).toBe(200)
    return { victim, running, control, events, view: JSON.parse(answer.body.toString()) as FederationView }
  }

  it("an admin port at this host's loopback, as an IP or as a name, is never fetched from: refused, counted, logged", async () => {
    const { victim, running, control, events, view } = await start(false)
    const admins = [`127.0.0.1:${victim.port}`, `localhost:${victim.port}`]
    expect(view.peers.map((peer) => peer.admin).sort()).toEqual(admins)
    for (const peer of view.peers) expect(peer.error).toMatch(/not a peer's address/)
    const series = await call(control, { path: "/federation/series?service=catalog", headers })
    expect(series.status, series.body.toString()).toBeLessThan(500)
    expect(victim.connections()).toBe(0)
    const metrics = parsePrometheusText((await running.sidecar.telemetry.metrics.text()).body)
    for (const admin of admins) expect(sum(metrics, "iip_mesh_dials_refused_total", { service: "catalog", endpoint: admin })).toBe(1)
    expect(events.filter((e) => e.event === "federation.dial-refused").map((e) => e.fields.admin).sort()).toEqual(admins)
  })

  it("with dialLocalEndpoints the same admin port is fetched from (the control: the listener counts)", async () => {
    const { victim, view } = await start(true)
    expect(view.peers).toHaveLength(2)
    expect(victim.connections()).toBeGreaterThan(0)
  })

  it("a peer admin at this admin's own control listener (another node's name, dialLocalEndpoints on) is never fetched from: refused as own-listener", async () => {
    const api = await FakeKubeApi.start("shop")
    cleanup.add(() => api.close())
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const { running, control } = await startAdminedSidecar(
      cleanup,
      token,
      { service: "web", node: "web-node", kubernetes: { catalog: "shop/catalog" }, dialLocalEndpoints: true },
      (event, fields) => events.push({ event, fields: { ...fields } }),
      { kubeConfig: api.kubeConfig() }
    )
    const accepted = acceptedSockets(cleanup)
    api.apply("ADDED", catalogSlice("catalog-a", "127.0.0.1", control))
    await waitFor(() => running.sidecar.discovery.endpoints("catalog").length === 1, 5000, "the catalog endpoint")
    const answer = await call(control, { path: "/federation", headers })
    expect(answer.status, answer.body.toString()).toBe(200)
    const view = JSON.parse(answer.body.toString()) as FederationView
    const admin = `127.0.0.1:${control}`
    expect(view.peers.map((peer) => [peer.admin, peer.error])).toEqual([[admin, expect.stringMatching(/where this process itself listens/)]])
    // One socket: the test's own /federation request; none from the fetch.
    expect(accepted(control)).toBe(1)
    const metrics = parsePrometheusText((await running.sidecar.telemetry.metrics.text()).body)
    expect(sum(metrics, "iip_mesh_dials_refused_total", { service: "catalog", endpoint: admin })).toBe(1)
    expect(events.filter((e) => e.event === "federation.dial-refused").map((e) => [e.fields.admin, e.fields.reason])).toEqual([[admin, "own-listener"]])
  })

  it("getAdminJson with peersOnly refuses every spelling of loopback the URL parser reads as it (127.1, [::1], [::ffff:127.0.0.1]) before connecting", async () => {
    const victim = await countingListener(cleanup)
    const options = { timeoutMs: 5000, maxBytes: 1024, peersOnly: true }
    for (const host of ["127.1", "[::1]", "[::ffff:127.0.0.1]", "0x7f.0.0.1"]) {
      const failed = await getAdminJson(`http://${host}:${victim.port}/golden`, options).then(() => undefined, (error: unknown) => error)
      expect(failed, host).toBeInstanceOf(AdminCallFailed)
      expect((failed as AdminCallFailed).notPeer, host).toBe(true)
    }
    expect(victim.connections()).toBe(0)
    // The control: without peersOnly the same spelling reaches the listener.
    await getAdminJson(`http://127.1:${victim.port}/golden`, { timeoutMs: 5000, maxBytes: 1024 }).catch(() => undefined)
    expect(victim.connections()).toBe(1)
  })
})
