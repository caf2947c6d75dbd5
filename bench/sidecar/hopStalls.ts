// The sidecars' event-loop stalls (stallProbe.mjs, read by sidecars.ts) that fell in a path's
// measuring slices of the open loop: the slices of other paths are left out, since a pair waiting
// for its turn delays no request of its own. Counted per hop and round by bench/sidecar.ts, printed
// beside the round's slowest request and in the report, so a p99 or a max can be read as "hop B
// stopped for 84 ms, all of it a full GC" rather than guessed.
import { fileURLToPath } from "node:url"
import type { CallTimes } from "./nodeLoad.ts"
import type { HopStall } from "./pair.ts"

/** Node's flag that loads the probe into a process the bench starts: its event-loop stalls over 10 ms, one JSON line each on stdout. */
export const STALL_PROBE = `--import=${fileURLToPath(new URL("stallProbe.mjs", import.meta.url))}`

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

/** A probe's line (stallProbe.mjs), parsed: the stall it reports, or undefined for any other line. */
export const stallOfLine = (parsed: unknown): HopStall | undefined => {
  if (typeof parsed !== "object" || parsed === null || (parsed as { event?: unknown }).event !== "bench-stall") return undefined
  const p = parsed as Record<"endMs" | "ms" | "cpuMs" | "gcMs" | "majorGcMs", unknown>
  return { endMs: Number(p.endMs), ms: Number(p.ms), cpuMs: Number(p.cpuMs), gcMs: Number(p.gcMs), majorGcMs: Number(p.majorGcMs) }
}

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
export const describeStalls = (s: StallCount, overMs = 10): string =>
  s.count === 0
    ? `no stall > ${overMs} ms`
    : `${s.count} stall${s.count === 1 ? "" : "s"} > ${overMs} ms, longest ${s.longestMs.toFixed(1)} ms (on CPU ${s.longestCpuMs.toFixed(0)}, GC ${s.longestGcMs.toFixed(0)}), ${s.totalMs.toFixed(0)} ms in all (on CPU ${s.cpuMs.toFixed(0)}, GC ${s.gcMs.toFixed(0)}, full GC ${s.majorGcMs.toFixed(0)})`

/** One measured request: when it was due (epoch ms) and its latency, ms. */
export interface SlowRequest {
  readonly dueMs: number
  readonly ms: number
}

const stallsMet = (request: SlowRequest, stalls: ReadonlyArray<HopStall>): ReadonlyArray<HopStall> =>
  stalls.filter((stall) => stall.endMs > request.dueMs && stall.endMs - stall.ms < request.dueMs + request.ms)

/**
 * The `count` slowest requests of apart episodes, slowest first: a request whose time overlaps a
 * slower one's is left out (one stall delays every request due during it; the next slowest
 * episode says more than its neighbours).
 */
export const slowestEpisodes = (calls: CallTimes, count: number): ReadonlyArray<SlowRequest> => {
  const order = Array.from(calls.ms.keys()).sort((x, y) => calls.ms[y]! - calls.ms[x]!)
  const kept: Array<SlowRequest> = []
  for (const i of order) {
    if (kept.length === count) break
    const request = { dueMs: calls.dueMs[i]!, ms: calls.ms[i]! }
    if (!kept.some((k) => request.dueMs < k.dueMs + k.ms && k.dueMs < request.dueMs + request.ms)) kept.push(request)
  }
  return kept
}

/**
 * What the slowest requests met, per process: of the requests at `fromMs` or slower (the p99 and
 * above, say), the share whose time overlaps a stall of each process, and the share that met none:
 * "31 calls >= 12.1 ms met a stall of: client 40 %, A 20 %, B 30 %, app 10 %; of none 25 %".
 */
export const describeTail = (calls: CallTimes, fromMs: number, processes: ReadonlyArray<readonly [string, ReadonlyArray<HopStall>]>): string => {
  const tail: Array<SlowRequest> = []
  for (let i = 0; i < calls.ms.length; i++) if (calls.ms[i]! >= fromMs) tail.push({ dueMs: calls.dueMs[i]!, ms: calls.ms[i]! })
  if (tail.length === 0) return "no call"
  const met = processes.map(([name, stalls]) => [name, tail.filter((request) => stallsMet(request, stalls).length > 0).length] as const)
  const none = tail.filter((request) => processes.every(([, stalls]) => stallsMet(request, stalls).length === 0)).length
  const share = (n: number) => `${Math.round((n * 100) / tail.length)} %`
  return `${tail.length} calls >= ${fromMs.toFixed(1)} ms met a stall of: ${met.map(([name, n]) => `${name} ${share(n)}`).join(", ")}; of none ${share(none)}`
}

/**
 * A slow request beside the stalls of each process on its way that overlap it (from when it was
 * due to its answer): "84.2 ms due at 4.512 s: client 1 stall, 80.1 ms (CPU 79, GC 78); B 2
 * stalls, longest 10.2 ms (CPU 1, GC 0), 19.0 ms in all", or "... no stall". `originMs`: the
 * epoch ms the due time is counted from.
 */
export const describeSlowRequest = (request: SlowRequest, processes: ReadonlyArray<readonly [string, ReadonlyArray<HopStall>]>, originMs: number): string => {
  const seen = processes.flatMap(([name, stalls]) => {
    const met = countStalls(stalls, [[request.dueMs, request.dueMs + request.ms]])
    if (met.count === 0) return []
    const longest = `${met.longestMs.toFixed(1)} ms (CPU ${met.longestCpuMs.toFixed(0)}, GC ${met.longestGcMs.toFixed(0)})`
    return [met.count === 1 ? `${name} 1 stall, ${longest}` : `${name} ${met.count} stalls, longest ${longest}, ${met.totalMs.toFixed(1)} ms in all`]
  })
  return `${request.ms.toFixed(1)} ms due at ${((request.dueMs - originMs) / 1000).toFixed(3)} s: ${seen.length === 0 ? "no stall" : seen.join("; ")}`
}
