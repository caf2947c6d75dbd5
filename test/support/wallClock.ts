// Steps this process's wall clock as NTP, an operator or a VM resume would, while its monotonic
// clock (performance.now()) and Node's timers run on untouched: Date.now() is replaced by the real
// one plus an offset the test moves. What a step must not move is what reads the monotonic clock.
// The same for Effect code: an Effect Clock whose wall time steps while its monotonic time and
// sleeps stay those of the Clock it wraps (a TestClock, so the test still drives time).
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
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

export interface SteppedEffectClock {
  /** `clock` with its wall time (currentTimeMillis, currentTimeNanos) moved by the steps. */
  readonly clock: Clock.Clock
  /** Moves that wall time by `ms` (negative: back) from now on. */
  readonly step: (ms: number) => void
}

/** Wraps `clock` (provide the result as the Clock of the code under test; keep adjusting `clock`). */
export const steppedEffectClock = (clock: Clock.Clock): SteppedEffectClock => {
  let offset = 0
  const millis = () => clock.currentTimeMillisUnsafe() + offset
  const nanos = () => clock.currentTimeNanosUnsafe() + BigInt(offset) * 1_000_000n
  return {
    clock: {
      currentTimeMillisUnsafe: millis,
      currentTimeMillis: Effect.sync(millis),
      currentTimeNanosUnsafe: nanos,
      currentTimeNanos: Effect.sync(nanos),
      monotonicTimeNanosUnsafe: () => clock.monotonicTimeNanosUnsafe(),
      monotonicTimeNanos: clock.monotonicTimeNanos,
      sleep: (duration) => clock.sleep(duration)
    },
    step: (ms) => {
      offset += ms
    }
  }
}
