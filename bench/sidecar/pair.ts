// What the sidecar bench knows of a path's two hops, whatever runs them (iip-mesh sidecars, nginx,
// haproxy): client -> A -> B -> app, the pids it reads /proc for, and how to stop each.
import { Data } from "effect"

/** A hop did not come up: it exited, never said it was ready, or could not be started. */
export class HopFailed extends Data.TaggedError("HopFailed")<{ readonly message: string }> {}

export interface Hop {
  readonly pid: number
  /** Ends the process and resolves once it has exited. */
  readonly stop: () => Promise<void>
  /** iip-mesh sidecars: each event-loop stall over 10 ms so far, as stallProbe.mjs reported it. */
  readonly stalls?: ReadonlyArray<HopStall>
  /** iip-mesh sidecars: their GC pauses so far (the most recent MAX_HOP_GC), as stallProbe.mjs reported them. */
  readonly gcPauses?: ReadonlyArray<HopGc>
}

/** The GC pauses kept per hop: a full bench's saturation phase makes tens of thousands. */
export const MAX_HOP_GC = 100_000

/** One GC pause of a hop: when it began (epoch ms), how long, and whether it was a full (mark-compact) collection. */
export interface HopGc {
  readonly startMs: number
  readonly ms: number
  readonly major: boolean
}

/** One stall of a hop's event loop: when it ended (epoch ms), how long, the main thread's CPU over it, and how much was GC. */
export interface HopStall {
  readonly endMs: number
  readonly ms: number
  readonly cpuMs: number
  readonly gcMs: number
  readonly majorGcMs: number
}

export interface ProxyPair {
  readonly a: Hop
  readonly b: Hop
  /** Where the client sends: A's listening address. */
  readonly entry: { readonly host: string; readonly port: number }
  /** iip-mesh pairs: TLS handshakes A completed with B so far (from A's /metrics). */
  readonly handshakes?: () => Promise<number>
}
