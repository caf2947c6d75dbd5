// Connection credit (PROTOCOL.md §13 `conncredit`), as HTTP/2 keeps a connection-level window:
// where both hellos name the feature and the receiver states its per-connection byte budget
// (`maxBytes`), the sender never has more than that of it outstanding, so the receiver never stops
// reading for bytes (§8) and a `/sys/cancel` or a ping written after a body is always read.
//
// The sender (CreditWindow, one per session): every stream chunk takes from it as well as from its
// stream's window (meshStreamOut.ts), but leaves a reserve (a chunk, or a quarter of the credit if
// less) to whole bodies, so streams whose readers stop never hold up calls with small bodies; each
// whole request body takes from it when written (meshCalls.ts: a call that does not fit is held in
// the one queue, in order); a whole body comes back when its answer's
// last packet arrives (the receiver released it before writing that), stream bytes when the
// receiver grants them back. The receiver (CreditReturn): stream bytes go back as its consumers
// take them (streams.ts: as they leave the connection's budget), at once when they are dropped or
// go to the tunnels' pool, and a dialer's streamed answers to its own calls as they arrive (its
// stated maxBytes bounds the acceptor's calls, PROTOCOL.md §10); it grants them on its control
// channel (`/sys/credit`, u32 bytes) once a quarter of the credit is waiting, or while the sender
// has no more than a batch (at least a chunk) left, so a sender is never kept waiting for bytes the
// receiver holds no more. Either way the grant
// goes at the end of the tick, one for all the releases of that tick (a read's, then those of the
// consumers it woke): a peer sending 1-byte chunks is not sent a 33-byte grant for each. Plain
// counters: a couple of integer operations per chunk.
import { MeshDefaults } from "../protocol/mesh.ts"
import type { SendWindow } from "./streams.ts"

/** Largest grant sent in one `/sys/credit` (its body is a u32). */
const MaxGrant = 0x4000_0000

/** The sender's credit: what the receiver's budget still has room for. */
export class CreditWindow {
  /** The receiver's stated `maxBytes`: the credit when nothing is outstanding. */
  readonly size: number
  /** What stream chunks leave to whole bodies: a chunk (the largest whole body), or a quarter of the credit if less. */
  private readonly reserve: number
  private credit: number
  /** Streams waiting for credit (waitWith), in the order they came, with the bytes each waits for: each there once, until woken or its window changes. */
  private readonly waiters = new Map<() => void, number>()

  constructor(size: number) {
    this.size = size
    this.reserve = Math.min(MeshDefaults.chunkBytes, Math.floor(size / 4))
    this.credit = size
  }

  /**
   * A whole body of `bytes` may be written now: it fits, or nothing is outstanding (a body larger
   * than the credit still goes alone, as a request alone always goes).
   */
  admits(bytes: number): boolean {
    return this.credit >= bytes || this.credit >= this.size
  }

  /** A whole body was written. */
  debit(bytes: number): void {
    this.credit -= bytes
  }

  /**
   * Credit back: a whole body answered, or the receiver's grant. Never above `size`: a peer granting
   * what it was never sent cannot make this side send past its budget.
   */
  add(bytes: number): void {
    this.credit = Math.min(this.size, this.credit + bytes)
    if (this.waiters.size === 0) return
    // In order, only as many as the room above the reserve serves, each counted for what it waits
    // for (it takes no more): a peer granting a byte at a time wakes one stream, not all of them.
    // One woken finds the room taken by another stream meanwhile waits again, for the next grant.
    let room = this.credit - this.reserve
    for (const [wake, want] of this.waiters) {
      if (room <= 0) return
      room -= want
      wake() // leaves the map (deleting the entry being visited is safe)
    }
  }

  /** Takes up to `want` bytes for a stream chunk if there is credit above the reserve (0 when there is none). */
  takeNow(want: number): number {
    const room = this.credit - this.reserve
    if (room <= 0) return 0
    const granted = Math.min(want, room)
    this.credit -= granted
    return granted
  }

  /**
   * Resolves when credit back gives room for this stream's turn (`want`: the most it then takes),
   * or when `stream`'s window changes (it may have closed: the caller looks). Woken by either, it
   * leaves the other's list: a peer granting what gives no room (0 bytes of credit, a byte of the
   * stream's window) wakes a stream that waits again at once, and each wake used to leave one more
   * resolver behind there.
   */
  waitWith(stream: SendWindow, want: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        this.waiters.delete(wake)
        stream.offChange(wake)
        resolve()
      }
      this.waiters.set(wake, want)
      stream.onChange(wake)
    })
  }
}

/** What a stream's bytes tell the credit it counts in (streams.ts): their arrival, and when this side holds them no more. */
export interface StreamCredit {
  received(bytes: number): void
  released(bytes: number): void
}

/** The receiver's side: what it holds of the credit it granted, and what it has to grant back. */
export class CreditReturn implements StreamCredit {
  private readonly size: number
  /** Grants wait until this much is released (a quarter of the credit). */
  private readonly batch: number
  /** While the sender has no more than this left, every release is granted at once (a stream waits at the reserve, no more than this). */
  private readonly low: number
  /** Of the credit, the bytes this side holds: stream bytes not taken, whole bodies not answered. */
  private held = 0
  /** Released, not yet granted. */
  private pending = 0
  /** A flush is due at the end of this tick. */
  private scheduled = false
  /** `atArrival`, made the first time it is asked for. */
  private passing: StreamCredit | undefined = undefined
  private readonly send: (bytes: number) => void

  constructor(size: number, send: (bytes: number) => void) {
    this.size = size
    this.batch = Math.min(MaxGrant, Math.ceil(size / 4))
    // A whole body is up to a chunk: below that the sender may be holding one back.
    this.low = Math.min(size, Math.max(this.batch, MeshDefaults.chunkBytes))
    this.send = send
  }

  /** Bytes counted in the credit arrived (a stream's, or a whole body). */
  received(bytes: number): void {
    this.held += bytes
    if (this.pending > 0 && this.size - this.held - this.pending <= this.low) this.schedule()
  }

  /** Stream bytes this side holds no more (taken, dropped, moved to the tunnels' pool): granted back. */
  released(bytes: number): void {
    this.held -= bytes
    this.pending += bytes
    if (this.pending >= this.batch || this.size - this.held - this.pending <= this.low) this.schedule()
  }

  /**
   * For streams whose bytes this side does not hold in the credit (a dialer's answers to its own
   * calls, meshCalls.ts): each byte granted back as it arrives, the stream bounded by its window alone.
   */
  get atArrival(): StreamCredit {
    return (this.passing ??= {
      received: (bytes) => {
        this.received(bytes)
        this.released(bytes)
      },
      released: () => {}
    })
  }

  /** A whole body answered: the sender counts it back itself when the answer arrives. */
  answered(bytes: number): void {
    this.held -= bytes
  }

  /**
   * Grants what is pending at the end of the tick, before anything more is read: all the releases
   * of a read go in one grant, those of the consumers it woke (promise jobs, which run after the
   * tick's callbacks) in at most one more.
   */
  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    process.nextTick(this.flush)
  }

  private readonly flush = (): void => {
    this.scheduled = false
    // At most MaxGrant a packet: `batch` is no larger, so one send covers all but a single large release.
    while (this.pending > 0) {
      const bytes = Math.min(this.pending, MaxGrant)
      this.pending -= bytes
      this.send(bytes)
    }
  }
}
