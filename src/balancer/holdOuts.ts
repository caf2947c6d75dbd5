// Endpoints held out of picks for a while without counting as failing: the balancer
// (serviceBalancer.ts) asks here besides the outlier detector.
//
// - Restarting: an endpoint that said go-away (a graceful stop), or that discovery dropped and added
//   again, and then refuses connections is restarting, not failing: ejecting it would double its next
//   ejection, so a rolling restart every few minutes would keep a healthy instance out for longer
//   each time. It is skipped until a connection to it succeeds again (the registry redials it in the
//   background), or until `windowMs` after the go-away; a refusal after that holds it as refused.
// - Refused (with `holdRefused`: for an owner that redials held endpoints, the sidecar's registry):
//   a connection to it could not be made (refused, timed out, its TLS handshake or identity refused,
//   not to be dialled). Skipped at once, not after the outlier detector's failures in a row (and
//   past its cap of half a service too: gRPC's round_robin picks only connected subchannels), until
//   a connection succeeds again. Each failed redial holds it `windowMs` more: were the redials to
//   stop, it is back in picks by then, and the next refusal holds it again. Without `holdRefused`
//   such a refusal is the outlier detector's (an ejection).
// - Unresponsive: the connection to it stopped answering pings (a frozen process). Skipped until a
//   connection succeeds again, at most `windowMs` (a failed redial holds it as refused).
//
// None adds a failure, a penalty or an ejection (so none lengthens a later ejection). Pure: time
// comes in as `now` (ms).

export type HoldReason = "restarting" | "refused" | "unresponsive"

/** Why a refused connection holds an endpoint out. */
export type RefusalHold = "restarting" | "refused"

export interface HoldOutOptions {
  /**
   * How long after a go-away (or being dropped by discovery) a refused connection means a restart, and the longest
   * an endpoint is held out without a refusal renewing it. Default 30,000; 0 holds nothing (a refusal counts as a
   * failure of the endpoint, for the outlier detector).
   */
  readonly windowMs?: number
  /**
   * Hold out an endpoint whose connection could not be made, not only a restarting one: for an owner
   * that redials held endpoints and reports the connection that succeeds. Default false.
   */
  readonly holdRefused?: boolean
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
  private readonly holdRefused: boolean
  private readonly state = new Map<string, Held>()
  /** The earliest hold end (Infinity when none): `versionAt` is O(1) between. */
  private nextEndAt = Number.POSITIVE_INFINITY
  private version = 0

  constructor(options: HoldOutOptions = {}) {
    this.windowMs = Math.max(0, options.windowMs ?? 30_000)
    this.holdRefused = options.holdRefused === true
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

  /** Why `id` is held out as of `now`, if it is. */
  reasonOf(id: string, now: number): HoldReason | undefined {
    const h = this.state.get(id)
    return h === undefined || h.until <= now ? undefined : h.reason
  }

  /** `id` said go-away, or discovery dropped it: a refusal soon after is a restart. */
  left(id: string, now: number): void {
    this.stateOf(id).leftAt = now
  }

  /**
   * A connection to `id` could not be made. Within the window after it left it is restarting (held
   * until the window ends); otherwise, with `holdRefused`, refused (held for the window from now,
   * renewed by each refusal). Returns the hold: the refusal must not count against it. Undefined
   * when not held: it counts as a failure of the endpoint.
   */
  refused(id: string, now: number): RefusalHold | undefined {
    const h = this.state.get(id)
    if (h !== undefined && now - h.leftAt < this.windowMs) {
      if (h.until <= now || h.reason !== "restarting") this.hold(h, h.leftAt + this.windowMs, "restarting", now)
      return "restarting"
    }
    if (!this.holdRefused || this.windowMs === 0) return undefined
    this.hold(this.stateOf(id), now + this.windowMs, "refused", now)
    return "refused"
  }

  /** The connection to `id` stopped answering pings: held out until it connects again, at most the window. */
  unresponsive(id: string, now: number): void {
    this.hold(this.stateOf(id), now + this.windowMs, "unresponsive", now)
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

  /** Holds `h` until `until`; the version moves only when it was not held (a renewal leaves the picks as they are). */
  private hold(h: Held, until: number, reason: HoldReason, now: number): void {
    const held = h.until > now
    h.until = until
    h.reason = reason
    this.nextEndAt = Math.min(this.nextEndAt, until)
    if (!held) this.version++
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
