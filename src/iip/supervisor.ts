// The background work of servers and clients (keep-alive pings, drains, redials) as Effect fibers
// in the runtime their creator ran in, so a test's TestClock drives their timers, and all of them
// stop when their owner closes.
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"

type Run = (effect: Effect.Effect<void>) => Fiber.Fiber<void>

export class Supervisor {
  private readonly fibers = new Set<Fiber.Fiber<void>>()
  private readonly run: Run

  constructor(run: Run = (effect) => Effect.runFork(effect)) {
    this.run = run
  }

  /** A supervisor whose fibers run with the services (Clock included) of the calling effect. */
  static readonly current: Effect.Effect<Supervisor> = Effect.map(Effect.context<never>(), (context) => {
    const runWith = Effect.runForkWith(context)
    return new Supervisor((effect) => runWith(effect))
  })

  fork(effect: Effect.Effect<void>): void {
    const fiber = this.run(effect)
    this.fibers.add(fiber)
    fiber.addObserver(() => this.fibers.delete(fiber))
  }

  interruptAll(): void {
    for (const fiber of this.fibers) fiber.interruptUnsafe()
    this.fibers.clear()
  }
}
