// The state and the lifecycle of one HTTP/2 connection of the gRPC app legs (either role), under
// H2Connection (h2Connection.ts, which adds the reader's frames): the leg's calls (request,
// respond, write, trailers, reset, consumed, close, destroy), streams opened, queued and forgotten,
// the flush once a read or once a turn (mux/turnEnd.ts, so h2 sits above mux), the socket's
// events, the timers (SETTINGS timeouts, idle, write stall, graceful close) and the one way out,
// end(). The send side: h2Sender.ts; the budgets against a hostile peer: h2Guards.ts; receive flow
// control: h2ReceiveFlow.ts.
import { runningTurnEnds, TurnEnd } from "../mux/turnEnd.ts"
import type { TurnReads } from "../mux/turnReads.ts"
import { type FrameHandler, FrameReader } from "./frameReader.ts"
import { ErrorCode, type H2FrameError, SettingId } from "./frames.ts"
import type { FrameWriter } from "./frameWriter.ts"
import type { H2ClientHandler, H2ServerHandler, H2Socket } from "./h2Handlers.ts"
import { defaultLimits, Guards, type H2Limits } from "./h2Guards.ts"
import { OwnPings } from "./h2Pings.ts"
import { ReceiveFlow } from "./h2ReceiveFlow.ts"
import { H2Sender, type SendHost } from "./h2Sender.ts"
import { H2ConnectionEnded, H2RequestRefused, H2Stream, H2StreamEnded, RecentlyReset, StreamState } from "./h2Streams.ts"
import { headerListSize } from "./headerCheck.ts"
import { HpackDecoder } from "./hpackDecoder.ts"

/**
 * The end of every stream whose last frame was ours (a server's answer to a request that ended with
 * its head: every unary call): one shared, immutable value, since an error object made per call would
 * capture a stack each time (microseconds, measured on H2FrameError).
 */
const COMPLETE = new H2StreamEnded({ reason: "complete", code: ErrorCode.NO_ERROR, retryable: false })

const MAX_STREAM_ID = 2 ** 31 - 1
const RECENTLY_RESET = 1024

/** What a handler leaves for the end of the read it came in (H2ConnectionCore.atReadEnd). */
export interface ReadEndWork {
  atReadEnd(): void
}

/** Connections with bytes to write at the end of this turn: one setImmediate for all of them. */
const turnFlushes = new TurnEnd<H2ConnectionCore>((connection) => connection.flush())

type Handler = H2ServerHandler & H2ClientHandler

export abstract class H2ConnectionCore implements FrameHandler {
  readonly role: "server" | "client"
  private readonly socket: H2Socket
  protected readonly handler: Handler
  protected readonly limits: H2Limits
  private readonly reader: FrameReader
  protected readonly sender: H2Sender
  protected readonly writer: FrameWriter
  protected readonly decoder: HpackDecoder
  protected readonly recv: ReceiveFlow
  protected readonly guards: Guards
  protected readonly streams = new Map<number, H2Stream>()
  /** Client role: requests waiting for the peer's MAX_CONCURRENT_STREAMS. */
  private readonly queued: Array<H2Stream> = []
  protected readonly recentlyReset = new RecentlyReset(RECENTLY_RESET)
  protected lastPeerId = 0
  private nextId = 1
  protected peerMaxConcurrent = Infinity
  /** Our header blocks are held to it (fits): a list past it is not sent. */
  protected peerMaxHeaderList = Infinity
  /** The peer's first SETTINGS arrived: before it, no request can have been processed (G7 in end()). */
  protected peerSpoke = false
  /** Our PINGs waiting for their ACK. */
  protected readonly pings: OwnPings
  /**
   * The last stream id of a GOAWAY we sent (-1: none; server role, 2^31-1 between a graceful
   * close's first GOAWAY and its second) / received.
   */
  protected goAwaySent = -1
  protected goAwayReceived = -1
  protected goingAway = false
  protected endedWith: H2ConnectionEnded | undefined = undefined
  private inRead = false
  /** Work handlers left for the end of the read being handled (atReadEnd), the first readEndCount slots. */
  private readonly readEnds: Array<ReadEndWork | undefined> = []
  private readEndCount = 0
  private flushDue = false
  /** Handler calls of the current read, for counting the frames the reader dropped. */
  protected delivered = 0
  protected now: number
  private lastReadAt: number
  /** When a read of this connection was last put off for a later turn (turnReads). */
  private putOffAt = -Infinity
  protected settingsAckDue: number
  protected peerSettingsDue: number
  private stalledSince = 0
  private closeDue = 0
  private readonly timer: NodeJS.Timeout
  /** After our end: destroys a socket the peer does not let close. */
  private closeTimer: NodeJS.Timeout | undefined = undefined
  /** Server role, a graceful close: the second GOAWAY's bound, for a peer that does not ACK the PING. */
  private goAwayTimer: NodeJS.Timeout | undefined = undefined

