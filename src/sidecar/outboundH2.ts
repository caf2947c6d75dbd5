// The outbound listener's second protocol: cleartext HTTP/2 with prior knowledge (what gRPC
// clients send) on the same port as HTTP/1.1. The listener (http1Connection.ts) tells a new
// connection apart by its first bytes and hands one that opens with the HTTP/2 preface to a
// node:http2 server here. Each HTTP/2 stream is one request for outbound.ts (a StreamCall over
// node's core stream API: the compatibility layer's request and response objects cost a gRPC call
// more CPU than the mesh's own work), so the calls of one gRPC channel are balanced one by one, not
// pinned to an endpoint. A request body that ends within the turn of the event loop its head came
// in (a unary call's) is held whole: it travels as one mesh message and may be retried; any other streams.
// A stream whose answer makes no progress for the answer idle timeout (a caller that grants it no
// window while it keeps its session busy) is reset on its own by one sweep over the listener's sessions.
// A caller PINGing with no stream open is bounded too: PINGs under 1 s apart again and again, once
// it has taken no answer for the answer idle timeout, end the session (GOAWAY ENHANCE_YOUR_CALM), and
// the sweep asks one with no stream for twice the idle timeout to go, PINGs or not.
import * as http2 from "node:http2"
import type * as net from "node:net"
import { boundPeerFin, destroyAfterGrace } from "../mux/peerFin.ts"
import type { HeldBodyReceiver, OutboundCall } from "./outboundCall.ts"
import { drainedOrClosed } from "./drained.ts"
import { resetFailed } from "./h2Reset.ts"
import { TurnEnd } from "./turnEnd.ts"

/** Trailers as node's sendTrailers takes them: an object, a repeated name with all its values. */
const fieldsOf = (pairs: ReadonlyArray<readonly [string, string]>): Record<string, string | Array<string>> => {
  // The envelope hands the same list while an app's trailers repeat (httpEnvelope.ts's trailersOf):
  // one object for them (node copies it before use).
  if (pairs === lastTrailers) return lastFields
  // No prototype: a trailer named `constructor` found Object's own there as a first value (and was sent so).
  const fields = Object.create(null) as Record<string, string | Array<string>>
  for (let i = 0; i < pairs.length; i++) {
    const name = pairs[i]![0]
    const value = pairs[i]![1]
    const prior = fields[name]
    fields[name] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value]
  }
  lastTrailers = pairs
  lastFields = fields
  return fields
}
let lastTrailers: ReadonlyArray<readonly [string, string]> | undefined
let lastFields: Record<string, string | Array<string>> = {}

/** A stream error is its exchange's end ('close' follows); the body's reader sees it through its iterator. */
const ignore = (): void => {}

/**
 * A stream names its call, for module-level listeners (`this` is the stream): a closure and its
 * context per call and event otherwise.
 */
const CALL = Symbol("call")
type CallStream = http2.ServerHttp2Stream & { [CALL]: StreamCall }
function onStreamClose(this: CallStream): void {
  this[CALL].closed()
}
function onWantTrailers(this: CallStream): void {
  this[CALL].sendTrailers()
}
function onHeldData(this: CallStream, chunk: Buffer): void {
  this[CALL].heldData(chunk)
}
function onHeldEnd(this: CallStream): void {
  this[CALL].heldEnd()
}

/**
 * The answer to a body cut off at its limit (or given up: stopBody) is out: a caller still sending
 * (no END_STREAM yet) is told to stop with RST_STREAM NO_ERROR (RFC 9113 §8.1: a complete answer
 * before the request's end), and the DATA that came past the cut (at most the stream's window:
 * readBody paused the stream) is dropped. Left unread, node never ends a stream closed NO_ERROR (it
 * waits for its readable side's end): no 'close', the request in flight and the stream kept for as
 * long as the caller kept its session.
 * The reset goes after a PING's round trip, so that the caller has read the answer before it: curl
 * 7.88 (Debian 12's) that gets the answer and the reset in one read while it uploads drops the answer
 * ("(92) Stream error in the HTTP/2 framing layer", 3 runs in 4 with a 413 from the head: h2-body-limit).
 */
