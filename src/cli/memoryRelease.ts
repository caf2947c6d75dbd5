// Gives a sidecar's memory back after a burst (`--idle-gc`, started by `iip-mesh sidecar`). V8
// keeps the heap pages a burst needed: freed pages stay in its page pool, committed, and its own
// memory reducer waits for a low allocation rate that it only measures at collections, which an
// idle process no longer has, so the resident size never comes down (measured: 170-180 MB held
// for minutes after `wrk -c64` through a sidecar whose live heap is back to 20 MB). From a request
// on, once a second the process's CPU time, its requests and its resident size are sampled; quiet for `quietMs` (no
// request started or finished, and under 5 % of a core) with the resident size a tenth above where
// it settled last, one full collection of the kind V8 runs before giving up on memory ("last
// resort") empties the pool. The resident size alone misses bursts after the first: a release leaves
// it at a floor that includes the node binary's pages the first burst mapped for good (about 6 MB of
// TurboFan's code), so a later burst's garbage, 7 MB in the sidecar bench, stayed under a tenth
// above that floor and was never given back (issue 14); so growth of the anonymous memory alone
// (/proc/self/status's RssAnon) by more than a young generation holds is due as well, but with a
// backoff: the next burst takes that memory again, so bursts a few seconds apart each got their
// release (1,500 requests every 6 s: 11-22 releases in 200 s against 2-4 on the RSS test alone),
// each a pause (which once threw away the request path's optimized code too: no longer, see
// mux/shapeAnchor.ts); so each such release within 30 s of
// the last release doubles the quiet the next one waits for (2, then 4, 8, 16 s), which the next
// burst usually breaks, and the backoff ends once the process slept 30 s without a request. Its pause
// (30-230 ms measured) stops every request then in the process, so it runs only when there is
// none: CPU alone does not say so, since a light steady load (hundreds of requests a second) stays
// under 5 % of a core; a release taken under such a load was
// the slowest request of the sidecar bench (80-96 ms, issue 14). A settled process is never
// collected again until it grows again. The same collection runs once at start, for the
// start-up's own garbage. Each release first lets go of the free read slabs the process pooled
// (src/mux/readSlabs.ts: up to 8 MiB after a burst over many connections, which a
// process with nothing to read would hold for good) and closes the idle keep-alive sockets to the
// app but the most recently used one (AppPool.closeIdle: a burst's sockets would otherwise wait
// out the app's keep-alive timeout, a minute behind a node app), so that the same collection and
// trim take what they held. Once quiet for `quietMs` (released or not), the checks stop until the
// next request: an idle sidecar has no timer of its own, since a check a second ran node's timer
// and process internals often enough for TurboFan to compile them 60-120 s after start, whose
// code pages then stayed resident (+5 MB of a 63 MB idle sidecar, issue 14).
import { readFileSync } from "node:fs"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import type { Log } from "../iip/log.ts"
import { emptyReadSlabPool } from "../mux/readSlabs.ts"
import type { MeshMetrics } from "../telemetry/metrics.ts"
import { loadMallocTrim, type MallocTrim } from "./mallocTrim.ts"

/** Below this share of one core over a check, the process counts as quiet. */
const QUIET_CPU_SHARE = 0.05
/** A release is due once the resident size is this share above where the last one left it. */
const GROWTH = 0.1
/**
 * A release is also due once the anonymous memory is this much above where the last one left it:
 * more than the young generation can hold (two semi-spaces of the shipped `--max-semi-space-size=2`),
 * whose refill the next scavenge reuses and no release should chase.
 */
const ANON_GROWTH_BYTES = 4 * 1024 * 1024
/**
 * A release for anonymous growth alone this soon after the last release gives back memory that the
 * traffic takes again: it waits for a longer quiet, doubled with each such release; from this long
 * after the last release it waits the quiet time (so never longer than this), and this long asleep
 * without a request ends the backoff.
 */
const CHURN_MS = 30_000
const CHECK_MS = 1000

/** One check: CPU time used and requests started or finished since the last one, the resident size and its anonymous part now (undefined: unknown), the time since the last one. */
export interface MemorySample {
  readonly cpuMicros: number
  readonly requests: number
  readonly rssBytes: number
  readonly anonBytes: number | undefined
  readonly elapsedMs: number
}

