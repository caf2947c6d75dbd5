// One HTTP/2 stream of the outbound listener's h2c sessions (outboundH2.ts) as outbound.ts reads and
// answers a request (outboundCall.ts), on node's core stream API: its head, its body (held whole
// when it ends within its head's turn, gathered to a limit, or streamed), and its answer (head,
// body, trailers), with what the session sweep asks of it (a stalled answer's reset) and the reset
// that tells a caller still sending to stop once its cut-off body's answer is out. A request whose
// END_STREAM came goes on at the turn's end, unless its caller reset it within that read. Its close
// tells its session whether its caller reset it prematurely (outboundH2Premature.ts).
// Answer bytes the stream holds unsent once a write finds it full (the caller grants no window)
// count in the outbound listener's held answers (HeldAnswerBudget, maxQueuedBytes) until it drains or
// closes, as an HTTP/1.1 caller's do; a stream that never backs up costs nothing there.
import * as http2 from "node:http2"
import { Cancelled } from "../mux/meshChannels.ts"
import type { PlacedSet } from "../mux/placedSet.ts"
import type { HeldBodyReceiver, OutboundCall } from "./outboundCall.ts"
import { drainedOrClosed } from "./drained.ts"
import type { HeldAnswerBudget } from "./http1Listener.ts"
import { resetCancelled, resetFailed } from "./h2Reset.ts"
import { PREMATURE_LIFETIME_MS, type PrematureResets } from "./outboundH2Premature.ts"
import { askedTimeoutMs } from "./outboundTarget.ts"
import { TurnEnd } from "../mux/turnEnd.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

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
  // The closed stream lets go of its call (as appH2Exchange.ts's streams do of their exchanges).
  ;(this as { [CALL]: StreamCall | undefined })[CALL] = undefined
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
function onAnswerDrain(this: CallStream): void {
  this[CALL]?.releaseHeld()
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
  if (session === undefined || session.destroyed) return resetCut.call(this)
  // A caller that never answers the PING (nothing makes it) would otherwise keep the stream open,
  // its request in flight and a place of the session's streams, for as long as it keeps the
  // session: the reset goes after CUT_PING_WAIT_MS at the latest. Timers only on this error path.
  const stream = this
  const wait = setTimeout(resetCut.bind(stream), CUT_PING_WAIT_MS).unref()
  const answered = (): void => {
    clearTimeout(wait)
    resetCut.call(stream)
  }
  if (!session.ping(answered)) answered()
}
/** How long a cut stream's reset waits for its PING's answer: as long as HTTP/1.1's lingering close waits (peerFin.ts). */
const CUT_PING_WAIT_MS = 2_000
/** Still paused until now: the caller's window stays closed while the PING goes round. */
function resetCut(this: http2.ServerHttp2Stream): void {
  if (this.destroyed) return
  if (this.state.remoteClose !== 1) this.close(http2.constants.NGHTTP2_NO_ERROR)
  this.resume()
}

const EMPTY = Buffer.alloc(0)

/**
 * The decoded size of a request's field section as RFC 9113 §6.5.2 counts it (and node, once its
 * SETTINGS_MAX_HEADER_LIST_SIZE applies): each field's name and value and 32 octets, pseudo-headers
 * included; whatever HPACK made of it on the wire (CONTINUATION frames, a dynamic table's entries
 * referenced again and again: RFC 7541 §7.3). node gives fields as one-byte strings: a length is
 * their bytes. A loop over lengths, nothing allocated.
 */
const fieldSectionSize = (rawHeaders: ReadonlyArray<string>): number => {
  let size = 16 * rawHeaders.length
  for (let i = 0; i < rawHeaders.length; i++) size += rawHeaders[i]!.length
  return size
}

/** respond()'s options, one object per combination (node only reads them): none made per call. */
const END = { endStream: true, waitForTrailers: false } as const
const END_AND_TRAILERS = { endStream: true, waitForTrailers: true } as const
const TRAILERS = { endStream: false, waitForTrailers: true } as const
const NO_END = { endStream: false, waitForTrailers: false } as const

/** Why this side resets a stream whose answer stopped moving (its request's failure reason, the reset counter's label). */
export const ANSWER_STALLED = "answer_stalled"

/** Sweeps per answer idle timeout: a stream is reset this many sweeps after its answer last moved, within a quarter of the timeout past it. */
export const SWEEPS = 4

/** The calls whose bodies are held in this turn of the event loop: a body not over at its end (turnEnd.ts) streams. */
const heldThisTurn = new TurnEnd<StreamCall>((call) => call.streamOn())

