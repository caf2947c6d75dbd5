// The inbound side's leg to the local app: one request over a keep-alive pool (appPool.ts: llhttp
// over a socket, no request or response objects, no streams in between), its answer
// handed back as a whole body or as a stream the mesh session reads at its own pace. inbound.ts
// checks the peer's head and builds the app's request; this runs the exchange and holds its
// limits: the body idle timeout and the declared length on a streamed request body, back-pressure
// both ways (the request body is pulled as the pool writes it; the answer pauses the socket while
// more than a window of it waits unread), and every failure becomes one typed outcome, once.
// An answer gathered whole counts in the sidecar's answer budget (AnswerBudget, `maxQueuedBytes`)
// while it is held: its declared length is taken when its head comes (past the budget a mesh
// caller's answer streams instead, a plain caller's, which cannot stream, is refused `overloaded`),
// an answer of no declared length (a plain caller's) chunk by chunk as it comes (past the budget,
// refused). A streamed answer holds a window of its own at most (ANSWER_HIGH_WATER and one read,
// the socket paused), one per pool socket, so the gathered ones are what the budget must bound.
// An answer's head and trailers go back within the metadata a message to the caller carries (the
// bound agreed with it, RequestContext.maxMetaBytes): past it the answer fails as the app's.
// A streamed answer counts in the leg's held budget (heldAnswers.ts, --app-pool-max-held-bytes)
// from its first byte queued until the mesh sent it all on or it ended any way: its queue's bytes and
// the chunk the mesh's sender took and holds for the caller's window (byteQueue.ts), and
// once its socket has stayed paused RECLAIM_STALL_MS (a reader that took nothing for a second),
// PAUSED_SOCKET_BYTES for what the paused socket's kernel receive buffer holds. That buffer, not
// the queue, was most of what a stalled answer held (measured: 256 stalled downloads pinned 128 MiB
// of kernel memory at B on fresh sockets, 180 MiB on sockets that had carried fast downloads), and
// answers the app ended but nobody reads keep their queue past their socket's release, which the
// pool's size did not bound (3,000 unread answers of 100 KiB held +245 MiB of RSS; +200 MiB with
// the budget while the sender's chunk, ~64 KiB an answer, was counted nowhere). Past the budget
// the answers stalled longest are taken back: the socket destroyed (never reused: the app's answer
// is cut), the caller told `overloaded` (processed), naming the budget. A socket paused under a
// second (a reader that keeps reading, slower than the app) counts its queue only.
import { failure, reply } from "../iip/server.ts"
import type { CancelSignal } from "../mux/cancellation.ts"
import type { Outcome, PendingOutcome } from "../mux/request.ts"
import { RemoteError } from "../mux/meshChannels.ts"
import { IncomingStream, StreamFailed } from "../mux/streams.ts"
import { Limits } from "../protocol/constants.ts"
import { type Meta, MeshErrorCode } from "../protocol/mesh.ts"
import { type AppController, type AppPool, type AppPoolHandler, EventStreamsFull, PoolShareReclaimed } from "./appPool.ts"
import { InvalidRequestHead } from "./appRequestHead.ts"
import { describedLength, endToEndHeaders, type OnInvalidHeader } from "./headerFilter.ts"
import { answerMetaPast, responseMeta, trailersMeta } from "./httpEnvelope.ts"
import type { Failure, InboundObservation } from "./observe.ts"
import { AppErrorCode, appDeadlineMessage } from "./proxyError.ts"
import { PausingByteQueue } from "./byteQueue.ts"
import { type HeldAnswer, type HeldAnswers, ReaderWait } from "./heldAnswers.ts"
import { RECLAIM_STALL_MS } from "./peerShare.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"
import type { PoolPeer } from "./poolPeers.ts"

/** Answers up to this size (declared by the app) go back as one message; larger or chunked ones stream. */
const WHOLE_BODY_LIMIT = 64 * 1024
/** An answer streaming back pauses the app's socket while this much of it waits unread. */
const ANSWER_HIGH_WATER = 64 * 1024
/**
 * What a pool socket paused on a stalled reader is counted to hold in its kernel receive buffer:
 * measured with `ss -tm` at B (Linux 6, tcp_rmem 4096 131072 33554432), a socket paused early in a
 * fast download held 500 KiB on average, 783 KiB at most (its buffer autotuned to 782 KiB by the
 * download's first burst); one that had carried fast downloads before, 720 KiB on average, 1.9 MiB
 * at most. The buffer cannot be read from node: this is the average, rounded up.
 */
