// How long this test process waited for a core (test support): a 2 ms timer's lateness beyond what
// the main thread ran in the meantime. A bound on how fast something happens inside the process
// ("the far handler sees the cancel within 100 ms") measures the code under test only if the
// process runs: on a loaded machine (the whole suite on two cores) the scheduler can leave it off
// its core for a hundred milliseconds. Time the thread worked (the code under test, GC) still
// counts; time it was idle on time (waiting for I/O or a timer of the code) still counts; only
// time it was runnable but not run is left out.
import { performance } from "node:perf_hooks"

const TICK_MS = 2
/** A tick this much later than the thread's CPU explains is the process off its core; less is the timer's own jitter (a millisecond or so), not counted. */
const OFF_CORE_MIN_MS = 2

export class OffCore {
  /** Each late tick: from when to when (performance.now() ms) and how much of it the thread was off its core. */
  private readonly late: Array<{ readonly from: number; readonly to: number; readonly offMs: number }> = []
  private last = performance.now()
  private cpu = process.threadCpuUsage()
  private readonly timer: NodeJS.Timeout

  constructor() {
    this.timer = setInterval(() => {
      const now = performance.now()
      const used = process.threadCpuUsage(this.cpu)
      this.cpu = process.threadCpuUsage()
      const offMs = now - this.last - TICK_MS - (used.user + used.system) / 1000
      if (offMs > OFF_CORE_MIN_MS) this.late.push({ from: this.last, to: now, offMs })
      this.last = now
      // A test runs for seconds: a few thousand entries at most.
      if (this.late.length > 10_000) this.late.splice(0, 5000)
    }, TICK_MS)
  }

  /** Off-core ms between `from` and `to` (performance.now() times), each late tick's share pro rata. */
  between(from: number, to: number): number {
    let ms = 0
    for (const tick of this.late) {
      const overlap = Math.min(tick.to, to) - Math.max(tick.from, from)
      if (overlap > 0) ms += (tick.offMs * overlap) / (tick.to - tick.from)
    }
    return ms
  }

  /** The time from `from` to `to` the process was running or waiting for the code under test, ms. */
  onCore(from: number, to: number): number {
    return to - from - this.between(from, to)
  }

  stop(): void {
    clearInterval(this.timer)
  }
}

/**
 * The main thread's CPU time running `run` (synchronous work), ms: a bound on what the work costs
 * that leaves out the time the process waited for a core, which a wall clock counts (and the
 * process's CPU too much: V8's helper threads add theirs under load).
 */
export const threadCpuMs = <T>(run: () => T): { readonly value: T; readonly ms: number } => {
  const started = process.threadCpuUsage()
  const value = run()
  const used = process.threadCpuUsage(started)
  return { value, ms: (used.user + used.system) / 1000 }
}
