// The inbound side's leg to an app that speaks cleartext HTTP/2 (`--app-protocol h2c`, gRPC apps):
// one pooled session per app, made again when it closes; each mesh request is one stream on it,
// both ways under flow control: the peer's streamed body is written as the app's stream drains,
// the app's answer is read as the mesh takes it (the stream pauses past a high-water mark).
// An answer that is over within 1 ms of the end of the turn its head came in (a unary call:
// grpc-js sends its trailers a turn or two of the event loop after the message) goes back as one
// message, its trailers in its metadata; so does a gRPC answer holding one whole message then, of
// a method not seen to stream, that is over within 20 ms more (its trailers late); any other
// streams from then on, and its trailers (`grpc-status`, `grpc-message`, custom ones) close the
// stream (PROTOCOL.md §13, §17.5).
// The time left before the caller's deadline reaches a gRPC app as `grpc-timeout`, and bounds
// the whole call: past it, or when the caller cancels, the app's stream is reset.
import * as http2 from "node:http2"
import { failure, reply } from "../iip/server.ts"
import { Deadlines, type Expiring } from "../mux/deadlines.ts"
import { RemoteError } from "../mux/meshChannels.ts"
import type { Outcome, PendingOutcome } from "../mux/request.ts"
import { IncomingStream } from "../mux/streams.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { AnswerHolds, type Held } from "./answerHolds.ts"
import { PausingByteQueue } from "./byteQueue.ts"
import { drainedOrClosed } from "./drained.ts"
import { grpcStatusIn, grpcTimeoutValue, isGrpcPairs } from "./grpcStatus.ts"
import { endToEndHeaders, type OnInvalidHeader, RawListCache } from "./headerFilter.ts"
import { responseMeta, trailersMeta, withTrailers } from "./httpEnvelope.ts"
import type { Failure, InboundObservation } from "./observe.ts"
import { AppErrorCode } from "./proxyError.ts"
import { TurnEnd } from "./turnEnd.ts"

/** Like the HTTP/1.1 pool's idle keep-alive sockets, an unused session does not stay open for ever. */
const SESSION_IDLE_MS = 60_000
/** At close, streams the app left open (it reset them without an error code, say) wait no longer than this. */
const CLOSE_GRACE_MS = 1000
/** An answer held to go back whole streams instead once this much of it came... */
const WHOLE_ANSWER_LIMIT = 64 * 1024
/** ...or once it is not over this long after the turn its head came in (what a streaming answer's first message may wait). */
const WHOLE_ANSWER_WAIT_MS = 1
/**
 * A gRPC answer that holds exactly one whole message when that wait ends, of a method none of whose
 * answers carried a second one, is a unary answer waiting for its trailers (late when the app
 * paused, a GC say): it waits this much longer rather than stream (three mesh messages instead of
 * one, at both sidecars, for no earlier answer: a unary caller has nothing before the trailers).
 * The price is a server stream's first message, when its method has not yet shown a second one
 * and it pauses after the first: that message waits this long, once per method.
 */
const ONE_MESSAGE_WAIT_MS = 20
/** A gRPC app's trailers, filtered once while they repeat (its answer heads have the filter's own cache). */
const appTrailers = new RawListCache()
/** Methods remembered as streaming (their paths come from callers: bounded, forgotten all at once when full). */
const STREAMING_METHODS_KEPT = 1024
/** A streaming answer pauses the app's stream while this much of it waits for the mesh. */
const ANSWER_HIGH_WATER = 64 * 1024

export interface AppH2Request {
  readonly method: string
  readonly path: string
  readonly authority: string
  /** Filtered (headerFilter.ts) plus the hop's own. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer | IncomingStream
  /** Time left before the caller's deadline, ms. */
  readonly timeLeftMs: number
}

/** What cancels the exchange: the caller went away or the mesh's deadline passed (the request's Cancellation). */
export interface CancelSource {
  readonly aborted: boolean
  addEventListener(type: "abort", f: () => void): void
}

