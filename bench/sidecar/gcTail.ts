// The open loop's slowest requests against the sidecars' garbage collection, for pauses far shorter
// than a stall (hopStalls.ts counts those over 10 ms): at 1,000 req/s a path's added p99 is a
// millisecond or two, and a scavenge of about one stops a sidecar for as long, so whether the top 1 %
// are the requests that met one is the question issue 14's tail asks first. Each sidecar's stall
// probe (stallProbe.mjs) also reports every GC pause as a line (`bench-gc`, read by sidecars.ts);
// per round and path, bench/sidecar.ts prints what this counts over the path's own slices.
import type { CallTimes } from "./nodeLoad.ts"
import type { Window } from "./hopStalls.ts"
import type { HopGc } from "./pair.ts"

/** A probe's `bench-gc` line, parsed: the pause it reports, or undefined for any other line. */
export const gcOfLine = (parsed: unknown): HopGc | undefined => {
  if (typeof parsed !== "object" || parsed === null || (parsed as { event?: unknown }).event !== "bench-gc") return undefined
  const p = parsed as Record<"startMs" | "ms" | "major", unknown>
  const startMs = Number(p.startMs)
  const ms = Number(p.ms)
  return Number.isFinite(startMs) && Number.isFinite(ms) ? { startMs, ms, major: p.major === true } : undefined
}

/** One hop's pauses that began in a path's slices. */
export interface HopGcCount {
  readonly name: string
  readonly count: number
  readonly perThousandRequests: number
  readonly medianMs: number
  readonly major: number
}

export interface GcTail {
  readonly hops: ReadonlyArray<HopGcCount>
  /** The slowest 1 % of the requests (at least one), from this latency up. */
  readonly tail: number
  readonly fromMs: number
  /** Of them, those whose time (due to answer) overlapped a pause of any hop, and their GC time, ms, on average. */
  readonly met: number
  readonly meanGcMs: number
}

const overlapMs = (pause: HopGc, from: number, to: number): number => Math.max(0, Math.min(pause.startMs + pause.ms, to) - Math.max(pause.startMs, from))

/** Counts each hop's pauses that began in `windows` and lines the slowest 1 % of `calls` up with them. */
export const gcTail = (calls: CallTimes, windows: ReadonlyArray<Window>, hops: ReadonlyArray<readonly [string, ReadonlyArray<HopGc>]>): GcTail => {
  const requests = calls.ms.length
  const inWindows = hops.map(([, pauses]) => pauses.filter((pause) => windows.some(([from, to]) => pause.startMs >= from && pause.startMs <= to)))
  const counts = hops.map(([name], i): HopGcCount => {
    const pauses = inWindows[i]!
    const lengths = pauses.map((pause) => pause.ms).sort((x, y) => x - y)
    return {
      name,
      count: pauses.length,
      perThousandRequests: requests === 0 ? 0 : (pauses.length * 1000) / requests,
      medianMs: lengths.length === 0 ? 0 : lengths[lengths.length >> 1]!,
      major: pauses.filter((pause) => pause.major).length
    }
  })
  const order = Array.from(calls.ms.keys()).sort((x, y) => calls.ms[y]! - calls.ms[x]!)
  const tail = order.slice(0, Math.max(1, Math.ceil(requests / 100)))
  let met = 0
  let gcMs = 0
  for (const i of tail) {
    const from = calls.dueMs[i]!
    const to = from + calls.ms[i]!
    let ms = 0
    for (const pauses of inWindows) for (const pause of pauses) ms += overlapMs(pause, from, to)
    if (ms > 0) met++
    gcMs += ms
  }
  return { hops: counts, tail: requests === 0 ? 0 : tail.length, fromMs: requests === 0 ? NaN : calls.ms[tail.at(-1)!]!, met, meanGcMs: met === 0 ? 0 : gcMs / met }
}

/** "GC: A 37 pauses (3.7 per 1,000 requests, median 0.62 ms, 0 full); B ...; the slowest 100 (>= 3.2 ms): 64 met one (1.10 ms of GC each)". */
export const describeGcTail = (g: GcTail): string =>
  `GC: ${g.hops.map((h) => `${h.name} ${h.count} pauses (${h.perThousandRequests.toFixed(1)} per 1,000 requests, median ${h.medianMs.toFixed(2)} ms, ${h.major} full)`).join("; ")}; ` +
  (g.tail === 0 ? "no request" : `the slowest ${g.tail} (>= ${g.fromMs.toFixed(2)} ms): ${g.met} met one${g.met === 0 ? "" : ` (${g.meanGcMs.toFixed(2)} ms of GC each)`}`)
