// The admin HTTP server of a sidecar, loopback-only by default: liveness (`/health`), readiness
// (`/ready`, 503 once a stop began), the endpoints it knows per service with their weight, latency
// estimate, pending count and health (`/mesh`), run-time weight overrides
// (`PUT /mesh/<service>/<host:port>/weight` with a number, `DELETE` to return to discovery's) and
// the effective configuration (`/config`).
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as http from "node:http"
import type * as net from "node:net"
import { ListenFailed } from "../iip/server.ts"
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
  loadBalancer: sidecar.config.loadBalancer,
  services: Object.fromEntries(sidecar.registry.view().map((view) => [view.service, view.endpoints])),
  retryBudgetAvailable: Object.fromEntries(sidecar.registry.view().map((view) => [view.service, view.retryBudgetAvailable]))
})

const MAX_BODY = 1024

/** Reads a small request body; undefined when it is larger than MAX_BODY. */
const smallBody = (req: http.IncomingMessage): Promise<string | undefined> =>
  new Promise((resolve, reject) => {
    let text = ""
    req.setEncoding("utf8")
    req.on("data", (chunk: string) => {
      text += chunk
      if (text.length > MAX_BODY) {
        req.destroy()
        resolve(undefined)
      }
    })
    req.once("end", () => resolve(text))
    req.once("error", reject)
  })

/** `PUT` a weight (a bare number or {"weight": n}, 0..1000) or `DELETE` the override of one endpoint. */
const weightOverride = async (sidecar: Sidecar, req: http.IncomingMessage, res: http.ServerResponse, service: string, address: string) => {
  if (req.method !== "PUT" && req.method !== "DELETE") return json(res, 405, { error: "method_not_allowed", allowed: ["PUT", "DELETE"] })
  let weight: number | undefined = undefined
  if (req.method === "PUT") {
    const text = await smallBody(req)
    let parsed: unknown = undefined
    try {
      parsed = text === undefined ? undefined : JSON.parse(text)
    } catch {
      parsed = undefined
    }
    const value = typeof parsed === "object" && parsed !== null ? (parsed as { weight?: unknown }).weight : parsed
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 1000) {
      return json(res, 400, { error: "bad_weight", message: "send a weight from 0 to 1000, as 3 or {\"weight\": 3}" })
    }
    weight = value
  }
  if (!sidecar.registry.overrideWeight(service, address, weight)) return json(res, 404, { error: "no_such_endpoint", service, address })
  json(res, 200, { service, address, weight: weight ?? "from discovery" })
}

const WEIGHT_PATH = /^\/mesh\/([a-z0-9-]+)\/([^/]+)\/weight$/

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
    const weightPath = WEIGHT_PATH.exec(path ?? "")
    if (weightPath !== null) {
      weightOverride(sidecar, req, res, weightPath[1]!, decodeURIComponent(weightPath[2]!)).catch(() => res.destroy())
      return
    }
    if (path === "/config") return json(res, 200, sidecar.config)
    json(res, 404, { error: "not_found", paths: ["/health", "/ready", "/mesh", "/mesh/<service>/<host:port>/weight", "/config"] })
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
