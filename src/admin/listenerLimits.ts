// Connection limits of the two admin listeners (adminServer.ts applies them to each): a deadline
// for every request, head and body, caps on connections, per listener and per client address, and
// on the requests a connection pipelines.
// The read-only listener is on the pod address, open to anyone who reaches the pod: node's defaults
// (60 s for a head, 300 s for a whole request, checked every 30 s, no cap) let a client keep as many
// sockets open as it likes, and every one is a file descriptor of the sidecar's process, which the
// data plane's accepts and connects need too. The admin's requests are small (a weight body is at
// most 1 KiB), so a short deadline costs honest clients nothing; the per-address cap keeps one
// client from taking every place from the kubelet's probes and Prometheus.
import type * as http from "node:http"
import type * as net from "node:net"

export const ADMIN_LIMITS = {
  /** A request's head must come whole within this... */
  headersTimeoutMs: 5_000,
  /** ...and the whole request, its body included. Answers (a /tap stream) are not bounded by it. */
  requestTimeoutMs: 5_000,
  /** How often node looks for requests past their deadline. */
  connectionsCheckIntervalMs: 1_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: 5_000,
  /** Connections a listener holds at once; past it new ones are closed as they come. */
  maxConnections: 256,
  /** Connections one client address holds at once on a listener. */
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
 * `handler`, for requests of a connection with at most maxPipelined unanswered. One more is
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
export const limitPipelining = (handler: http.RequestListener): http.RequestListener => {
  const unanswered = new WeakMap<net.Socket, number>()
  /** Requests a refused connection sent after the one answered 503. */
  const ignored = new WeakMap<net.Socket, number>()
  return (req, res) => {
    const socket = req.socket
    if (socket.destroyed) return
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

/** Caps `server`'s connections, in all and per client address. */
export const capConnections = (server: http.Server): void => {
  server.maxConnections = ADMIN_LIMITS.maxConnections
  const perAddress = new Map<string, number>()
  server.on("connection", (socket: net.Socket) => {
    const address = socket.remoteAddress ?? ""
    const held = perAddress.get(address) ?? 0
    if (held >= ADMIN_LIMITS.connectionsPerAddress) {
      socket.destroy()
      return
    }
    perAddress.set(address, held + 1)
    socket.once("close", () => {
      const left = perAddress.get(address)! - 1
      if (left === 0) perAddress.delete(address)
      else perAddress.set(address, left)
    })
  })
}
