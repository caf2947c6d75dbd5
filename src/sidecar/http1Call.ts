// One HTTP/1.1 request on the outbound listener (http1Listener.ts) as outbound.ts sees it
// (outboundCall.ts): the head llhttp parsed, the body as it arrives, and the answer written
// straight to the socket. One object per request, where node:http made an IncomingMessage, a
// ServerResponse and their streams: the answer's head is one string, sent with the first bytes of
// the body (a small body and its head in one write), the framing ours (the length given, else
// the length of a body ended at once, else chunked, or for HTTP/1.0 to the close).
import * as Data from "effect/Data"
import type { IncomingHttpHeaders } from "node:http"
import type * as net from "node:net"
import { PausingByteQueue } from "./byteQueue.ts"
import { drainedOrClosed } from "./drained.ts"
import { pairsMatchFlat } from "./headerFilter.ts"
import type { OutboundCall } from "./outboundCall.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/** A body is held (or queued for its reader) up to about this much before the app is paused. */
const BODY_HIGH_WATER = 64 * 1024
/** A head and a body up to this size go in one buffer, one write; larger, the socket is corked. */
const ONE_WRITE_LIMIT = 16 * 1024

/** The app's connection closed before the request's body ended. */
export class RequestAborted extends Data.TaggedError("RequestAborted")<{ readonly message: string }> {}

/** What a call needs of its connection. */
export interface CallConnection {
  readonly socket: net.Socket
  readonly remoteAddress: string
  /** Set while the listener closes: answers say `connection: close`. */
  readonly closing: boolean
  /** How a kept-alive answer's head ends: `connection: keep-alive`, the `keep-alive: timeout=` announced, the blank line (one string for every answer). */
  readonly keepAliveTail: string
  /** Stops or restarts reading for the body being parsed (back-pressure). */
  holdBody(held: boolean): void
  /** The call's answer ended (or it went away): the connection takes the next one, or closes. */
  done(call: Http1Call): void
}

/** Header fields of which node:http keeps the first of repeated values. */
const FIRST_WINS = new Set([
  "age", "authorization", "content-length", "content-type", "etag", "expires", "from", "host", "if-modified-since", "if-unmodified-since", "last-modified",
  "location", "max-forwards", "proxy-authorization", "referer", "retry-after", "server", "user-agent"
])

/**
 * An object with no prototype properties (`__proto__` or `constructor` from the app are headers
 * like any other) that V8 keeps in fast mode: Object.create(null) starts in dictionary mode, and
 * the record is read a dozen times per request (about 0.2 us a request less for six headers).
 */
const HeaderRecord = function HeaderRecord() {} as unknown as new () => Record<string, string | Array<string>>
HeaderRecord.prototype = Object.create(null)

/**
 * Lower-case names, repeated values joined as node:http joins them. A Host field given twice
 * leaves none in the record: the request names no target, and is refused 400 as one without Host
 * (RFC 9112 3.2 requires it; node:http kept the first, which a proxy in front may not have checked).
 */
const headerRecord = (raw: ReadonlyArray<string>): IncomingHttpHeaders => {
  const headers = new HeaderRecord()
  let hostRepeated = false
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    const value = raw[i + 1]!
    const prior = headers[name]
    if (prior === undefined) headers[name] = name === "set-cookie" ? [value] : value
    else if (name === "set-cookie") (prior as Array<string>).push(value)
    else if (!FIRST_WINS.has(name)) headers[name] = `${prior}${name === "cookie" ? "; " : ", "}${value}`
    else if (name === "host") hostRepeated = true
  }
  if (hostRepeated) headers["host"] = undefined as unknown as string
  return headers as IncomingHttpHeaders
}

let dateSecond = 0
let dateText = ""
/**
 * The Date header's value, formatted once a second. A wall time is meant here, so it follows a
 * wall clock step at once: one back (NTP, an operator, a VM resume) formats it again too, where
 * waiting for the next second would send the old time until the clock caught up with it.
 */
