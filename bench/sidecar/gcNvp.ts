// Node's --trace-gc-nvp lines (one per collection: its kind, pause and the bytes it saw), read for
// what a process allocates and keeps per call: grpcAppHeads.ts runs the gRPC bench's app with it.
// A process's promotion (young objects that lived through two scavenges, moved to the old space
// that only a full GC frees) is what sets how often it runs the long pauses issue 17's tail met.

/** One collection: `atMs` is ms since the process started, as node prints it. */
export interface NvpGc {
  readonly atMs: number
  /** s: scavenge (young generation), mc: mark-compact (full), others as V8 names them (mmc: minor mark-compact). */
  readonly kind: string
  readonly pauseMs: number
  /** Bytes allocated since the collection before, promoted to the old space, and surviving in the young one. */
  readonly allocated: number
  readonly promoted: number
  readonly survived: number
}

/** A --trace-gc-nvp line, or undefined for any other. */
export const nvpGcOf = (line: string): NvpGc | undefined => {
  const at = /^\[[^\]]*\]\s+(\d+(?:\.\d+)?) ms: /.exec(line)
  const kind = / gc=(\w+) /.exec(line)
  if (at === null || kind === null) return undefined
  const field = (name: string): number => {
    const m = new RegExp(` ${name}=(\\d+(?:\\.\\d+)?)`).exec(line)
    return m === null ? 0 : Number(m[1])
  }
  return { atMs: Number(at[1]), kind: kind[1]!, pauseMs: field("pause"), allocated: field("allocated"), promoted: field("promoted"), survived: field("new_space_survived") }
}

/** Per call, over `calls` calls, of the collections given: KiB allocated, surviving and promoted; scavenges and full GCs per 1,000 calls; pause ms per 1,000. */
export interface NvpPerCall {
  readonly allocatedKiB: number
  readonly survivedKiB: number
  readonly promotedKiB: number
  readonly scavengesPerK: number
  readonly fullPerK: number
  readonly pauseMsPerK: number
}

export const nvpPerCall = (gcs: ReadonlyArray<NvpGc>, calls: number): NvpPerCall => {
  const kib = (bytes: number) => bytes / 1024 / calls
  const perK = (n: number) => (n * 1000) / calls
  let allocated = 0
  let promoted = 0
  let survived = 0
  let pause = 0
  for (const gc of gcs) {
    allocated += gc.allocated
    promoted += gc.promoted
    survived += gc.survived
    pause += gc.pauseMs
  }
  return {
    allocatedKiB: kib(allocated),
    survivedKiB: kib(survived),
    promotedKiB: kib(promoted),
    scavengesPerK: perK(gcs.filter((gc) => gc.kind === "s" || gc.kind === "mmc").length),
    fullPerK: perK(gcs.filter((gc) => gc.kind === "mc").length),
    pauseMsPerK: perK(pause)
  }
}
