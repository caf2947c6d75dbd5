// The HTTP request and response as they cross IIP (PROTOCOL.md §17). In mesh mode the head
// travels in the envelope's metadata and the body as the (streamed) IIP body; towards a plain IIP
// service (a Go IIP server) the request uses the reference HTTP adapter's convention: path = the
// request URI plus `__http_hdr__`, data = the body or `{}`. Headers are read from the wire only
// through the end-to-end filter (headerFilter.ts). Pure.
import type { IncomingHttpHeaders } from "node:http"
import { type Meta, metaByteLength } from "../protocol/mesh.ts"
import { MetaEntries } from "../protocol/metaEntries.ts"
import { isOwnTraceparent, parseTraceparent, TRACEPARENT_LENGTH } from "../telemetry/propagation.ts"
import { AddedPair, copyToExtend, endToEndPairs, endToEndPart, type OnInvalidHeader, pairsMatchFlat } from "./headerFilter.ts"

export const HttpMeta = {
  method: ":method",
  authority: ":authority",
  status: ":status",
  /** JSON array of [name, value] pairs, in order, names lower case. */
  headers: "http-headers",
  /** An upgrade (PROTOCOL.md §17.4): the protocols asked for (request) or switched to (the 101), as `upgradeProtocols` gives them. */
  upgrade: "http-upgrade",
  /** The answer's trailers (PROTOCOL.md §17.5), same JSON form as `http-headers`: in an answer held whole, or closing a streamed one. */
  trailers: "http-trailers"
} as const

export type HeaderPairs = ReadonlyArray<readonly [string, string]>

/**
 * Adds x-forwarded-for/-proto/-host for a request that entered at `clientAddress` for `host`, in
 * place (one pass): the first x-forwarded-for the app sent is extended, the others dropped.
 */
export const withForwarded = (headers: Array<readonly [string, string]>, clientAddress: string, host: string): Array<readonly [string, string]> => {
  let prior: string | undefined
  let kept = 0
  for (let i = 0; i < headers.length; i++) {
    const pair = headers[i]!
    const name = pair[0]
    if (name === "x-forwarded-for") prior ??= pair[1]
    else if (name !== "x-forwarded-proto" && name !== "x-forwarded-host") headers[kept++] = pair
  }
  headers.length = kept
  headers.push(prior === undefined ? forwardedFor.of(clientAddress) : ["x-forwarded-for", `${prior}, ${clientAddress}`])
  headers.push(FORWARDED_PROTO)
  headers.push(forwardedHost.of(host))
  return headers
}

const forwardedFor = new AddedPair("x-forwarded-for")
const forwardedHost = new AddedPair("x-forwarded-host")
const FORWARDED_PROTO: readonly [string, string] = ["x-forwarded-proto", "http"]

/**
 * A header list as its JSON, kept for the next list: an app sends the same headers request after
 * request (and answer after answer), so the same text is reused instead of stringified again when
 * every name and value equals the last list's (a string compare each, against a stringify). A
 * traced request's list ends with the trace headers the outbound side put there (propagation.ts's
 * replaceTraceHeaders: `traceparent`, then `tracestate`, `baggage`), the traceparent new every
 * call: the part before them is the one kept, and the tail appended to its text (issue 14: the
 * whole list stringified per traced request, ~470 bytes of garbage and a walk over every pair).
 */
class HeadersJson {
  /** The kept part's names and values, flat (name, value ...). */
  private readonly fields: Array<string> = []
  private text = "[]"
  /** `text` without its closing bracket, for a tail to follow. */
  private open = "["

  of(headers: HeaderPairs): string {
    const cut = traceTailAt(headers)
    if (!pairsMatchFlat(headers, this.fields, cut)) {
      const fields = this.fields
      fields.length = 0
      for (let i = 0; i < cut; i++) fields.push(headers[i]![0], headers[i]![1])
      this.text = JSON.stringify(cut === headers.length ? headers : headers.slice(0, cut))
      this.open = this.text.slice(0, -1)
    }
    if (cut === headers.length) return this.text
    // The names are the three literals traceTailAt compared against: only a value may need escaping
    // (not the traceparent the outbound side has just made: propagation.ts's isOwnTraceparent).
    // Each pair is its name's opening (a constant), the value and the closing (with the list's own
    // bracket after the last pair): three joins a pair, not six (issue 14: each a 32-byte string).
    let text = this.open
    const last = headers.length - 1
    for (let i = cut; i <= last; i++) {
      const pair = headers[i]!
      const value = pair[1]
      text = isOwnTraceparent(value) || isPlainJson(value)
        ? text + tailPairOpen(pair[0]) + value + (i === last ? '"]]' : '"]')
        : `${text},["${pair[0]}",${JSON.stringify(value)}${i === last ? "]]" : "]"}`
    }
    return text
  }
}

