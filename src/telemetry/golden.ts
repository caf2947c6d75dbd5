// Golden metrics (success rate, requests per second, latency percentiles) over sliding windows of
// 10 s, 1 min and 10 min, per service (what its sidecar served, inbound), per caller -> callee
// edge (what a sidecar's app called, outbound) and per route of a service (a path template or a
// gRPC method). The sidecar records each finished request here (src/sidecar/observe.ts); the
// admin server serves `view()` as JSON, merged across sidecars and hosts (mergeWindows), and the
// CLI prints it.
//
// Memory is bounded: a series is two rings of time slots (10 x 1 s for the 10 s window, 60 x 10 s
// for the longer ones), each slot a request count, an error count and a latency histogram of fixed
// buckets (~8 KB a series, whatever the load); the number of series is capped (services, routes per
// service, edges), names past a cap share `_other`. A slot whose time has passed is zeroed when
// reused, so an idle series costs nothing to keep current.
//
// Percentiles come from the histogram: linear within the bucket that holds them, so an answer is
// never further from the truth than that bucket's width.

/** Latency bucket upper bounds, seconds; one more bucket holds what is slower. */
export const GOLDEN_BUCKETS: ReadonlyArray<number> = [
  0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30
]
const BUCKETS = GOLDEN_BUCKETS.length + 1
/** Per slot: requests, errors, then the buckets. */
const STRIDE = 2 + BUCKETS

export const WINDOWS = { "10s": 10_000, "1m": 60_000, "10m": 600_000 } as const
export type WindowName = keyof typeof WINDOWS

const FINE = { widthMs: 1_000, slots: 10 }
const COARSE = { widthMs: 10_000, slots: 60 }

/** A window's raw aggregate: mergeable by adding (federation sums hosts' aggregates). */
export interface WindowAggregate {
  readonly requests: number
  readonly errors: number
  /** The time the aggregate covers, seconds (shorter than the window for a young series). */
  readonly seconds: number
  /** Requests per latency bucket (GOLDEN_BUCKETS, then the overflow). */
  readonly buckets: ReadonlyArray<number>
}

export interface WindowStats {
  readonly requests: number
  readonly rps: number
  /** 1 when there were no requests. */
  readonly successRate: number
  /** Seconds; null when there were no requests. */
  readonly p50: number | null
  readonly p95: number | null
  readonly p99: number | null
}

const bucketOf = (seconds: number): number => {
  let lo = 0
  let hi = GOLDEN_BUCKETS.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (seconds <= GOLDEN_BUCKETS[mid]!) hi = mid
    else lo = mid + 1
  }
  return lo
}

/** One ring of time slots. */
class Ring {
  readonly widthMs: number
  readonly slots: number
  readonly data: Uint32Array
  /** The slot number (time / width) each position holds; -1: none yet. */
  readonly epochs: Float64Array
  /** The slot the last request went to: where it starts in `data`, the time it covers. */
  private currentBase = 0
  private currentStartMs = 0
  private currentEndMs = 0
  /** The start of the earliest slot it entered: before a series' first, the wall clock stepped back. */
  lowestStartMs = Number.POSITIVE_INFINITY

  constructor(widthMs: number, slots: number) {
    this.widthMs = widthMs
    this.slots = slots
    this.data = new Uint32Array(slots * STRIDE)
    this.epochs = new Float64Array(slots).fill(-1)
  }

  add(nowMs: number, error: boolean, bucket: number): void {
    // Most requests land in the slot the previous one did: no division then.
    if (nowMs >= this.currentEndMs || nowMs < this.currentStartMs) this.enter(nowMs)
    const data = this.data
    const base = this.currentBase
    data[base]!++
    if (error) data[base + 1]!++
    data[base + 2 + bucket]!++
  }

