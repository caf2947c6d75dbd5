// The outbound listener's bound on premature resets (outboundH2.ts makes one per h2c session, each
// StreamCall reports its close to it): a caller whose streams are mostly reset by itself before any
// answer, soon after they began, loses its session. It covers the rapid reset (CVE-2023-44487) that
// the turn's-end wait cannot see: a request whose RST_STREAM comes in a later read than its
// END_STREAM has gone on already, and reached the far app, which begins work that nobody waits for
// and the reset then cuts. Only node's own reset bound (nghttp2's: 1,000 at once, 33 a second) ended
// such a session before, with GOAWAY INTERNAL_ERROR, after about 1,000 of them had reached the app.
// The rule is Envoy's premature-reset check (overload.premature_reset_total_stream_count 500,
// premature_reset_min_stream_lifetime_seconds 1, more than half), and a budget of premature resets
// at nghttp2's own defaults: a count of streams and of premature ones per session, each stream's
// lifetime read on the loop's clock at its close, no timer, closure or map per stream.
import * as http2 from "node:http2"
import { endSession, refill, type SessionEndReason } from "./outboundH2Session.ts"

/**
 * Streams a session must have closed before the rule applies: a short session that cancels most of
 * a few calls (a page left, a batch abandoned) keeps it. Above the budget of resets before a request
 * went on (UnsentResets' 250 at once), which keeps its own reason for a flood of those.
 */
export const PREMATURE_MIN_STREAMS = 500

/**
 * A reset within this long of its stream's start (before any answer) is premature. A reset once the
 * request's own deadline (`grpc-timeout`, `iip-timeout`) has passed is not, however short: its
 * caller waited as long as it said it would, and A's own deadline would have ended it then.
 */
export const PREMATURE_LIFETIME_MS = 1000

/**
 * A session's budget of premature resets, whatever its ratio (a token bucket): nghttp2's own defaults
 * for every reset, which A raises to a backstop (outboundH2.ts). The ratio alone lets a caller that
 * has each premature reset follow an answered stream (a cheap one) go on forever; so bounded, it does
 * no better than it did under nghttp2's bound, while the resets that are not premature (answered
 * streams, deadlines passed) cost it nothing.
 */
export const PREMATURE_RESET_BURST = 1000
export const PREMATURE_RESETS_PER_SECOND = 33

export const TOO_MANY_PREMATURE_RESETS = Buffer.from("too_many_premature_resets")

/** A session's streams and those its caller reset prematurely; past the rule, the session ends. */
export class PrematureResets {
  private readonly session: http2.ServerHttp2Session
  private readonly onEnded: (reason: SessionEndReason) => void
  private streams = 0
  private premature = 0
  /** The budget of premature resets left (PREMATURE_RESET_BURST), as of `at` (performance.now()). */
  private tokens = PREMATURE_RESET_BURST
  private at = performance.now()

  constructor(session: http2.ServerHttp2Session, onEnded: (reason: SessionEndReason) => void) {
    this.session = session
    this.onEnded = onEnded
  }

  /**
   * A stream closed (`premature`: its caller reset it so; `now`: performance.now(), read by the
   * close). Once PREMATURE_MIN_STREAMS have closed, more than half of them premature ends the
   * session: GOAWAY ENHANCE_YOUR_CALM (RFC 9113 §7), its other streams with it; so does a premature
   * reset past the session's budget, whatever the ratio. Checked as a premature one closes: a normal
   * close only lowers the ratio. Strictly more than half: a client that hedges (two requests, the
   * slower reset once the other is answered) stays at half, within the budget.
   */
  closed(premature: boolean, now: number): void {
    this.streams++
    if (!premature) return
    this.premature++
    this.tokens = refill(this.tokens, this.at, now, PREMATURE_RESET_BURST, PREMATURE_RESETS_PER_SECOND) - 1
    this.at = now
    if (this.tokens >= 0 && (this.streams < PREMATURE_MIN_STREAMS || 2 * this.premature <= this.streams)) return
    const session = this.session
    if (session.destroyed) return
    endSession(session, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, TOO_MANY_PREMATURE_RESETS)
    this.onEnded("too_many_premature_resets")
  }
}