/** A trace tail pair's text up to its value's opening quote, by name (traceTailAt's three). */
const TRACEPARENT_OPEN = ',["traceparent","'
const TRACESTATE_OPEN = ',["tracestate","'
const BAGGAGE_OPEN = ',["baggage","'
const tailPairOpen = (name: string): string => (name === "traceparent" ? TRACEPARENT_OPEN : name === "tracestate" ? TRACESTATE_OPEN : BAGGAGE_OPEN)

/** Printable ASCII without `"` or `\`: the same characters in a JSON string (a traceparent always). */
const isPlainJson = (value: string): boolean => {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false
  }
  return true
}

/**
 * Where a list's trace tail starts: its last `traceparent`, when at most two headers follow it,
 * each `tracestate` or `baggage`, and some other header comes before it (a list of trace headers
 * alone is kept whole); the list's length when it has no such tail (also when a route's header
 * modifiers or a streamed body's declared content-length come after the trace headers: the whole
 * list is then stringified, as before).
 */
const traceTailAt = (headers: HeaderPairs): number => {
  for (let i = headers.length - 1; i > 0 && i >= headers.length - 3; i--) {
    const name = headers[i]![0]
    if (name === "traceparent") return i
    if (name !== "tracestate" && name !== "baggage") break
  }
  return headers.length
}

const requestHeadersJson = new HeadersJson()
const responseHeadersJson = new HeadersJson()
/** A gRPC app's trailers repeat call after call (`grpc-status: 0`): apart from the heads, whose cache they would otherwise replace. */
const trailersJson = new HeadersJson()

// MetaEntries (metaEntries.ts), not a Map: no hash table per request at either sidecar; built with
// set(), not from an array of entries: no entry arrays and no iterator protocol per request.
export const requestMeta = (method: string, authority: string, headers: HeaderPairs): MetaEntries =>
  new MetaEntries().set(HttpMeta.method, method).set(HttpMeta.authority, authority).set(HttpMeta.headers, requestHeadersJson.of(headers))

export const responseMeta = (status: number, headers: HeaderPairs): MetaEntries =>
  new MetaEntries().set(HttpMeta.status, String(status)).set(HttpMeta.headers, responseHeadersJson.of(headers))

/** Trailers as they close a streamed answer (PROTOCOL.md §13, §17.5). */
export const trailersMeta = (trailers: HeaderPairs): Map<string, string> => new Map<string, string>().set(HttpMeta.trailers, trailersJson.of(trailers))

/** An answer held whole carries its trailers in its metadata (PROTOCOL.md §17.5), beside its head. */
export const withTrailers = (meta: MetaEntries, trailers: HeaderPairs): MetaEntries => meta.set(HttpMeta.trailers, trailersJson.of(trailers))

/** An answer's metadata keys' bytes besides their values, all three there (PROTOCOL.md §12: a key length, the key, a value length each). */
const ANSWER_KEYS_BYTES = 9 + Buffer.byteLength(HttpMeta.status) + Buffer.byteLength(HttpMeta.headers) + Buffer.byteLength(HttpMeta.trailers)

/**
 * The bytes of an answer's metadata (responseMeta's, withTrailers', trailersMeta's: no other key)
 * when past `limit`, else 0: what a message to the caller cannot carry. A UTF-16 unit is 3 UTF-8
 * bytes at most: the exact count only near the bound, no work per answer for ordinary ones.
 */
export const answerMetaPast = (meta: Meta, limit: number): number => {
  const units = (meta.get(HttpMeta.status)?.length ?? 0) + (meta.get(HttpMeta.headers)?.length ?? 0) + (meta.get(HttpMeta.trailers)?.length ?? 0)
  if (ANSWER_KEYS_BYTES + 3 * units <= limit) return 0
  const bytes = metaByteLength(meta, Infinity)
  return bytes > limit ? bytes : 0
}

/** A JSON array's elements, or undefined for any other text. */
const arrayIn = (text: string): ReadonlyArray<unknown> | undefined => {
  try {
    const value: unknown = JSON.parse(text)
    return Array.isArray(value) ? value : undefined
  } catch {
    return undefined
  }
}

