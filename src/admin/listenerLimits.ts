// Connection limits of the two admin listeners (adminServer.ts applies them to each): a deadline
// for every request, head and body, caps on connections, per listener and per client address (an
// IPv6 client's prefix: --ipv6-source-prefix, a /64 by default), and on the requests a connection pipelines.
// The read-only listener is on the pod address, open to anyone who reaches the pod: node's defaults
// (60 s for a head, 300 s for a whole request, checked every 30 s, no cap) let a client keep as many
// sockets open as it likes, and every one is a file descriptor of the sidecar's process, which the
// data plane's accepts and connects need too. The admin's requests are small (a weight body is at
// most 1 KiB), so a short deadline costs honest clients nothing; the per-address cap keeps one
// client from taking every place, and at either cap a newcomer evicts the connection idle longest,
// so idle connections from many addresses cannot keep the kubelet's probes and Prometheus out.
import type * as http from "node:http"
import type * as net from "node:net"
import { IPV6_SOURCE_PREFIX, sourceKeyOf } from "../iip/sourceKey.ts"

export const ADMIN_LIMITS = {
  /** A request's head must come whole within this... */
  headersTimeoutMs: 5_000,
  /** ...and the whole request, its body included. Answers (a /tap stream) are not bounded by it. */
  requestTimeoutMs: 5_000,
  /** How often node looks for requests past their deadline. */
  connectionsCheckIntervalMs: 1_000,
  /** An answer written whole must be taken by its client within this, or its connection is destroyed (capConnections). */
  answerTimeoutMs: 5_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: 5_000,
  /** Connections a listener holds at once; past it a new one evicts the connection idle longest (capConnections). Fewer under a low open-file limit (src/sidecar/fileLimit.ts). */
  maxConnections: 256,
  /** Connections one client address (an IPv6 one's prefix, a /64 unless --ipv6-source-prefix says otherwise: sourceKeyOf) holds at once on a listener; past it a new one evicts that address's idle longest. */
  connectionsPerAddress: 32,
  /** Requests a connection may have unanswered at once (pipelined); the next is answered 503 and the connection closed. */
  maxPipelined: 4
} as const

/** The options of `http.createServer` that set the deadlines. */
export const serverOptions: http.ServerOptions = {
  headersTimeout: ADMIN_LIMITS.headersTimeoutMs,
  requestTimeout: ADMIN_LIMITS.requestTimeoutMs,
  connectionsCheckingInterval: ADMIN_LIMITS.connectionsCheckIntervalMs,
  keepAliveTimeout: ADMIN_LIMITS.keepAliveTimeoutMs
}

const TOO_MANY_PIPELINED = JSON.stringify({
  error: "too_many_pipelined",
  message: `more than ${ADMIN_LIMITS.maxPipelined} requests were sent before their answers: send the rest on a new connection`
})

/**
 * `handler`, for requests of an admitted connection (capConnections) with at most maxPipelined unanswered. One more is
 * answered 503 with `connection: close` after the answers before it (node keeps their order); it
 * and the requests after it never reach `handler`, and the client retries them on a new connection
 * (RFC 9112 9.3.1): a client pipelining a few more than the limit still makes progress. Destroying
 * the socket at once killed the answers of requests already handled (a weight PUT applied, its
 * answer lost). A client that sends more than maxPipelined further requests before that close is
 * a flood, not a client waiting for answers: its socket is destroyed. Node parses a whole read of
 * pipelined requests before any answer is written and keeps reading (pausing the socket does not
 * stop its parser), so every request the socket lives for is a request and an answer object:
 * 20,000 GET /metrics in 840 KB were 20,000 answers built and held in memory.
 * Browsers, curl and Prometheus send one request at a time.
 */
export const limitPipelining = (admitted: (socket: net.Socket) => boolean, handler: http.RequestListener): http.RequestListener => {
  const unanswered = new WeakMap<net.Socket, number>()
  /** Requests a refused connection sent after the one answered 503. */
  const ignored = new WeakMap<net.Socket, number>()
  return (req, res) => {
    const socket = req.socket
    // A refused connection was answered 503 already: its requests are not handled.
    if (socket.destroyed || !admitted(socket)) return
    const after = ignored.get(socket)
    if (after !== undefined) {
      if (after >= ADMIN_LIMITS.maxPipelined) socket.destroy()
      else ignored.set(socket, after + 1)
      return
    }
    const held = (unanswered.get(socket) ?? 0) + 1
    if (held > ADMIN_LIMITS.maxPipelined) {
      ignored.set(socket, 0)
      res.writeHead(503, { "content-type": "application/json", "content-length": Buffer.byteLength(TOO_MANY_PIPELINED), connection: "close" })
      res.end(TOO_MANY_PIPELINED)
      return
    }
    unanswered.set(socket, held)
    res.once("close", () => unanswered.set(socket, unanswered.get(socket)! - 1))
    handler(req, res)
  }
}

