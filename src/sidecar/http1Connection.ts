// One connection of the outbound listener (http1Listener.ts, which accepts it, sweeps its timeouts
// and closes it): its first bytes sniffed for the HTTP/2 preface, its requests parsed by llhttp and
// handed on one at a time, in order, as Http1Calls (http1Call.ts), its reading held while an answer
// waits to drain, and its end (an error answer, a timeout, an upgrade's hand-over).
// Once a connection's first read has shown it is HTTP/1.1, llhttp consumes the socket's handle as
// node:http does (`parser.consume`): reads are parsed in C++ out of a buffer the binding reuses, with
// no Buffer, Readable push, 'data' event or next tick per read (sidecar A's CPU, issue 14); pausing is
// then the handle's readStop/readStart, and an upgrade gives the socket back to its Readable stream.
import type * as net from "node:net"
import { lingerAfterEnd } from "../mux/peerFin.ts"
import { cut, Http1Call, type CallConnection } from "./http1Call.ts"
import { asksOnlyH2c, CONTINUE_EXPECTATION, MAX_HEADER_ENTRIES } from "./http1HeadRules.ts"
import type { Http1Listener } from "./http1Listener.ts"
import { queuedInLibuv } from "./drained.ts"
import { Fifo } from "../mux/fifo.ts"
import { closeParserSoon, HTTPParser, type LlhttpParser, methodNames } from "./llhttp.ts"
import { heldAnswersRefusal, ProxyError, sendProxyError, writeProxyError } from "./proxyError.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1")
/** Past the announced keep-alive timeout, as node:http waits before closing an idle connection. */
const KEEP_ALIVE_GRACE_MS = 1000

const errorAnswer = (status: number, text: string): string => `HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`
const BAD_REQUEST = errorAnswer(400, "Bad Request")
const TOO_LARGE = errorAnswer(431, "Request Header Fields Too Large")
const EXTENSIONS_TOO_LARGE = errorAnswer(413, "Payload Too Large")
const TIMED_OUT = errorAnswer(408, "Request Timeout")
const CONNECT_REFUSED = new ProxyError({ status: 400, reason: "bad_target", hop: "outbound", message: "CONNECT is not proxied: send the request itself, naming the service in Host or an absolute http:// URI" })

/** A TCP socket's libuv handle, as llhttp consumes it (node:http's onSocketPause/onSocketResume keep `reading` the same way). */
interface ConsumableHandle {
  readonly isStreamBase?: boolean
  reading?: boolean
  readStart(): number
  readStop(): number
}

/**
 * Bytes of answers the socket holds unsent, each once: its Writable's, where a chunk libuv is
 * writing counts whole until all of it is sent (its buffer lives until then). libuv's queue
 * (`queuedInLibuv`) is part of that chunk: added, it counted twice (up to twice the answer).
 */
const held = (socket: net.Socket): number => socket.writableLength


/** One connection from the app. */
/** HTTP/1.0 or 1.1: the versions the listener speaks (llhttp also reads 0.9 and 2.0 request lines). */
const spokenVersion = (major: number, minor: number): boolean => major === 1 && minor <= 1

/** Keeps the hidden class of Connection alive while idle (shapeAnchor.ts). */
const connectionShape = new ShapeAnchor<Connection>()

export class Connection implements CallConnection {
  readonly socket: net.Socket
  readonly remoteAddress: string
  private readonly listener: Http1Listener
  private readonly parser: LlhttpParser
  /** The first bytes, while they may still be the HTTP/2 preface. */
  private sniffed: Buffer | undefined = undefined
  private sniffing = true
  /** The request being answered. */
  private current: Http1Call | undefined = undefined
  /** The request whose bytes llhttp is reading (the current one, or one waiting). */
  private parsing: Http1Call | undefined = undefined
  /** Requests read while another is answered, in order. */
  private readonly waiting = new Fifo<Http1Call>()
  private pendingHeaders: Array<string> = []
  private pendingUrl = ""
  private inMessage = false
  private headersDone = false
  private messageStarted: number
  private idleSince: number
  private bodyHeld = false
  private gone = false
  private parserClosed = false
  /** The socket's handle while llhttp reads it (consume mode). */
  private consumed: ConsumableHandle | undefined = undefined
  /** A message ended within the read being parsed. */
  private completedInRead = false
  /**
   * The request being read is the connection's last (an upgrade to h2c alone, answered as if it
   * did not switch: then the close): once its body is read, nothing more is. llhttp, which took it
   * for an upgrade, stops after its body too, and would read on only if executed again.
   */
  private lastRequest = false
  /** The last answer waits in the socket past its high-water mark: nothing more is read or answered until it drains. */
  private awaitingDrain = false
  /** When the caller last took a byte of it (performance.now(), as the sweep saw), and `held` and `queuedInLibuv` then. */
  private drainSince = 0
  private drainLeft = 0
  private drainQueued = 0
  /** What this connection counts in the listener's held answers (`held` when the wait began). */
  private heldBytes = 0
  /**
   * The answer to bytes llhttp refused after requests still owed answers: it goes in its own place,
   * after theirs, then the close (nothing more is read). Sent at once, it would read as the answer
   * to the first of them, which may already have run at the far app.
   */
  private refusal: string | undefined = undefined
  /** A request's head was read on this connection: bytes refused after it are counted (onStray). */
  private carriedRequest = false

