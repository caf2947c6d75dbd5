// The outbound listener's second protocol: cleartext HTTP/2 with prior knowledge (what gRPC
// clients send) on the same port as HTTP/1.1. The listener (http1Listener.ts) tells a new
// connection apart by its first bytes and hands one that opens with the HTTP/2 preface to a
// node:http2 server here. Each HTTP/2 stream is one request for outbound.ts (an H2Call over node's
// compatibility objects), so the calls of one gRPC channel are balanced one by one, not pinned to
// an endpoint. A request body that ends within the turn of the event loop its head came in (a
// unary call's) is held whole: it travels as one mesh message and may be retried; any other streams.
import * as http2 from "node:http2"
import type * as net from "node:net"
import type { OutboundCall } from "./outboundCall.ts"

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

/** Pairs as node's HTTP/2 API takes them: an object, a repeated name with all its values. */
const fieldsOf = (pairs: ReadonlyArray<readonly [string, string]>): Record<string, string | Array<string>> => {
  const fields: Record<string, string | Array<string>> = {}
  for (const [name, value] of pairs) {
    const prior = fields[name]
    fields[name] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value]
  }
  return fields
}

/** One HTTP/2 stream as outbound.ts reads and answers a request (outboundCall.ts). */
class H2Call implements OutboundCall {
  readonly httpVersionMajor = 2
  headersSent = false
  private readonly req: http2.Http2ServerRequest
  private readonly res: http2.Http2ServerResponse
  private status = 200
  private head: ReadonlyArray<readonly [string, string]> = []
  private headWritten = false

  constructor(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) {
    this.req = req
    this.res = res
  }

  get method(): string {
    return this.req.method
  }
  get url(): string {
    return this.req.url
  }
  get headers(): http2.IncomingHttpHeaders {
    return this.req.headers
  }
  get rawHeaders(): ReadonlyArray<string> {
    return this.req.rawHeaders
  }
  get remoteAddress(): string {
    return this.req.socket.remoteAddress ?? ""
  }
  /** A body follows unless the head ended the stream. */
  get hasBody(): boolean {
    return !this.req.stream.endAfterHeaders
  }
  get writableEnded(): boolean {
    return this.res.writableEnded
  }
  get destroyed(): boolean {
    return this.res.destroyed
  }

  body(): AsyncIterable<Buffer> {
    return this.req
  }

  readBody(limit: number): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) => {
      const parts: Array<Buffer> = []
      let total = 0
      this.req.on("data", (chunk: Buffer) => {
        total += chunk.length
        if (total > limit) {
          this.req.destroy()
          resolve(undefined)
        } else parts.push(chunk)
      })
      this.req.once("end", () => resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, total)))
      this.req.once("error", reject)
    })
  }

  heldBody(limit: number): Promise<Buffer | AsyncIterable<Buffer>> {
    const req = this.req
    return new Promise((resolve) => {
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
        resolve(req)
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
  }

  onClose(listener: (finished: boolean) => void): void {
    // Finished when the answer was ended: node counts a stream the client reset as writableFinished,
    // so that would not tell a cancelled call from an answered one.
    this.res.on("close", () => listener(this.res.writableEnded))
  }

  writeHead(status: number, headers: ReadonlyArray<readonly [string, string]>): void {
    this.status = status
    this.head = headers
    this.headersSent = true
  }

  private sendHead(): void {
    if (this.headWritten) return
    this.headWritten = true
    this.res.writeHead(this.status, fieldsOf(this.head))
  }

  write(chunk: Uint8Array): boolean {
    this.sendHead()
    return this.res.write(chunk)
  }

  drained(): Promise<void> {
    const res = this.res
    return new Promise((resolve) => {
      const done = () => {
        res.off("drain", done)
        res.off("close", done)
        resolve()
      }
      res.on("drain", done)
      res.on("close", done)
    })
  }

  end(data?: Uint8Array | string, trailers?: ReadonlyArray<readonly [string, string]>): void {
    if (!this.headWritten && (data === undefined || data.length === 0) && trailers === undefined) {
      // Head and end in one HEADERS frame (a gRPC trailers-only answer): the compatibility
      // response would send them apart, which a gRPC client reads as an answer without a status.
      this.headWritten = true
      this.req.stream.respond({ ":status": this.status, ...fieldsOf(this.head) }, { endStream: true })
      return
    }
    this.sendHead()
    if (trailers !== undefined) this.res.addTrailers(fieldsOf(trailers))
    if (data === undefined) this.res.end()
    else this.res.end(data)
  }

  destroy(): void {
    this.res.destroy()
  }
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

/** HTTP/2 connections handed over by the outbound listener (`accept`); each stream goes to `handler`, as HTTP/1.1 requests do. */
export const makeH2c = (
  handler: (call: OutboundCall) => void,
  options: { readonly idleTimeoutMs: number; readonly maxStreams: number }
): H2Listener => {
  const h2 = http2.createServer(
    { Http2ServerRequest: MeshH2Request as typeof http2.Http2ServerRequest, settings: { maxConcurrentStreams: options.maxStreams } },
    (req, res) => handler(new H2Call(req, res))
  )
  const sessions = new Set<http2.ServerHttp2Session>()
  h2.on("session", (session: http2.ServerHttp2Session) => {
    // A session with no frame either way this long is asked to go (GOAWAY), like an idle keep-alive connection.
    session.setTimeout(options.idleTimeoutMs, () => session.close())
    sessions.add(session)
    session.on("close", () => sessions.delete(session))
    // A broken session is its streams' failure; nothing to do beyond it.
    session.on("error", () => {})
  })
  return {
    accept: (socket) => void h2.emit("connection", socket),
    sessions,
    close: () => {
      for (const session of sessions) session.close()
    },
    destroyAll: () => {
      for (const session of sessions) session.destroy()
    }
  }
}
