// One HTTP/2 stream of the outbound listener's h2c connections (outboundH2.ts) as outbound.ts reads
// and answers a request (outboundCall.ts), on the sidecar's own HTTP/2 (src/h2, H2Connection in the
// server role): its head, its body (held whole when it ends within its head's turn, gathered to a
// limit, or streamed under the caller's flow control), and its answer (head, body, trailers), with
// what the session sweep asks of it (a stalled answer's reset) and the end of a body cut off once
// its answer is out. A request whose END_STREAM came goes on at the turn's end, unless its caller
// reset it within that read. Premature resets are counted by src/h2's guards (stream.deadlineAt
// says when the request's own deadline passes).
// Answer bytes the stream holds unsent once a write finds its window or the write budget spent
// count in the outbound listener's held answers (HeldAnswerBudget, maxQueuedBytes) until it can
// write again or closes, as an HTTP/1.1 caller's do; a stream that never backs up costs nothing there.
import { Cancelled } from "../mux/meshChannels.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"
import { TurnEnd } from "../mux/turnEnd.ts"
import { ErrorCode } from "../h2/frames.ts"
import type { H2Connection } from "../h2/h2Connection.ts"
import { type H2Stream, StreamState } from "../h2/h2Streams.ts"
import type { HeldAnswerBudget } from "./http1Listener.ts"
import { BODY_IDLE_MS, BODY_WINDOW, type BodyCredit, type BodyShare } from "./h2BodyCredit.ts"
import { H2RequestBody } from "./h2RequestBody.ts"
import { ANSWER_HEADERS_TOO_LARGE, answerFields, requestHeaders, tooLargeFields } from "./outboundH2Fields.ts"
import type { HeldBodyReceiver, OutboundCall } from "./outboundCall.ts"
import { askedTimeoutMs } from "./outboundTarget.ts"
import { GrpcCode, isGrpc } from "./grpcStatus.ts"

/** What a call needs of its connection's session (outboundH2.ts). */
export interface CallSession {
  readonly connection: H2Connection
  readonly remoteAddress: string
  readonly held: HeldAnswerBudget
  /** The request bodies' windows over all of the listener's sessions (h2BodyCredit.ts): this call's was admitted. */
  readonly bodyCredit: BodyCredit
  /** Its connection's part of that credit. */
  readonly bodyShare: BodyShare
  /** A write found the connection's write budget spent: its socket's bytes count in the held answers. */
  socketBacked(): void
  /** Its open calls (the sweep's), which a call leaves at its close. */
  readonly open: Set<StreamCall>
  /** A call closed (performance.now()): its caller may still be reading its answer's tail (the PING floor). */
  lastClosedAt: number
  /** The caller sent its FIN: no WINDOW_UPDATE comes any more. */
  callerGone: boolean
}

/** Why this side resets a stream whose answer stopped moving (its request's failure reason, the reset counter's label). */
export const ANSWER_STALLED = "answer_stalled"

/** Why this side reset an idle body to make room in the body credit for another connection's (h2BodyCredit.ts). */
export const BODY_IDLE_RESET = "body_idle_reset"

/** Sweeps per answer idle timeout: a stream is reset this many sweeps after its answer last moved, within a quarter of the timeout past it. */
export const SWEEPS = 4

/**
 * The rest of a body cut off at its limit is read and dropped after its answer went out whole (its
 * last byte written, not queued for the caller's window: the reset would drop what is queued), and
 * RST_STREAM NO_ERROR tells a caller still sending to stop (RFC 9113 §8.1: after a complete answer)
 * once the caller ACKed a PING sent after the answer, as node's server did: the ACK says it read
 * the whole answer (a reset in the answer's own write made curl 7.88 drop the answer, "(92) Stream
 * error", h2-body-limit). The ACK replaces the 200 ms wait as the trigger (on loopback the caller
 * stops sending within a round trip, not 200 ms later); this bounds it for a caller that never
 * ACKs, or when src/h2's PINGs outstanding are at their bound. Timers only on this error path.
 */
const CUT_RESET_MS = 200

const EMPTY = Buffer.alloc(0)

