// One stream to an HTTP/2 app (the leg, appH2.ts, holds the pooled session), its request side and
// its life, under AppH2Exchange (appH2Exchange.ts, which adds the gathering of the app's answer):
// the admission (a malformed head never goes; long-lived calls held to their share; the leg's
// places and resets), the stream opened on the leg's session, the peer's request body written
// under the app's flow control (pump, as the app's stream drains; a gRPC request's second message
// shows the call streams), the place given back once the stream is over, and the one way a call
// fails: the caller's cancellation, the deadline, a share taken back, the app's stream ending
// early (the app's stream reset with CANCEL if it still runs). The time left before the caller's
// deadline (B's default one without) bounds the whole call, a streamed answer included: past it,
// or when the caller cancels, the app's stream is reset. The stream is the sidecar's own
// HTTP/2's (src/h2, on the leg's session: appH2Session.ts), whose events come here as plain calls.
import { ErrorCode } from "../h2/frames.ts"
import { H2RequestRefused, type H2Stream, type H2StreamEnded, StreamState } from "../h2/h2Streams.ts"
import { headerListSize } from "../h2/headerCheck.ts"
import { failure } from "../iip/server.ts"
import type { AbortListener } from "../mux/cancellation.ts"
import type { Deadlines, Expiring } from "../mux/deadlines.ts"
import { RemoteError } from "../mux/meshChannels.ts"
import type { Outcome, PendingOutcome } from "../mux/request.ts"
import { IncomingStream } from "../mux/streams.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import type { AnswerHolds } from "./answerHolds.ts"
import { type AppH2Request, h2HeadRefusal, rawHeadOf } from "./appH2RequestHead.ts"
import type { AppH2Session } from "./appH2Session.ts"
import type { PausingByteQueue } from "./byteQueue.ts"
import { acceptsEventStream, isAcceptName } from "./eventStream.ts"
import { isGrpcPairs } from "./grpcStatus.ts"
import type { OnInvalidHeader } from "./headerFilter.ts"
import type { HeldAnswers, ReaderWait } from "./heldAnswers.ts"
import type { Failure, InboundObservation } from "./observe.ts"
import { SEAT_NONE, type Seat } from "./peerShare.ts"
import type { PoolPeer } from "./poolPeers.ts"
import { AppErrorCode, appDeadlineMessage } from "./proxyError.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/** END_STREAM alone, after a streamed body. */
const EMPTY = Buffer.alloc(0)

