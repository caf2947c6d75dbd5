// HTTP/1.1 at the byte level, for the tests that check what crosses a socket: an incremental
// message parser (written from RFC 9112, not from src/ or node's parser, so a test sees the bytes
// as a naive app would), an app on a raw net server that records every byte it receives and
// answers each request it parses, and a raw client. A smuggled request shows as a second parsed
// request on one connection; an injected response as a second parsed response.
import * as net from "node:net"
import { type Cleanup, withTimeout } from "./iipRaw.ts"

export interface RawMessage {
  /** "GET /x HTTP/1.1" or "HTTP/1.1 200 OK". */
  readonly startLine: string
  /** Header pairs as they were on the wire (names not lower-cased). */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer
  /** Both content-length and transfer-encoding, or two different content-lengths: framing a proxy must never send. */
  readonly ambiguous: boolean
}

const valuesOf = (headers: ReadonlyArray<readonly [string, string]>, name: string): Array<string> =>
  headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v.trim())

/**
 * Splits a byte stream into HTTP/1.1 messages. Framing as a lenient server does it: chunked when
 * transfer-encoding says so, else the first content-length, else no body (requests) or up to the
 * close (responses, flushed by `close()`). `bodiless` tells, for a response, that it has no body
 * whatever its head says (the answer to HEAD, 204, 304).
 */
export class HttpStreamParser {
  private buffer = Buffer.alloc(0)
  private readonly kind: "request" | "response"
  private untilClose: { startLine: string; headers: Array<[string, string]> } | undefined

  constructor(kind: "request" | "response") {
    this.kind = kind
  }

  push(chunk: Buffer, bodiless: (startLine: string) => boolean = () => false): Array<RawMessage> {
    this.buffer = Buffer.concat([this.buffer, chunk])
    const out: Array<RawMessage> = []
    for (;;) {
      if (this.untilClose !== undefined) return out
      const end = this.buffer.indexOf("\r\n\r\n")
      if (end === -1) return out
      const lines = this.buffer.toString("latin1", 0, end).split("\r\n")
      const startLine = lines[0]!
      const headers: Array<[string, string]> = lines.slice(1).map((line) => {
        const colon = line.indexOf(":")
        return colon === -1 ? [line, ""] : [line.slice(0, colon), line.slice(colon + 1).trim()]
      })
      const lengths = valuesOf(headers, "content-length")
      const chunked = valuesOf(headers, "transfer-encoding").some((v) => v.toLowerCase().includes("chunked"))
      const ambiguous = (chunked && lengths.length > 0) || new Set(lengths).size > 1
      let offset = end + 4
      let body: Buffer
      if (this.kind === "response" && bodiless(startLine)) body = Buffer.alloc(0)
      else if (chunked) {
        const parts: Array<Buffer> = []
        for (;;) {
          const lineEnd = this.buffer.indexOf("\r\n", offset)
          if (lineEnd === -1) return out
          const size = parseInt(this.buffer.toString("latin1", offset, lineEnd), 16)
          if (!Number.isFinite(size)) throw new Error(`bad chunk size line ${JSON.stringify(this.buffer.toString("latin1", offset, lineEnd))}`)
          if (size === 0) {
            // No trailers in these tests: the last chunk is "0\r\n\r\n".
            if (this.buffer.length < lineEnd + 4) return out
            offset = lineEnd + 4
            break
          }
          if (this.buffer.length < lineEnd + 2 + size + 2) return out
          parts.push(this.buffer.subarray(lineEnd + 2, lineEnd + 2 + size))
          offset = lineEnd + 2 + size + 2
        }
        body = Buffer.concat(parts)
      } else if (lengths.length > 0) {
        const length = Number(lengths[0])
        if (this.buffer.length < offset + length) return out
        body = this.buffer.subarray(offset, offset + length)
        offset += length
      } else if (this.kind === "response" && !/^HTTP\/1\.1 (1\d\d|204|304)/.test(startLine)) {
        this.untilClose = { startLine, headers }
        this.buffer = this.buffer.subarray(offset)
        return out
      } else body = Buffer.alloc(0)
      out.push({ startLine, headers, body: Buffer.from(body), ambiguous })
      this.buffer = this.buffer.subarray(offset)
    }
  }