/**
 * The calls whose END_STREAM came in this turn, kept to its end (sendsAtTurnEnd): only then is the
 * read they came in parsed to its end, and a RST_STREAM in it seen. What node does with a read:
 * - a connection's first (what came with the preface: node's session takes it from the socket's
 *   buffer as it is made, through its handle's receive(), from JS): every frame is parsed before any
 *   'stream' event (emitted on process.nextTick). A stream reset there is closed when its handler
 *   runs: 'aborted' emitted already (not for a HEAD, whose writable side node ends as it comes),
 *   destroyed (closed only, if reset NO_ERROR), its 'close' still to come;
 * - any later one (node's native handle reads the socket): each of nghttp2's frame callbacks is the
 *   outermost call into JS, and node runs the nextTick queue and the microtasks after it. The
 *   'stream' event, its handler, the body's 'data' and 'end' and what they resolve all run before
 *   the next frame is parsed; a RST_STREAM after them then brings 'aborted' and 'close'. Nothing
 *   can tell within the handler that one follows: only a setImmediate runs once the read is parsed.
 */
const unresetThisTurn = new TurnEnd<StreamCall>((call) => call.sendUnlessReset())

/** When a session's caller was last seen taking an answer, and the connection window it had left then (-1: not looked at since a stream's close). */
export interface AnswerTaking {
  at: number
  window: number
}

/** Keeps the hidden class of StreamCall alive while idle (shapeAnchor.ts). */
const callShape = new ShapeAnchor<StreamCall>()

/** One HTTP/2 stream as outbound.ts reads and answers a request (outboundCall.ts), on node's core stream API. */
export class StreamCall implements OutboundCall {
  readonly httpVersionMajor = 2
  headersSent = false
  writableEnded = false
  readonly method: string
  readonly url: string
  readonly headers: http2.IncomingHttpHeaders
  readonly rawHeaders: ReadonlyArray<string>
  readonly hasBody: boolean
  readonly headPastLimit: number
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
  private readonly open: PlacedSet<StreamCall>
  /** Its session's caller's answer taking (takingAnswer): this stream's close is its answer's last byte handed to the socket, not read yet. */
  private readonly taking: AnswerTaking
  /** Its session's count of streams and of those its caller reset prematurely (outboundH2Premature.ts). */
  private readonly premature: PrematureResets
  /** When the stream came (performance.now()): the exchange's start, and its lifetime at its close says whether a reset was premature. */
  readonly startedAt: number
  /** This side reset the stream (its caller gone, its answer cut or stalled): no reset of its caller's. */
  private resetHere = false
  /** Answer bytes handed to the stream: less what it still holds, what left (a write's bytes leave with its callback). */
  private queued = 0
  /** What had left at the last sweep that found the answer waiting (-1: none did), and the sweeps since with nothing more gone. */
  private sentAtSweep = -1
  private stillSweeps = 0
  /** What had left at the last look after the caller's FIN that found the answer waiting (-1: none did). */
  private sentAtFinLook = -1
  /** After the caller's FIN: asks its session for a look (watchAfterFin), as answer bytes are written. */
  private finLook: (() => void) | undefined = undefined
  /** Why this side cut the answer off, if it did (OutboundResponse.cutReason). */
  cutReason: string | undefined = undefined
  /** The request's body ran past readBody's limit (or stopBody gave it up): the rest is not read, and is dealt with once answered (resetUnread). */
  private bodyCut = false
  /** Ends readBody's reading as past its limit (stopBody), while it reads. */
  private stopReading: (() => void) | undefined = undefined
  /** The request kept to the turn's end (sendsAtTurnEnd): who sends it, with what body; and whether it was kept (once per call). */
  private sendTo: HeldBodyReceiver | undefined = undefined
  private sendBody: Uint8Array | AsyncIterable<Buffer> | undefined = undefined
  private keptToTurnEnd = false
  /** Its caller reset it before it went on (resetUnsent, closedBeforeEnd): nothing of it left A. */
  private unsent = false
  /** The listener's held answers, and what this stream counts in them now (its unsent bytes when last looked at). */
  private readonly held: HeldAnswerBudget
  private heldCounted = 0
  /** Listening for 'drain' (from its first write that found the stream full: a streamed answer backed up). */
  private drainWatched = false
  /** Its slot in its session's open calls (PlacedSet). */
  place = -1

  constructor(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: ReadonlyArray<string>, open: PlacedSet<StreamCall>, taking: AnswerTaking, premature: PrematureResets, headLimit: number, held: HeldAnswerBudget) {
    callShape.newest = this
    this.stream = stream
    this.held = held
    this.open = open
    this.taking = taking
    this.premature = premature
    this.startedAt = performance.now()
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
    this.headPastLimit = fieldSectionSize(rawHeaders) > headLimit ? headLimit : 0
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
    this.resetHere = true
    this.stream.close(http2.constants.NGHTTP2_CANCEL)
    this.stream.destroy()
  }