/** HTTP/1.1-only headers an HTTP/2 request must not carry (RFC 9113 §8.2.2); `te` passes only as `trailers`. */
const NOT_IN_H2 = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"])

/**
 * The request's head as node:http2 takes it with the least work: a flat name, value list (its
 * pseudo-headers, then the pairs; repeated names repeat), pseudo-headers never from pairs. A gRPC
 * call's `te` and `grpc-timeout` are the hop's own.
 */
const rawHeadOf = (request: AppH2Request, grpc: boolean): Array<string> => {
  // Sized once for every pair (a few are left out: the length is cut to what was written), not grown push by push.
  const pairs = request.headers
  const raw = new Array<string>(8 + 2 * pairs.length + 4)
  raw[0] = ":method"
  raw[1] = request.method
  raw[2] = ":path"
  raw[3] = request.path
  raw[4] = ":authority"
  raw[5] = request.authority
  raw[6] = ":scheme"
  raw[7] = "http"
  let at = 8
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]!
    const name = pair[0]
    if (name.charCodeAt(0) === 0x3a || NOT_IN_H2.has(name) || (grpc && name === "grpc-timeout")) continue
    raw[at++] = name
    raw[at++] = pair[1]
  }
  if (grpc) {
    raw[at++] = "te"
    raw[at++] = "trailers"
    raw[at++] = "grpc-timeout"
    raw[at++] = grpcTimeoutValue(request.timeLeftMs)
  }
  raw.length = at
  return raw
}

const LENIENT_FIELDS = { strictSingleValueFields: false } as http2.ClientSessionOptions

export class AppH2Leg {
  private session: http2.ClientHttp2Session | undefined = undefined
  readonly address: string
  readonly onInvalid: OnInvalidHeader | undefined
  /** The exchanges' deadlines and waits for a whole answer: one timer each for the leg, not two per call. */
  readonly deadlines = new Deadlines<AppH2Exchange>((exchange) => exchange.deadlinePassed())
  readonly holds = new AnswerHolds(WHOLE_ANSWER_WAIT_MS)
  readonly oneMessageHolds = new AnswerHolds(ONE_MESSAGE_WAIT_MS)
  /** gRPC methods (paths) one of whose answers carried a second message: theirs never wait past the first wait. */
  private readonly streamingMethods = new Set<string>()

  /** A streamed answer whose stream stays paused this long (the mesh takes nothing of it) is given up: the answer idle timeout. */
  readonly answerIdleMs: number

  constructor(host: string, port: number, onInvalid: OnInvalidHeader | undefined, answerIdleMs: number) {
    this.address = `${host}:${port}`
    this.onInvalid = onInvalid
    this.answerIdleMs = answerIdleMs
  }

  /** The pooled session, connecting again once the last one closed or failed. */
  current(): http2.ClientHttp2Session {
    const open = this.session
    if (open !== undefined && !open.closed && !open.destroyed) return open
    // A field HTTP/2 names single-value (user-agent, content-type...) that a peer gave twice goes to
    // the app as it came, as the HTTP/1.1 leg carries it, not refused by node's request() (a
    // session option node reads on clients too; @types/node declares it on servers only).
    const session = http2.connect(`http://${this.address}`, LENIENT_FIELDS)
    // Idle this long: closed (in-flight streams finish), made again on the next request.
    session.setTimeout(SESSION_IDLE_MS, () => session.close())
    // Its streams fail with the error; the session is made again on the next request.
    session.on("error", () => {})
    session.on("close", () => {
      if (this.session === session) this.session = undefined
    })
    session.on("goaway", () => {
      if (this.session === session) this.session = undefined
    })
    this.session = session
    return session
  }

  /**
   * One request: settles `pending` (the session's, no promise per call) exactly once; the caller's
   * cancel or the deadline resets the stream, also while the answer streams.
   */
  forward(request: AppH2Request, observation: InboundObservation, cancel: CancelSource, pending: PendingOutcome): void {
    new AppH2Exchange(this, request, observation, pending).start(cancel)
  }

