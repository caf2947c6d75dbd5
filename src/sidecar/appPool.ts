// The inbound side's keep-alive HTTP/1.1 client to the local app, under appExchange.ts: at most
// `size` sockets, requests past that wait in order for one; each socket carries one exchange at a
// time (no pipelining). Answers are parsed by llhttp through node's own binding (the `HTTPParser`
// node:http uses), strict: no lenient flag, node's header size limit. It replaces undici's Pool on
// the hot path for its CPU (issue 14): one head string and one write per request, the answer's
// headers as llhttp's flat list, no request objects or queues of closures.
//
// What undici gave us stays: a head that cannot be written as it is (a name that is not a token, a
// value with CR, LF or NUL) is refused before a byte is sent (`InvalidRequestHead`); a refused
// connection keeps the socket error's code (ECONNREFUSED: the app never saw the request); a
// socket is reused only after a whole exchange that both sides keep alive, and is closed while
// idle 2 s before the app's announced keep-alive timeout (4 s without one), so a reused socket is
// rarely one the app is closing; once the sidecar has gone quiet its memory release closes all
// idle ones but the most recently used (closeIdle). Bytes the app sends with no request waiting end the socket, and
// so do bytes after an answer in the read that ended it (a second answer begun): kept, the rest of
// it would come as the answer to the socket's next request (a desync). Both are counted (onStray).
// The request head, its check and its cached lines, are appRequestHead.ts.
//
// Event streams (a GET accepting text/event-stream: an EventSource) hold a socket for their whole
// life: at most half the sockets, counted from dispatch to their end; past that one is refused at
// once (EventStreamsFull) and the other requests keep the rest. Without it 256 of them took the
// shipped pool and every other request to the app waited for its deadline. A request nothing in
// whose head says it will last (a POST, a GET without accept) is one too once its answer head says
// text/event-stream: counted from then, and past the share closed there (the app saw it: refused
// as processed), else such streams took every socket outside the share.
//
// Each peer (a calling sidecar, poolPeers.ts) has a share of the sockets too (peerShare.ts): the
// sockets over the peers wanting them, at least one; a freed socket goes first to a waiting request
// of a peer under its share, and while one waits, a socket held past its peer's share by an answer
// stalled on its reader (unread for a second, or read under READER_FLOOR a second) is taken back
// (PoolShareReclaimed, overloaded). Without it one peer stalling more answers than the pool has
// sockets, or two holding half each, left every other peer's requests waiting for their deadline.
import * as net from "node:net"
import { type AppPoolRequest, EXPECTS_PAYLOAD, writeHead } from "./appRequestHead.ts"
import { drainedOrClosed } from "./drained.ts"
import { acceptsEventStream, isAcceptName, isContentTypeName, isEventStreamType } from "./eventStream.ts"
import { closeParserSoon, HTTPParser, type LlhttpParser } from "./llhttp.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"
import type { PoolPeer } from "./poolPeers.ts"
import { PeerShare, SEAT_NONE, STALLED_READER, type Seat, type ShareLeg } from "./peerShare.ts"

/** Until the app accepts the connection. */
const CONNECT_TIMEOUT_MS = 10_000
/** An idle socket is closed after this long when the app announced no keep-alive timeout of its own. */
const DEFAULT_IDLE_MS = 4_000
/** Taken off the app's announced keep-alive timeout: the socket closes on our side first. */
const IDLE_MARGIN_MS = 2_000
const MAX_IDLE_MS = 600_000
/**
 * Interim (1xx) answers taken before an exchange's final one (Go's client takes 5): each is held to
 * the header size limit, but an app could otherwise send them for as long as the deadline lasts.
 */
const MAX_INTERIM_ANSWERS = 5
/** What one socket read may bring (libuv's own read size). */
const READ_BUFFER_SIZE = 64 * 1024
/**
 * Every app socket reads into this one buffer (net's `onread`): a read is parsed before the next
 * can happen, and llhttp copies what outlives it (header strings, body chunks), so no read holds
 * the buffer. It spares each read its own ArrayBuffer and the socket's Readable stream (its push,
 * its 'data' event and the next tick it schedules to read more): about a microsecond a request.
 */