  /**
   * The caller's connection ended (its FIN): a request whose END_STREAM has not come never gets it,
   * and ends as a caller gone (RST_STREAM CANCEL). One answered already (a body cut at its limit)
   * has its reset from onCutAnswered. An answer waiting then is looked at after (lookAfterFin).
   */
  callerEnded(): void {
    const stream = this.stream
    if (stream.destroyed || this.writableEnded || stream.state.remoteClose === 1) return
    this.resetHere = true
    resetCancelled(stream)
  }

  /**
   * A look after the caller's FIN (outboundH2Session.ts watchAfterFin): no WINDOW_UPDATE comes any
   * more, so an answer waiting for window never goes. One whose bytes did not move since the last
   * look, with the socket taking all it was given now (`socketIdle`: nghttp2 would have sent more,
   * window allowing), waits for window: it ends as a caller gone, its held bytes and far request
   * with it, rather than at the answer idle sweep. Not at the first look that finds it waiting: a
   * turn after a write, none of it may have gone yet; nor while the socket is full (a slow reader,
   * still reading: its answer goes as it reads).
   */
  lookAfterFin(socketIdle: boolean): boolean {
    const stream = this.stream
    const waiting = stream.writableLength
    if (waiting === 0 || stream.destroyed) {
      this.sentAtFinLook = -1
      return false
    }
    const sent = this.queued - waiting
    const still = sent === this.sentAtFinLook
    this.sentAtFinLook = sent
    if (!still || !socketIdle) return true
    this.resetHere = true
    resetCancelled(stream)
    return false
  }

