// One stream to an HTTP/2 app (the leg, appH2.ts, holds the pooled session): the peer's request
// goes out under the app's flow control (its streamed body written as the app's stream drains),
// the app's answer comes back as the mesh takes it (the stream pauses past a high-water mark).
// An answer that is over within 1 ms of the end of the turn its head came in (a unary call:
// grpc-js sends its trailers a turn or two of the event loop after the message) goes back as one
// message, its trailers in its metadata; so does a gRPC answer holding one whole message then, of
// a method not seen to stream, that is over within 20 ms more (its trailers late); any other
// streams from then on, and its trailers (`grpc-status`, `grpc-message`, custom ones) close the
// stream (PROTOCOL.md §13, §17.5).
// The time left before the caller's deadline bounds the whole gRPC call, and a plain caller's whole
// answer, which this side gathers (any other request's answer head only): past it, or when the
// caller cancels, the app's stream is reset. An answer is complete only with its END_STREAM: a
// stream the app reset first (even with NO_ERROR) broke off, save the NO_ERROR reset node's own
// server sends in place of an END_STREAM its spent window holds back, after all the bytes its
// content-length declared (windowSpentAtReset). The stream is the sidecar's own HTTP/2's (src/h2,
// on the leg's session: appH2Session.ts), whose events come here as plain calls.
// Its head and trailers go back within the metadata a message to the caller carries (the bound
// agreed with it, RequestContext.maxMetaBytes): an answer held whole whose head and trailers fit
// only apart streams (a packet each) to a caller that reads trailers closing a stream, and fails
// as the app's to any other; past it, either fails as the app's.
import { ErrorCode } from "../h2/frames.ts"
import { H2RequestRefused, type H2Stream, type H2StreamEnded, StreamState } from "../h2/h2Streams.ts"
import { failure, reply } from "../iip/server.ts"
import type { AbortListener } from "../mux/cancellation.ts"
import type { Deadlines, Expiring } from "../mux/deadlines.ts"
import { RemoteError } from "../mux/meshChannels.ts"
import type { Outcome, PendingOutcome } from "../mux/request.ts"
import { IncomingStream } from "../mux/streams.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import type { MetaEntries } from "../protocol/metaEntries.ts"
import type { AnswerHolds, Held } from "./answerHolds.ts"
import { type AppH2Request, h2HeadRefusal, rawHeadOf } from "./appH2RequestHead.ts"
import { APP_STREAM_WINDOW, type AppH2Session } from "./appH2Session.ts"
import { PausingByteQueue } from "./byteQueue.ts"
import { acceptsEventStream, isAcceptName, isEventStreamType } from "./eventStream.ts"
import { grpcStatusIn, isGrpcPairs } from "./grpcStatus.ts"
import { endToEndHeaders, type OnInvalidHeader, RawListCache } from "./headerFilter.ts"
import { answerMetaPast, responseMeta, trailersMeta, withTrailers } from "./httpEnvelope.ts"
import type { Failure, InboundObservation } from "./observe.ts"
import { SEAT_NONE, type Seat } from "./peerShare.ts"
import type { PoolPeer } from "./poolPeers.ts"
import { AppErrorCode, appDeadlineMessage } from "./proxyError.ts"
import { TurnEnd } from "../mux/turnEnd.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/** An answer held to go back whole streams instead once this much of it came (or once its hold is over: appH2.ts). */
const WHOLE_ANSWER_LIMIT = 64 * 1024
/** A gRPC app's trailers, filtered once while they repeat (its answer heads have the filter's own cache). */
const appTrailers = new RawListCache()
/** A streaming answer pauses the app's stream while this much of it waits for the mesh. */
const ANSWER_HIGH_WATER = 64 * 1024
/** END_STREAM alone, after a streamed body. */
const EMPTY = Buffer.alloc(0)

/** What every exchange of one leg shares: the leg (AppH2Leg, appH2.ts). */
export interface H2Leg {
  /** host:port, for messages and metrics. */
  readonly address: string
  readonly onInvalid: OnInvalidHeader | undefined
  readonly deadlines: Deadlines<AppH2Exchange>
  /** The wait for a whole answer, and the longer one for a gRPC answer's trailers after one message. */
  readonly holds: AnswerHolds
  readonly oneMessageHolds: AnswerHolds
  /** A streamed answer whose stream stays paused this long is given up. */
  readonly answerIdleMs: number
  /** The session a stream that took its place opens on (the pooled one, made again once the last one closed, failed or went away), counted there until streamClosed. */
  sessionForStream(room: boolean): AppH2Session
  /** A gRPC method (path) one of whose answers carried a second message. */
  streams(path: string): boolean
  noteStreaming(path: string): void
  /** The places among the streams open to the app (appH2.ts): at most maxStreams, as many again waiting. */
  readonly maxStreams: number
  admit(exchange: AppH2Exchange, room: boolean): boolean | undefined
  /** Long-lived streams' share of the places (appH2.ts): refused past it (counted), or counted from admit to their end. */
  refuseLongStream(): boolean
  longStreamShare(): number
  longStreamTaken(): void
  longStreamEnded(): void
  leftWaiting(exchange: AppH2Exchange): void
  streamClosed(session: AppH2Session, exchange: AppH2Exchange): void
  /** Whether the current session could reset one more stream (appH2.ts): asked once per admission, the answer passed to the three below. */
  resetRoom(): boolean
  /** A new call is refused (counted): no session to the app may take another stream's reset (appH2.ts). */
  refuseForResets(room: boolean): boolean
  /** B reset a stream on `session`: counted against the app's bound on a client's resets. */
  resetSent(session: AppH2Session): void
}