export const PAUSED_SOCKET_BYTES = 1024 * 1024
/**
 * A plain IIP caller takes its answer as one packet (PROTOCOL.md §3): the most of one gathered,
 * whatever the app sends. Past it the answer could not be sent anyway (serverSession.ts).
 */
const PLAIN_ANSWER_LIMIT = Limits.maxPacketData

/**
 * The bytes of the app's answers the inbound side holds gathered whole, across all its requests:
 * without it, 256 pool sockets each gathering a plain caller's 16 MiB could make it hold 4 GiB.
 */
export interface AnswerBudget {
  held: number
  /** `maxQueuedBytes`: a pool of its own, as the tunnels' (PROTOCOL.md §8). */
  readonly max: number
}

/** The refusal of a plain caller's answer past the budget (this leg's and the h2c leg's, plainAnswer.ts): `bytes` came or were declared. */
export const overBudgetMessage = (bytes: number, address: string, { held, max }: AnswerBudget): string =>
  `an answer of ${bytes} bytes or more from app at ${address} does not fit in the ${max} bytes of answers the inbound sidecar may hold gathered whole (maxQueuedBytes; ${held} held); retry later`

/** What every exchange of one sidecar shares. */
export interface AppLeg {
  readonly pool: AppPool
  readonly answers: AnswerBudget
  /** The budget for what the streamed answers hold, their paused sockets' kernel buffers included (heldAnswers.ts). */
  readonly held: HeldAnswers
  /** host:port, for messages, metrics and spans. */
  readonly address: string
  readonly bodyIdleTimeoutMs: number
  readonly answerIdleTimeoutMs: number
  readonly onInvalidHeaders: OnInvalidHeader | undefined
}

/** One request as it goes to the app. */
export interface AppRequest {
  readonly method: string
  readonly path: string
  /** Flat name, value list, filtered (headerFilter.ts) plus the hop's own (host, iip-timeout, content-length), all valid as they are. */
  readonly headers: Array<string>
  /** The headers are valid (true): the pool does not check them again (appPool.ts). */
  readonly checked: true
  /** A whole body, or the peer's stream (with the length it declared, -1 for none). */
  readonly body: Buffer | IncomingStream
  readonly declaredLength: number
  /** The metadata a message to the caller carries (RequestContext.maxMetaBytes): an answer head past it cannot go back. */
  readonly maxMetaBytes: number
  /** A plain IIP caller: the answer goes back as bare bytes (`{}` when empty), never streamed. */
  readonly plain: boolean
  /** A push: its answer is read and dropped, so the socket goes back to the pool. */
  readonly oneway: boolean
}

type Mode = "waiting" | "collect" | "stream" | "drop"

/** Keeps the hidden class of AppExchange alive while idle (shapeAnchor.ts). */
const exchangeShape = new ShapeAnchor<AppExchange>()

/**
 * One exchange, as the pool's handler. `settle` gets the outcome exactly once; the
 * observation ends exactly once, when the answer has come in whole or the exchange broke off.
 */