  /** The reads' time budget a turn, shared with other connections (mux/turnReads.ts); none: every read handled as it comes. */
  private readonly turnReads: TurnReads | undefined
  /** The turn (TurnReads.turn) of this connection's last read: its next reads in that turn go on. */
  private readTurn = -1

  constructor(socket: H2Socket, role: "server" | "client", handler: H2ServerHandler | H2ClientHandler, limits: Partial<H2Limits> = {}, turnReads?: TurnReads) {
    this.socket = socket
    this.turnReads = turnReads
    this.role = role
    this.handler = handler as Handler
    this.limits = { ...defaultLimits, ...limits }
    const l = this.limits
    this.now = this.lastReadAt = performance.now()
    this.guards = new Guards(l, this.now)
    this.pings = new OwnPings(l.maxOwnPings)
    const host: SendHost = {
      sentEnd: (stream) => this.localEnd(stream),
      writable: (stream) => this.handler.onWritable(stream),
      flushSoon: () => this.flushSoon(),
      overflow: (stream) => this.fail(ErrorCode.INTERNAL_ERROR, "send-queue", `stream ${stream.id} queued ${stream.outBytes} bytes past its window`),
      socketBuffered: () => this.socket.writableLength
    }
    this.sender = new H2Sender(host, l.writeBudgetBytes, l.maxBufferedBytes)
    this.writer = this.sender.writer
    this.reader = new FrameReader(this, { role, maxHeaderBlockBytes: l.maxHeaderBlockBytes })
    this.decoder = new HpackDecoder({ maxHeaderListSize: Math.max(l.maxHeaderListSize, l.decodeHeaderListSize) })
    this.recv = new ReceiveFlow(l.heldBytes)
    // Ours first (RFC 9113 3.4): the client preface, then SETTINGS, then the larger connection window.
    if (role === "client") this.writer.preface()
    this.writer.settings([
      [SettingId.ENABLE_PUSH, 0],
      [SettingId.MAX_CONCURRENT_STREAMS, l.maxConcurrentStreams],
      [SettingId.INITIAL_WINDOW_SIZE, l.streamWindow],
      [SettingId.MAX_FRAME_SIZE, 16_384],
      [SettingId.MAX_HEADER_LIST_SIZE, l.maxHeaderListSize]
    ])
    const raise = this.recv.raise(l.connectionWindow)
    if (raise > 0) this.writer.windowUpdate(0, raise)
    this.settingsAckDue = this.peerSettingsDue = this.now + l.settingsTimeoutMs
    socket.on("data", this.onChunk)
    socket.on("drain", this.onDrain)
    socket.on("error", this.onSocketError)
    socket.on("close", this.onSocketClose)
    this.timer = setInterval(this.tick, l.tickMs)
    this.timer.unref()
    this.flush()
  }

  /** performance.now() at this connection's last read (a frame handled now came in it). */
  get readAt(): number {
    return this.lastReadAt
  }

