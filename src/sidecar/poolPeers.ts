// The peers (calling sidecars) of the inbound side's app pool (appPool.ts), each with the counts its
// share is judged by: the pool's sockets its requests hold and those it has waiting. inbound.ts
// names a request's peer (peerKey) and takes its record here once per request: the common case (the
// same connection as the last request) is one string comparison, no allocation; a new connection
// costs a slice and a map lookup. Records stay while idle, so steady traffic makes none; past
// MAX_IDLE_PEERS kept the idle ones go, so a caller dialing from ever new addresses grows nothing.
import { peerHost } from "./tunnelSeats.ts"

/** Idle records kept before they are swept (a sweep costs one pass over the records, this often at most). */
const MAX_IDLE_PEERS = 1024

/** One peer's hold on the pool. */
export class PoolPeer {
  /** Its verified identity (mTLS), else the address its connections come from. */
  readonly key: string
  /** Pool sockets its requests hold now (from dispatch to their end). */
  held = 0
  /** Its requests waiting for a socket now. */
  waiting = 0
  /** Among the pool's peers under their share with requests waiting (appPool.ts keeps it). */
  hungry = false
  constructor(key: string) {
    this.key = key
  }
}

/**
 * Whom a request counts under: under mTLS the caller's verified identity (it cannot pass for another
 * peer, nor dodge its share from more addresses; every replica of a calling service shares it), else
 * the host its connection comes from (`--max-tunnels-per-peer`'s peer).
 */
export class PoolPeers {
  private readonly byKey = new Map<string, PoolPeer>()
  /** The last request's connection (its remote address string, the same object for each of its requests) and peer. */
  private lastAddress: string | undefined = undefined
  private lastIdentity: string | undefined = undefined
  private lastPeer: PoolPeer | undefined = undefined

  /** The record of the peer at `remoteAddress` (host:port), or of `identity` when its connection is verified. */
  of(remoteAddress: string, identity: string | undefined): PoolPeer {
    if (remoteAddress === this.lastAddress && identity === this.lastIdentity && this.lastPeer !== undefined) return this.lastPeer
    const key = identity ?? peerHost(remoteAddress)
    let peer = this.byKey.get(key)
    if (peer === undefined) {
      if (this.byKey.size >= MAX_IDLE_PEERS) this.sweep()
      peer = new PoolPeer(key)
      this.byKey.set(key, peer)
    }
    this.lastAddress = remoteAddress
    this.lastIdentity = identity
    this.lastPeer = peer
    return peer
  }

  /** Forgets the idle records (a request that holds one keeps it: its counts go back to it). */
  private sweep(): void {
    for (const [key, peer] of this.byKey) if (peer.held === 0 && peer.waiting === 0) this.byKey.delete(key)
    this.lastAddress = undefined
    this.lastPeer = undefined
  }
}