  constructor(listener: Http1Listener, socket: net.Socket, now: number) {
    connectionShape.newest = this
    this.listener = listener
    this.socket = socket
    this.remoteAddress = socket.remoteAddress ?? ""
    this.messageStarted = now
    this.idleSince = now
    const parser = new HTTPParser()
    parser.initialize(HTTPParser.REQUEST, {}, listener.options.maxHeaderSize, HTTPParser.kLenientNone)
    parser[HTTPParser.kOnHeaders] = (headers: Array<string>, url: string) => {
      // Past the head these are a chunked body's trailers, which the mesh does not carry from an
      // HTTP/1.1 caller, handed over with the message's URL again (node's binding keeps it until a
      // flush): neither may become the next request's first fields or the start of its target.
      if (this.headersDone) return
      for (const one of headers) this.pendingHeaders.push(one)
      this.pendingUrl += url
    }
    parser[HTTPParser.kOnHeadersComplete] = this.onHeadersComplete.bind(this)
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => this.parsing?.pushBody(chunk)
    parser[HTTPParser.kOnMessageComplete] = () => {
      this.inMessage = false
      this.headersDone = false
      this.completedInRead = true
      this.parsing?.endBody()
      this.parsing = undefined
      if (this.current === undefined && this.waiting.length === 0) this.idleSince = performance.now()
    }
    parser[HTTPParser.kOnExecute] = (parsed: number | Error) => this.onExecute(parsed)
    this.parser = parser
    socket.on("data", (data: Buffer) => this.onData(data))
    socket.on("end", () => this.onEnd())
    socket.on("close", () => this.onClose())
    // A reset says so with 'error' and 'close': the close is what ends the connection.
    socket.on("error", () => {})
  }

  get closing(): boolean {
    return this.listener.closing
  }

  get keepAliveTail(): string {
    return this.listener.keepAliveTail
  }

  /** Nothing asked, nothing being read: the listener's close may end it now. */
  get idle(): boolean {
    return this.current === undefined && this.waiting.length === 0 && !this.inMessage
  }

  private onData(data: Buffer): void {
    if (this.gone || this.refusal !== undefined) return
    if (this.sniffing && !this.sniff(data)) return
    // Bytes after an upgrade's head are the upgraded connection's, however they were read.
    const held = this.waiting.last
    if (held?.upgrade === true) {
      held.upgradeHead = Buffer.concat([held.upgradeHead, data])
      return
    }
    // A message's time runs from the read that brings its first bytes (llhttp's message-begin
    // callback would cost a call per request; a message begun at the end of a read that ended
    // another is timed from the next read, or closed as idle).
    if (!this.inMessage) {
      this.inMessage = true
      this.headersDone = false
      this.messageStarted = performance.now()
    }
    const parsed = this.parser.execute(data)
    this.completedInRead = false
    if (parsed instanceof Error) return this.parseFailed(parsed)
    if (this.lastRequest && this.inMessage && parsed < data.length) return this.bodyRefused()
    // llhttp stops at an upgrade's head: the bytes after it are the upgraded connection's.
    const last = this.waiting.last
    if (last?.upgrade === true) {
      last.upgradeHead = data.subarray(parsed)
      this.socket.pause()
    }
    this.next()
    this.consume()
  }