  streams(path: string): boolean {
    return this.streamingMethods.has(path)
  }

  /** An answer of `path` carried a second message. */
  noteStreaming(path: string): void {
    if (this.streamingMethods.size >= STREAMING_METHODS_KEPT) this.streamingMethods.clear()
    this.streamingMethods.add(path)
  }

  close(): Promise<void> {
    const session = this.session
    this.session = undefined
    // The leg's timers go with it: the deadlines' one timer stays armed for a finished call's
    // deadline (deadlines.ts re-arms lazily), which kept the process alive that long after a stop.
    const stopTimers = () => {
      this.deadlines.clear()
      this.holds.clear()
      this.oneMessageHolds.clear()
    }
    if (session === undefined || session.destroyed) return Promise.resolve(stopTimers())
    // The inbound side has drained: streams still open get a short grace, then the session ends.
    return new Promise((resolve) => {
      const timer = setTimeout(() => session.destroy(), CLOSE_GRACE_MS)
      session.close(() => {
        clearTimeout(timer)
        stopTimers()
        resolve()
      })
    })
  }
}

/**
 * One stream to the app, from the request to the answer's end. `pending` gets the outcome once
 * (a whole answer, a streaming one, or a typed failure); the observation ends once.
 */
class AppH2Exchange implements Expiring, Held {
  private readonly leg: AppH2Leg
  private readonly request: AppH2Request
  private readonly observation: InboundObservation
  private readonly pending: PendingOutcome
  private readonly grpc: boolean
  private stream: http2.ClientHttp2Stream | undefined = undefined
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
  /** Waiting in the leg's oneMessageHolds (the first wait is over). */
  private waitsLonger = false
  private bytes = 0
  private trailers: Array<readonly [string, string]> | undefined = undefined
  /** Set once the answer streams. */
  private answer: PausingByteQueue | undefined = undefined
  /** Armed while the streamed answer's app stream is paused (answerPaused). */
  private stall: NodeJS.Timeout | undefined = undefined

  constructor(leg: AppH2Leg, request: AppH2Request, observation: InboundObservation, pending: PendingOutcome) {
    this.leg = leg
    this.request = request
    this.observation = observation
    this.pending = pending
    this.grpc = isGrpcPairs(request.headers)
  }

  start(cancel: CancelSource): void {
    const { request, leg } = this
    const body = request.body
    const withBody = body instanceof IncomingStream || body.length > 0
    let stream: http2.ClientHttp2Stream
    try {
      stream = leg.current().request(rawHeadOf(request, this.grpc), { endStream: !withBody })
    } catch (error) {
      return this.fail(502, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, `app at ${leg.address}: ${(error as Error).message}`)
    }
    this.stream = stream
    // A gRPC call's deadline covers the whole call; any other request's only its answer's head.
    leg.deadlines.add(this, request.timeLeftMs)
    if (cancel.aborted) return this.fail(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, MeshErrorCode.cancelled, "request aborted")
    cancel.addEventListener("abort", () => this.fail(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, MeshErrorCode.cancelled, "request aborted"))
    // The stream's events reach the exchange through module-level listeners (the stream names
    // its exchange): six closures per call otherwise, and the context they share.
    const named = stream as ExchangeStream
    named[EXCHANGE] = this
    stream.on("response", onStreamResponse)
    stream.on("data", onStreamData)
    stream.on("trailers", onStreamTrailers)
    stream.on("end", onStreamEnd)
    stream.on("error", onStreamError)
    stream.on("close", onStreamClose)
    if (!withBody) return
    if (!(body instanceof IncomingStream)) {
      this.observation.requestBytes(body.length)
      stream.end(body)
      return
    }
    void pump(body, stream, this.observation).catch((error: unknown) =>
      this.fail(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, MeshErrorCode.cancelled, `request body broke off: ${String(error)}`)
    )
  }

  /** The raw field lists (the events' third argument), as the app sent them: read once, in order. */
  onTrailers(raw: ReadonlyArray<string>): void {
    this.trailers = endToEndHeaders(raw, this.leg.onInvalid, appTrailers)
  }

