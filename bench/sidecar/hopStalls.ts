// The sidecars' event-loop stalls (stallProbe.mjs, read by sidecars.ts) that fell in a path's
// measuring slices of the open loop: the slices of other paths are left out, since a pair waiting
// for its turn delays no request of its own. Counted per hop and round by bench/sidecar.ts, printed
// beside the round's slowest request and in the report, so a p99 or a max can be read as "hop B
// stopped for 84 ms, all of it a full GC" rather than guessed.
import type { HopStall } from "./pair.ts"

/**
 * Stalls over 10 ms of one hop in one round's slices: how many, the longest, all together, the main
 * thread's CPU over them (near totalMs: work on the loop; far below: waiting for a core), and GC.
 */
export interface StallCount {
  readonly count: number
  readonly longestMs: number
  /** The longest stall's own CPU and GC, ms. */
  readonly longestCpuMs: number
  readonly longestGcMs: number
  readonly totalMs: number
  readonly cpuMs: number
  readonly gcMs: number
  readonly majorGcMs: number
}

export const NO_STALLS: StallCount = { count: 0, longestMs: 0, longestCpuMs: 0, longestGcMs: 0, totalMs: 0, cpuMs: 0, gcMs: 0, majorGcMs: 0 }

/** A slice of a path's window: epoch ms, as the probe's `endMs`. */
export type Window = readonly [start: number, end: number]

/** The stalls that overlap any of `windows` (a stall ends at `endMs` and began `ms` before). */
export const countStalls = (stalls: ReadonlyArray<HopStall>, windows: ReadonlyArray<Window>): StallCount => {
  let count = 0
  let longest: HopStall | undefined
  let totalMs = 0
  let cpuMs = 0
  let gcMs = 0
  let majorGcMs = 0
  for (const stall of stalls) {
    const start = stall.endMs - stall.ms
    if (!windows.some(([from, to]) => stall.endMs > from && start < to)) continue
    count++
    if (longest === undefined || stall.ms > longest.ms) longest = stall
    totalMs += stall.ms
    cpuMs += stall.cpuMs
    gcMs += stall.gcMs
    majorGcMs += stall.majorGcMs
  }
  return { count, longestMs: longest?.ms ?? 0, longestCpuMs: longest?.cpuMs ?? 0, longestGcMs: longest?.gcMs ?? 0, totalMs, cpuMs, gcMs, majorGcMs }
}

export const addStalls = (x: StallCount, y: StallCount): StallCount => ({
  count: x.count + y.count,
  ...(y.longestMs > x.longestMs
    ? { longestMs: y.longestMs, longestCpuMs: y.longestCpuMs, longestGcMs: y.longestGcMs }
    : { longestMs: x.longestMs, longestCpuMs: x.longestCpuMs, longestGcMs: x.longestGcMs }),
  totalMs: x.totalMs + y.totalMs,
  cpuMs: x.cpuMs + y.cpuMs,
  gcMs: x.gcMs + y.gcMs,
  majorGcMs: x.majorGcMs + y.majorGcMs
})

/** "3 stalls > 10 ms, longest 84.2 ms (on CPU 83, GC 80), 120 ms in all (on CPU 119, GC 118, full GC 110)", or "no stall > 10 ms". */
export const describeStalls = (s: StallCount): string =>
  s.count === 0
    ? "no stall > 10 ms"
    : `${s.count} stall${s.count === 1 ? "" : "s"} > 10 ms, longest ${s.longestMs.toFixed(1)} ms (on CPU ${s.longestCpuMs.toFixed(0)}, GC ${s.longestGcMs.toFixed(0)}), ${s.totalMs.toFixed(0)} ms in all (on CPU ${s.cpuMs.toFixed(0)}, GC ${s.gcMs.toFixed(0)}, full GC ${s.majorGcMs.toFixed(0)})`