  /**
   * From now on llhttp reads the socket itself, when nothing read is waiting in the socket's
   * Readable buffer (it would come after later reads) and no upgrade is pending (its connection goes
   * on as a stream).
   */
  private consume(): void {
    if (this.consumed !== undefined || this.gone || this.socket.readableLength > 0 || this.socket.isPaused() || this.waiting.last?.upgrade === true) return
    const handle = (this.socket as unknown as { _handle?: ConsumableHandle | null })._handle
    if (handle == null || handle.isStreamBase !== true) return
    this.parser.consume(handle)
    this.consumed = handle
    handle.reading = true
    this.updateReading()
  }

  /** The handle's reads go back to the socket's Readable stream (an upgrade, or done with the connection). */
  private unconsume(): void {
    if (this.consumed === undefined) return
    this.consumed = undefined
    this.parser.unconsume()
  }

  /** A read llhttp parsed in consume mode (what onData does after its execute). */
  private onExecute(parsed: number | Error): void {
    if (this.gone || this.refusal !== undefined) return
    if (parsed instanceof Error) return this.parseFailed(parsed)
    // A read that ended no message and found none under way began one (its head is not complete):
    // its time runs from this read, as onData times a message from the read that brings its first bytes.
    if (!this.completedInRead && !this.inMessage) {
      this.inMessage = true
      this.headersDone = false
      this.messageStarted = performance.now()
    }
    this.completedInRead = false
    // (The read's length is known here only from a copy of it: taken for the last request alone.)
    if (this.lastRequest && this.inMessage && parsed < this.parser.getCurrentBuffer().length) return this.bodyRefused()
    const last = this.waiting.last
    if (last?.upgrade === true) {
      last.upgradeHead = this.parser.getCurrentBuffer().subarray(parsed)
      this.unconsume()
      this.socket.pause()
    }
    this.next()
  }

  /**
   * llhttp refused the body of the last request (an upgrade to h2c alone: bad chunking, or the
   * input's end within it), which node's binding reports as no error for an upgrade: the parse
   * stopped short of the read's end within the message (it stops short otherwise only at the
   * message's end, llhttp's pause after an upgrade, when nothing more is read). node:http's 400,
   * as for any request it refuses, and in the same place (parseFailed): after the answer to a
   * request read before it, not as that answer (it may have run at the far app already).
   */
  private bodyRefused(): void {
    this.parseFailed(new Error("the body of an upgrade to h2c alone is malformed or cut short"))
  }

  /** True when `data` is for HTTP/1.1; false while it may be the HTTP/2 preface, or once it was. */
  private sniff(data: Buffer): boolean {
    const seen = this.sniffed === undefined ? data : Buffer.concat([this.sniffed, data])
    const compared = Math.min(seen.length, PREFACE.length)
    if (!seen.subarray(0, compared).equals(PREFACE.subarray(0, compared))) {
      this.sniffing = false
      if (this.sniffed === undefined) return true
      this.sniffed = undefined
      this.onData(seen)
      return false
    }
    // A prefix of the preface: wait for the rest (at most its 24 bytes).
    if (compared < PREFACE.length) {
      this.sniffed = seen
      return false
    }
    this.detach()
    this.socket.pause()
    this.socket.unshift(seen)
    this.listener.options.onH2c(this.socket)
    return false
  }

  private onHeadersComplete(
    major: number,
    minor: number,
    headers: Array<string> | undefined,
    method: number,
    url: string | undefined,
    _status: unknown,
    _statusMessage: unknown,
    upgrade: boolean,
    shouldKeepAlive: boolean
  ): number {
    let raw = headers ?? []
    if (this.pendingHeaders.length > 0) {
      raw = this.pendingHeaders.concat(raw)
      this.pendingHeaders = []
    }
    if (raw.length > MAX_HEADER_ENTRIES) raw.length = MAX_HEADER_ENTRIES
    const target = url === undefined || this.pendingUrl !== "" ? `${this.pendingUrl}${url ?? ""}` : url
    this.pendingUrl = ""
    this.headersDone = true
    // Consume mode has no read before the parse to time the message from: its head came in this read.
    if (!this.inMessage) {
      this.inMessage = true
      this.messageStarted = performance.now()
    }
    const name = methodNames[method] ?? ""
    // llhttp also reads HTTP/0.9 and HTTP/2.0 request lines, with HTTP/1.0's keep-alive rules; the
    // mesh speaks 1.0 and 1.1 (1.1's rules, Host required among them, would be skipped): answered
    // 505 in its turn (start), no upgrade, and its body and all after it left unread (the close).
    const unsupported = !spokenVersion(major, minor)
    // No keep-alive and no switch for an upgrade to h2c alone; its body is read as any other's (0).
    const ordinary = upgrade && name !== "CONNECT" && asksOnlyH2c(raw)
    if (ordinary || unsupported) this.lastRequest = true
    const call = new Http1Call(this, name, target, major, minor, raw, shouldKeepAlive && !ordinary && !unsupported, upgrade && !ordinary && !unsupported)
    this.carriedRequest = true
    this.waiting.push(call)
    // An upgrade's head (or one in a version not spoken) ends what llhttp reads here (2: no body, stop).
    if (call.upgrade || unsupported) return 2
    this.parsing = call
    return 0
  }

