// Our own PINGs on an HTTP/2 connection (h2ConnectionCore.ts sends them, h2Connection.ts hands
// their ACKs here): each with an 8-byte payload of its own, matched to its ACK, a bounded number
// outstanding, and the last round trip measured. A leg (or the graceful close's two GOAWAYs) asks
// for one when it must know the peer read everything written before it: an ACK comes after the
// peer's frames before it were processed (RFC 9113 6.7, frames are processed in order).
// Never on the request path: a PING is sent only on a close, or after a cut request body.

/** One PING of ours waiting for its ACK. */
interface Outstanding {
  readonly payload: Buffer
  readonly sentAt: number
  readonly onAck: () => void
}

export class OwnPings {
  private readonly outstanding: Array<Outstanding> = []
  private readonly max: number
  private count = 0
  /** The last round trip measured (ms): a PING's ACK after it went; NaN until one came. */
  roundTripMs = Number.NaN

  constructor(max: number) {
    this.max = max
  }

  /**
   * A new PING's payload (for the writer), `onAck` called when its ACK comes; undefined when `max`
   * are outstanding already (a peer that never ACKs costs at most `max` of these).
   */
  next(now: number, onAck: () => void): Buffer | undefined {
    if (this.outstanding.length >= this.max) return undefined
    const payload = Buffer.allocUnsafe(8)
    // A count, and the time's low bits: a peer cannot guess the next one to ACK it early.
    payload.writeUInt32BE(++this.count >>> 0, 0)
    payload.writeUInt32BE((now * 1000) >>> 0, 4)
    this.outstanding.push({ payload, sentAt: now, onAck })
    return payload
  }

  /** An ACK came: its PING's `onAck`, if it was one of ours; one that matches none is dropped (the caller already charged it to the ping budget). */
  acked(payload: Buffer, now: number): void {
    const outstanding = this.outstanding
    for (let i = 0; i < outstanding.length; i++) {
      const ping = outstanding[i]!
      if (!ping.payload.equals(payload)) continue
      outstanding.splice(i, 1)
      this.roundTripMs = now - ping.sentAt
      return ping.onAck()
    }
  }

  /** The connection ended: no ACK will come, and nobody is called (each asker bounds its wait with a timer). */
  clear(): void {
    this.outstanding.length = 0
  }
}
