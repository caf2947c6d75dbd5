// The outbound side's watch on one try of an idempotent request (outbound.ts): a try with no
// answer after `slowTryAfterMs` (the floor, or 10x what its endpoint usually takes, whichever is
// longer) is given up for another endpoint, when a retry is possible then (another endpoint to
// try, the retry budget). A peer whose app froze behind a live sidecar answers pings, so only
// this moves its requests on. A retry that is not possible leaves the try running to the
// deadline: giving up would fail a request that may yet be answered. Nor is a stall of this
// process (a long GC, a starved CPU) the endpoint's: a watch that fires late waits its lateness
// more (at most `afterMs`) before it judges (src/mux/lateTimer.ts).
import type { Cancellation } from "../mux/cancellation.ts"
import { LateTimer } from "../mux/lateTimer.ts"

/** How many times its endpoint's latency estimate a try may take before it is given up. */
export const SLOW_TRY_FACTOR = 10

/** When a try with this endpoint latency estimate is slow: at least `floorMs`. */
export const slowTryAfterMs = (floorMs: number, expectedMs: number): number =>
  Math.max(floorMs, SLOW_TRY_FACTOR * (Number.isFinite(expectedMs) ? Math.max(0, expectedMs) : 0))

/**
 * The watch on one try: gives the try up (aborts its cancellation) after `afterMs` if
 * `retryPossible()` says so then (and takes the retry). `givenUp` tells a try cancelled for being
 * slow from one the app gave up on (which aborts the same cancellation).
 */
export class TryWatch {
  givenUp = false
  private readonly timer: LateTimer

  constructor(cancellation: Cancellation, afterMs: number, retryPossible: () => boolean) {
    this.timer = new LateTimer(afterMs, () => {
      if (cancellation.aborted || !retryPossible()) return
      this.givenUp = true
      cancellation.abort()
    })
  }

  /** The answer started (or the try ended): no giving up from here on. */
  settled(): void {
    this.timer.cancel()
  }
}
