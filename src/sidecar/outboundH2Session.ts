// One h2c connection of the outbound listener (outboundH2.ts accepts it): an H2Connection in the
// server role whose streams become calls (outboundH2Call.ts) for outbound.ts, with what the
// connection layer leaves to its leg: the held answers' budget (503 overloaded past it), the PING
// floor for a caller that PINGs with no stream open, the caller's FIN (streams that can never end
// are cut), and the sweep's looks (stalled answers, a session quiet too long).
import type * as net from "node:net"
import { ErrorCode } from "../h2/frames.ts"
import { H2Connection, type H2ServerHandler } from "../h2/h2Connection.ts"
import { defaultLimits } from "../h2/h2Guards.ts"
import type { H2ConnectionEnded, H2Stream, H2StreamEnded } from "../h2/h2Streams.ts"
import type { TurnReads } from "../mux/turnReads.ts"
import { BODY_WINDOW, type BodyCredit, BodyShare } from "./h2BodyCredit.ts"
import type { OutboundCall } from "./outboundCall.ts"
import type { HeldAnswerBudget } from "./http1Listener.ts"
import { type CallSession, StreamCall } from "./outboundH2Call.ts"
import { heldAnswersRefusal, sendProxyError } from "./proxyError.ts"

/** Why A ended a caller's session (GOAWAY ENHANCE_YOUR_CALM): its debug data (src/h2's guard names the second), and the metric's reason. */
export type SessionEndReason = "too_many_pings" | "too_many_premature_resets"

/**
 * With no stream open and no answer being taken (a stream closed within the answer idle timeout), a
 * PING this soon after the caller's last one is a strike; one strike past PING_STRIKES and the
 * session ends with GOAWAY ENHANCE_YOUR_CALM "too_many_pings", as gRPC servers answer clients whose
 * keepalive is faster than they allow. A PING while a stream is open, or the first after a stream
 * opened, is not counted: grpc-go's BDP probe goes out as its answer's data comes in, after the
 * stream closed here.
 */
export const MIN_PING_INTERVAL_MS = 1000
export const PING_STRIKES = 2

/** A session the sweep found with no stream open for this many idle timeouts is asked to go (GOAWAY), whatever PINGs came. */
export const QUIET_TIMEOUTS = 2

export interface SessionOptions {
  readonly idleTimeoutMs: number
  readonly maxStreams: number
  readonly answerIdleMs: number
  /** The head limit (announced as SETTINGS_MAX_HEADER_LIST_SIZE); a head past it up to the decode budget is answered 431. */
  readonly headLimit: number
  readonly held: HeldAnswerBudget
  /** The stream windows granted to request bodies over all of the listener's sessions (h2BodyCredit.ts). */
  readonly bodyCredit: BodyCredit
  /** A request with a body was refused (REFUSED_STREAM): the budget, or `own` connection's share of it, had no room for its window. */
  readonly onBodyRefused: (own: BodyShare) => void
  /** The time a turn of the loop gives the reads of all of the listener's sessions (mux/turnReads.ts). */
  readonly turnReads: TurnReads
  readonly onEnded: (reason: SessionEndReason, session: H2cSession) => void
  readonly onClose: (session: H2cSession) => void
}

/** A head this large decodes (and is answered 431 past the head limit); larger, its stream is refused. */
const DECODE_HEADER_LIST = 65_536

export class H2cSession implements H2ServerHandler, CallSession {
  readonly connection: H2Connection
  readonly socket: net.Socket
  readonly remoteAddress: string
  readonly held: HeldAnswerBudget
  readonly bodyCredit: BodyCredit
  /** This connection's part of the body credit: at most its share (a caller's idle calls never take every other caller's room); its idle bodies may be reset for another connection's. */
  readonly bodyShare = new BodyShare((now) => this.idlestBody(now)?.idleSince(now) ?? Infinity, (now) => this.resetIdleBody(now))
  readonly open = new Set<StreamCall>()
  lastClosedAt = -Infinity
  callerGone = false
  /** The sweep's: since when it found no stream open and none opened, and whether one opened since its last look. */
  quietSince = performance.now()
  streamed = false
  private readonly handler: (call: OutboundCall) => void
  private readonly options: SessionOptions
  private lastPing = -Infinity
  private pingStrikes = 0
  private streamSincePing = false
  private isClosed = false
  /** The socket's unwritten bytes counted in the held answers (socketBacked) until it drains. */
  private socketCounted = 0
  private readonly idleTimer: NodeJS.Timeout
  private movedAtLook = -1
  private askedToGo = false

