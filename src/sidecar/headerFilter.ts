// The one filter every HTTP leg of the sidecar passes its headers through, in both directions:
// the app's request into the envelope (outbound), the envelope's (or `__http_hdr__`'s) headers
// into the request to the local app (inbound), the app's answer into the envelope (inbound), and
// the envelope's answer back to the calling app (outbound). What leaves is end-to-end headers only:
// hop-by-hop ones (RFC 9110 §7.6.1, and whatever Connection names) and framing never cross a hop,
// since the side that writes a message frames it from the body it really sends; a peer that could
// pass `content-length: 0` with a body, or `transfer-encoding` with `content-length`, would make
// the app read a second request (or the calling app a second response) on a keep-alive socket.
// Names must be tokens and values must be writable (no CR, LF, NUL or other controls, nothing
// above Latin-1); a pair that is not is dropped and counted, never written. Runs per request: one
// pass, a table and a Set lookup per header, a second pass only when Connection names extra ones;
// a raw list equal to the last one filtered costs a compare per entry (its kept pairs reused).
// Pure (what it keeps between calls changes no result).

import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/** The header an app may set to shorten a request's deadline, and that carries what is left to the next app (ms). */
export const TIMEOUT_HEADER = "iip-timeout"

/** Where a caller learns which hop failed and why; only our sidecars write it, from a typed mesh error. */
export const MESH_ERROR_HEADER = "x-iip-mesh-error"

/**
 * The caller's verified identity (its SPIFFE ID), as the inbound sidecar tells its app. Only that
 * sidecar writes it, after this filter dropped whatever a caller or a peer sent under that name.
 */
export const CLIENT_ID_HEADER = "x-iip-mesh-client-id"

/**
 * Never forwarded: hop-by-hop headers, framing (set by whoever writes the message), the host (the
 * envelope's authority), `expect` (a hop's handshake), and what the mesh itself sets per hop.
 * `proxy-*` is dropped by prefix. (`__proto__` too, so whatever passes could key a plain object.)
 */
const dropped = new Set([
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  "content-length",
  "host",
  "expect",
  TIMEOUT_HEADER,
  MESH_ERROR_HEADER,
  CLIENT_ID_HEADER,
  // Not a header anyone sends, but a token: it would set the prototype of an object keyed by name.
  "__proto__"
])

/** RFC 9110 tchar: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA. */
const tchar = new Uint8Array(128)
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") tchar[c.charCodeAt(0)] = 1

/** A header name (or method): one or more token characters. */
export const isToken = (text: string): boolean => lowerToken(text) !== undefined

/** The name in lower case if it is a token, else undefined; one scan, no copy when it is lower case already. */
const lowerToken = (text: string): string | undefined => {
  if (text.length === 0) return undefined
  let upper = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c >= 128 || tchar[c] === 0) return undefined
    if (c >= 0x41 && c <= 0x5a) upper = true
  }
  return upper ? text.toLowerCase() : text
}

/** A header value node:http writes as given: HTAB, visible ASCII and space, or Latin-1 above 0x7f. */
export const isFieldValue = (text: string): boolean => {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x20 ? c !== 0x09 : c === 0x7f || c > 0xff) return false
  }
  return true
}

const isOws = (c: number): boolean => c === 0x20 || c === 0x09

/**
 * A field value without leading and trailing spaces and tabs (RFC 9110 §5.5: they are no part of
 * it). An HTTP/1 parser strips them; a mesh peer's pairs come as it sent them, and HTTP/2 forbids
 * them (RFC 9113 §8.2.1): node:http2 drops such a field, so `grpc-status: " 0"` lost the status.
 * Trimmed, not refused: the value means what an HTTP/1 hop would have read. Not String#trim, which
 * also strips NBSP (0xa0), a Latin-1 byte of the value. The same string when there is none.
 */
export const withoutOws = (value: string): string => {
  let end = value.length
  if (end === 0 || (!isOws(value.charCodeAt(0)) && !isOws(value.charCodeAt(end - 1)))) return value
  let start = 0
  while (start < end && isOws(value.charCodeAt(start))) start++
  while (end > start && isOws(value.charCodeAt(end - 1))) end--
  return value.slice(start, end)
}

/** Whether a (lower-case, valid) name never crosses a hop. */
const isHopHeader = (name: string): boolean => dropped.has(name) || name.startsWith("proxy-")

/** Whether a header name may be written across a hop: a token, and neither hop-by-hop, framing nor the mesh's own. */
export const isEndToEndName = (name: string): boolean => {
  const lower = lowerToken(name)
  return lower !== undefined && !isHopHeader(lower)
}

/** Readonly: the head caches share pairs between requests (below, httpEnvelope.ts). */
export type HeaderPair = readonly [string, string]

/** Counts pairs dropped for an invalid name or value (a metric, so bounded whatever the input). */
export type OnInvalidHeader = (count: number) => void