/** What cancels the exchange: the caller went away or the mesh's deadline passed (the request's Cancellation). */
export interface CancelSource {
  readonly aborted: boolean
  addEventListener(type: "abort", listener: AbortListener): void
  removeEventListener(type: "abort", listener: AbortListener): void
}

/** Keeps the hidden class of AppH2Exchange alive while idle (shapeAnchor.ts). */
const exchangeShape = new ShapeAnchor<AppH2Exchange>()

/**
 * One stream to the app, from the request to the answer's end. `pending` gets the outcome once
 * (a whole answer, a streaming one, or a typed failure); the observation ends once.
 */
export class AppH2Exchange implements Expiring, Held {
  private readonly leg: H2Leg
  private readonly request: AppH2Request
  readonly observation: InboundObservation
  private readonly pending: PendingOutcome
  private readonly grpc: boolean
  private stream: H2Stream | undefined = undefined
  /** Its stream is over at the session (both ends, a reset either way, or its end told): its place went back. */
  private streamOver = false
  /** The app's answer is paused for the mesh: what came since is not yet given back to the app's window. */
  private windowHeld = false
  private heldBytes = 0
  /** The request body's pump waits for room on the stream (onWritable, or the stream's end). */
  private writable: (() => void) | undefined = undefined
  /** The exchange is over: answered whole, streamed to its end, or failed. */
  private done = false
  /** In the leg's deadlines (mux/deadlines.ts). */
  deadlineSlot = -1
  deadlineAt = 0
  /** The leg's holds' own (answerHolds.ts). */
  holdUntil = 0
  private status = 0
  private headers: Array<readonly [string, string]> = []
  private parts: Array<Buffer> = []
  /** Where a gRPC answer's first message ends (its 5-byte prefix read), -1 before; Infinity once a second one came or is not looked for. */
  private firstMessageEnd = -1
  /** The same for a gRPC request's streamed body (requestChunk), of a method not known to stream; its first bytes until its prefix is read. */
  private requestFirstEnd = Infinity
  private requestHead: Array<Buffer> | undefined = undefined
  private requestBytes = 0
  /** Waiting in the leg's oneMessageHolds (the first wait is over). */
  private waitsLonger = false
  private bytes = 0
  /** The answer's content-length, as the app sent it, for the message of an answer that broke off. */
  private declared: string | undefined = undefined
  /**
   * The request's cancellation while the exchange listens to it: left when the exchange ends (a plain
   * IIP connection's requests share one, which would otherwise keep every exchange while it lives).
   */
  private cancelSource: CancelSource | undefined = undefined
  private trailers: Array<readonly [string, string]> | undefined = undefined
  /** Set once the answer streams. */
  private answer: PausingByteQueue | undefined = undefined
  /** Waiting for a place among the streams open to the app (the leg's admit). */
  waitingForPlace = false
  /** Holds one of those places, until its stream is over. */
  private placeHeld = false
  /** Counted among the leg's long-lived streams (a method seen to stream, a streamed body, an event stream) until its place goes back (the leg's line reads it). */
  longLived = false
  /** The session its stream opened on, whose places it holds. */
  private session: AppH2Session | undefined = undefined
  /** Armed while the streamed answer's app stream is paused (answerPaused). */
  private stall: NodeJS.Timeout | undefined = undefined
  /** Whom its place counts under (poolPeers.ts; undefined: nobody's share), and where it stands in the leg's share (peerShare.ts). */
  readonly peer: PoolPeer | undefined
  seat: Seat = SEAT_NONE
  slot = -1
  /** The streamed answer's app stream is paused (the mesh takes nothing of it), since pausedAt (performance.now()). */
  paused = false
  pausedAt = 0
  /** What the share's last look noted of the answer's bytes (taken), and which look (peerShare.ts). */
  takenNoted = 0
  lookNoted = 0

  constructor(leg: H2Leg, request: AppH2Request, observation: InboundObservation, pending: PendingOutcome, peer: PoolPeer | undefined) {
    exchangeShape.keep(this, request.body instanceof Buffer ? request.body.length : 0)
    this.leg = leg
    this.request = request
    this.observation = observation
    this.pending = pending
    this.grpc = isGrpcPairs(request.headers)
    this.peer = peer
  }

  /** The answer's bytes come from the app so far (the share's measure of its reader: peerShare.ts). */
  get taken(): number {
    return this.bytes
  }