let sharedReadBuffer: Buffer | undefined

/** The app's socket failed or closed mid-exchange; `code` is the socket's own when it has one. */
export class AppSocketError extends Error {
  readonly code: string
  constructor(message: string, code: string) {
    super(message)
    this.code = code
  }
}

/** An event stream refused: the pool's share for them is held; nothing was sent, or (`processed`) its answer head said it was one and it was closed there. */
export class EventStreamsFull extends Error {
  readonly code = "EVENT_STREAMS_FULL"
  readonly processed: boolean
  constructor(message: string, processed: boolean) {
    super(message)
    this.processed = processed
  }
}

/**
 * A GET whose `accept` names text/event-stream (flat name, value list), in any of its accept lines
 * (A forwards them as they came, and takes them joined: its answer and ours must agree): it will
 * hold its socket as long as it lives.
 */
const isEventStream = (request: AppPoolRequest): boolean => {
  if (request.method !== "GET") return false
  const headers = request.headers
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!
    if (isAcceptName(name) && acceptsEventStream(headers[i + 1]!)) return true
  }
  return false
}

/** An exchange ended to give its socket to another peer's waiting request: its peer held past its share, its answer stalled on its reader (processed). */
export class PoolShareReclaimed extends Error {
  readonly code = "POOL_SHARE_RECLAIMED"
}

/** The exchange's handle, handed to the handler first. */
export interface AppController {
  readonly paused: boolean
  /** Stops reading the answer (the socket pauses) until resume(). */
  pause(): void
  resume(): void
  /** Ends the exchange where it is; its socket is closed (never reused). */
  abort(reason: Error): void
}

export interface AppPoolHandler {
  onRequestStart(controller: AppController): void
  /** `headers` is llhttp's flat name, value list; `contentLength` the value of that header, if any (llhttp holds the body to it). */
  onResponseStart(controller: AppController, status: number, headers: ReadonlyArray<string>, contentLength: string | undefined): void
  onResponseData(controller: AppController, chunk: Buffer): void
  /** `trailers`: those of a chunked answer, as llhttp's flat name, value list (empty for none). */
  onResponseEnd(controller: AppController, trailers: ReadonlyArray<string>): void
  /** Once at most, and never after onResponseEnd. */
  onResponseError(controller: AppController, error: Error): void
}

/** Keeps the hidden class of Exchange alive while idle (shapeAnchor.ts). */
const exchangeShape = new ShapeAnchor<Exchange>()

/** One request, from dispatch to its end: the controller the handler holds. */
class Exchange implements AppController {
  readonly request: AppPoolRequest
  readonly handler: AppPoolHandler
  /** The request head, framing included, ready to write; for a chunked body, all but its framing. */
  head = ""
  /** A whole body up to ONE_WRITE_LIMIT: head and body as they go on the wire, in one buffer. */
  wire: Buffer | undefined = undefined
  /** A streamed body without a declared length goes chunked. */
  chunked = false
  connection: Connection | undefined = undefined
  ended = false
  /** Counted among `pool`'s event streams until it ends (`over`). */
  eventStream = false
  pool: AppPool | undefined = undefined
  /** Whom it counts under (undefined: nobody's share, as a request the pool is given directly: it waits in order, and neither passes nor takes back). */
  readonly peer: PoolPeer | undefined
  /** Counted among its peer's waiting requests or held sockets, until it ends (`over`). */
  seat: Seat = SEAT_NONE
  paused = false
  /** When it last paused (performance.now()): an answer paused since long enough is stalled. */
  pausedAt = 0
  /** Bytes of its answer's body read so far; what the share's last look noted of it, and which look (peerShare.ts). */
  taken = 0
  takenNoted = 0
  lookNoted = 0
  /** Its place among the pool's waiting requests while it waits (emptied when its peer's line gives it a socket first). */
  slot = -1
  /** Interim (1xx) answers passed over so far. */
  interims = 0

