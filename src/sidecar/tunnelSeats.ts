// The places among one side's open upgraded connections (tunnels: WebSockets), taken before any
// work on an upgrade (inboundUpgrade.ts, outboundUpgrade.ts) and given back when it ends: at most
// `max` in all (`maxTunnels`) and, at the inbound side, `maxPerPeer` held by one peer sidecar (the
// address its connections come from: `maxTunnelsPerPeer`). Each tunnel holds an app connection and
// buffers: without the second bound, one peer could take every place and shut the others out. The
// outbound side has no per-peer bound: its callers are the pod's own apps, all one address
// (127.0.0.1), so a bound by address would only be a lower `maxTunnels` (and one by calling
// connection is one, what an upgraded connection is). Refusals are counted by the bound that
// refused them, with the tunnels' pool of unread bytes (`bytes`) and, outbound, the stream places
// on the picked endpoint's connections (`channels`), which the sides check themselves (a gauge
// reads them).
import type { TunnelLimit } from "../telemetry/metrics.ts"

export class TunnelSeats {
  readonly max: number
  /** Places one peer may hold; undefined: no bound by peer, and `peer` is not needed. */
  readonly maxPerPeer: number | undefined
  /** Places taken now. */
  open = 0
  readonly refused: Record<TunnelLimit, number> = { tunnels: 0, per_peer: 0, bytes: 0, channels: 0 }
  /** Places taken by each peer holding one at least (a peer's entry goes with its last place). */
  private readonly byPeer = new Map<string, number>()

  constructor(max: number, maxPerPeer?: number) {
    this.max = max
    this.maxPerPeer = maxPerPeer
  }

  /** A place (for `peer`, where places are bounded by peer), or the refusal's message (counted). */
  take(peer?: string): string | undefined {
    if (this.open >= this.max) {
      this.refused.tunnels++
      return `${this.open} upgraded connections open, as many as maxTunnels allows`
    }
    if (this.maxPerPeer !== undefined && peer !== undefined) {
      const held = this.byPeer.get(peer) ?? 0
      if (held >= this.maxPerPeer) {
        this.refused.per_peer++
        return `${held} upgraded connections open from ${peer}, as many as maxTunnelsPerPeer allows`
      }
      this.byPeer.set(peer, held + 1)
    }
    this.open++
    return undefined
  }

  /** The place back (`peer` as it was taken; once for each take that gave one). */
  give(peer?: string): void {
    this.open--
    if (this.maxPerPeer === undefined || peer === undefined) return
    const held = this.byPeer.get(peer) ?? 0
    if (held <= 1) this.byPeer.delete(peer)
    else this.byPeer.set(peer, held - 1)
  }

  /** An upgrade refused by a bound the side checks itself: room in its tunnels' pool of unread bytes, or (outbound) a stream place on the endpoint's connections. */
  refusedFor(limit: "bytes" | "channels"): void {
    this.refused[limit]++
  }
}

/** The host of a connection's `host:port` remote address (IPv6 as it comes, without brackets): the peer its tunnels count under. */
export const peerHost = (remoteAddress: string): string => {
  const colon = remoteAddress.lastIndexOf(":")
  return colon === -1 ? remoteAddress : remoteAddress.slice(0, colon)
}