  start(cancel: CancelSource): void {
    const { request, leg } = this
    // Cancelled already (the first call waits for the leg's module to load): nothing goes to the app.
    if (cancel.aborted) return this.fail(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, MeshErrorCode.cancelled, "request aborted")
    // A head the app's server would reset as malformed never goes: each counts against the session, which it ends past its bound.
    const malformed = h2HeadRefusal(request)
    if (malformed !== undefined) return this.fail(400, { hop: "inbound", reason: MeshErrorCode.badRequest }, MeshErrorCode.badRequest, malformed, false)
    // Known to live long before it opens: a gRPC method one of whose answers carried a second message,
    // any other request whose body streams, an event stream. A gRPC call is counted too once a
    // second message shows it streams, its answer's (noteMessages: its method learned) or its
    // request's (requestChunk). A gRPC body streams for a unary call too (its one message past A's
    // 64 KiB, or not come within its head's turn): counted so, a burst of uploads was refused.
    const streamedBody = request.body instanceof IncomingStream
    const longLived = this.grpc ? leg.streams(request.path) : streamedBody || (request.method === "GET" && pairsAcceptEventStream(request.headers))
    if (this.grpc && streamedBody && !longLived) this.requestFirstEnd = -1
    if (longLived && leg.refuseLongStream()) {
      return this.fail(503, { hop: "inbound", reason: MeshErrorCode.overloaded }, MeshErrorCode.overloaded, `long-lived streams (methods seen to stream, streamed request bodies, event streams) to the app at ${leg.address} hold half its places (${leg.longStreamShare()}), the most they may; retry elsewhere`, false)
    }
    // Asked once: the refusal, the place and the session the stream opens on all read the same answer.
    const room = leg.resetRoom()
    if (leg.refuseForResets(room)) {
      return this.fail(503, { hop: "inbound", reason: MeshErrorCode.overloaded }, MeshErrorCode.overloaded, `B's sessions to the app at ${leg.address} are out of resets (its HTTP/2 server ends a session that sends it too many: cancelled, timed-out and cut calls) and as many drain as may; retry elsewhere`, false)
    }
    const admitted = leg.admit(this, room)
    if (admitted === undefined) {
      return this.fail(503, { hop: "inbound", reason: MeshErrorCode.overloaded }, MeshErrorCode.overloaded, `as many requests wait for a stream to the app at ${leg.address} as it may have open (--app-h2-max-streams ${leg.maxStreams}, or fewer its SETTINGS_MAX_CONCURRENT_STREAMS allows); retry elsewhere`, false)
    }
    if (longLived) this.countLongLived()
    // A gRPC call's deadline covers the whole call (its wait for a place too); any other request's only its answer's head.
    leg.deadlines.add(this, request.timeLeftMs)
    // The exchange listens itself (handleEvent), until it ends (finish).
    this.cancelSource = cancel
    cancel.addEventListener("abort", this)
    if (admitted) this.open(room)
    else this.waitingForPlace = true
  }

  /** A long-lived call whose turn came with the share smaller than when it was taken (appH2.ts): nothing went to the app. */
  pastShare(): void {
    this.fail(503, { hop: "inbound", reason: MeshErrorCode.overloaded }, MeshErrorCode.overloaded, `long-lived streams to the app at ${this.leg.address} hold half its places (${this.leg.longStreamShare()}, fewer than when this call was taken), the most they may; retry elsewhere`, false)
  }

  /** Out of the full waiting line for another peer's call, its own peer waiting past its share there (appH2.ts): nothing went to the app. */
  displaced(places: number): void {
    this.fail(503, { hop: "inbound", reason: MeshErrorCode.overloaded }, MeshErrorCode.overloaded, `as many requests wait for a stream to the app at ${this.leg.address} as it may have open (${places}), more than its share of them from ${this.peer!.key}: its newest gave way to another peer's; retry elsewhere`, false)
  }

  /** The leg closed while this waited for a place: nothing went to the app. */
  closedWaiting(): void {
    this.fail(503, { hop: "inbound", reason: MeshErrorCode.draining }, MeshErrorCode.draining, `the inbound sidecar stopped before a stream to the app at ${this.leg.address} was free`, false)
  }

  /** Its place among the app's streams is taken: the stream opens. `room`: the leg's resetRoom() as the place was taken. */
  open(room: boolean): void {
    const { request, leg } = this
    this.waitingForPlace = false
    this.placeHeld = true
    const body = request.body
    const withBody = body instanceof IncomingStream || body.length > 0
    const session = leg.sessionForStream(room)
    this.session = session
    const stream = session.connection.request(rawHeadOf(request, this.grpc), !withBody)
    if (stream instanceof H2RequestRefused) {
      // The session ended or heard the app's GOAWAY within this turn: the app never saw the request.
      this.streamOver = true
      this.releasePlace()
      return this.fail(502, { hop: "app", reason: AppErrorCode.unavailable }, AppErrorCode.unavailable, `app at ${leg.address}: its session refused a new stream (${stream.reason})`, false)
    }
    this.stream = stream
    stream.user = this
    // The caller's deadline, as the session's layer reads it.
    stream.deadlineAt = performance.now() + request.timeLeftMs
    if (!withBody) return
    if (!(body instanceof IncomingStream)) {
      this.observation.requestBytes(body.length)
      session.connection.write(stream, body, true)
      return
    }
    void pump(body, this).catch((error: unknown) =>
      this.fail(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, MeshErrorCode.cancelled, `request body broke off: ${String(error)}`)
    )
  }

