// The budgets an HTTP/2 connection (h2Connection.ts) keeps against a hostile peer: frames that force
// an answer or cost work without carrying a request (PING, SETTINGS, empty DATA, tiny
// WINDOW_UPDATEs, PRIORITY and unknown frames, frames on streams already over), the stream errors
// it makes us send, and rapid reset (CVE-2023-44487: streams opened then reset before any answer).
// Each is a token bucket (src/mux/tokenBucket.ts) read on the loop's clock as frames arrive: no timer,
// no object per frame.
// A spent budget ends the connection with GOAWAY ENHANCE_YOUR_CALM and the budget's name.
import { TokenBucket } from "../mux/tokenBucket.ts"

export interface RateLimit {
  readonly burst: number
  readonly perSecond: number
}

/** Every bound of one connection; `defaultLimits` holds the values and why. */
export interface H2Limits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS we announce; a stream past it is refused (REFUSED_STREAM). */
  readonly maxConcurrentStreams: number
  /** SETTINGS_INITIAL_WINDOW_SIZE we announce: what the peer may send a stream before the leg consumed it. */
  readonly streamWindow: number
  /** The connection's receive window (raised by a WINDOW_UPDATE on stream 0 after our SETTINGS). */
  readonly connectionWindow: number
  /**
   * Bytes received but not consumed, over all streams, past which the connection window is given
   * back only as the legs consume (below it, as DATA arrives: one slow stream does not stall the rest).
   */
  readonly heldBytes: number
  /** SETTINGS_MAX_HEADER_LIST_SIZE we announce. */
  readonly maxHeaderListSize: number
  /**
   * A header block as received (HEADERS and CONTINUATIONs) past this ends the connection; one within
   * it whose list decodes past the decode budget below is a stream error (the block is decoded whole
   * either way: the HPACK table stays in step), which ends only its stream.
   */
  readonly maxHeaderBlockBytes: number
  /**
   * What a header list may decode to before its stream is refused (RST_STREAM): at least
   * maxHeaderListSize. Above it, a leg that answers heads past its announced limit itself (431, as
   * an HTTP/1.1 listener does) gets those heads up to this budget.
   */
  readonly decodeHeaderListSize: number
  /** Our SETTINGS unacknowledged this long, or the peer's first SETTINGS not here: GOAWAY SETTINGS_TIMEOUT. */
  readonly settingsTimeoutMs: number
  /** No stream open and no frame read this long: the connection ends (GOAWAY NO_ERROR). */
  readonly idleTimeoutMs: number
  /** Our unwritten bytes (batch + socket buffer) past which `write` says false (back-pressure to the leg). */
  readonly writeBudgetBytes: number
  /** Our unwritten bytes past which the peer is taken as not reading: the connection ends. */
  readonly maxBufferedBytes: number
  /**
   * The socket holding unwritten bytes this long, at every tick and with no 'drain' between: the
   * connection ends. Partial progress is not seen, so a reader that never lets the buffer empty (the
   * write budget, about 1 MiB, in writeStallMs: under ~35 KB/s) is cut too.
   */
  readonly writeStallMs: number
  /** Client role: requests waiting for the peer's MAX_CONCURRENT_STREAMS to allow them. */
  readonly maxQueuedRequests: number
  /** After a graceful close, streams left this long are ended and the socket destroyed. */
  readonly closeTimeoutMs: number
  /**
   * Server role, a graceful close: the longest wait between the first GOAWAY (2^31-1) and the one
   * with the last stream id, for a peer that does not ACK the PING sent with the first.
   */
  readonly goAwayWaitMs: number
  /** Our own PINGs outstanding at most (h2Pings.ts): a peer that never ACKs holds no more than these. */
  readonly maxOwnPings: number
  /** How often the timeouts above are looked at (one timer per connection). */
  readonly tickMs: number
  readonly ping: RateLimit
  readonly settings: RateLimit
  /** Empty DATA without END_STREAM. */
  readonly emptyFrames: RateLimit
  /** WINDOW_UPDATEs under TINY_WINDOW_UPDATE. */
  readonly tinyWindowUpdates: RateLimit
  /** PRIORITY, unknown types, and frames on streams that are over (read and dropped). */
  readonly ignoredFrames: RateLimit
  /** Stream errors the peer caused, refused streams included (each costs us an RST_STREAM). */
  readonly streamErrors: RateLimit
  /** Premature resets (server role): the peer reset a stream before our answer, soon after it began, before its deadline (`H2Stream.deadlineAt`). */
  readonly prematureResets: RateLimit
  /** Streams closed before the ratio rule applies: more than half of them reset prematurely ends the connection. */
  readonly prematureMinStreams: number
  readonly prematureLifetimeMs: number
}