const httpDate = (): string => {
  const now = Date.now()
  if (now - dateSecond >= 1000 || now < dateSecond) {
    dateSecond = now - (now % 1000)
    dateText = new Date(dateSecond).toUTCString()
  }
  return dateText
}

const EMPTY = Buffer.alloc(0)

/**
 * Closes a connection whose answer may be unfinished. Once part of an answer went out, a FIN would
 * read as its end to a caller whose body runs to the close (HTTP/1.0, no length): a reset cannot
 * be taken for a success, whatever the framing.
 */
export const cut = (socket: net.Socket, answerBegun: boolean): void => {
  if (answerBegun) socket.resetAndDestroy()
  else socket.destroy()
}

/**
 * The last answer's head (status line and header lines, with our Date when the answer has none)
 * and what it was made of. The peer's answers repeat their status and headers answer after
 * answer (their pairs even shared while their text repeats, httpEnvelope.ts), so the lines are
 * built again only when a status, name or value differs, and the Date line once a second: the
 * head then goes out as the same flat string, not a dozen strings joined and flattened per answer.
 */
class AnswerHead {
  private status = 0
  private readonly fields: Array<string> = []
  private lines = ""
  private date = false
  hasLength = false
  private datedText = ""
  private datedHead = ""

  matches(status: number, headers: ReadonlyArray<readonly [string, string]>): boolean {
    return status === this.status && pairsMatchFlat(headers, this.fields)
  }

  build(status: number, headers: ReadonlyArray<readonly [string, string]>): void {
    let lines = `HTTP/1.1 ${status} ${nodeHttp.STATUS_CODES[status] ?? "Unknown"}\r\n`
    let date = false
    let hasLength = false
    const fields = this.fields
    fields.length = 0
    for (let i = 0; i < headers.length; i++) {
      const [name, value] = headers[i]!
      lines += `${name}: ${value}\r\n`
      fields.push(name, value)
      if (name.length === 14 && name.toLowerCase() === "content-length") hasLength = true
      else if (name.length === 4 && name.toLowerCase() === "date") date = true
    }
    this.status = status
    this.lines = lines
    this.date = date
    this.hasLength = hasLength
    this.datedText = ""
  }

  /** The head: the lines, and our Date line unless the answer has one (the same string while the second lasts). */
  dated(): string {
    if (this.date) return this.lines
    const date = httpDate()
    if (date !== this.datedText) {
      this.datedText = date
      this.datedHead = `${this.lines}date: ${date}\r\n`
    }
    return this.datedHead
  }
}

const lastAnswerHead = new AnswerHead()
/** The last kept-alive answer's whole head (finalHead), for the next answer with the same one. */
const lastKeptAlive = { head: "", tail: "", whole: "" }

/** Keeps the hidden class of Http1Call alive while idle (shapeAnchor.ts). */
const callShape = new ShapeAnchor<Http1Call>()

export class Http1Call implements OutboundCall {
  readonly method: string
  readonly url: string
  readonly httpVersionMajor: number
  readonly httpVersionMinor: number
  readonly rawHeaders: ReadonlyArray<string>
  readonly headers: IncomingHttpHeaders
  readonly hasBody: boolean
  /** Keep the connection after the answer (the client's wish; false once the answer needs the close). */
  keepAlive: boolean
  /** An Upgrade (or CONNECT) request: the connection hands its socket over at its turn. */
  readonly upgrade: boolean
  /** An upgrade's first bytes after its head. */
  upgradeHead: Buffer = EMPTY
  headersSent = false
  writableEnded = false
  destroyed = false
  private readonly connection: CallConnection
  // The body: held here until it is read; a reader that streams it gets a queue. The first chunk
  // (usually the whole body: it came with the head) in a field of its own, the rest in an array.
  private firstHeld: Buffer | undefined = undefined
  private moreHeld: Array<Buffer> | undefined = undefined
  private heldBytes = 0
  private bodyEnded: boolean
  private bodyFailure: RequestAborted | undefined = undefined
  private queue: PausingByteQueue | undefined = undefined
  /** The answer ended before the body: what is left of it is read and dropped. */
  private discarding = false
  /**
   * The caller sent `Expect: 100-continue` and waits for the 100 before its body: it goes when the
   * body is first wanted (the request routed: outbound.ts), not at the head (RFC 9110 10.1.1).
   */
  private continueOwed = false
  // The answer.
  private head = ""
  private hasLength = false
  headWritten = false
  private chunked = false
  private bodiless = false
  private closeListener: ((finished: boolean) => void) | undefined = undefined
  private over = false

