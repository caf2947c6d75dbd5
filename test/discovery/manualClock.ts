// Test support for the Kubernetes informer's delays (src/discovery/kubernetesWatch.ts WatchClock):
// a clock that moves only when the test says, so minutes of backoff run at once. The informer
// alternates real I/O (against the fake API server) with sleeps on this clock; `idle` waits, with
// a bound, until it sleeps, and `wakeNext` moves the time to the earliest wake-up.
import type { WatchClock } from "../../src/discovery/kubernetesWatch.ts"

interface Sleeper {
  readonly at: number
  readonly wake: () => void
}

export class ManualClock implements WatchClock {
  private time = 0
  private readonly sleepers = new Set<Sleeper>()
  private readonly idleWaiters = new Set<() => void>()

  readonly now = (): number => this.time

  readonly sleep = (ms: number, signal: AbortSignal): Promise<void> =>
    new Promise((resolve) => {
      if (signal.aborted) return resolve()
      const sleeper: Sleeper = {
        at: this.time + ms,
        wake: () => {
          this.sleepers.delete(sleeper)
          signal.removeEventListener("abort", sleeper.wake)
          resolve()
        }
      }
      this.sleepers.add(sleeper)
      signal.addEventListener("abort", sleeper.wake, { once: true })
      for (const waiter of this.idleWaiters) waiter()
      this.idleWaiters.clear()
    })

  /** Resolves once something sleeps on this clock (at once if something does); rejects after `timeoutMs` of real time. */
  idle(timeoutMs = 3000): Promise<void> {
    if (this.sleepers.size > 0) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.idleWaiters.delete(done)
        reject(new Error(`nothing slept on the clock within ${timeoutMs} ms (at ${this.time} ms)`))
      }, timeoutMs)
      const done = (): void => {
        clearTimeout(timer)
        resolve()
      }
      this.idleWaiters.add(done)
    })
  }

  /** When the earliest sleeper wakes (Infinity when none sleeps). */
  get nextAt(): number {
    let at = Infinity
    for (const sleeper of this.sleepers) at = Math.min(at, sleeper.at)
    return at
  }

  /** Moves the time to the earliest wake-up and wakes that sleeper. */
  wakeNext(): void {
    const at = this.nextAt
    if (at === Infinity) throw new Error("nothing sleeps on the clock")
    this.time = Math.max(this.time, at)
    for (const sleeper of this.sleepers) if (sleeper.at <= this.time) return sleeper.wake()
  }

  /** Moves the time by `ms` with nothing woken (nothing sleeps while a watch is open). */
  advance(ms: number): void {
    if (this.nextAt <= this.time + ms) throw new Error("a sleeper would wake: use wakeNext")
    this.time += ms
  }
}
