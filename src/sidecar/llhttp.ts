// node's llhttp binding as node:http itself loads it (`_http_common`: a public module whose typings
// are not), for the sidecar's two HTTP/1.1 ends of its own: the app leg's client (appPool.ts) and
// the outbound listener's connections (http1Connection.ts). Both run it strict (no lenient flag)
// with node's header size limit, and close each parser once its connection is done (closeParserSoon).
import { createRequire } from "node:module"

export interface LlhttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  /** Bytes parsed, or the parse error (its `code` is llhttp's, e.g. HPE_HEADER_OVERFLOW). */
  execute(data: Buffer): number | Error
  finish(): number | Error | undefined
  /** Deletes the native parser at once (its JS object then does nothing). */
  close(): void
  /**
   * Reads the stream handle's bytes in C++ from now on (node:http's own fast path): each read is
   * parsed into a buffer the binding reuses, then `kOnExecute` is called with the result; the
   * socket's Readable stream sees no data (EOF and errors still reach it).
   */
  consume(handle: object): void
  /** The handle's reads go back to the socket's Readable stream. */
  unconsume(): void
  /** A copy of the read being parsed (in consume mode: the bytes after an upgrade's head). */
  getCurrentBuffer(): Buffer
  [key: number]: unknown
}

interface LlhttpParserClass {
  new (): LlhttpParser
  readonly REQUEST: number
  readonly RESPONSE: number
  readonly kLenientNone: number
  readonly kOnMessageBegin: number
  readonly kOnHeaders: number
  readonly kOnHeadersComplete: number
  readonly kOnBody: number
  readonly kOnMessageComplete: number
  readonly kOnExecute: number
}

const common = createRequire(import.meta.url)("_http_common") as { readonly HTTPParser: LlhttpParserClass; readonly methods: ReadonlyArray<string> }

export const HTTPParser = common.HTTPParser

/**
 * A request's method by llhttp's number for it: node's `methods` list is in llhttp's order, but
 * for QUERY (46), which follows the RTSP methods an HTTP parser never reports.
 */
export const methodNames: ReadonlyArray<string | undefined> = (() => {
  const names: Array<string | undefined> = common.methods.filter((name) => name !== "QUERY")
  names[46] = "QUERY"
  return names
})()

const closeParser = (parser: LlhttpParser): void => parser.close()

/**
 * Frees a parser's native half (node::http_parser::Parser, about 10 KB of malloc'd memory): an open
 * HTTPParser is never garbage collected, and keeps alive all its callbacks reach (2,000 parsers
 * dropped without close: +21 MB RSS, none collected). Deferred to the next turn, as node:http's
 * own closeParserInstance is: the caller may be inside one of the parser's callbacks, and close()
 * deletes the parser at once.
 */
export const closeParserSoon = (parser: LlhttpParser): void => void setImmediate(closeParser, parser)