  /** Makes the slot of `nowMs` current, zeroed if it held an older time. */
  private enter(nowMs: number): void {
    const epoch = Math.floor(nowMs / this.widthMs)
    const position = epoch % this.slots
    const base = position * STRIDE
    if (this.epochs[position] !== epoch) {
      this.data.fill(0, base, base + STRIDE)
      this.epochs[position] = epoch
    }
    this.currentBase = base
    this.currentStartMs = epoch * this.widthMs
    this.currentEndMs = this.currentStartMs + this.widthMs
    if (this.currentStartMs < this.lowestStartMs) this.lowestStartMs = this.currentStartMs
  }

  /** The sum of the `count` most recent slots (the current one included), and where they start. */
  sum(nowMs: number, count: number): { readonly totals: Float64Array; readonly startMs: number } {
    const totals = new Float64Array(STRIDE)
    const epoch = Math.floor(nowMs / this.widthMs)
    for (let back = 0; back < count; back++) {
      const wanted = epoch - back
      if (wanted < 0) break
      const position = wanted % this.slots
      if (this.epochs[position] !== wanted) continue
      const base = position * STRIDE
      for (let i = 0; i < STRIDE; i++) totals[i]! += this.data[base + i]!
    }
    return { totals, startMs: (epoch - count + 1) * this.widthMs }
  }

  /** Every slot of the ring, oldest first: [slot start ms, requests, errors, p99 seconds | null]. */
  points(nowMs: number): Array<readonly [number, number, number, number | null]> {
    const epoch = Math.floor(nowMs / this.widthMs)
    const out: Array<readonly [number, number, number, number | null]> = []
    for (let back = this.slots - 1; back >= 0; back--) {
      const wanted = epoch - back
      const position = ((wanted % this.slots) + this.slots) % this.slots
      const base = position * STRIDE
      const held = this.epochs[position] === wanted
      const requests = held ? this.data[base]! : 0
      const buckets = held ? Array.from(this.data.subarray(base + 2, base + STRIDE)) : []
      out.push([wanted * this.widthMs, requests, held ? this.data[base + 1]! : 0, held ? quantile(buckets, requests, 0.99) : null])
    }
    return out
  }
}

/** One series: a service, an edge or a route. */
export class GoldenSeries {
  private readonly fine = new Ring(FINE.widthMs, FINE.slots)
  private readonly coarse = new Ring(COARSE.widthMs, COARSE.slots)
  /** When it started (wall ms); -Infinity once the wall clock stepped back past that. */
  private firstMs: number
  /** Running totals since the start, for Prometheus (metrics.ts): requests, errors, seconds, per bucket. */
  readonly totals = { requests: 0, errors: 0, seconds: 0, buckets: new Float64Array(BUCKETS) }

  constructor(nowMs: number) {
    this.firstMs = nowMs
  }

  record(nowMs: number, seconds: number, error: boolean): void {
    const bucket = bucketOf(seconds)
    this.fine.add(nowMs, error, bucket)
    this.coarse.add(nowMs, error, bucket)
    const totals = this.totals
    totals.requests++
    if (error) totals.errors++
    totals.seconds += seconds
    totals.buckets[bucket]!++
  }

  window(nowMs: number, name: WindowName): WindowAggregate {
    const windowMs = WINDOWS[name]
    const ring = name === "10s" ? this.fine : this.coarse
    const { totals, startMs } = ring.sum(nowMs, windowMs / ring.widthMs)
    // A series' start ahead of now, or a slot entered before its start's: the wall clock stepped
    // back since. The series is older than the window then (the slots are wall time: they line up
    // across hosts), not younger than 1 s; and stays so once the clock passes its start again
    // (else the 10 min window's requests went over the minute since then, for ten minutes).
    if (this.firstMs > nowMs || this.fine.lowestStartMs < Math.floor(this.firstMs / FINE.widthMs) * FINE.widthMs) this.firstMs = Number.NEGATIVE_INFINITY
    const coveredFrom = Math.max(startMs, this.firstMs)
    const seconds = Math.max(1, (nowMs - coveredFrom) / 1000)
    return { requests: totals[0]!, errors: totals[1]!, seconds, buckets: Array.from(totals.subarray(2)) }
  }