  /** The caller sent its FIN: from now on each answer write asks for a look (`look`: its session's). */
  lookedAfterFin(look: () => void): void {
    this.finLook = look
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
    // Closed already (the caller reset it while the try waited for its endpoint's connection): its
    // 'close' has passed, and the gather would wait for the request's deadline, the exchange held.
    if (stream.destroyed) return Promise.reject(this.closedBeforeEnd())
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
        // Reset before its END_STREAM (node ends a reset stream's readable side as an END_STREAM
        // ends it: 'aborted', then 'end'): what came is not the body (RFC 9113 §8.1).
        if (stream.aborted) return reject(this.closedBeforeEnd())
        resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, total))
      })
      stream.once("error", reject)
      // Closed before the body's end (reset by the app): no 'end' follows. Still reading: not settled ('end', stop), not counted yet.
      stream.once("close", () => {
        if (this.stopReading !== undefined) reject(this.closedBeforeEnd())
      })
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

  /**
   * The held body ended within its turn: it goes whole. Or the caller reset the stream before its
   * END_STREAM (node ends a reset stream's readable side as an END_STREAM ends it: 'aborted', then
   * 'end'): what came is no request (RFC 9113 §8.1), and none of it has gone anywhere, so nothing
   * goes (bodyReset). Sent on as a body that broke off, its head cost B an exchange and the app a
   * stream B then reset, one of B's reset budget to an h2c app (hostile-h2-held-reset.test.ts).
   */
  heldEnd(): void {
    const holder = this.holder
    if (holder === undefined) return
    this.holder = undefined
    this.stream.off("data", onHeldData)
    this.stream.off("end", onHeldEnd)
    const held = this.takeHeld()
    if (this.stream.aborted) this.resetUnsent(holder)
    else holder.bodyHeld(held ?? EMPTY)
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
    // Reset meanwhile, while still held: nothing of it has gone anywhere, and nothing goes (as heldEnd).
    if (stream.aborted) return this.resetUnsent(holder)
    if (!stream.destroyed) {
      stream.pause()
      if (held !== undefined) stream.unshift(held)
    }
    holder.bodyHeld(stream)
  }

  /**
   * A request whose END_STREAM came (none was sent on before its end) goes on at the turn's end, not
   * now: a caller that resets it later in the same read (rapid reset, CVE-2023-44487) would cost B an
   * exchange and the app its work, and an h2c app a stream B resets, one of B's budget (appH2.ts).
   * False for a body still streaming (its reset reaches the app as a cut request) and once kept.
   */
  sendsAtTurnEnd(receiver: HeldBodyReceiver, body: Uint8Array | AsyncIterable<Buffer>): boolean {
    if (this.keptToTurnEnd || (this.hasBody && !this.stream.readableEnded)) return false
    this.keptToTurnEnd = true
    this.sendTo = receiver
    this.sendBody = body
    unresetThisTurn.add(this)
    return true
  }

  /**
   * The turn's end (unresetThisTurn): the request goes on, unless its stream closed meanwhile. Closed
   * with the request whole and no answer sent is a reset (RFC 9113 §5.1: RST_STREAM, any code) or
   * the session gone: the request is not wanted (RFC 9113 §8.1), and nothing of it went anywhere.
   */
  sendUnlessReset(): void {
    const receiver = this.sendTo!
    const body = this.sendBody!
    this.sendTo = undefined
    this.sendBody = undefined
    const stream = this.stream
    if (stream.closed || stream.destroyed) this.resetUnsent(receiver)
    else receiver.bodyHeld(body)
  }

  /** The caller reset the request before it went on: noted for the premature-reset rule (closed), then told. */
  private resetUnsent(receiver: HeldBodyReceiver): void {
    this.unsent = true
    receiver.bodyReset()
  }

  /**
   * The caller reset (or closed) the stream before its body's end, which readBody gathered: its
   * cancellation, no failure of anything beyond it (502 `cancelled`, proxyError.ts), noted as resetUnsent notes one.
   */
  private closedBeforeEnd(): Cancelled {
    this.unsent = true
    return new Cancelled({ message: "the caller reset its stream before its body's end" })
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
    this.releaseHeld()
    // Every close is told to the premature-reset rule: answered, reset by this side, or reset by its
    // caller, before the request went on or after. Closed while A holds it (to the turn's end, its
    // body held or gathered) is a reset before it went on, seen as its RST_STREAM is read.
    const unsent = this.unsent || this.sendTo !== undefined || this.holder !== undefined || this.stopReading !== undefined
    const now = performance.now()
    this.premature.closed(!this.headWritten && !this.resetHere && this.resetEarly(now), unsent, now)
    // Its window, given back from now on, is the caller reading this answer's tail: looked at from the next PING.
    this.taking.at = now
    this.taking.window = -1
    const listener = this.closeListener
    // Told once; let go of it, and of the exchange it holds, since node may keep the closed stream
    // (and so this call) a while longer (onStreamClose above).
    this.closeListener = undefined
    listener?.(this.writableEnded && this.stream.rstCode === http2.constants.NGHTTP2_NO_ERROR)
  }

  /**
   * A stream closed with no answer sent and not by this side was reset by its caller (or closed by
   * nghttp2 for a frame of its caller's that broke the protocol): premature within
   * PREMATURE_LIFETIME_MS of its start, unless the deadline it asked for had passed by then.
   */
  private resetEarly(now: number): boolean {
    const lifetime = now - this.startedAt
    if (lifetime >= PREMATURE_LIFETIME_MS) return false
    const asked = askedTimeoutMs(this)
    return asked === 0 || lifetime < asked
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
    this.finLook?.()
    if (this.stream.write(chunk)) return true
    this.holdUnsent()
    if (!this.drainWatched) {
      this.drainWatched = true
      this.stream.on("drain", onAnswerDrain)
    }
    return false
  }

  /** The stream holds answer bytes its caller has not let go: counted in the listener's held answers until it drains (a write's) or closes. */
  private holdUnsent(): void {
    const unsent = this.stream.writableLength
    this.held.heldAnswerBytes += unsent - this.heldCounted
    this.heldCounted = unsent
  }

  /** What it held left (drained), or its stream closed. */
  releaseHeld(): void {
    this.held.heldAnswerBytes -= this.heldCounted
    this.heldCounted = 0
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
      this.finLook?.()
      this.stream.end(data)
      // A whole answer not out yet (its caller's window, or the socket): held until the stream
      // closes, which an answer let out brings at once; no 'drain' listener per answer for it.
      if (this.stream.writableLength > 0) this.holdUnsent()
    }
    this.resetUnread()
  }

  /**
   * The answer is over before the request's body was read to its end: cut off at its limit
   * (readBody), given up (stopBody), or never read, a body that streams refused before its try (no
   * endpoint) and left paused by streamOn. Its unread rest is dealt with once the answer is out
   * (onCutAnswered): left so, node never ends the stream (the caller's window full, no close).
   */
  private resetUnread(): void {
    const stream = this.stream
    if (stream.destroyed || !(this.bodyCut || (this.hasBody && !stream.readableEnded))) return
    this.bodyCut = false
    if (stream.writableFinished) onCutAnswered.call(stream)
    else stream.once("finish", onCutAnswered)
  }

  /** A cut answer (the far app died, the peer's connection was lost, the body broke its length): the caller must read it as one. */
  destroy(): void {
    this.resetHere = true
    resetFailed(this.stream)
  }
}