  constructor(request: AppPoolRequest, handler: AppPoolHandler, peer: PoolPeer | undefined) {
    exchangeShape.newest = this
    this.request = request
    this.handler = handler
    this.peer = peer
  }

  pause(): void {
    if (!this.paused) this.pausedAt = performance.now()
    this.paused = true
    this.connection?.socket.pause()
  }

  resume(): void {
    this.paused = false
    this.connection?.socket.resume()
  }

  abort(reason: Error): void {
    if (this.ended) return
    const connection = this.connection
    if (connection === undefined) this.end(reason)
    else connection.fail(reason)
  }

  /** The exchange is over: with `error`, the handler hears of it (once). */
  end(error: Error | undefined): void {
    if (this.ended) return
    this.over()
    if (error !== undefined) this.handler.onResponseError(this, error)
  }

  /** Ended, its place among the pool's event streams and in its peer's counts given back. */
  over(): void {
    this.ended = true
    if (this.seat !== SEAT_NONE) this.pool!.peers.leave(this)
    if (this.eventStream) {
      this.eventStream = false
      this.pool!.eventStreams--
    }
  }
}

/**
 * A trailer among flat name, value pairs that llhttp reads as it would in the head, so that its
 * keep-alive verdict at the answer's end can differ from the head's (node's binding reports only
 * the head's): Connection and Proxy-Connection (`close`), and Transfer-Encoding (not ending in
 * `chunked`, the answer becomes one read to the close). Content-Length there is a parse error.
 */
const trailerEndsKeepAlive = (fields: ReadonlyArray<string>): boolean => {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!
    // By length first, as for the head's fields: no lower-cased copy of every other trailer's name.
    if (name.length === 10 && name.toLowerCase() === "connection") return true
    if (name.length === 16 && name.toLowerCase() === "proxy-connection") return true
    if (name.length === 17 && name.toLowerCase() === "transfer-encoding") return true
  }
  return false
}

/** Keeps the hidden class of Connection alive while idle (shapeAnchor.ts). */
const connectionShape = new ShapeAnchor<Connection>()

/** One keep-alive socket to the app and its parser. */
class Connection {
  readonly socket: net.Socket
  private readonly pool: AppPool
  private readonly parser: LlhttpParser
  private current: Exchange | undefined = undefined
  /** The current exchange's answer is complete (the handler was told): the socket is released after this read. */
  private completed = false
  private keepAlive = false
  private idleMs = DEFAULT_IDLE_MS
  /** The request is still being written (a streamed body). */
  private writing = false
  private connected = false
  private closed = false
  /**
   * One timer per socket, armed when it first goes idle and left running while it is busy: when it
   * fires it closes the socket if idle long enough, else waits for the rest (or disarms if busy), so
   * an exchange costs no timer of its own.
   */
  private idleTimer: NodeJS.Timeout | undefined = undefined
  /** When the socket last went idle (performance.now()); -1 while it carries an exchange. */
  private idleSince = -1
  private lastKeepAlive: string | undefined = undefined
  private lastIdleMs = DEFAULT_IDLE_MS
  /** The message llhttp is parsing is an interim (1xx) answer: its end is not the exchange's. */
  private interim = false
  /** Headers llhttp handed over before the head was complete (a long head, or one split across reads). */
  private pendingHeaders: Array<string> = []
  /** A message began after the exchange's answer, within the read that ended it (onStrayBegin). */
  private strayBegun = false