  /** The pump's chunk to the app's stream; false: wait for `writableOrOver` before the next. */
  writeBody(chunk: Buffer, end: boolean): boolean {
    if (this.streamOver) return true
    return this.session!.connection.write(this.stream!, chunk, end)
  }

  /** A promise of room on the stream again (onWritable) or of its end; undefined once it is over. */
  writableOrOver(): Promise<void> | undefined {
    if (this.streamOver) return undefined
    return new Promise((resolve) => {
      this.writable = resolve
    })
  }

  /** The stream still takes the request's body. */
  get bodyWanted(): boolean {
    return !this.streamOver
  }

  onWritable(): void {
    const wake = this.writable
    this.writable = undefined
    wake?.()
  }

  /** The app's trailers, which end its answer (the session's onTrailers). */
  onTrailers(fields: ReadonlyArray<string>): void {
    if (!this.done) {
      this.trailers = endToEndHeaders(fields, this.leg.onInvalid, appTrailers)
      this.onEnd()
    }
    this.remoteEnded()
  }

  /** The app's END_STREAM came (after its head, DATA or trailers): the stream is over if B's end went out before it. */
  private remoteEnded(): void {
    if (this.stream!.state === StreamState.CLOSED) this.closed()
  }

  /**
   * The app reset the stream (RST_STREAM `code`). Before any answer with REFUSED_STREAM, RFC 9113
   * §8.7 says it was not processed: another instance may take it. A reset after the app's END_STREAM
   * (one stopping the request body, RFC 9113 §8.1) leaves the answer whole: the exchange is done then.
   */
  onReset(code: number): void {
    if (!this.done) {
      if (code === ErrorCode.REFUSED_STREAM && this.status === 0) {
        this.fail(502, { hop: "app", reason: AppErrorCode.unavailable }, AppErrorCode.unavailable, `app at ${this.leg.address}: it refused the stream (REFUSED_STREAM)`, false)
      } else if (code === ErrorCode.NO_ERROR && this.status !== 0 && this.windowSpentAtReset()) this.onEnd()
      else if (code === ErrorCode.NO_ERROR && this.status !== 0) this.brokeOff()
      else if (code === ErrorCode.NO_ERROR) this.fail(502, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, `app at ${this.leg.address} closed the stream without an answer`)
      else this.fail(502, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, `app at ${this.leg.address}: it reset the stream (code ${code}) ${this.status === 0 ? "before its answer" : "before the end of its answer"}`)
    }
    this.closed()
  }

  /**
   * The stream ended otherwise (the session's onEnd): "complete", B's END_STREAM went out after the
   * app's; or a stream error, the app's GOAWAY above it, the session's end. `retryable`: the app
   * never processed it (above its GOAWAY's last stream, or the session ended before the app spoke,
   * ECONNREFUSED among them): another instance may take it.
   */
  onStreamEnded(ended: H2StreamEnded): void {
    if (!this.done && ended.reason !== "complete") {
      const refused = this.status === 0 && (ended.retryable || this.session!.aboveGoaway(this.stream!.id))
      const code = refused ? AppErrorCode.unavailable : AppErrorCode.failed
      const socketError = this.session!.socketError
      const what = socketError === undefined ? `its stream ended (${ended.reason}, code ${ended.code})` : socketError
      this.fail(502, { hop: "app", reason: code }, code, `app at ${this.leg.address}: ${what}`, !refused)
    }
    this.closed()
  }

  /**
   * A reset with NO_ERROR that node's own server sends in place of the END_STREAM, the answer
   * whole: its writable side is finished once its last byte is sent, and a stream whose request
   * body it never read it then closes at once, while the END_STREAM (an empty DATA frame) waits for
   * window that nghttp2 does not give while the window is spent (h2c-answer-ends.test.ts). The same
   * frames come from node's close() with bytes still queued, which it drops: only a content-length
   * all of which came tells the two apart. Taken as whole where the app's window at B may have been
   * spent (this stream carried at least its initial window: B's WINDOW_UPDATEs may still have been
   * on their way), its content-length says all of it came, and no gRPC status is missing (a gRPC
   * answer is whole with its trailers). Any other reset with NO_ERROR broke the answer off (PROTOCOL.md §17.5).
   */
  private windowSpentAtReset(): boolean {
    const received = this.bytes
    return !this.grpc && received >= APP_STREAM_WINDOW && this.declared !== undefined && Number(this.declared) === received
  }