  /** When this side last left the peer's bytes unread for a later turn: Infinity while it does (a read put off, none since). */
  get readsPutOffAt(): number {
    return this.turnReads?.waits(this.socket) === true ? Infinity : this.putOffAt
  }

  /** Open streams (queued requests not counted). */
  get streamCount(): number {
    return this.streams.size
  }

  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS (Infinity until it announces one). */
  get peerMaxConcurrentStreams(): number {
    return this.peerMaxConcurrent
  }

  /** The peer's SETTINGS_MAX_HEADER_LIST_SIZE (Infinity, "unlimited" in RFC 9113 6.5.2, until it announces one). */
  get peerMaxHeaderListSize(): number {
    return this.peerMaxHeaderList
  }

  /** Client role: every stream id is spent (2^31-1 reached, RFC 9113 5.1.1): `request` refuses, a new connection must take the next. */
  get idsSpent(): boolean {
    return this.nextId > MAX_STREAM_ID
  }

  /** Why the connection ended, once it has. */
  get ended(): H2ConnectionEnded | undefined {
    return this.endedWith
  }

  // ---- the leg's calls ----

  /** Client role: a new request; queued (no id yet) while the peer's MAX_CONCURRENT_STREAMS is reached. */
  request(fields: ReadonlyArray<string>, endStream: boolean): H2Stream | H2RequestRefused {
    if (this.endedWith !== undefined || this.goingAway || this.goAwayReceived >= 0) return new H2RequestRefused({ reason: "closing" })
    if (!this.fits(fields)) return new H2RequestRefused({ reason: "past-peer-header-limit" })
    const stream = new H2Stream(this.limits.streamWindow, performance.now())
    stream.headRequest = fields[0] === ":method" && fields[1] === "HEAD"
    if (this.streams.size >= this.peerMaxConcurrent || this.queued.length > 0) {
      if (this.queued.length >= this.limits.maxQueuedRequests) return new H2RequestRefused({ reason: "queue-full" })
      stream.state = StreamState.QUEUED
      stream.head = fields
      stream.outEnd = endStream
      this.queued.push(stream)
      return stream
    }
    if (this.nextId > MAX_STREAM_ID) return new H2RequestRefused({ reason: "ids-exhausted" })
    this.open(stream, fields, endStream)
    return stream
  }

  /**
   * Server role: the response head. False: its list is past the peer's SETTINGS_MAX_HEADER_LIST_SIZE
   * (the peer would reset the stream or end the connection): nothing was sent, the leg answers otherwise.
   */
  respond(stream: H2Stream, fields: ReadonlyArray<string>, endStream: boolean): boolean {
    if (!this.canSend(stream)) return true
    if (!this.fits(fields)) return false
    stream.answered = true
    this.sender.head(stream, fields, endStream)
    return true
  }

  /**
   * DATA on the stream, END_STREAM after it when asked; what the send window does not allow waits
   * in order. `chunk` must not change until written (large ones go to the socket by reference).
   * False: the stream's window or the connection's write budget is spent; `onWritable` follows.
   */
  write(stream: H2Stream, chunk: Buffer, endStream: boolean): boolean {
    return this.canSend(stream) && this.sender.data(stream, chunk, endStream)
  }

  /** The last HEADERS (END_STREAM), after any DATA still waiting for the window. False, nothing sent: past the peer's SETTINGS_MAX_HEADER_LIST_SIZE (respond). */
  trailers(stream: H2Stream, fields: ReadonlyArray<string>): boolean {
    if (!this.canSend(stream)) return true
    if (!this.fits(fields)) return false
    this.sender.trailers(stream, fields)
    return true
  }

