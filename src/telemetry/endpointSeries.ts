// The endpoint series of iip_mesh_requests_total and iip_mesh_request_duration_seconds, under the
// request path's metrics (metrics.ts): each service's series per endpoint (requests by method and
// code, a duration histogram: some 20 lines each) and the one budget all services' series share.
// Discovery bounds the endpoints listed at once, not the names a source lists one after another
// over a sidecar's life (an mDNS host moving ports, pods replaced): 10,000 such names made a scrape
// of 190,000 lines (21.7 MB) that took 44 s, the event loop held throughout. So:
//   - MaxEndpointSeries in all; a request whose endpoint gets none counts in its service's
//     endpoint="_other" (one per service, services are capped: outside the budget, as is "-", no
//     endpoint picked), and in the service's dropped count, said in a metric-series-full line;
//   - fair: a service holding fewer series than the one holding the most, by two or more, takes one
//     back from it (removed) when the budget is full (max-min: one churning service cannot keep
//     every other's endpoints in _other; every service gets its first series while there are fewer
//     than the budget). The one taken is the least recently used as far as sweeps and take-backs
//     have seen (a second-chance clock, below): a live endpoint serving traffic keeps its series
//     while its holder has idle ones, where taking the oldest created lost it, its requests then
//     counted in _other, its series back as a reset once room came;
//   - freed: a series whose endpoint has left discovery and saw no request for EndpointSeriesGraceMs
//     (--metric-series-idle) is removed, its slot given back.
// A series is removed, never folded into _other: Prometheus reads a counter that disappears as
// ended (rate() and increase() over it stay right, and one that comes back is a reset), where a
// removed series' lifetime count added to _other would be read as that many requests in one scrape
// interval: a spike in every rate, error ratio and latency quantile over the service.
// Cost: a request to an endpoint with a series pays one Map lookup, as before; only a request to
// one without pays the budget's check (and, when full, a clock read). Whether a series saw requests
// is read off its count at each sweep, so the request path keeps no time. Sweeps run at most every
// SweepIntervalMs (or the grace, if shorter), at a scrape or when a new name finds the budget full:
// O(series) each.
// Recency, kept off the request path: each service's series Map is in the order they were last
// seen moving. A sweep, or a take-back passing over it, that finds a series' count moved since it
// was last looked at puts it last; a take-back removes the first it finds that has not moved (the
// least recently used, to within a sweep interval), or, the TakeBackLooks first having all moved,
// the first of them. Each series passed over is then marked seen; a take-back looks at no more than
// TakeBackLooks (a holder of 1,000 busy series: every one looked at and moved cost about 1 ms a
// take-back). Sweeps put the busy last, so the first few are idle whenever some are.
import type { Log } from "../iip/log.ts"

export type Labels = Record<string, string>

/** A number kept on the request path and handed to prom-client when scraped. */
export interface Tally {
  readonly labels: Labels
  value: number
}

export const tally = (labels: Labels): Tally => ({ labels, value: 0 })

export const durationBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** One label set's duration histogram: counts per bucket (not cumulative), sum, count. */
export class DurationTally {
  readonly labels: Labels
  readonly counts = new Float64Array(durationBuckets.length)
  sum = 0
  count = 0

  constructor(labels: Labels) {
    this.labels = labels
  }

  observe(seconds: number): void {
    this.sum += seconds
    this.count++
    for (let i = 0; i < durationBuckets.length; i++) {
      if (seconds <= durationBuckets[i]!) {
        this.counts[i]!++
        return
      }
    }
  }
}

/** Endpoint series of all services together (the budget). */
export const MaxEndpointSeries = 1000

/** How long a series whose endpoint left discovery is kept after its last request (a pod restarting under its name keeps it), unless configured. */
export const EndpointSeriesGraceMs = 10 * 60_000

/** The least grace configurable: sweeps run at most this often then. */
export const MinEndpointSeriesGraceMs = 1000

/** The least time between two sweeps for series to free (or the grace, if shorter): a sweep costs every series once. */
const SweepIntervalMs = 10_000

/** Series a take-back looks at, at most, for one that has not moved. */
const TakeBackLooks = 64

/** metric-series-full lines per service at most, per this window. */
const FullLineWindowMs = 60_000

/** Endpoints outside the budget: the service's overflow, and "no endpoint picked". */
const unbudgeted = (endpoint: string): boolean => endpoint === "_other" || endpoint === "-"

