// The admin HTTP server of a sidecar, loopback-only by default:
//   GET  /                    the dashboard (dashboard.html): mesh table with live rates, trace waterfall
//   GET  /health, /ready      liveness; readiness (503 while starting and once a stop began)
//   GET  /mesh                the endpoints per service: weight, latency estimate, pending, health
//   PUT|DELETE /mesh/<service>/<host:port>/weight   run-time weight override (weights.ts)
//   GET  /metrics             Prometheus text (src/telemetry/metrics.ts)
//   GET  /traces[?limit=N]    recent traces held here; GET /traces/<trace id>: their spans
//   GET  /config              the effective configuration, secrets left out
//   GET  /dashboard/data      what the dashboard polls
// Every request goes through a total handler (respond.ts): a bad request is a 4xx, a bug of ours a
// logged 500, never an exception out of the server (issue 13: one bad escape used to end the process).
// In the demo one admin server reports on every sidecar of the process (`mesh`), so one URL shows
// the whole demo mesh; its sidecars share one trace store.
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { readFileSync } from "node:fs"
import * as http from "node:http"
import type * as net from "node:net"
import { type Log, stderrLog } from "../iip/log.ts"
import { ListenFailed } from "../iip/server.ts"
import { type HostPort, type Sidecar, splitAddress } from "../sidecar/sidecar.ts"
import type { SpanJson, TraceStore, TraceSummary } from "../telemetry/traceStore.ts"
import { decodeSegment, json, refuseConnect, totalHandler } from "./respond.ts"
import { configView, dashboardData, meshView } from "./views.ts"
import { WEIGHT_PATH, weightOverride } from "./weights.ts"

export { meshView } from "./views.ts"

const dashboardHtml = readFileSync(new URL("./dashboard.html", import.meta.url))

const TRACE_PATH = /^\/traces\/([0-9a-f]{32})$/

/** The trace stores of the sidecars shown (the demo's share one): traces merged newest first. */
const tracesOf = (sidecars: ReadonlyArray<Sidecar>) => {
  const stores = [...new Set<TraceStore>(sidecars.map((s) => s.telemetry.traces))]
  return {
    recent: (limit: number): Array<TraceSummary> =>
      stores.flatMap((store) => store.recent(limit)).sort((a, b) => b.startTimeMs - a.startTimeMs).slice(0, limit),
    get: (traceId: string): Array<SpanJson> =>
      stores.flatMap((store) => store.get(traceId) ?? []).sort((a, b) => a.startTimeMs - b.startTimeMs)
  }
}

const PATHS = ["/", "/health", "/ready", "/mesh", "/mesh/<service>/<host:port>/weight", "/metrics", "/traces", "/traces/<trace id>", "/config", "/dashboard/data"]

export interface AdminOptions {
  /** Every sidecar the dashboard shows; default the one `current` gives. */
  readonly mesh?: () => ReadonlyArray<Sidecar>
  /** Where a request the admin server failed on is reported (default: stderr). */
  readonly log?: Log
}

/**
 * Starts the admin server before the sidecar it reports on (so it answers "not ready" during start
 * and during the drain); `current` gives the sidecar once it is up.
 */
export const make = (listenOn: string, current: () => Sidecar | undefined, options: AdminOptions = {}): Effect.Effect<HostPort, ListenFailed, Scope.Scope> => {
  const shown = (sidecar: Sidecar) => options.mesh?.() ?? [sidecar]
  const route = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const [path = "/", query = ""] = (req.url ?? "/").split("?")
    const sidecar = current()
    if (path === "/health") return json(res, 200, { status: "ok" })
    if (path === "/ready") return json(res, sidecar?.ready() === true ? 200 : 503, { ready: sidecar?.ready() === true })
    if (sidecar === undefined) return json(res, 503, { error: "starting" })
    if (path === "/" || path === "/dashboard") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "content-length": dashboardHtml.length })
      res.end(dashboardHtml)
      return
    }
    if (path === "/mesh") return json(res, 200, meshView(sidecar))
    const weightPath = WEIGHT_PATH.exec(path)
    if (weightPath !== null) return weightOverride(sidecar, req, res, weightPath[1]!, decodeSegment(weightPath[2]!))
    if (path === "/metrics") {
      const { contentType, body } = await sidecar.telemetry.metrics.text()
      res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body) })
      res.end(body)
      return
    }
    if (path === "/traces") {
      const limit = Math.min(1000, Math.max(1, Number(new URLSearchParams(query).get("limit") ?? "50") || 50))
      return json(res, 200, { traces: tracesOf(shown(sidecar)).recent(limit) })
    }
    const tracePath = TRACE_PATH.exec(path)
    if (tracePath !== null) {
      const spans = tracesOf(shown(sidecar)).get(tracePath[1]!)
      return spans.length === 0 ? json(res, 404, { error: "no_such_trace", traceId: tracePath[1] }) : json(res, 200, { traceId: tracePath[1], spans })
    }
    if (path === "/dashboard/data") return json(res, 200, dashboardData(shown(sidecar), tracesOf(shown(sidecar)).recent(30)))
    if (path === "/config") return json(res, 200, configView(sidecar))
    json(res, 404, { error: "not_found", paths: PATHS })
  }
  const server = http.createServer(totalHandler(route, options.log ?? stderrLog))
  server.on("connect", refuseConnect)
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