  constructor(connection: CallConnection, method: string, url: string, major: number, minor: number, rawHeaders: ReadonlyArray<string>, keepAlive: boolean, upgrade: boolean) {
    callShape.newest = this
    this.connection = connection
    this.method = method
    this.url = url
    this.httpVersionMajor = major
    this.httpVersionMinor = minor
    this.rawHeaders = rawHeaders
    this.headers = headerRecord(rawHeaders)
    const length = this.headers["content-length"]
    this.hasBody = this.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0")
    this.bodyEnded = !this.hasBody
    this.keepAlive = keepAlive
    this.upgrade = upgrade
  }

  /**
   * Read as its exchange begins: at its turn on the connection, not at its head (a pipelined request
   * waits for the answers before it, which its duration leaves out, as it did).
   */
  get startedAt(): number {
    return performance.now()
  }

  get remoteAddress(): string {
    return this.connection.remoteAddress
  }

  /** A caller waits for its 100 Continue before sending its body (see continueOwed). */
  get awaitsContinue(): boolean {
    return this.continueOwed
  }

  /** The caller's head asked for 100-continue (HTTP/1.1): owed once its body is wanted, if it has one. */
  expectContinue(): void {
    this.continueOwed = this.hasBody
  }

  /** The body is wanted: a caller waiting for its 100 Continue gets it now (not once the answer began). */
  private invite(): void {
    if (!this.continueOwed || this.bodyEnded) return
    this.continueOwed = false
    if (!this.headWritten && !this.over) this.connection.socket.write("HTTP/1.1 100 Continue\r\n\r\n", "latin1")
  }

  // -- the request body, as the connection's parser hands it over

  pushBody(chunk: Buffer): void {
    if (this.discarding || this.bodyEnded) return
    if (this.queue !== undefined) return this.queue.push(chunk)
    if (this.firstHeld === undefined) this.firstHeld = chunk
    else (this.moreHeld ??= []).push(chunk)
    this.heldBytes += chunk.length
    if (this.heldBytes > BODY_HIGH_WATER) this.connection.holdBody(true)
  }

  endBody(): void {
    this.bodyEnded = true
    this.queue?.end()
  }

  failBody(): void {
    if (this.bodyEnded) return
    this.bodyEnded = true
    this.bodyFailure = new RequestAborted({ message: "the app closed its connection before the end of the request's body" })
    this.queue?.fail(this.bodyFailure)
  }

  /** The answer is over and the body is not: the rest is read and dropped (the connection may serve the next request). */
  private discardBody(): void {
    if (this.bodyEnded || this.discarding) return
    this.discarding = true
    this.firstHeld = undefined
    this.moreHeld = undefined
    this.queue?.drop()
    this.connection.holdBody(false)
  }

  body(): AsyncIterable<Buffer> {
    if (this.queue !== undefined) return this.queue
    const queue = new PausingByteQueue(BODY_HIGH_WATER, {
      pause: () => this.connection.holdBody(true),
      resumeIfPaused: () => this.connection.holdBody(false),
      wanted: () => this.invite()
    }, () => this.discardBody())
    this.queue = queue
    if (this.firstHeld !== undefined) queue.push(this.firstHeld)
    if (this.moreHeld !== undefined) for (const chunk of this.moreHeld) queue.push(chunk)
    this.firstHeld = undefined
    this.moreHeld = undefined
    if (this.bodyFailure !== undefined) queue.fail(this.bodyFailure)
    else if (this.bodyEnded) queue.end()
    return queue
  }