export class AppExchange implements AppPoolHandler, HeldAnswer {
  readonly leg: AppLeg
  private readonly request: AppRequest
  private readonly observation: InboundObservation
  private readonly pending: PendingOutcome
  private controller: AppController | undefined = undefined
  /** Set when the exchange is given up before the pool handed over its controller. */
  private abortReason: Error | undefined = undefined
  private mode: Mode = "waiting"
  private status = 0
  private settled = false
  /** The exchange is over (answered, failed or given up): later events change nothing. */
  private done = false
  /** A whole answer's chunks: usually one, kept without an array. */
  private firstPart: Buffer | undefined = undefined
  private parts: Array<Buffer> | undefined = undefined
  private bytes = 0
  /** What this exchange holds of the answer budget: a whole answer's declared length, or its bytes so far. */
  private charged = 0
  private answer: PausingByteQueue | undefined = undefined
  private timer: NodeJS.Timeout | undefined = undefined
  /**
   * The caller's deadline the mesh session enforces (ms from `startedAt`; 0: none): only until the
   * answer settles as a stream, so from then on this exchange's timer bounds the rest of it.
   */
  private sessionDeadlineMs = 0
  private startedAt = 0
  /**
   * Armed while the streamed answer's socket is paused: first for RECLAIM_STALL_MS (then its kernel
   * buffer counts, `kernelCounted`), then for the rest of the answer idle timeout, which gives it up.
   */
  private stall: NodeJS.Timeout | undefined = undefined
  private stallFrom = 0
  /** What the held budget counts of its paused socket's kernel buffer now: 0 or PAUSED_SOCKET_BYTES. */
  private kernelCounted = 0
  /** The streamed answer's wait on its reader (heldAnswers.ts); its bytes go to its queue through it. */
  readerWait: ReaderWait | undefined = undefined
  /** The answer's metadata, while a whole answer is being collected. */
  private meta: Meta | undefined = undefined
  /**
   * The request's cancellation, while the exchange listens to it: left when the exchange ends, since
   * a plain IIP connection's requests share one (its session's signal), which would otherwise keep
   * every exchange, request body and all, for as long as the connection lives.
   */
  private cancelSource: CancelSignal | undefined = undefined

  constructor(leg: AppLeg, request: AppRequest, observation: InboundObservation, pending: PendingOutcome) {
    exchangeShape.keep(this, request.body instanceof Buffer ? request.body.length : 0)
    this.leg = leg
    this.request = request
    this.observation = observation
    this.pending = pending
  }

  /**
   * Sends the request; `deadlineMs` > 0 arms our own deadline (requests without one, and pushes);
   * `sessionDeadlineMs` > 0: the caller's, the session's until the answer streams; `peer`: whose share of the pool it counts in.
   */
  start(deadlineMs: number, sessionDeadlineMs: number, peer: PoolPeer): void {
    if (deadlineMs > 0) this.armDeadline(deadlineMs, deadlineMs)
    if (sessionDeadlineMs > 0) {
      this.sessionDeadlineMs = sessionDeadlineMs
      this.startedAt = performance.now()
    }
    const request = this.request
    const body = request.body
    // A whole body: the request is the pool's as it is (no copy of it per request).
    if (!(body instanceof IncomingStream)) return this.leg.pool.dispatch(request as AppRequest & { readonly body: Buffer }, this, peer)
    this.leg.pool.dispatch({
      path: request.path,
      method: request.method,
      headers: request.headers,
      checked: true,
      body: requestBody(body, request.declaredLength, this.leg.bodyIdleTimeoutMs, this)
    }, this, peer)
  }

  /** The exchange gives up `inMs` from now, past a deadline of `deadlineMs`. */
  private armDeadline(deadlineMs: number, inMs: number): void {
    this.timer = setTimeout(() => this.giveUp(MeshErrorCode.deadlineExceeded, 504, appDeadlineMessage(deadlineMs, this.status !== 0, this.mode === "stream")), inMs)
  }

  /**
   * The caller went away or its deadline passed (the mesh session aborted the request and answers
   * for it): the exchange stops, its spans and metrics end as cancelled at this hop.
   */
  cancel(reason: Error): void {
    if (this.done) return
    this.finish()
    this.observation.end(this.leg.address, this.status === 0 ? 502 : this.status, { hop: "inbound", reason: MeshErrorCode.cancelled })
    this.abort(reason)
  }

  /** Listens to the request's cancellation (handleEvent) until the exchange ends. */
  listen(cancel: CancelSignal): void {
    if (this.done) return
    this.cancelSource = cancel
    cancel.addEventListener("abort", this)
  }

  /** The request's cancellation fired (the exchange is its abort listener, an AbortListener). */
  handleEvent(): void {
    if (!this.done) this.cancel(new StreamFailed({ message: "request aborted" }))
  }

