// One stream to an HTTP/2 app, its answer's side (the request's side and the stream's life:
// appH2ExchangeCore.ts): the app's answer comes back as the mesh takes it (the stream pauses past a
// high-water mark).
// An answer that is over within 1 ms of the end of the read its head came in (a unary call:
// grpc-js sends its trailers a turn or two of the event loop after the message) goes back as one
// message, its trailers in its metadata; so does a gRPC answer holding one whole message then, of
// a method not seen to stream, that is over within 20 ms more (its trailers late); any other
// streams from then on, and its trailers (`grpc-status`, `grpc-message`, custom ones) close the
// stream (PROTOCOL.md §13, §17.5).
// An answer is complete only with its END_STREAM: a stream the app reset first (even with
// NO_ERROR) broke off, save the NO_ERROR reset node's own server sends in place of an END_STREAM
// its spent window holds back, after all the bytes its content-length declared (windowSpentAtReset).
// Its head and trailers go back within the metadata a message to the caller carries (the bound
// agreed with it, RequestContext.maxMetaBytes): an answer held whole whose head and trailers fit
// only apart streams (a packet each) to a caller that reads trailers closing a stream, and fails
// as the app's to any other; past it, either fails as the app's.
import { ErrorCode } from "../h2/frames.ts"
import { reply } from "../iip/server.ts"
import { TurnEnd } from "../mux/turnEnd.ts"
import { RemoteError } from "../mux/meshChannels.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import type { MetaEntries } from "../protocol/metaEntries.ts"
import type { Held } from "./answerHolds.ts"
import { AppH2ExchangeCore, prefixedLength } from "./appH2ExchangeCore.ts"
import { APP_STREAM_WINDOW } from "./appH2Session.ts"
import { PausingByteQueue } from "./byteQueue.ts"
import { isEventStreamType } from "./eventStream.ts"
import { grpcStatusIn } from "./grpcStatus.ts"
import { endToEndHeaders, RawListCache } from "./headerFilter.ts"
import { type HeldAnswer, ReaderWait } from "./heldAnswers.ts"
import { answerMetaPast, responseMeta, trailersMeta, withTrailers } from "./httpEnvelope.ts"
import { AppErrorCode } from "./proxyError.ts"

/** An answer held to go back whole streams instead once this much of it came (or once its hold is over: appH2.ts). */
const WHOLE_ANSWER_LIMIT = 64 * 1024
/** A gRPC app's trailers, filtered once while they repeat (its answer heads have the filter's own cache). */
const appTrailers = new RawListCache()
/** A streaming answer pauses the app's stream while this much of it waits for the mesh. */
const ANSWER_HIGH_WATER = 64 * 1024

/**
 * One stream to the app, from the request to the answer's end (its request side and its life:
 * AppH2ExchangeCore); this class gathers the app's answer and hands it to the caller.
 */