  readBody(limit: number): Promise<Buffer | undefined> {
    if (!this.hasBody) return Promise.resolve(EMPTY)
    if (this.bodyFailure !== undefined) return Promise.reject(this.bodyFailure)
    // A length past the limit (llhttp checked it is a number) is refused before its bytes come.
    if (Number(this.headers["content-length"]) > limit) return Promise.resolve(this.cutOff())
    // Usually the whole body came with the head: no queue, no waiting.
    if (this.bodyEnded && this.queue === undefined) {
      if (this.heldBytes > limit) return Promise.resolve(this.cutOff())
      return Promise.resolve(this.takeHeld())
    }
    return this.gather(limit)
  }

  /** The usual case on the request path (outbound.ts): a small body that came with its head, taken with no promise and no microtask. */
  bodyIfHere(limit: number): Buffer | undefined {
    if (!this.hasBody) return EMPTY
    if (!this.bodyEnded || this.bodyFailure !== undefined || this.queue !== undefined || this.heldBytes > limit) return undefined
    return this.takeHeld()
  }

  private takeHeld(): Buffer {
    const first = this.firstHeld
    const more = this.moreHeld
    this.firstHeld = undefined
    this.moreHeld = undefined
    if (first === undefined) return EMPTY
    return more === undefined ? first : Buffer.concat([first, ...more], this.heldBytes)
  }

  private async gather(limit: number): Promise<Buffer | undefined> {
    const parts: Array<Buffer> = []
    let total = 0
    for await (const chunk of this.body()) {
      total += chunk.length
      if (total > limit) return this.cutOff()
      parts.push(chunk)
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, total)
  }

  /**
   * The body is not wanted (past its limit, or too slow: outboundBody.ts): the rest of it is read and
   * dropped, and the answer (a 413, a 408) is the connection's last, with `connection: close` and the
   * lingering close (http1Connection.ts endAfterWrites): destroyed here, the caller's kernel got a
   * reset with its body still coming and dropped the answer (curl: "Empty reply from server").
   */
  stopBody(): void {
    this.keepAlive = false
    this.firstHeld = undefined
    this.moreHeld = undefined
    this.discardBody()
  }

  private cutOff(): undefined {
    this.stopBody()
    return undefined
  }

  // -- the answer

  onClose(listener: (finished: boolean) => void): void {
    this.closeListener = listener
  }

  writeHead(status: number, headers: ReadonlyArray<readonly [string, string]>): void {
    if (this.headWritten) return
    this.headersSent = true
    const last = lastAnswerHead
    if (!last.matches(status, headers)) last.build(status, headers)
    this.hasLength = last.hasLength
    this.head = last.dated()
    this.bodiless = this.method === "HEAD" || status === 204 || status === 304 || status < 200
  }

  /** The head as it goes out: its framing (for a body of `endLength` bytes ended at once, or -1: one that streams) and the connection's fate. */
  private finalHead(endLength: number): string {
    this.headWritten = true
    let head = this.head
    if (!this.hasLength && !this.bodiless) {
      if (endLength >= 0) head += `content-length: ${endLength}\r\n`
      else if (this.httpVersionMinor >= 1) {
        head += "transfer-encoding: chunked\r\n"
        this.chunked = true
      } // HTTP/1.0: the body runs to the close.
      else this.keepAlive = false
    }
    // Answered without the 100 its caller waits for: it may send its body yet or never, so what
    // comes next on the connection cannot be told apart; it ends (the lingering close drops the body).
    if (this.connection.closing || (this.continueOwed && !this.bodyEnded)) this.keepAlive = false
    if (!this.keepAlive) return `${head}connection: close\r\n\r\n`
    // The same head as the last answer's (AnswerHead): the same string, flat since its first write.
    if (head !== lastKeptAlive.head || this.connection.keepAliveTail !== lastKeptAlive.tail) {
      lastKeptAlive.head = head
      lastKeptAlive.tail = this.connection.keepAliveTail
      lastKeptAlive.whole = head + this.connection.keepAliveTail
    }
    return lastKeptAlive.whole
  }

