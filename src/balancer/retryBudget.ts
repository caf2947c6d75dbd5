// The retry budget of one service: retries may add at most `ratio` of the live traffic, plus a
// small floor so a quiet service can still retry (Linkerd's and Finagle's model). Every request
// the sidecar sends counts as a deposit; a retry is allowed only while
//
//   retries in the window < ratio x requests in the window + minPerSecond x window seconds
//
// so during a full outage of one endpoint the extra load the retries put on the others stays at
// the ratio however many requests fail. The window slides in ten buckets. Pure: time is `now` (ms).

export interface RetryBudgetOptions {
  /** Retries allowed per request sent, over the window. Default 0.2. */
  readonly ratio?: number
  /** Retries per second allowed on top, so low traffic can still retry. Default 10. */
  readonly minPerSecond?: number
  /** Default 10,000 ms. */
  readonly windowMs?: number
}

const BUCKETS = 10

export class RetryBudget {
  private readonly ratio: number
  private readonly floor: number
  private readonly bucketMs: number
  private readonly requests = new Float64Array(BUCKETS)
  private readonly retries = new Float64Array(BUCKETS)
  private bucketAt = 0
  private requestTotal = 0
  private retryTotal = 0

  constructor(options: RetryBudgetOptions = {}) {
    this.ratio = Math.max(0, options.ratio ?? 0.2)
    const windowMs = Math.max(BUCKETS, options.windowMs ?? 10_000)
    this.floor = Math.max(0, options.minPerSecond ?? 10) * (windowMs / 1000)
    this.bucketMs = windowMs / BUCKETS
  }

  /** A first try goes out. */
  deposit(now: number): void {
    this.advance(now)
    this.requests[this.bucketAt % BUCKETS]!++
    this.requestTotal++
  }

  /** Whether a retry may go out now; if so it is counted. */
  tryWithdraw(now: number): boolean {
    this.advance(now)
    if (this.retryTotal >= this.ratio * this.requestTotal + this.floor) return false
    this.retries[this.bucketAt % BUCKETS]!++
    this.retryTotal++
    return true
  }

  /** Retries still allowed in the current window. */
  available(now: number): number {
    this.advance(now)
    return Math.max(0, Math.floor(this.ratio * this.requestTotal + this.floor - this.retryTotal))
  }

  private advance(now: number): void {
    const bucket = Math.floor(now / this.bucketMs)
    const steps = Math.min(BUCKETS, bucket - this.bucketAt)
    for (let i = 1; i <= steps; i++) {
      const slot = (this.bucketAt + i) % BUCKETS
      this.requestTotal -= this.requests[slot]!
      this.retryTotal -= this.retries[slot]!
      this.requests[slot] = 0
      this.retries[slot] = 0
    }
    if (bucket > this.bucketAt) this.bucketAt = bucket
  }
}
