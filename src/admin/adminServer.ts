// The admin HTTP servers of a sidecar, two listeners:
//   read-only (`admin`, safe on the pod address: what probes and Prometheus need)
//     GET  /health, /ready      liveness; readiness (503 while starting and once a stop began)
//     GET  /metrics             Prometheus text (src/telemetry/metrics.ts)
//   control (`adminControl`, loopback by default; elsewhere only with a bearer token: it changes
//   state and reveals the mesh's topology), which serves the read-only paths too:
//     GET  /                    the dashboard (dashboard.html): mesh table with live rates, trace waterfall
//     GET  /mesh                the endpoints per service: weight, latency estimate, pending, health
//     PUT|DELETE /mesh/<service>/<host:port>/weight   run-time weight override (weights.ts)
//     GET  /traces[?limit=N]    recent traces held here; GET /traces/<trace id>: their spans
//     GET  /config              the effective configuration, secrets redacted (views.ts)
//     GET  /dashboard/data      what the dashboard polls
//     GET  /golden, /golden/series, /golden/traces, /tap   golden metrics, their time series, an edge's
//                               slowest traces, the live tap (observability.ts); /golden?scope=self: this
//                               sidecar's own, what a federating peer asks for: these two (GET, scope=self) need no
//                               token, federation sends none (what /metrics already tells anyone)
//     GET  /federation          the whole mesh: this view and the peer admins' found through discovery (federation.ts);
//                               /federation/series?service=S (or caller=&callee=): a series over the whole mesh
// With a token configured (adminToken / adminTokenFile) every other control request must carry
// `Authorization: Bearer <token>`, compared in constant time; without one, 401. Without a token
// (loopback only), a request must name a loopback host (hostCheck.ts): a DNS-rebinding page cannot drive it.
// Every request goes through a total handler (respond.ts): a bad request is a 4xx, a bug of ours a
// logged 500, never an exception out of the server (issue 13: one bad escape used to end the process).
// Each listener gives a request 5 s to arrive whole and holds at most 256 connections, 32 per client
// address (an IPv6 client's /64), each with at most 4 requests pipelined (listenerLimits.ts): a client cannot hold the
// process's file descriptors or make it hold answers it does not read. At a cap a new connection
// evicts the one idle longest, so idle connections cannot keep the kubelet's probes out.
// In the demo one admin server reports on every sidecar of the process (`mesh`), so one URL shows
// the whole demo mesh; its sidecars share one trace store.
import * as Effect from "effect/Effect"
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import { createHash, timingSafeEqual } from "node:crypto"
import { readFileSync } from "node:fs"
import type * as http from "node:http"
import type * as net from "node:net"
import type { SidecarConfig } from "../config/sidecarConfig.ts"
import { type Log, messageOf, stderrLog } from "../iip/log.ts"
import { ListenFailed } from "../iip/server.ts"
import { MAX_SECRET_FILE_BYTES, readSmallFile } from "../iip/smallFile.ts"
import { type HostPort, type Sidecar, splitAddress } from "../sidecar/sidecar.ts"
import type { SpanJson, TraceStore, TraceSummary } from "../telemetry/traceStore.ts"
import type { Federation } from "./federation.ts"
import { edgeTraces, goldenOf, goldenSeries, tapStream } from "./observability.ts"
import { hostRefusal } from "./hostCheck.ts"
import { capConnections, limitPipelining, serverOptions } from "./listenerLimits.ts"
import { decodeSegment, json, refuseConnect, totalHandler } from "./respond.ts"
import { configView, dashboardData, meshView } from "./views.ts"
import { WEIGHT_PATH, weightOverride } from "./weights.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"

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

const READ_ONLY_PATHS = ["/health", "/ready", "/metrics"]
const CONTROL_PATHS = ["/", ...READ_ONLY_PATHS, "/mesh", "/mesh/<service>/<host:port>/weight", "/traces", "/traces/<trace id>", "/config", "/dashboard/data", "/golden", "/golden/series", "/golden/traces", "/tap", "/federation", "/federation/series"]

/** The control paths served as they are written (the two with a parameter are matched by their patterns). */
const CONTROL_READS = new Set(["/dashboard", ...CONTROL_PATHS.filter((path) => !path.includes("<"))])

/** The token file could not be read, or holds too short a token. */
export class AdminTokenInvalid extends Data.TaggedError("AdminTokenInvalid")<{ readonly message: string }> {}

/** Where the two listeners go and the token the control one requires. */
export interface AdminListeners {
  /** The read-only listener, HOST:PORT. */
  readonly admin: string
  /** The control listener, HOST:PORT. */
  readonly control: string
  /** The bearer token control requests must carry; undefined: none (the configuration allows that on loopback only). */
  readonly token: string | undefined
}

export interface AdminAddresses {
  readonly readOnly: HostPort
  readonly control: HostPort
}