  constructor(pool: AppPool, exchange: Exchange) {
    connectionShape.newest = this
    this.pool = pool
    this.parser = new HTTPParser()
    this.parser.initialize(HTTPParser.RESPONSE, {}, nodeHttp.maxHeaderSize, HTTPParser.kLenientNone)
    this.parser[HTTPParser.kOnHeaders] = (headers: Array<string>) => {
      for (const one of headers) this.pendingHeaders.push(one)
    }
    this.parser[HTTPParser.kOnHeadersComplete] = this.onHeadersComplete.bind(this)
    this.parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
      const exchange = this.current
      if (exchange === undefined || exchange.ended) return
      exchange.taken += chunk.length
      exchange.handler.onResponseData(exchange, chunk)
    }
    this.parser[HTTPParser.kOnMessageComplete] = () => {
      if (this.interim) {
        this.interim = false
        return
      }
      // The exchange ends now: whatever follows in the same read is no part of its answer. A message
      // begun after it on a socket to be reused is heard of until the read is parsed (afterParse
      // disarms it), so the begin callback costs nothing per answer: node's binding calls it only
      // when it is a function. A socket that closes after this answer needs no such watch.
      this.completed = true
      // A chunked answer's trailers: llhttp hands them over as headers, just before this.
      const trailers = this.pendingHeaders
      this.pendingHeaders = []
      // llhttp may end the connection at such a trailer (every later byte is HPE_CLOSED_CONNECTION),
      // so a socket kept after it would fail the next exchange, another caller's. These fields are
      // forbidden in trailers (RFC 9110 §6.5.1): the socket is not kept, whatever their values.
      if (trailers.length > 0 && this.keepAlive && trailerEndsKeepAlive(trailers)) this.keepAlive = false
      if (this.keepAlive) this.parser[HTTPParser.kOnMessageBegin] = this.onStrayBegin
      const exchange = this.current
      if (exchange !== undefined && !exchange.ended) {
        exchange.over()
        exchange.handler.onResponseEnd(exchange, trailers)
      }
    }
    const socket = net.connect({
      host: pool.host,
      port: pool.port,
      noDelay: true,
      onread: { buffer: (sharedReadBuffer ??= Buffer.allocUnsafe(READ_BUFFER_SIZE)), callback: this.onRead }
    })
    this.socket = socket
    socket.setTimeout(CONNECT_TIMEOUT_MS)
    socket.on("timeout", () => {
      if (!this.connected) this.fail(new AppSocketError(`no connection within ${CONNECT_TIMEOUT_MS} ms`, "ETIMEDOUT"))
    })
    socket.once("connect", () => {
      this.connected = true
      socket.setTimeout(0)
    })
    socket.on("end", () => this.onEnd())
    socket.on("error", (error: NodeJS.ErrnoException) => this.fail(new AppSocketError(error.message, error.code ?? "ECONNRESET")))
    socket.on("close", () => this.fail(new AppSocketError("the app closed the connection", "ECONNRESET")))
    this.run(exchange)
  }

  /** The exchange it carries now, if any. */
  get exchange(): Exchange | undefined {
    return this.current
  }

  /** Takes the next exchange (the socket is idle and alive). */
  run(exchange: Exchange): void {
    this.idleSince = -1
    this.current = exchange
    this.completed = false
    exchange.connection = this
    if (exchange.paused) this.socket.pause()
    const { request, head } = exchange
    const body = request.body
    if (body instanceof Buffer) {
      // writeHead put the head and (up to ONE_WRITE_LIMIT) the body in one buffer: one write.
      const wire = exchange.wire
      if (wire !== undefined) {
        exchange.wire = undefined
        this.socket.write(wire)
      } else {
        this.socket.cork()
        this.socket.write(head, "latin1")
        this.socket.write(body)
        this.socket.uncork()
      }
    } else {
      if (!exchange.chunked) this.socket.write(head, "latin1")
      this.writing = true
      this.writeBody(exchange, body as AsyncIterable<Buffer>, exchange.chunked).catch((error: unknown) => this.fail(error instanceof Error ? error : new Error(String(error))))
    }
  }

  /** Writes a streamed body as it is pulled, waiting for the socket to drain; stops when the exchange ends. */
  private async writeBody(exchange: Exchange, body: AsyncIterable<Buffer>, chunked: boolean): Promise<void> {
    const socket = this.socket
    let head = chunked ? `${exchange.head}transfer-encoding: chunked\r\n\r\n` : ""
    for await (const chunk of body) {
      if (exchange.ended || this.closed) return
      if (chunk.length === 0) continue
      let flushed: boolean
      if (chunked) {
        socket.cork()
        socket.write(`${head}${chunk.length.toString(16)}\r\n`, "latin1")
        socket.write(chunk)
        flushed = socket.write("\r\n", "latin1")
        socket.uncork()
        head = ""
      } else flushed = socket.write(chunk)
      if (!flushed) await drainedOrClosed(this.socket)
      if (exchange.ended || this.closed) return
    }
    if (exchange.ended || this.closed) return
    // Not a byte came: the request goes without a body (declared empty where the method expects one).
    if (head !== "") socket.write(`${exchange.head}${EXPECTS_PAYLOAD.has(exchange.request.method) ? "content-length: 0\r\n" : ""}\r\n`, "latin1")
    else if (chunked) socket.write("0\r\n\r\n", "latin1")
    this.writing = false
  }

  private onHeadersComplete(
    _major: number,
    _minor: number,
    headers: Array<string> | undefined,
    _method: unknown,
    _url: unknown,
    status: number,
    _statusMessage: unknown,
    upgrade: boolean,
    shouldKeepAlive: boolean
  ): number {
    const exchange = this.current
    let raw = headers ?? []
    if (this.pendingHeaders.length > 0) {
      raw = this.pendingHeaders.concat(raw)
      this.pendingHeaders = []
    }
    if (exchange === undefined || exchange.ended || this.completed) {
      // An answer nobody asked for: the socket cannot be trusted any more.
      this.stray()
      return 2
    }
    // 100 Continue, 103 Early Hints: RFC 9110 §15.2 has a client parse any number of them before the
    // final answer, and lets it drop them; the mesh carries none. A 101 is final (the handler refuses it).
    if (status < 200 && status !== 101) {
      if (++exchange.interims > MAX_INTERIM_ANSWERS) {
        this.fail(new AppSocketError(`the app sent more than ${MAX_INTERIM_ANSWERS} interim (1xx) answers`, "TOO_MANY_INTERIM_ANSWERS"))
        return 2
      }
      this.interim = true
      return 1
    }
    let contentLength: string | undefined
    let chunked = false
    let idleMs = DEFAULT_IDLE_MS
    let eventStream = false
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!
      if (name.length === 14 && name.toLowerCase() === "content-length") contentLength = raw[i + 1]
      else if (isContentTypeName(name)) eventStream = isEventStreamType(raw[i + 1]!)
      else if (name.length === 17 && name.toLowerCase() === "transfer-encoding") {
        // The mesh carries the body decoded of its framing only: any other coding (gzip, chunked)
        // would reach the caller as plain bytes, its header dropped as hop-by-hop (nginx refuses it too).
        const value = raw[i + 1]!
        if (value.length !== 7 || value.toLowerCase() !== "chunked") {
          this.fail(new AppSocketError(`the app's answer has a transfer coding other than chunked: ${JSON.stringify(value.slice(0, 64))}`, "UNSUPPORTED_TRANSFER_CODING"))
          return 2
        }
        chunked = true
      } else if (name.length === 10 && name.toLowerCase() === "keep-alive") idleMs = this.announcedIdleMs(raw[i + 1]!)
    }
    // A 204 or 304 that frames a body may have sent one, which would read as the next answer (undici's rule).
    const framesBody = (status === 204 || status === 304) && (chunked || (contentLength !== undefined && contentLength !== "0"))
    this.keepAlive = shouldKeepAlive && !upgrade && status >= 200 && idleMs > 0 && !framesBody
    this.idleMs = idleMs
    // An event stream its request did not announce: in the share from now. Not an answer with no
    // body to last (a HEAD's, a 204, a 304) nor one of a stated length: over soon, it holds nothing.
    if (eventStream && !exchange.eventStream && contentLength === undefined && status !== 204 && status !== 304 && exchange.request.method !== "HEAD") {
      const refused = this.pool.admitEventStream(exchange, true)
      if (refused !== undefined) {
        this.fail(refused)
        return 2
      }
    }
    exchange.handler.onResponseStart(exchange, status, raw, contentLength)
    // The handler gives up on a status outside 200-599 (it aborts: this socket is gone).
    if (upgrade || exchange.ended) return 2
    return exchange.request.method === "HEAD" ? 1 : 0
  }

  /** The app's keep-alive value is the same on every answer: its regex runs once per value, not per answer. */
  private announcedIdleMs(value: string): number {
    if (value !== this.lastKeepAlive) {
      this.lastKeepAlive = value
      this.lastIdleMs = announcedIdleMs(value)
    }
    return this.lastIdleMs
  }

  /** A read into the shared buffer (true: go on reading; pausing is the exchange's, through the socket). */
  private readonly onRead = (bytes: number, buffer: Uint8Array): boolean => {
    this.onData((buffer as Buffer).subarray(0, bytes))
    return true
  }

  private onData(data: Buffer): void {
    if (this.closed) return
    if (this.current === undefined) return this.stray()
    const result = this.parser.execute(data)
    // Past the answer's end, what llhttp refused was no part of it.
    if (result instanceof Error) return this.completed ? this.stray() : this.fail(parseError(result))
    this.afterParse()
  }

  /** llhttp began a message after the exchange's answer ended, in the same read (armed only then). */
  private readonly onStrayBegin = (): void => {
    this.strayBegun = true
  }

  /**
   * Bytes no exchange asked for: the socket closes (the exchange they followed, if any, is over) and
   * the pool counts it. After an answer whose socket is not kept (\`connection: close\`, a 204 or 304
   * that frames a body, which may follow it) they could never be a later exchange's: the socket
   * closes as it would have anyway, not counted.
   */
  private stray(): void {
    if (this.closed) return
    if (this.completed && !this.keepAlive) return this.fail(undefined)
    this.fail(new AppSocketError("the app sent bytes with no request waiting", "UNSOLICITED_RESPONSE"))
    this.pool.onStray()
  }

  private onEnd(): void {
    if (this.closed) return
    // An answer that runs to the end of the connection ends here.
    if (this.current !== undefined && !this.completed) {
      const result = this.parser.finish()
      if (result instanceof Error) return this.fail(parseError(result))
      this.keepAlive = false
      this.afterParse()
    }
    this.fail(new AppSocketError("the app closed the connection", "ECONNRESET"))
  }

  private afterParse(): void {
    if (!this.completed || this.closed) return
    this.parser[HTTPParser.kOnMessageBegin] = undefined
    if (this.strayBegun) return this.stray()
    // Answered before the body was all sent: what is left of it cannot go on this socket.
    if (this.writing) return this.fail(undefined)
    this.release()
  }

  /** The exchange is done: the socket goes back to the pool, or closes. */
  private release(): void {
    const exchange = this.current
    this.current = undefined
    this.completed = false
    if (exchange !== undefined) {
      // Its reader may still pause or resume it (a streamed answer read after its end): that no
      // longer touches this socket, which the next exchange may hold.
      exchange.connection = undefined
      if (exchange.paused) this.socket.resume()
    }
    if (!this.keepAlive || this.closed) return this.fail(undefined)
    this.pool.released(this)
  }

  /** Waits idle in the pool until taken or the idle timeout. */
  idle(): void {
    this.idleSince = performance.now()
    if (this.idleTimer === undefined) this.idleTimer = setTimeout(this.onIdleTimer, this.idleMs)
  }

  private readonly onIdleTimer = (): void => {
    this.idleTimer = undefined
    if (this.closed || this.idleSince < 0) return
    const left = this.idleSince + this.idleMs - performance.now()
    if (left <= 0) return this.fail(undefined)
    this.idleTimer = setTimeout(this.onIdleTimer, left)
  }

  /** Closes the socket (never reused); the current exchange, if any and not over, ends with `error`. */
  fail(error: Error | undefined): void {
    const exchange = this.current
    this.current = undefined
    if (exchange !== undefined && !exchange.ended) exchange.end(error ?? new AppSocketError("the app connection closed", "ECONNRESET"))
    if (this.closed) return
    this.closed = true
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    this.socket.destroy()
    closeParserSoon(this.parser)
    this.pool.closed(this)
  }
}

