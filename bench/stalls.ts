// `bench -- stream --mixed`: what stops a process's event loop while a phase runs. A small call
// beside a bulk upload waits for the server to read through the stream bytes ahead of it (at most
// one stream window) and for every stall of either event loop on its way: a garbage collection, or
// the process off its core. The bench's client and its iip server child each keep one meter; the
// bench reads both at the end of each phase and prints them beside the calls' latencies, so a p99
// can be told apart as queueing or as stalls.
import { constants, monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks"

export interface Stalls {
  /** Lateness of a 5 ms timer: p99 and the worst, ms. */
  readonly loopP99Ms: number
  readonly loopMaxMs: number
  /** Full (mark-compact) collections: how many, the longest pause and all pauses together, ms. */
  readonly majorGcs: number
  readonly majorGcMaxMs: number
  readonly majorGcMs: number
  /** Every other collection (scavenges, incremental marking steps, weak callbacks): how many, all pauses together, ms. */
  readonly otherGcs: number
  readonly otherGcMs: number
  /** CPU time (user + system) the process used, ms. */
  readonly cpuMs: number
}

/** Counts this process's event-loop lateness and GC pauses from `start` (or the last `take`). */
export class StallMeter {
  private readonly delay = monitorEventLoopDelay({ resolution: 5 })
  private majorGcs = 0
  private majorGcMaxMs = 0
  private majorGcMs = 0
  private otherGcs = 0
  private otherGcMs = 0
  private cpu = process.cpuUsage()
  private readonly observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if ((entry as { readonly detail?: { readonly kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
        this.majorGcs++
        this.majorGcMs += entry.duration
        this.majorGcMaxMs = Math.max(this.majorGcMaxMs, entry.duration)
      } else {
        this.otherGcs++
        this.otherGcMs += entry.duration
      }
    }
  })

  start(): this {
    this.cpu = process.cpuUsage()
    this.delay.enable()
    this.observer.observe({ entryTypes: ["gc"] })
    return this
  }

  stop(): void {
    this.delay.disable()
    this.observer.disconnect()
  }

  /** What was counted since the last call, and a fresh count from now. */
  take(): Stalls {
    const ms = (ns: number) => Number((ns / 1e6).toFixed(2))
    const round = (value: number) => Number(value.toFixed(2))
    const used = process.cpuUsage(this.cpu)
    const cpuMs = (used.user + used.system) / 1000
    this.cpu = process.cpuUsage()
    const taken: Stalls = {
      loopP99Ms: this.delay.count === 0 ? 0 : ms(this.delay.percentile(99)),
      loopMaxMs: this.delay.count === 0 ? 0 : ms(this.delay.max),
      majorGcs: this.majorGcs,
      majorGcMaxMs: round(this.majorGcMaxMs),
      majorGcMs: round(this.majorGcMs),
      otherGcs: this.otherGcs,
      otherGcMs: round(this.otherGcMs),
      cpuMs: round(cpuMs)
    }
    this.delay.reset()
    this.majorGcs = this.majorGcMaxMs = this.majorGcMs = this.otherGcs = this.otherGcMs = 0
    return taken
  }
}

export const stallsHeader = "process  phase    loop p99 ms  loop max ms  major GCs  longest ms  major ms  other GCs  other ms"

export const stallsRow = (process: string, phase: string, s: Stalls): string =>
  `${process.padEnd(8)} ${phase.padEnd(8)} ${s.loopP99Ms.toFixed(2).padStart(11)} ${s.loopMaxMs.toFixed(2).padStart(12)} ${String(s.majorGcs).padStart(10)} ${s.majorGcMaxMs.toFixed(2).padStart(11)} ${s.majorGcMs.toFixed(1).padStart(9)} ${String(s.otherGcs).padStart(10)} ${s.otherGcMs.toFixed(1).padStart(9)}`