/** The listeners a configuration asks for, the token read from its file if it names one (trailing newline dropped). */
export const adminListenersOf = (config: Pick<SidecarConfig, "admin" | "adminControl" | "adminToken" | "adminTokenFile">): Result.Result<AdminListeners, AdminTokenInvalid> => {
  let token = config.adminToken ?? undefined
  if (config.adminTokenFile !== null) {
    try {
      const read = readSmallFile(config.adminTokenFile, MAX_SECRET_FILE_BYTES, { followSymlink: true })
      if ("problem" in read) return Result.fail(new AdminTokenInvalid({ message: `adminTokenFile ${config.adminTokenFile}: ${read.problem}` }))
      token = read.text.replace(/\r?\n$/, "")
    } catch (error) {
      return Result.fail(new AdminTokenInvalid({ message: `adminTokenFile ${config.adminTokenFile}: ${messageOf(error)}` }))
    }
    if (token.length < 16 || /\s/.test(token)) {
      return Result.fail(new AdminTokenInvalid({ message: `adminTokenFile ${config.adminTokenFile}: expected a token of 16 or more characters without spaces` }))
    }
  }
  return Result.succeed({ admin: config.admin, control: config.adminControl, token })
}

/** Compares a request's bearer token with the configured one in constant time (both hashed to one length first). */
const bearerCheck = (token: string): ((req: http.IncomingMessage) => boolean) => {
  const expected = createHash("sha256").update(token, "utf8").digest()
  return (req) => {
    const header = req.headers.authorization
    if (typeof header !== "string" || !/^bearer /i.test(header)) return false
    return timingSafeEqual(createHash("sha256").update(header.slice(7).trim(), "utf8").digest(), expected)
  }
}

const BAD_HOST = JSON.stringify({ error: "bad_host", message: "without a token the admin control listener answers only requests for a loopback host (127.0.0.1, localhost, [::1])" })
const MALFORMED_HOST = JSON.stringify({ error: "bad_host", message: "Host must be exactly one authority: a host name or IPv4 address, or an [IPv6] address, optionally followed by :port" })

/**
 * What a federating admin asks a peer for (federation.ts): this sidecar's own golden view or series.
 * Served without the token because federation must send none (its peers are whatever discovery
 * lists, and anyone on the LAN can announce one); it tells what /metrics tells anyone already.
 * `scope` read as the routes below read it, so what passes is exactly the self view.
 */
const federationRead = (req: http.IncomingMessage, path: string, query: string): boolean =>
  req.method === "GET" && (path === "/golden" || path === "/golden/series") && new URLSearchParams(query).get("scope") === "self"

/**
 * Every admin path but a weight override only reads, so only GET and HEAD reach it: a POST or DELETE
 * that answered like a GET let a client (or a page's form) believe it changed something, and
 * `DELETE /tap` opened an event stream. True when the request may go on; otherwise answered 405.
 * Asked only for a path that exists: any other stays the 404 that lists the paths.
 */
const readMethod = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
  if (req.method === "GET" || req.method === "HEAD") return true
  json(res, 405, { error: "method_not_allowed", allowed: ["GET", "HEAD"] }, { allow: "GET, HEAD" })
  return false
}

const UNAUTHORIZED = JSON.stringify({ error: "unauthorized", message: "the admin control listener needs Authorization: Bearer <token>" })

export interface AdminOptions {
  /** Every sidecar the dashboard shows; default the one `current` gives. */
  readonly mesh?: () => ReadonlyArray<Sidecar>
  /** Where a request the admin server failed on is reported (default: stderr). */
  readonly log?: Log
  /** The prefix an IPv6 client counts by in the per-address connection cap (--ipv6-source-prefix; default a /64). */
  readonly ipv6SourcePrefix?: number
  /** Connections each listener holds at once (default ADMIN_LIMITS.maxConnections; fewer under a low open-file limit: src/sidecar/fileLimit.ts). */
  readonly maxConnections?: number
}

const listen = (server: http.Server, listenOn: string, what: string) => {
  const address = splitAddress(listenOn)
  return Effect.acquireRelease(
    Effect.callback<HostPort, ListenFailed>((resume) => {
      server.once("error", (error: NodeJS.ErrnoException) =>
        resume(Effect.fail(new ListenFailed({ message: `admin (${what}): cannot listen on ${listenOn}: ${error.code ?? error.message}` }))))
      server.listen(address.port, address.host, () => {
        const bound = server.address() as net.AddressInfo
        resume(Effect.succeed({ host: bound.address, port: bound.port }))
      })
    }),
    () => Effect.sync(() => {
      server.close()
      server.closeAllConnections()
    })
  )
}

/**
 * Starts both admin listeners before the sidecar they report on (so they answer "not ready" during
 * start and during the drain); `current` gives the sidecar once it is up.
 */
