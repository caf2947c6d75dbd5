// The stream windows A's outbound h2c listener grants callers for their request bodies, over all
// its connections: the bytes callers may park here (received, not yet taken by the mesh) are at
// most these windows. outboundH2Session.ts admits a request with a body only while there is room
// for its first window (else REFUSED_STREAM: nothing of it was processed, a client retries it);
// outboundH2Call.ts grows the window of a body that moves and gives the credit back once the body
// is taken whole or its stream ends.
//
// Why windows and not the bytes held: a caller's HEADERS come before its DATA, so a budget of
// held bytes admits every stream of a burst (1,600 of them from 100 connections) before any byte
// counts, and each may then fill its window. Why no take-back: an honest upload pausing for the
// mesh's credit looks like a stalled one (w23-bodybudget reset one in 4 of 5 runs); an admitted
// body keeps its window to its end, so none waits on another's (the reverted per-connection budget
// deadlocked: streams the far app did not read yet held what the one it read needed).

/** A body's first window (SETTINGS_INITIAL_WINDOW_SIZE of A's h2c connections): what a body that never moves holds at most. */
export const BODY_WINDOW = 64 * 1024
/** A moving body's window at most: doubled each time the mesh took a whole window of it (1 MiB: src/h2's default, which no round trip stalls on loopback). */
export const MAX_BODY_WINDOW = 1 << 20

export class BodyCredit {
  /** The windows granted to bodies not yet taken whole (the gauge), and how much of that is growth past BODY_WINDOW. */
  granted = 0
  private grown = 0
  /** Requests with a body refused for want of room (the counter). */
  refused = 0
  readonly max: number

  constructor(max: number) {
    this.max = max
  }

  /** A new request with a body: its first window, or false (counted) when the budget has no room for it. */
  admit(): boolean {
    if (this.granted + BODY_WINDOW > this.max) {
      this.refused++
      return false
    }
    this.granted += BODY_WINDOW
    return true
  }

  /**
   * A body whose mesh reader took its whole `window`: how much more it may have (its window doubled,
   * at most MAX_BODY_WINDOW), 0 when it does not fit in the budget or growth would pass half of it:
   * the other half stays for first windows, so bodies that grew never refuse new ones. `take` it
   * once granted.
   */
  room(window: number): number {
    const extra = Math.min(window, MAX_BODY_WINDOW - window)
    return extra > 0 && this.grown + extra <= this.max / 2 && this.granted + extra <= this.max ? extra : 0
  }

  take(extra: number): void {
    this.granted += extra
    this.grown += extra
  }

  /** A body taken whole, or its stream over: its `window` comes back. */
  release(window: number): void {
    this.granted -= window
    this.grown -= window - BODY_WINDOW
  }
}
