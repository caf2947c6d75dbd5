// The outbound listener: the local app's HTTP/1.1 connections, parsed by llhttp through node's own
// binding (strict, node's header size limit), each request handed to outbound.ts as an Http1Call
// (http1Call.ts). It replaces node:http's server on this hot path for its CPU (issue 14) and
// keeps what that server guaranteed:
// - a connection's first bytes tell HTTP/2 with prior knowledge (gRPC) apart: its preface hands
//   the socket to outboundH2.ts;
// - one request answered at a time, in order: a request pipelined behind one being answered waits,
//   and the connection is not read further until its turn;
// - llhttp's strict parsing (Transfer-Encoding with Content-Length, bad chunking... 400; a head
//   past the size limit 431, in its turn after the answers to the requests read before it); an
//   HTTP/1.1 request without Host (or with two) 400; a body in a coding besides chunked (gzip,
//   chunked) 501 and the close, as the mesh carries no transfer coding; `Expect: 100-continue` is
//   answered 100 once the request is routed and its body wanted (one refused before gets its final
//   status without it, and the close), any other expectation 417; more than node's 1,000 header
//   fields are dropped;
// - the head must come within the headers timeout, the whole request within the request timeout
//   (408, then the close); an idle keep-alive connection closes after its timeout;
// - at most `maxConnections` connections at once (h2c and upgraded ones counted too); past it a new
//   one is closed at once (node's own cap, `server.maxConnections`);
// - an answer past the socket's high-water mark holds the next request (and reading) until the
//   socket drains: a caller that pipelines and reads nothing gets no more answers to pile up in
//   memory, and is closed once it has taken none of one for the keep-alive timeout; across
//   connections, the bytes of the answers held so count in one budget (`maxHeldAnswerBytes`): past
//   it a new request is refused 503 overloaded before it is forwarded, so many slow readers, each
//   holding one large answer, cannot grow the process without end (h2c streams count their unsent
//   answers in it too, and are refused so: outboundH2.ts);
// - a request line in HTTP/0.9 or HTTP/2.0 (llhttp reads them; no other besides 1.0 and 1.1) is
//   answered 505 and closed, never routed;
// - HTTP/1.0 and `Connection: close` end the connection after the answer (HTTP/1.0 with a
//   Transfer-Encoding too, keep-alive or not: its framing is faulty, RFC 9112 6.1); HEAD gets no body;
// - Upgrade requests hand the socket to outboundUpgrade.ts (CONNECT is answered 400 bad_target and
//   closed); one that asks for h2c alone (curl --http2 on http://) is no upgrade here, as the mesh never switches to h2c: an
//   ordinary request, its body read as any other's (chunked or with a length: in another coding it
//   stays an upgrade, refused), and the last one read on its connection.
// Each connection is an http1Connection.ts Connection (its parsing, turns and timeouts); this module
// accepts them, sweeps their timeouts and closes them.
import * as net from "node:net"
import { Connection } from "./http1Connection.ts"
import type { OutboundCall, OutboundRequest } from "./outboundCall.ts"

/**
 * The listener's budget of answer bytes held unsent for callers that do not take them: HTTP/1.1
 * connections (http1Connection.ts) and h2c streams (outboundH2Call.ts) count in it; past it, new
 * requests of either are refused 503 overloaded. The listener is it.
 */
export interface HeldAnswerBudget {
  heldAnswerBytes: number
  refusedForHeldAnswers: number
  readonly maxHeldAnswerBytes: number
}

