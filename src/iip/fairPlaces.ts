// Every connection an IIP server holds (src/iip/server.ts), by source, for the connection cap once
// nothing unproven is left to make way (sourcePlaces.ts): before, a connection that had read one
// whole packet kept its place for good, so one host (mTLS off or permissive; or one pod with a
// valid certificate) that opened `maxConnections` connections and kept each alive had every peer
// dialling afterwards refused for as long as it liked. Places are shared between sources instead:
// a newcomer whose source would, with it, still hold fewer than the source holding the most takes
// one of that source's places (so the two never swap: no ping-pong between sources one apart, and
// the largest never drops below the newcomer's; sources holding one each refuse a new one as
// before). The source is the peer's address (IPv6: its prefix), as for the unproven, and not its
// certificate's identity: it is known at accept, before a handshake is paid for, and an identity
// names a service, whose replicas (each one pod, one address) would count as one hog.
//
// Which of its connections: the one idle longest, found CLOCK-wise (second chance) so that the
// request path pays nothing: each connection is queued in its source's order when accepted; at an
// eviction the oldest few are looked at, and one that served a request since it was queued (its
// budget's release count moved) or has one in flight goes to the back. The first looked at that is
// idle and unchanged goes; else the first idle one looked at; else, every one looked at busy (a
// hog keeping a request in flight on each), the first of those: a source over its share keeps no
// place by keeping requests open. An idle mesh one tells its peer first (server.ts closeTelling),
// so what the peer sent it that instant goes elsewhere. A busy mesh one gives its place up at once
// and drains (server.ts drainEvicted, evictedDrains.ts): told go-away, its peer sends nothing new
// there, what it had running still answers, and it closes once drained or 5 s on; such connections
// count with the evicted sockets still closing against the cap (past it, closed untold), so a hog
// gains nothing by them. A plain one, which cannot be told, is closed: its requests end as a
// connection loss.
import type { Connection } from "../mux/connection.ts"
import { SourcePlaces } from "./sourcePlaces.ts"

/** How many of a source's connections an eviction looks at, at most: bounded work per accept at the cap. */
const LOOKED_AT = 16

export interface Place {
  readonly connection: Connection
  readonly source: string
  /** Nothing in flight on the connection (its session's; replaced when it moves to mesh mode). */
  isIdle: () => boolean
  /** Its budget's release count when it was queued or last looked at. */
  releasesSeen: number
  /** Closes it for a newcomer when it is idle (a mesh session tells its peer first: server.ts). */
  closeIdle: (reason: string) => void
  /** Gives its place up for a newcomer with requests in flight (a mesh session drains: server.ts). */
  closeBusy: (reason: string) => void
}

export interface Eviction {
  readonly place: Place
  /** It had a request in flight: none of those looked at was idle. */
  readonly busy: boolean
  /** How many places its source held, and the newcomer's. */
  readonly held: number
  readonly newcomerHeld: number
}

export class FairPlaces {
  private readonly places = new SourcePlaces<Place>()

  add(connection: Connection, source: string, isIdle: () => boolean): Place {
    const close = (reason: string) => connection.close(reason, false)
    const place: Place = { connection, source, isIdle, releasesSeen: connection.budget.releases, closeIdle: close, closeBusy: close }
    this.places.add(place, source)
    return place
  }

  delete(place: Place): void {
    this.places.delete(place)
  }

  /** A newcomer from `source` would, with it, still hold fewer places than the source holding the most. */
  owes(source: string): boolean {
    return this.places.countOf(source) + 1 < this.places.most
  }

  /** The place a newcomer from `source` takes (removed here), or undefined when its source holds as many as fairness allows. */
  evictFor(source: string): Eviction | undefined {
    if (!this.owes(source)) return undefined
    const held = this.places.most
    const newcomerHeld = this.places.countOf(source)
    let idle: Place | undefined
    let busy: Place | undefined
    for (let looked = 0; looked < LOOKED_AT && looked < held; looked++) {
      const place = this.places.oldestOfLargest()!
      const releases = place.connection.budget.releases
      const isIdle = place.isIdle()
      if (isIdle && releases === place.releasesSeen) {
        idle = place
        break
      }
      place.releasesSeen = releases
      this.places.requeue(place)
      if (isIdle) idle ??= place
      else busy ??= place
    }
    const place = idle ?? busy!
    this.places.delete(place)
    return { place, busy: idle === undefined, held, newcomerHeld }
  }
}
