// Busy mesh connections evicted at an IIP server's connection cap (server.ts drainEvicted, picked by
// fairPlaces.ts), drained instead of cut (PROTOCOL.md §11 "Evicted busy"): their places are free
// already; here each is told go-away `closing` and waits for the peer's answer (every request it
// sent before is then read) and for what runs on it to finish, and closes then, or at the deadline
// whatever still runs. One sweep fiber per server while any drains, on Effect's Clock and its
// monotonic time as the connection timeouts (timeouts.ts): tests drive the deadline with TestClock,
// and the request path pays nothing.
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import { monotonicMillisOf } from "../mux/clock.ts"
import type { MeshSession } from "../mux/meshSession.ts"
import { type Log, LogThrottle } from "./log.ts"
import type { Supervisor } from "./supervisor.ts"

/**
 * How long an evicted busy connection may go on running what it holds: as long as an evicted idle
 * one's socket may carry its go-away (connection.ts, a graceful close). Its requests' deadlines
 * are the peer's to set; a hog's are unbounded, and what it keeps is bounded by this and the count.
 */
export const evictedDrainMs = 5000
/** How often the drains are looked at: a drained connection closes at most this late. */
const sweepMs = 10
/** `evicted-drain-deadline` lines at most per minute, as the evictions' own (server.ts): a hog makes one per eviction. */
const deadlineLines = 20

interface Drain {
  readonly mesh: MeshSession
  /** Nothing runs on it: no request served or waiting, none of this side's calls outstanding. */
  readonly isIdle: () => boolean
  /** When it was evicted; -1 until the sweeper's first sweep (its clock unknown before). */
  evictedAt: number
}

export class EvictedDrains {
  private readonly drains = new Set<Drain>()
  private running = false
  /** The sweeper's clock, so an eviction's time is read on it (unset until the sweeper runs). */
  private clock: Clock.Clock | undefined
  private readonly supervisor: Supervisor
  private readonly log: Log
  private readonly deadlineLines = new LogThrottle(deadlineLines, 60_000)

  constructor(supervisor: Supervisor, log: Log) {
    this.supervisor = supervisor
    this.log = log
  }

  /** Connections still draining. */
  get size(): number {
    return this.drains.size
  }

  /** The channels their peers hold open on the connections still draining (a gauge counts them with the live connections'). */
  get peerChannels(): number {
    let channels = 0
    for (const { mesh } of this.drains) channels += mesh.peerChannelCount
    return channels
  }

  /** Tells `mesh`'s peer go-away `closing` and closes the connection once drained, or at `evictedDrainMs`. */
  add(mesh: MeshSession, isIdle: () => boolean, reason: string): void {
    const drain: Drain = { mesh, isIdle, evictedAt: this.clock === undefined ? -1 : monotonicMillisOf(this.clock) }
    this.drains.add(drain)
    mesh.onClosed(() => this.drains.delete(drain))
    mesh.goAway(reason, true)
    if (!this.running) {
      this.running = true
      this.supervisor.fork(this.sweeper())
    }
  }

  /** The server closes: every connection still draining closes at once. */
  closeAll(): void {
    for (const { mesh } of this.drains) mesh.connection.close("server closed", false)
    this.drains.clear()
  }

  private sweeper(): Effect.Effect<void> {
    const drains = this
    return Effect.gen(function*() {
      const clock = yield* Clock.Clock
      drains.clock = clock
      for (;;) {
        drains.sweep(monotonicMillisOf(clock))
        // None left: no tick while none drains (the next eviction forks a sweeper again).
        if (drains.drains.size === 0) {
          drains.running = false
          return
        }
        yield* Effect.sleep(sweepMs)
      }
    }).pipe(Effect.ensuring(Effect.sync(() => (drains.running = false))))
  }

  private sweep(now: number): void {
    for (const drain of this.drains) {
      const { mesh } = drain
      if (drain.evictedAt < 0) drain.evictedAt = now
      // Answered, the go-away has every request the peer sent before it here (TCP keeps order):
      // with nothing running, none is in the air. What was answered still goes out before the FIN.
      if (mesh.goAwayAcknowledged && drain.isIdle()) {
        mesh.connection.close("evicted at the connection limit: drained", true)
      } else if (now - drain.evictedAt >= evictedDrainMs) {
        const admitted = this.deadlineLines.admit()
        if (admitted !== undefined) this.log("evicted-drain-deadline", { remote: mesh.connection.remoteAddress, running: mesh.servingCount, afterMs: now - drain.evictedAt, ...admitted })
        mesh.connection.close(`evicted at the connection limit: not drained within ${evictedDrainMs} ms`, false)
      }
    }
  }
}