/**
 * Answer bytes a stream takes while its caller's window is spent before `write` says wait: node's
 * Http2Stream's high-water mark, which the listener had on node:http2 (an answer held for a caller
 * at window 0 is about this much a stream, whatever the mesh's chunks; counted in the held answers).
 */
const ANSWER_HIGH_WATER = 64 * 1024

/**
 * A held body whose request ended is decided, and a request whose END_STREAM came is sent on
 * (sendsAtReadEnd), at the end of the read that brought it (H2ConnectionCore.atReadEnd; atReadEnd
 * below): a RST_STREAM later in the same read (rapid reset, CVE-2023-44487), parsed after the request
 * was handed over, has been seen. Ended outside a read (a held body ended later), at the turn's end instead
 * (turnEnd.ts). The read's end, not the turn's: a request sent from the check phase left a turn of
 * the loop more at sidecar A (node completes a TLS write through an immediate of its own, which
 * queued from the check phase runs a turn later), and each TurnEnd an immediate per call.
 */
const keptOutsideRead = new TurnEnd<StreamCall>((call) => call.atReadEnd())

/**
 * Held bodies not over at the end of their read stream on at the turn's end, not the read's: a read
 * that filled node's 64 KiB buffer is followed by another in the same turn, which may end the body
 * (whole, it can be tried again elsewhere and mirrored; streamed, it cannot).
 */
const heldThisTurn = new TurnEnd<StreamCall>((call) => call.streamOn())

/** Keeps the hidden class of StreamCall alive while idle (shapeAnchor.ts). */
const callShape = new ShapeAnchor<StreamCall>()

const resetCut = (call: StreamCall): void => call.resetCut()

/** One HTTP/2 stream as outbound.ts reads and answers a request (outboundCall.ts). */
export class StreamCall implements OutboundCall {
  readonly httpVersionMajor = 2
  headersSent = false
  writableEnded = false
  headWritten = false
  readonly method: string
  readonly url: string
  readonly headers: Record<string, string | Array<string> | undefined>
  readonly rawHeaders: ReadonlyArray<string>
  readonly hasBody: boolean
  readonly headPastLimit: number
  readonly startedAt: number
  readonly remoteAddress: string
  /** Why this side cut the answer off, if it did (OutboundResponse.cutReason). */
  cutReason: string | undefined = undefined
  /** RESOURCE_EXHAUSTED when it went in place of an answer's head or trailers past the caller's limit (headersTooLarge). */
  grpcStatusSent: number | undefined = undefined
  /** Its head or trailers were past the caller's limit: something smaller went in their place (headersTooLarge). */
  private answerRefused = false
  private readonly session: CallSession
  private readonly stream: H2Stream
  private status = 200
  private head: ReadonlyArray<readonly [string, string]> = []
  private closeListener: ((finished: boolean) => void) | undefined = undefined
  private isClosed = false
  /** The request's END_STREAM came, or it can never come (brokenWith). */
  private requestEnded = false
  private brokenWith: Error | undefined = undefined
  /** DATA that came before the body was asked for (not given back to the caller's window yet). */
  private early: Array<Buffer> | undefined = undefined
  /** A body being held (heldBody): who gets it, its limit, what came so far. */
  private holder: HeldBodyReceiver | undefined = undefined
  private holdLimit = 0
  private heldBytes = 0
  private heldParts: Array<Buffer> | undefined = undefined
  /** readBody's gathering: its parts, its total, and how it settles. */
  private gathered: Array<Buffer> | undefined = undefined
  private gatherLimit = 0
  private gatherBytes = 0
  private gatherDone: ((body: Buffer | undefined) => void) | undefined = undefined
  private gatherFailed: ((error: Error) => void) | undefined = undefined
  /** The body as it streams (body(), or a held body that went on at its turn's end). */
  private queue: H2RequestBody | undefined = undefined
  /** Past its answer: what more comes of a cut body is given back unread. */
  private dropping = false
  /** Past its answer, which still waits for the caller's window: the stop-sending reset's grace starts once it is out (writable). */
  private cutWhenOut = false
  /** The request kept to the read's end (sendsAtReadEnd): who sends it, with what body; and whether it was kept (once per call). */
  private sendTo: HeldBodyReceiver | undefined = undefined
  private sendBody: Uint8Array | AsyncIterable<Buffer> | undefined = undefined
  private keptToReadEnd = false
  /** Answer bytes handed to the stream, what the held answers count of it now, and a wait for room (drained). */
  private queued = 0
  private heldCounted = 0
  private room: (() => void) | undefined = undefined
  private sentAtSweep = -1
  private stillSweeps = 0
  /** The body's window granted from the listener's credit (0: none, or given back), and what the mesh took of it since it last grew. */
  private window = 0
  private moved = 0
  /** When its caller last sent DATA, or got window to send in (performance.now()): since then its body is idle (idleBody). */
  private dataAt: number

