// The stall probe's watch (stallProbe.mjs loads it into the bench's sidecars and servers; the gRPC
// bench's load generator calls it in its own process): each stall of this process's event loop
// longer than STALL_MS, with what it was. The GC pauses that overlap it (from the gc performance
// entries, which arrive a turn after the collection) say how much of it was collection; the main
// thread's CPU time over it tells work on the loop (cpuMs close to ms) from the process waiting for
// a core on a loaded machine (cpuMs far below). Plain JavaScript, no imports from src/: a .ts file
// would load Node's TypeScript stripper into every sidecar, 14 MB of RSS the memory figures would
// count.
//
// Cold while the process is quiet: the stalls are seen by perf_hooks' event-loop delay histograms,
// a 5 ms timer of libuv's run in C++ (no JavaScript per tick), and JavaScript reads them every
// 250 ms. Until 2026-12 a JavaScript timer ran every 5 ms: within a second V8 compiled node's timer
// internals it runs through (hasHooks, emitBeforeScript...) with TurboFan, which pages about 6 MB
// of the node binary's compiler into every idle sidecar (68.0-70.8 MB in every one of 30 starts;
// 62.7-64.4 without a probe, or with this one, in the starts whose own start-up compiled nothing
// with TurboFan). A read places a stall at its own time, up to 250 ms after the stall ended; so
// while the process serves (over BUSY_EVENTS of libuv's I/O events in a quiet read's window, and
// for QUIET_AFTER_MS after) a second timer runs every 5 ms and places each stall within 5 ms: that
// is when the bench lines stalls up with its paths' slices and slowest requests, and when the
// process compiles its own hot code anyway. That timer measures its own lateness and the histograms
// sleep meanwhile (reading them every 5 ms meant resetting one each time; see readTick). Busy by I/O events, not by the loop's utilisation: a
// sidecar's start keeps the loop busy for seconds, and 5 ms reads then warmed the same internals.
// Nothing is watched during the start-up itself (STARTED_BELOW): the bench measures nothing then.
import { constants, monitorEventLoopDelay, performance, PerformanceObserver } from "node:perf_hooks"

/** A stall is reported when the loop was held this much longer than the tick (by default). */
const STALL_MS = 10
/** The histogram's timer, and the reads' period while busy. */
const TICK_MS = 5
/** The reads' period while quiet. */
const QUIET_READ_MS = 250
/** More I/O events than this (libuv's count: sockets readable, connections...) over a quiet read's window and the reads go to every TICK_MS. */
const BUSY_EVENTS = 100
/** Quiet again after this long without. */
const QUIET_AFTER_MS = 2000
/** Nothing is watched until a quiet read's window finds the loop busy less than this share of the time (the process has started), or for at most STARTING_MS. */
const STARTED_BELOW = 0.5
const STARTING_MS = 3000
/** GC pauses remembered to match stalls against. */
const GC_KEPT = 64

/**
 * Calls `report` with each stall over `stallMs` (at least 2 ms), once its GC entries are in: { endMs, ms, cpuMs, gcMs, majorGcMs }.
 * endMs: the read that saw it (epoch ms, performance.timeOrigin + now; the stall ended at most one
 * read's period before, 5 ms while busy, 250 ms while quiet); ms: how long the loop was held over
 * the 5 ms tick; cpuMs: the main thread's CPU time (process.threadCpuUsage) from the read before to
 * this one (from the one before that if the stall began earlier); gcMs / majorGcMs: the GC pauses from the read before (or the stall's start, if earlier)
 * to this one, at most ms. Of two stalls in consecutive reads' windows the second is missed if it
 * began within 5 ms after the read between them and is shorter than the first. The timers do not
 * keep the process alive.
 * @param {(stall: { endMs: number, ms: number, cpuMs: number, gcMs: number, majorGcMs: number }) => void} report
 * @param {number} stallMs
 */