/** `timeout=N` (seconds) of a keep-alive header, less our margin, in ms; 0: do not reuse the socket. */
const announcedIdleMs = (value: string): number => {
  const match = /(?:^|[,;\s])timeout\s*=\s*(\d{1,9})/i.exec(value)
  if (match === null) return DEFAULT_IDLE_MS
  return Math.max(0, Math.min(Number(match[1]) * 1000 - IDLE_MARGIN_MS, MAX_IDLE_MS))
}

/** llhttp's error (`code` HPE_..., `reason` what it met), as the exchange's. */
const parseError = (error: Error): AppSocketError => {
  const { code, reason } = error as { code?: unknown; reason?: unknown }
  const named = typeof code === "string" ? code : "HPE_INVALID"
  return new AppSocketError(`the app's answer is not valid HTTP/1.1: ${typeof reason === "string" ? reason : error.message} (${named})`, named)
}

/** At most `size` keep-alive sockets to one app; requests past that wait in order; event streams take half at most; each peer a share of them while others wait (peerShare.ts). */
export class AppPool implements ShareLeg<Exchange> {
  readonly host: string
  readonly port: number
  /** The Host header of a request that names none. */
  readonly authority: string
  private readonly size: number
  /** Event streams admitted at once (waiting or on a socket): half the sockets, at least one. */
  readonly maxEventStreams: number
  /** Event streams admitted now. */
  eventStreams = 0
  /** Event streams refused so far, past `maxEventStreams` (a metric's). */
  eventStreamsRefused = 0
  /** The sockets as the peers share them, and the requests waiting for one, in order. */
  readonly peers: PeerShare<Exchange>
  /** A socket closed for bytes no exchange asked for (the sidecar's metric). */
  readonly onStray: () => void
  /** Sockets were taken back from `peer` (`count` at one look), which held `held` of them. */
  private readonly onReclaimed: (peer: string, count: number, held: number) => void
  private readonly connections = new Set<Connection>()
  private readonly idleSockets: Array<Connection> = []
  private destroyed = false

