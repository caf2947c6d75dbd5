// The peer's request budget as this side of a mesh connection keeps to it (PROTOCOL.md §10
// `maxRequests`), owned by a MeshSession's calling side (meshCalls.ts): calls written on this
// side's channels and not yet wholly answered are counted, and a call made while the count is at
// the peer's budget waits here, in the order it was made, until an answer makes room. So does a call
// whose whole body the peer's connection credit has no room for (§13 `conncredit`, meshCredit.ts),
// until an answer or a grant gives it some. Past its budget the peer would stop reading, and a
// cancel sent then would wait unread behind the requests; held here, a call cancelled or timed out
// simply leaves the queue.
//
// A call with no body needs no credit: it goes past calls held for credit alone (the request budget
// has room), unless one of them is on its own channel (a channel's requests go in the order made,
// §5). Nothing else may pass a held body: a body that fits would take the credit it waits for.
// Across channels the protocol promises no order (§5: channels are independent).
import { Status } from "../protocol/constants.ts"
import { EnvelopeBytes, envelopeMetaBytes, MeshDefaults, type Meta } from "../protocol/mesh.ts"
import { checkPacket } from "../protocol/packet.ts"
import type { Call } from "./meshChannels.ts"
import type { CreditWindow } from "./meshCredit.ts"

/** A call waiting for room in the peer's request budget, with what it will send. */
export interface Held {
  readonly call: Call
  readonly path: string
  readonly body: Uint8Array | AsyncIterable<Uint8Array>
  readonly meta: Meta
}

export class HeldCalls {
  /** The peer's budget for this connection; Infinity: it stated none. */
  private readonly max: number
  /** Calls on this side's channels (control channel not counted) written and not wholly answered. */
  outstanding = 0
  /** Calls made while `outstanding` was at the peer's budget, in the order they were made. */
  private readonly queue: Array<Held> = []
  /** The peer's connection credit, undefined where it grants none. */
  private readonly credit: CreditWindow | undefined
  /** Held calls with no body: only they may pass a head waiting for credit. */
  private bodyless = 0
  /**
   * A scan found no bodyless call free to pass (each has a call before it on its channel): until
   * the queue changes none is, whatever credit comes, so a peer granting a byte at a time does not
   * make each grant look at every held call.
   */
  private noneCanPass = false

  constructor(max: number, credit: CreditWindow | undefined) {
    this.max = max
    this.credit = credit
  }

  /**
   * A call with `body` on `channel` may be written now: the peer has room for it, and none waits
   * before it (or only calls held for credit on other channels, and it has no body).
   */
  admits(body: Uint8Array | AsyncIterable<Uint8Array>, channel: Call["channel"]): boolean {
    if (this.outstanding >= this.max) return false
    if (this.queue.length === 0) return this.fits(body)
    return isBodyless(body) && channel.held === 0
  }

  /** A whole body fits in the credit (a streamed one takes it chunk by chunk as it goes). */
  private fits(body: Uint8Array | AsyncIterable<Uint8Array>): boolean {
    return this.credit === undefined || !(body instanceof Uint8Array) || body.length > MeshDefaults.chunkBytes || this.credit.admits(body.length)
  }

  /**
   * Holds a call until there is room. It throws now (nothing held), as a written one would, if its
   * request could never be encoded.
   */
  hold(call: Call, path: string, body: Uint8Array | AsyncIterable<Uint8Array>, meta: Meta, maxMetaBytes: number, timeoutMs: number): void {
    const whole = body instanceof Uint8Array && body.length <= MeshDefaults.chunkBytes
    const metaBytes = envelopeMetaBytes(meta, maxMetaBytes, timeoutMs)
    checkPacket(Status.RequestWhole, path, call.channel.id, EnvelopeBytes + metaBytes + (whole ? body.length : 0))
    this.queue.push({ call, path, body, meta })
    call.channel.held++
    this.changed(body)
  }

  /** A call joined or left the queue: which bodyless calls may pass is to be found again. */
  private changed(body: Uint8Array | AsyncIterable<Uint8Array>, left = false): void {
    this.noneCanPass = false
    if (isBodyless(body)) this.bodyless += left ? -1 : 1
  }

  /**
   * The longest-held call, out of the queue, when there is room for it; else the longest-held call
   * with no body behind it that none before it on its channel holds back; else undefined.
   */
  next(): Held | undefined {
    if (this.outstanding >= this.max || this.queue.length === 0) return undefined
    if (this.fits(this.queue[0]!.body)) return this.take(0)
    if (this.bodyless === 0 || this.noneCanPass) return undefined
    // Rare (the head waits for credit): the channels passed are remembered, so the scan stays linear.
    const before = new Set<Call["channel"]>()
    for (let index = 0; index < this.queue.length; index++) {
      const held = this.queue[index]!
      if (isBodyless(held.body) && !before.has(held.call.channel)) return this.take(index)
      before.add(held.call.channel)
    }
    this.noneCanPass = true
    return undefined
  }

  private take(index: number): Held {
    const held = index === 0 ? this.queue.shift()! : this.queue.splice(index, 1)[0]!
    held.call.channel.held--
    this.changed(held.body, true)
    return held
  }

  /** A held call given up (cancelled, timed out) leaves the queue. */
  remove(call: Call): void {
    const index = this.queue.findIndex((held) => held.call === call)
    if (index === -1) return
    const [held] = this.queue.splice(index, 1)
    call.channel.held--
    this.changed(held!.body, true)
  }

  /**
   * Every held call, out of the queue and handed to `each` in the order they were made: the
   * connection closed. A channel stops counting its held call just before that call is handed
   * over, not all at once: a caller told from `each` (the client's pool) still sees the channels
   * of the calls not handed over yet as taken.
   */
  drain(each: (held: Held) => void): void {
    this.bodyless = 0
    this.noneCanPass = false
    for (const held of this.queue.splice(0)) {
      held.call.channel.held--
      each(held)
    }
  }
}

/** A request with no body: it takes no connection credit. */
const isBodyless = (body: Uint8Array | AsyncIterable<Uint8Array>): boolean => body instanceof Uint8Array && body.length === 0