  /** RST_STREAM from our side (no `onReset`/`onEnd` for it: the leg knows). */
  reset(stream: H2Stream, code: number): void {
    if (stream.state === StreamState.CLOSED) return
    if (stream.state === StreamState.QUEUED) {
      stream.state = StreamState.CLOSED
      // Out of the queue now: left in it, cancelled requests filled maxQueuedRequests while nothing waited.
      const at = this.queued.indexOf(stream)
      if (at >= 0) this.queued.splice(at, 1)
      return
    }
    this.writer.rstStream(stream.id, code)
    this.recentlyReset.add(stream.id)
    this.closeStream(stream, false)
    this.flushSoon()
  }

  /** The leg took `bytes` of the DATA it was given on `stream`: that much of its windows comes back. */
  consumed(stream: H2Stream, bytes: number): void {
    if (this.endedWith !== undefined) return
    const peerSending = stream.state === StreamState.OPEN || stream.state === StreamState.HALF_CLOSED_LOCAL
    const increment = this.recv.consumed(stream, bytes, peerSending)
    if (increment > 0) this.writer.windowUpdate(stream.id, increment)
    // The connection's window may have come back too (written with the next flush).
    this.flushSoon()
  }

  /**
   * The leg grants the peer `bytes` more of the stream's window than the connection's initial one
   * (a WINDOW_UPDATE now): a stream may start small and grow while its leg reads it. False when the
   * peer sends nothing more on it (nothing granted).
   */
  widen(stream: H2Stream, bytes: number): boolean {
    if (this.endedWith !== undefined || !(stream.state === StreamState.OPEN || stream.state === StreamState.HALF_CLOSED_LOCAL)) return false
    this.writer.windowUpdate(stream.id, this.recv.widen(stream, bytes))
    this.flushSoon()
    return true
  }

  /**
   * A PING of ours; `onAck` once its ACK comes, which says the peer read every frame written before
   * it. False (nothing sent, `onAck` never called) when the connection ended or maxOwnPings are
   * outstanding; `onAck` is never called either if the connection ends first: the asker bounds its
   * wait with a timer of its own. The round trip measured: `roundTripMs`.
   */
  ping(onAck: () => void): boolean {
    if (this.endedWith !== undefined) return false
    const payload = this.pings.next(performance.now(), onAck)
    if (payload === undefined) return false
    this.writer.ping(payload, false)
    this.flushSoon()
    return true
  }

  /** The last round trip one of our PINGs measured (ms), NaN until one was ACKed. */
  get roundTripMs(): number {
    return this.pings.roundTripMs
  }

  /**
   * Graceful end: streams at or below the last stream id of our GOAWAY finish, then the socket
   * closes. Server role, two GOAWAYs (RFC 9113 6.8): 2^31-1 first, with a PING, so a stream the
   * peer opened as we closed is still taken; at the PING's ACK (the peer read the GOAWAY: it opens
   * nothing more), or goAwayWaitMs at most, the one with the last stream id; one only once the
   * peer's FIN came. Client role: one, naming no stream of the peer's (it opens none). Streams left after `timeoutMs` (closeTimeoutMs
   * unless the leg has a deadline of its own, a drain's) are cut. Asked again, only a sooner
   * deadline is taken.
   */
  close(timeoutMs: number = this.limits.closeTimeoutMs): void {
    if (this.endedWith !== undefined) return
    if (this.goingAway) {
      this.closeDue = Math.min(this.closeDue, performance.now() + timeoutMs)
      return
    }
    this.goingAway = true
    this.closeDue = performance.now() + timeoutMs
    // A peer whose FIN came opens nothing more: one GOAWAY is enough.
    if (this.role === "server" && !this.socket.readableEnded) {
      this.goAwaySent = MAX_STREAM_ID
      this.writer.goAway(MAX_STREAM_ID, ErrorCode.NO_ERROR)
      this.ping(this.lastGoAway)
      this.goAwayTimer = setTimeout(this.lastGoAway, Math.min(timeoutMs, this.limits.goAwayWaitMs))
      this.goAwayTimer.unref()
    } else {
      this.goAwaySent = this.role === "server" ? this.lastPeerId : 0
      this.writer.goAway(this.goAwaySent, ErrorCode.NO_ERROR)
    }
    this.refuseQueued("closing")
    this.flushSoon()
    if (this.streams.size === 0 && this.goAwaySent !== MAX_STREAM_ID) this.finish("closed", ErrorCode.NO_ERROR, "closed")
  }

