// The one sweep fiber a server's connection timeouts (timeouts.ts) and its evicted drains
// (evictedDrains.ts) each run: forked by the first thing to watch, it sweeps every tick on Effect's
// Clock (so tests drive it with TestClock) and its monotonic time (so a wall clock step neither
// switches a deadline off nor fires it at once), and ends when nothing is left to watch, so an idle
// server has no tick and the request path pays nothing.
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import { monotonicMillisOf } from "../mux/clock.ts"
import type { Supervisor } from "./supervisor.ts"

/** Sweeps what is watched at `now`; says whether anything is still watched (false ends the fiber). */
export type Sweep = (now: number) => boolean

export class LazySweeper {
  private running = false
  /** The fiber's clock, so what is watched is timed on it (unset until the first sweep). */
  private clock: Clock.Clock | undefined
  private readonly supervisor: Supervisor
  private readonly tickMs: number
  private readonly sweep: Sweep

  constructor(supervisor: Supervisor, tickMs: number, sweep: Sweep) {
    this.supervisor = supervisor
    this.tickMs = tickMs
    this.sweep = sweep
  }

  /** The sweeper's monotonic time in ms; -1 before its first sweep (its clock unknown then: the sweep sets such times). */
  get now(): number {
    return this.clock === undefined ? -1 : monotonicMillisOf(this.clock)
  }

  /** Something new is watched: forks the fiber unless it runs. */
  wake(): void {
    if (this.running) return
    this.running = true
    this.supervisor.fork(this.loop())
  }

  private loop(): Effect.Effect<void> {
    const sweeper = this
    return Effect.gen(function*() {
      const clock = yield* Clock.Clock
      sweeper.clock = clock
      for (;;) {
        // None left: no tick while none is watched (the next wake forks the fiber again). Marked
        // here, not only on exit, so a wake between this sweep and the fiber's end forks anew.
        if (!sweeper.sweep(monotonicMillisOf(clock))) {
          sweeper.running = false
          return
        }
        yield* Effect.sleep(sweeper.tickMs)
      }
    }).pipe(Effect.ensuring(Effect.sync(() => (sweeper.running = false))))
  }
}
