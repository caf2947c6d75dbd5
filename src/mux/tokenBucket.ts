// A token bucket on a clock its caller passes (ms, monotonic): `burst` tokens at most, `perSecond`
// added a second, taken one (or a few) at a time. Pure arithmetic, no timer. Two keyed tables hold
// these, each with its own policy for the keys it tracks: the routes' rate limits
// (src/sidecar/rateLimits.ts, asked on a request's path) and the identity issuer's TLS handshake
// rate per source (src/identity/handshakeRate.ts, asked at a TCP accept); and each HTTP/2
// connection's flood budgets (src/h2/h2Guards.ts, asked per frame that costs work).
//
// Tokens are counted in whole thousandths: `perSecond` tokens a second is `perSecond` thousandths a
// ms, so a whole ms at a whole rate refills a whole number of them and the sums stay exact over
// any number of steps. A float count drifts: 0.1 a ms added ten times is 0.9999999999999999, and
// a bucket of 100/s asked every ms admitted 9,091 in 100 s, not 10,000, each refusal saying a
// token was 1e-13 ms away. What a refill earns besides whole thousandths (a rate under one
// thousandth a ms, such as 0.5 a second, or a clock read at fractions of a ms: performance.now())
// is kept as the part of a thousandth earned, below 1, so nothing is lost between two close asks
// and nothing piles up rounding errors as the clock's value grows.

const unit = 1_000

export class TokenBucket {
  /** Thousandths added a ms (the tokens a second). */
  private readonly rate: number
  /** Its size, in thousandths. */
  private readonly capacity: number
  /** Whole thousandths held. */
  private tokens: number
  /** And the part of one more earned (0 to under 1). */
  private part = 0
  /** When they were brought up to date (ms, the last `now` asked). */
  private at: number

  /** Full at `now`. `perSecond` > 0; `burst` a whole number of tokens, at least 1. */
  constructor(perSecond: number, burst: number, now: number) {
    this.rate = perSecond
    this.capacity = burst * unit
    this.tokens = this.capacity
    this.at = now
  }

  /** 0 when `count` tokens (a whole number, default 1) were taken; else how long (ms, > 0) until they are there (nothing taken). */
  take(now: number, count = 1): number {
    this.refill(now)
    const wanted = count * unit
    if (this.tokens >= wanted) {
      this.tokens -= wanted
      return 0
    }
    // The whole thousandths missing (at least 1) less the part earned (under 1): above 0.
    return (wanted - this.tokens - this.part) / this.rate
  }

  /** Refilled to the brim: the same as a new bucket. */
  isFull(now: number): boolean {
    this.refill(now)
    return this.tokens >= this.capacity
  }

  private refill(now: number): void {
    const elapsed = now - this.at
    this.at = now
    // A clock read earlier than the last (never from a monotonic one) refills nothing; the next
    // read counts from it, so a clock stepped back does not refuse for the length of the step.
    if (elapsed <= 0) return
    const earned = elapsed * this.rate + this.part
    const whole = Math.floor(earned)
    if (this.tokens + whole >= this.capacity) {
      // What it earned past the brim is lost (a full bucket earns nothing), the part with it.
      this.tokens = this.capacity
      this.part = 0
      return
    }
    this.tokens += whole
    this.part = earned - whole
  }
}
