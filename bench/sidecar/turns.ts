// The open loop's turns, shared by the sidecar and gRPC benches (bench/sidecar.ts's header says
// why): one round's warm-up and measuring window each run in short slices, the paths taking turns
// slice by slice, every other turn with neighbours swapped (A B C D, then B A D C), so that a burst
// of other work on the machine, or a pause of the load generator, falls on every path alike, no
// path always follows the same one, and no path sits idle longer than one slice per path (a
// sidecar's idle GC waits for 2 s without requests).
import { performance } from "node:perf_hooks"
import type { Window } from "./hopStalls.ts"
import { mergeOpen, type OpenSample } from "./nodeLoad.ts"

/** The slices of one round: how many in the measuring window, and how long each is, ms. */
export interface Slicing {
  readonly slices: number
  readonly sliceMs: number
}

/** The window cut into slices of about `sliceMs` (at least one). */
export const slicingOf = (windowMs: number, sliceMs: number): Slicing => {
  const slices = Math.max(1, Math.round(windowMs / sliceMs))
  return { slices, sliceMs: windowMs / slices }
}

/** The order of the paths in slice `slice`: `order`, or every other slice its neighbours swapped. */
export const turnOrder = <M>(order: ReadonlyArray<M>, slice: number): ReadonlyArray<M> =>
  slice % 2 === 0 ? order : order.map((_, i) => order[i ^ 1] ?? order[i]!)

/** One round's measured slices per path: their samples pooled, and when each slice ran (epoch ms, to count stalls in them). */
export interface RoundOf<M> {
  readonly slicing: Slicing
  readonly samples: ReadonlyMap<M, OpenSample>
  readonly windows: ReadonlyMap<M, ReadonlyArray<Window>>
}

/**
 * Runs one round: the warm-up's slices (`measured` false) in `order`, then the measuring window's
 * slices in turns (turnOrder). `run` runs one slice of one path for `ms`; the measured slices'
 * samples are pooled per path (mergeOpen).
 */
export const runInTurns = async <M>(
  order: ReadonlyArray<M>,
  timing: { readonly warmupMs: number; readonly measureMs: number; readonly sliceMs: number },
  run: (mode: M, ms: number, measured: boolean) => Promise<OpenSample>
): Promise<RoundOf<M>> => {
  // The warm-up in turns too (unmeasured): no pair sits idle between its warm-up and its window.
  const warmup = slicingOf(timing.warmupMs, timing.sliceMs)
  if (timing.warmupMs > 0) {
    for (let slice = 0; slice < warmup.slices; slice++) for (const mode of order) await run(mode, warmup.sliceMs, false)
  }
  const slicing = slicingOf(timing.measureMs, timing.sliceMs)
  const parts = new Map<M, Array<OpenSample>>(order.map((mode) => [mode, []]))
  const windows = new Map<M, Array<Window>>(order.map((mode) => [mode, []]))
  const epochNow = () => performance.timeOrigin + performance.now()
  for (let slice = 0; slice < slicing.slices; slice++) {
    for (const mode of turnOrder(order, slice)) {
      const start = epochNow()
      parts.get(mode)!.push(await run(mode, slicing.sliceMs, true))
      windows.get(mode)!.push([start, epochNow()])
    }
  }
  return { slicing, samples: new Map(order.map((mode) => [mode, mergeOpen(parts.get(mode)!)])), windows }
}
