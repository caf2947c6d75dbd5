// How fast one source address may start TLS handshakes with the issuer (issuer.ts): a token bucket
// per address (a burst, refilled at a sustained rate), asked at the TCP accept, before any TLS
// work. A handshake costs the issuer a key exchange and a signature (and a client certificate's
// verification), and the connection share (issuerShares.ts) bounds only the connections open at
// once: a peer connecting, handshaking and closing in a loop holds a few and takes a core. Only
// addresses whose bucket is not full are tracked (one that is full is as good as none), at most
// maxSources of them: a new address past that takes the place of the least recently updated one,
// so a spray of addresses grows no memory. It does not share one bucket among the addresses past
// maxSources: a spray (one IPv6 /64 holds 2^64 addresses) would keep the table full and empty
// that bucket, refusing every sidecar new to the issuer; an address looping is updated at each of
// its attempts, so it stays at the back and keeps its bucket unless maxSources other addresses
// connect between two of them (and addresses enough to do that already get far more handshakes,
// burst and rate each, than one issuer can make: a bound across addresses is not this one's).

/** Addresses tracked at most (an entry is ~200 bytes: ~2 MB at most). */
export const handshakeSourcesTracked = 10_000

export interface HandshakeRateLimits {
  /** Handshakes one address may start a second, sustained (a whole number). */
  readonly ratePerSecond: number
  /** And at once from a full bucket: sidecars behind one address (a NAT) starting together. */
  readonly burst: number
  /** Addresses tracked at once; past it a new one takes the least recently updated one's place (default handshakeSourcesTracked). */
  readonly maxSources?: number
}

/** Admitted, or refused by the address's bucket. */
export type HandshakeVerdict = "admitted" | "over-rate"

/** Tokens are counted in thousandths: a whole ms at a whole rate a second refills a whole number of them, so the sums stay exact. */
const unit = 1_000

interface Bucket {
  /** Handshakes it holds, in thousandths. */
  tokens: number
  /** When `tokens` was last brought up to date (ms, on `now`). */
  at: number
}

export class HandshakeRate {
  /** Thousandths of a handshake refilled a ms: the rate a second. */
  private readonly refillPerMs: number
  private readonly burst: number
  private readonly maxSources: number
  /** A bucket left alone this long is full again, however empty it was. */
  private readonly fullAfterMs: number
  private readonly now: () => number
  /** Least recently updated first (an update moves an entry to the end): what is full again is at the front. */
  private readonly buckets = new Map<string, Bucket>()
  /** Handshakes refused (their connections closed at accept). */
  refused = 0

  /** `now`: a monotonic clock in whole ms (a wall clock stepped back would refill nothing, one stepped forward everything). */
  constructor(limits: HandshakeRateLimits, now: () => number) {
    this.refillPerMs = limits.ratePerSecond
    this.burst = limits.burst * unit
    this.maxSources = limits.maxSources ?? handshakeSourcesTracked
    this.fullAfterMs = this.burst / this.refillPerMs
    this.now = now
  }

  /** Addresses tracked now (those whose bucket may not be full). */
  get tracked(): number {
    return this.buckets.size
  }

  /** Takes a handshake for a connection just accepted from `source`, or refuses it (its bucket is empty). */
  take(source: string): HandshakeVerdict {
    const now = this.now()
    this.forgetFull(now)
    let bucket = this.buckets.get(source)
    if (bucket === undefined) {
      // The least recently updated first: its address has waited longest since its last attempt.
      if (this.buckets.size >= this.maxSources) this.buckets.delete(this.buckets.keys().next().value!)
      bucket = { tokens: this.burst, at: now }
    } else this.buckets.delete(source)
    const taken = this.takeFrom(bucket, now)
    this.buckets.set(source, bucket)
    if (taken) return "admitted"
    this.refused++
    return "over-rate"
  }

  private takeFrom(bucket: Bucket, now: number): boolean {
    bucket.tokens = Math.min(this.burst, bucket.tokens + Math.max(0, now - bucket.at) * this.refillPerMs)
    bucket.at = now
    if (bucket.tokens < unit) return false
    bucket.tokens -= unit
    return true
  }

  /** Drops the entries full again: from the front, the least recently updated, up to the first that may not be. */
  private forgetFull(now: number): void {
    for (const [source, bucket] of this.buckets) {
      if (now - bucket.at < this.fullAfterMs) return
      this.buckets.delete(source)
    }
  }
}
