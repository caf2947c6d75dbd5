// The stream windows A's outbound h2c listener grants callers for their request bodies, over all
// its connections: the bytes callers may park here (received, not yet taken by the mesh) are at
// most these windows. outboundH2Session.ts admits a request with a body only while there is room
// for its first window (else REFUSED_STREAM: nothing of it was processed, a client retries it);
// outboundH2Call.ts grows the window of a body that moves and gives the credit back once the body
// is taken whole or its stream ends.
//
// Why windows and not the bytes held: a caller's HEADERS come before its DATA, so a budget of
// held bytes admits every stream of a burst (1,600 of them from 100 connections) before any byte
// counts, and each may then fill its window. Why no take-back: an honest upload pausing for the
// mesh's credit looks like a stalled one (w23-bodybudget reset one in 4 of 5 runs); an admitted
// body keeps its window to its end, so none waits on another's (the reverted per-connection budget
// deadlocked: streams the far app did not read yet held what the one it read needed).
//
// One connection's first windows hold at most a quarter of it (CONNECTION_SHARE), their growth at
// most half of that on top: every gRPC call is a request with a body, so an idle bidirectional call
// holds its first window as long as it is open, and one client library opening budget / 64 KiB of
// them left every other caller refused. A quarter is, at the defaults (64 MiB, --h2-max-streams
// 256), the first windows of a whole connection, so a connection within its streams is never
// refused for its share, its uploads grown or not (counted in one, growth took half the share: one
// channel's 248 unary calls beside 8 uploads under way: 96-104 ended UNAVAILABLE, h2c-body-one-channel.test.ts); four connections
// are needed to fill the budget. Not a grant given back while its stream is idle: HTTP/2 has no
// way to take back a stream's window (WINDOW_UPDATE only adds; a lower SETTINGS_INITIAL_WINDOW_SIZE
// takes from every stream of the connection at once, moving bodies under way below zero), so an
// idle stream may still send its whole window at any time; and not counting a first window until
// its bytes come admits a burst of HEADERS before any byte counts.
//
// So four connections of one client opening bodies they never send on filled the budget, and
// every other caller's request with a body was refused for as long as they stayed
// (h2c-body-evict-idle.test.ts). With the budget full, a connection holding less than its fair part
// (the budget over the connections holding windows, it included), or nothing, is admitted by
// resetting an idle body of the connection holding the most, when that one holds more than its
// fair part and more than the newcomer would (RST_STREAM ENHANCE_YOUR_CALM, grpc-js:
// RESOURCE_EXHAUSTED), as envoy's overload manager resets the streams holding the most buffer.
// Idle: its caller has sent nothing on it for BODY_IDLE_MS though its window is open and nothing of
// it waits for the mesh (outboundH2Call.ts): a body that moves, or waits on this side, is never
// reset. Whole windows only: the stream's end gives its window back.

/** A body's first window (SETTINGS_INITIAL_WINDOW_SIZE of A's h2c connections): what a body that never moves holds at most. */
export const BODY_WINDOW = 64 * 1024
/** A moving body's window at most: doubled each time the mesh took a whole window of it (1 MiB: src/h2's default, which no round trip stalls on loopback). */
export const MAX_BODY_WINDOW = 1 << 20
/** The part of the budget one connection's bodies may hold (the budget divided by this). */
export const CONNECTION_SHARE = 4

/**
 * How long a body's caller has sent nothing on it, its window open, before it may be reset to make
 * room for another connection's. At 1 s, a flood's uploads in one process with the sidecars (its
 * callers' loop starved) had 5-13 bodies a run that went that long unsent beside their
 * connection's others reset; a caller that sends nothing on a body it opened for 5 s is idle.
 */
export const BODY_IDLE_MS = 5000

/** One connection's part of the credit (its session's): the windows granted to its bodies, and how much of that is growth. */
export class BodyShare {
  granted = 0
  grown = 0
  /** Since when the connection's body idle longest at `now` (BODY_IDLE_MS) has been idle: Infinity when it has none. */
  readonly idleSince: (now: number) => number
  /** Resets that body, giving its window back: false when it has none. */
  readonly resetIdle: (now: number) => boolean

