// Runs inside one host namespace of test/sidecar/self-dial-netns.test.ts (NetnsHosts: eth0 holds
// the host's address, a /24 blackholed in the root namespace), argument: that address. On it:
// sidecar S ("store", every listener on a wildcard or the host address, its admin listeners started
// first as `iip-mesh sidecar` does) and a second sidecar P ("catalog") on the same address, a
// legitimate peer. A DNS server on this namespace's loopback answers S's SRV name of "catalog" with
// P and with S's own admin, admin control, outbound and inbound ports at the host address, and the
// SRV name of "store" with S's own inbound (the app calling its own service). Reports as JSON lines
// what the test asserts: the answers, the sockets each listener accepted at the host address
// (node's `net.server.socket` diagnostics channel), the paths S's app saw, the refusals counted
// and logged. Exits 3 before anything listens unless it is inside such a namespace.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as http from "node:http"
import * as Admin from "../../src/admin/adminServer.ts"
import type { Sidecar } from "../../src/sidecar/sidecar.ts"
import { LoopbackDnsServer } from "../discovery/dnsServer.ts"
import { acceptedSockets } from "./acceptedSockets.ts"
import { Cleanup, waitFor } from "./iipRaw.ts"
import { parsePrometheusText, sum } from "./prometheusText.ts"
import { sidecarConfig, startApp, startSidecar } from "./sidecarHarness.ts"
import { exitUnlessInTestNamespace } from "./testNamespaceGuard.ts"

const report = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`)

const address = process.argv[2] ?? ""
exitUnlessInTestNamespace(address === "" ? [] : [`${address.split(".").slice(0, 3).join(".")}.`, "127."], report)

/** Sockets accepted at `address`, per local port (the child ends with its namespace: no cleanup). */
const accepted = acceptedSockets(undefined, address)

const get = (port: number, host: string, path: string) =>
  new Promise<string>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, headers: { host }, timeout: 5000 }, (res) => {
      let body = ""
      res.on("data", (chunk: Buffer) => (body += chunk.toString()))
      res.on("end", () => resolve(`${res.statusCode} ${body}`))
    })
    req.on("timeout", () => req.destroy(new Error("no answer within 5 s")))
    req.on("error", reject)
    req.end()
  })

const cleanup = new Cleanup()
try {
  const dns = await LoopbackDnsServer.start({ srv: {}, a: {}, ttl: 1 })
  cleanup.add(() => dns.close())
  const catalogApp = await startApp(cleanup, (_req, res) => res.end("catalog"))
  const storeApp = await startApp(cleanup, (_req, res) => res.end("store"))
  const peer = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: catalogApp.address, inbound: "0.0.0.0:0" }))

  let current: Sidecar | undefined
  const adminScope = await Effect.runPromise(Scope.make())
  cleanup.add(() => Effect.runPromise(Scope.close(adminScope, Exit.void)))
  const admin = await Effect.runPromise(
    Admin.make({ admin: "0.0.0.0:0", control: `${address}:0`, token: "self-dial-test-token-0123" }, () => current).pipe(Scope.provide(adminScope))
  )
  const names = { catalog: "_mesh._tcp.catalog.shop.svc.cluster.local", store: "_mesh._tcp.store.shop.svc.cluster.local" }
  const events: Array<Record<string, unknown>> = []
  const store = await startSidecar(
    cleanup,
    sidecarConfig({ service: "store", app: storeApp.address, inbound: "0.0.0.0:0", outbound: "0.0.0.0:0", dnsSrv: names, dnsServers: [`127.0.0.1:${dns.port}`] }),
    (event, fields) => {
      if (event === "endpoints.dial-refused") events.push({ ...fields })
    },
    { ownListeners: [admin.readOnly, admin.control] }
  )
  current = store.sidecar
  const own = { admin: admin.readOnly.port, adminControl: admin.control.port, outbound: store.sidecar.outbound.port, inbound: store.sidecar.inbound.port }
  dns.zone = {
    srv: {
      [names.catalog]: [
        { weight: 1, port: peer.sidecar.inbound.port, target: "peer.example" },
        ...Object.values(own).map((port) => ({ weight: 10, port, target: "self.example" }))
      ],
      [names.store]: [{ weight: 1, port: own.inbound, target: "self.example" }]
    },
    a: { "peer.example": [address], "self.example": [address] },
    ttl: 1
  }
  await waitFor(() => store.sidecar.registry.endpointsOf("catalog").length === 5 && store.sidecar.registry.endpointsOf("store").length === 1, 10_000, "S's SRV endpoints")

  const catalogAnswers: Array<string> = []
  for (let i = 0; i < 30; i++) catalogAnswers.push(await get(store.outboundPort, "catalog", "/c"))
  const storeAnswers: Array<string> = []
  for (let i = 0; i < 3; i++) storeAnswers.push(await get(store.outboundPort, "store", "/s"))

  const metrics = parsePrometheusText((await store.sidecar.telemetry.metrics.text()).body)
  const refused = Object.fromEntries(Object.entries(own).map(([name, port]) => [name, sum(metrics, "iip_mesh_dials_refused_total", { service: "catalog", endpoint: `${address}:${port}` })]))
  report({
    type: "result",
    own,
    peerInbound: peer.sidecar.inbound.port,
    catalogAnswers,
    storeAnswers,
    accepted: Object.fromEntries(Object.values(own).concat(peer.sidecar.inbound.port).map((port) => [port, accepted(port)])),
    storeAppPaths: storeApp.seen.map((request) => request.url),
    refused,
    refusedStore: sum(metrics, "iip_mesh_dials_refused_total", { service: "store" }),
    events
  })
} catch (error) {
  report({ type: "fatal", reason: String(error instanceof Error ? error.stack : error) })
} finally {
  await cleanup.run()
  report({ type: "done" })
  process.exit(0)
}