export class AppH2Exchange extends AppH2ExchangeCore implements Held, HeldAnswer {
  /** The app's trailers, which end its answer (the session's onTrailers). */
  onTrailers(fields: ReadonlyArray<string>): void {
    if (!this.done) {
      this.trailers = endToEndHeaders(fields, this.leg.onInvalid, appTrailers)
      this.onEnd()
    }
    this.remoteEnded()
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

  /** The leg's holds: the wait for a whole answer is over (released once the answer ended or streams). */
  holdOver(): void {
    if (!this.waitsLonger && this.grpc && this.bytes === this.firstMessageEnd && !this.leg.streams(this.request.path)) {
      this.waitsLonger = true
      return this.leg.oneMessageHolds.hold(this)
    }
    this.streamAnswer()
  }

  /** The holds this exchange waits in, if it does. */
  protected override releaseHold(): void {
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
    // One that is over soon goes back whole: its wait begins at the end of the read (or turn) its
    // head came in, unless the answer is over by then.
    if (!this.session!.connection.atReadEnd(this)) headsThisTurn.add(this)
  }

  /** The read its head came in is over (H2ConnectionCore.atReadEnd). */
  atReadEnd(): void {
    this.holdIfOpen()
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
      this.readerWait!.push(chunk)
      this.leg.held.check()
      return this.giveBack(chunk.length)
    }
    // Held whole: at most WHOLE_ANSWER_LIMIT, then it streams.
    this.parts.push(chunk)
    this.bytes += chunk.length
    this.partsCounted += chunk.length
    this.leg.held.bytes += chunk.length
    this.leg.held.whole += chunk.length
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
        readerWait.resumed()
        const held = this.heldBytes
        this.heldBytes = 0
        if (held > 0) this.giveBack(held)
        clearTimeout(this.stall)
        this.stall = undefined
      },
      // Its reader let go of all that was queued (handed it to the mesh's writer): it waits on it no more.
      allTaken: () => readerWait.taken(),
      over: () => this.leg.held.leave(this)
    }, (refusal) =>
      // Refused at this hop (a plain caller's answer past the answer budget): B's own overload, as the HTTP/1.1 leg counts it.
      refusal === undefined
        ? this.fail(this.status, { hop: "app", reason: "answer_broke_off" }, MeshErrorCode.cancelled, "nobody reads the answer")
        : this.fail(503, { hop: "inbound", reason: refusal.code }, refusal.code, refusal.message))
    const readerWait = new ReaderWait(answer)
    this.answer = answer
    this.readerWait = readerWait
    this.releaseHold()
    // Its parts go to the stream: a first message not read by now is not looked for. Counted in the
    // leg's held bytes as the queue's from here (pushed after countIn), until the mesh takes them.
    if (this.firstMessageEnd < 0) this.firstMessageEnd = Infinity
    this.releaseParts()
    answer.countIn(this.leg.held)
    this.leg.held.join(this)
    // No reader yet: what came so far waits on it (and counts in the budget from now).
    for (const part of this.parts) readerWait.push(part)
    this.leg.held.check()
    this.observation.responseBytes(this.bytes)
    this.parts = []
    // Its deadline stays: the rest of the caller's bounds the answer as it streams (as the HTTP/1.1
    // leg's does), else an app that trickles or stops mid-answer held one of its streams for good.
    this.settle(reply(answer, meta))
  }

  /**
   * The streamed answer's stream paused (a window of it waits for the mesh). A caller that never
   * reads would keep the app's stream (one of the app's concurrent streams) until its deadline:
   * one that stays paused for the body idle timeout is given up before, as the HTTP/1.1 leg does
   * (appExchange.ts). A gRPC call's stream may wait on a slow reader until its deadline. When it paused
   * is kept for the peers' share (peerShare.ts): paused a second, or read too slowly, past its
   * peer's share while another peer's call waits, its place is taken back, a gRPC call's too.
   */
  private answerPaused(): void {
    if (!this.paused) {
      this.paused = true
      this.pausedAt = performance.now()
    }
    this.readerWait!.begin(this.pausedAt)
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
    this.readerWait!.ended()
    this.answer!.end(closing)
  }

  /** Bytes its queue holds (heldAnswers.ts). */
  get heldNow(): number {
    return this.answer === undefined ? 0 : this.answer.heldBytes
  }

  /**
   * The leg's held answers are past their budget and this one is taken back (heldAnswers.ts): its
   * stream to the app reset (CANCEL) if it still runs, its queue dropped, its caller told now. The
   * caller's doing, not the app's; the answer had begun (processed: never retried).
   */
  takeBackHeld(message: string): void {
    if (!this.done) return this.takenBack(message)
    this.answer?.abort(new RemoteError({ code: MeshErrorCode.overloaded, message, processed: true }))
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
}

/**
 * The exchanges whose answer head came outside a read of the app's connection, whose waits begin at
 * the turn's end (turnEnd.ts); a head read from the connection begins its wait at that read's end
 * (onHead): no Immediate per call. Either way an answer read whole with its head (head, message and
 * trailers in one read, the usual unary answer) arms no timer, where a wait begun at its head armed
 * the holds' timer and cleared it again (a Timeout, a timer-list insert and unenroll per call while
 * calls come one at a time).
 */
const headsThisTurn = new TurnEnd<AppH2Exchange>((exchange) => exchange.holdIfOpen())

/** The first value of `name` in a flat name, value list (an answer head), or undefined. */
const fieldOf = (fields: ReadonlyArray<string>, name: string): string | undefined => {
  for (let i = 2; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1]
  return undefined
}