function onCutAnswered(this: http2.ServerHttp2Stream): void {
  if (this.destroyed) return
  if (this.state.remoteClose === 1) return void this.resume()
  const session = this.session
  // No PING possible (the session going, too many unanswered): the reset at once.
  if (session === undefined || session.destroyed || !session.ping(resetCut.bind(this))) resetCut.call(this)
}
/** Still paused until now: the caller's window stays closed while the PING goes round. */
function resetCut(this: http2.ServerHttp2Stream): void {
  if (this.destroyed) return
  if (this.state.remoteClose !== 1) this.close(http2.constants.NGHTTP2_NO_ERROR)
  this.resume()
}

const EMPTY = Buffer.alloc(0)

/** respond()'s options, one object per combination (node only reads them): none made per call. */
const END = { endStream: true, waitForTrailers: false } as const
const END_AND_TRAILERS = { endStream: true, waitForTrailers: true } as const
const TRAILERS = { endStream: false, waitForTrailers: true } as const
const NO_END = { endStream: false, waitForTrailers: false } as const

/** Why this side resets a stream whose answer stopped moving (its request's failure reason, the reset counter's label). */
export const ANSWER_STALLED = "answer_stalled"

/** Sweeps per answer idle timeout: a stream is reset this many sweeps after its answer last moved, within a quarter of the timeout past it. */
const SWEEPS = 4

/** The calls whose bodies are held in this turn of the event loop: a body not over at its end (turnEnd.ts) streams. */
const heldThisTurn = new TurnEnd<StreamCall>((call) => call.streamOn())

/** When a session's caller was last seen taking an answer, and the connection window it had left then (-1: not looked at since a stream's close). */
interface AnswerTaking {
  at: number
  window: number
}

/** One HTTP/2 stream as outbound.ts reads and answers a request (outboundCall.ts), on node's core stream API. */
class StreamCall implements OutboundCall {
  readonly httpVersionMajor = 2
  headersSent = false
  writableEnded = false
  readonly method: string
  readonly url: string
  readonly headers: http2.IncomingHttpHeaders
  readonly rawHeaders: ReadonlyArray<string>
  readonly hasBody: boolean
  private readonly stream: http2.ServerHttp2Stream
  private status = 200
  private head: ReadonlyArray<readonly [string, string]> = []
  headWritten = false
  /** Sent when the stream asks for them (the head was sent with waitForTrailers). */
  private trailers: ReadonlyArray<readonly [string, string]> | undefined = undefined
  private closeListener: ((finished: boolean) => void) | undefined = undefined
  /** A body being held (heldBody): who gets it, its limit, what came so far (usually one chunk, kept without an array). */
  private holder: HeldBodyReceiver | undefined = undefined
  private holdLimit = 0
  private heldBytes = 0
  private heldFirst: Buffer | undefined = undefined
  private heldParts: Array<Buffer> | undefined = undefined
  /** Its session's open calls (makeH2c's stall checks look at them), left on the stream's close. */
  private readonly open: Set<StreamCall>
  /** Its session's caller's answer taking (takingAnswer): this stream's close is its answer's last byte handed to the socket, not read yet. */
  private readonly taking: AnswerTaking
  /** Answer bytes handed to the stream: less what it still holds, what left (a write's bytes leave with its callback). */
  private queued = 0
  /** What had left at the last sweep that found the answer waiting (-1: none did), and the sweeps since with nothing more gone. */
  private sentAtSweep = -1
  private stillSweeps = 0
  /** Why this side cut the answer off, if it did (OutboundResponse.cutReason). */
  cutReason: string | undefined = undefined
  /** The request's body ran past readBody's limit (or stopBody gave it up): the rest is not read, and is dealt with once answered (resetUnread). */
  private bodyCut = false
  /** Ends readBody's reading as past its limit (stopBody), while it reads. */
  private stopReading: (() => void) | undefined = undefined