  /** Server role, a graceful close's second GOAWAY: the last stream taken; streams opened after it are never processed. */
  private readonly lastGoAway = (): void => {
    clearTimeout(this.goAwayTimer)
    if (this.endedWith !== undefined || this.goAwaySent !== MAX_STREAM_ID) return
    this.goAwaySent = this.lastPeerId
    this.writer.goAway(this.lastPeerId, ErrorCode.NO_ERROR)
    this.flushSoon()
    if (this.streams.size === 0) this.finish("closed", ErrorCode.NO_ERROR, "closed")
  }

  /** Ends the connection now: GOAWAY(code), every stream ended with `reason`. */
  destroy(reason = "destroyed", code: number = ErrorCode.NO_ERROR): void {
    this.fail(code, reason, `the connection was destroyed: ${reason}`)
  }

  /** Writes what this turn produced (the turn's end calls it; so does the end of each read). */
  flush(): void {
    this.flushDue = false
    // Once ended, end() wrote the last frames and ended the socket: a write now fails (write after end).
    if (this.socket.destroyed || this.endedWith !== undefined) return
    const increment = this.recv.takeUpdate()
    if (increment > 0) this.writer.windowUpdate(0, increment)
    this.writer.writeTo(this.socket)
    if (this.socket.writableLength > this.limits.maxBufferedBytes && this.endedWith === undefined) {
      // A GOAWAY would only queue behind what the peer does not read.
      const unread = this.socket.writableLength
      this.socket.destroy()
      this.end(new H2ConnectionEnded({ reason: "peer-not-reading", code: ErrorCode.ENHANCE_YOUR_CALM, message: `${unread} bytes unread by the peer` }))
    }
  }

  // ---- the reader's frames: h2Connection.ts ----

  abstract onData(streamId: number, data: Buffer, flowLength: number, endStream: boolean): void
  abstract onHeaders(streamId: number, block: Buffer, endStream: boolean): void
  abstract onRstStream(streamId: number, errorCode: number): void
  abstract onSetting(id: number, value: number): void
  abstract onSettingsEnd(): void
  abstract onSettingsAck(): void
  abstract onPing(payload: Buffer, ack: boolean): void
  abstract onGoAway(lastStreamId: number, errorCode: number): void
  abstract onWindowUpdate(streamId: number, increment: number): void
  abstract onError(error: H2FrameError): void

  // ---- streams ----

  private open(stream: H2Stream, fields: ReadonlyArray<string>, endStream: boolean): void {
    stream.id = this.nextId
    this.nextId += 2
    stream.state = StreamState.OPEN
    this.streams.set(stream.id, stream)
    this.sender.head(stream, fields, endStream)
    this.sender.opened(stream)
  }

  protected openQueued(): void {
    while (this.queued.length > 0 && this.streams.size < this.peerMaxConcurrent && this.endedWith === undefined && this.nextId <= MAX_STREAM_ID) {
      const stream = this.queued.shift()!
      if (stream.state !== StreamState.QUEUED) continue
      const head = stream.head!
      stream.head = undefined
      // The peer's SETTINGS may have come since, with a limit this head is past: never sent.
      if (!this.fits(head)) {
        stream.state = StreamState.CLOSED
        this.handler.onEnd(stream, new H2StreamEnded({ reason: "past-peer-header-limit", code: ErrorCode.REFUSED_STREAM, retryable: false }))
        continue
      }
      // A queued stream's END_STREAM goes with its head only if nothing was written after it.
      const endWithHead = stream.outEnd && stream.out === undefined
      if (endWithHead) stream.outEnd = false
      this.open(stream, head, endWithHead)
    }
  }