/** When to release, from the samples alone (no timers, no process: unit-tested). */
export class ReleaseDecider {
  private readonly quietMs: number
  private floorBytes: number
  private floorAnonBytes: number | undefined
  private quietForMs = 0
  /** The quiet a release for anonymous growth alone needs (the quiet time, or more in a backoff). */
  private anonQuietMs: number
  /** Time since the last release (awake and asleep; the start-up's is not counted). */
  private sinceReleaseMs = Number.POSITIVE_INFINITY
  /** Anonymous growth is due once the backoff's quiet is reached: stay awake for it. */
  private waitingForAnon = false
  /** The due release is for anonymous growth alone. */
  private dueForAnon = false

  /** `floorBytes` / `floorAnonBytes`: the resident size and its anonymous part the process settled at (at start, then after each release). */
  constructor(quietMs: number, floorBytes: number, floorAnonBytes: number | undefined) {
    this.quietMs = quietMs
    this.floorBytes = floorBytes
    this.floorAnonBytes = floorAnonBytes
    this.anonQuietMs = quietMs
  }

  /** True when a release is due now. */
  observe(sample: MemorySample): boolean {
    this.sinceReleaseMs += sample.elapsedMs
    this.waitingForAnon = false
    this.dueForAnon = false
    if (sample.requests > 0 || sample.cpuMicros > sample.elapsedMs * 1000 * QUIET_CPU_SHARE) {
      this.quietForMs = 0
      return false
    }
    this.quietForMs += sample.elapsedMs
    if (this.quietForMs < this.quietMs) return false
    if (sample.rssBytes > this.floorBytes * (1 + GROWTH)) return true
    if (sample.anonBytes === undefined || this.floorAnonBytes === undefined || sample.anonBytes <= this.floorAnonBytes + ANON_GROWTH_BYTES) return false
    const needMs = this.sinceReleaseMs >= CHURN_MS ? this.quietMs : this.anonQuietMs
    this.dueForAnon = this.quietForMs >= needMs
    this.waitingForAnon = !this.dueForAnon
    return this.dueForAnon
  }

  /** Quiet for the quiet time with no release to wait for: nothing more to decide until the next request (after observe said no). */
  get settled(): boolean {
    return this.quietForMs >= this.quietMs && !this.waitingForAnon
  }

  /** A request came after the checks stopped, `sleptMs` after the last check: the quiet time starts again (and a sleep of CHURN_MS ends a backoff). */
  woke(sleptMs: number): void {
    this.quietForMs = 0
    this.sinceReleaseMs += sleptMs
    if (sleptMs >= CHURN_MS) this.anonQuietMs = this.quietMs
  }

  /** The release ran and left the process at `rssBytes`, `anonBytes` of it anonymous: the next one waits for growth above them. */
  released(rssBytes: number, anonBytes: number | undefined): void {
    this.floorBytes = rssBytes
    this.floorAnonBytes = anonBytes
    if (this.dueForAnon && this.sinceReleaseMs < CHURN_MS) this.anonQuietMs = 2 * this.anonQuietMs
    this.sinceReleaseMs = 0
  }
}

type FullGc = (options: { readonly type: "major"; readonly execution: "sync"; readonly flavor: "last-resort" }) => void

/** One full collection that leaves nothing pooled. */
export type Collect = () => void

/**
 * V8's gc() without `--expose-gc` on the command line: a context created while the flag is set gets
 * the function (the flag is cleared again, so no later context has it). Only the releases call it,
 * as a collection of the kind V8 runs before giving up on memory ("last resort"), which empties the
 * page pool.
 */
const lastResortGc = (): Collect => {
  setFlagsFromString("--expose-gc")
  const gc = runInNewContext("gc") as FullGc
  setFlagsFromString("--no-expose-gc")
  return () => gc({ type: "major", execution: "sync", flavor: "last-resort" })
}

/** Requests started plus requests finished so far (any count that moves whenever one starts or ends). */
export type RequestActivity = () => number

/** Calls `wake` once, at the next request started (MeshMetrics.onNextRequest). */
export type NextRequest = (wake: () => void) => void

/** Closes the sidecar's surplus idle sockets to its app; how many it closed (Sidecar.closeIdleAppSockets). */
export type CloseIdleSockets = () => number

