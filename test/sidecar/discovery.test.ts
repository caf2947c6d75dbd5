// The sidecar routes by what discovery finds (issue 5): an endpoints file that changes while it
// runs, and the DNS SRV records of a headless Service served by a real DNS server on loopback.
// The registry follows each change, and the admin's /mesh view names the reporting source.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { LoopbackDnsServer } from "../discovery/dnsServer.ts"
import { MaxEndpointsPerService } from "../../src/discovery/types.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { call, echoRequest, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

describe("sidecar endpoints from discovery", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  const twoInstances = async () => {
    const app1 = await startApp(cleanup, (_req, res) => res.end("one"))
    const app2 = await startApp(cleanup, (_req, res) => res.end("two"))
    const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app1.address }))
    const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app2.address }))
    return { b1, b2 }
  }

  it("follows an endpoints file that is rewritten while it runs", async () => {
    const { b1, b2 } = await twoInstances()
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-endpoints-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, "endpoints.json")
    const write = (address: string) => {
      writeFileSync(`${file}.tmp`, JSON.stringify({ catalog: [{ address, weight: 1 }] }))
      renameSync(`${file}.tmp`, file) // as an editor or a ConfigMap update does
    }
    write(b1.inboundAddress)
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpointsFile: file }))
    const body = async () => (await call(a.outboundPort, { headers: { host: "catalog" }, timeoutMs: 5000 })).body.toString()
    await waitFor(() => a.sidecar.registry.endpointsOf("catalog").length === 1, 5000, "the file's endpoint")
    expect(await body()).toBe("one")
    write(b2.inboundAddress)
    await waitFor(() => a.sidecar.registry.endpointsOf("catalog")[0]?.port === b2.sidecar.inbound.port, 5000, "the rewritten file")
    expect(await body()).toBe("two")
    expect(a.sidecar.registry.endpointsOf("catalog")[0]?.source).toBe("static:file")
  })

  it("routes to the targets of a DNS SRV name and follows a changed answer", async () => {
    const { b1, b2 } = await twoInstances()
    const name = "_mesh._tcp.catalog.shop.svc.cluster.local"
    // Targets are names with A records: their 1 s TTL sets how soon the sidecar asks again.
    const zone = (ports: ReadonlyArray<number>) => ({
      srv: { [name]: ports.map((port, i) => ({ weight: 1, port, target: `catalog-${i}.shop.svc.cluster.local` })) },
      a: Object.fromEntries(ports.map((_port, i) => [`catalog-${i}.shop.svc.cluster.local`, ["127.0.0.1"]])),
      ttl: 1
    })
    const dns = await LoopbackDnsServer.start(zone([b1.sidecar.inbound.port]))
    cleanup.add(() => dns.close())
    const a = await startSidecar(
      cleanup,
      // Its peers are on this host's loopback, as the DNS server says: dialled only when the operator allows it.
      sidecarConfig({ service: "store", dnsSrv: { catalog: name }, dnsServers: [`127.0.0.1:${dns.port}`], dialLocalEndpoints: true })
    )
    await waitFor(() => a.sidecar.registry.endpointsOf("catalog").length === 1, 5000, "the SRV answer")
    expect((await call(a.outboundPort, { headers: { host: "catalog" }, timeoutMs: 5000 })).body.toString()).toBe("one")
    expect(a.sidecar.registry.endpointsOf("catalog")[0]?.source).toBe("dns")
    dns.zone = zone([b2.sidecar.inbound.port])
    await waitFor(() => a.sidecar.registry.endpointsOf("catalog")[0]?.port === b2.sidecar.inbound.port, 10_000, "the changed SRV answer")
    expect((await call(a.outboundPort, { headers: { host: "catalog" }, timeoutMs: 5000 })).body.toString()).toBe("two")
  })

  it("merges a static list with a file: one endpoint reported by both is listed once with both sources", async () => {
    const app = await startApp(cleanup, echoRequest)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-endpoints-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, "endpoints.json")
    writeFileSync(file, JSON.stringify({ catalog: [{ address: b.inboundAddress, weight: 1 }] }))
    const a = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 5 }] }, endpointsFile: file })
    )
    await waitFor(() => a.sidecar.registry.endpointsOf("catalog")[0]?.source === "static,static:file", 5000, "both sources")
    expect(a.sidecar.registry.endpointsOf("catalog")).toHaveLength(1)
    expect(a.sidecar.registry.endpointsOf("catalog")[0]?.weight).toBe(5) // the static list wins
  })

  it("a sidecar watching a Kubernetes Service starts (its client loaded on demand) and says when it is not in a pod", async () => {
    // Outside a pod the watch cannot reach an API server: the sidecar says so and keeps running.
    const events: Array<string> = []
    const watching = await startSidecar(cleanup, sidecarConfig({ service: "store", kubernetes: { catalog: "shop/catalog" } }), (event) => events.push(event))
    expect(watching.sidecar.ready()).toBe(true)
    if (process.env["KUBERNETES_SERVICE_HOST"] === undefined) expect(events).toContain("discovery.kubernetes-not-in-cluster")
  })
  it("tells how many endpoints a source lists past the cap per service now in iip_mesh_discovery_endpoints_left_out, by source kind: a re-read with fewer reads fewer", async () => {
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-endpoints-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, "endpoints.json")
    // Loopback ports nothing listens on: nothing is called, only listed.
    const listed = Array.from({ length: MaxEndpointsPerService + 2 }, (_, i) => ({ address: `127.0.0.1:${20_000 + i}`, weight: 1 }))
    writeFileSync(file, JSON.stringify({ catalog: listed }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpointsFile: file }))
    await waitFor(() => a.sidecar.registry.endpointsOf("catalog").length === MaxEndpointsPerService, 5000, "the file's endpoints")
    const leftOut = async () => sum(parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body), "iip_mesh_discovery_endpoints_left_out", { source: "static" })
    expect(await leftOut()).toBe(2)
    // The file re-read without its first endpoint: one of the two waiting gets in, one is left out (before: a counter at 2 + 1).
    writeFileSync(file, JSON.stringify({ catalog: listed.slice(1) }))
    expect((await readUntil(leftOut, (count) => count === 1, 5000)).value).toBe(1)
    expect(a.sidecar.registry.endpointsOf("catalog")).toHaveLength(MaxEndpointsPerService)
  })
})
