// HTTP/2 flow control (RFC 9113 5.2, 6.9): the send windows the peer grants (connection and one
// per open stream) and the receive windows this side announces. The connection layer consults
// SendWindows before it hands DATA to the writer and feeds it the peer's WINDOW_UPDATEs and
// SETTINGS_INITIAL_WINDOW_SIZE; it counts each DATA frame the reader delivers against a
// ReceiveWindow (connection and stream) and, once a turn, writes the WINDOW_UPDATEs they return.
import { connectionError, DEFAULT_WINDOW_SIZE, ErrorCode, type H2FrameError, MAX_WINDOW_SIZE, streamError } from "./frames.ts"

/** A stream as SendWindows sees it: its window is a plain field of the stream's own object. */
export interface SendWindowed {
  sendWindow: number
}

export class SendWindows<S extends SendWindowed> {
  /** What the connection may still send; it may be negative only for streams (RFC 9113 6.9.2). */
  connection = DEFAULT_WINDOW_SIZE
  private initial = DEFAULT_WINDOW_SIZE
  private readonly open = new Set<S>()

  /** A new stream starts with the peer's current SETTINGS_INITIAL_WINDOW_SIZE. */
  add(stream: S): void {
    stream.sendWindow = this.initial
    this.open.add(stream)
  }

  remove(stream: S): void {
    this.open.delete(stream)
  }

  /** How many of `wanted` bytes the stream may send now (0 when either window is spent). */
  allowance(stream: S, wanted: number): number {
    return Math.max(0, Math.min(wanted, this.connection, stream.sendWindow))
  }

  /** `bytes` (a DATA frame's whole length) went to the writer. */
  consume(stream: S, bytes: number): void {
    this.connection -= bytes
    stream.sendWindow -= bytes
  }

  /** The peer's WINDOW_UPDATE on stream 0 (the reader has refused an increment of 0). */
  growConnection(increment: number): H2FrameError | undefined {
    if (this.connection + increment > MAX_WINDOW_SIZE)
      return connectionError(ErrorCode.FLOW_CONTROL_ERROR, "window-overflow", `the connection's send window would reach ${this.connection + increment}`)
    this.connection += increment
    return undefined
  }

  /** The peer's WINDOW_UPDATE on an open stream: past 2^31-1 that stream ends. */
  growStream(stream: S, streamId: number, increment: number): H2FrameError | undefined {
    if (stream.sendWindow + increment > MAX_WINDOW_SIZE)
      return streamError(streamId, ErrorCode.FLOW_CONTROL_ERROR, "window-overflow", `stream ${streamId}'s send window would reach ${stream.sendWindow + increment}`)
    stream.sendWindow += increment
    return undefined
  }

  /**
   * The peer's SETTINGS_INITIAL_WINDOW_SIZE (already checked <= 2^31-1 by the reader): every open
   * stream's window moves by the difference and may go negative; past 2^31-1 the connection ends.
   */
  setInitial(value: number): H2FrameError | undefined {
    const delta = value - this.initial
    if (delta > 0) {
      for (const stream of this.open)
        if (stream.sendWindow + delta > MAX_WINDOW_SIZE)
          return connectionError(ErrorCode.FLOW_CONTROL_ERROR, "window-overflow", `SETTINGS_INITIAL_WINDOW_SIZE ${value} pushes a stream's send window past 2^31-1`)
    }
    this.initial = value
    for (const stream of this.open) stream.sendWindow += delta
    return undefined
  }
}

/**
 * A window this side announced (the connection's, or one stream's). DATA the peer sends uses it
 * up; bytes the application has taken are given back in a WINDOW_UPDATE once half the window is
 * waiting, so a steady stream costs one update per half window, not one per frame.
 */
export class ReceiveWindow {
  /** The window size this side keeps announcing. */
  size: number
  /** What the peer may still send. */
  available: number
  private released = 0

  constructor(size: number = DEFAULT_WINDOW_SIZE) {
    this.size = size
    this.available = size
  }

  /** The peer sent `flowLength` bytes; false when it went past the window (FLOW_CONTROL_ERROR). */
  receive(flowLength: number): boolean {
    this.available -= flowLength
    return this.available >= 0
  }

  /** The application took `bytes` of what was received (padding counts as taken at once). */
  release(bytes: number): void {
    this.released += bytes
  }

  /** The increment to announce now, or 0 while less than `least` (half the window) waits to be given back. */
  takeUpdate(least: number = this.size / 2): number {
    if (this.released === 0 || this.released < least) return 0
    const increment = this.released
    this.released = 0
    this.available += increment
    return increment
  }

  /** Raises the announced size (e.g. the connection window past 65,535): the increment to send at once. */
  raise(size: number): number {
    const increment = Math.min(size, MAX_WINDOW_SIZE) - this.size
    if (increment <= 0) return 0
    this.size += increment
    this.available += increment
    return increment
  }
}