  protected refuseQueued(reason: string): void {
    for (const stream of this.queued.splice(0)) {
      if (stream.state !== StreamState.QUEUED) continue
      stream.state = StreamState.CLOSED
      this.handler.onEnd(stream, new H2StreamEnded({ reason, code: ErrorCode.REFUSED_STREAM, retryable: true }))
    }
  }

  /** A stream never handed to the leg: RST_STREAM, counted as a stream error the peer caused. */
  protected refuse(streamId: number, code: number): void {
    this.recentlyReset.add(streamId)
    if (this.guards.streamErrors.take(this.now) > 0) return this.calm("stream-errors")
    this.writer.rstStream(streamId, code)
  }

  /** A stream error on a stream the leg knows: RST_STREAM, then `onEnd`. */
  protected streamFailed(stream: H2Stream, code: number, reason: string): void {
    if (this.guards.streamErrors.take(this.now) > 0) return this.calm("stream-errors")
    this.writer.rstStream(stream.id, code)
    this.recentlyReset.add(stream.id)
    // The leg hears of the end before the connection may finish for it (onClose comes last).
    this.forgetStream(stream, false)
    this.handler.onEnd(stream, new H2StreamEnded({ reason, code, retryable: false }))
    this.afterStreamClosed()
  }

  protected frameFailed(error: H2FrameError): void {
    if (error.scope === "connection") return this.fail(error.code, error.reason, error.message)
    const stream = this.streams.get(error.streamId)
    if (stream !== undefined) return this.streamFailed(stream, error.code, error.reason)
    this.refuse(error.streamId, error.code)
  }

  protected isIdle(streamId: number): boolean {
    return this.role === "server" ? streamId > this.lastPeerId || streamId % 2 === 0 : streamId >= this.nextId || streamId % 2 === 0
  }

  protected ignored(): void {
    if (this.guards.ignoredFrames.take(this.now) > 0) this.calm("ignored-frames")
  }

  private localEnd(stream: H2Stream): void {
    if (stream.state === StreamState.HALF_CLOSED_REMOTE) {
      // The leg heard the peer's end long ago and may not know when our queued END_STREAM or
      // trailers went out: without this it could not free the stream's place. As streamFailed: the
      // end before the connection may finish for it (onClose comes last).
      const kept = this.forgetStream(stream, false)
      this.handler.onEnd(stream, COMPLETE)
      if (kept) this.afterStreamClosed()
    } else if (stream.state === StreamState.OPEN) stream.state = StreamState.HALF_CLOSED_LOCAL
  }

  protected remoteEnd(stream: H2Stream): void {
    if (stream.state === StreamState.OPEN) stream.state = StreamState.HALF_CLOSED_REMOTE
    else if (stream.state === StreamState.HALF_CLOSED_LOCAL) stream.state = StreamState.CLOSED
  }

  /** After the handler saw the stream's last frame: a stream over both ways is forgotten. */
  protected closeIfDone(stream: H2Stream): void {
    if (stream.state === StreamState.CLOSED && this.streams.get(stream.id) === stream) this.closeStream(stream, false)
  }

  protected closeStream(stream: H2Stream, premature: boolean): void {
    if (this.forgetStream(stream, premature)) this.afterStreamClosed()
  }

  /** The stream is over and out of the map; false when it was not there or a guard ended the connection. */
  protected forgetStream(stream: H2Stream, premature: boolean): boolean {
    stream.state = StreamState.CLOSED
    if (this.streams.get(stream.id) !== stream) return false
    this.streams.delete(stream.id)
    this.sender.forget(stream)
    this.recv.closed(stream)
    if (this.guards.streamClosed(premature, this.now)) return true
    this.calm("too_many_premature_resets")
    return false
  }

