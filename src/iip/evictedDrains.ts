// Busy mesh connections evicted at an IIP server's connection cap (server.ts drainEvicted, picked by
// fairPlaces.ts), drained instead of cut (PROTOCOL.md §11 "Evicted busy"): their places are free
// already; here each is told go-away `closing` and waits for the peer's answer (every request it
// sent before is then read) and for what runs on it to finish, and closes then, or at the deadline
// whatever still runs. One sweep fiber per server while any drains (lazySweeper.ts, as the
// connection timeouts'): tests drive the deadline with TestClock, and the request path pays nothing.
import type { MeshSession } from "../mux/meshSession.ts"
import { LazySweeper } from "./lazySweeper.ts"
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
  private readonly sweeper: LazySweeper
  private readonly log: Log
  private readonly deadlineLines = new LogThrottle(deadlineLines, 60_000)

  constructor(supervisor: Supervisor, log: Log) {
    this.sweeper = new LazySweeper(supervisor, sweepMs, (now) => this.sweep(now))
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
    const drain: Drain = { mesh, isIdle, evictedAt: this.sweeper.now }
    this.drains.add(drain)
    mesh.onClosed(() => this.drains.delete(drain))
    mesh.goAway(reason, true)
    this.sweeper.wake()
  }

  /** The server closes: every connection still draining closes at once. */
  closeAll(): void {
    for (const { mesh } of this.drains) mesh.connection.close("server closed", false)
    this.drains.clear()
  }

  /** Closes what drained or met its deadline; says whether any still drains. */
  private sweep(now: number): boolean {
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
    return this.drains.size > 0
  }
}