export interface Http1ListenerOptions {
  /** Node's header size limit (`http.maxHeaderSize`): a larger head is answered 431. */
  readonly maxHeaderSize: number
  /** From a request's first byte to the end of its head (a new connection's first bytes included). */
  readonly headersTimeoutMs: number
  /** From a request's first byte to the end of its body. */
  readonly requestTimeoutMs: number
  /** An idle keep-alive connection is closed after this (announced in `keep-alive: timeout=`). */
  readonly keepAliveTimeoutMs: number
  readonly onRequest: (call: OutboundCall) => void
  /** The socket is the callee's from now on; `head` is what came after the request's head. */
  readonly onUpgrade: (request: OutboundRequest, socket: net.Socket, head: Buffer) => void
  /** A connection that opened with the HTTP/2 preface, given back unread. */
  readonly onH2c: (socket: net.Socket) => void
  /** A connection's bytes after a request were no request (it ends with a 400 or 431 after the answers it is owed). */
  readonly onStray: () => void
  /** The bytes of answers all connections may hold unsent for callers that do not take them; past it new requests are refused. */
  readonly maxHeldAnswerBytes: number
  /**
   * Connections open at once, HTTP/1.1, h2c and upgraded ones together (node counts every socket
   * the server accepted until it closes); one past it is closed at once, unread.
   */
  readonly maxConnections: number
  /** A connection was closed for want of a place (to be counted and logged, throttled). */
  readonly onDropped?: () => void
}

export class Http1Listener {
  readonly server: net.Server
  readonly options: Http1ListenerOptions
  closing = false
  /** The end of every kept-alive answer's head (Http1Call.finalHead), built once. */
  readonly keepAliveTail: string
  private readonly connections = new Set<Connection>()
  /** Bytes of answers connections hold waiting for their callers to take them (each counted from its drain wait to its drain or close). */
  heldAnswerBytes = 0
  /** Requests refused while those were past maxHeldAnswerBytes (a counter reads it). */
  refusedForHeldAnswers = 0
  readonly maxHeldAnswerBytes: number
  /** Runs while there are connections: an idle listener wakes nothing (issue 14: a timer a second gets node's timer code compiled by TurboFan, +5 MB resident). */
  private sweeper: NodeJS.Timeout | undefined
  private readonly sweepMs: number

  constructor(options: Http1ListenerOptions) {
    this.options = options
    this.maxHeldAnswerBytes = options.maxHeldAnswerBytes
    this.keepAliveTail = `connection: keep-alive\r\nkeep-alive: timeout=${Math.floor(options.keepAliveTimeoutMs / 1000)}\r\n\r\n`
    // Half-open as node:http's server: an upgraded connection (outboundUpgrade.ts) may go on one way; HTTP/1.1 ends with the app's end (onEnd).
    this.server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      if (this.closing) return void socket.destroy()
      this.connections.add(new Connection(this, socket, performance.now()))
      if (this.sweeper === undefined) {
        this.sweeper = setInterval(() => this.sweep(), this.sweepMs)
        this.sweeper.unref()
      }
    })
    // The apps (any process in the pod reaches the port) could otherwise hold every descriptor the
    // process has, and the inbound side could accept no peer nor dial any endpoint.
    this.server.maxConnections = options.maxConnections
    this.server.on("drop", () => options.onDropped?.())
    const shortest = Math.min(options.headersTimeoutMs, options.requestTimeoutMs, options.keepAliveTimeoutMs)
    this.sweepMs = Math.max(10, Math.min(1000, shortest / 4))
  }

  forget(connection: Connection): void {
    this.connections.delete(connection)
    if (this.connections.size === 0) this.stopSweeping()
  }

  private stopSweeping(): void {
    clearInterval(this.sweeper)
    this.sweeper = undefined
  }

  private sweep(): void {
    const now = performance.now()
    for (const connection of this.connections) connection.checkTimeouts(now)
  }

  /** Connections open: asking or answering, or (once the listener closed) writing their last answer out. */
  get openConnections(): number {
    return this.connections.size
  }

  /** Takes no new connection; idle ones close now (once their last answer is out), the others after the answer they are giving. */
  close(): void {
    this.closing = true
    this.server.close()
    for (const connection of this.connections) if (connection.idle) connection.closeIdle()
  }

  /** Closes every connection now. */
  destroyAll(): void {
    this.stopSweeping()
    for (const connection of this.connections) connection.destroy()
    this.connections.clear()
  }
}
