// The admin control listener's live views of traffic (src/admin/adminServer.ts routes here):
//   GET /golden                         golden metrics of every sidecar shown, merged (telemetry/golden.ts)
//   GET /golden/series?service=S        last 10 minutes of a service in 10 s points (or caller=&callee= for an edge)
//   GET /golden/traces?caller=A&callee=B  the slowest recent traces with a call from A to B
//   GET /tap?service=&path=&status=&direction=   the live tap as server-sent events (telemetry/tap.ts)
// A tap stream's records are written while the socket takes them; when the reader is slow they wait
// in the listener's bounded queue (the rest dropped and counted), and every `stats` event says how
// many were dropped or sampled out so far. A comment line every 10 s finds a reader that went away;
// one whose socket takes nothing for TAP_STALLED_BEATS of them is closed, its place freed.
import type * as http from "node:http"
import type { Sidecar } from "../sidecar/sidecar.ts"
import { type GoldenView, mergeViews } from "../telemetry/golden.ts"
import type { TapFilter, TapListener } from "../telemetry/tap.ts"
import type { SpanJson, TraceSummary } from "../telemetry/traceStore.ts"
import { AdminRequestInvalid, json } from "./respond.ts"

export const goldenOf = (sidecars: ReadonlyArray<Sidecar>): GoldenView => mergeViews(sidecars.map((s) => s.telemetry.metrics.golden.view()))

/** One 10 s slot: its start (epoch ms), requests, errors, p99 seconds (null: none). */
export type Point = readonly [number, number, number, number | null]

/** The series of a service or an edge over the sidecars shown: counts summed per slot, p99 the largest. */
export const goldenSeries = (sidecars: ReadonlyArray<Sidecar>, query: URLSearchParams): { readonly points: ReadonlyArray<Point> } | undefined => {
  const service = query.get("service")
  const caller = query.get("caller")
  const callee = query.get("callee")
  const selector = service !== null ? { service } : caller !== null && callee !== null ? { caller, callee } : undefined
  if (selector === undefined) throw new AdminRequestInvalid({ status: 400, error: "bad_query", message: "name ?service=S or ?caller=A&callee=B" })
  const found = sidecars.map((s) => s.telemetry.metrics.golden.points(selector)).filter((p) => p !== undefined)
  if (found.length === 0) return undefined
  const points = found[0]!.map(([start], i): Point => {
    let requests = 0
    let errors = 0
    let p99: number | null = null
    for (const p of found) {
      const point = p[i]!
      requests += point[1]
      errors += point[2]
      if (point[3] !== null) p99 = Math.max(p99 ?? 0, point[3])
    }
    return [start, requests, errors, p99]
  })
  return { points }
}

/** Recent traces searched for an edge's calls, and the slowest kept. */
const EDGE_TRACES_SEARCHED = 300
const EDGE_TRACES_SHOWN = 10

export interface TraceAccess {
  readonly recent: (limit: number) => ReadonlyArray<TraceSummary>
  readonly get: (traceId: string) => ReadonlyArray<SpanJson>
}

/** The slowest of the recent traces where `caller`'s sidecar called `callee` (its client span), slowest first. */
export const edgeTraces = (traces: TraceAccess, query: URLSearchParams) => {
  const caller = query.get("caller")
  const callee = query.get("callee")
  if (caller === null || callee === null) throw new AdminRequestInvalid({ status: 400, error: "bad_query", message: "name ?caller=A&callee=B" })
  const found: Array<{ readonly traceId: string; readonly durationMs: number; readonly status: number | null; readonly error: boolean; readonly startTimeMs: number }> = []
  for (const summary of traces.recent(EDGE_TRACES_SEARCHED)) {
    const call = traces.get(summary.traceId).find((span) => span.kind === "client" && span.service === caller && span.attributes["iip_mesh.service"] === callee)
    if (call === undefined) continue
    const status = call.attributes["http.response.status_code"]
    found.push({ traceId: summary.traceId, durationMs: call.durationMs, status: typeof status === "number" ? status : null, error: call.status.code === "error", startTimeMs: call.startTimeMs })
  }
  return { caller, callee, traces: found.sort((a, b) => b.durationMs - a.durationMs).slice(0, EDGE_TRACES_SHOWN) }
}

const MAX_FILTER_LENGTH = 200

