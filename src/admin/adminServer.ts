// The admin HTTP server of a sidecar, loopback-only by default: liveness (`/health`), readiness
// (`/ready`, 503 once a stop began), the endpoints it knows per service (`/mesh`) and the
// effective configuration (`/config`).
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as http from "node:http"
import type * as net from "node:net"
import { ListenFailed } from "../iip/server.ts"
import { endpointKey } from "../sidecar/endpoints.ts"
import { type HostPort, type Sidecar, splitAddress } from "../sidecar/sidecar.ts"

const json = (res: http.ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body, null, 2)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

export const meshView = (sidecar: Sidecar) => ({
  service: sidecar.config.service,
  node: sidecar.config.node,
  inbound: `${sidecar.inbound.host}:${sidecar.inbound.port}`,
  services: Object.fromEntries(
    sidecar.registry.serviceNames.map((service) => [
      service,
      sidecar.registry.endpointsOf(service).map((e) => ({ address: endpointKey(e), weight: e.weight, source: e.source }))
    ])
  )
})

/**
 * Starts the admin server before the sidecar it reports on (so it answers "not ready" during start
 * and during the drain); `current` gives the sidecar once it is up.
 */
export const make = (listenOn: string, current: () => Sidecar | undefined): Effect.Effect<HostPort, ListenFailed, Scope.Scope> => {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0]
    const sidecar = current()
    if (path === "/health") return json(res, 200, { status: "ok" })
    if (path === "/ready") return json(res, sidecar?.ready() === true ? 200 : 503, { ready: sidecar?.ready() === true })
    if (sidecar === undefined) return json(res, 503, { error: "starting" })
    if (path === "/mesh") return json(res, 200, meshView(sidecar))
    if (path === "/config") return json(res, 200, sidecar.config)
    json(res, 404, { error: "not_found", paths: ["/health", "/ready", "/mesh", "/config"] })
  })
  const address = splitAddress(listenOn)
  return Effect.acquireRelease(
    Effect.callback<HostPort, ListenFailed>((resume) => {
      server.once("error", (error: NodeJS.ErrnoException) =>
        resume(Effect.fail(new ListenFailed({ message: `admin: cannot listen on ${listenOn}: ${error.code ?? error.message}` }))))
      server.listen(address.port, address.host, () => {
        const bound = server.address() as net.AddressInfo
        resume(Effect.succeed({ host: bound.address, port: bound.port }))
      })
    }),
    () => Effect.sync(() => server.close())
  )
}