  constructor(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: ReadonlyArray<string>, open: Set<StreamCall>, taking: AnswerTaking) {
    this.stream = stream
    this.open = open
    this.taking = taking
    open.add(this)
    this.method = headers[":method"] ?? ""
    this.url = headers[":path"] ?? ""
    // The request line's pseudo-headers are not headers to forward; :authority is the host (a Host
    // naming another origin makes the request malformed: refused by targetOf, outboundTarget.ts).
    const authority = headers[":authority"]
    if (headers.host === undefined && typeof authority === "string") headers.host = authority
    this.headers = headers
    // As node gives it: the header filter leaves its pseudo-headers out (no copy without them per call).
    this.rawHeaders = rawHeaders
    this.hasBody = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) === 0
    stream.on("error", ignore)
    // `on`, not `once`: a stream closes once, and once() binds a wrapper per call.
    stream.on("close", onStreamClose)
    const named = stream as CallStream
    named[CALL] = this
  }

  /** Answer bytes wait for the caller's window (or the socket): the stream cannot end before it grants it. */
  get answerWaiting(): boolean {
    return this.stream.writableLength > 0
  }

  /**
   * The sweep's look at the answer: true once it has been waiting with none of it gone for SWEEPS
   * sweeps in a row (a write of at most one mesh chunk, 64 KiB, leaves at once with its callback:
   * a reader under 64 KiB per answer idle timeout is stalled too). A stream with nothing to send is not.
   */
  stalled(): boolean {
    const waiting = this.stream.writableLength
    // A stream destroyed and not yet closed ('close' comes on a later tick) is over already.
    if (waiting === 0 || this.stream.destroyed) {
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
   * Resets the stream (RST_STREAM CANCEL) and destroys it: the exchange hears of it as a caller
   * gone (onClose), its answer is freed. Destroyed, not only closed: a reset that waits behind
   * answer bytes the socket cannot take (a caller that reads none of its socket) would otherwise
   * leave the stream open, its answer and far request held, for as long as the session lives.
   */
  cutStalled(): void {
    this.cutReason = ANSWER_STALLED
    this.stream.close(http2.constants.NGHTTP2_CANCEL)
    this.stream.destroy()
  }

  get remoteAddress(): string {
    return this.stream.session?.socket.remoteAddress ?? ""
  }
  get destroyed(): boolean {
    return this.stream.destroyed
  }

  body(): AsyncIterable<Buffer> {
    return this.stream
  }

  readBody(limit: number): Promise<Buffer | undefined> {
    const stream = this.stream
    // A length declared past the limit is refused from the head, as HTTP/1.1's is (http1Call.ts):
    // none of the body is read (the caller's window closes on what came), the rest dealt with once
    // answered (resetUnread). Read to the limit first, it cost 16 MiB of the caller's upload, or a
    // 408 at the deadline from a caller that waits for its answer before sending on.
    if (Number(this.headers["content-length"]) > limit) {
      stream.pause()
      this.bodyCut = true
      return Promise.resolve(undefined)
    }
    return new Promise((resolve, reject) => {
      let parts: Array<Buffer> = []
      let total = 0
      // Past the limit (or given up: stopBody) nothing more is read (the caller's window closes on it)
      // and the stream stays open for the exchange's answer (a 413, a 408), after which end() deals
      // with the rest (resetUnread): destroyed here, the caller got a bare RST_STREAM NO_ERROR and no answer.
      const stop = (): void => {
        this.stopReading = undefined
        stream.off("data", onData)
        stream.pause()
        parts = []
        this.bodyCut = true
        resolve(undefined)
      }
      const onData = (chunk: Buffer): void => {
        total += chunk.length
        if (total <= limit) parts.push(chunk)
        else stop()
      }
      this.stopReading = stop
      stream.on("data", onData)
      stream.once("end", () => {
        this.stopReading = undefined
        resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, total))
      })
      stream.once("error", reject)
      // Closed before the body's end (reset by the app): no 'end' follows.
      stream.once("close", () => reject(new Error("the stream closed before its body's end")))
      // A body heldBody streamed on was paused there, and a 'data' listener does not resume a stream
      // paused on purpose: without this a body past 64 KiB for a plain IIP peer was never read.
      stream.resume()
    })
  }

  /** The body readBody gathers is not wanted (too slow: outboundBody.ts): as past its limit, no more of it is read, and the rest is dealt with once answered (resetUnread). */
  stopBody(): void {
    this.stopReading?.()
  }

  heldBody(limit: number, receiver: HeldBodyReceiver): void {
    // Flowing ('data'), not paused mode ('readable' and read()): paused mode cost a unary call
    // three more process.nextTick entries (adding and removing the 'readable' listener, each
    // emitReadable). The listeners are module-level and the turn's end is one setImmediate for
    // every call held in that turn: no promise, closures or Immediate per call.
    this.holdLimit = limit
    this.holder = receiver
    const stream = this.stream
    stream.on("data", onHeldData)
    stream.on("end", onHeldEnd)
    heldThisTurn.add(this)
  }

  /** A chunk of a held body; past the limit, the body streams. */
  heldData(chunk: Buffer): void {
    if (this.holder === undefined) return
    if (this.heldFirst === undefined) this.heldFirst = chunk
    else (this.heldParts ??= [this.heldFirst!]).push(chunk)
    this.heldBytes += chunk.length
    if (this.heldBytes > this.holdLimit) this.streamOn()
  }

  /** The held body ended within its turn: it goes whole. */
  heldEnd(): void {
    const holder = this.holder
    if (holder === undefined) return
    this.holder = undefined
    this.stream.off("data", onHeldData)
    this.stream.off("end", onHeldEnd)
    holder.bodyHeld(this.takeHeld() ?? EMPTY)
  }

  /** The turn ended (or the limit passed) before the body did: what came so far is put back (unshift) and the body streams. */
  streamOn(): void {
    const holder = this.holder
    if (holder === undefined) return
    this.holder = undefined
    const stream = this.stream
    stream.off("data", onHeldData)
    stream.off("end", onHeldEnd)
    const held = this.takeHeld()
    // A stream reset meanwhile has nothing to put back: its reader sees the reset.
    if (!stream.destroyed) {
      stream.pause()
      if (held !== undefined) stream.unshift(held)
    }
    holder.bodyHeld(stream)
  }

  private takeHeld(): Buffer | undefined {
    const parts = this.heldParts
    const held = parts !== undefined ? Buffer.concat(parts, this.heldBytes) : this.heldFirst
    this.heldFirst = undefined
    this.heldParts = undefined
    return held
  }

  onClose(listener: (finished: boolean) => void): void {
    // Finished when the answer was ended and the stream closed cleanly: a stream the client reset
    // (a cancelled call) closes with its error code.
    this.closeListener = listener
  }

  /** The stream closed: onClose's listener is told whether the exchange finished. */
  closed(): void {
    this.open.delete(this)
    // Its window, given back from now on, is the caller reading this answer's tail: looked at from the next PING.
    this.taking.at = performance.now()
    this.taking.window = -1
    this.closeListener?.(this.writableEnded && this.stream.rstCode === http2.constants.NGHTTP2_NO_ERROR)
  }

  /** The stream asks for the trailers (the head was sent with waitForTrailers). */
  sendTrailers(): void {
    this.stream.sendTrailers(fieldsOf(this.trailers ?? []))
  }

  writeHead(status: number, headers: ReadonlyArray<readonly [string, string]>): void {
    this.status = status
    this.head = headers
    this.headersSent = true
  }

  /** The head, once; trailers awaited unless the answer is known to carry none. */
  private sendHead(endStream: boolean, waitForTrailers: boolean): boolean {
    if (this.headWritten) return true
    this.headWritten = true
    const stream = this.stream
    if (stream.destroyed) return false
    // Asked for once per stream (`on`: no once() wrapper to bind per call).
    if (waitForTrailers) stream.on("wantTrailers", onWantTrailers)
    // A flat name, value list, sized once: node takes it as it is, with no header object to build.
    const head = this.head
    const raw = new Array<string>(2 + 2 * head.length)
    raw[0] = ":status"
    raw[1] = String(this.status)
    for (let i = 0; i < head.length; i++) {
      const pair = head[i]!
      raw[2 + 2 * i] = pair[0]
      raw[3 + 2 * i] = pair[1]
    }
    stream.respond(raw, endStream ? (waitForTrailers ? END_AND_TRAILERS : END) : waitForTrailers ? TRAILERS : NO_END)
    return true
  }

  write(chunk: Uint8Array): boolean {
    // Streamed: whether trailers follow is not known yet (none is an empty end).
    // Ended by its head already (an answer to HEAD, a 204 or 304 carries no body).
    if (!this.sendHead(false, true) || this.stream.destroyed || this.stream.writableEnded) return false
    this.queued += chunk.length
    return this.stream.write(chunk)
  }

  drained(): Promise<void> {
    const stream = this.stream
    if (stream.destroyed) return Promise.resolve()
    return drainedOrClosed(stream)
  }

  end(data?: Uint8Array | string, trailers?: ReadonlyArray<readonly [string, string]>): void {
    if (this.writableEnded) return
    this.writableEnded = true
    this.trailers = trailers
    const empty = data === undefined || data.length === 0
    // Head and end in one HEADERS frame when nothing else follows (a gRPC trailers-only answer):
    // a gRPC client reads them apart as an answer without a status.
    const endsWithHead = !this.headWritten && empty && trailers === undefined
    if (!this.sendHead(endsWithHead, trailers !== undefined) || endsWithHead || this.stream.destroyed || this.stream.writableEnded) return this.resetUnread()
    if (empty) this.stream.end()
    else {
      this.queued += data.length
      this.stream.end(data)
    }
    this.resetUnread()
  }

  /** A body cut off at its limit (readBody) or given up (stopBody): its unread rest is dealt with once the answer is out (onCutAnswered). */
  private resetUnread(): void {
    const stream = this.stream
    if (!this.bodyCut || stream.destroyed) return
    this.bodyCut = false
    if (stream.writableFinished) onCutAnswered.call(stream)
    else stream.once("finish", onCutAnswered)
  }

  /** A cut answer (the far app died, the peer's connection was lost, the body broke its length): the caller must read it as one. */
  destroy(): void {
    resetFailed(this.stream)
  }
}

