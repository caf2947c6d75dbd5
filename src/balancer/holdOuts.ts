// Endpoints held out of picks for a short while without counting as failing: the balancer
// (serviceBalancer.ts) asks here besides the outlier detector.
//
// - Restarting: an endpoint that said go-away (a graceful stop), or that discovery dropped and added
//   again, and then refuses connections is restarting, not failing: ejecting it would double its next
//   ejection, so a rolling restart every few minutes would keep a healthy instance out for longer
//   each time. It is skipped until a connection to it succeeds again (the registry redials it in the
//   background), or until `windowMs` after the go-away: a refusal after that counts as usual.
// - Unresponsive: the connection to it stopped answering pings (a frozen process). Skipped until a
//   connection succeeds again, at most `windowMs`.
//
// Neither adds a failure, a penalty or an ejection. Pure: time comes in as `now` (ms).

export type HoldReason = "restarting" | "unresponsive"

export interface HoldOutOptions {
  /**
   * How long after a go-away (or being dropped by discovery) a refused connection means a restart, and the longest
   * an endpoint is held out. Default 30,000.
   */
  readonly windowMs?: number
}

interface Held {
  /** When it said go-away or was added (-Infinity: never). */
  leftAt: number
  /** Held out until this time (0: not held). */
  until: number
  reason: HoldReason | undefined
}

export class HoldOuts {
  readonly windowMs: number
  private readonly state = new Map<string, Held>()
  /** The earliest hold end (Infinity when none): `versionAt` is O(1) between. */
  private nextEndAt = Number.POSITIVE_INFINITY
  private version = 0

  constructor(options: HoldOutOptions = {}) {
    this.windowMs = Math.max(0, options.windowMs ?? 30_000)
  }

  /** Moves whenever the set of endpoints held out changes (as of `now`). */
  versionAt(now: number): number {
    if (now >= this.nextEndAt) {
      this.nextEndAt = Number.POSITIVE_INFINITY
      for (const h of this.state.values()) {
        if (h.until > now) this.nextEndAt = Math.min(this.nextEndAt, h.until)
        else h.reason = undefined
      }
      this.version++
    }
    return this.version
  }

  isHeld(id: string, now: number): boolean {
    const h = this.state.get(id)
    return h !== undefined && h.until > now
  }

  /** Why `id` is held out as of `now`, and for how much longer at most. */
  snapshot(id: string, now: number): { readonly reason: HoldReason; readonly forMs: number } | undefined {
    const h = this.state.get(id)
    return h === undefined || h.until <= now || h.reason === undefined ? undefined : { reason: h.reason, forMs: h.until - now }
  }

  /** `id` said go-away, or discovery dropped it: a refusal soon after is a restart. */
  left(id: string, now: number): void {
    this.stateOf(id).leftAt = now
  }

  /**
   * A connection to `id` was refused. True when that reads as a restart (within the window after
   * it left): it is held out, and the refusal must not count against it.
   */
  refused(id: string, now: number): boolean {
    const h = this.state.get(id)
    if (h === undefined || now - h.leftAt >= this.windowMs) return false
    if (h.until <= now || h.reason !== "restarting") this.hold(h, h.leftAt + this.windowMs, "restarting")
    return true
  }

  /** The connection to `id` stopped answering pings: held out until it connects again, at most the window. */
  unresponsive(id: string, now: number): void {
    this.hold(this.stateOf(id), now + this.windowMs, "unresponsive")
  }

  /** A connection to `id` succeeded: back in at once. Returns why it was held, if it was. */
  connected(id: string): HoldReason | undefined {
    const h = this.state.get(id)
    if (h === undefined || h.until === 0) return undefined
    const reason = h.reason
    h.until = 0
    h.reason = undefined
    this.version++
    return reason
  }

  /**
   * The endpoints now known. The others' state is dropped, but for those that left within the
   * window as of `now`: back soon (discovery adds it again), a refusal is still a restart.
   */
  retain(ids: ReadonlyArray<string>, now: number = Number.POSITIVE_INFINITY): void {
    const keep = new Set(ids)
    for (const [id, h] of this.state) if (!keep.has(id) && now - h.leftAt >= this.windowMs) this.state.delete(id)
    this.version++
  }

  private hold(h: Held, until: number, reason: HoldReason): void {
    h.until = until
    h.reason = reason
    this.nextEndAt = Math.min(this.nextEndAt, until)
    this.version++
  }

  private stateOf(id: string): Held {
    let h = this.state.get(id)
    if (h === undefined) {
      h = { leftAt: Number.NEGATIVE_INFINITY, until: 0, reason: undefined }
      this.state.set(id, h)
    }
    return h
  }
}