  /**
   * Our own limits: the exchange ends, the caller gets a typed error: as the outcome, or, once the
   * answer streams (settled already), as the stream's end (a StreamFailed there would reach it as handler_failed),
   * ahead of what is queued: behind it, under a caller that stopped reading, the mesh's sender waited
   * for a window that never came, and the caller's sidecar kept the answer's bytes until its idle timeout.
   */
  giveUp(code: string, status: number, message: string): void {
    if (this.done) return
    this.finish()
    this.observation.end(this.leg.address, status, { hop: "inbound", reason: code })
    this.settle(failure(code, message, true))
    this.abort(this.mode === "stream" ? new RemoteError({ code, message, processed: true }) : new StreamFailed({ message }), true)
  }

  onRequestStart(controller: AppController): void {
    this.controller = controller
    if (this.abortReason !== undefined) controller.abort(this.abortReason)
  }

  onResponseStart(controller: AppController, status: number, headers: ReadonlyArray<string>, sentLength: string | undefined): void {
    if (this.done) return
    this.status = status
    if (status < 200 || status > 599) {
      this.fail(502, { hop: "app", reason: AppErrorCode.failed }, failure(AppErrorCode.failed, `app at ${this.leg.address} answered with status ${status}`, true))
      return this.abort(new StreamFailed({ message: `status ${status}` }))
    }
    if (this.request.oneway) {
      this.mode = "drop"
      return
    }
    const answerHeaders = endToEndHeaders(headers, this.leg.onInvalidHeaders)
    const bodiless = this.request.method === "HEAD" || status === 304
    const described = bodiless && sentLength !== undefined ? describedLength(sentLength) : undefined
    if (described !== undefined) answerHeaders.push(["content-length", described])
    const length = sentLength !== undefined ? Number(sentLength) : NaN
    // A whole answer of known length takes it from the budget now (llhttp holds the app to it).
    if (bodiless || (this.request.plain && !(length > 0)) || (length <= WHOLE_BODY_LIMIT && this.charge(length))) {
      this.mode = "collect"
      this.meta = responseMeta(status, answerHeaders)
      // A plain caller's answer goes back as bare bytes: its head is not sent.
      if (!this.request.plain) this.failIfHeadTooLarge(this.meta)
      return
    }
    if (this.request.plain) {
      // It cannot stream: too large for its one packet, or past the budget, it is refused before a byte of it is read.
      if (length > PLAIN_ANSWER_LIMIT) return this.tooLarge()
      if (!this.charge(length)) return this.overBudget(length)
      this.mode = "collect"
      return
    }
    // A streamed answer of known length keeps it (llhttp holds the app to it).
    if (Number.isSafeInteger(length)) answerHeaders.push(["content-length", String(length)])
    const meta = responseMeta(status, answerHeaders)
    if (this.failIfHeadTooLarge(meta)) return
    this.mode = "stream"
    // Settled as a stream, the answer is out of the session's deadline: the rest of the caller's is ours
    // (else an app that stops mid-answer holds the caller to its idle timeout; README: a long download's deadline bounds it).
    if (this.sessionDeadlineMs > 0) this.armDeadline(this.sessionDeadlineMs, Math.max(1, this.sessionDeadlineMs - (performance.now() - this.startedAt)))
    const answer = answerStream(controller, this)
    this.answer = answer
    this.readerWait = new ReaderWait(answer)
    answer.countIn(this.leg.held)
    this.leg.held.join(this)
    this.settle(reply(answer, meta))
  }

  /**
   * An answer head past the metadata a message to the caller carries (the bound agreed with it)
   * cannot go back: the app's failure, naming the size and the bound, before a byte of the body is
   * read (rather than the inbound hop's handler_failed at the send, a retry invited for a processed call).
   */
  private failIfHeadTooLarge(meta: Meta): boolean {
    const limit = this.request.maxMetaBytes
    const past = answerMetaPast(meta, limit)
    if (past === 0) return false
    const message = `app at ${this.leg.address}: its answer head (${past} bytes) exceeds the ${limit} bytes of metadata the mesh carries`
    this.fail(502, { hop: "app", reason: AppErrorCode.failed }, failure(AppErrorCode.failed, message, true))
    this.abort(new StreamFailed({ message }))
    return true
  }