  /** The last 10 minutes in 10 s points, oldest first. */
  points(nowMs: number): Array<readonly [number, number, number, number | null]> {
    return this.coarse.points(nowMs)
  }
}

/** The latency below which `q` of the requests fall, linear within its bucket; null without requests. */
export const quantile = (buckets: ReadonlyArray<number>, requests: number, q: number): number | null => {
  if (requests <= 0) return null
  const rank = q * requests
  let seen = 0
  for (let i = 0; i < buckets.length; i++) {
    const inBucket = buckets[i] ?? 0
    if (inBucket > 0 && seen + inBucket >= rank) {
      if (i >= GOLDEN_BUCKETS.length) return GOLDEN_BUCKETS[GOLDEN_BUCKETS.length - 1]!
      const lower = i === 0 ? 0 : GOLDEN_BUCKETS[i - 1]!
      const upper = GOLDEN_BUCKETS[i]!
      return lower + (upper - lower) * Math.min(1, Math.max(0, (rank - seen) / inBucket))
    }
    seen += inBucket
  }
  return GOLDEN_BUCKETS[GOLDEN_BUCKETS.length - 1]!
}

export const statsOf = (aggregate: WindowAggregate): WindowStats => ({
  requests: aggregate.requests,
  rps: aggregate.requests / aggregate.seconds,
  successRate: aggregate.requests === 0 ? 1 : 1 - aggregate.errors / aggregate.requests,
  p50: quantile(aggregate.buckets, aggregate.requests, 0.5),
  p95: quantile(aggregate.buckets, aggregate.requests, 0.95),
  p99: quantile(aggregate.buckets, aggregate.requests, 0.99)
})

/** Two aggregates of one window (two sidecars, two hosts) as one. */
export const mergeWindows = (a: WindowAggregate, b: WindowAggregate): WindowAggregate => ({
  requests: a.requests + b.requests,
  errors: a.errors + b.errors,
  seconds: Math.max(a.seconds, b.seconds),
  buckets: Array.from({ length: BUCKETS }, (_, i) => (a.buckets[i] ?? 0) + (b.buckets[i] ?? 0))
})

export type Windows = Record<WindowName, WindowAggregate & { readonly stats: WindowStats }>

const windowsOf = (series: GoldenSeries, nowMs: number): Windows => {
  const one = (name: WindowName) => {
    const aggregate = series.window(nowMs, name)
    return { ...aggregate, stats: statsOf(aggregate) }
  }
  return { "10s": one("10s"), "1m": one("1m"), "10m": one("10m") }
}

export interface GoldenView {
  readonly generatedAt: number
  readonly services: ReadonlyArray<{ readonly service: string; readonly windows: Windows }>
  readonly edges: ReadonlyArray<{ readonly caller: string; readonly callee: string; readonly windows: Windows }>
  readonly routes: ReadonlyArray<{ readonly service: string; readonly route: string; readonly windows: Windows }>
}

export interface GoldenOptions {
  /** The service of the sidecar that records: the caller of its outbound calls. Default "-". */
  readonly self?: string
  /** Milliseconds since the epoch; tests pass their own clock. */
  readonly now?: () => number
  /** Services this sidecar serves (inbound), and services it calls (its edges from `self`), with series of their own. Default 500. */
  readonly maxServices?: number
  /** Routes per service with series of their own. Default 50. */
  readonly maxRoutes?: number
  /** Caller -> callee edges with series of their own. Default 1000. */
  readonly maxEdges?: number
}

const OTHER = "_other"
/** Request paths remembered per service with their route (cleared when full). */
const PATH_CACHE = 256
/** Longest route kept; longer ones are cut (their cardinality is capped anyway). */
const MAX_ROUTE_LENGTH = 120
/** Path segments kept in a route; deeper ones become one `**`. */
const MAX_ROUTE_SEGMENTS = 4
const ID_SEGMENT = /^(?:\d+|[0-9a-fA-F-]{16,}|[0-9a-fA-F]{8}-[0-9a-fA-F-]+)$/

