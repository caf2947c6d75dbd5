// The inbound side's request head to the app (appPool.ts writes it): the request line and header
// lines as they go on the wire, checked as they are built (`InvalidRequestHead`: nothing is sent),
// our own framing, and a whole small body copied behind the head for one write. The lines the app
// gets request after request are kept (HeadLines) and built again only when they differ.
import { isFieldValue, isToken, TIMEOUT_HEADER } from "./headerFilter.ts"

/** A whole body up to this size is copied behind its head, for a single write; a larger one goes by writev. */
export const ONE_WRITE_LIMIT = 16 * 1024
const KEEP_ALIVE = "connection: keep-alive\r\n"
/** Methods whose request carries a body by their semantics: an empty one is still declared (undici's rule). */
export const EXPECTS_PAYLOAD = new Set(["PUT", "POST", "PATCH", "QUERY", "PROPFIND", "PROPPATCH"])

/** A request head that cannot be written to the app as it is; nothing was sent. */
export class InvalidRequestHead extends Error {
  readonly code = "ERR_INVALID_REQUEST_HEAD"
}

export interface AppPoolRequest {
  readonly method: string
  readonly path: string
  /** Flat name, value list; framing (content-length, transfer-encoding) only as the pool adds it, or a declared content-length. */
  readonly headers: ReadonlyArray<string>
  /** A whole body, or one written as pulled: with a declared content-length in `headers` as is, else chunked. */
  readonly body: Buffer | AsyncIterable<Buffer>
  /**
   * Every name in `headers` is a token and every value a field value already (the inbound side's
   * filter made them so): the head is not scanned for them again (about 0.5-1 us for eight headers).
   */
  readonly checked?: boolean
}

/** What writeHead reads and fills of an exchange (appPool.ts): the request, and its head as it goes on the wire. */
export interface HeadedExchange {
  readonly request: AppPoolRequest
  head: string
  wire: Buffer | undefined
  chunked: boolean
}

/**
 * The last head's headers as written (request line and header lines, framing and the per-request
 * headers left out) and what they were made of. The inbound side sends an app the same request
 * line and headers request after request (the peer's filtered pairs are reused while their text
 * repeats, httpEnvelope.ts), all but the time left (`iip-timeout`) and, traced, the app span's
 * `traceparent` (new ids every request), which are therefore written after the others
 * (`perRequest`): the lines are built again only when a method, path, name or value differs (a
 * string compare each, mostly of the same string), instead of a dozen strings joined per request.
 * (Issue 14: with the traceparent among the lines a traced sidecar B built them every request,
 * ~1.3 KB of strings.)
 */
class HeadLines {
  method = ""
  path = ""
  /** The headers (name, value ...) the lines were made of, the per-request ones (`perRequest`) excluded. */
  readonly fields: Array<string> = []
  lines = ""
  host = false
  declared = false

  matches(method: string, path: string, headers: ReadonlyArray<string>): boolean {
    if (method !== this.method || path !== this.path) return false
    const fields = this.fields
    let at = 0
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const name = headers[i]!
      if (perRequest(name)) continue
      if (at + 1 >= fields.length || name !== fields[at] || headers[i + 1] !== fields[at + 1]) return false
      at += 2
    }
    return at === fields.length
  }
}

/** One per process: the pools of a sidecar serve one app. */
const lastHead = new HeadLines()

/** A header whose value changes request after request: written after the lines HeadLines keeps, never among them. */
const perRequest = (name: string): boolean => name === TIMEOUT_HEADER || name === "traceparent"

/**
 * The request head as it goes on the wire, or why it cannot: every name a token, every value free
 * of CR, LF and NUL (method and path the inbound side checked; the headers too when the request
 * says so). The framing is ours: the body's
 * length, a streamed body's declared length as given, else chunked. A whole body up to
 * ONE_WRITE_LIMIT goes into one buffer behind its head (`exchange.wire`) for a single write. The
 * head is one string built as it is checked and written with one call: writing each name and
 * value into the buffer apart cost twice as much (about 2.2 against 1.0 us for a ten-header head).
 * It is Latin-1 by construction (every value checked), one byte a character. The headers that
 * change per request (the time left, the traceparent) go after the other headers (HeadLines).
 */
export const writeHead = (exchange: HeadedExchange, authority: string): InvalidRequestHead | undefined => {
  const { request } = exchange
  const headers = request.headers
  const checked = request.checked === true
  let varying = ""
  if (checked && lastHead.matches(request.method, request.path, headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) if (perRequest(headers[i]!)) varying += `${headers[i]}: ${headers[i + 1]}\r\n`
  } else {
    let host = false
    let declared = false
    let lines = `${request.method} ${request.path} HTTP/1.1\r\n`
    const fields: Array<string> = []
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const name = headers[i]!
      const value = headers[i + 1]!
      if (!checked && (!isToken(name) || !isFieldValue(value))) return new InvalidRequestHead(`the header ${JSON.stringify(name.slice(0, 64))} cannot be written as it is`)
      if (perRequest(name)) {
        varying += `${name}: ${value}\r\n`
        continue
      }
      if (name.length === 4 && name.toLowerCase() === "host") host = true
      else if (name.length === 14 && name.toLowerCase() === "content-length") declared = true
      else if (name.length === 17 && name.toLowerCase() === "transfer-encoding") return new InvalidRequestHead("the pool frames the body itself")
      lines += `${name}: ${value}\r\n`
      fields.push(name, value)
    }
    // Only a checked head is kept: an unchecked one must be checked each time.
    if (checked) {
      lastHead.method = request.method
      lastHead.path = request.path
      lastHead.fields.length = 0
      for (const field of fields) lastHead.fields.push(field)
      lastHead.lines = lines
      lastHead.host = host
      lastHead.declared = declared
    }
    return finishHead(exchange, authority, lines, host, declared, varying)
  }
  return finishHead(exchange, authority, lastHead.lines, lastHead.host, lastHead.declared, varying)
}

/** The head's end: host if none was given, the per-request header lines, keep-alive, the framing; then the wire buffer or the head string (writeHead). */
const finishHead = (exchange: HeadedExchange, authority: string, lines: string, host: boolean, declared: boolean, varying: string): InvalidRequestHead | undefined => {
  const { request } = exchange
  const body = request.body
  const whole = body instanceof Buffer
  if (whole && declared) return new InvalidRequestHead("a whole body takes its own content-length")
  let tail = host ? varying : `host: ${authority}\r\n${varying}`
  tail += KEEP_ALIVE
  if (whole && (body.length > 0 || EXPECTS_PAYLOAD.has(request.method))) tail += `content-length: ${body.length}\r\n`
  else if (!whole && !declared) {
    // Its framing waits for the first byte (writeBody): a body that sends none is no body at all.
    exchange.head = lines + tail
    exchange.chunked = true
    return undefined
  }
  tail += "\r\n"
  if (whole && body.length <= ONE_WRITE_LIMIT) {
    // The lines (flat, written as they are) and the short tail: two copies, no joined string.
    const out = Buffer.allocUnsafe(lines.length + tail.length + body.length)
    const at = out.write(lines, 0, "latin1")
    body.copy(out, at + out.write(tail, at, "latin1"))
    exchange.wire = out
    return undefined
  }
  exchange.head = lines + tail
  return undefined
}