  write(chunk: Uint8Array): boolean {
    if (this.over || this.writableEnded) return false
    if (!this.headersSent) this.writeHead(200, [])
    const head = this.headWritten ? "" : this.finalHead(-1)
    if (this.bodiless || chunk.length === 0) return head === "" || this.send(head, undefined, "")
    return this.chunked ? this.send(`${head}${chunk.length.toString(16)}\r\n`, chunk, "\r\n") : this.send(head, chunk, "")
  }

  drained(): Promise<void> {
    const socket = this.connection.socket
    if (this.over || !socket.writableNeedDrain) return Promise.resolve()
    return drainedOrClosed(socket)
  }

  /** Trailers go after a chunked body (one that streamed); an answer ended at once has a content-length and nowhere to put them. */
  end(data?: Uint8Array | string, trailers?: ReadonlyArray<readonly [string, string]>): void {
    if (this.over || this.writableEnded) return
    this.writableEnded = true
    const body = data === undefined || this.bodiless ? undefined : typeof data === "string" ? Buffer.from(data) : data
    if (!this.headersSent) this.writeHead(200, [])
    if (!this.headWritten) this.send(this.finalHead(body?.length ?? 0), body, "")
    else if (this.chunked) {
      // The pairs passed the header filter (endToEndPairs): names are tokens, values field values.
      let last = "0\r\n"
      if (trailers !== undefined) for (const [name, value] of trailers) last += `${name}: ${value}\r\n`
      last += "\r\n"
      this.send(body === undefined || body.length === 0 ? "" : `${body.length.toString(16)}\r\n`, body, body === undefined || body.length === 0 ? last : `\r\n${last}`)
    }
    else if (body !== undefined && body.length > 0) this.connection.socket.write(body)
    this.discardBody()
    this.close(true)
  }

  /** Part of the answer went out and its end did not: the connection can only be cut now. */
  get answering(): boolean {
    return this.headWritten && !this.over
  }

  destroy(): void {
    if (this.over) return
    this.destroyed = true
    cut(this.connection.socket, this.headWritten)
  }

  /** The exchange is over (once): answered whole, or cut off / the connection gone. */
  close(finished: boolean): void {
    if (this.over) return
    this.over = true
    if (!finished) {
      this.destroyed = true
      this.failBody()
    }
    this.connection.done(this)
    this.closeListener?.(finished)
  }

  /** `prefix`, `chunk` and `suffix` to the socket: one buffer when small (prefix and suffix are Latin-1, one byte a character). */
  private send(prefix: string, chunk: Uint8Array | undefined, suffix: string): boolean {
    const socket = this.connection.socket
    const size = chunk === undefined ? 0 : chunk.length
    if (size === 0) return socket.write(`${prefix}${suffix}`, "latin1")
    if (prefix.length + size + suffix.length <= ONE_WRITE_LIMIT) {
      const out = Buffer.allocUnsafe(prefix.length + size + suffix.length)
      out.write(prefix, 0, "latin1")
      out.set(chunk!, prefix.length)
      if (suffix.length > 0) out.write(suffix, prefix.length + size, "latin1")
      return socket.write(out)
    }
    socket.cork()
    if (prefix.length > 0) socket.write(prefix, "latin1")
    let flushed = socket.write(chunk!)
    if (suffix.length > 0) flushed = socket.write(suffix, "latin1")
    socket.uncork()
    return flushed
  }
}
