// Steps this process's wall clock as NTP, an operator or a VM resume would, while its monotonic
// clock (performance.now()) and Node's timers run on untouched: Date.now() is replaced by the real
// one plus an offset the test moves. What a step must not move is what reads the monotonic clock.
import { vi } from "vitest"

export interface SteppedWallClock {
  /** Moves Date.now() by `ms` (negative: back) from now on. */
  readonly step: (ms: number) => void
  /** Puts the real Date.now() back. */
  readonly restore: () => void
}

export const HOUR_MS = 3_600_000

/** Takes over Date.now() until `restore` (register it with the test's Cleanup). */
export const steppedWallClock = (): SteppedWallClock => {
  const realNow = Date.now.bind(Date)
  let offset = 0
  const spy = vi.spyOn(Date, "now").mockImplementation(() => realNow() + offset)
  return {
    step: (ms) => {
      offset += ms
    },
    restore: () => spy.mockRestore()
  }
}