  onError(error: NodeJS.ErrnoException): void {
    // Refused before the app saw the request: not processed, another instance may take it.
    const cause = (error as { readonly cause?: NodeJS.ErrnoException }).cause
    const refused = this.status === 0 && (error.code === "ECONNREFUSED" || cause?.code === "ECONNREFUSED")
    const code = refused ? AppErrorCode.unavailable : AppErrorCode.failed
    this.fail(502, { hop: "app", reason: code }, code, `app at ${this.leg.address}: ${error.code ?? error.message}`, !refused)
  }

  /** Reset without an error code (or closed before its end): settled here, whatever happened. */
  onClose(): void {
    // Every stream closes, most of them answered: no failure's reason and message built for those.
    if (this.done) return
    this.fail(502, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, `app at ${this.leg.address} closed the stream without an answer`)
  }

  /** The leg's deadlines: the call's time is up. */
  deadlinePassed(): void {
    this.fail(504, { hop: "inbound", reason: MeshErrorCode.deadlineExceeded }, MeshErrorCode.deadlineExceeded, `no answer from the app within ${this.request.timeLeftMs} ms`)
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
      this.firstMessageEnd = Infinity
      // The longer wait was for trailers after one message: a second one means a stream, which goes on now.
      if (this.waitsLonger) this.streamAnswer()
    }
  }

  onHead(head: http2.IncomingHttpHeaders, raw: ReadonlyArray<string>): void {
    if (this.done) return
    this.status = Number(head[":status"])
    this.headers = endToEndHeaders(raw, this.leg.onInvalid)
    if (this.status < 200 || this.status > 599) {
      return this.fail(502, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, `app at ${this.leg.address} answered with status ${this.status}`)
    }
    // A head that ended the stream is the whole answer; otherwise one that is over soon goes back
    // whole: its wait begins at the turn's end, unless the answer is over by then.
    if (!this.stream!.endAfterHeaders) headsThisTurn.add(this)
  }

  /** The turn its head came in is over: the answer, if neither over nor streaming yet, waits to be whole. */
  holdIfOpen(): void {
    if (!this.done && this.answer === undefined) this.leg.holds.hold(this)
  }

  onData(chunk: Buffer): void {
    if (this.done) return
    if (this.answer !== undefined) {
      this.observation.responseBytes(chunk.length)
      if (this.grpc && this.firstMessageEnd !== Infinity) {
        this.bytes += chunk.length
        this.noteMessages()
      }
      return this.answer.push(chunk)
    }
    this.parts.push(chunk)
    this.bytes += chunk.length
    if (this.grpc && this.firstMessageEnd !== Infinity) this.noteMessages()
    if (this.bytes > WHOLE_ANSWER_LIMIT) this.streamAnswer()
  }

  /** The answer goes on as a stream: its head now, what came so far first. */
  private streamAnswer(): void {
    if (this.done || this.answer !== undefined || this.status === 0) return
    const stream = this.stream!
    const answer = new PausingByteQueue(ANSWER_HIGH_WATER, {
      pause: () => {
        stream.pause()
        this.answerPaused()
      },
      resumeIfPaused: () => {
        if (!stream.isPaused()) return
        stream.resume()
        clearTimeout(this.stall)
        this.stall = undefined
      }
    }, () => this.fail(this.status, { hop: "app", reason: "answer_broke_off" }, MeshErrorCode.cancelled, "nobody reads the answer"))
    this.answer = answer
    this.releaseHold()
    // Its parts go to the stream: a first message not read by now is not looked for.
    if (this.firstMessageEnd < 0) this.firstMessageEnd = Infinity
    for (const part of this.parts) answer.push(part)
    this.observation.responseBytes(this.bytes)
    this.parts = []
    if (!this.grpc) this.leg.deadlines.remove(this)
    this.settle(reply(answer, responseMeta(this.status, this.headers)))
  }

  /**
   * The streamed answer's stream paused (a window of it waits for the mesh). A caller that never
   * reads would keep the app's stream (one of the app's concurrent streams; no deadline once a
   * non-gRPC answer streams) for as long as it liked: one that stays paused for the body idle
   * timeout is given up, as the HTTP/1.1 leg does (appExchange.ts). A gRPC call's deadline
   * bounds the whole call already: its stream may wait on a slow reader until then.
   */
  private answerPaused(): void {
    if (this.grpc || this.stall !== undefined || this.done) return
    const idleMs = this.leg.answerIdleMs
    this.stall = setTimeout(() => {
      this.stall = undefined
      this.fail(this.status, { hop: "inbound", reason: AppErrorCode.answerStalled }, MeshErrorCode.cancelled, `the answer waited ${idleMs} ms for the mesh to take half a window of it`)
    }, idleMs)
  }

  onEnd(): void {
    if (this.done) return
    const { leg, status } = this
    if (status === 0) {
      return this.fail(502, { hop: "app", reason: AppErrorCode.failed }, AppErrorCode.failed, `app at ${leg.address} closed the stream without an answer`)
    }
    this.finish()
    const trailers = this.trailers
    if (this.answer !== undefined) {
      this.observation.grpcStatus(grpcStatusIn(trailers))
      this.observation.end(leg.address, status, undefined)
      return this.answer.end(trailers === undefined ? undefined : trailersMeta(trailers))
    }
    let headers = this.headers
    let held = trailers
    // A trailers-only answer (a gRPC error): its status and metadata go on as trailers, after an empty body.
    if (held === undefined && this.bytes === 0 && headers.some(([name]) => name === "grpc-status")) {
      held = headers.filter(([name]) => name !== "content-type")
      headers = headers.filter(([name]) => name === "content-type")
    }
    const body = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.bytes)
    this.observation.responseBytes(body.length)
    this.observation.grpcStatus(grpcStatusIn(held))
    this.observation.end(leg.address, status, undefined)
    const meta = responseMeta(status, headers)
    if (held !== undefined) withTrailers(meta, held)
    this.settle(reply(body, meta))
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
    if (stream !== undefined && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL)
    const body = this.request.body
    if (body instanceof IncomingStream) body.discard()
    if (this.answer !== undefined) this.answer.fail(new RemoteError({ code, message, processed: true }))
    else this.settle(failure(code, message, processed))
  }

  private finish(): void {
    this.done = true
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

/** A stream to the app names its exchange, for the listeners below (`this` is the stream). */
const EXCHANGE = Symbol("exchange")
type ExchangeStream = http2.ClientHttp2Stream & { [EXCHANGE]: AppH2Exchange }
function onStreamResponse(this: ExchangeStream, head: http2.IncomingHttpHeaders, _flags: number, raw: Array<string>): void {
  this[EXCHANGE].onHead(head, raw)
}
function onStreamData(this: ExchangeStream, chunk: Buffer): void {
  this[EXCHANGE].onData(chunk)
}
function onStreamTrailers(this: ExchangeStream, _fields: http2.IncomingHttpHeaders, _flags: number, raw: Array<string>): void {
  this[EXCHANGE].onTrailers(raw)
}
function onStreamEnd(this: ExchangeStream): void {
  this[EXCHANGE].onEnd()
}
function onStreamError(this: ExchangeStream, error: NodeJS.ErrnoException): void {
  this[EXCHANGE].onError(error)
}
function onStreamClose(this: ExchangeStream): void {
  this[EXCHANGE].onClose()
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

/** The peer's streamed body written to the app's stream, waiting on its flow control. */
const pump = async (body: IncomingStream, stream: http2.ClientHttp2Stream, observation: InboundObservation): Promise<void> => {
  for await (const chunk of body) {
    if (stream.destroyed) return
    observation.requestBytes(chunk.length)
    if (!stream.write(chunk)) {
      await drainedOrClosed(stream)
    }
  }
  if (!stream.destroyed) stream.end()
}