  constructor(socket: net.Socket, handler: (call: OutboundCall) => void, options: SessionOptions) {
    this.socket = socket
    this.remoteAddress = socket.remoteAddress ?? ""
    this.handler = handler
    this.options = options
    this.held = options.held
    this.bodyCredit = options.bodyCredit
    options.bodyCredit.join(this.bodyShare)
    this.connection = new H2Connection(socket, "server", this, {
      maxConcurrentStreams: options.maxStreams,
      // Every body starts small and grows as the mesh takes it (outboundH2Call.ts): one that stalls holds this.
      streamWindow: BODY_WINDOW,
      // What this connection's bodies hold is within their windows, which the listener's credit bounds
      // over all connections: the connection window need not close on held bytes too (src/h2's 4 MiB
      // default closed it once stalled bodies held 12 MiB, and a body the app read on the same
      // connection then waited for its window until its body deadline).
      ...(Number.isFinite(options.bodyCredit.max) ? { heldBytes: Math.max(options.bodyCredit.max, defaultLimits.heldBytes) } : {}),
      maxHeaderListSize: options.headLimit,
      decodeHeaderListSize: Math.max(options.headLimit, DECODE_HEADER_LIST),
      idleTimeoutMs: options.idleTimeoutMs
    }, options.turnReads)
    // HTTP/2 half-closes streams, never the connection (RFC 9113 §5.1): at the caller's FIN, streams
    // still waiting for its frames (a request's rest, window for an answer) never get them.
    socket.once("end", this.onCallerFin)
    socket.on("drain", this.releaseSocket)
    this.idleTimer = setInterval(this.idleLook, options.idleTimeoutMs)
    this.idleTimer.unref()
  }

  /**
   * Every idle timeout: a session with no byte moved either way since the last look is asked to go
   * (GOAWAY; its open streams may finish, however long), like an idle keep-alive connection; asked
   * already, it ends if its streams hold answer bytes that cannot leave (a caller that grants no
   * window keeps up to a window per stream here) or it has none. A stream with nothing to send (a
   * long poll, a quiet gRPC server stream) is idle, not stalled: it may wait.
   */
  private readonly idleLook = (): void => {
    const socket = this.socket
    const moved = socket.bytesRead + socket.bytesWritten
    if (moved !== this.movedAtLook) {
      this.movedAtLook = moved
      return
    }
    if (!this.askedToGo) {
      this.askedToGo = true
      return this.connection.close(Infinity)
    }
    let stalled = this.open.size === 0
    for (const call of this.open) if (call.answerWaiting) stalled = true
    if (stalled) this.connection.destroy("idle-stalled")
  }

  /**
   * A write found the connection's write budget spent: the answer bytes its socket holds (a caller
   * that reads slowly, its windows open) count in the held answers until it drains, as a stream's
   * own unsent bytes (waiting for its window) do.
   */
  socketBacked(): void {
    const buffered = this.socket.writableLength
    this.held.heldAnswerBytes += buffered - this.socketCounted
    this.socketCounted = buffered
  }

  private readonly releaseSocket = (): void => {
    this.held.heldAnswerBytes -= this.socketCounted
    this.socketCounted = 0
  }

  get destroyed(): boolean {
    return this.isClosed
  }