  /** A reset with NO_ERROR before the END_STREAM (RFC 9113 §8.1 allows it after a complete answer only): the answer broke off. */
  private brokeOff(): void {
    const of = this.declared === undefined ? " bytes of its answer" : ` of the ${Number(this.declared)} bytes it declared`
    const message = `app at ${this.leg.address} reset its stream (NO_ERROR) after ${this.bytes}${of}, before its end`
    this.fail(this.answer === undefined ? 502 : this.status, { hop: "app", reason: "answer_broke_off" }, AppErrorCode.failed, message)
  }

  /** Its place among the app's streams goes back (once: its stream closed, or none could be opened). */
  private releasePlace(): void {
    if (!this.placeHeld) return
    this.placeHeld = false
    this.endLongLived()
    this.leg.streamClosed(this.session!, this)
  }

  /** Counted among the long-lived streams, until its place goes back or it leaves the waiting line. */
  private countLongLived(): void {
    this.longLived = true
    this.leg.longStreamTaken()
  }

  private endLongLived(): void {
    if (!this.longLived) return
    this.longLived = false
    this.leg.longStreamEnded()
  }

  /**
   * Its stream is over at the session (once): its place goes back, a pump waiting for room stops;
   * an exchange not settled by then (its caller's failure comes from the event that closed it) fails.
   */
  private closed(): void {
    if (this.streamOver) return
    this.streamOver = true
    this.stream!.user = undefined
    this.releasePlace()
    this.onWritable()
    // Every stream closes, most of them answered: no failure's reason and message built for those.
    if (this.done) return
    this.fail(502, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, `app at ${this.leg.address} closed the stream without an answer`)
  }

  /**
   * Its place was taken back for another peer's waiting call (peerShare.ts): its peer held past its
   * share and its reader stalled this answer (peerShare.ts: none of it for a second, or too little). The caller's doing, not the app's; the answer
   * had begun (processed: never retried). The app's stream is reset (CANCEL).
   */
  takenBack(message: string): void {
    this.fail(this.status, { hop: "inbound", reason: MeshErrorCode.overloaded }, MeshErrorCode.overloaded, message)
  }

  /** The leg's deadlines: the call's time is up. */
  deadlinePassed(): void {
    const message = appDeadlineMessage(this.request.timeLeftMs, this.status !== 0, this.answer !== undefined)
    this.fail(504, { hop: "inbound", reason: MeshErrorCode.deadlineExceeded }, MeshErrorCode.deadlineExceeded, message)
  }

  /** The leg's holds: the wait for a whole answer is over (released once the answer ended or streams). */
  holdOver(): void {
    if (!this.waitsLonger && this.grpc && this.bytes === this.firstMessageEnd && !this.leg.streams(this.request.path)) {
      this.waitsLonger = true
      return this.leg.oneMessageHolds.hold(this)
    }
    this.streamAnswer()
  }

  /** The holds this exchange waits in, if it does. */
  private releaseHold(): void {
    ;(this.waitsLonger ? this.leg.oneMessageHolds : this.leg.holds).release(this)
  }

  /** A gRPC answer's bytes so far against its first message: past its end, the method streams. */
  private noteMessages(): void {
    if (this.firstMessageEnd < 0) {
      if (this.bytes < 5) return
      this.firstMessageEnd = 5 + prefixedLength(this.parts)
    }
    if (this.bytes > this.firstMessageEnd) {
      this.leg.noteStreaming(this.request.path)
      this.knownStreaming()
      this.firstMessageEnd = Infinity
      // The longer wait was for trailers after one message: a second one means a stream, which goes on now.
      if (this.waitsLonger) this.streamAnswer()
    }
  }

  /**
   * The call showed it will last (`shownBy`: a gRPC call's second message, its answer's or its
   * request's; another request's answer head saying text/event-stream): counted from here (its
   * method's first, or the first since the methods were forgotten), or, with long-lived calls
   * holding the share already, cut here (counted): else first calls, of a method not yet seen to
   * stream (or of many such methods), and POSTs answered by event streams took every place, since
   * none was refused at its start. The app saw it: refused as processed. No unary call is cut: it
   * has one message each way.
   */
  private knownStreaming(shownBy = "its second message"): void {
    if (this.longLived || !this.placeHeld) return
    if (!this.leg.refuseLongStream()) return this.countLongLived()
    this.fail(503, { hop: "inbound", reason: MeshErrorCode.overloaded }, MeshErrorCode.overloaded, `long-lived streams (methods seen to stream, streamed request bodies, event streams) to the app at ${this.leg.address} hold half its places (${this.leg.longStreamShare()}), the most they may: this call, shown to stream by ${shownBy}, was cut; retry elsewhere`)
  }