export const make = (listeners: AdminListeners, current: () => Sidecar | undefined, options: AdminOptions = {}): Effect.Effect<AdminAddresses, ListenFailed, Scope.Scope> => {
  const shown = (sidecar: Sidecar) => options.mesh?.() ?? [sidecar]
  /** The read-only paths; false when `path` is not one of them. */
  const readOnly = async (path: string, res: http.ServerResponse): Promise<boolean> => {
    const sidecar = current()
    if (path === "/health") return (json(res, 200, { status: "ok" }), true)
    if (path === "/ready") return (json(res, sidecar?.ready() === true ? 200 : 503, { ready: sidecar?.ready() === true }), true)
    if (path !== "/metrics") return false
    if (sidecar === undefined) return (json(res, 503, { error: "starting" }), true)
    const { contentType, body } = await sidecar.telemetry.metrics.text()
    res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body) })
    res.end(body)
    return true
  }
  const readOnlyRoute = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const [path = "/"] = (req.url ?? "/").split("?")
    if (READ_ONLY_PATHS.includes(path) && !readMethod(req, res)) return
    if (await readOnly(path, res)) return
    json(res, 404, { error: "not_found", paths: READ_ONLY_PATHS, message: "the dashboard, /mesh, /traces, /config and weight overrides are on the admin control listener (adminControl)" })
  }
  const authorized = listeners.token === undefined ? undefined : bearerCheck(listeners.token)
  // Loaded on the first /federation: a sidecar nobody asks for the mesh's view never loads its client.
  let federation: Federation | undefined
  const controlRoute = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const [path = "/", query = ""] = (req.url ?? "/").split("?")
    if (authorized !== undefined && !authorized(req) && !federationRead(req, path, query)) {
      res.writeHead(401, { "content-type": "application/json", "content-length": UNAUTHORIZED.length, "www-authenticate": 'Bearer realm="iip-mesh-admin"' })
      res.end(UNAUTHORIZED)
      return
    }
    const refusal = authorized === undefined ? hostRefusal(req.headersDistinct.host) : undefined
    if (refusal !== undefined) {
      const body = refusal === "malformed" ? MALFORMED_HOST : BAD_HOST
      res.writeHead(refusal === "malformed" ? 400 : 403, { "content-type": "application/json", "content-length": body.length })
      res.end(body)
      return
    }
    const weightPath = WEIGHT_PATH.exec(path)
    if ((CONTROL_READS.has(path) || TRACE_PATH.test(path)) && !readMethod(req, res)) return
    if (await readOnly(path, res)) return
    const sidecar = current()
    if (sidecar === undefined) return json(res, 503, { error: "starting" })
    if (path === "/" || path === "/dashboard") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "content-length": dashboardHtml.length })
      res.end(dashboardHtml)
      return
    }
    if (path === "/mesh") return json(res, 200, meshView(sidecar))
    if (weightPath !== null) return weightOverride(sidecar, req, res, weightPath[1]!, decodeSegment(weightPath[2]!))
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
    if (path === "/golden") return json(res, 200, goldenOf(new URLSearchParams(query).get("scope") === "self" ? [sidecar] : shown(sidecar)))
    if (path === "/federation" || path === "/federation/series") {
      federation ??= new (await import("./federation.ts")).Federation(log)
      if (path === "/federation") return json(res, 200, await federation.view(sidecar, shown(sidecar)))
      // Aborted when the client goes before its answer: a request waiting for a place leaves the queue.
      const left = new AbortController()
      res.once("close", () => left.abort())
      const series = await federation.series(sidecar, shown(sidecar), new URLSearchParams(query), left.signal)
      if (series !== undefined && "busy" in series) return json(res, 503, { error: "federation_busy", message: series.busy }, { "retry-after": String(series.retryAfterSeconds) })
      return series === undefined ? json(res, 404, { error: "no_such_series" }) : json(res, 200, series)
    }
    if (path === "/golden/series") {
      const params = new URLSearchParams(query)
      const series = goldenSeries(params.get("scope") === "self" ? [sidecar] : shown(sidecar), params)
      return series === undefined ? json(res, 404, { error: "no_such_series" }) : json(res, 200, series)
    }
    if (path === "/golden/traces") return json(res, 200, edgeTraces(tracesOf(shown(sidecar)), new URLSearchParams(query)))
    if (path === "/tap") return tapStream(shown(sidecar), res, new URLSearchParams(query))
    json(res, 404, { error: "not_found", paths: CONTROL_PATHS })
  }
  const log = options.log ?? stderrLog
  const server = (route: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>) => {
    const created = nodeHttp.createServer(serverOptions)
    created.on("connect", refuseConnect)
    created.on("request", limitPipelining(capConnections(created, options.ipv6SourcePrefix, options.maxConnections), totalHandler(route, log)))
    return created
  }
  return Effect.gen(function*() {
    const readOnlyAddress = yield* listen(server(readOnlyRoute), listeners.admin, "read-only")
    const controlAddress = yield* listen(server(controlRoute), listeners.control, "control")
    return { readOnly: readOnlyAddress, control: controlAddress }
  })
}
