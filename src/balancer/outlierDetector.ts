// Passive health: which endpoints of a service to leave out for a while. The balancer reports
// every request's outcome here; an endpoint is ejected after `consecutiveFailures` failures in a
// row, or when its error rate over the last `windowMs` reaches `errorRatePercent` (with at least
// `minRequests` in the window), or at once when a connection to it cannot be made and the balancer
// holds nothing out (its hold window 0; else holdOuts.ts holds such an endpoint out, never
// reported here). Active health checks, when on, report through `probeFailed` and `probeSucceeded`.
//
// Ejection time grows with each ejection that follows the previous one closely: base, 2 x base,
// 4 x base ... up to `maxEjectionMs`; an endpoint that stays healthy for `maxEjectionMs` after its
// return starts again from base. No more than `maxEjectedPercent` of a service's endpoints are out
// at once (rounded down, so a service of one endpoint never loses it): past the cap, a failing
// endpoint stays in and the balancer's failure penalty steers traffic off it instead.
//
// On its return an endpoint starts with clean counters; if it still fails it is out again after
// `consecutiveFailures` more, for longer. Pure: time comes in as `now` (ms).

export interface OutlierOptions {
  /** Failures in a row that eject; 0 turns this rule off. Default 5. */
  readonly consecutiveFailures?: number
  /** Error rate (percent) over the window that ejects; 0 turns this rule off. Default 50. */
  readonly errorRatePercent?: number
  /** Requests the window must hold before the error rate counts. Default 20. */
  readonly minRequests?: number
  /** The error-rate window in ms. Default 10,000. */
  readonly windowMs?: number
  /** The first ejection's length in ms. Default 5,000. */
  readonly baseEjectionMs?: number
  /** The longest ejection in ms. Default 300,000. */
  readonly maxEjectionMs?: number
  /** At most this share of the endpoints out at once. Default 50. */
  readonly maxEjectedPercent?: number
}

export type EjectionReason = "consecutive_failures" | "error_rate" | "health_check" | "connect_failed"

export interface OutlierSnapshot {
  readonly ejected: boolean
  /** ms until it returns (0 when in). */
  readonly ejectedForMs: number
  readonly reason: EjectionReason | undefined
  /** Ejections so far. */
  readonly ejections: number
  readonly consecutiveFailures: number
  /** Failed / all requests in the window, percent (0 when empty). */
  readonly errorRatePercent: number
}

const BUCKETS = 10

class EndpointHealth {
  consecutive = 0
  readonly okBuckets = new Uint32Array(BUCKETS)
  readonly failBuckets = new Uint32Array(BUCKETS)
  /** The bucket index (time / bucket length) the counts were last moved to. */
  bucketAt = 0
  ejectedUntil = 0
  reason: EjectionReason | undefined = undefined
  /** The current length multiplier: 1, 2, 4 ... */
  multiplier = 0
  ejections = 0
  /** Set by a failed active check; cleared only by a passing one. */
  probeFailing = false

  /** Moves the window to `bucket`, zeroing the buckets it passed. */
  advance(bucket: number): void {
    const steps = Math.min(BUCKETS, bucket - this.bucketAt)
    for (let i = 1; i <= steps; i++) {
      const slot = (this.bucketAt + i) % BUCKETS
      this.okBuckets[slot] = 0
      this.failBuckets[slot] = 0
    }
    if (bucket > this.bucketAt) this.bucketAt = bucket
  }

  counts(): { readonly ok: number; readonly failed: number } {
    let ok = 0
    let failed = 0
    for (let i = 0; i < BUCKETS; i++) {
      ok += this.okBuckets[i]!
      failed += this.failBuckets[i]!
    }
    return { ok, failed }
  }

  reset(): void {
    this.consecutive = 0
    this.okBuckets.fill(0)
    this.failBuckets.fill(0)
  }
}

export class OutlierDetector {
  private readonly consecutiveFailures: number
  private readonly errorRatePercent: number
  private readonly minRequests: number
  private readonly bucketMs: number
  private readonly baseEjectionMs: number
  private readonly maxEjectionMs: number
  private readonly maxEjectedPercent: number
  private readonly health = new Map<string, EndpointHealth>()
  /** The earliest time an ejection ends (Infinity when none): `changedSince` is O(1) between. */
  private nextReturnAt = Number.POSITIVE_INFINITY
  private version = 0

  constructor(options: OutlierOptions = {}) {
    this.consecutiveFailures = options.consecutiveFailures ?? 5
    this.errorRatePercent = options.errorRatePercent ?? 50
    this.minRequests = Math.max(1, options.minRequests ?? 20)
    this.bucketMs = Math.max(1, (options.windowMs ?? 10_000) / BUCKETS)
    this.baseEjectionMs = options.baseEjectionMs ?? 5_000
    this.maxEjectionMs = Math.max(this.baseEjectionMs, options.maxEjectionMs ?? 300_000)
    this.maxEjectedPercent = options.maxEjectedPercent ?? 50
  }

  /** The endpoints now known; state of the others is dropped. */
  retain(ids: ReadonlyArray<string>): void {
    const keep = new Set(ids)
    for (const id of this.health.keys()) if (!keep.has(id)) this.health.delete(id)
    this.version++
  }