/** The header pairs of metadata as sent, unchecked; malformed or missing gives none. */
const pairsIn = (meta: Meta, key: string = HttpMeta.headers): ReadonlyArray<unknown> => {
  const text = meta.get(key)
  return text === undefined ? [] : (arrayIn(text) ?? [])
}

/**
 * The last header list decoded and what the filter kept of it: a peer sends the same list request
 * after request (an app's answers; requests without a trace context), so the JSON is parsed and
 * filtered again only when its text changes, not per hop and request. Callers get a copy of the
 * list, whose [name, value] pairs are shared (readonly, so the compiler refuses a change in place).
 */
let lastHeadersText: string | undefined
let lastHeaders: ReadonlyArray<readonly [string, string]> = []
let lastInvalid = 0
let invalidSeen = 0
const noteInvalid: OnInvalidHeader = (count) => {
  invalidSeen = count
}

/**
 * Where a traced request's list turns to its trace headers: the outbound side puts its span's
 * `traceparent` (then `tracestate`, `baggage`) after the others (propagation.ts's
 * replaceTraceHeaders), so that list's text differs call after call in its tail only.
 */
const TRACE_TAIL = ',["traceparent",'

/**
 * The part before the trace tail of the last traced list decoded, and what the filter kept of it
 * (undefined: it could not be filtered apart, so the whole list is).
 */
let tracedHead: { readonly text: string; readonly kept: ReadonlyArray<readonly [string, string]> | undefined; readonly invalid: number } = { text: "", kept: undefined, invalid: 0 }


/**
 * The value of a tail that is the outbound side's traceparent alone, `,["traceparent","<v>"]]` with
 * `v` a valid W3C traceparent of 55 characters (version 00 as a sidecar writes it, or a later version
 * with no field after its flags: lower-case hex digits and dashes, nothing to unescape, a valid field
 * value, kept by the filter as it is), read without JSON.parse; undefined for any other tail. A
 * traced call without tracestate or baggage, nearly every one: no JSON.parse, filter or pair arrays
 * of its own per request (issue 14). The check is parseTraceparent itself, which keeps its last
 * answer: the inbound observation reads the same string next (propagation.ts's
 * incomingTraceOfPairs) and is not made to check it again.
 */
const plainTraceparentTail = (text: string, cut: number): string | undefined => {
  const start = cut + TRACE_TAIL.length + 1
  const end = text.length - 3
  if (end - start !== TRACEPARENT_LENGTH || text.charCodeAt(start - 1) !== 0x22 || !text.endsWith('"]]')) return undefined
  const value = text.slice(start, end)
  return parseTraceparent(value) === undefined ? undefined : value
}

/**
 * A traced list decoded in two parts: the part before its trace tail (parsed and filtered once while
 * it repeats) and the tail. The same pairs as decoding the whole text, or undefined when the text
 * does not split so (no tail; a part that is not a JSON array; a Connection header naming others).
 * A part before the tail that parses as a non-empty array on its own ends with a whole element of
 * the top-level array (a cut inside a string or a nested array leaves it unclosed), so the whole
 * text is that array with the tail's elements after it, valid exactly when the tail is.
 */
const tracedHeadersOf = (text: string, onInvalid: OnInvalidHeader | undefined): Array<readonly [string, string]> | undefined => {
  let head = tracedHead
  let cut = head.text.length
  // The last head's text, then a trace tail (any cut a head that parses on its own ends at will
  // do, not only the last): no search through the text while the head repeats.
  if (cut === 0 || !text.startsWith(TRACE_TAIL, cut) || text.substring(0, cut) !== head.text) {
    cut = text.lastIndexOf(TRACE_TAIL)
    if (cut <= 0) return undefined
    const before = text.slice(0, cut)
    const pairs = arrayIn(`${before}]`)
    invalidSeen = 0
    const kept = pairs === undefined || pairs.length === 0 ? undefined : endToEndPart(pairs, noteInvalid)
    head = { text: before, kept, invalid: invalidSeen }
    tracedHead = head
  }
  if (head.kept === undefined) return undefined
  const traceparent = plainTraceparentTail(text, cut)
  if (traceparent !== undefined) {
    if (head.invalid > 0) onInvalid?.(head.invalid)
    const pairs = copyToExtend(head.kept)
    pairs.push(["traceparent", traceparent])
    return pairs
  }
  const tail = arrayIn(`[${text.slice(cut + 1)}`)
  if (tail === undefined) return undefined
  invalidSeen = 0
  const kept = endToEndPart(tail, noteInvalid)
  if (kept === undefined) return undefined
  const invalid = head.invalid + invalidSeen
  if (invalid > 0) onInvalid?.(invalid)
  return head.kept.concat(kept)
}