export class EndpointSeries {
  private readonly base: Labels
  private readonly byMethod = new Map<string, Map<number, Tally>>()
  readonly duration: DurationTally
  /** The count at the last sweep, and since when it has not moved (the budget's clock). */
  sweptCount = 0
  idleSince: number

  constructor(base: Labels, now: number) {
    this.base = base
    this.duration = new DurationTally(base)
    this.idleSince = now
  }

  count(method: string, code: number): void {
    let byCode = this.byMethod.get(method)
    if (byCode === undefined) {
      byCode = new Map()
      this.byMethod.set(method, byCode)
    }
    let t = byCode.get(code)
    if (t === undefined) {
      t = tally({ ...this.base, method, code: String(code) })
      byCode.set(code, t)
    }
    t.value++
  }

  *tallies(): Iterable<Tally> {
    for (const byCode of this.byMethod.values()) yield* byCode.values()
  }
}

/** One service's endpoint series in one direction. */
export class ServiceEndpoints {
  readonly series = new Map<string, EndpointSeries>()
  /** Of `series`, those in the budget. */
  held = 0
  /** Requests counted in _other for want of a series of their own (iip_mesh_metric_series_dropped_total). */
  dropped = 0
  /** When the last metric-series-full line went out, and the drops not said since. */
  lastLine = Number.NEGATIVE_INFINITY
  unsaid = 0
  readonly labels: Labels
  /** Outbound endpoints come from discovery and may leave it; inbound's is the app's address. */
  readonly discovered: boolean
  private readonly budget: EndpointSeriesBudget

  constructor(labels: Labels, discovered: boolean, budget: EndpointSeriesBudget) {
    this.labels = labels
    this.discovered = discovered
    this.budget = budget
  }

  /** The series `endpoint`'s request counts in: its own, or past the budget the service's _other. */
  of(endpoint: string): EndpointSeries {
    return this.series.get(endpoint) ?? this.budget.admit(this, endpoint)
  }

  /** A new series (the budget counts it: EndpointSeriesBudget.admit). */
  add(endpoint: string, now: number): EndpointSeries {
    const series = new EndpointSeries({ ...this.labels, endpoint }, now)
    this.series.set(endpoint, series)
    return series
  }

  /** The service's _other, made at its first use. */
  other(now: number): EndpointSeries {
    return this.series.get("_other") ?? this.add("_other", now)
  }
}

export interface BudgetOptions {
  readonly max?: number
  /** EndpointSeriesGraceMs unless given; at least MinEndpointSeriesGraceMs. */
  readonly graceMs?: number
  readonly now: () => number
  readonly log: Log
}

/**
 * The series all services hold against MaxEndpointSeries. Services are kept in sets by how many
 * they hold, so the one holding the most is found in O(1) (counts move by one at a time).
 */
export class EndpointSeriesBudget {
  readonly max: number
  used = 0
  private readonly graceMs: number
  private readonly sweepIntervalMs: number
  private readonly now: () => number
  private readonly log: Log
  private readonly services: Array<ServiceEndpoints> = []
  private readonly holding: Array<Set<ServiceEndpoints> | undefined> = []
  private most = 0
  private lastSweep = Number.NEGATIVE_INFINITY
  private isLive: (endpoint: string) => boolean = () => true

  constructor(options: BudgetOptions) {
    this.max = options.max ?? MaxEndpointSeries
    this.graceMs = Math.max(options.graceMs ?? EndpointSeriesGraceMs, MinEndpointSeriesGraceMs)
    this.sweepIntervalMs = Math.min(SweepIntervalMs, this.graceMs)
    this.now = options.now
    this.log = options.log
  }

  /** A service's series, against this budget. */
  service(labels: Labels, discovered: boolean): ServiceEndpoints {
    const endpoints = new ServiceEndpoints(labels, discovered, this)
    this.services.push(endpoints)
    return endpoints
  }

  /** Where the sweep asks whether an endpoint is still in discovery; until set, all are. */
  watchLive(isLive: (endpoint: string) => boolean): void {
    this.isLive = isLive
  }