  constructor(host: string, port: number, size: number, onStray: () => void = () => {}, onReclaimed: (peer: string, count: number, held: number) => void = () => {}) {
    this.host = host
    this.port = port
    this.size = size
    this.maxEventStreams = Math.max(1, Math.floor(size / 2))
    this.peers = new PeerShare(size, this)
    this.onStray = onStray
    this.onReclaimed = onReclaimed
    this.authority = `${host.includes(":") ? `[${host}]` : host}:${port}`
  }

  /** Sockets one peer holds before its waiting requests yield to those of peers under theirs (peerShare.ts). */
  get share(): number {
    return this.peers.share
  }

  /** Requests waiting for a socket now (a gauge's). */
  get waitingCount(): number {
    return this.peers.waitingCount
  }

  /** Freed sockets given to a peer under its share ahead of an older request of a peer at its share (a metric's). */
  get sharePassed(): number {
    return this.peers.sharePassed
  }

  /** Exchanges ended to take their socket back: held past their peer's share, stalled (a metric's). */
  get shareReclaimed(): number {
    return this.peers.shareReclaimed
  }

  /** `peer`: whose share the request counts in (inbound.ts: poolPeers.ts); none, nobody's. */
  dispatch(request: AppPoolRequest, handler: AppPoolHandler, peer?: PoolPeer): void {
    const exchange = new Exchange(request, handler, peer)
    exchange.pool = this
    handler.onRequestStart(exchange)
    if (exchange.ended) return
    const invalid = writeHead(exchange, this.authority)
    if (invalid !== undefined) return exchange.end(invalid)
    if (this.destroyed) return exchange.end(new AppSocketError("the app pool is closed", "POOL_CLOSED"))
    if (isEventStream(request)) {
      const refused = this.admitEventStream(exchange, false)
      if (refused !== undefined) return exchange.end(refused)
    }
    // A free socket goes to whoever asks: nobody waits while there is one.
    const idle = this.idleSockets.pop()
    if (idle !== undefined) {
      this.peers.hold(exchange)
      return idle.run(exchange)
    }
    if (this.connections.size < this.size) {
      this.peers.hold(exchange)
      return void this.connections.add(new Connection(this, exchange))
    }
    this.peers.wait(exchange)
  }