  /** The next request's turn, when none is being answered; after the last, a refusal's. */
  private next(): void {
    while (this.current === undefined && this.waiting.length > 0 && !this.gone && !this.awaitingDrain) {
      const call = this.waiting.shift()!
      if (call.upgrade) return this.handOver(call)
      this.current = call
      this.start(call)
    }
    if (this.refusal !== undefined && this.current === undefined && this.waiting.length === 0 && !this.gone && !this.awaitingDrain) {
      this.socket.write(this.refusal, "latin1")
      return this.endAfterWrites()
    }
    this.updateReading()
  }

  private start(call: Http1Call): void {
    // RFC 9110 15.6.6 (onHeadersComplete read no further).
    if (!spokenVersion(call.httpVersionMajor, call.httpVersionMinor)) {
      call.writeHead(505, [])
      return call.end()
    }
    const http11 = call.httpVersionMajor === 1 && call.httpVersionMinor === 1
    if (http11 && call.headers.host === undefined) {
      call.keepAlive = false
      call.writeHead(400, [])
      return call.end()
    }
    // A body in another coding besides chunked (gzip, chunked): llhttp takes the chunks off, the
    // hop-by-hop Transfer-Encoding is dropped, and the far app would get gzip bytes as plain ones.
    // RFC 9112 6.1: a coding the server does not do is answered 501 (as nginx does), before
    // any 100 Continue, which would have the client send a body only to be dropped.
    const codings = call.headers["transfer-encoding"]
    if (codings !== undefined && codings.trim().toLowerCase() !== "chunked") {
      call.keepAlive = false
      call.writeHead(501, [])
      return call.end()
    }
    // RFC 9112 6.1: a Transfer-Encoding in an HTTP/1.0 message makes its framing faulty (a 1.0 hop
    // before the sidecar may have framed it otherwise): processed, then the connection closes, a
    // keep-alive it asked for or not, so nothing after it is read as a request.
    if (codings !== undefined && !http11) call.keepAlive = false
    const expect = call.headers.expect
    if (http11 && expect !== undefined) {
      if (!CONTINUE_EXPECTATION.test(expect)) {
        call.writeHead(417, [])
        return call.end()
      }
      // The 100 goes once the request is routed and its body wanted (http1Call.ts invite): a
      // request refused before (no endpoint, a length past the limit) is answered without it.
      call.expectContinue()
    }
    const { listener } = this
    if (listener.heldAnswerBytes > listener.options.maxHeldAnswerBytes) {
      listener.refusedForHeldAnswers++
      call.keepAlive = false
      return sendProxyError(call, heldAnswersRefusal(listener.heldAnswerBytes))
    }
    listener.options.onRequest(call)
  }

  /** The caller's taking of the answer is watched from now (checkTimeouts), its bytes counted in the listener's held answers until the drain or the close. */
  private awaitDrain(): void {
    this.awaitingDrain = true
    this.drainSince = performance.now()
    this.drainLeft = held(this.socket)
    this.drainQueued = queuedInLibuv(this.socket)
    this.releaseAnswer()
    this.heldBytes = this.drainLeft
    this.listener.heldAnswerBytes += this.heldBytes
  }

  private releaseAnswer(): void {
    this.listener.heldAnswerBytes -= this.heldBytes
    this.heldBytes = 0
  }

  /**
   * The socket goes to the upgrade handler, as node:http's 'upgrade' event gave it. CONNECT (a
   * tunnel: an app whose HTTPS_PROXY names the sidecar) is no request the mesh carries: answered
   * 400 bad_target, as over HTTP/2, then closed (node:http closed it without a word).
   */
  private handOver(call: Http1Call): void {
    if (call.method === "CONNECT") {
      // Closed once the answer is out, as the other error answers are, and watched until then: a
      // caller that reads none of it would otherwise hold the socket (and a place) for ever.
      writeProxyError(this.socket, CONNECT_REFUSED)
      return this.endAfterWrites()
    }
    this.detach()
    ;(this.socket as { readableFlowing: boolean | null }).readableFlowing = null
    this.listener.options.onUpgrade(call, this.socket, call.upgradeHead)
  }

