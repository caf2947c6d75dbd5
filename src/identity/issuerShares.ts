// The issuer's (issuer.ts) shared resources split between its peers: the signings in progress
// (maxInFlight in all; a share per connection and per source) and the connections
// (maxConnections in all, dropped by node past it; a share per source, counted from the
// TCP accept, so a TLS handshake not yet finished holds its place too). A peer flooding the issuer
// holds its share at most, and an honest sidecar from another source still finds a slot and a
// connection. A source is the key src/iip/sourceKey.ts gives an address (an IPv4 address, an IPv6 prefix, a /64 by default).
// Nothing waits here: a signing past a share is refused `too-many-requests` (the peer retries
// later) or, past the whole, `overloaded`; a connection past its source's share is closed.
import { ProofRefused } from "./proofs.ts"

/**
 * Signings in progress on one connection at once. Our client sends one request a connection; an
 * HTTP/1.1 connection answers in order anyway, so a peer pipelining more gains nothing from more.
 */
export const maxInFlightPerConnection = 4

export interface ShareLimits {
  readonly maxInFlight: number
  readonly maxInFlightPerSource: number
  readonly maxConnectionsPerSource: number
}

/** A count per key that forgets a key at zero: the map holds only the sources with something open. */
const add = (counts: Map<string, number>, key: string, delta: number): void => {
  const next = (counts.get(key) ?? 0) + delta
  if (next <= 0) counts.delete(key)
  else counts.set(key, next)
}

export class IssuerShares {
  private readonly limits: ShareLimits
  private inFlightNow = 0
  private connectionsNow = 0
  private readonly inFlightBySource = new Map<string, number>()
  private readonly inFlightByConnection = new WeakMap<object, number>()
  private readonly connectionsBySource = new Map<string, number>()
  /** Connections closed at accept, by the limit that closed them (node's own drops past maxConnections counted by the issuer). */
  readonly connectionsRefused = { total: 0, per_source: 0 }

  constructor(limits: ShareLimits) {
    this.limits = limits
  }

  get inFlight(): number {
    return this.inFlightNow
  }

  get connections(): number {
    return this.connectionsNow
  }

  /**
   * Takes a signing slot for `connection` (its socket) at `source`, or says why not; a slot taken
   * is given back with `release`, with the same two.
   */
  take(connection: object, source: string): ProofRefused | undefined {
    const onConnection = this.inFlightByConnection.get(connection) ?? 0
    if (onConnection >= maxInFlightPerConnection) {
      return new ProofRefused({ reason: "too-many-requests", detail: `this connection's share of signings in progress (${maxInFlightPerConnection}) is taken` })
    }
    if ((this.inFlightBySource.get(source) ?? 0) >= this.limits.maxInFlightPerSource) {
      return new ProofRefused({ reason: "too-many-requests", detail: `this source's share of signings in progress (${this.limits.maxInFlightPerSource}) is taken` })
    }
    if (this.inFlightNow >= this.limits.maxInFlight) return new ProofRefused({ reason: "overloaded", detail: `${this.limits.maxInFlight} signings in progress` })
    this.inFlightNow++
    this.inFlightByConnection.set(connection, onConnection + 1)
    add(this.inFlightBySource, source, 1)
    return undefined
  }

  release(connection: object, source: string): void {
    this.inFlightNow--
    this.inFlightByConnection.set(connection, (this.inFlightByConnection.get(connection) ?? 1) - 1)
    add(this.inFlightBySource, source, -1)
  }

  /** Whether a connection just accepted from `source` may stay; one that may is given back with `closed`. */
  admit(source: string): boolean {
    if ((this.connectionsBySource.get(source) ?? 0) >= this.limits.maxConnectionsPerSource) {
      this.connectionsRefused.per_source++
      return false
    }
    this.connectionsNow++
    add(this.connectionsBySource, source, 1)
    return true
  }

  closed(source: string): void {
    this.connectionsNow--
    add(this.connectionsBySource, source, -1)
  }
}