/** What every exchange of one leg shares: the leg (AppH2Leg, appH2.ts). */
export interface H2Leg {
  /** host:port, for messages and metrics. */
  readonly address: string
  readonly onInvalid: OnInvalidHeader | undefined
  readonly deadlines: Deadlines<AppH2ExchangeCore>
  /** The wait for a whole answer, and the longer one for a gRPC answer's trailers after one message. */
  readonly holds: AnswerHolds
  readonly oneMessageHolds: AnswerHolds
  /** A streamed answer whose stream stays paused this long is given up. */
  readonly answerIdleMs: number
  /** The sidecar's budget for what the answers hold (heldAnswers.ts). */
  readonly held: HeldAnswers
  /** The session a stream that took its place opens on (the pooled one, made again once the last one closed, failed or went away), counted there until streamClosed. */
  sessionForStream(room: boolean): AppH2Session
  /** A gRPC method (path) one of whose answers carried a second message. */
  streams(path: string): boolean
  noteStreaming(path: string): void
  /** The places among the streams open to the app (appH2.ts): at most maxStreams, as many again waiting. */
  readonly maxStreams: number
  admit(exchange: AppH2ExchangeCore, room: boolean): boolean | undefined
  /** Long-lived streams' share of the places (appH2.ts): refused past it (counted), or counted from admit to their end. */
  refuseLongStream(): boolean
  longStreamShare(): number
  longStreamTaken(): void
  longStreamEnded(): void
  leftWaiting(exchange: AppH2ExchangeCore): void
  streamClosed(session: AppH2Session, exchange: AppH2ExchangeCore): void
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
const exchangeShape = new ShapeAnchor<AppH2ExchangeCore>()

/**
 * One stream to the app, from the request to the answer's end, but for the answer's gathering
 * (AppH2Exchange, appH2Exchange.ts). `pending` gets the outcome once (a whole answer, a streaming
 * one, or a typed failure); the observation ends once.
 */
export abstract class AppH2ExchangeCore implements Expiring {
  // Every field is declared here, the answer's too (appH2Exchange.ts): one shape for the request
  // path's optimized code, its fields initialised in the order they were before the split.
  protected readonly leg: H2Leg
  protected readonly request: AppH2Request
  readonly observation: InboundObservation
  private readonly pending: PendingOutcome
  protected readonly grpc: boolean
  protected stream: H2Stream | undefined = undefined
  /** Its stream is over at the session (both ends, a reset either way, or its end told): its place went back. */
  protected streamOver = false
  /** The app's answer is paused for the mesh: what came since is not yet given back to the app's window. */
  protected windowHeld = false
  protected heldBytes = 0
  /** The request body's pump waits for room on the stream (onWritable, or the stream's end). */
  private writable: (() => void) | undefined = undefined
  /** The exchange is over: answered whole, streamed to its end, or failed. */
  protected done = false
  /** In the leg's deadlines (mux/deadlines.ts). */
  deadlineSlot = -1
  deadlineAt = 0
  /** The leg's holds' own (answerHolds.ts). */
  holdUntil = 0
  protected status = 0
  protected headers: Array<readonly [string, string]> = []
  protected parts: Array<Buffer> = []
  /** Where a gRPC answer's first message ends (its 5-byte prefix read), -1 before; Infinity once a second one came or is not looked for. */
  protected firstMessageEnd = -1
  /** The same for a gRPC request's streamed body (requestChunk), of a method not known to stream; its first bytes until its prefix is read. */
  private requestFirstEnd = Infinity
  private requestHead: Array<Buffer> | undefined = undefined
  private requestBytes = 0
  /** Waiting in the leg's oneMessageHolds (the first wait is over). */
  protected waitsLonger = false
  protected bytes = 0
  /** The answer's content-length, as the app sent it, for the message of an answer that broke off. */
  protected declared: string | undefined = undefined
  /**
   * The request's cancellation while the exchange listens to it: left when the exchange ends (a plain
   * IIP connection's requests share one, which would otherwise keep every exchange while it lives).
   */
  private cancelSource: CancelSource | undefined = undefined
  protected trailers: Array<readonly [string, string]> | undefined = undefined
  /** Set once the answer streams. */
  protected answer: PausingByteQueue | undefined = undefined
  /** Waiting for a place among the streams open to the app (the leg's admit). */
  waitingForPlace = false
  /** Holds one of those places, until its stream is over. */
  private placeHeld = false
  /** Counted among the leg's long-lived streams (a method seen to stream, a streamed body, an event stream) until its place goes back (the leg's line reads it). */
  longLived = false
  /** The session its stream opened on, whose places it holds. */
  protected session: AppH2Session | undefined = undefined
  /** Armed while the streamed answer's app stream is paused (answerPaused). */
  protected stall: NodeJS.Timeout | undefined = undefined
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
  /** The answer's parts gathered whole, counted in the leg's held bytes until they go on (heldAnswers.ts). */
  protected partsCounted = 0
  /** The streamed answer's wait on its reader (heldAnswers.ts); its bytes go to its queue through it. */
  readerWait: ReaderWait | undefined = undefined

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
    // The deadline covers the whole call: its wait for a place, its answer's head, its answer as it streams.
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
    const head = rawHeadOf(request, this.grpc)
    const stream = session.connection.request(head, !withBody)
    if (stream instanceof H2RequestRefused) {
      // The session ended or heard the app's GOAWAY within this turn, or the head is past the app's
      // limit: the app never saw the request.
      this.streamOver = true
      this.releasePlace()
      if (stream.reason === "past-peer-header-limit") return this.headTooLarge(head)
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

  /** The app's END_STREAM came (after its head, DATA or trailers): the stream is over if B's end went out before it. */
  protected remoteEnded(): void {
    if (this.stream!.state === StreamState.CLOSED) this.closed()
  }

  /**
   * The stream ended otherwise (the session's onEnd): "complete", B's END_STREAM went out after the
   * app's; or a stream error, the app's GOAWAY above it, the session's end. `retryable`: the app
   * never processed it (above its GOAWAY's last stream, or the session ended before the app spoke,
   * ECONNREFUSED among them): another instance may take it.
   */
  onStreamEnded(ended: H2StreamEnded): void {
    // Queued on the session, its head past the limit the app's SETTINGS brought meanwhile: never sent.
    if (!this.done && ended.reason === "past-peer-header-limit") this.headTooLarge(rawHeadOf(this.request, this.grpc))
    else if (!this.done && ended.reason !== "complete") {
      const refused = this.status === 0 && (ended.retryable || this.session!.aboveGoaway(this.stream!.id))
      const code = refused ? AppErrorCode.unavailable : AppErrorCode.failed
      const socketError = this.session!.socketError
      const what = socketError === undefined ? `its stream ended (${ended.reason}, code ${ended.code})` : socketError
      this.fail(502, { hop: "app", reason: code }, code, `app at ${this.leg.address}: ${what}`, !refused)
    }
    this.closed()
  }

  /**
   * The head is past the app's SETTINGS_MAX_HEADER_LIST_SIZE (src/h2 never sends it: the app's
   * server would reset it, and nghttp2 counts that against the session): 431 headers_too_large, not
   * processed, and not retried elsewhere (outboundRetry.ts): every instance would refuse it.
   */
  private headTooLarge(head: ReadonlyArray<string>): void {
    const limit = this.session!.connection.peerMaxHeaderListSize
    const message = `the request's header fields (${headerListSize(head)} bytes as RFC 9113 §6.5.2 counts them) are past the ${limit} the app at ${this.leg.address} takes (its SETTINGS_MAX_HEADER_LIST_SIZE)`
    this.fail(431, { hop: "inbound", reason: AppErrorCode.headersTooLarge }, AppErrorCode.headersTooLarge, message, false)
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
  protected closed(): void {
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
    this.fail(this.status, { hop: "inbound", reason: MeshErrorCode.overloaded }, MeshErrorCode.overloaded, message, true, true)
  }

  /** The leg's deadlines: the call's time is up. */
  deadlinePassed(): void {
    const message = appDeadlineMessage(this.request.timeLeftMs, this.status !== 0, this.answer !== undefined)
    // Ahead of what the answer queued: behind it, under a caller that stopped reading, the error waited for a window that never came.
    this.fail(504, { hop: "inbound", reason: MeshErrorCode.deadlineExceeded }, MeshErrorCode.deadlineExceeded, message, true, true)
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
  protected knownStreaming(shownBy = "its second message"): void {
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

  /** The holds this exchange waits in, if it does, let go of it (appH2Exchange.ts). */
  protected abstract releaseHold(): void


  /**
   * The exchange ends in a failure: the app's stream is reset, and the caller gets the typed error,
   * as the outcome or, once the answer streams, as the stream's end. Nothing after the first end.
   */
  protected fail(status: number, reason: Failure, code: string, message: string, processed = true, now = false): void {
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
    // `now`: an answer taken back from a reader that stopped, its error ahead of what it would never read.
    if (this.answer !== undefined) {
      const error = new RemoteError({ code, message, processed: true })
      if (now) this.answer.abort(error)
      else this.answer.fail(error)
    }
    else this.settle(failure(code, message, processed))
    if (sent) this.closed()
  }

  /** The request's cancellation fired (the exchange is its abort listener). */
  handleEvent(): void {
    this.fail(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, MeshErrorCode.cancelled, "request aborted")
  }

  protected finish(): void {
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
    // Its parts went on as one message (answerWhole), or nowhere.
    this.releaseParts()
  }

  /** The parts gathered whole count no more in the leg's held bytes (they went on, or the answer streams: its queue counts them). */
  protected releaseParts(): void {
    this.leg.held.bytes -= this.partsCounted
    this.leg.held.whole -= this.partsCounted
    this.partsCounted = 0
  }

  /** The first outcome counts (PendingOutcome ignores later ones). */
  protected settle(value: Outcome): void {
    this.pending.settle(value)
  }
}

/** Whether a request's accept names text/event-stream (an EventSource's GET: it lives as long as it is read), its name in any case. */
const pairsAcceptEventStream = (pairs: ReadonlyArray<readonly [string, string]>): boolean => {
  for (let i = 0; i < pairs.length; i++) {
    if (isAcceptName(pairs[i]![0]) && acceptsEventStream(pairs[i]![1])) return true
  }
  return false
}

/** The length in a gRPC message's 5-byte prefix (a flag byte, then 4 bytes big-endian), read across the first parts (5 bytes or more in all). */
export const prefixedLength = (parts: ReadonlyArray<Buffer>): number => {
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
const pump = async (body: IncomingStream, exchange: AppH2ExchangeCore): Promise<void> => {
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