const TOO_MANY_CONNECTIONS = JSON.stringify({
  error: "too_many_connections",
  message: "every connection this listener holds (or this address holds) has a request in progress: try again shortly"
})
const REFUSED_ANSWER = Buffer.from(
  `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(TOO_MANY_CONNECTIONS)}\r\nconnection: close\r\n\r\n${TOO_MANY_CONNECTIONS}`
)
/** Refused connections answered 503 and not yet closed; past it a refused connection is reset. */
const MAX_REFUSED_OPEN = 32
/** A refused connection is destroyed this long after its 503, whether or not the client closed. */
const REFUSED_LINGER_MS = 1_000

/** Connections an address holds on a listener; `idle` are those of them without a request in progress. */
interface AddressHeld {
  held: number
  readonly idle: Set<net.Socket>
}

/**
 * Caps `server`'s connections, in all and per client address, the way a proxy keeps its place for
 * new clients (nginx drains its idle keep-alive connections when it runs out): at a cap, a new
 * connection evicts the one that has waited longest without a request in progress (never sent a
 * whole head, or idle after its answers), of its own address at the address's cap, else of the
 * listener. Refusing the newcomer instead let 8 addresses x 32 idle connections, renewed every 5 s,
 * keep the listener full: the kubelet's probes were reset and the pod restarted. Only when every
 * connection in the way has a request in progress (each bounded: 5 s to arrive, 5 s for its written answer to be taken) is the
 * newcomer refused: a 503 with `connection: close`, or a reset when many refused ones are still
 * open. Returns whether a socket was admitted: a refused socket's requests must not be handled
 * (node's parser still reads them).
 */
export const capConnections = (
  server: http.Server,
  ipv6SourcePrefix: number = IPV6_SOURCE_PREFIX.default,
  maxConnections: number = ADMIN_LIMITS.maxConnections
): ((socket: net.Socket) => boolean) => {
  /** Every admitted connection without a request in progress, the one idle longest first. */
  const idle = new Set<net.Socket>()
  const addresses = new Map<string, AddressHeld>()
  /** Requests in progress per admitted connection; absent once it is released. */
  const inProgress = new WeakMap<net.Socket, number>()
  let held = 0
  let refusedOpen = 0

  const addressOf = (socket: net.Socket) => sourceKeyOf(socket.remoteAddress ?? "", ipv6SourcePrefix)
  const release = (socket: net.Socket) => {
    if (!inProgress.has(socket)) return
    inProgress.delete(socket)
    idle.delete(socket)
    const address = addresses.get(addressOf(socket))!
    address.idle.delete(socket)
    held--
    if (--address.held === 0) addresses.delete(addressOf(socket))
  }
  const evictFrom = (candidates: Set<net.Socket>): boolean => {
    const victim = candidates.values().next().value
    if (victim === undefined) return false
    release(victim)
    victim.destroy()
    return true
  }
  const refuse = (socket: net.Socket) => {
    if (refusedOpen >= MAX_REFUSED_OPEN) return socket.destroy()
    refusedOpen++
    const linger = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS)
    socket.once("close", () => {
      refusedOpen--
      clearTimeout(linger)
    })
    socket.end(REFUSED_ANSWER)
  }

  server.on("connection", (socket: net.Socket) => {
    const address = addressOf(socket)
    const own = addresses.get(address)
    if (own !== undefined && own.held >= ADMIN_LIMITS.connectionsPerAddress && !evictFrom(own.idle)) return refuse(socket)
    if (held >= maxConnections && !evictFrom(idle)) return refuse(socket)
    const entry = addresses.get(address) ?? { held: 0, idle: new Set<net.Socket>() }
    addresses.set(address, entry)
    entry.held++
    held++
    inProgress.set(socket, 0)
    idle.add(socket)
    entry.idle.add(socket)
    socket.once("close", () => release(socket))
  })
  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket
    const running = inProgress.get(socket)
    if (running === undefined) return
    inProgress.set(socket, running + 1)
    idle.delete(socket)
    addresses.get(addressOf(socket))!.idle.delete(socket)
    // No deadline covers writing: a client that asks and never reads keeps an answer larger than the
    // socket's buffers unfinished, its connection busy for good (32 of them got their address 503s).
    // Once the answer is written whole, the client has answerTimeoutMs to take what the socket still holds.
    // A stream that never ends (/tap) bounds its own stalls (observability.ts).
    res.once("prefinish", () => {
      if (socket.writableLength === 0) return
      const abandon = setTimeout(() => socket.destroy(), ADMIN_LIMITS.answerTimeoutMs)
      res.once("close", () => clearTimeout(abandon))
    })
    res.once("close", () => {
      const left = inProgress.get(socket)
      if (left === undefined) return
      inProgress.set(socket, left - 1)
      if (left > 1) return
      // Idle again: it goes last, as the connection idle the shortest.
      idle.add(socket)
      addresses.get(addressOf(socket))!.idle.add(socket)
    })
  })
  return (socket) => inProgress.has(socket)
}
