// The file server's unfinished uploads (`<path>.iip-part`), their number and their expiry: a client
// that starts uploads and goes away would otherwise hold the root's quota for ever, and one that
// starts them without end would grow this table (and the root's entries) to the millions. A new
// unfinished upload needs a place (`admit`), at most `maxCount` at once, those found at start
// included; a finished, expired or vanished one gives its place back. server.ts tells this module
// of every partial it writes and of every one that took its name; the walk at start (quota.ts)
// lists those already there, aged by their modification time. A sweep on the server's Clock
// removes each one not written for `maxAgeMs`, at start and then every eighth of that age: a
// partial written within the age is never removed (it resumes), an abandoned one goes at most a
// quarter of the age late. The sweep looks only at this table (no walk of the root), and a write
// costs one flag: the sweep notices it, as timeouts.ts notices a connection's packets. A partial
// some other process makes after the start is seen at the next start. Ages run on the Clock's
// monotonic time, so a wall clock step neither removes every partial at once nor keeps abandoned
// ones for the step's length; only a found partial's mtime is a wall time, read once against the
// wall clock at the first sweep. One not written for `idleMs` (minutes, far less than the age) is
// `idle`: the server removes such ones, oldest first, when a request would not fit the quota
// otherwise (server.ts), so uploads that have stopped do not hold the room of those under way.
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import { monotonicMillisOf } from "../mux/clock.ts"

/** A day: long enough for a paused transfer of GiBs to resume, short enough not to hold the quota for ever. */
export const defaultPartialMaxAgeMs = 24 * 3_600_000

/**
 * Minutes: a client that lost its connection or was restarted reconnects and resumes well within
 * it; an upload that has not moved for longer gives way when the quota needs its room.
 */
export const defaultPartialIdleMs = 10 * 60_000

/**
 * Far more uploads under way at once than a file server sees from honest clients, and a table of at
 * most a few MB (a path is at most 1 KiB under the root: paths.ts).
 */
export const defaultMaxUnfinishedUploads = 2_000

interface Seen {
  /** Written since the sweep last looked. */
  written: boolean
  /** When it was last seen written, in monotonic ms (below 0 for one found old); undefined until a sweep sees it. */
  seenAt: number | undefined
  /** For one found at start, until the first sweep: its mtime (wall ms). */
  modifiedMs: number | undefined
  /** Its size, as its last request left it (or as found at start). */
  bytes: number
}

export class UnfinishedUploads {
  readonly maxAgeMs: number
  readonly maxCount: number
  readonly idleMs: number
  private readonly known = new Map<string, Seen>()
  private heldBytes = 0
  /** When the sweep last ran (monotonic ms). */
  private sweptAt: number | undefined

  /** `maxAgeMs` or `idleMs` 0: none expires, or none is ever idle. */
  constructor(maxAgeMs: number, maxCount: number, idleMs: number) {
    this.maxAgeMs = maxAgeMs
    this.maxCount = maxCount
    this.idleMs = idleMs
  }

  /** How many there are (found at start or written since, not yet finished, expired or gone). */
  get count(): number {
    return this.known.size
  }

  /** Their bytes, all together. */
  get bytes(): number {
    return this.heldBytes
  }

  /**
   * Takes a place for a new one about to be written, if there is room; true for one already known.
   * A place taken for a file that is then not made goes back with `forget`.
   */
  admit(path: string): boolean {
    if (this.known.has(path)) return true
    if (this.known.size >= this.maxCount) return false
    this.known.set(path, { written: true, seenAt: undefined, modifiedMs: undefined, bytes: 0 })
    return true
  }

  /** Whether a sweep is needed at all. */
  get swept(): boolean {
    return this.maxAgeMs > 0 || this.idleMs > 0
  }

  /** How often the sweep runs: an eighth of the shorter of the age and the idle time. */
  get sweepEveryMs(): number {
    // Both at most 8 timers' length (server.ts checks), and one of them above 0 (`swept`).
    return Math.max(1, Math.floor(Math.min(this.maxAgeMs || Infinity, this.idleMs || Infinity) / 8))
  }

  /** One found at start, last modified at `modifiedMs`. */
  found(path: string, modifiedMs: number, bytes: number): void {
    if (this.known.has(path)) return
    this.known.set(path, { written: false, seenAt: undefined, modifiedMs, bytes })
    this.heldBytes += bytes
  }

  /** A request wrote it (or created it). */
  written(path: string): void {
    const seen = this.known.get(path)
    if (seen === undefined) this.known.set(path, { written: true, seenAt: undefined, modifiedMs: undefined, bytes: 0 })
    else seen.written = true
  }

  /** Its size after a request (one not in the table: nothing). */
  sized(path: string, bytes: number): void {
    const seen = this.known.get(path)
    if (seen === undefined) return
    this.heldBytes += bytes - seen.bytes
    seen.bytes = bytes
  }

  /** It took its name, or is gone. */
  forget(path: string): void {
    this.heldBytes -= this.known.get(path)?.bytes ?? 0
    this.known.delete(path)
  }

  /**
   * Notes what was written since the last sweep; returns those not written for the age as of `now`
   * (monotonic ms). `wallNow` dates the mtimes of those found at start (one from the future is
   * taken as written now).
   */
  expired(now: number, wallNow: number): Array<string> {
    this.sweptAt = now
    const expired: Array<string> = []
    for (const [path, seen] of this.known) {
      if (seen.modifiedMs !== undefined) {
        if (!seen.written) seen.seenAt = now - Math.max(0, wallNow - seen.modifiedMs)
        seen.modifiedMs = undefined
      }
      if (seen.written || seen.seenAt === undefined) {
        seen.written = false
        seen.seenAt = now
      } else if (this.maxAgeMs > 0 && now - seen.seenAt >= this.maxAgeMs) expired.push(path)
    }
    return expired
  }

  /**
   * Those not written for the idle time as of the last sweep (so between 1 and 1.25 idle times
   * after their last write), oldest first; none before the first sweep or with `idleMs` 0.
   */
  idle(): Array<string> {
    const sweptAt = this.sweptAt
    if (this.idleMs === 0 || sweptAt === undefined) return []
    const idle: Array<[string, number]> = []
    for (const [path, seen] of this.known) {
      if (!seen.written && seen.seenAt !== undefined && sweptAt - seen.seenAt >= this.idleMs) idle.push([path, seen.seenAt])
    }
    return idle.sort((a, b) => a[1] - b[1]).map(([path]) => path)
  }

  /** Its bytes (0 for one not in the table). */
  bytesOf(path: string): number {
    return this.known.get(path)?.bytes ?? 0
  }

  /** Whether `path` is still as `expired` or `idle` returned it: not written since. */
  stillUnwritten(path: string): boolean {
    return this.known.get(path)?.written === false
  }
}

/**
 * Sweeps once `ready` (the walk at start) resolves, then every `sweepEveryMs`, on the Clock of the
 * fiber it runs in. `remove` is the server's: one request's turn at a time, it re-checks
 * `stillUnwritten`, and never rejects.
 */
export const sweepUnfinished = (uploads: UnfinishedUploads, ready: Promise<unknown>, remove: (path: string) => Promise<void>): Effect.Effect<void> =>
  Effect.gen(function*() {
    yield* Effect.promise(() => ready)
    const clock = yield* Clock.Clock
    for (;;) {
      for (const path of uploads.expired(monotonicMillisOf(clock), clock.currentTimeMillisUnsafe())) yield* Effect.promise(() => remove(path))
      yield* Effect.sleep(uploads.sweepEveryMs)
    }
  })