  /** The connection closed: a response read up to the close ends here. */
  close(): Array<RawMessage> {
    if (this.untilClose === undefined) return []
    const message = { ...this.untilClose, body: this.buffer, ambiguous: false }
    this.untilClose = undefined
    return [message]
  }
}

export interface RawAppConnection {
  /** Every byte the app received on this connection, in order. */
  readonly received: Array<Buffer>
  readonly requests: Array<RawMessage>
}

export interface RawApp {
  readonly port: number
  readonly address: string
  readonly connections: Array<RawAppConnection>
  /** Every request parsed, over all connections, in order. */
  readonly requests: Array<RawMessage>
  /** Resolves once `count` requests have been parsed (bounded by `timeoutMs`). */
  readonly untilRequests: (count: number, timeoutMs?: number) => Promise<void>
}

/** The app's default answer: 200 with a JSON body naming the request it answers. */
export const describeRequest = (request: RawMessage): Buffer => {
  const body = JSON.stringify({ startLine: request.startLine, body: request.body.toString("latin1") })
  return Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, "latin1")
}

/** An app on 127.0.0.1:0 that answers each request it parses with `answer(request)`; `cleanup` closes it and its connections. */
export const startRawApp = async (cleanup: Cleanup, answer: (request: RawMessage) => Buffer = describeRequest): Promise<RawApp> => {
  const connections: Array<RawAppConnection> = []
  const requests: Array<RawMessage> = []
  const waiters: Array<{ count: number; resolve: () => void }> = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
    socket.on("error", () => {})
    const connection: RawAppConnection = { received: [], requests: [] }
    connections.push(connection)
    const parser = new HttpStreamParser("request")
    socket.on("data", (chunk: Buffer) => {
      connection.received.push(chunk)
      for (const request of parser.push(chunk)) {
        connection.requests.push(request)
        requests.push(request)
        socket.write(answer(request))
      }
      for (const waiter of waiters.splice(0)) {
        if (requests.length >= waiter.count) waiter.resolve()
        else waiters.push(waiter)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const port = (server.address() as net.AddressInfo).port
  const untilRequests = (count: number, timeoutMs = 5000) =>
    withTimeout(
      new Promise<void>((resolve) => {
        if (requests.length >= count) resolve()
        else waiters.push({ count, resolve })
      }),
      timeoutMs,
      `${count} requests at the raw app`
    )
  return { port, address: `127.0.0.1:${port}`, connections, requests, untilRequests }
}

/** A raw client connection: writes bytes, parses the responses that come back. */
export class RawHttpClient {
  readonly responses: Array<RawMessage> = []
  private readonly socket: net.Socket
  private readonly parser = new HttpStreamParser("response")
  private waiters: Array<() => void> = []
  closed = false

  private constructor(socket: net.Socket) {
    this.socket = socket
    socket.on("error", () => {})
    socket.on("data", (chunk: Buffer) => {
      this.responses.push(...this.parser.push(chunk))
      this.wake()
    })
    socket.once("close", () => {
      this.responses.push(...this.parser.close())
      this.closed = true
      this.wake()
    })
  }

  static async connect(cleanup: Cleanup, port: number): Promise<RawHttpClient> {
    const socket = net.connect(port, "127.0.0.1")
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve)
      socket.once("error", reject)
    })
    cleanup.add(() => void socket.destroy())
    return new RawHttpClient(socket)
  }

  write(bytes: string | Buffer): void {
    this.socket.write(bytes)
  }

  /** Closes the connection from this side. */
  destroy(): void {
    this.socket.destroy()
  }

  /** Resolves once `count` responses have been parsed or the connection closed (bounded by `timeoutMs`). */
  untilResponses(count: number, timeoutMs = 5000): Promise<void> {
    return withTimeout(
      new Promise<void>((resolve) => {
        const check = () => {
          if (this.responses.length >= count || this.closed) resolve()
          else this.waiters.push(check)
        }
        check()
      }),
      timeoutMs,
      `${count} responses`
    )
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter()
  }
}