  /** A chunk of a gRPC request's streamed body on its way to the app (pump): past its first message, the call streams. */
  requestChunk(chunk: Buffer): void {
    if (this.requestFirstEnd === Infinity || this.done) return
    this.requestBytes += chunk.length
    if (this.requestFirstEnd < 0) {
      ;(this.requestHead ??= []).push(chunk)
      if (this.requestBytes < 5) return
      this.requestFirstEnd = 5 + prefixedLength(this.requestHead)
      this.requestHead = undefined
    }
    // Its method is not learned from it: a caller sends two messages on any path, a unary method's
    // too (the app refuses the call), and every later call of that method was then long-lived,
    // refused past the share; nor does an app (grpc-js, grpc-go) send a client stream's head before
    // its answer, which could have told a method it took. Each such call counts from its second message.
    if (this.requestBytes > this.requestFirstEnd) {
      this.requestFirstEnd = Infinity
      this.knownStreaming()
    }
  }

  /** The app's answer head (`fields`: name, value, from ":status" on); `endStream`: it is the whole answer. */
  onHead(fields: ReadonlyArray<string>, endStream: boolean): void {
    if (this.done) return this.remoteEndedIf(endStream)
    this.status = Number(fields[1])
    this.headers = endToEndHeaders(fields, this.leg.onInvalid)
    const declared = fieldOf(fields, "content-length")
    this.declared = declared
    if (this.status < 200 || this.status > 599) {
      this.fail(502, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, `app at ${this.leg.address} answered with status ${this.status}`)
      return this.remoteEndedIf(endStream)
    }
    if (endStream) {
      this.onEnd()
      return this.remoteEnded()
    }
    // An event stream its request did not announce (a POST, a GET without accept): long-lived from
    // here, unless its head ended it or stated its length (over soon, it holds nothing).
    if (!this.grpc && !this.longLived && declared === undefined) {
      const type = fieldOf(fields, "content-type")
      if (type !== undefined && isEventStreamType(type)) {
        this.knownStreaming("its answer's text/event-stream")
        if (this.done) return
      }
    }
    // One that is over soon goes back whole: its wait begins at the turn's end, unless the answer is over by then.
    headsThisTurn.add(this)
  }

  private remoteEndedIf(endStream: boolean): void {
    if (endStream) this.remoteEnded()
  }

  /** The turn its head came in is over: the answer, if neither over nor streaming yet, waits to be whole. */
  holdIfOpen(): void {
    if (!this.done && this.answer === undefined) this.leg.holds.hold(this)
  }

  /** A view of the app's DATA: kept (the session's layer lets go of it), its window given back as the mesh takes it. */
  onData(chunk: Buffer, endStream: boolean): void {
    if (this.done) {
      this.giveBack(chunk.length)
      return this.remoteEndedIf(endStream)
    }
    if (chunk.length > 0) this.answerChunk(chunk)
    if (!endStream) return
    this.onEnd()
    this.remoteEnded()
  }

  /** `bytes` of the answer taken: the app may send as much again, unless the answer is paused for the mesh (held until it resumes). */
  private giveBack(bytes: number): void {
    if (this.windowHeld) this.heldBytes += bytes
    else if (!this.streamOver) this.session!.connection.consumed(this.stream!, bytes)
  }

  private answerChunk(chunk: Buffer): void {
    if (this.answer !== undefined) {
      this.observation.responseBytes(chunk.length)
      this.bytes += chunk.length
      if (this.grpc && this.firstMessageEnd !== Infinity) {
        this.noteMessages()
        // Cut past the share (knownStreaming): nothing more goes to the caller.
        if (this.done) return
      }
      this.answer.push(chunk)
      return this.giveBack(chunk.length)
    }
    // Held whole: at most WHOLE_ANSWER_LIMIT, then it streams.
    this.parts.push(chunk)
    this.bytes += chunk.length
    this.giveBack(chunk.length)
    if (this.grpc && this.firstMessageEnd !== Infinity) this.noteMessages()
    if (this.bytes > WHOLE_ANSWER_LIMIT) this.streamAnswer()
  }

  /** The answer goes on as a stream: its head now, what came so far first. */
  private streamAnswer(): void {
    if (this.done || this.answer !== undefined || this.status === 0) return
    const meta = responseMeta(this.status, this.headers)
    const past = answerMetaPast(meta, this.request.maxMetaBytes)
    if (past > 0) return this.metaTooLarge(`its answer head (${past} bytes) exceeds`)
    const answer = new PausingByteQueue(ANSWER_HIGH_WATER, {
      pause: () => {
        this.windowHeld = true
        this.answerPaused()
      },
      resumeIfPaused: () => {
        if (!this.windowHeld) return
        this.windowHeld = false
        this.paused = false
        const held = this.heldBytes
        this.heldBytes = 0
        if (held > 0) this.giveBack(held)
        clearTimeout(this.stall)
        this.stall = undefined
      }
    }, (refusal) =>
      // Refused at this hop (a plain caller's answer past the answer budget): B's own overload, as the HTTP/1.1 leg counts it.
      refusal === undefined
        ? this.fail(this.status, { hop: "app", reason: "answer_broke_off" }, MeshErrorCode.cancelled, "nobody reads the answer")
        : this.fail(503, { hop: "inbound", reason: refusal.code }, refusal.code, refusal.message))
    this.answer = answer
    this.releaseHold()
    // Its parts go to the stream: a first message not read by now is not looked for.
    if (this.firstMessageEnd < 0) this.firstMessageEnd = Infinity
    for (const part of this.parts) answer.push(part)
    this.observation.responseBytes(this.bytes)
    this.parts = []
    if (!this.grpc && !this.request.plain) this.leg.deadlines.remove(this)
    this.settle(reply(answer, meta))
  }