/**
 * Keeps the hidden class of Kept alive while idle (shapeAnchor.ts): B builds one only when the app's
 * head differs from the last (its Date header, once a second), so none may be alive at a full
 * collection, which then deoptimized endToEndHeaders and onResponseStart (appExchange.ts).
 */
const keptShape = new ShapeAnchor<Kept>()

/** Gathers one message's end-to-end headers, pair by pair. */
class Kept {
  readonly out: Array<HeaderPair> = []
  /** Names listed in Connection, other than those dropped anyway. */
  named: Array<string> | undefined = undefined
  invalid = 0

  constructor() {
    keptShape.newest = this
  }

  /** `pair`: the [name, value] array they came in, kept as it is when the name is lower case already. */
  add(name: unknown, rawValue: unknown, pair?: Array<unknown>): void {
    const lower = typeof name === "string" && typeof rawValue === "string" && isFieldValue(rawValue) ? lowerToken(name) : undefined
    if (lower === undefined) {
      this.invalid++
      return
    }
    const value = withoutOws(rawValue as string)
    if (!isHopHeader(lower)) {
      this.out.push(pair !== undefined && lower === name && value === rawValue ? (pair as unknown as HeaderPair) : [lower, value])
      return
    }
    if (lower !== "connection") return
    for (const token of value.split(",")) {
      const option = token.trim().toLowerCase()
      if (option !== "" && !isHopHeader(option)) (this.named ??= []).push(option)
    }
  }

  result(onInvalid: OnInvalidHeader | undefined): Array<HeaderPair> {
    if (this.invalid > 0 && onInvalid !== undefined) onInvalid(this.invalid)
    if (this.named === undefined) return this.out
    const extra = new Set(this.named)
    return this.out.filter(([name]) => !extra.has(name))
  }
}

/**
 * A header pair a hop adds, made anew only when its value changes: x-forwarded-host, the client's
 * address and the caller's identity are the same request after request (each a 64-byte array per
 * request otherwise, issue 14). Shared between lists: no one changes a pair in place (readonly).
 */
export class AddedPair {
  private readonly name: string
  private pair: HeaderPair

  constructor(name: string) {
    this.name = name
    this.pair = [name, ""]
  }

  of(value: string): HeaderPair {
    if (this.pair[1] !== value) this.pair = [this.name, value]
    return this.pair
  }
}

/**
 * A copy of a cached header list for one request to add to. Pushed pair by pair into a new array,
 * so its store has V8's first capacity (17 entries) and the pairs a hop adds (x-forwarded-*, a
 * traceparent, the client id, a content-length) fit without a second store; `slice()` gives a store
 * of exactly the list's length, which the first push copies into a larger one (issue 14: about
 * 150-200 bytes a request for each of the three lists so copied between the two sidecars).
 */
export const copyToExtend = (list: ReadonlyArray<HeaderPair>): Array<HeaderPair> => {
  const copy: Array<HeaderPair> = []
  for (let i = 0; i < list.length; i++) copy.push(list[i]!)
  return copy
}

/**
 * The last raw list filtered and what was kept of it: an app sends the same head request after
 * request (and answer after answer), so the same list is filtered once; callers get a copy of the
 * kept list, whose [name, value] pairs are shared: callers drop, replace or add pairs in their own
 * list, and `HeaderPair` is readonly so that the compiler refuses a change to a pair in place. One
 * per kind of list that repeats: a gRPC app's answer heads and its trailers, filtered in turn
 * through one cache, would each miss it every call.
 */
export class RawListCache {
  names: ReadonlyArray<string> = []
  kept: ReadonlyArray<HeaderPair> = []
  invalid = 0
}

/** The cache of the heads that have no cache of their own. */
const lastRaw = new RawListCache()

/**
 * The end-to-end headers of node's `rawHeaders` (name, value, name, value ...), in order, names
 * lower case; also a raw HTTP/2 field list as node:http2 hands it, whose pseudo-headers (`:status`,
 * `:path` ...) are the message's own, left out, not counted as invalid (an HTTP/1.1 parser never
 * gives a name that is not a token). One pass, no header object read back.
 */
export const endToEndHeaders = (rawHeaders: ReadonlyArray<string>, onInvalid?: OnInvalidHeader, last: RawListCache = lastRaw): Array<HeaderPair> => {
  if (rawHeaders.length === last.names.length) {
    let same = true
    for (let i = 0; same && i < rawHeaders.length; i++) same = rawHeaders[i] === last.names[i]
    if (same) {
      if (last.invalid > 0 && onInvalid !== undefined) onInvalid(last.invalid)
      return copyToExtend(last.kept)
    }
  }
  const kept = new Kept()
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    if (name.charCodeAt(0) !== 0x3a) kept.add(name, rawHeaders[i + 1])
  }
  const result = kept.result(onInvalid)
  last.names = rawHeaders.slice()
  last.kept = result.slice()
  last.invalid = kept.invalid
  return result
}

