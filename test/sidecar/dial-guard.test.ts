// A sidecar never dials its own host for an endpoint learned from the network (src/iip/dialGuard.ts):
// a hostile DNS server (real, on loopback) answers the SRV name of "catalog" with a target whose A
// record is 127.0.0.1 and whose port is a listener on this host (standing for the pod's app or admin
// port). The listener sees no connection; every request reaches the legit peer the operator listed
// beside it; the refused tries are counted in iip_mesh_dials_refused_total and logged, and the
// balancer ejects the endpoint (fewer refused tries than requests: no storm). With
// dialLocalEndpoints the operator opts out (test/sidecar/discovery.test.ts routes that way).
import { afterEach, describe, expect, it } from "vitest"
import { LoopbackDnsServer } from "../discovery/dnsServer.ts"
import { countingListener } from "../support/countingListener.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { call, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

describe("a sidecar's dials to endpoints from the network", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it("a DNS SRV answer aiming at this host's loopback is never dialled; the operator's endpoint takes every request", async () => {
    const victim = await countingListener(cleanup)
    const victimPort = victim.port

    const app = await startApp(cleanup, (_req, res) => res.end("legit"))
    const peer = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const name = "_mesh._tcp.catalog.shop.svc.cluster.local"
    const dns = await LoopbackDnsServer.start({
      srv: { [name]: [{ weight: 1, port: victimPort, target: "evil.example" }] },
      a: { "evil.example": ["127.0.0.1"] },
      ttl: 60
    })
    cleanup.add(() => dns.close())
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const store = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { catalog: [{ address: peer.inboundAddress, weight: 1 }] }, dnsSrv: { catalog: name }, dnsServers: [`127.0.0.1:${dns.port}`] }),
      (event, fields) => events.push({ event, fields: { ...fields } })
    )
    await waitFor(() => store.sidecar.registry.endpointsOf("catalog").length === 2, 5000, "the static and the SRV endpoint")

    const requests = 30
    for (let i = 0; i < requests; i++) {
      const answer = await call(store.outboundPort, { headers: { host: "catalog" }, timeoutMs: 5000 })
      expect(answer.body.toString()).toBe("legit")
    }
    expect(victim.connections()).toBe(0)
    const refused = sum(parsePrometheusText((await store.sidecar.telemetry.metrics.text()).body), "iip_mesh_dials_refused_total", { service: "catalog", endpoint: `127.0.0.1:${victimPort}` })
    expect(refused).toBeGreaterThan(0)
    expect(refused).toBeLessThan(requests)
    expect(events.some((e) => e.event === "endpoints.dial-refused" && e.fields.endpoint === `127.0.0.1:${victimPort}`)).toBe(true)
  })

  it("many refused endpoints cost a request none of its tries: every request still reaches the operator's endpoint", async () => {
    // More refused endpoints than a request has tries, weighted far above the real one, and more
    // than the balancer may eject at once (half a service's endpoints): each request meets several.
    const victims = await Promise.all(Array.from({ length: 10 }, () => countingListener(cleanup)))
    const app = await startApp(cleanup, (_req, res) => res.end("legit"))
    const peer = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const name = "_mesh._tcp.catalog.shop.svc.cluster.local"
    const dns = await LoopbackDnsServer.start({
      srv: { [name]: victims.map((victim) => ({ weight: 1000, port: victim.port, target: "evil.example" })) },
      a: { "evil.example": ["127.0.0.1"] },
      ttl: 60
    })
    cleanup.add(() => dns.close())
    const store = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { catalog: [{ address: peer.inboundAddress, weight: 1 }] }, dnsSrv: { catalog: name }, dnsServers: [`127.0.0.1:${dns.port}`] })
    )
    await waitFor(() => store.sidecar.registry.endpointsOf("catalog").length === 11, 5000, "the static and the ten SRV endpoints")

    const answers: Array<string> = []
    for (let i = 0; i < 60; i++) answers.push(`${(await call(store.outboundPort, { headers: { host: "catalog" }, timeoutMs: 5000 })).status}`)
    expect(answers.filter((status) => status !== "200")).toEqual([])
    expect(victims.map((victim) => victim.connections())).toEqual(victims.map(() => 0))
    // A refused try sent nothing: the try after it is no retry ("sent again"), and /metrics says
    // so, or a hostile list would show as a retry storm on every request's dashboards.
    const metrics = parsePrometheusText((await store.sidecar.telemetry.metrics.text()).body)
    expect(sum(metrics, "iip_mesh_dials_refused_total", { service: "catalog" })).toBeGreaterThan(0)
    expect(sum(metrics, "iip_mesh_retries_total", { direction: "outbound", service: "catalog" })).toBe(0)
    // Nor do the spans: each request was sent once, so its client span says one attempt and no
    // resend, however many refused dials came before the send.
    const traces = store.sidecar.telemetry.traces
    const clientSpans = traces.recent(60).flatMap((trace) => (traces.get(trace.traceId) ?? []).filter((span) => span.kind === "client" && span.attributes["iip_mesh.service"] === "catalog"))
    expect(clientSpans).toHaveLength(60)
    expect(clientSpans.map((span) => [span.attributes["iip_mesh.attempts"], span.attributes["http.request.resend_count"]])).toEqual(clientSpans.map(() => [1, undefined]))
  })
})