  constructor(session: CallSession, stream: H2Stream, fields: Array<string>, endStream: boolean, headLimit: number) {
    callShape.newest = this
    this.session = session
    this.stream = stream
    stream.user = this
    this.startedAt = stream.startedAt
    this.remoteAddress = session.remoteAddress
    const head = requestHeaders(fields)
    this.headers = head.headers
    this.method = head.method
    this.url = head.path
    // As it came: the header filter leaves its pseudo-headers out.
    this.rawHeaders = fields
    this.hasBody = !endStream
    this.requestEnded = endStream
    this.dataAt = stream.startedAt
    // The session admitted its body's first window.
    if (!endStream) this.window = BODY_WINDOW
    this.headPastLimit = head.size > headLimit ? headLimit : 0
    // The caller's own deadline: its reset after it is not premature, however soon (src/h2's guards).
    const asked = askedTimeoutMs(this)
    if (asked > 0) stream.deadlineAt = stream.startedAt + asked
    session.open.add(this)
  }

  // ---- the connection's events (outboundH2.ts hands them on) ----

  /** DATA of the request; `endStream`: its last. */
  data(chunk: Buffer, endStream: boolean): void {
    this.dataAt = this.session.connection.readAt
    if (chunk.length > 0) this.take(chunk)
    if (endStream) this.requestEnd()
  }

  /** The request's END_STREAM (on DATA, or trailers, which a request's body has nothing to carry to). */
  requestEnd(): void {
    this.requestEnded = true
    if (this.holder !== undefined) this.heldEnd()
    else if (this.gatherDone !== undefined) this.gatherEnd()
    else this.queue?.end()
    if (this.stream.unconsumed === 0) this.releaseWindow()
    // Our own end went out before it: the stream is over.
    if (this.stream.state === StreamState.CLOSED) this.closed(this.writableEnded)
  }

  private take(chunk: Buffer): void {
    // A cut body's rest is dropped, not given back: the caller's window closes on it until the reset.
    if (this.dropping) return
    if (this.holder !== undefined) {
      this.giveBack(chunk.length)
      ;(this.heldParts ??= []).push(chunk)
      this.heldBytes += chunk.length
      if (this.heldBytes > this.holdLimit) this.streamOn()
      return
    }
    if (this.gatherDone !== undefined) return this.gatherChunk(chunk, true)
    if (this.queue !== undefined) return this.queue.push(chunk)
    ;(this.early ??= []).push(chunk)
  }

  /** The caller reset the stream (RST_STREAM): no failure of anything beyond A. */
  peerReset(): void {
    this.requestBroke(new Cancelled({ message: "the caller reset its stream" }))
    this.closed(false)
  }

  /** The stream ended otherwise: "complete" (our end went out after the caller's), or a stream or connection error. */
  ended(complete: boolean): void {
    if (!complete) this.requestBroke(new Cancelled({ message: "the caller's stream or connection ended" }))
    this.closed(complete && this.writableEnded)
  }

  /** There is room to write again (the window or the write budget). */
  writable(): void {
    this.releaseHeld()
    if (this.cutWhenOut && this.stream.out === undefined) {
      this.cutWhenOut = false
      this.cutAfterRoundTrip()
    }
    const room = this.room
    this.room = undefined
    room?.()
  }