/** The end-to-end headers in metadata (headerFilter.ts): what a peer sent, safe to write. */
export const headersOf = (meta: Meta, onInvalid?: OnInvalidHeader): Array<readonly [string, string]> => {
  const text = meta.get(HttpMeta.headers)
  if (text === undefined) return []
  if (text !== lastHeadersText) {
    const traced = tracedHeadersOf(text, onInvalid)
    if (traced !== undefined) return traced
    invalidSeen = 0
    lastHeaders = endToEndPairs(pairsIn(meta), noteInvalid)
    lastInvalid = invalidSeen
    lastHeadersText = text
  }
  if (lastInvalid > 0) onInvalid?.(lastInvalid)
  return copyToExtend(lastHeaders)
}

/**
 * The last trailers decoded and what the filter kept of them: a gRPC answer's are the same text call
 * after call, parsed and filtered once. Shared, not copied: no caller changes the list.
 */
let lastTrailersText: string | undefined
let lastTrailers: ReadonlyArray<readonly [string, string]> = []
let lastTrailersInvalid = 0

/** The answer's trailers in metadata, filtered like headers; undefined when it carries none. */
export const trailersOf = (meta: Meta, onInvalid?: OnInvalidHeader): ReadonlyArray<readonly [string, string]> | undefined => {
  const text = meta.get(HttpMeta.trailers)
  if (text === undefined) return undefined
  if (text !== lastTrailersText) {
    invalidSeen = 0
    lastTrailers = endToEndPairs(pairsIn(meta, HttpMeta.trailers), noteInvalid)
    lastTrailersInvalid = invalidSeen
    lastTrailersText = text
  }
  if (lastTrailersInvalid > 0) onInvalid?.(lastTrailersInvalid)
  return lastTrailers
}

/** The first value a peer sent for `name` (lower case), before filtering: for the rare header read on its own. */
export const sentValue = (meta: Meta, name: string): string | undefined => {
  for (const pair of pairsIn(meta)) {
    if (Array.isArray(pair) && typeof pair[0] === "string" && pair[0].toLowerCase() === name && typeof pair[1] === "string") return pair[1]
  }
  return undefined
}

/** Go's textproto.CanonicalMIMEHeaderKey: "content-type" -> "Content-Type". */
const canonicalKey = (name: string): string => name.toLowerCase().replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase())

/**
 * The reference HTTP adapter's request path: the URI plus `__http_hdr__`, the headers as Go's
 * http.Header JSON (canonical names, value lists), base64url with padding, appended unescaped.
 */
export const plainRequestPath = (uri: string, headers: HeaderPairs): string => {
  const header: Record<string, Array<string>> = {}
  for (const [name, value] of headers) (header[canonicalKey(name)] ??= []).push(value)
  const sorted = Object.fromEntries(Object.entries(header).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
  const encoded = Buffer.from(JSON.stringify(sorted), "utf8").toString("base64").replace(/\+/g, "-").replace(/\//g, "_")
  return `${uri}${uri.includes("?") ? "&" : "?"}__http_hdr__=${encoded}`
}

/** Reads `__http_hdr__` back as header pairs (what a Go IIP server's IIPArgToHttpHeader gives). */
export const headersFromPlainQuery = (value: string): Array<readonly [string, string]> => {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(value.replace(/-/g, "+").replace(/_/g, "/"), "base64").toString("utf8"))
    if (typeof parsed !== "object" || parsed === null) return []
    return Object.entries(parsed as Record<string, unknown>).flatMap(([name, values]) =>
      Array.isArray(values) ? values.filter((v): v is string => typeof v === "string").map((v) => [name.toLowerCase(), v] as [string, string]) : []
    )
  } catch {
    return []
  }
}

/** Node's incoming headers as pairs (for tests and adapters that have no rawHeaders). */
export const pairsOf = (headers: IncomingHttpHeaders): Array<readonly [string, string]> =>
  Object.entries(headers).flatMap(([name, value]) =>
    value === undefined ? [] : Array.isArray(value) ? value.map((v) => [name, v] as [string, string]) : [[name, value] as [string, string]]
  )