/**
 * The route of a request path: the query dropped, segments that look like ids (numbers, hex, UUIDs)
 * as `{id}`, at most four segments. A gRPC path (/package.Service/Method) is its own route.
 */
export const routeOf = (path: string): string => {
  const q = path.indexOf("?")
  const bare = q === -1 ? path : path.slice(0, q)
  if (bare === "" || bare === "/") return "/"
  const segments = bare.split("/")
  let route = ""
  for (let i = 1; i < segments.length; i++) {
    if (i > MAX_ROUTE_SEGMENTS) {
      route += "/**"
      break
    }
    const segment = segments[i]!
    route += "/" + (ID_SEGMENT.test(segment) ? "{id}" : segment)
  }
  return route.length > MAX_ROUTE_LENGTH ? route.slice(0, MAX_ROUTE_LENGTH) : route
}

/** What one service's sidecar serves: its own series and its routes'. */
export interface ServedGolden {
  record(path: string, seconds: number, error: boolean): void
}

export interface GoldenMetrics {
  /** The series of a service this sidecar serves (cached: look it up once per request or less). */
  served(service: string): ServedGolden
  /** The series of calls from `caller` to `callee`. */
  edge(caller: string, callee: string): GoldenSeries
  /** The series of this sidecar's calls to `callee` (the caller: `self`); past `maxServices` callees, new ones share `_other`, as the outbound metrics do. */
  callsTo(callee: string): GoldenSeries
  readonly now: () => number
  /** The service whose calls `callsTo` records. */
  readonly self: string
  view(): GoldenView
  /** Every route series and every edge series, for Prometheus (metrics.ts). */
  series(): { readonly routes: Iterable<{ readonly service: string; readonly route: string; readonly series: GoldenSeries }>; readonly edges: Iterable<{ readonly caller: string; readonly callee: string; readonly series: GoldenSeries }> }
  /** The last 10 minutes of a service's or an edge's series in 10 s points; undefined when unknown. */
  points(selector: { readonly service: string } | { readonly caller: string; readonly callee: string }): Array<readonly [number, number, number, number | null]> | undefined
}

class Served implements ServedGolden {
  readonly series: GoldenSeries
  readonly routes = new Map<string, GoldenSeries>()
  /** Recent request paths (query included) -> their route's series. */
  private readonly byPath = new Map<string, GoldenSeries>()
  private readonly maxRoutes: number
  private readonly now: () => number

  constructor(now: () => number, maxRoutes: number) {
    this.now = now
    this.maxRoutes = maxRoutes
    this.series = new GoldenSeries(now())
  }

  record(path: string, seconds: number, error: boolean): void {
    const nowMs = this.now()
    this.series.record(nowMs, seconds, error)
    // Most requests repeat a path seen lately: one Map lookup instead of building the route.
    let series = this.byPath.get(path)
    if (series === undefined) {
      series = this.routeSeries(routeOf(path), nowMs)
      if (this.byPath.size >= PATH_CACHE) this.byPath.clear()
      this.byPath.set(path, series)
    }
    series.record(nowMs, seconds, error)
  }

  private routeSeries(route: string, nowMs: number): GoldenSeries {
    let series = this.routes.get(route)
    if (series === undefined) {
      if (this.routes.size >= this.maxRoutes) route = OTHER
      series = this.routes.get(route) ?? new GoldenSeries(nowMs)
      this.routes.set(route, series)
    }
    return series
  }
}

