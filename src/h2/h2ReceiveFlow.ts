// Receive flow control of an HTTP/2 connection (h2Connection.ts; RFC 9113 5.2, 6.9): what the peer
// may still send on the connection and on each stream, and when to say it may send more.
//
// What was picked: a stream's window comes back only as its leg says it consumed the bytes, so a
// slow consumer's stream stops at its window (back-pressure to that caller alone); the connection's
// window comes back as DATA arrives while the bytes the legs hold over all streams stay under
// `heldBytes`, and past it only as they consume. So one slow stream holds at most its own window and
// never stalls the others, while what one connection can make the legs hold stays bounded.
import { ReceiveWindow } from "./flowWindow.ts"
import type { H2Stream } from "./h2Streams.ts"

/** What `received` found. */
export const RECEIVED = 0
export const CONNECTION_OVERFLOW = 1
export const STREAM_OVERFLOW = 2

export class ReceiveFlow {
  private readonly connection = new ReceiveWindow()
  private readonly heldBytes: number
  /** Bytes handed to legs and not consumed yet, and connection window held back while that is over `heldBytes`. */
  private held = 0
  private heldBack = 0

  constructor(heldBytes: number) {
    this.heldBytes = heldBytes
  }

  /** Raises the connection window to `size` after our SETTINGS: the WINDOW_UPDATE increment to send on stream 0. */
  raise(size: number): number {
    return this.connection.raise(size)
  }

  /** The connection's WINDOW_UPDATE due now (0: none), at most one a turn. */
  takeUpdate(): number {
    // Half the window, or less if the peer has less left to send: with bytes held back (`heldBack`)
    // it can, and waiting for half could then wait on bytes no one will consume. Nothing held back,
    // the peer has what is not released, and the two agree.
    return this.connection.takeUpdate(Math.min(this.connection.size / 2, this.connection.available))
  }

  /** Counts a DATA frame's `flowLength` on the connection only: its stream is gone or refused. */
  dropped(flowLength: number): boolean {
    if (!this.connection.receive(flowLength)) return false
    this.connection.release(flowLength)
    return true
  }

  /** Counts a DATA frame's part against both windows; `dataLength` of it goes to the leg, the rest (padding) is consumed at once. */
  received(stream: H2Stream, flowLength: number, dataLength: number): number {
    if (!this.connection.receive(flowLength)) return CONNECTION_OVERFLOW
    stream.recvAvailable -= flowLength
    if (stream.recvAvailable < 0) {
      this.connection.release(flowLength)
      return STREAM_OVERFLOW
    }
    const padding = flowLength - dataLength
    if (padding > 0) {
      this.connection.release(padding)
      stream.recvReleased += padding
    }
    stream.unconsumed += dataLength
    this.held += dataLength
    if (this.held <= this.heldBytes) this.connection.release(dataLength)
    else this.heldBack += dataLength
    return RECEIVED
  }

  /** The leg consumed `bytes` of the stream's DATA: the stream's WINDOW_UPDATE increment due now (0: none yet). */
  consumed(stream: H2Stream, bytes: number, peerSending: boolean): number {
    const n = Math.min(bytes, stream.unconsumed)
    if (n <= 0) return 0
    stream.unconsumed -= n
    this.unhold(n)
    if (!peerSending) return 0
    stream.recvReleased += n
    if (stream.recvReleased < stream.recvWindow / 2) return 0
    const increment = stream.recvReleased
    stream.recvAvailable += increment
    stream.recvReleased = 0
    return increment
  }

  /** The leg grants the stream `bytes` more window than it announced (a body that moves gets a larger one): the increment to send. */
  widen(stream: H2Stream, bytes: number): number {
    stream.recvWindow += bytes
    stream.recvAvailable += bytes
    return bytes
  }

  /** The stream is over: what its leg held and did not consume comes back to the connection. */
  closed(stream: H2Stream): void {
    this.unhold(stream.unconsumed)
    stream.unconsumed = 0
  }

  private unhold(bytes: number): void {
    this.held -= bytes
    if (this.heldBack === 0) return
    // At least what was consumed comes back, however much other streams still hold: else streams
    // that stopped reading, holding `heldBytes` between them, stalled every other stream's upload.
    // What stays held and what the peer may send still sum to at most `heldBytes` plus the window.
    const back = Math.min(this.heldBack, Math.max(bytes, this.heldBytes - this.held))
    this.heldBack -= back
    this.connection.release(back)
  }
}