  /** A request to `endpoint`, which has no series in `owner`: a new one, if the budget or fairness gives it room, else _other. */
  admit(owner: ServiceEndpoints, endpoint: string): EndpointSeries {
    if (unbudgeted(endpoint)) return owner.add(endpoint, this.now())
    const now = this.now()
    if (this.used >= this.max) this.sweepIfDue(now)
    if (this.used >= this.max) {
      // Checked on the count first: a service at its part, dropping, allocates nothing here.
      if (this.most <= owner.held + 1) return this.drop(owner, now)
      this.takeBack(first(this.holding[this.most]!)!, now)
    }
    const series = owner.add(endpoint, now)
    this.moved(owner, 1)
    return series
  }

  /** Removes the series whose endpoint left discovery and saw no request for the grace period; at most every SweepIntervalMs (or grace). */
  sweepIfDue(now = this.now()): void {
    if (now - this.lastSweep < this.sweepIntervalMs && now >= this.lastSweep) return
    this.lastSweep = now
    for (const owner of this.services) {
      let moved: Array<[string, EndpointSeries]> | undefined
      // Whether an idle series kept follows a moved one: if none does, the moved are last already
      // (every series busy, or the busy after the idle as the last sweep left them), and the
      // reorder, a Map delete and set each (1,000 moved: 300 us a sweep, not 10), is skipped.
      let idleAfterMoved = false
      for (const [endpoint, series] of owner.series) {
        if (unbudgeted(endpoint)) continue
        if (seen(series, now)) (moved ??= []).push([endpoint, series])
        else if (owner.discovered && now - series.idleSince >= this.graceMs && !this.isLive(endpoint)) {
          owner.series.delete(endpoint)
          this.moved(owner, -1)
        } else if (moved !== undefined) idleAfterMoved = true
      }
      if (moved !== undefined && idleAfterMoved) lastInOrder(owner, moved)
    }
  }

  /** Frees `largest`'s least recently used series (the module's comment) for a service holding fewer. */
  private takeBack(largest: ServiceEndpoints, now: number): void {
    let moved: Array<[string, EndpointSeries]> | undefined
    let taken: string | undefined
    for (const [endpoint, series] of largest.series) {
      if (unbudgeted(endpoint)) continue
      if (!seen(series, now)) {
        taken = endpoint
        break
      }
      if ((moved ??= []).push([endpoint, series]) === TakeBackLooks) break
    }
    // All looked at moved since last seen: the first of them was the least recently seen moving.
    if (taken === undefined) taken = moved?.shift()?.[0]
    if (moved !== undefined) lastInOrder(largest, moved)
    if (taken === undefined) return
    largest.series.delete(taken)
    this.moved(largest, -1)
  }

  private drop(owner: ServiceEndpoints, now: number): EndpointSeries {
    owner.dropped++
    if (now - owner.lastLine >= FullLineWindowMs || now < owner.lastLine) {
      const suppressed = owner.unsaid
      owner.lastLine = now
      owner.unsaid = 0
      this.log("metric-series-full", { ...owner.labels, budget: this.max, series: this.used, serviceSeries: owner.held, ...(suppressed > 0 ? { suppressedBefore: suppressed } : {}) })
    } else owner.unsaid++
    return owner.other(now)
  }

  /** `owner` holds `by` (±1) series more: the budget and the sets by count follow. */
  private moved(owner: ServiceEndpoints, by: 1 | -1): void {
    if (owner.held > 0) this.holding[owner.held]!.delete(owner)
    owner.held += by
    this.used += by
    if (owner.held > 0) (this.holding[owner.held] ??= new Set()).add(owner)
    if (owner.held > this.most) this.most = owner.held
    while (this.most > 0 && (this.holding[this.most]?.size ?? 0) === 0) this.most--
  }
}

/** Whether `series` counted requests since it was last looked at (sweep or take-back); it is now seen, its idle time starting over if so. */
const seen = (series: EndpointSeries, now: number): boolean => {
  if (series.duration.count === series.sweptCount) return false
  series.sweptCount = series.duration.count
  series.idleSince = now
  return true
}

/** Puts `moved` (in their order) after the owner's other series: the most recently seen moving last. */
const lastInOrder = (owner: ServiceEndpoints, moved: ReadonlyArray<[string, EndpointSeries]>): void => {
  for (const [endpoint, series] of moved) {
    owner.series.delete(endpoint)
    owner.series.set(endpoint, series)
  }
}

const first = <A>(set: ReadonlySet<A>): A | undefined => {
  for (const a of set) return a
  return undefined
}