  constructor(idleSince: (now: number) => number = () => Infinity, resetIdle: (now: number) => boolean = () => false) {
    this.idleSince = idleSince
    this.resetIdle = resetIdle
  }
}

export class BodyCredit {
  /** The windows granted to bodies not yet taken whole (the gauge), and how much of that is growth past BODY_WINDOW. */
  granted = 0
  private grown = 0
  /** Requests with a body refused for want of room (the counter). */
  refused = 0
  /** Idle bodies reset to make room for another connection's (the counter). */
  reset = 0
  readonly max: number
  /** What one connection's bodies' first windows may hold: a quarter of the budget, at least one first window (their growth, half of it, comes on top). */
  readonly share: number
  /** Every connection's share (`join`ed at its start, `leave` at its end): where room is looked for once the budget is full. */
  private readonly shares = new Set<BodyShare>()

  constructor(max: number) {
    this.max = max
    this.share = Math.max(max / CONNECTION_SHARE, BODY_WINDOW)
  }

  join(own: BodyShare): void {
    this.shares.add(own)
  }

  leave(own: BodyShare): void {
    this.shares.delete(own)
  }

  /**
   * A new request with a body on the connection of `own`: its first window, or false (counted) when
   * the connection's share has no room for it, or the budget has none and no idle body of a bigger
   * holder could be reset for it (`makeRoom`).
   */
  admit(own: BodyShare): boolean {
    // The connection's first windows only (granted less grown): its bodies that grew never refuse its new ones.
    if (own.granted - own.grown + BODY_WINDOW > this.share || (this.granted + BODY_WINDOW > this.max && !this.makeRoom(own))) {
      this.refused++
      return false
    }
    this.granted += BODY_WINDOW
    own.granted += BODY_WINDOW
    return true
  }

  /**
   * The budget is full: resets for `own`, under its fair part, the body idle longest of the biggest
   * holder past its fair part and past what `own` would hold after (no two connections take a
   * window back and forth) that has one idle, true once a first window fits. Of holders holding
   * as much, the body idle longest goes: by connection order, an honest connection's bidi call
   * sending every 6 s was reset in a quiet gap beside three later connections' bodies never sent on.
   */
  private makeRoom(own: BodyShare): boolean {
    const holders: Array<BodyShare> = []
    for (const share of this.shares) if (share.granted > 0 && share !== own) holders.push(share)
    const fair = this.max / (holders.length + 1)
    if (own.granted > 0 && own.granted + BODY_WINDOW > fair) return false
    const now = performance.now()
    let victim: BodyShare | undefined
    let since = Infinity
    for (const holder of holders) {
      if (holder.granted <= fair || holder.granted <= own.granted + BODY_WINDOW || (victim !== undefined && holder.granted < victim.granted)) continue
      const idle = holder.idleSince(now)
      if (idle === Infinity || (victim !== undefined && holder.granted === victim.granted && idle >= since)) continue
      victim = holder
      since = idle
    }
    if (victim === undefined || !victim.resetIdle(now)) return false
    this.reset++
    // Its window, 64 KiB at least, is room for a first window: the budget was full, never past it.
    return this.granted + BODY_WINDOW <= this.max
  }

  /**
   * A body of the connection of `own` whose mesh reader took its whole `window`: how much more it
   * may have (its window doubled, at most MAX_BODY_WINDOW), 0 when it does not fit in the budget, or
   * growth would pass half of it or half the connection's share: the other half of the budget stays
   * for first windows, so bodies that grew never refuse new ones; the connection's growth is counted
   * apart from its first windows (at most a share and a half in all), so neither its own. `take` it
   * once granted.
   */
  room(own: BodyShare, window: number): number {
    const extra = Math.min(window, MAX_BODY_WINDOW - window)
    if (extra <= 0 || this.grown + extra > this.max / 2 || own.grown + extra > this.share / 2) return 0
    return this.granted + extra <= this.max ? extra : 0
  }

  take(own: BodyShare, extra: number): void {
    this.granted += extra
    this.grown += extra
    own.granted += extra
    own.grown += extra
  }

  /** A body of the connection of `own` taken whole, or its stream over: its `window` comes back. */
  release(own: BodyShare, window: number): void {
    this.granted -= window
    this.grown -= window - BODY_WINDOW
    own.granted -= window
    own.grown -= window - BODY_WINDOW
  }
}