/** A sidecar's RequestActivity from its metrics, both directions: a started request is finished or in flight. */
export const requestActivity = (metrics: MeshMetrics): RequestActivity => () => {
  const summary = metrics.summary()
  let total = 0
  for (const series of summary.outbound) total += 2 * series.requests + series.inFlight
  for (const series of summary.inbound) total += 2 * series.requests + series.inFlight
  return total
}

const RSS_ANON = /^RssAnon:\s+(\d+) kB$/m

/** The process's anonymous resident memory (heaps, not the files it maps), from /proc; undefined where there is none (not Linux). */
export const anonResidentBytes = (): number | undefined => {
  try {
    const kb = RSS_ANON.exec(readFileSync("/proc/self/status", "latin1"))?.[1]
    return kb === undefined ? undefined : Number(kb) * 1024
  } catch {
    return undefined
  }
}

const mb = (bytes: number): number => Math.round((bytes / 1048576) * 10) / 10

/**
 * Collects once at once, then starts the checks; the returned function stops them. The first
 * collection is the start-up's: loading the modules and building the configuration leave garbage
 * that a process with nothing to do never collects (measured: an idle sidecar held 87 MB for
 * minutes, 81-82 MB after one collection, which takes about 30 ms). `iip-mesh sidecar` calls this
 * before it says it is ready, so nothing is being served yet. Each collection is followed by
 * glibc's malloc_trim where the native piece is there (mallocTrim.ts): logged once here as
 * `memory-trim`, active with what the start-up's trim gave back, or not with the reason.
 */
export const startMemoryRelease = (quietMs: number, log: Log, activity: RequestActivity, nextRequest: NextRequest, closeIdleSockets: CloseIdleSockets, collect: Collect = lastResortGc(), malloc: MallocTrim = loadMallocTrim()): (() => void) => {
  const trim = "trim" in malloc ? malloc.trim : undefined
  /** The free read slabs let go of by the last release, in bytes. */
  let pooledBytes = 0
  /** The idle app sockets the last release closed. */
  let socketsClosed = 0
  /** The pooled read slabs let go of, the surplus idle app sockets closed, one collection and its trim; the RSS the trim gave back, in bytes (0 without one). */
  const release = (): number => {
    pooledBytes = emptyReadSlabPool()
    socketsClosed = closeIdleSockets()
    collect()
    if (trim === undefined) return 0
    const collected = process.memoryUsage.rss()
    trim()
    return Math.max(0, collected - process.memoryUsage.rss())
  }
  const startTrimmed = release()
  log("memory-trim", "trim" in malloc ? { active: true, trimmedMb: mb(startTrimmed) } : { active: false, reason: malloc.unavailable })
  const decider = new ReleaseDecider(quietMs, process.memoryUsage.rss(), anonResidentBytes())
  let cpu = process.cpuUsage()
  let requests = activity()
  let at = performance.now()
  let timer: ReturnType<typeof setInterval> | undefined
  let stopped = false
  const check = () => {
    const now = performance.now()
    const used = process.cpuUsage(cpu)
    cpu = process.cpuUsage()
    const requestsNow = activity()
    const served = requestsNow - requests
    requests = requestsNow
    const rssBytes = process.memoryUsage.rss()
    const anonBytes = anonResidentBytes()
    const due = decider.observe({ cpuMicros: used.user + used.system, requests: served, rssBytes, anonBytes, elapsedMs: now - at })
    at = now
    if (!due) {
      if (decider.settled) sleep()
      return
    }
    const started = performance.now()
    const trimmed = release()
    const after = process.memoryUsage.rss()
    decider.released(after, anonResidentBytes())
    log("memory-released", { rssBeforeMb: Math.round(rssBytes / 1048576), rssAfterMb: Math.round(after / 1048576), pauseMs: Math.round(performance.now() - started), readSlabsMb: mb(pooledBytes), appSocketsClosed: socketsClosed, ...(trim === undefined ? {} : { trimmedMb: mb(trimmed) }) })
    sleep()
  }
  /** No check until the next request. */
  const sleep = () => {
    clearInterval(timer)
    timer = undefined
    nextRequest(wake)
  }
  const wake = () => {
    if (stopped) return
    const now = performance.now()
    decider.woke(now - at)
    cpu = process.cpuUsage()
    requests = activity()
    at = now
    timer = setInterval(check, CHECK_MS)
    timer.unref()
  }
  nextRequest(wake)
  return () => {
    stopped = true
    clearInterval(timer)
  }
}