  onResponseData(_controller: AppController, chunk: Buffer): void {
    if (this.done) return
    if (this.mode === "collect") {
      this.bytes += chunk.length
      if (this.bytes > this.charged) {
        // Past what its head took: only a plain caller's answer of no declared length, held to its
        // one packet and charged as it comes.
        if (this.bytes > PLAIN_ANSWER_LIMIT) return this.tooLarge()
        if (!this.charge(this.bytes - this.charged)) return this.overBudget(this.bytes)
      }
      if (this.firstPart === undefined) this.firstPart = chunk
      else (this.parts ??= [this.firstPart]).push(chunk)
    } else if (this.mode === "stream") {
      this.observation.responseBytes(chunk.length)
      this.bytes += chunk.length
      this.readerWait!.push(chunk)
      this.leg.held.check()
    }
  }

  onResponseEnd(_controller: AppController, trailers: ReadonlyArray<string>): void {
    if (this.done) return
    this.finish()
    // A chunked answer's trailers close its stream (PROTOCOL.md §17.5), through the same filter as
    // headers, within the metadata a message to the caller carries (past it, the app's failure).
    if (this.mode === "stream") {
      const closing = trailers.length === 0 ? undefined : trailersMeta(endToEndHeaders(trailers, this.leg.onInvalidHeaders))
      const past = closing === undefined ? 0 : answerMetaPast(closing, this.request.maxMetaBytes)
      if (past === 0) {
        this.observation.end(this.leg.address, this.status, undefined)
        this.readerWait!.ended()
        return this.answer!.end(closing)
      }
      const message = `app at ${this.leg.address}: its trailers (${past} bytes) exceed the ${this.request.maxMetaBytes} bytes of metadata the mesh carries`
      this.observation.end(this.leg.address, this.status, { hop: "app", reason: AppErrorCode.failed })
      return this.answer!.fail(new RemoteError({ code: AppErrorCode.failed, message, processed: true }))
    }
    this.observation.end(this.leg.address, this.status, undefined)
    if (this.mode === "drop") return this.settle(Buffer.alloc(0))
    const body = this.parts !== undefined ? Buffer.concat(this.parts, this.bytes) : (this.firstPart ?? Buffer.alloc(0))
    this.firstPart = undefined
    this.parts = undefined
    this.observation.responseBytes(body.length)
    this.settle(this.request.plain ? (body.length === 0 ? Buffer.from("{}") : body) : reply(body, this.meta!))
  }

  onResponseError(_controller: AppController, error: Error): void {
    if (this.done) return
    if (this.mode === "waiting") {
      const code = (error as NodeJS.ErrnoException).code
      if (error instanceof EventStreamsFull) {
        // The pool's share for event streams is held: refused before anything was sent (another
        // endpoint may take it), or closed at an answer head that said it was one (processed).
        this.fail(503, { hop: "inbound", reason: MeshErrorCode.overloaded }, failure(MeshErrorCode.overloaded, `${error.message}; retry later`, error.processed))
        return this.abort(error)
      }
      if (error instanceof InvalidRequestHead) {
        // A head the pool would not write: refused before anything was sent.
        this.fail(400, { hop: "inbound", reason: MeshErrorCode.badRequest }, failure(MeshErrorCode.badRequest, `cannot form the request to the app: ${error.message}`, false))
        return this.abort(error)
      }
      const refused = code === "ECONNREFUSED" || code === "ENOTFOUND"
      const appCode = refused ? AppErrorCode.unavailable : AppErrorCode.failed
      this.fail(502, { hop: "app", reason: appCode }, failure(appCode, `app at ${this.leg.address}: ${code ?? error.message}`, !refused))
      return this.abort(error)
    }
    if (error instanceof PoolShareReclaimed) {
      // Its peer held past its share of the pool and took none of this answer, or too little, while
      // another peer waited (peerShare.ts): the caller's doing, not the app's; the answer had begun (processed).
      // Only a streamed answer pauses its socket (answerStream), so only one is taken back.
      this.finish()
      this.observation.end(this.leg.address, this.status, { hop: "inbound", reason: MeshErrorCode.overloaded })
      return this.abort(new RemoteError({ code: MeshErrorCode.overloaded, message: `${error.message}; retry later`, processed: true }))
    }
    const broke = { hop: "app", reason: "answer_broke_off" }
    if (this.mode === "stream") {
      this.finish()
      this.observation.end(this.leg.address, this.status, broke)
      // The stream's reader learns it as app_failed, the app's doing: a caller whose answer had not
      // begun yet gets it as its answer (outbound.ts), naming the hop.
      return this.abort(new RemoteError({ code: AppErrorCode.failed, message: `app at ${this.leg.address}: its answer broke off: ${error.message}`, processed: true }))
    }
    this.fail(this.status, broke, failure(AppErrorCode.failed, `app answer broke off: ${error.message}`, true))
    this.abort(error)
  }

