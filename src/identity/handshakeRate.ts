// How fast one source (an IPv4 address, an IPv6 prefix, a /64 by default: src/iip/sourceKey.ts; the issuer passes the
// key) may start TLS handshakes with the issuer (issuer.ts): a token bucket (src/mux/tokenBucket.ts)
// per source (a burst, refilled at a sustained rate), asked at the TCP accept, before any TLS work. A handshake
// costs the issuer a key exchange and a signature (and a client certificate's verification), and
// the connection share (issuerShares.ts) bounds only the connections open at once: a peer
// connecting, handshaking and closing in a loop holds a few and takes a core. Only sources whose
// bucket is not full are tracked (one that is full is as good as none), at most maxSources of
// them: a new source past that takes the place of the least recently updated one, so a spray of
// sources grows no memory. It does not share one bucket among the sources past maxSources: a
// spray (a host routed an IPv6 /48 holds 65,536 /64s) would keep the table full and empty that
// bucket, refusing every sidecar new to the issuer; a source looping is updated at each of its
// attempts, so it stays at the back and keeps its bucket unless maxSources other sources connect
// between two of them (and sources enough to do that already get far more handshakes, burst and
// rate each, than one issuer can make: a bound across sources is not this one's).
import { TokenBucket } from "../mux/tokenBucket.ts"

/** Sources tracked at most (an entry is ~220 bytes, measured: ~2.2 MB at most). */
export const handshakeSourcesTracked = 10_000

export interface HandshakeRateLimits {
  /** Handshakes one source may start a second, sustained (a whole number). */
  readonly ratePerSecond: number
  /** And at once from a full bucket: sidecars behind one source (a NAT, a node's /64) starting together. */
  readonly burst: number
  /** Sources tracked at once; past it a new one takes the least recently updated one's place (default handshakeSourcesTracked). */
  readonly maxSources?: number
}

/** Admitted, or refused by the source's bucket. */
export type HandshakeVerdict = "admitted" | "over-rate"

export class HandshakeRate {
  private readonly ratePerSecond: number
  private readonly burst: number
  private readonly maxSources: number
  private readonly now: () => number
  /** Least recently updated first (an update moves an entry to the end): what is full again is at the front. */
  private readonly buckets = new Map<string, TokenBucket>()
  /** Handshakes refused (their connections closed at accept). */
  refused = 0

  /** `now`: a monotonic clock in whole ms (a wall clock stepped back would refill nothing, one stepped forward everything). */
  constructor(limits: HandshakeRateLimits, now: () => number) {
    this.ratePerSecond = limits.ratePerSecond
    this.burst = limits.burst
    this.maxSources = limits.maxSources ?? handshakeSourcesTracked
    this.now = now
  }

  /** Sources tracked now (those whose bucket may not be full). */
  get tracked(): number {
    return this.buckets.size
  }

  /** Takes a handshake for a connection just accepted from `source`, or refuses it (its bucket is empty). */
  take(source: string): HandshakeVerdict {
    const now = this.now()
    this.forgetFull(now)
    let bucket = this.buckets.get(source)
    if (bucket === undefined) {
      // The least recently updated first: its source has waited longest since its last attempt.
      if (this.buckets.size >= this.maxSources) this.buckets.delete(this.buckets.keys().next().value!)
      bucket = new TokenBucket(this.ratePerSecond, this.burst, now)
    } else this.buckets.delete(source)
    this.buckets.set(source, bucket)
    if (bucket.take(now) === 0) return "admitted"
    this.refused++
    return "over-rate"
  }

  /** Drops the entries full again: from the front, the least recently updated, up to the first that is not. */
  private forgetFull(now: number): void {
    for (const [source, bucket] of this.buckets) {
      if (!bucket.isFull(now)) return
      this.buckets.delete(source)
    }
  }
}