export const makeGolden = (options: GoldenOptions = {}): GoldenMetrics => {
  const now = options.now ?? Date.now
  const maxServices = options.maxServices ?? 500
  const maxRoutes = options.maxRoutes ?? 50
  const maxEdges = options.maxEdges ?? 1000
  const self = options.self ?? "-"
  const served = new Map<string, Served>()
  /** caller -> callee -> series (no key built per request). */
  const edges = new Map<string, Map<string, GoldenSeries>>()
  let edgeCount = 0
  const golden: GoldenMetrics = {
    now,
    self,
    callsTo: (callee) => golden.edge(self, callee),
    served: (service) => {
      let entry = served.get(service)
      if (entry === undefined) {
        const name = served.size < maxServices ? service : OTHER
        entry = served.get(name) ?? new Served(now, maxRoutes)
        served.set(name, entry)
      }
      return entry
    },
    edge: (caller, callee) => {
      let byCallee = edges.get(caller)
      if (byCallee === undefined) {
        byCallee = new Map()
        edges.set(caller, byCallee)
      }
      let series = byCallee.get(callee)
      if (series === undefined) {
        // The app names its callee in the Host header: its own calls are capped as its outbound
        // service series are (metrics.ts), not at the larger edge cap, which is for merged views.
        if (edgeCount >= maxEdges || (caller === self && byCallee.size >= maxServices)) callee = OTHER
        series = byCallee.get(callee)
        if (series === undefined) {
          series = new GoldenSeries(now())
          byCallee.set(callee, series)
          edgeCount++
        }
      }
      return series
    },
    view: () => {
      const nowMs = now()
      // Past a cap the name `_other` is the only key of its series: no series is listed twice.
      return {
        generatedAt: nowMs,
        services: [...served.entries()].map(([service, s]) => ({ service, windows: windowsOf(s.series, nowMs) })),
        edges: [...edges.entries()].flatMap(([caller, byCallee]) =>
          [...byCallee.entries()].map(([callee, series]) => ({ caller, callee, windows: windowsOf(series, nowMs) }))),
        routes: [...served.entries()].flatMap(([service, s]) =>
          [...s.routes.entries()].map(([route, r]) => ({ service, route, windows: windowsOf(r, nowMs) })))
      }
    },
    series: () => ({
      routes: [...served.entries()].flatMap(([service, s]) => [...s.routes.entries()].map(([route, series]) => ({ service, route, series }))),
      edges: [...edges.entries()].flatMap(([caller, byCallee]) => [...byCallee.entries()].map(([callee, series]) => ({ caller, callee, series })))
    }),
    points: (selector) => {
      const nowMs = now()
      if ("service" in selector) return served.get(selector.service)?.series.points(nowMs)
      return edges.get(selector.caller)?.get(selector.callee)?.points(nowMs)
    }
  }
  return golden
}

const mergeWindowSets = (a: Windows, b: Windows): Windows => {
  const one = (name: WindowName) => {
    const aggregate = mergeWindows(a[name], b[name])
    return { ...aggregate, stats: statsOf(aggregate) }
  }
  return { "10s": one("10s"), "1m": one("1m"), "10m": one("10m") }
}

const mergeBy = <T extends { readonly windows: Windows }>(items: ReadonlyArray<T>, keyOf: (item: T) => string): Array<T> => {
  const merged = new Map<string, T>()
  for (const item of items) {
    const key = keyOf(item)
    const seen = merged.get(key)
    merged.set(key, seen === undefined ? item : { ...seen, windows: mergeWindowSets(seen.windows, item.windows) })
  }
  return [...merged.values()]
}

/** Several views (sidecars of one process, hosts of a mesh) as one: the same series summed. */
export const mergeViews = (views: ReadonlyArray<GoldenView>): GoldenView => ({
  generatedAt: Math.max(0, ...views.map((v) => v.generatedAt)),
  services: mergeBy(views.flatMap((v) => v.services), (s) => s.service),
  edges: mergeBy(views.flatMap((v) => v.edges), (e) => `${e.caller}\u0000${e.callee}`),
  routes: mergeBy(views.flatMap((v) => v.routes), (r) => `${r.service}\u0000${r.route}`)
})