/** The tap filter of a query string; a bad value is the client's 400. */
export const tapFilterOf = (query: URLSearchParams): TapFilter => {
  const text = (name: string): string | undefined => {
    const value = query.get(name)
    if (value === null || value === "") return undefined
    if (value.length > MAX_FILTER_LENGTH) throw new AdminRequestInvalid({ status: 400, error: "bad_query", message: `${name} is longer than ${MAX_FILTER_LENGTH}` })
    return value
  }
  const status = text("status")
  if (status !== undefined && !/^[1-5](?:xx)?$/.test(status)) throw new AdminRequestInvalid({ status: 400, error: "bad_query", message: "status is a class: 1 to 5 (or 2xx ... 5xx)" })
  const direction = text("direction")
  if (direction !== undefined && direction !== "inbound" && direction !== "outbound") throw new AdminRequestInvalid({ status: 400, error: "bad_query", message: "direction is inbound or outbound" })
  const service = text("service")
  const pathPrefix = text("path")
  return {
    ...(service === undefined ? {} : { service }),
    ...(pathPrefix === undefined ? {} : { pathPrefix }),
    ...(status === undefined ? {} : { statusClass: Number(status[0]) }),
    ...(direction === undefined ? {} : { direction })
  }
}

const HEARTBEAT_MS = 10_000

/**
 * Heartbeats a reader's answer may wait for a drain before it is closed (20-30 s): a reader that
 * reads nothing would otherwise hold its place among the tapListeners as long as its connection
 * lives, and a zero window is kept alive by the kernel indefinitely.
 */
export const TAP_STALLED_BEATS = 3

/** Streams the tap of every sidecar shown as server-sent events until the reader goes. */
export const tapStream = (sidecars: ReadonlyArray<Sidecar>, res: http.ServerResponse, query: URLSearchParams): void => {
  const filter = tapFilterOf(query)
  const taps = [...new Set(sidecars.map((s) => s.telemetry.metrics.tap))]
  const listeners: Array<TapListener> = []
  let heartbeat: NodeJS.Timeout | undefined
  const close = () => {
    clearInterval(heartbeat)
    for (const [i, listener] of listeners.entries()) taps[i]!.close(listener)
    listeners.length = 0
  }
  for (const tap of taps) {
    const listener = tap.listen(filter)
    if (listener === undefined) {
      close()
      return json(res, 503, { error: "tap_full", message: "as many tap streams as tapListeners allows are open; try again later" })
    }
    listeners.push(listener)
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", "x-accel-buffering": "no" })
  let reported = { dropped: 0, sampledOut: 0 }
  let waiting = false
  /** Heartbeats since the answer began to wait for a drain. */
  let stalledBeats = 0
  const flush = () => {
    if (waiting || res.writableEnded) return
    let text = ""
    for (const listener of listeners) for (const record of listener.take()) text += `event: record\ndata: ${JSON.stringify(record)}\n\n`
    const dropped = listeners.reduce((sum, l) => sum + l.dropped, 0)
    const sampledOut = listeners.reduce((sum, l) => sum + l.sampledOut, 0)
    if (dropped !== reported.dropped || sampledOut !== reported.sampledOut) {
      reported = { dropped, sampledOut }
      text += `event: stats\ndata: ${JSON.stringify(reported)}\n\n`
    }
    if (text === "") return
    // The socket's buffer is full: records wait in the listeners' queues (bounded) until it drains.
    if (!res.write(text)) {
      waiting = true
      res.once("drain", () => {
        waiting = false
        stalledBeats = 0
        flush()
      })
    }
  }
  // Records are written at the end of the tick they came in, many at once under load.
  let scheduled = false
  const schedule = () => {
    if (scheduled) return
    scheduled = true
    setImmediate(() => {
      scheduled = false
      flush()
    })
  }
  for (const listener of listeners) listener.onRecord = schedule
  heartbeat = setInterval(() => {
    if (waiting && ++stalledBeats >= TAP_STALLED_BEATS) return void res.destroy()
    if (!waiting) res.write(": ping\n\n")
    flush()
  }, HEARTBEAT_MS)
  heartbeat.unref()
  res.write(": tap open\n\n")
  // The response closes when the reader goes (or the server stops): the listeners go with it.
  res.once("close", close)
}
