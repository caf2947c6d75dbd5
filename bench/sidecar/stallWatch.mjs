// The stall probe's watch (stallProbe.mjs loads it into the bench's sidecars and servers; the gRPC
// bench's load generator calls it in its own process): each stall of this process's event loop
// longer than STALL_MS, with what it was. A 5 ms timer's lateness is the stall; the GC pauses that
// overlap it (from the gc performance entries, which arrive a turn after the collection) say how
// much of it was collection; the main thread's CPU time over it tells work on the loop (cpuMs close
// to ms) from the process waiting for a core on a loaded machine (cpuMs far below). Plain
// JavaScript, no imports from src/: a .ts file would load Node's TypeScript stripper into every
// sidecar, 14 MB of RSS the memory figures would count.
import { constants, performance, PerformanceObserver } from "node:perf_hooks"

/** A stall is reported when the timer runs this much later than due (by default). */
const STALL_MS = 10
const TICK_MS = 5
/** GC pauses remembered to match stalls against (a stall is matched two ticks after it ends). */
const GC_KEPT = 64

/**
 * Calls `report` with each stall over `stallMs` (at least 2 ms above the 5 ms tick), two ticks after it ended: { endMs, ms, cpuMs, gcMs, majorGcMs }.
 * endMs: when the loop ran again (epoch ms, performance.timeOrigin + now); ms: how late the timer
 * was; cpuMs: the main thread's CPU time (process.threadCpuUsage) from the tick before to this one.
 * The timer does not keep the process alive.
 * @param {(stall: { endMs: number, ms: number, cpuMs: number, gcMs: number, majorGcMs: number }) => void} report
 * @param {number} stallMs
 */
export const watchStalls = (report, stallMs = STALL_MS) => {
  const threshold = Math.max(2, stallMs)
  /** @type {Array<{ start: number, end: number, major: boolean }>} GC pauses, from the gc performance entries. */
  const pauses = []
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = entry.detail?.kind
      pauses.push({ start: entry.startTime, end: entry.startTime + entry.duration, major: kind === constants.NODE_PERFORMANCE_GC_MAJOR })
    }
    if (pauses.length > GC_KEPT) pauses.splice(0, pauses.length - GC_KEPT)
  }).observe({ entryTypes: ["gc"] })

  const overlap = (pause, start, end) => Math.max(0, Math.min(pause.end, end) - Math.max(pause.start, start))
  const round = (ms) => Math.round(ms * 10) / 10

  /** Stalls seen, waiting a tick for their GC entries: { start, end, cpuMs, ticks }. */
  let waiting = []
  let due = performance.now() + TICK_MS
  let cpu = process.threadCpuUsage()

  setInterval(() => {
    const now = performance.now()
    const late = now - due
    due = now + TICK_MS
    const used = process.threadCpuUsage(cpu)
    cpu = process.threadCpuUsage()
    if (late > threshold) waiting.push({ start: now - late, end: now, cpuMs: (used.user + used.system) / 1000, ticks: 0 })
    if (waiting.length === 0) return
    const still = []
    for (const stall of waiting) {
      if (stall.ticks < 2) {
        still.push({ ...stall, ticks: stall.ticks + 1 })
        continue
      }
      let gcMs = 0
      let majorGcMs = 0
      for (const pause of pauses) {
        const ms = overlap(pause, stall.start - TICK_MS, stall.end)
        gcMs += ms
        if (pause.major) majorGcMs += ms
      }
      report({ endMs: round(performance.timeOrigin + stall.end), ms: round(stall.end - stall.start), cpuMs: round(stall.cpuMs), gcMs: round(gcMs), majorGcMs: round(majorGcMs) })
    }
    waiting = still
  }, TICK_MS).unref()
}