  /** A stream left: a queued request may take its place, and after a GOAWAY the last one ends the connection. */
  private afterStreamClosed(): void {
    this.openQueued()
    if (((this.goingAway && this.goAwaySent !== MAX_STREAM_ID) || this.goAwayReceived >= 0) && this.streams.size === 0) this.finish("closed", ErrorCode.NO_ERROR, "the last stream ended after GOAWAY")
  }

  // ---- sending (h2Sender.ts does the frames) ----

  /** Within the peer's SETTINGS_MAX_HEADER_LIST_SIZE (unlimited until it announces one, RFC 9113 6.5.2). */
  private fits(fields: ReadonlyArray<string>): boolean {
    return this.peerMaxHeaderList === Infinity || headerListSize(fields) <= this.peerMaxHeaderList
  }

  private canSend(stream: H2Stream): boolean {
    return this.endedWith === undefined && (stream.state === StreamState.OPEN || stream.state === StreamState.HALF_CLOSED_REMOTE || stream.state === StreamState.QUEUED)
  }

  private flushSoon(): void {
    if (this.flushDue || this.inRead) return
    this.flushDue = true
    // From another turn-end task (the check phase) an immediate would wait a whole turn: the tick's end instead.
    if (runningTurnEnds()) process.nextTick(this.flushNow)
    else turnFlushes.add(this)
  }

  private readonly flushNow = (): void => this.flush()

  // ---- the socket and the end ----

  private readonly onChunk = (chunk: Buffer): void => {
    const now = performance.now()
    // A first read of the turn past its budget waits for a later turn (put back, the socket paused).
    if (this.turnReads !== undefined && this.readTurn !== this.turnReads.turn) {
      if (!this.turnReads.take(this.socket, chunk, now)) {
        this.putOffAt = now
        return
      }
      this.readTurn = this.turnReads.turn
    }
    this.now = this.lastReadAt = now
    this.inRead = true
    const before = this.reader.frames
    this.delivered = 0
    try {
      this.reader.feed(chunk)
    } finally {
      this.inRead = false
      if (this.readEndCount > 0) this.runReadEnds()
    }
    // Frames the reader dropped on its own (PRIORITY, unknown types) still cost a read.
    const dropped = this.reader.frames - before - this.delivered
    if (dropped > 0 && this.endedWith === undefined && this.guards.ignoredFrames.take(this.now, dropped) > 0) this.calm("ignored-frames")
    this.flush()
  }

  /**
   * Runs `work.atReadEnd()` once the read being handled is parsed whole, still in its callback (every
   * frame of it seen, a RST_STREAM behind a request's END_STREAM too); false outside a read. What
   * it sends leaves in the poll phase: from the check phase (a turn-end task) a write on a TLS
   * socket costs a turn of the loop more (node completes it through an immediate of its own).
   */
  atReadEnd(work: ReadEndWork): boolean {
    if (!this.inRead) return false
    this.readEnds[this.readEndCount++] = work
    return true
  }

  private runReadEnds(): void {
    const works = this.readEnds
    // Work added while these run (outside the read: atReadEnd says false) goes elsewhere.
    const count = this.readEndCount
    this.readEndCount = 0
    for (let i = 0; i < count; i++) {
      const work = works[i]!
      works[i] = undefined
      work.atReadEnd()
    }
  }

  private readonly onDrain = (): void => {
    this.stalledSince = 0
    this.sender.drained()
  }

  private readonly onSocketError = (error: Error): void => {
    this.end(new H2ConnectionEnded({ reason: "socket-error", code: ErrorCode.INTERNAL_ERROR, message: error.message }))
  }

  private readonly onSocketClose = (): void => {
    // The deadline would otherwise hold the connection (its slabs, its streams) for closeTimeoutMs.
    clearTimeout(this.closeTimer)
    this.end(new H2ConnectionEnded({ reason: "socket-closed", code: ErrorCode.CANCEL, message: "the socket closed" }))
  }

