// HTTP/1.1 byte streams read by node's llhttp binding (strict, node's header size limit), for the
// framing fuzz (test/sidecar/framing-fuzz.test.ts): the client's bytes read as a strict server
// reads them (what the client sent), the bytes sidecar B wrote to the app read as the app reads
// them, and the answers a client reads. Only the binding's loader comes from src/ (llhttp.ts, as
// the sidecar loads it): none of the sidecar's rules on top of it, the test's view of framing is llhttp's.
import { HTTPParser, type LlhttpParser, methodNames } from "../../src/sidecar/llhttp.ts"

/** node's http.maxHeaderSize default, as the sidecar runs with it. */
const MAX_HEADER_SIZE = 16 * 1024

export interface H1Message {
  readonly method: string
  readonly url: string
  readonly status: number
  readonly versionMajor: number
  readonly versionMinor: number
  /** Flat name, value list as llhttp gave it. */
  readonly headers: ReadonlyArray<string>
  /** Trailer fields after a chunked body (flat). */
  trailers: ReadonlyArray<string>
  body: Buffer
  readonly upgrade: boolean
  readonly keepAlive: boolean
}

/**
 * An incremental llhttp reader of one connection's bytes. Every message it completes goes to
 * `onMessage`; after a parse error (`error`) or an upgrade's head (`upgraded`, with the bytes after
 * it in `rest`) it reads nothing more. `bodiless` says a response has no body (the answer to HEAD).
 */
export class H1Stream {
  error: Error | undefined = undefined
  upgraded = false
  rest: Buffer = Buffer.alloc(0)
  /** A message has begun and not ended. */
  midMessage = false
  private readonly parser: LlhttpParser
  private pendingHeaders: Array<string> = []
  private pendingUrl = ""
  private current: H1Message | undefined = undefined
  private parts: Array<Buffer> = []
  private closed = false

  /** `onHead`: a message's head is read (its body, trailers and end to come, into the same object). */
  constructor(kind: "request" | "response", onMessage: (message: H1Message) => void, bodiless: (status: number) => boolean = () => false, onHead?: (message: H1Message) => void) {
    const parser = new HTTPParser()
    parser.initialize(kind === "request" ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {}, MAX_HEADER_SIZE, HTTPParser.kLenientNone)
    parser[HTTPParser.kOnMessageBegin] = () => {
      this.midMessage = true
    }
    parser[HTTPParser.kOnHeaders] = (headers: Array<string>, url: string) => {
      for (const one of headers) this.pendingHeaders.push(one)
      // After the head (trailers) node's binding hands over the message's URL again, kept since its
      // head: no part of the next message's target.
      if (this.current === undefined) this.pendingUrl += url
    }
    parser[HTTPParser.kOnHeadersComplete] = (
      major: number,
      minor: number,
      headers: Array<string> | undefined,
      method: number,
      url: string | undefined,
      status: number,
      _statusMessage: unknown,
      upgrade: boolean,
      keepAlive: boolean
    ): number => {
      const all = this.pendingHeaders.concat(headers ?? [])
      this.pendingHeaders = []
      const target = `${this.pendingUrl}${url ?? ""}`
      this.pendingUrl = ""
      this.parts = []
      this.current = { method: methodNames[method] ?? String(method), url: target, status, versionMajor: major, versionMinor: minor, headers: all, trailers: [], body: Buffer.alloc(0), upgrade, keepAlive }
      onHead?.(this.current)
      // As node's server with an 'upgrade' listener (and the sidecar): no body is read for an upgrade, the rest is the new protocol's.
      if (kind === "request" && upgrade) return 2
      return kind === "response" && bodiless(status) ? 1 : 0
    }
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => void this.parts.push(Buffer.from(chunk))
    parser[HTTPParser.kOnMessageComplete] = () => {
      const message = this.current
      this.current = undefined
      this.midMessage = false
      if (message === undefined) return
      message.body = Buffer.concat(this.parts)
      this.parts = []
      // Fields flushed after the body are its trailers.
      message.trailers = this.pendingHeaders
      this.pendingHeaders = []
      onMessage(message)
    }
    this.parser = parser
  }

  /** A message's head is read and its body is not over. */
  get inBody(): boolean {
    return this.current !== undefined
  }

  /** Reads `data`; false once the stream reads nothing more (an error or an upgrade). */
  push(data: Buffer): boolean {
    if (this.error !== undefined || this.upgraded) {
      if (this.upgraded) this.rest = Buffer.concat([this.rest, data])
      return false
    }
    const parsed = this.parser.execute(data)
    if (parsed instanceof Error) {
      this.error = parsed
      return false
    }
    if (parsed < data.length) {
      // node's binding stops without an error only after an upgrade's head.
      this.upgraded = true
      this.rest = Buffer.from(data.subarray(parsed))
      return false
    }
    return true
  }

  /** The end of input: a response read to the close ends here; a message cut short is an error. */
  finish(): void {
    if (this.error !== undefined || this.upgraded) return
    const result = this.parser.finish()
    if (result instanceof Error) this.error = result
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.parser.close()
  }
}

export interface ReadRequests {
  readonly requests: Array<H1Message>
  /** Every request whose head llhttp read, whole or not (an answer to HEAD has no body even when the request's body broke). */
  readonly heads: Array<H1Message>
  /** How the bytes end: after a whole request, within one, at bytes llhttp refuses, or at an upgrade's head. */
  readonly end: "clean" | "incomplete" | "error" | "upgrade"
  /** The bytes after an upgrade's head. */
  readonly rest: Buffer
}

/** Where the first request's head ends in `bytes` when llhttp reads it whole (its body, if any, not yet read); undefined if it does not. */
export const firstHeadEnd = (bytes: Buffer): number | undefined => {
  const end = bytes.indexOf("\r\n\r\n")
  if (end === -1) return undefined
  let whole = false
  const stream = new H1Stream("request", () => (whole = true))
  try {
    stream.push(bytes.subarray(0, end + 4))
    return stream.error === undefined && !stream.upgraded && (whole || stream.inBody) ? end + 4 : undefined
  } finally {
    stream.close()
  }
}

/** Every request llhttp reads in `bytes`, and how the bytes end. */
export const readRequests = (bytes: Buffer): ReadRequests => {
  const requests: Array<H1Message> = []
  const heads: Array<H1Message> = []
  const stream = new H1Stream("request", (message) => requests.push(message), undefined, (message) => heads.push(message))
  try {
    stream.push(bytes)
    const end = stream.error !== undefined ? "error" : stream.upgraded ? "upgrade" : stream.midMessage ? "incomplete" : "clean"
    return { requests, heads, end, rest: stream.rest }
  } finally {
    stream.close()
  }
}
