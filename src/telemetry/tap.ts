// The live tap: records of finished requests (method, path, status, latency, endpoint, trace id,
// error hop) handed to whoever listens, each listener with its filter, its rate and its queue. The
// sidecar publishes from src/sidecar/observe.ts only while `active` (nobody listening: one field
// read per request, no record built); the admin server streams a listener's records as
// server-sent events (src/admin/observability.ts).
//
// Bounded: at most `maxListeners` at once; a listener takes at most `ratePerSecond` records a
// second (the rest are `sampledOut`: the tap is a sample under load) and queues at most
// `maxQueued` while its reader is slow (the rest are `dropped`, counted and reported to it), each
// record with at most TAP_MAX_PATH characters of its path. The rate's one-second windows are on the
// monotonic clock: a wall clock stepped back would shut the tap for the step's length.

import { monotonicMs } from "../mux/clock.ts"

export interface TapRecord {
  /** Milliseconds since the epoch, when the request ended. */
  readonly time: number
  /** inbound: served by this sidecar's app; outbound: called by it. */
  readonly direction: "inbound" | "outbound"
  /** The service called. */
  readonly service: string
  /** Outbound: the calling service (this sidecar's); inbound: "-" (not carried). */
  readonly caller: string
  readonly method: string
  readonly path: string
  readonly status: number
  readonly latencyMs: number
  /** Outbound: the peer tried last; inbound: the local app. */
  readonly endpoint: string
  readonly traceId: string | null
  /** The hop and reason of x-iip-mesh-error; null when it did not fail in the mesh. */
  readonly errorHop: string | null
  readonly errorReason: string | null
}

export interface TapFilter {
  readonly service?: string
  readonly pathPrefix?: string
  /** 2 for 2xx ... 5 for 5xx. */
  readonly statusClass?: number
  readonly direction?: "inbound" | "outbound"
}

export interface TapLimits {
  readonly maxListeners: number
  readonly ratePerSecond: number
  readonly maxQueued: number
}

/** Characters of a request's path a record keeps. */
export const TAP_MAX_PATH = 1024

/**
 * A path of at most TAP_MAX_PATH characters, the rest counted. The kept part is copied: a slice
 * of a string keeps the whole string alive in V8, and a queue of 16 KiB paths cut to 1 KiB held
 * 16 MB as before.
 */
const keptPath = (path: string): string =>
  path.length <= TAP_MAX_PATH ? path : `${Buffer.from(path.slice(0, TAP_MAX_PATH)).toString()}...(${path.length - TAP_MAX_PATH} more)`

export const defaultTapLimits: TapLimits = { maxListeners: 16, ratePerSecond: 100, maxQueued: 1000 }

export const matchesTap = (filter: TapFilter, record: TapRecord): boolean =>
  (filter.service === undefined || filter.service === record.service) &&
  (filter.pathPrefix === undefined || record.path.startsWith(filter.pathPrefix)) &&
  (filter.statusClass === undefined || Math.floor(record.status / 100) === filter.statusClass) &&
  (filter.direction === undefined || filter.direction === record.direction)

/** One listener: its records wait in `queue` until its reader takes them (`take`). */
export class TapListener {
  readonly filter: TapFilter
  private readonly limits: TapLimits
  private readonly queue: Array<TapRecord> = []
  /** monotonicMs() */
  private windowStartMs = 0
  private inWindow = 0
  dropped = 0
  sampledOut = 0
  /** Called when a record is queued on an empty queue: the reader may take. */
  onRecord: (() => void) | undefined = undefined

  constructor(filter: TapFilter, limits: TapLimits) {
    this.filter = filter
    this.limits = limits
  }

  offer(record: TapRecord): void {
    if (!matchesTap(this.filter, record)) return
    const nowMs = monotonicMs()
    if (nowMs - this.windowStartMs >= 1000) {
      this.windowStartMs = nowMs
      this.inWindow = 0
    }
    if (this.inWindow >= this.limits.ratePerSecond) {
      this.sampledOut++
      return
    }
    this.inWindow++
    if (this.queue.length >= this.limits.maxQueued) {
      this.dropped++
      return
    }
    this.queue.push(record)
    if (this.queue.length === 1) this.onRecord?.()
  }

  /** Every queued record, oldest first; the queue is empty after. */
  take(): Array<TapRecord> {
    return this.queue.splice(0, this.queue.length)
  }

  get queued(): number {
    return this.queue.length
  }
}

export class Tap {
  private readonly listeners = new Set<TapListener>()
  private readonly limits: TapLimits
  /** Someone listens: the sidecar builds records only then. */
  active = false

  constructor(limits: Partial<TapLimits> = {}) {
    this.limits = { ...defaultTapLimits, ...limits }
  }

  /** A new listener; undefined when `maxListeners` already listen. */
  listen(filter: TapFilter): TapListener | undefined {
    if (this.listeners.size >= this.limits.maxListeners) return undefined
    const listener = new TapListener(filter, this.limits)
    this.listeners.add(listener)
    this.active = true
    return listener
  }

  close(listener: TapListener): void {
    this.listeners.delete(listener)
    this.active = this.listeners.size > 0
  }

  publish(record: TapRecord): void {
    const kept = record.path.length <= TAP_MAX_PATH ? record : { ...record, path: keptPath(record.path) }
    for (const listener of this.listeners) listener.offer(kept)
  }

  get listening(): number {
    return this.listeners.size
  }
}