/**
 * Ends a session asked to go if no byte moved either way in `ms` while one of its streams holds
 * answer bytes, or while it has no stream open (checked again until it ends); `moved`: the count
 * at the last check. A stream with nothing to send (a long poll, a quiet gRPC server stream) is
 * idle, not stalled: it may wait. A session asked to go with no stream open that is still there
 * holds only its own last frames (GOAWAY, a reset), behind bytes the caller does not take: the
 * sweep reset its stalled streams before it went idle (an answer idle timeout below the idle one).
 */
const endIfStalled = (session: http2.ServerHttp2Session, open: ReadonlySet<StreamCall>, ms: number, moved: number): void => {
  if (session.destroyed) return
  const socket = session.socket
  const now = socket.bytesRead + socket.bytesWritten
  if (now === moved) {
    if (open.size === 0) return destroySession(session)
    for (const call of open) if (call.answerWaiting) return destroySession(session)
  }
  setTimeout(endIfStalled, ms, session, open, ms, now).unref()
}

/**
 * A session names its open calls, for the sweep, since when the sweep found none open and none
 * opened (performance.now()), whether a stream opened since the last sweep (one over between
 * two sweeps, as most calls are, the sweep never finds open), and its socket as accepted.
 */
const OPEN = Symbol("open")
const QUIET_SINCE = Symbol("quietSince")
const STREAMED = Symbol("streamed")
const SOCKET = Symbol("socket")
type SweptSession = http2.ServerHttp2Session & { [OPEN]: Set<StreamCall>; [QUIET_SINCE]: number; [STREAMED]: boolean; [SOCKET]: net.Socket }