  private readonly tick = (): void => {
    if (this.endedWith !== undefined) return
    const now = (this.now = performance.now())
    if (this.settingsAckDue !== 0 && now > this.settingsAckDue) return this.fail(ErrorCode.SETTINGS_TIMEOUT, "settings-timeout", "our SETTINGS were not acknowledged")
    if (this.peerSettingsDue !== 0 && now > this.peerSettingsDue) return this.fail(ErrorCode.SETTINGS_TIMEOUT, "no-peer-settings", "the peer sent no SETTINGS")
    if (this.closeDue !== 0 && now > this.closeDue) return this.fail(ErrorCode.NO_ERROR, "close-timeout", "streams outlived the graceful close")
    if (this.streams.size === 0 && now - this.lastReadAt > this.limits.idleTimeoutMs) return this.fail(ErrorCode.NO_ERROR, "idle-timeout", "no stream and no frame")
    if (this.socket.writableLength === 0) this.stalledSince = 0
    else if (this.stalledSince === 0) this.stalledSince = now
    else if (now - this.stalledSince > this.limits.writeStallMs) {
      const unread = this.socket.writableLength
      this.socket.destroy()
      this.end(new H2ConnectionEnded({ reason: "write-stall", code: ErrorCode.ENHANCE_YOUR_CALM, message: `the peer read nothing of ${unread} bytes` }))
    }
  }

  protected calm(reason: string): void {
    this.fail(ErrorCode.ENHANCE_YOUR_CALM, reason, `the peer exceeded the ${reason} budget`)
  }

  /** Connection error: GOAWAY(code) with the reason as debug data, then every stream ends. */
  protected fail(code: number, reason: string, message: string): void {
    if (this.endedWith !== undefined) return
    // After our graceful GOAWAY, streams above its last id were never processed, whatever came since
    // (before its second one, 2^31-1: the last one taken).
    this.writer.goAway(this.goingAway ? Math.min(this.goAwaySent, this.lastPeerId) : this.lastPeerId, code, Buffer.from(reason))
    this.end(new H2ConnectionEnded({ reason, code, message }))
  }

  /** Graceful end once no stream is left: the socket ends after what is written. */
  protected finish(reason: string, code: number, message: string): void {
    this.end(new H2ConnectionEnded({ reason, code, message }))
  }

  /** The one way out: what is pending is written, the socket ends, every stream ends once, then the leg hears. */
  private end(ended: H2ConnectionEnded): void {
    if (this.endedWith !== undefined) return
    this.endedWith = ended
    // The rest of the read and later reads are not parsed (each handler would drop them anyway).
    this.reader.stop()
    clearInterval(this.timer)
    clearTimeout(this.goAwayTimer)
    this.pings.clear()
    if (!this.socket.destroyed) {
      this.writer.writeTo(this.socket)
      this.socket.end()
      // A peer that does not read would hold the socket open forever.
      this.closeTimer = setTimeout(() => this.socket.destroy(), this.limits.closeTimeoutMs).unref()
    }
    this.refuseQueued(ended.reason)
    const open = [...this.streams.values()]
    this.streams.clear()
    this.sender.clear()
    // Client role: streams above the last one the peer processed were never processed, a caller may
    // retry them. A client's GOAWAY names the last stream we (the server) opened, not its requests.
    // And a server that never sent its SETTINGS (its first frame, RFC 9113 3.4) processed none of
    // them: the socket refused, reset or closed before the server spoke.
    const processed = this.role === "client" && !this.peerSpoke ? 0 : this.role === "client" && this.goAwayReceived >= 0 ? this.goAwayReceived : MAX_STREAM_ID
    for (const stream of open) {
      // Closed yet still here: the leg is hearing its last frame or its reset now (and ends us from it).
      if (stream.state === StreamState.CLOSED) continue
      stream.state = StreamState.CLOSED
      this.handler.onEnd(stream, new H2StreamEnded({ reason: ended.reason, code: ended.code, retryable: stream.id > processed }))
    }
    this.handler.onClose(ended)
  }
}