  /**
   * The streamed answer's stream paused (a window of it waits for the mesh). A caller that never
   * reads would keep the app's stream (one of the app's concurrent streams; no deadline once a
   * non-gRPC answer streams) for as long as it liked: one that stays paused for the body idle
   * timeout is given up, as the HTTP/1.1 leg does (appExchange.ts). A gRPC call's deadline
   * bounds the whole call already: its stream may wait on a slow reader until then. When it paused
   * is kept for the peers' share (peerShare.ts): paused a second, or read too slowly, past its
   * peer's share while another peer's call waits, its place is taken back, a gRPC call's too.
   */
  private answerPaused(): void {
    if (!this.paused) {
      this.paused = true
      this.pausedAt = performance.now()
    }
    if (this.grpc || this.stall !== undefined || this.done) return
    const idleMs = this.leg.answerIdleMs
    this.stall = setTimeout(() => {
      this.stall = undefined
      this.fail(this.status, { hop: "inbound", reason: AppErrorCode.answerStalled }, MeshErrorCode.cancelled, `the answer waited ${idleMs} ms for the mesh to take half a window of it`)
    }, idleMs)
  }

  /** The app's END_STREAM: its answer is whole (the head came before: the session's layer checks it). */
  private onEnd(): void {
    if (this.done) return
    const { leg, status } = this
    const trailers = this.trailers
    if (this.answer === undefined) {
      let headers = this.headers
      let held = trailers
      // A trailers-only answer (a gRPC error): its status and metadata go on as trailers, after an empty body.
      if (held === undefined && this.bytes === 0 && headers.some(([name]) => name === "grpc-status")) {
        held = headers.filter(([name]) => name !== "content-type")
        headers = headers.filter(([name]) => name === "content-type")
      }
      const meta = responseMeta(status, headers)
      const together = answerMetaPast(held === undefined ? meta : withTrailers(meta, held), this.request.maxMetaBytes)
      if (together === 0) return this.answerWhole(meta, held)
      if (held === undefined) return this.metaTooLarge(`its answer head (${together} bytes) exceeds`)
      // One metadata block cannot carry it: the answer streams, its head and its trailers in a
      // packet each, each checked apart (streamAnswer, below). Only where the trailers are the
      // app's own (not a trailers-only answer's, split off its head) and the caller takes a stream
      // and the trailers closing it (else it would get the answer without them: no grpc-status),
      // and only trailers that fit alone (else its head would go on, then the answer break off).
      if (trailers === undefined || this.request.plain || !this.request.trailers || answerMetaPast(trailersMeta(trailers), this.request.maxMetaBytes) > 0) {
        return this.wholeTooLarge(status, headers, held, together)
      }
      this.streamAnswer()
      if (this.done) return
    }
    const closing = trailers === undefined ? undefined : trailersMeta(trailers)
    // A plain caller's streamed answer is gathered whole (plainAnswer.ts): its trailers join its head.
    const together = closing === undefined || !this.request.plain ? 0 : answerMetaPast(withTrailers(responseMeta(status, this.headers), trailers!), this.request.maxMetaBytes)
    if (together > 0) return this.wholeTooLarge(status, this.headers, trailers!, together)
    const past = closing === undefined ? 0 : answerMetaPast(closing, this.request.maxMetaBytes)
    if (past > 0) return this.metaTooLarge(`its trailers (${past} bytes) exceed`)
    this.finish()
    this.observation.grpcStatus(grpcStatusIn(trailers))
    this.observation.end(leg.address, status, undefined)
    this.answer!.end(closing)
  }