/**
 * The bounds as the sidecar's loopback gRPC legs need them: windows large enough that a 1 MiB
 * message never waits for a round trip, the rest at nghttp2's or Envoy's defaults (the premature
 * reset rule is Envoy's, which the outbound listener had on node:http2).
 */
export const defaultLimits: H2Limits = {
  maxConcurrentStreams: 256,
  streamWindow: 1 << 20,
  connectionWindow: 8 << 20,
  heldBytes: 4 << 20,
  maxHeaderListSize: 65_536,
  maxHeaderBlockBytes: 65_536,
  decodeHeaderListSize: 65_536,
  settingsTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  writeBudgetBytes: 1 << 20,
  maxBufferedBytes: 16 << 20,
  writeStallMs: 30_000,
  maxQueuedRequests: 1024,
  closeTimeoutMs: 5_000,
  // Far past a round trip in a cluster (loopback: under 1 ms), for a peer that never ACKs.
  goAwayWaitMs: 1_000,
  maxOwnPings: 8,
  tickMs: 1_000,
  // PINGs with none of our DATA since the last: a keepalive, or a flood (an answer costs us 17 bytes
  // in the batch). One after our DATA is not charged (h2Connection.ts onPing): gRPC clients that tune
  // their windows (grpc-go, grpc-java: BDP estimation) ping once a round trip as data arrives.
  ping: { burst: 1_000, perSecond: 200 },
  settings: { burst: 50, perSecond: 10 },
  emptyFrames: { burst: 1_000, perSecond: 100 },
  tinyWindowUpdates: { burst: 1_000, perSecond: 100 },
  ignoredFrames: { burst: 2_000, perSecond: 1_000 },
  streamErrors: { burst: 1_000, perSecond: 100 },
  prematureResets: { burst: 1_000, perSecond: 33 },
  prematureMinStreams: 500,
  prematureLifetimeMs: 1_000
}

/** A WINDOW_UPDATE below this many bytes costs a frame for almost no data. */
export const TINY_WINDOW_UPDATE = 128

/** The connection's budgets, made once per connection. */
export class Guards {
  readonly ping: TokenBucket
  readonly settings: TokenBucket
  readonly emptyFrames: TokenBucket
  readonly tinyWindowUpdates: TokenBucket
  readonly ignoredFrames: TokenBucket
  readonly streamErrors: TokenBucket
  private readonly resets: TokenBucket
  private readonly limits: H2Limits
  private closedStreams = 0
  private premature = 0

  constructor(limits: H2Limits, now: number) {
    this.limits = limits
    const make = (rate: RateLimit) => new TokenBucket(rate.perSecond, rate.burst, now)
    this.ping = make(limits.ping)
    this.settings = make(limits.settings)
    this.emptyFrames = make(limits.emptyFrames)
    this.tinyWindowUpdates = make(limits.tinyWindowUpdates)
    this.ignoredFrames = make(limits.ignoredFrames)
    this.streamErrors = make(limits.streamErrors)
    this.resets = make(limits.prematureResets)
  }

  /**
   * A stream closed; `premature`: the peer reset it before our answer, within prematureLifetimeMs
   * of its start. False when the connection must end: the premature budget is spent, or more than
   * half of at least prematureMinStreams closed streams were premature (Envoy's rule).
   */
  streamClosed(premature: boolean, now: number): boolean {
    this.closedStreams++
    if (!premature) return true
    this.premature++
    if (this.resets.take(now) > 0) return false
    return this.closedStreams < this.limits.prematureMinStreams || 2 * this.premature <= this.closedStreams
  }
}