  holdBody(held: boolean): void {
    this.bodyHeld = held
    this.updateReading()
  }

  /** Reads while nothing waits its turn and the body being read is not held back. */
  private updateReading(): void {
    if (this.gone) return
    const hold = this.bodyHeld || this.waiting.length > 0 || this.awaitingDrain || (this.lastRequest && !this.inMessage) || this.refusal !== undefined
    const handle = this.consumed
    if (handle !== undefined) {
      // The handle stops and starts; the socket's Readable state says so too (isPaused), as node:http's consumed sockets do.
      if (hold && handle.reading === true) {
        handle.reading = false
        handle.readStop()
        this.socket.pause()
      } else if (!hold && handle.reading !== true) {
        handle.reading = true
        handle.readStart()
        this.socket.resume()
      }
      return
    }
    if (hold && !this.socket.isPaused()) this.socket.pause()
    else if (!hold && this.socket.isPaused()) this.socket.resume()
  }

  done(call: Http1Call): void {
    if (call !== this.current) return
    this.current = undefined
    if (this.gone) return
    if (!call.keepAlive || (this.closing && this.waiting.length === 0)) return this.endAfterWrites()
    if (!this.inMessage && this.waiting.length === 0) this.idleSince = performance.now()
    // A caller that pipelines requests and reads no answer would have every answer pile up in
    // memory here (16 KiB answers: 80 MB a second): the next request waits until the socket has
    // taken this answer, so what waits is bounded by the socket's buffers.
    if (this.socket.writableNeedDrain) {
      this.awaitDrain()
      this.updateReading()
      return void this.socket.once("drain", () => this.drained())
    }
    // The next answer (or the refusal after the last) goes out after this one's caller is done with it.
    if (this.waiting.length > 0 || this.refusal !== undefined) process.nextTick(() => this.next())
    else this.updateReading()
  }

  /** The socket took the last answer: reading and answering go on. */
  private drained(): void {
    this.awaitingDrain = false
    this.releaseAnswer()
    if (this.gone) return
    // Idle from now, not from the answer's end: the caller was reading it until now.
    if (!this.inMessage && this.waiting.length === 0) this.idleSince = performance.now()
    if (this.waiting.length > 0 || this.refusal !== undefined) this.next()
    else this.updateReading()
  }

  /** The app ended its side: as node:http does, this side ends too (the connection closes, an answer being given with it). */
  private onEnd(): void {
    if (this.gone || this.refusal !== undefined) return
    const result = this.parser.finish()
    if (result instanceof Error) this.parseFailed(result)
    // The last request's body cut short: llhttp's error at the end of input, dropped as for its reads.
    else if (this.lastRequest && this.inMessage) this.bodyRefused()
    else this.socket.end()
  }

  private onClose(): void {
    this.gone = true
    this.releaseAnswer()
    this.listener.forget(this)
    this.closeParser()
    this.parsing?.failBody()
    this.waiting.clear()
    this.current?.close(false)
  }

  /**
   * A request llhttp refused: node:http's answer (unless one has begun), then the close; after
   * requests still owed answers (pipelined, or one at the far app), in its own place after theirs.
   */
  private parseFailed(error: Error): void {
    const code = (error as { code?: unknown }).code
    const answer = code === "HPE_HEADER_OVERFLOW" ? TOO_LARGE : code === "HPE_CHUNK_EXTENSIONS_OVERFLOW" ? EXTENSIONS_TOO_LARGE : BAD_REQUEST
    if (this.carriedRequest) this.listener.options.onStray()
    const { parsing } = this
    // The body of a request answered already (refused before its body was read) broke: it has had
    // its one answer, and a 400 now would read as the answer to the caller's next request. The
    // connection ends after that answer, with no other.
    if (parsing !== undefined && parsing !== this.current && this.waiting.last !== parsing) {
      this.parsing = undefined
      parsing.failBody()
      this.gone = true
      return this.endAfterWrites()
    }
    // The body of the request being answered cut short: it fails as that request's (the 400 its answer, if none has begun).
    if ((parsing !== undefined && parsing === this.current) || (this.current === undefined && this.waiting.length === 0)) return this.fail(answer)
    if (parsing !== undefined) {
      // A request read behind others (the newest waiting) whose body broke: never started, it leaves
      // the queue unsent, and the 400 answers it in its turn, after the answers owed before it.
      this.parsing = undefined
      parsing.failBody()
      if (this.waiting.last === parsing) this.waiting.pop()
    }
    this.refusal = answer
    this.inMessage = false
    this.closeParser()
    // Requests read with the garbage wait their turn as any others (next holds reading from now on).
    this.next()
  }