/**
 * Whether `pairs` (their first `count`) are the names and values `flat` holds (name, value, name,
 * value ...), each the same string: how the per-process head caches (the envelope's header JSON,
 * the outbound answer's head lines) tell a repeated head from a new one without building anything.
 */
export const pairsMatchFlat = (pairs: ReadonlyArray<readonly [string, string]>, flat: ReadonlyArray<string>, count: number = pairs.length): boolean => {
  if (count * 2 !== flat.length) return false
  for (let i = 0; i < count; i++) {
    const pair = pairs[i]!
    if (pair[0] !== flat[2 * i] || pair[1] !== flat[2 * i + 1]) return false
  }
  return true
}

/**
 * The end-to-end headers of [name, value] pairs from the wire (an envelope, a `__http_hdr__`
 * query), in order, names lower case; an entry that is not two strings counts as invalid. A pair
 * kept as it came (a lower-case name) is the caller's array itself, not a copy: the pairs are
 * handed over (parsed for this call), and the result may be changed in place.
 */
export const endToEndPairs = (pairs: ReadonlyArray<unknown>, onInvalid?: OnInvalidHeader): Array<HeaderPair> => keptOf(pairs).result(onInvalid)

/**
 * endToEndPairs for one part of a list whose parts are filtered apart (httpEnvelope.ts's request
 * lists: the part before their trace headers is filtered once while it repeats): undefined when a
 * Connection header in it names other headers, which may sit in another part (the caller then
 * filters the whole list).
 */
export const endToEndPart = (pairs: ReadonlyArray<unknown>, onInvalid?: OnInvalidHeader): Array<HeaderPair> | undefined => {
  const kept = keptOf(pairs)
  return kept.named === undefined ? kept.result(onInvalid) : undefined
}

/** Wire pairs through the filter, Connection's names not yet applied; an entry that is not two strings counts as invalid. */
const keptOf = (pairs: ReadonlyArray<unknown>): Kept => {
  const kept = new Kept()
  // An index loop: the for-of's iterator was allocated per request (~450 B a call in profiles of both sidecars).
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]
    if (Array.isArray(pair) && pair.length === 2) kept.add(pair[0], pair[1], pair)
    else kept.invalid++
  }
  return kept
}

/**
 * A content-length that only describes (the answer to HEAD, a 304): carried on as it was when it is
 * a plain decimal, since no body follows it; undefined otherwise.
 */
export const describedLength = (value: string | undefined): string | undefined =>
  value !== undefined && /^\d{1,15}$/.test(value) ? value : undefined

/** Longest Upgrade value carried (a few protocols; anything longer is no real client's). */
const MAX_UPGRADE_LENGTH = 256

/**
 * An `Upgrade` value (RFC 9110 §7.8: comma-separated `name[/version]`, each a token) in lower case,
 * joined by ", "; undefined when it is absent, empty, too long, or any protocol is not tokens. The
 * only form in which an Upgrade value crosses a hop: it travels apart from the end-to-end headers,
 * which never carry `upgrade` or `connection`.
 */
export const upgradeProtocols = (value: string | undefined): string | undefined => {
  if (value === undefined || value.length > MAX_UPGRADE_LENGTH) return undefined
  const protocols: Array<string> = []
  for (const part of value.split(",")) {
    const protocol = part.trim()
    if (protocol === "") continue
    const slash = protocol.indexOf("/")
    const name = slash === -1 ? protocol : protocol.slice(0, slash)
    const version = slash === -1 ? undefined : protocol.slice(slash + 1)
    if (!isToken(name) || (version !== undefined && !isToken(version))) return undefined
    protocols.push(protocol.toLowerCase())
  }
  return protocols.length === 0 ? undefined : protocols.join(", ")
}

/**
 * The protocols of an `upgradeProtocols` list the mesh carries, as such a list ("" when none is
 * left). Never h2c: a switch to it would turn the one request the far side checked (authorized,
 * rate-limited, observed) into an HTTP/2 connection carrying any number more that it never sees
 * (h2c smuggling). HTTP/2 from an app comes with prior knowledge instead (outboundH2.ts).
 */
export const carriedProtocols = (protocols: string): string => {
  if (!protocols.includes("h2c")) return protocols
  return protocols.split(", ").filter((protocol) => protocol !== "h2c" && !protocol.startsWith("h2c/")).join(", ")
}

/**
 * Whether an answer's switch (an `upgradeProtocols` list) names only protocols the request asked
 * for (RFC 9110 §7.8): a far side that switches to anything else gets no tunnel.
 */
export const switchedAmong = (switched: string, asked: string): boolean => {
  const offered = asked.split(", ")
  return switched.split(", ").every((protocol) => offered.includes(protocol))
}
