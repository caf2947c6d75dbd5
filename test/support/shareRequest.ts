// A request as the peers' share (src/sidecar/peerShare.ts) counts it, for the share's tests alone
// (peer-share.test.ts, peer-share-fair.test.ts): the fields a leg's exchange keeps, set by hand.
import { SEAT_NONE, type Seat, type Shared } from "../../src/sidecar/peerShare.ts"

export class ShareRequest implements Shared {
  seat: Seat = SEAT_NONE
  slot = -1
  paused = false
  pausedAt = 0
  taken = 0
  takenNoted = 0
  lookNoted = 0
  readonly peer: Shared["peer"]
  readonly name: string
  constructor(peer: Shared["peer"], name: string) {
    this.peer = peer
    this.name = name
  }
}
