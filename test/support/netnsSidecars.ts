// Runs inside a loopback-only network namespace (`unshare -rn`, set up by the test): an app and
// its sidecar B ("catalog") and a caller's sidecar A ("store"), both with mDNS on and no endpoint
// in their configuration. Reports as JSON lines what the test asserts: when A learned B's
// endpoint, the answer of a request through A, and when A dropped B after B's graceful stop.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as http from "node:http"
import type * as net from "node:net"
import { networkInterfaces } from "node:os"
import { configDefaults } from "../../src/config/settings.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import * as SidecarLive from "../../src/sidecar/sidecar.ts"

const report = (event: string, fields: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`)

// Refuse to run anywhere but in a namespace with loopback only: mDNS must never leave it.
const interfaces = Object.keys(networkInterfaces())
if (interfaces.some((name) => name !== "lo")) {
  report("refused", { interfaces })
  process.exit(3)
}

const config = (service: string, app: string | null): SidecarConfig => ({
  ...configDefaults(),
  service,
  node: `${service}-node`,
  app,
  outbound: "127.0.0.1:0",
  inbound: "127.0.0.1:0",
  admin: "127.0.0.1:0",
  adminControl: "127.0.0.1:0",
  mdns: true,
  meshName: "test",
  weight: 2,
  requestTimeoutMs: 5000,
  drainTimeoutMs: 1000
})

const start = async (sidecarConfig: SidecarConfig) => {
  const scope = await Effect.runPromise(Scope.make())
  const sidecar = await Effect.runPromise(SidecarLive.make(sidecarConfig, () => {}).pipe(Scope.provide(scope)))
  return { sidecar, stop: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const until = async (condition: () => boolean, limitMs: number): Promise<boolean> => {
  const started = performance.now()
  while (!condition()) {
    if (performance.now() - started > limitMs) return false
    await new Promise((resolve) => setTimeout(resolve, 5)) // polling a registry: no event exists for "not yet"
  }
  return true
}

const app = http.createServer((_req, res) => res.end("from catalog"))
await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
const appAddress = `127.0.0.1:${(app.address() as net.AddressInfo).port}`

const a = await start(config("store", null))
const bStarted = performance.now()
const b = await start(config("catalog", appAddress))
const found = await until(() => a.sidecar.registry.endpointsOf("catalog").length === 1, 5000)
const endpoint = a.sidecar.registry.endpointsOf("catalog")[0]
report("discovered", { found, ms: Math.round(performance.now() - bStarted), endpoint })

const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
  const req = http.request({ host: "127.0.0.1", port: a.sidecar.outbound.port, path: "/", headers: { host: "catalog" } }, (res) => {
    let body = ""
    res.on("data", (chunk: Buffer) => (body += chunk.toString()))
    res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
  })
  req.on("error", reject)
  req.end()
})
report("answer", answer)

const stopping = performance.now()
await b.stop()
const dropped = await until(() => a.sidecar.registry.endpointsOf("catalog").length === 0, 5000)
report("dropped", { dropped, ms: Math.round(performance.now() - stopping) })

await a.stop()
app.close()
report("done")
process.exit(0)