/** A socket accept() handed to node names itself, for its session to find through session.socket. */
const ACCEPTED = Symbol("accepted")
type AcceptedSocket = net.Socket & { [ACCEPTED]: net.Socket }

/**
 * Ends `session` now, and its socket within a grace: node's destroy() ends the socket and lets it
 * go only once that end went out, never for a caller that reads nothing (session.socket is a proxy
 * that refuses destroy()). The grace lets a last GOAWAY out to a caller that still reads.
 */
const destroySession = (session: http2.ServerHttp2Session, code?: number): void => {
  session.destroy(undefined, code)
  destroyAfterGrace((session as SweptSession)[SOCKET])
}

/**
 * A session the sweep found with no stream open for this many idle timeouts is asked to go
 * (GOAWAY), whatever PINGs came: twice, so that the sweep's coarse clock (it saw the last stream
 * open up to a sweep before it closed) never goes before node's own timer for a session that is
 * simply idle.
 */
const QUIET_TIMEOUTS = 2
/**
 * With no stream open and no answer being taken (takingAnswer), a PING this soon after the caller's last one is a strike; one strike past
 * PING_STRIKES and the session ends with GOAWAY ENHANCE_YOUR_CALM "too_many_pings", as gRPC servers
 * answer clients whose keepalive is faster than they allow (theirs: 5 min without calls). A PING
 * while a stream is open, or the first after a stream opened, is not counted: grpc-go's BDP probe
 * goes out as its answer's data comes in, after the stream closed here (grpc-go's and grpc-java's
 * servers reset their strikes when they send headers or data).
 */