  /** Ends the connection with `answer`, if no answer has begun on it (after it is out, or cut if the caller takes none of it: endAfterWrites); one begun, it is cut. */
  private fail(answer: string): void {
    if (this.gone) return
    // One begun can only be cut (onClose ends the request): a FIN would read as its end to a caller
    // whose body runs to the close (HTTP/1.0, no length), as destroySoon made it.
    if (this.current?.answering === true) return this.destroy()
    this.gone = true
    if (this.current === undefined || !this.current.headersSent) this.socket.write(answer, "latin1")
    this.parsing?.failBody()
    this.current?.close(false)
    this.endAfterWrites()
  }

  /** The listener's sweep: a head or a request too slow, an idle connection past its keep-alive. */
  checkTimeouts(now: number): void {
    const { headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs } = this.listener.options
    // A caller that has read none of an answer for as long as an idle connection may stay: gone.
    // One still reading (what the socket holds changed since the last sweep: nothing else writes
    // while the drain is awaited) is not idle, however slow.
    if (this.awaitingDrain) {
      const left = held(this.socket)
      const queued = queuedInLibuv(this.socket)
      if (left !== this.drainLeft || queued !== this.drainQueued) {
        this.drainLeft = left
        this.drainQueued = queued
        this.drainSince = now
      } else if (now - this.drainSince > keepAliveTimeoutMs + KEEP_ALIVE_GRACE_MS) return this.destroy()
      return
    }
    if (this.sniffing || (this.inMessage && !this.headersDone)) {
      if (now - this.messageStarted > headersTimeoutMs) this.fail(TIMED_OUT)
    } else if (this.inMessage) {
      if (now - this.messageStarted > requestTimeoutMs) this.fail(TIMED_OUT)
    } else if (this.current === undefined && this.waiting.length === 0 && now - this.idleSince > keepAliveTimeoutMs + KEEP_ALIVE_GRACE_MS) {
      this.destroy()
    }
  }

  /** Cut now: with a reset when an answer is not all out (one begun, or the last one still in the socket). */
  destroy(): void {
    this.gone = true
    cut(this.socket, this.current?.answering === true || held(this.socket) > 0)
  }

  /** The listener closes and nothing is asked on this connection: it ends now, after its last answer is out if it is not yet. */
  closeIdle(): void {
    if (this.gone) return
    if (held(this.socket) > 0) this.endAfterWrites()
    else this.destroy()
  }

  /**
   * The last answer is written (an error answer included): the socket ends once it is out. The
   * listener keeps the connection until then, so that a stop waits for it and its drain deadline
   * cuts it, and a caller that takes none of it for as long as an idle connection may stay is cut
   * (checkTimeouts): destroySoon alone waits for ever on a caller whose receive side is full.
   */
  private endAfterWrites(): void {
    this.gone = true
    this.detach(false)
    this.awaitDrain()
    this.socket.once("close", () => {
      this.releaseAnswer()
      this.listener.forget(this)
    })
    // Its end, then the caller's bytes read and dropped until its FIN (bounded): destroySoon's
    // close at 'finish', with them unread, was a reset that could lose the answer unread. The
    // answer is all out at 'finish': it leaves the budget then, not at the lingering close.
    this.socket.once("finish", () => this.releaseAnswer())
    this.socket.end()
    lingerAfterEnd(this.socket)
  }

  /** This module no longer reads the socket (`forget`: nor does the listener keep the connection). */
  private detach(forget = true): void {
    // Whatever it held no longer counts: its close may not come through this module now.
    this.releaseAnswer()
    if (forget) this.listener.forget(this)
    this.unconsume()
    this.closeParser()
    this.socket.removeAllListeners("data")
    this.socket.removeAllListeners("end")
    this.socket.removeAllListeners("close")
    this.socket.removeAllListeners("error")
    this.socket.on("error", () => {})
  }

  /** Done with llhttp: its native parser is freed (once; detach and the close may both come). */
  private closeParser(): void {
    if (this.parserClosed) return
    this.parserClosed = true
    this.unconsume()
    closeParserSoon(this.parser)
  }
}