  /**
   * Moves whenever the set of endpoints out changes (an ejection, a return as of `now`): the
   * balancer rebuilds its list of usable endpoints only then.
   */
  versionAt(now: number): number {
    if (now >= this.nextReturnAt) {
      this.nextReturnAt = Number.POSITIVE_INFINITY
      for (const h of this.health.values()) {
        if (h.ejectedUntil > now) this.nextReturnAt = Math.min(this.nextReturnAt, h.ejectedUntil)
        else if (h.reason !== undefined && !h.probeFailing) this.returnEndpoint(h)
      }
      this.version++
    }
    return this.version
  }

  /** Whether `id` is out as of `now` (an ejection not yet over, or a failing active check). */
  isEjected(id: string, now: number): boolean {
    const h = this.health.get(id)
    return h !== undefined && (h.probeFailing || h.ejectedUntil > now)
  }

  /** A request to `id` ended; `total` is how many endpoints the service has. Returns an ejection's reason. */
  record(id: string, now: number, ok: boolean, total: number): EjectionReason | undefined {
    const h = this.stateOf(id)
    // Back from an ejection: clean counters, even if no pick has noticed the return yet.
    if (h.reason !== undefined && !h.probeFailing && h.ejectedUntil <= now) this.returnEndpoint(h)
    const bucket = Math.floor(now / this.bucketMs)
    h.advance(bucket)
    const slot = h.bucketAt % BUCKETS
    if (ok) {
      h.consecutive = 0
      h.okBuckets[slot]!++
      return undefined
    }
    h.consecutive++
    h.failBuckets[slot]!++
    if (h.ejectedUntil > now) return undefined
    let reason: EjectionReason | undefined = undefined
    if (this.consecutiveFailures > 0 && h.consecutive >= this.consecutiveFailures) reason = "consecutive_failures"
    else if (this.errorRatePercent > 0) {
      const { ok: good, failed } = h.counts()
      if (good + failed >= this.minRequests && (failed * 100) / (good + failed) >= this.errorRatePercent) reason = "error_rate"
    }
    return reason !== undefined && this.eject(h, now, total, reason) ? reason : undefined
  }

  /**
   * A connection to `id` was refused or could not be made: nothing listens there, so it goes out
   * at once (for the usual growing time, within the cap) instead of after more failed requests.
   */
  connectFailed(id: string, now: number, total: number): boolean {
    const h = this.stateOf(id)
    if (h.probeFailing || h.ejectedUntil > now) return false
    return this.eject(h, now, total, "connect_failed")
  }

  /** An active check of `id` failed: out until a check passes (within the cap). */
  probeFailed(id: string, now: number, total: number): boolean {
    const h = this.stateOf(id)
    if (h.probeFailing) return false
    if (!this.eject(h, now, total, "health_check")) return false
    h.probeFailing = true
    return true
  }

  /** An active check of `id` passed: back in at once if a failed check put it out. */
  probeSucceeded(id: string): void {
    const h = this.health.get(id)
    if (h === undefined || !h.probeFailing) return
    h.probeFailing = false
    h.ejectedUntil = 0
    this.returnEndpoint(h)
    this.version++
  }

  snapshot(id: string, now: number): OutlierSnapshot {
    const h = this.health.get(id)
    if (h === undefined) return { ejected: false, ejectedForMs: 0, reason: undefined, ejections: 0, consecutiveFailures: 0, errorRatePercent: 0 }
    h.advance(Math.floor(now / this.bucketMs))
    const { ok, failed } = h.counts()
    const ejected = this.isEjected(id, now)
    return {
      ejected,
      ejectedForMs: ejected ? (h.probeFailing ? Number.POSITIVE_INFINITY : h.ejectedUntil - now) : 0,
      reason: ejected ? h.reason : undefined,
      ejections: h.ejections,
      consecutiveFailures: h.consecutive,
      errorRatePercent: ok + failed === 0 ? 0 : (failed * 100) / (ok + failed)
    }
  }

  private stateOf(id: string): EndpointHealth {
    let h = this.health.get(id)
    if (h === undefined) {
      h = new EndpointHealth()
      this.health.set(id, h)
    }
    return h
  }

  private ejectedCount(now: number): number {
    let out = 0
    for (const h of this.health.values()) if (h.probeFailing || h.ejectedUntil > now) out++
    return out
  }

  private eject(h: EndpointHealth, now: number, total: number, reason: EjectionReason): boolean {
    if (this.ejectedCount(now) + 1 > Math.floor((total * this.maxEjectedPercent) / 100)) return false
    // Growing length: doubled when this ejection follows the last return within maxEjectionMs.
    h.multiplier = h.multiplier > 0 && now - h.ejectedUntil < this.maxEjectionMs ? Math.min(h.multiplier * 2, this.maxEjectionMs / this.baseEjectionMs) : 1
    h.ejectedUntil = now + Math.min(this.maxEjectionMs, this.baseEjectionMs * h.multiplier)
    h.reason = reason
    h.ejections++
    this.nextReturnAt = Math.min(this.nextReturnAt, h.ejectedUntil)
    this.version++
    return true
  }

  private returnEndpoint(h: EndpointHealth): void {
    h.reason = undefined
    h.reset()
  }
}