  /** The request can never be whole now: whoever waits for its body hears so; nothing of it went on if it was still here. */
  private requestBroke(error: Error): void {
    if (this.requestEnded) return
    this.requestEnded = true
    this.brokenWith = error
    const holder = this.holder
    if (holder !== undefined) {
      this.holder = undefined
      this.heldParts = undefined
      return holder.bodyReset()
    }
    const failed = this.gatherFailed
    if (failed !== undefined) {
      this.gatherDone = this.gatherFailed = undefined
      this.gathered = undefined
      return failed(error)
    }
    this.queue?.fail(error)
  }

  /**
   * The mesh took `bytes` of the body: they come back to the caller's windows, and a body that moved
   * its whole window gets a larger one while the listener's credit has room (a stalled body keeps
   * the window it had). Taken whole, its window's credit goes back.
   */
  private giveBack(bytes: number): void {
    const stream = this.stream
    const connection = this.session.connection
    const available = stream.recvAvailable
    connection.consumed(stream, bytes)
    // A WINDOW_UPDATE went: a caller that waited for it is not idle from its last DATA on.
    if (stream.recvAvailable !== available) this.dataAt = performance.now()
    if (this.window === 0) return
    if (this.requestEnded) {
      if (stream.unconsumed === 0) this.releaseWindow()
      return
    }
    this.moved += bytes
    if (this.moved < this.window) return
    this.moved = 0
    const credit = this.session.bodyCredit
    const own = this.session.bodyShare
    const extra = credit.room(own, this.window)
    if (extra === 0 || !connection.widen(stream, extra)) return
    credit.take(own, extra)
    this.window += extra
  }

  private releaseWindow(): void {
    if (this.window === 0) return
    this.session.bodyCredit.release(this.session.bodyShare, this.window)
    this.window = 0
  }

  /** The stream is over (once): its place, its held answer bytes, and the exchange's listener. */
  private closed(finished: boolean): void {
    if (this.isClosed) return
    this.isClosed = true
    const session = this.session
    session.open.delete(this)
    session.lastClosedAt = performance.now()
    this.releaseHeld()
    this.releaseWindow()
    this.stream.user = undefined
    const room = this.room
    this.room = undefined
    room?.()
    const listener = this.closeListener
    this.closeListener = undefined
    listener?.(finished)
  }

  // ---- the request (OutboundRequest) ----

  /** Closed, or its answer given up for a head or trailers past the caller's limit: nothing more of it is wanted. */
  get destroyed(): boolean {
    return this.isClosed || this.answerRefused
  }

  body(): AsyncIterable<Buffer> {
    if (this.queue !== undefined) return this.queue
    const queue = new H2RequestBody((bytes) => this.giveBack(bytes))
    this.queue = queue
    const early = this.early
    this.early = undefined
    if (early !== undefined) for (const chunk of early) queue.push(chunk)
    if (this.brokenWith !== undefined) queue.fail(this.brokenWith)
    else if (this.requestEnded) queue.end()
    return queue
  }

  readBody(limit: number): Promise<Buffer | undefined> {
    // A length declared past the limit is refused from the head, as HTTP/1.1's is (http1Call.ts):
    // none of the body is read (the caller's window closes on what came), the rest dropped once answered.
    if (Number(this.headers["content-length"]) > limit) {
      return Promise.resolve(undefined)
    }
    if (this.brokenWith !== undefined) return Promise.reject(this.closedBeforeEnd())
    return new Promise((resolve, reject) => {
      this.gathered = []
      this.gatherLimit = limit
      this.gatherBytes = 0
      this.gatherDone = resolve
      this.gatherFailed = reject
      // What came before: kept unread, or in the queue of a held body that streamed on (its turn ended first).
      const queue = this.queue
      this.queue = undefined
      const before = queue !== undefined ? queue.takeQueued() : this.early
      this.early = undefined
      if (before !== undefined) for (const chunk of before) if (this.gatherDone !== undefined) this.gatherChunk(chunk, queue === undefined)
      if (this.requestEnded && this.gatherDone !== undefined) this.gatherEnd()
    })
  }

  /** A chunk of the body readBody gathers (`owed`: not given back to the window yet); past the limit the gathering stops. */
  private gatherChunk(chunk: Buffer, owed: boolean): void {
    this.gatherBytes += chunk.length
    if (this.gatherBytes > this.gatherLimit) return this.stopGathering()
    if (owed) this.giveBack(chunk.length)
    this.gathered!.push(chunk)
  }