export const watchStalls = (report, stallMs = STALL_MS) => {
  const threshold = Math.max(2, stallMs)
  /** @type {Array<{ start: number, end: number, major: boolean }>} GC pauses, from the gc performance entries. */
  const pauses = []
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = entry.detail?.kind
      pauses.push({ start: entry.startTime, end: entry.startTime + entry.duration, major: kind === constants.NODE_PERFORMANCE_GC_MAJOR })
    }
    if (pauses.length > GC_KEPT) pauses.splice(0, pauses.length - GC_KEPT)
  })

  // Two histograms, reset in turn: a reset forgets the tick before it, so the interval that spans a
  // read is recorded only by the other one (the older, reset a read earlier); its max counts when
  // it grew since the last read, that is, past everything it had seen before this read's window.
  let older = monitorEventLoopDelay({ resolution: TICK_MS })
  let recent = monitorEventLoopDelay({ resolution: TICK_MS })
  let olderSeen = 0

  // Read once: each property read is a call into node's internals, which a read every 250 ms would warm.
  const timing = performance.nodeTiming
  const timeOrigin = performance.timeOrigin
  const loopEvents = () => timing.uvMetricsInfo.events
  const overlap = (pause, from, to) => Math.max(0, Math.min(pause.end, to) - Math.max(pause.start, from))
  const round = (ms) => Math.round(ms * 10) / 10

  /** Stalls seen, waiting for their GC entries: { from (the read before, or the stall's start if earlier), end (this read), ms, cpuMs }. */
  let waiting = []
  let last = performance.now()
  let cpu = process.threadCpuUsage()
  let lastCpuMs = 0

  const settle = (now) => {
    const still = []
    for (const stall of waiting) {
      // The gc entries come a turn after the collection: two ticks on.
      if (now - stall.end < 2 * TICK_MS) {
        still.push(stall)
        continue
      }
      let gcMs = 0
      let majorGcMs = 0
      for (const pause of pauses) {
        const ms = overlap(pause, stall.from, stall.end)
        gcMs += ms
        if (pause.major) majorGcMs += ms
      }
      report({ endMs: round(timeOrigin + stall.end), ms: round(stall.ms), cpuMs: round(stall.cpuMs), gcMs: round(Math.min(gcMs, stall.ms)), majorGcMs: round(Math.min(majorGcMs, stall.ms)) })
    }
    waiting = still
  }

  /** A read saw the loop `held` ms over its tick, now: one getrusage(2) per read, the reading itself the next window's start. */
  const note = (now, held) => {
    // (While busy, 200 reads a second: two calls each were 0.4 system calls per request at 1,000 req/s.)
    const cpuNow = process.threadCpuUsage()
    const cpuMs = (cpuNow.user - cpu.user + cpuNow.system - cpu.system) / 1000
    cpu = cpuNow
    // A stall that began before the last read ended just before it, after the read had run but
    // before the tick had: its CPU time is in the window before.
    const began = now - held
    if (held > threshold) waiting.push({ from: Math.min(last, began) - TICK_MS, end: now, ms: held, cpuMs: began < last ? cpuMs + lastCpuMs : cpuMs })
    lastCpuMs = cpuMs
    last = now
    if (waiting.length > 0) settle(now)
  }

  /** A quiet read: the longest the histograms' timer waited since the last read, over its 5 ms. */
  const readHistograms = () => {
    const olderMax = older.max
    const recentMax = recent.max
    const held = (olderMax > olderSeen ? Math.max(olderMax, recentMax) : recentMax) / 1e6 - TICK_MS
    older.reset()
    olderSeen = recentMax
    ;[older, recent] = [recent, older]
    note(performance.now(), held)
  }

  /**
   * A busy read: how late this 5 ms timer itself ran. Not the histograms: each reset clears a
   * histogram's whole count array (node's covers 1 ns to 2^63 at 3 digits, ~440 KB), and at a
   * reset every 5 ms that memset was 2-3 % of a sidecar's CPU at 1,000 req/s (perf, 2026-12-06)
   * and swept its caches 200 times a second; they sleep while busy.
   */
  let tickAt = 0
  const readTick = () => {
    const now = performance.now()
    const held = now - tickAt - TICK_MS
    tickAt = now
    note(now, held)
  }

  /** The 5 ms reads, while the process is busy. */
  let fine
  let events = 0
  let busyAt = -Infinity
  let loop = performance.eventLoopUtilization()
  let started = false
  setInterval(() => {
    // Watching only once the process has started, so that the probe adds nothing to a start-up
    // (whose own TurboFan compiles, in some starts and not others, make a 63 or a 69 MB idle).
    if (!started) {
      const busy = performance.eventLoopUtilization(loop).utilization
      loop = performance.eventLoopUtilization()
      if (busy >= STARTED_BELOW && performance.now() - last < STARTING_MS) return
      started = true
      observer.observe({ entryTypes: ["gc"] })
      older.enable()
      recent.enable()
      last = performance.now()
      cpu = process.threadCpuUsage()
      events = loopEvents()
      return
    }
    if (fine === undefined) readHistograms()
    const now = performance.now()
    const eventsNow = loopEvents()
    if (eventsNow - events > BUSY_EVENTS) busyAt = now
    events = eventsNow
    if (now - busyAt < QUIET_AFTER_MS) {
      if (fine !== undefined) return
      older.disable()
      recent.disable()
      tickAt = now
      fine = setInterval(readTick, TICK_MS).unref()
    } else if (fine !== undefined) {
      clearInterval(fine)
      fine = undefined
      older.reset()
      recent.reset()
      olderSeen = 0
      older.enable()
      recent.enable()
    }
  }, QUIET_READ_MS).unref()
}