  /** The answer goes back as one message: `meta` holds its head and its trailers (`held`). */
  private answerWhole(meta: MetaEntries, held: Array<readonly [string, string]> | undefined): void {
    const { leg, status } = this
    this.finish()
    const body = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.bytes)
    this.observation.responseBytes(body.length)
    this.observation.grpcStatus(grpcStatusIn(held))
    this.observation.end(leg.address, status, undefined)
    this.settle(reply(body, meta))
  }

  /** An answer that must go back whole whose head and trailers (`held`) do not fit together: which part is past the bound, or both. */
  private wholeTooLarge(status: number, headers: Array<readonly [string, string]>, held: Array<readonly [string, string]>, together: number): void {
    const limit = this.request.maxMetaBytes
    const trailers = answerMetaPast(trailersMeta(held), limit)
    if (trailers > 0) return this.metaTooLarge(`its trailers (${trailers} bytes) exceed`)
    const head = answerMetaPast(responseMeta(status, headers), limit)
    this.metaTooLarge(head > 0 ? `its answer head (${head} bytes) exceeds` : `its answer head and trailers (${together} bytes together) exceed`)
  }

  /**
   * Metadata past what a message to the caller carries (the bound agreed with it) cannot go back:
   * the call fails as the app's, naming the size and the bound, rather than as an answer the
   * inbound hop could not send (handler_failed: UNAVAILABLE to a gRPC caller, a retry invited for
   * a processed call) or one without its trailers. `what` names the part and its size.
   */
  private metaTooLarge(what: string): void {
    const message = `app at ${this.leg.address}: ${what} the ${this.request.maxMetaBytes} bytes of metadata the mesh carries`
    this.fail(this.answer === undefined ? 502 : this.status, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, message)
  }

  /**
   * The exchange ends in a failure: the app's stream is reset, and the caller gets the typed error,
   * as the outcome or, once the answer streams, as the stream's end. Nothing after the first end.
   */
  private fail(status: number, reason: Failure, code: string, message: string, processed = true): void {
    if (this.done) return
    this.finish()
    this.observation.end(this.leg.address, status, reason)
    const stream = this.stream
    // Reset with no END_STREAM before it (CANCEL): an app took the part of a body that had come
    // (its caller gone mid-body) as all of it when node's close(CANCEL) ended the body first.
    // A queued stream (the app's limit lowered) never went: nothing to count.
    const sent = stream !== undefined && !this.streamOver && stream.state !== StreamState.CLOSED
    if (sent) {
      if (stream.state !== StreamState.QUEUED) this.leg.resetSent(this.session!)
      this.session!.connection.reset(stream, ErrorCode.CANCEL)
    }
    const body = this.request.body
    if (body instanceof IncomingStream) body.discard()
    if (this.answer !== undefined) this.answer.fail(new RemoteError({ code, message, processed: true }))
    else this.settle(failure(code, message, processed))
    if (sent) this.closed()
  }

  /** The request's cancellation fired (the exchange is its abort listener). */
  handleEvent(): void {
    this.fail(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, MeshErrorCode.cancelled, "request aborted")
  }

  private finish(): void {
    this.done = true
    // Its answer waits no more: the peers' share never takes back its place as a stalled one until its stream closes.
    this.paused = false
    const cancel = this.cancelSource
    if (cancel !== undefined) {
      this.cancelSource = undefined
      cancel.removeEventListener("abort", this)
    }
    if (this.waitingForPlace) {
      this.waitingForPlace = false
      this.endLongLived()
      this.leg.leftWaiting(this)
    }
    this.leg.deadlines.remove(this)
    this.releaseHold()
    if (this.stall !== undefined) clearTimeout(this.stall)
  }

  /** The first outcome counts (PendingOutcome ignores later ones). */
  private settle(value: Outcome): void {
    this.pending.settle(value)
  }
}

/**
 * The exchanges whose answer head came in this turn of the event loop, whose waits begin at the
 * turn's end (turnEnd.ts): an answer read whole with its head (head, message and trailers in one
 * read, the usual unary answer) arms no timer, where a wait begun at its head armed the holds'
 * timer and cleared it again within the turn (a Timeout, a timer-list insert and unenroll per call
 * while calls come one at a time).
 */
const headsThisTurn = new TurnEnd<AppH2Exchange>((exchange) => exchange.holdIfOpen())

/** The first value of `name` in a flat name, value list (an answer head), or undefined. */
const fieldOf = (fields: ReadonlyArray<string>, name: string): string | undefined => {
  for (let i = 2; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1]
  return undefined
}

/** Whether a request's accept names text/event-stream (an EventSource's GET: it lives as long as it is read), its name in any case. */
const pairsAcceptEventStream = (pairs: ReadonlyArray<readonly [string, string]>): boolean => {
  for (let i = 0; i < pairs.length; i++) {
    if (isAcceptName(pairs[i]![0]) && acceptsEventStream(pairs[i]![1])) return true
  }
  return false
}

/** The length in a gRPC message's 5-byte prefix (a flag byte, then 4 bytes big-endian), read across the first parts (5 bytes or more in all). */
const prefixedLength = (parts: ReadonlyArray<Buffer>): number => {
  const first = parts[0]!
  if (first.length >= 5) return first.readUInt32BE(1)
  let length = 0
  let at = 0
  for (const part of parts) {
    for (let i = 0; i < part.length && at < 5; i++, at++) if (at >= 1) length = length * 256 + part[i]!
    if (at === 5) break
  }
  return length
}

/** The peer's streamed body written to the app's stream, waiting on its flow control; each chunk shown to its exchange (a gRPC request's second message). */
const pump = async (body: IncomingStream, exchange: AppH2Exchange): Promise<void> => {
  const observation = exchange.observation
  for await (const chunk of body) {
    if (!exchange.bodyWanted) return
    observation.requestBytes(chunk.length)
    exchange.requestChunk(chunk)
    // Cut past the share at its second message (knownStreaming): the stream is reset, nothing more written.
    if (!exchange.bodyWanted) return
    if (!exchange.writeBody(chunk, false)) await exchange.writableOrOver()
  }
  exchange.writeBody(EMPTY, true)
}