  private gatherEnd(): void {
    const done = this.gatherDone!
    const parts = this.gathered!
    this.gatherDone = this.gatherFailed = undefined
    this.gathered = undefined
    done(parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.gatherBytes))
  }

  /** Past the limit (or given up): nothing more is read (the caller's window closes on it), the stream stays for the answer (a 413, a 408). */
  private stopGathering(): void {
    const done = this.gatherDone
    if (done === undefined) return
    this.gatherDone = this.gatherFailed = undefined
    this.gathered = undefined
    done(undefined)
  }

  stopBody(): void {
    this.stopGathering()
  }

  /** The caller reset (or closed) the stream before its body's end: its cancellation, no failure beyond it (502 `cancelled`). */
  private closedBeforeEnd(): Cancelled {
    return new Cancelled({ message: "the caller reset its stream before its body's end" })
  }

  heldBody(limit: number, receiver: HeldBodyReceiver): void {
    this.holdLimit = limit
    this.holder = receiver
    const early = this.early
    this.early = undefined
    if (early !== undefined) for (const chunk of early) if (this.holder !== undefined) this.take(chunk)
    if (this.holder === undefined) return
    if (this.requestEnded) return this.heldEnd()
    if (!this.session.connection.atReadEnd(this)) heldThisTurn.add(this)
  }

  /** The read the hold began or the request ended in is over (or the turn, for a request ended outside a read): a request kept goes on; a body still held waits for the turn's end. */
  atReadEnd(): void {
    if (this.sendTo !== undefined) this.sendUnlessReset()
    else if (this.holder !== undefined) heldThisTurn.add(this)
  }

  /** The held body ended within its turn: it goes whole. */
  private heldEnd(): void {
    const holder = this.holder!
    this.holder = undefined
    const parts = this.heldParts
    this.heldParts = undefined
    holder.bodyHeld(parts === undefined ? EMPTY : parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.heldBytes))
  }

  /** The turn ended (or the limit passed) before the body did: what came so far goes first and the body streams. */
  streamOn(): void {
    const holder = this.holder
    if (holder === undefined) return
    this.holder = undefined
    const parts = this.heldParts
    this.heldParts = undefined
    // What was held was given back to the window already.
    const queue = new H2RequestBody((bytes) => this.giveBack(bytes))
    this.queue = queue
    if (parts !== undefined) for (const part of parts) queue.pushTaken(part)
    holder.bodyHeld(queue)
  }

  sendsAtReadEnd(receiver: HeldBodyReceiver, body: Uint8Array | AsyncIterable<Buffer>): boolean {
    if (this.keptToReadEnd || !this.requestEnded) return false
    this.keptToReadEnd = true
    this.sendTo = receiver
    this.sendBody = body
    if (!this.session.connection.atReadEnd(this)) keptOutsideRead.add(this)
    return true
  }

  /** The read's (or turn's) end: the request goes on, unless its caller reset it meanwhile (nothing of it went anywhere). */
  private sendUnlessReset(): void {
    const receiver = this.sendTo!
    const body = this.sendBody!
    this.sendTo = undefined
    this.sendBody = undefined
    if (this.isClosed) receiver.bodyReset()
    else receiver.bodyHeld(body)
  }

  onClose(listener: (finished: boolean) => void): void {
    this.closeListener = listener
  }

  // ---- the answer (OutboundResponse) ----

  writeHead(status: number, headers: ReadonlyArray<readonly [string, string]>): void {
    this.status = status
    this.head = headers
    this.headersSent = true
  }

  /** The head, once. */
  private sendHead(endStream: boolean): boolean {
    if (this.headWritten) return !this.destroyed
    this.headWritten = true
    if (this.isClosed) return false
    if (this.session.connection.respond(this.stream, answerFields(this.status, this.head), endStream)) return !endStream
    this.headersTooLarge(true)
    return false
  }

  /**
   * The answer's head (`head`) or trailers are past the caller's SETTINGS_MAX_HEADER_LIST_SIZE
   * (src/h2 sent nothing): a smaller answer in their place (tooLargeFields), or, when none fits, the
   * stream reset INTERNAL_ERROR. The mesh's answer is given up (its listener told, not finished):
   * the request failed here, answer_headers_too_large. A body still coming is cut (afterAnswer).
   */
  private headersTooLarge(head: boolean): void {
    this.cutReason = ANSWER_HEADERS_TOO_LARGE
    this.answerRefused = true
    const listener = this.closeListener
    this.closeListener = undefined
    const connection = this.session.connection
    const grpc = isGrpc(this.headers["content-type"] as string | undefined)
    const fields = tooLargeFields(grpc, head, connection.peerMaxHeaderListSize)
    const sent = fields !== undefined && (head ? connection.respond(this.stream, fields, true) : connection.trailers(this.stream, fields))
    if (!sent) this.resetHere(ErrorCode.INTERNAL_ERROR)
    else if (grpc) this.grpcStatusSent = GrpcCode.resourceExhausted
    listener?.(false)
    this.afterAnswer()
  }

  write(chunk: Uint8Array): boolean {
    if (this.writableEnded || !this.sendHead(false)) return false
    this.queued += chunk.length
    if (this.session.connection.write(this.stream, asBuffer(chunk), false)) return true
    this.backedUp()
    // Waiting for the caller's window with less than ANSWER_HIGH_WATER queued: taken, so the next
    // chunk may come meanwhile. The write budget spent (nothing queued on the stream) is a wait.
    const queued = this.stream.outBytes
    return queued > 0 && queued < ANSWER_HIGH_WATER && !this.isClosed
  }

  drained(): Promise<void> {
    if (this.isClosed || !this.stream.wantsWritable) return Promise.resolve()
    return new Promise((resolve) => {
      const prior = this.room
      this.room = prior === undefined ? resolve : () => {
        prior()
        resolve()
      }
    })
  }

  end(data?: Uint8Array | string, trailers?: ReadonlyArray<readonly [string, string]>): void {
    if (this.writableEnded) return
    this.writableEnded = true
    const empty = data === undefined || data.length === 0
    // Head and end in one HEADERS frame when nothing else follows (a gRPC trailers-only answer):
    // a gRPC client reads them apart as an answer without a status.
    if (!this.headWritten && empty && trailers === undefined) {
      this.sendHead(true)
      return this.afterAnswer()
    }
    if (!this.sendHead(false)) return this.afterAnswer()
    const connection = this.session.connection
    if (!empty) {
      const chunk = typeof data === "string" ? Buffer.from(data) : asBuffer(data)
      this.queued += chunk.length
      if (!connection.write(this.stream, chunk, trailers === undefined)) this.backedUp()
    } else if (trailers === undefined) connection.write(this.stream, EMPTY, true)
    if (trailers !== undefined && !this.isClosed && !connection.trailers(this.stream, answerFields(-1, trailers))) this.headersTooLarge(false)
    this.afterAnswer()
  }

  /** A cut answer (the far app died, the peer's connection was lost, the body broke its length): RST_STREAM INTERNAL_ERROR, the caller reads it as one. */
  destroy(): void {
    this.resetHere(ErrorCode.INTERNAL_ERROR)
  }

  // ---- the sweep's and the session's asks ----

  /** Answer bytes wait for the caller's window, or for its socket (the write budget spent). */
  get answerWaiting(): boolean {
    return this.stream.wantsWritable
  }

  /** True once the answer has been waiting with none of it gone for SWEEPS sweeps in a row. */
  stalled(): boolean {
    const waiting = this.stream.outBytes
    if (!this.stream.wantsWritable || this.isClosed) {
      this.sentAtSweep = -1
      return false
    }
    const sent = this.queued - waiting
    if (sent !== this.sentAtSweep) {
      this.sentAtSweep = sent
      this.stillSweeps = 0
      return false
    }
    return ++this.stillSweeps >= SWEEPS
  }

  /**
   * Since when its body has been idle, if it is at `now` (else Infinity): it holds a window its
   * caller has not sent on for BODY_IDLE_MS, nothing of it waits for the mesh, and this side read
   * the connection in all that time without putting a read off (turnReads: a caller's DATA may
   * wait unread in the socket): it waits on its caller, not on this side (h2BodyCredit.ts may
   * reset it for another connection's). Without the last, a flood's
   * uploads whose socket sat put off for over a second were taken for idle (47 of them reset in a
   * run of h2c-body-flood-rss's flood in one process, at 1 s). Nothing unconsumed, the caller may
   * send over half its window (src/h2 gives half back as it is consumed) unless it sent padding,
   * which comes back with its next data: a look at the window open let a caller that sent half a
   * window of padding on each body and nothing more keep them all (h2c-body-evict-idle.test.ts).
   */
  idleSince(now: number): number {
    if (this.window === 0 || this.requestEnded || this.stream.unconsumed > 0) return Infinity
    const since = Math.max(this.dataAt, this.session.connection.readsPutOffAt)
    return now - since >= BODY_IDLE_MS ? since : Infinity
  }

  /** Resets an idle body's stream for room (RST_STREAM ENHANCE_YOUR_CALM: grpc-js's RESOURCE_EXHAUSTED); its window comes back now. */
  resetIdle(): void {
    this.cutReason = BODY_IDLE_RESET
    this.resetHere(ErrorCode.ENHANCE_YOUR_CALM)
  }

  /** Resets a stalled answer's stream (RST_STREAM CANCEL): the exchange hears of it as a caller gone, its answer is freed. */
  cutStalled(): void {
    this.cutReason = ANSWER_STALLED
    this.resetHere(ErrorCode.CANCEL)
  }

  /**
   * The caller's connection ended (its FIN): a request whose END_STREAM has not come never gets it,
   * and an answer waiting for window never gets it (no WINDOW_UPDATE comes): either ends as a
   * caller gone (RST_STREAM CANCEL); but a body cut off after its whole answer went out gets the
   * stop-sending reset (NO_ERROR), as it would at A's PING ACK (a caller may end its side at the PING).
   */
  callerEnded(): void {
    if (this.requestEnded && this.stream.outBytes === 0) return
    this.resetHere(this.dropping && this.stream.out === undefined ? ErrorCode.NO_ERROR : ErrorCode.CANCEL)
  }

  /** The rest of a body cut off at its limit, after its answer: RST_STREAM NO_ERROR if the caller still sends. */
  resetCut(): void {
    if (!this.isClosed && !this.requestEnded) this.resetHere(ErrorCode.NO_ERROR)
  }

  private resetHere(code: number): void {
    if (this.isClosed) return
    this.session.connection.reset(this.stream, code)
    this.requestBroke(new Cancelled({ message: "the sidecar reset the caller's stream" }))
    this.closed(false)
  }

  /** The answer is over: the rest of a body still coming (cut, given up, never read, or simply not over) is dropped, and the caller told to stop sending. */
  private afterAnswer(): void {
    if (this.session.callerGone && this.stream.outBytes > 0) return this.callerEnded()
    if (this.isClosed || this.requestEnded || this.dropping) return
    this.dropping = true
    this.early = undefined
    // Still queued for the caller's window (a caller that never grants it is the sweep's: answer_stalled).
    if (this.stream.out !== undefined) this.cutWhenOut = true
    else this.cutAfterRoundTrip()
  }

  /** The stop-sending reset at the ACK of a PING sent now, after the whole answer; CUT_RESET_MS at most. */
  private cutAfterRoundTrip(): void {
    this.session.connection.ping(() => this.resetCut())
    setTimeout(resetCut, CUT_RESET_MS, this).unref()
  }

  /** The stream holds answer bytes: counted in the listener's held answers until it can write again or closes. */
  private backedUp(): void {
    if (this.session.callerGone && this.stream.outBytes > 0) return this.callerEnded()
    const unsent = this.stream.outBytes
    if (unsent === 0) return this.session.socketBacked()
    this.session.held.heldAnswerBytes += unsent - this.heldCounted
    this.heldCounted = unsent
  }

  private releaseHeld(): void {
    this.session.held.heldAnswerBytes -= this.heldCounted
    this.heldCounted = 0
  }
}

/** A Buffer over the same bytes (the mesh hands Buffers; a plain Uint8Array is viewed, not copied). */
const asBuffer = (chunk: Uint8Array): Buffer => (Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