  /** A plain caller's answer outgrew the one packet it must go back in: gathering more would only grow B's memory. */
  private tooLarge(): void {
    const message = `app at ${this.leg.address}: its answer exceeds the ${PLAIN_ANSWER_LIMIT} bytes a plain IIP answer carries`
    this.firstPart = undefined
    this.parts = undefined
    this.fail(502, { hop: "app", reason: AppErrorCode.failed }, failure(AppErrorCode.failed, message, true))
    this.abort(new StreamFailed({ message }))
  }

  /** Takes `bytes` of the answer budget for this exchange; false (nothing taken) past it. */
  private charge(bytes: number): boolean {
    const answers = this.leg.answers
    if (answers.held + bytes > answers.max) return false
    answers.held += bytes
    this.charged += bytes
    return true
  }

  /**
   * A plain caller's answer (which must go back whole) does not fit in what the sidecar may hold of
   * answers: refused at this hop, as processed (the app ran the request), rather than grow B's memory.
   */
  private overBudget(bytes: number): void {
    const message = overBudgetMessage(bytes, this.leg.address, this.leg.answers)
    this.firstPart = undefined
    this.parts = undefined
    this.fail(503, { hop: "inbound", reason: MeshErrorCode.overloaded }, failure(MeshErrorCode.overloaded, message, true))
    this.abort(new StreamFailed({ message }))
  }

  /**
   * The streamed answer's socket paused (a window of it waits for the mesh). A caller that never
   * reads (or a peer that never opens its window) would hold the app's pool socket for as long as
   * it liked, and a few such callers every socket of the pool: an answer whose socket stays paused
   * for the answer idle timeout (the mesh did not take half the window in that time) is given up.
   */
  answerPaused(): void {
    if (this.stall !== undefined || this.done) return
    const now = performance.now()
    this.readerWait!.begin(now)
    // One timer a pause, as before the budget: it fires a second time only for an answer paused a second.
    this.stallFrom = now
    this.stall = setTimeout(() => this.onStall(), Math.min(RECLAIM_STALL_MS, this.leg.answerIdleTimeoutMs))
  }

  /** The answer stayed paused a second (its kernel buffer counts from now), or the answer idle timeout (it is given up). */
  private onStall(): void {
    this.stall = undefined
    if (this.done) return
    const idleMs = this.leg.answerIdleTimeoutMs
    const left = this.stallFrom + idleMs - performance.now()
    if (left > 0) {
      // Paused a second: its socket's kernel buffer is full by now, and held as long as the pause lasts.
      if (this.kernelCounted === 0) {
        this.kernelCounted = PAUSED_SOCKET_BYTES
        this.leg.held.bytes += PAUSED_SOCKET_BYTES
        this.leg.held.check()
      }
      this.stall = setTimeout(() => this.onStall(), left)
      return
    }
    this.finish()
    this.observation.end(this.leg.address, this.status, { hop: "inbound", reason: AppErrorCode.answerStalled })
    this.abort(new StreamFailed({ message: `the answer waited ${idleMs} ms for the mesh to take half a window of it` }))
  }

  /** The answer's socket reads again: it waits on its reader no more. */
  answerResumed(): void {
    this.readerWait!.resumed()
    this.socketReleased()
  }

  /** The answer's socket is no longer paused for it (it reads again, or went back to the pool or closed): its timer and its kernel buffer's count go. */
  private socketReleased(): void {
    if (this.stall !== undefined) clearTimeout(this.stall)
    this.stall = undefined
    if (this.kernelCounted > 0) {
      this.leg.held.bytes -= this.kernelCounted
      this.kernelCounted = 0
    }
  }


  /** Bytes it holds at B: its queue's and the chunk the mesh's sender holds, and its paused socket's kernel buffer as counted (heldAnswers.ts). */
  get heldNow(): number {
    return (this.answer === undefined ? 0 : this.answer.heldBytes) + this.kernelCounted
  }