const MIN_PING_INTERVAL_MS = 1000
const PING_STRIKES = 2
const TOO_MANY_PINGS = Buffer.from("too_many_pings")

/**
 * Whether the caller of a session with no stream open is still taking an answer: a stream's close
 * here is its answer's last byte handed to the socket, not read. A caller that pauses its reading
 * holds the answer's tail (up to its windows) and PINGs on; ended now (GOAWAY ENHANCE_YOUR_CALM),
 * it loses that tail: node's client drops a stream's unread data on a GOAWAY with an error code. It
 * is taking one while it gave back window (WINDOW_UPDATE: it read) within the answer idle timeout,
 * the bound a stream's answer has too; one that PINGs on with no answer to read is bounded from then.
 */
const takingAnswer = (session: http2.ServerHttp2Session, taking: AnswerTaking, now: number, answerIdleMs: number): boolean => {
  if (taking.at === -Infinity) return false
  // Only streams' DATA takes connection window, and none is open: a window that grew is the caller reading.
  const window = session.state.remoteWindowSize ?? -1
  if (window !== taking.window) {
    if (taking.window !== -1) taking.at = now
    taking.window = window
  }
  return now - taking.at < answerIdleMs
}

/** Ends `session` now: GOAWAY with `code` and `debug`, then its socket. */
const endSession = (session: http2.ServerHttp2Session, code: number, debug: Buffer): void => {
  session.goaway(code, 0, debug)
  destroySession(session, code)
}

/** Resets a session's streams whose answers stalled; how many. */
const cutStalled = (open: ReadonlySet<StreamCall>): number => {
  let cut = 0
  for (const call of open) {
    if (!call.stalled()) continue
    call.cutStalled()
    cut++
  }
  return cut
}

export interface H2Listener {
  /** A connection that opened with the preface (unread: the preface is still to be read). */
  readonly accept: (socket: net.Socket) => void
  /** Sessions open now (for the drain). */
  readonly sessions: ReadonlySet<http2.ServerHttp2Session>
  /** Asks every session to finish its streams and take no new ones (GOAWAY). */
  readonly close: () => void
  /** Ends every session now. */
  readonly destroyAll: () => void
}

export interface H2Options {
  /** A session with no frame either way this long gets GOAWAY. */
  readonly idleTimeoutMs: number
  readonly maxStreams: number
  /** A stream whose answer waits this long with none of it taken is reset. */
  readonly answerIdleMs: number
  /** Told after a sweep that reset `streams` streams of one session (their answers stalled). */
  readonly onStalled: (streams: number, session: http2.ServerHttp2Session) => void
}

