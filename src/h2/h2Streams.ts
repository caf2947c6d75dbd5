// The stream record of the HTTP/2 connection layer (h2Connection.ts) and the typed ends it reports:
// one small object per stream, no emitter, handed to the leg's handler with plain values. The leg
// may hang its own state on `user`. Also the bounded memory of streams this side reset, whose
// in-flight frames are dropped rather than answered (RFC 9113 5.1, "closed").
import * as Data from "effect/Data"

/** Where a stream is (RFC 9113 5.1); idle streams have no record, reserved ones never exist (no push). */
export const StreamState = {
  /** Client role: waiting for the peer's MAX_CONCURRENT_STREAMS to allow it; no id yet. */
  QUEUED: 0,
  OPEN: 1,
  /** We sent END_STREAM. */
  HALF_CLOSED_LOCAL: 2,
  /** The peer sent END_STREAM. */
  HALF_CLOSED_REMOTE: 3,
  CLOSED: 4
} as const

export class H2Stream {
  /** 0 while queued (client role). */
  id = 0
  state: number = StreamState.OPEN
  /** What we may still send (flowWindow.ts's SendWindows keeps it). */
  sendWindow = 0
  /** The window this side announced for the stream: the initial one, and what `H2Connection.widen` added. */
  recvWindow: number
  /** What the peer may still send on this stream. */
  recvAvailable: number
  /** Consumed by the leg, not yet given back in a WINDOW_UPDATE. */
  recvReleased = 0
  /** Handed to the leg, not yet `consumed`. */
  unconsumed = 0
  /**
   * The peer's message's content-length (-1: none; client role, also none for the answer to a HEAD,
   * a 204 or a 304, which has no body) and its DATA so far: more, or less at its end, is a malformed
   * message, a stream error (RFC 9113 8.1.1).
   */
  declaredLength = -1
  receivedLength = 0
  /** Client role: the request is a HEAD (its answer's content-length declares no DATA). */
  headRequest = false
  /** Server role: a response head was sent; client role: the response head arrived. */
  answered = false
  /** Client role: interim (1xx) heads passed over before the final one (bounded: MAX_INTERIM_HEADS). */
  interimHeads = 0
  /** performance.now() at the stream's start (the premature reset rule reads it). */
  readonly startedAt: number
  /**
   * Server role: performance.now() at which the request's own deadline (grpc-timeout) passes, set
   * by the leg that reads it: the peer's reset after it is not premature, however soon (the caller
   * waited as long as it said it would; the outbound listener sets it from grpc-timeout or iip-timeout).
   */
  deadlineAt = Infinity
  /** DATA waiting for the send window, in order; `outEnd`: END_STREAM after it; `outTrailers`: then these. */
  out: Array<Buffer> | undefined = undefined
  outBytes = 0
  outEnd = false
  outTrailers: ReadonlyArray<string> | undefined = undefined
  /** Client role, queued: the request head to send once opened. */
  head: ReadonlyArray<string> | undefined = undefined
  /** `write` said false: `onWritable` is due once there is room. */
  wantsWritable = false
  /** The leg's own state for this stream. */
  user: unknown = undefined

  constructor(recvWindow: number, now: number) {
    this.recvWindow = recvWindow
    this.recvAvailable = recvWindow
    this.startedAt = now
  }
}

/**
 * Why a stream ended other than by its own END_STREAMs or the peer's RST_STREAM (which come as
 * `onReset`). `retryable`: the peer never processed it (GOAWAY above it, never sent, or cut before
 * the server's first SETTINGS): a caller
 * may send it again elsewhere (RFC 9113 8.7).
 */
export class H2StreamEnded extends Data.TaggedError("H2StreamEnded")<{
  /**
   * "goaway" (above the peer's GOAWAY's last id); a stream error's reason ("stream-window",
   * "headers-without-end-stream" ...); a queued request's "closing", or "past-peer-header-limit" (its
   * head past the peer's SETTINGS_MAX_HEADER_LIST_SIZE that came while it waited: never sent); the connection's end's reason;
   * or "complete" (NO_ERROR): our last frame went out after the peer's end, the stream is over.
   */
  readonly reason: string
  /** The HTTP/2 error code sent or received for it. */
  readonly code: number
  readonly retryable: boolean
}> {}

/** Why a connection ended: a frame rule, a guard (its budget's name), a timeout, the socket, or our close. */
export class H2ConnectionEnded extends Data.TaggedError("H2ConnectionEnded")<{
  readonly reason: string
  /** The GOAWAY error code sent (or received, for "peer-goaway"). */
  readonly code: number
  readonly message: string
}> {}

/** Client role: `request` could not make a stream. */
export class H2RequestRefused extends Data.TaggedError("H2RequestRefused")<{
  /** "closing" | "queue-full" | "ids-exhausted" | "past-peer-header-limit" (past the peer's SETTINGS_MAX_HEADER_LIST_SIZE) */
  readonly reason: string
}> {}

/** The last streams we reset, oldest dropped first: frames the peer sent before it saw the reset are dropped, not answered. */
export class RecentlyReset {
  private readonly ids: Int32Array
  private readonly set = new Set<number>()
  private next = 0

  constructor(capacity: number) {
    this.ids = new Int32Array(capacity)
  }

  add(id: number): void {
    const old = this.ids[this.next]!
    if (old !== 0) this.set.delete(old)
    this.ids[this.next] = id
    this.set.add(id)
    this.next = (this.next + 1) % this.ids.length
  }

  has(id: number): boolean {
    return this.set.has(id)
  }
}