  onRequest(stream: H2Stream, fields: Array<string>, endStream: boolean): void {
    this.streamSincePing = true
    this.streamed = true
    // No room for one more body's window, in the budget or this connection's share: refused before
    // anything of it went on (RFC 9113 8.7: a client may send it again; grpc-js does so once by
    // itself). Bodies admitted keep their windows.
    if (!endStream && !this.bodyCredit.admit(this.bodyShare)) {
      this.connection.reset(stream, ErrorCode.REFUSED_STREAM)
      return this.options.onBodyRefused(this.bodyShare)
    }
    const call = new StreamCall(this, stream, fields, endStream, this.options.headLimit)
    const held = this.held
    // As an HTTP/1.1 request: while callers hold more answers unsent than the budget, none more is taken.
    if (held.heldAnswerBytes > held.maxHeldAnswerBytes) {
      held.refusedForHeldAnswers++
      sendProxyError(call, heldAnswersRefusal(held.heldAnswerBytes))
    } else this.handler(call)
  }

  onData(stream: H2Stream, chunk: Buffer, endStream: boolean): void {
    ;(stream.user as StreamCall | undefined)?.data(chunk, endStream)
  }

  onTrailers(stream: H2Stream): void {
    ;(stream.user as StreamCall | undefined)?.requestEnd()
  }

  onReset(stream: H2Stream): void {
    ;(stream.user as StreamCall | undefined)?.peerReset()
  }

  onEnd(stream: H2Stream, ended: H2StreamEnded): void {
    ;(stream.user as StreamCall | undefined)?.ended(ended.reason === "complete")
  }

  onWritable(stream: H2Stream): void {
    ;(stream.user as StreamCall | undefined)?.writable()
  }

  onClose(ended: H2ConnectionEnded): void {
    this.isClosed = true
    this.bodyCredit.leave(this.bodyShare)
    clearInterval(this.idleTimer)
    this.releaseSocket()
    if (ended.reason === "too_many_premature_resets") this.options.onEnded("too_many_premature_resets", this)
    this.options.onClose(this)
  }

  /** Of its calls whose body is idle at `now`, the one idle longest (the oldest of equals). */
  private idlestBody(now: number): StreamCall | undefined {
    let idlest: StreamCall | undefined
    let since = Infinity
    for (const call of this.open) {
      const idle = call.idleSince(now)
      if (idle < since) [idlest, since] = [call, idle]
    }
    return idlest
  }

  /** Its body idle longest at `now` is reset, its window given back: false when none is idle. */
  private resetIdleBody(now: number): boolean {
    const call = this.idlestBody(now)
    call?.resetIdle()
    return call !== undefined
  }

  /** The PING floor (see MIN_PING_INTERVAL_MS); src/h2's own ping budget bounds a flood. */
  onPing(): void {
    const now = performance.now()
    if (this.open.size > 0 || this.streamSincePing || now - this.lastClosedAt < this.options.answerIdleMs) {
      this.pingStrikes = 0
      this.streamSincePing = false
    } else if (now - this.lastPing < MIN_PING_INTERVAL_MS && ++this.pingStrikes > PING_STRIKES) {
      this.connection.destroy("too_many_pings", ErrorCode.ENHANCE_YOUR_CALM)
      return this.options.onEnded("too_many_pings", this)
    }
    this.lastPing = now
  }

  /** The sweep: stalled answers reset (how many), and a session quiet for QUIET_TIMEOUTS idle timeouts, PINGs or not, asked to go. */
  sweep(now: number): number {
    if (this.open.size > 0 || this.streamed) {
      this.quietSince = now
      this.streamed = false
    } else if (now - this.quietSince >= QUIET_TIMEOUTS * this.options.idleTimeoutMs) this.connection.close()
    let cut = 0
    for (const call of this.open) {
      if (!call.stalled()) continue
      call.cutStalled()
      cut++
    }
    return cut
  }

  private readonly onCallerFin = (): void => {
    this.callerGone = true
    for (const call of [...this.open]) call.callerEnded()
    // The answers still going out finish; then the connection ends (its socket with it).
    this.connection.close()
  }
}
