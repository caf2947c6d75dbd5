// The outbound listener's second protocol: cleartext HTTP/2 with prior knowledge (what gRPC
// clients send) on the same port as HTTP/1.1. Each new connection is told apart by its first
// bytes: the HTTP/2 connection preface goes to a node:http2 server, anything else to the
// node:http server exactly as before (its parser, limits and upgrade handling untouched; the
// only cost is one read and unshift per connection). Each HTTP/2 stream is one request for
// outbound.ts, so the calls of one gRPC channel are balanced one by one, not pinned to an endpoint.
// A request body that ends within the turn of the event loop its head came in (a unary call's) is
// held whole: it travels as one mesh message and may be retried; any other streams.
import type * as http from "node:http"
import * as http2 from "node:http2"
import type * as net from "node:net"

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1")

/**
 * node's HTTP/2 request as outbound.ts reads an HTTP/1.1 one: `rawHeaders` without the
 * pseudo-headers (they are the request line, not headers to forward), `host` from `:authority`.
 */
class MeshH2Request extends http2.Http2ServerRequest {
  constructor(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, options: unknown, rawHeaders: Array<string>) {
    const kept: Array<string> = []
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.charCodeAt(0) !== 0x3a) kept.push(rawHeaders[i]!, rawHeaders[i + 1]!)
    super(stream, headers, options as never, kept)
    const authority = headers[":authority"]
    if (headers.host === undefined && typeof authority === "string") headers.host = authority
  }
}

/**
 * An HTTP/2 request's body (it declares no length): whole when it ends, at most `limit` bytes,
 * before the event loop's next turn; otherwise what came so far and then the rest, as a stream.
 */
export const h2Body = (req: http.IncomingMessage, limit: number): Promise<Buffer | AsyncIterable<Buffer>> =>
  new Promise((resolve) => {
    const parts: Array<Buffer> = []
    let bytes = 0
    let settled = false
    // Paused mode (read, not 'data'), so that what came so far can be put back for the stream to read.
    const streamOn = () => {
      if (settled) return
      settled = true
      req.off("readable", onReadable)
      req.off("end", onEnd)
      if (bytes > 0) req.unshift(parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes))
      resolve(req as AsyncIterable<Buffer>)
    }
    const onReadable = () => {
      for (let chunk = req.read() as Buffer | null; chunk !== null; chunk = req.read() as Buffer | null) {
        parts.push(chunk)
        bytes += chunk.length
        if (bytes > limit) return streamOn()
      }
    }
    const onEnd = () => {
      if (settled) return
      settled = true
      req.off("readable", onReadable)
      resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes))
    }
    req.on("readable", onReadable)
    req.on("end", onEnd)
    setImmediate(streamOn)
  })

export interface H2Listener {
  /** Sessions open now (for the drain). */
  readonly sessions: ReadonlySet<http2.ServerHttp2Session>
  /** Asks every session to finish its streams and take no new ones (GOAWAY). */
  readonly close: () => void
  /** Ends every session now. */
  readonly destroyAll: () => void
}

/**
 * Puts the preface check in front of `server`'s own connection handling; HTTP/2 connections go to
 * `handler` (the same as HTTP/1.1 requests'). A connection that sends nothing within the idle timeout is closed.
 */
export const acceptH2c = (
  server: http.Server,
  handler: (req: http.IncomingMessage, res: http.ServerResponse) => void,
  options: { readonly idleTimeoutMs: number; readonly maxStreams: number }
): H2Listener => {
  const h2 = http2.createServer({ Http2ServerRequest: MeshH2Request as typeof http2.Http2ServerRequest, settings: { maxConcurrentStreams: options.maxStreams } }, handler as never)
  const sessions = new Set<http2.ServerHttp2Session>()
  h2.on("session", (session: http2.ServerHttp2Session) => {
    // A session with no frame either way this long is asked to go (GOAWAY), like an idle keep-alive connection.
    session.setTimeout(options.idleTimeoutMs, () => session.close())
    sessions.add(session)
    session.on("close", () => sessions.delete(session))
    // A broken session is its streams' failure; nothing to do beyond it.
    session.on("error", () => {})
  })
  const http1 = server.listeners("connection") as Array<(socket: net.Socket) => void>
  server.removeAllListeners("connection")
  server.on("connection", (socket: net.Socket) => {
    socket.setTimeout(options.idleTimeoutMs, () => socket.destroy())
    let seen: Buffer | undefined
    const peek = () => {
      const chunk = socket.read() as Buffer | null
      if (chunk === null) return
      seen = seen === undefined ? chunk : Buffer.concat([seen, chunk])
      const compared = Math.min(seen.length, PREFACE.length)
      const h2Preface = seen.subarray(0, compared).equals(PREFACE.subarray(0, compared))
      // A prefix of the preface: wait for the rest (bounded by the preface's 24 bytes).
      if (h2Preface && compared < PREFACE.length) return
      socket.off("readable", peek)
      socket.setTimeout(0)
      socket.unshift(seen)
      if (h2Preface) h2.emit("connection", socket)
      else for (const listener of http1) listener.call(server, socket)
    }
    socket.on("readable", peek)
    socket.on("error", () => {})
  })
  return {
    sessions,
    close: () => {
      for (const session of sessions) session.close()
    },
    destroyAll: () => {
      for (const session of sessions) session.destroy()
    }
  }
}