  /**
   * Counts `exchange` among the event streams until it ends, or refuses it (counted) past the share:
   * at dispatch, nothing sent; or once its answer head says text/event-stream (`answered`), processed.
   */
  admitEventStream(exchange: Exchange, answered: boolean): EventStreamsFull | undefined {
    if (this.eventStreams >= this.maxEventStreams) {
      this.eventStreamsRefused++
      const held = `${this.eventStreams} event streams to the app at ${this.authority} hold half its ${this.size} pool sockets (--app-pool-size), the most they may`
      return new EventStreamsFull(answered ? `the app answered a ${exchange.request.method} with an event stream, closed: ${held}` : held, answered)
    }
    this.eventStreams++
    exchange.eventStream = true
    return undefined
  }

  /** A socket finished its exchange and stays open: the next waiting request takes it, else it idles. */
  released(connection: Connection): void {
    const next = this.peers.next()
    if (next !== undefined) return connection.run(next)
    this.idleSockets.push(connection)
    connection.idle()
  }

  /**
   * Closes the idle sockets but the `keep` most recently used; how many it closed. The memory
   * release calls it (memoryRelease.ts, through the sidecar) once the sidecar has been quiet:
   * sockets a burst opened would otherwise stay idle until the app's keep-alive timeout (58 s
   * behind a node app's announced 60 s), each with its parser and socket state (64 of them after a
   * 64-connection burst held about 0.7 MB of B's RSS 10 s after it, bench/sidecar). Idle sockets
   * are taken most recent first, so those at the bottom are the ones no request needed longest.
   */
  closeIdle(keep: number): number {
    const surplus = this.idleSockets.slice(0, Math.max(0, this.idleSockets.length - keep))
    for (const connection of surplus) connection.fail(undefined)
    return surplus.length
  }