  /**
   * The leg's held answers are past their budget and this one is taken back (heldAnswers.ts): what
   * it queued dropped and its caller told now, ahead of it; if the app still sends it, its socket is
   * destroyed (never reused: the answer is cut). The caller's doing, not the app's; the answer had
   * begun (processed: never retried).
   */
  takeBackHeld(message: string): void {
    const refusal = new RemoteError({ code: MeshErrorCode.overloaded, message, processed: true })
    this.answer!.abort(refusal)
    if (this.done) return
    this.finish()
    this.observation.end(this.leg.address, this.status, { hop: "inbound", reason: MeshErrorCode.overloaded })
    this.abort(refusal)
  }

  /** The streamed answer's reader stopped before its end: the exchange is not wanted any more. */
  readerGone(): void {
    if (this.done) return
    this.finish()
    this.observation.end(this.leg.address, this.status, { hop: "app", reason: "answer_broke_off" })
    this.abort(new StreamFailed({ message: "nobody reads the answer" }))
  }

  private fail(status: number, reason: Failure, outcome: Outcome): void {
    this.finish()
    this.observation.end(this.leg.address, status, reason)
    this.settle(outcome)
  }

  /** Counts a chunk of the streamed request body on its way to the app. */
  requestBytes(bytes: number): void {
    this.observation.requestBytes(bytes)
  }

  private finish(): void {
    this.done = true
    const cancel = this.cancelSource
    if (cancel !== undefined) {
      this.cancelSource = undefined
      cancel.removeEventListener("abort", this)
    }
    if (this.charged > 0) {
      this.leg.answers.held -= this.charged
      this.charged = 0
    }
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.socketReleased()
  }

  /** Stops the exchange where it is: the app's request, the peer's body, the answer's reader (`now`: ahead of what it queued). */
  private abort(reason: Error, now = false): void {
    const body = this.request.body
    if (body instanceof IncomingStream) body.fail(new StreamFailed({ message: "request aborted" }))
    if (this.controller !== undefined) this.controller.abort(reason)
    else this.abortReason ??= reason
    if (now) this.answer?.abort(reason)
    else this.answer?.fail(reason)
  }

  private settle(value: Outcome): void {
    if (this.settled) return
    this.settled = true
    this.pending.settle(value)
  }
}

/**
 * The peer's streamed body as the pool pulls it: held to its declared length (a body that does not
 * match it is cut off, never written past it), given up when it sends nothing for the body idle
 * timeout. Time the pool spends waiting for the app to take a chunk is not the body's idleness.
 */
async function* requestBody(stream: IncomingStream, length: number, idleMs: number, exchange: AppExchange): AsyncGenerator<Buffer> {
  let waiting = false
  const idle = setTimeout(function onIdle() {
    if (waiting) exchange.giveUp(AppErrorCode.bodyIdle, 408, `the request body sent nothing for ${idleMs} ms`)
    else idle.refresh()
  }, idleMs)
  const mismatch = () => exchange.giveUp(MeshErrorCode.badRequest, 400, `the streamed body does not match its content-length of ${length}`)
  const chunks = stream[Symbol.asyncIterator]()
  let sent = 0
  try {
    for (;;) {
      waiting = true
      idle.refresh()
      const next = await chunks.next()
      waiting = false
      if (next.done === true) break
      const chunk = next.value
      sent += chunk.length
      if (length >= 0 && sent > length) return mismatch()
      exchange.requestBytes(chunk.length)
      yield chunk
    }
    if (length >= 0 && sent !== length) mismatch()
  } finally {
    clearTimeout(idle)
  }
}

/** The app's answer as the mesh session reads it: chunks queue here, the socket pauses while too many wait. */
const answerStream = (controller: AppController, exchange: AppExchange): PausingByteQueue =>
  new PausingByteQueue(ANSWER_HIGH_WATER, {
    pause: () => {
      controller.pause()
      exchange.answerPaused()
    },
    resumeIfPaused: () => {
      if (!controller.paused) return
      controller.resume()
      exchange.answerResumed()
    },
    allTaken: () => exchange.readerWait!.taken(),
    over: () => exchange.leg.held.leave(exchange)
  }, () => exchange.readerGone())