/** HTTP/2 connections handed over by the outbound listener (`accept`); each stream goes to `handler`, as HTTP/1.1 requests do. */
export const makeH2c = (handler: (call: OutboundCall) => void, options: H2Options): H2Listener => {
  // strictSingleValueFields off: a field HTTP/2 names single-value (content-type, etag...) that a
  // far app gave twice is carried as it came, as HTTP/1.1 carries it; node would throw from
  // respond() (the stream reset with no answer) or from sendTrailers() inside its 'wantTrailers'
  // event (the sidecar's process gone).
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: options.maxStreams }, strictSingleValueFields: false })
  const sessions = new Set<http2.ServerHttp2Session>()
  // One timer for every session, while there are sessions: nothing per request or stream. A
  // session's own checks (idle, stalled) see only the whole session, which a caller that keeps it
  // busy (PINGs, other streams) never lets look idle.
  let sweeper: NodeJS.Timeout | undefined
  const sweep = (): void => {
    const now = performance.now()
    for (const session of sessions) {
      const swept = session as SweptSession
      const open = swept[OPEN]
      // An idle timeout that PINGs do not reset: node's timer counts them once the session has a
      // 'ping' listener (the PING floor's, below), so a PING now and then would keep a session with
      // no stream (and its --max-app-connections place) for ever.
      if (open.size > 0 || swept[STREAMED]) {
        swept[QUIET_SINCE] = now
        swept[STREAMED] = false
      } else if (now - swept[QUIET_SINCE] >= QUIET_TIMEOUTS * options.idleTimeoutMs && !session.closed) session.close()
      const cut = cutStalled(open)
      if (cut > 0) options.onStalled(cut, session)
    }
  }
  h2.on("session", (session: http2.ServerHttp2Session) => {
    const open = new Set<StreamCall>()
    // The socket as accepted, read through session.socket (a proxy that passes reads on to it, as
    // node documents): not a variable accept() sets around its emit, which held only while node
    // emits 'session' within that emit (node 24 does; nothing documents it).
    ;(session as SweptSession)[SOCKET] = (session.socket as AcceptedSocket)[ACCEPTED]
    ;(session as SweptSession)[OPEN] = open
    ;(session as SweptSession)[QUIET_SINCE] = performance.now()
    ;(session as SweptSession)[STREAMED] = false
    let lastPing = -Infinity
    let pingStrikes = 0
    // A stream came since the last PING: a PING that follows a call, as grpc-go's BDP probe follows
    // its answer's data, often reaches A after the stream closed, and is no strike.
    let streamSincePing = false
    // When the caller was last seen taking an answer (a stream of it closed here, or it gave back
    // window since), and the connection window it had then left: see takingAnswer.
    const taking: AnswerTaking = { at: -Infinity, window: -1 }
    session.on("ping", () => {
      const now = performance.now()
      if (open.size > 0 || streamSincePing || takingAnswer(session, taking, now, options.answerIdleMs)) {
        pingStrikes = 0
        streamSincePing = false
      } else if (now - lastPing < MIN_PING_INTERVAL_MS && ++pingStrikes > PING_STRIKES) return endSession(session, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, TOO_MANY_PINGS)
      lastPing = now
    })
    session.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: Array<string>) => {
      streamSincePing = true
      ;(session as SweptSession)[STREAMED] = true
      handler(new StreamCall(stream, headers, flags, rawHeaders, open, taking))
    })
    // A session with no frame either way this long is asked to go (GOAWAY), like an idle keep-alive
    // connection; its open streams may finish. One whose streams cannot (a caller that grants no
    // window to their answers, each holding up to 64 KiB) is ended once nothing moves for as long again.
    session.setTimeout(options.idleTimeoutMs, () => {
      session.close()
      endIfStalled(session, open, options.idleTimeoutMs, -1)
    })
    sessions.add(session)
    if (sweeper === undefined) {
      sweeper = setInterval(sweep, Math.max(1, options.answerIdleMs / SWEEPS))
      sweeper.unref()
    }
    session.on("close", () => {
      sessions.delete(session)
      if (sessions.size > 0) return
      clearInterval(sweeper)
      sweeper = undefined
    })
    // A broken session is its streams' failure; nothing to do beyond it.
    session.on("error", () => {})
  })
  return {
    accept: (socket) => {
      // Closed by its caller while node:http2 loaded (the first h2c connection): nothing to serve,
      // and node would wrap the handle-less socket in a JSStreamSocket of its own, the one
      // session.socket then reads through to, which names no accepted socket.
      if (socket.destroyed) return
      // A session closed (idle, PINGs bounded, the drain's GOAWAY) ends its socket and waits for the
      // caller's FIN: one that never sends it kept the socket, and its --max-app-connections place, for ever.
      boundPeerFin(socket)
      ;(socket as AcceptedSocket)[ACCEPTED] = socket
      h2.emit("connection", socket)
    },
    sessions,
    close: () => {
      for (const session of sessions) session.close()
    },
    destroyAll: () => {
      for (const session of sessions) destroySession(session)
    }
  }
}