  /** A socket closed: a waiting request gets a new one in its place. */
  closed(connection: Connection): void {
    this.connections.delete(connection)
    const at = this.idleSockets.indexOf(connection)
    if (at !== -1) this.idleSockets.splice(at, 1)
    if (this.destroyed) return
    const next = this.peers.next()
    if (next !== undefined) this.connections.add(new Connection(this, next))
  }

  /** The share's look for sockets to take back: the exchanges on them (a copy: a socket closed there is replaced in the set by the one its waiting request opens). */
  holders(): Array<Exchange | undefined> {
    return Array.from(this.connections, (connection) => connection.exchange)
  }

  takeBack(exchange: Exchange, held: number): void {
    exchange.abort(new PoolShareReclaimed(`its socket to the app at ${this.authority} was taken back for another peer's waiting request: ${held} of the ${this.size} pool sockets (--app-pool-size) held by ${exchange.peer!.key}, past its share of ${this.peers.share}, and ${STALLED_READER}`))
  }

  reclaimed(peer: string, count: number, held: number): void {
    this.onReclaimed(peer, count, held)
  }

  /** Closes every socket; requests still waiting end with an error. */
  destroy(): Promise<void> {
    this.destroyed = true
    this.peers.stop()
    for (let next = this.peers.next(); next !== undefined; next = this.peers.next()) next.end(new AppSocketError("the app pool is closed", "POOL_CLOSED"))
    for (const connection of [...this.connections]) connection.fail(new AppSocketError("the app pool is closed", "POOL_CLOSED"))
    return Promise.resolve()
  }
}
