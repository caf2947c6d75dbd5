// W3C trace context and baggage across the hops of a request: `traceparent`, `tracestate` and
// `baggage` read from the app's HTTP request (or from the header pairs a request carries across
// IIP) into an OpenTelemetry Context, and written from a Context into the headers of the next hop
// (the IIP envelope's header pairs, or the HTTP request to the local app). The W3C propagators of
// @opentelemetry/core, composed, loaded on first use (otelSdk.ts: the request path needs them only
// for tracestate and baggage); nothing is registered globally.
//
//   const parent = extractContext(req.headers)                   // or extractContext(pairs)
//   const span = tracing.tracer.startSpan("GET", { kind: SpanKind.CLIENT }, parent)
//   injectContext(trace.setSpan(parent, span), pairs)             // replaces any old traceparent etc.
//
// Headers come either as a record with lower-case names (Node's IncomingHttpHeaders, or outgoing
// headers built with lower-case names) or as [name, value] pairs (the envelope's form; any case).
// An invalid `traceparent` is ignored: the context has no remote span, so a new trace starts.
// `injectContext` first removes the three headers, so the next hop never sees a stale value.
import { type Context, ROOT_CONTEXT, type TextMapGetter, type TextMapPropagator, type TextMapSetter } from "@opentelemetry/api"
import { otelCore } from "./otelSdk.ts"

export type HeaderRecord = Readonly<Record<string, string | ReadonlyArray<string> | number | undefined>>
export type MutableHeaderRecord = Record<string, string | ReadonlyArray<string> | number | undefined>
export type HeaderPairs = ReadonlyArray<readonly [string, string]>

/** The headers these helpers read and write. */
export const propagationHeaders: ReadonlyArray<string> = ["traceparent", "tracestate", "baggage"]

let composite: TextMapPropagator | undefined
const propagator = (): TextMapPropagator => {
  if (composite === undefined) {
    const { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } = otelCore()
    composite = new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] })
  }
  return composite
}

const recordGetter: TextMapGetter<HeaderRecord> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    const value = carrier[key]
    if (value === undefined) return undefined
    return typeof value === "number" ? String(value) : value as string | Array<string>
  }
}

/** Every value of a name (any case): one string, or several for a repeated header. */
const pairsGetter: TextMapGetter<HeaderPairs> = {
  keys: (carrier) => carrier.map(([name]) => name),
  get: (carrier, key) => {
    let found: string | Array<string> | undefined
    for (const [name, value] of carrier) {
      if (name.length !== key.length || name.toLowerCase() !== key) continue
      found = found === undefined ? value : typeof found === "string" ? [found, value] : [...found, value]
    }
    return found
  }
}

const recordSetter: TextMapSetter<MutableHeaderRecord> = {
  set: (carrier, key, value) => {
    carrier[key] = value
  }
}

const pairsSetter: TextMapSetter<Array<readonly [string, string]>> = {
  set: (carrier, key, value) => {
    carrier.push([key, value])
  }
}

/** The trace context and baggage in `headers`, on top of `base` (default: the root context). */
export const extractContext = (headers: HeaderRecord | HeaderPairs, base: Context = ROOT_CONTEXT): Context =>
  isPairs(headers) ? propagator().extract(base, headers, pairsGetter) : propagator().extract(base, headers, recordGetter)

/**
 * Writes the span context and baggage of `context` into `headers` (in place), after removing any
 * traceparent, tracestate and baggage already there. A context without a valid span writes no
 * traceparent; one without baggage writes no baggage.
 */
export const injectContext = (context: Context, headers: MutableHeaderRecord | Array<readonly [string, string]>): void => {
  if (Array.isArray(headers)) {
    let kept = 0
    for (const pair of headers) if (!propagationHeaders.includes(pair[0].toLowerCase())) headers[kept++] = pair
    headers.length = kept
    propagator().inject(context, headers, pairsSetter)
  } else {
    for (const name of propagationHeaders) delete headers[name]
    propagator().inject(context, headers, recordSetter)
  }
}

const isPairs = (headers: HeaderRecord | HeaderPairs): headers is HeaderPairs => Array.isArray(headers)

// ---------------------------------------------------------------------------------------------
// The request path's form: no Context objects. A traceparent is read and written by hand (no
// regular expression, no intermediate objects); tracestate and baggage, rare on the request path,
// are normalized by the same W3C propagators as above, and only when a request carries them.

/** A parent span as a `traceparent` header gives it: its ids lower-case hex (parseTraceparent checks them). */
export interface TraceParent {
  readonly traceId: string
  readonly spanId: string
  readonly sampled: boolean
}

/** Lower-case hex digits, n of them from `start`, not all zero. */
const isHexId = (text: string, start: number, length: number): boolean => {
  let nonZero = false
  for (let i = start; i < start + length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x30) continue
    if (!((c > 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false
    nonZero = true
  }
  return nonZero
}

const hexValue = (c: number): number => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1)

const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x0b || c === 0x0c

/**
 * A W3C traceparent, as @opentelemetry/core's propagator reads it: `vv-<32 hex>-<16 hex>-ff`,
 * lower-case hex, neither id all zeros, version not ff, more fields only after a version other
 * than 00; one space or tab around it tolerated. Anything else: undefined.
 */
export const parseTraceparent = (value: string | undefined): TraceParent | undefined => {
  if (value === undefined) return undefined
  // The same string read again (a traced request at sidecar B: checked as its header list is
  // decoded, read again as its span starts; issue 14): the answer already given.
  if (value === lastTraceparent) return lastParent
  const parent = parsed(value)
  lastTraceparent = value
  lastParent = parent
  return parent
}

/** A version 00 traceparent's length, as sidecars write it (formatTraceparent). */
export const TRACEPARENT_LENGTH = 55

/** The last value parseTraceparent read, and its answer. One entry: bounded whatever a peer sends. */
let lastTraceparent = ""
let lastParent: TraceParent | undefined = undefined

/** 1 for a lower-case hex digit's code, by code below 128. */
const HEX_DIGIT = new Uint8Array(128)
for (const digit of "0123456789abcdef") HEX_DIGIT[digit.charCodeAt(0)] = 1
const ZERO_TRACE_ID = "0".repeat(32)
const ZERO_SPAN_ID = "0".repeat(16)

/**
 * A traceparent of exactly 55 characters (a version 00 value as sidecars and SDKs write it, nearly
 * every one a sidecar reads), with what `parsed` gives for such a value: the digits looked up in a
 * table in one pass, the all-zero ids found by a compare (issue 14: 238-480 against 403-631 ns for
 * the general path here; both are pinned to @opentelemetry/core's reader by
 * test/telemetry/spanRecord.test.ts).
 */
const parsed55 = (value: string): TraceParent | undefined => {
  if (value.charCodeAt(2) !== 0x2d || value.charCodeAt(35) !== 0x2d || value.charCodeAt(52) !== 0x2d) return undefined
  let digits = 1
  for (let i = 0; i < 55; i++) {
    if (i === 2 || i === 35 || i === 52) continue
    const c = value.charCodeAt(i)
    digits &= c < 128 ? HEX_DIGIT[c]! : 0
  }
  if (digits === 0 || (value.charCodeAt(0) === 0x66 && value.charCodeAt(1) === 0x66)) return undefined
  const traceId = value.slice(3, 35)
  const spanId = value.slice(36, 52)
  if (traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined
  return { traceId, spanId, sampled: (hexValue(value.charCodeAt(54)) & 1) === 1 }
}

const parsed = (value: string): TraceParent | undefined => {
  if (value.length === TRACEPARENT_LENGTH) return parsed55(value)
  let start = 0
  let end = value.length
  if (end > 0 && isSpace(value.charCodeAt(0))) start++
  if (end > start && isSpace(value.charCodeAt(end - 1))) end--
  if (end - start < 55) return undefined
  const v0 = hexValue(value.charCodeAt(start))
  const v1 = hexValue(value.charCodeAt(start + 1))
  if (v0 < 0 || v1 < 0 || (v0 === 15 && v1 === 15)) return undefined
  if (value.charCodeAt(start + 2) !== 0x2d || value.charCodeAt(start + 35) !== 0x2d || value.charCodeAt(start + 52) !== 0x2d) return undefined
  if (!isHexId(value, start + 3, 32) || !isHexId(value, start + 36, 16)) return undefined
  const f0 = hexValue(value.charCodeAt(start + 53))
  const f1 = hexValue(value.charCodeAt(start + 54))
  if (f0 < 0 || f1 < 0) return undefined
  if (end - start > 55 && (value.charCodeAt(start + 55) !== 0x2d || (v0 === 0 && v1 === 0))) return undefined
  return { traceId: value.slice(start + 3, start + 35), spanId: value.slice(start + 36, start + 52), sampled: (f1 & 1) === 1 }
}

/**
 * A traceparent for a span of this process. Its ids are lower-case hex (parseTraceparent's, or
 * drawn here: spanRecord.ts), so the value is 55 characters of hex digits and dashes.
 */
export const formatTraceparent = (traceId: string, spanId: string, sampled: boolean): string =>
  (lastFormatted = `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`)

/** The last value formatTraceparent gave. One entry. */
let lastFormatted = ""

/**
 * `value` is the traceparent this process formatted last: hex digits and dashes, which JSON carries
 * as they are. Sidecar A writes its span's traceparent into the request's header JSON right after
 * making it (httpEnvelope.ts), and is spared a check of each character there (issue 14). A compare
 * of the same string is one pointer; of another, it stops at the first character that differs.
 */
export const isOwnTraceparent = (value: string): boolean => value === lastFormatted

/** A tracestate as the next hop gets it (invalid members dropped, at most 32), or undefined when nothing is left. */
export const passedTraceState = (raw: string | undefined): string | undefined => {
  if (raw === undefined || raw === "") return undefined
  const serialized = new (otelCore().TraceState)(raw).serialize()
  return serialized === "" ? undefined : serialized
}

let baggage: TextMapPropagator | undefined
const baggagePropagator = (): TextMapPropagator => (baggage ??= new (otelCore().W3CBaggagePropagator)())

/** W3C baggage limits: characters of the header read, members taken. */
export const MAX_BAGGAGE_CHARS = 8192
export const MAX_BAGGAGE_MEMBERS = 180

/**
 * The part of a baggage header W3C's limits let a reader take: its first MAX_BAGGAGE_CHARS
 * characters (a member cut there left out) and of them the first MAX_BAGGAGE_MEMBERS members,
 * valid or not. The same string when it is within them. An app's head (16 KiB) or a peer's pairs
 * may hold far more, and @opentelemetry/core's parser reads on through every member it skips, a
 * thrown URIError for each malformed escape.
 */
export const withinBaggageLimits = (header: string): string => {
  let text = header
  if (text.length > MAX_BAGGAGE_CHARS) {
    const comma = text.lastIndexOf(",", MAX_BAGGAGE_CHARS)
    text = comma === -1 ? "" : text.slice(0, comma)
  }
  let at = -1
  for (let members = 0; members < MAX_BAGGAGE_MEMBERS; members++) {
    at = text.indexOf(",", at + 1)
    if (at === -1) return text
  }
  return text.slice(0, at)
}

/**
 * Text decodeURIComponent decodes without throwing: its escapes spell well-formed UTF-8 (RFC 3629:
 * no overlong forms, no surrogates, nothing past U+10FFFF). One way to read any text (each
 * alternative starts with its own byte): linear.
 */
const DECODABLE = /^(?:[^%]|%[0-7][0-9a-f]|%c[2-9a-f]%[89ab][0-9a-f]|%d[0-9a-f]%[89ab][0-9a-f]|%e0%[ab][0-9a-f]%[89ab][0-9a-f]|%e[1-9abcef](?:%[89ab][0-9a-f]){2}|%ed%[89][0-9a-f]%[89ab][0-9a-f]|%f0%[9ab][0-9a-f](?:%[89ab][0-9a-f]){2}|%f[1-3](?:%[89ab][0-9a-f]){3}|%f4%8[0-9a-f](?:%[89ab][0-9a-f]){2})*$/i

/** Whether decodeURIComponent takes `text` (exported for its differential test). */
export const isDecodable = (text: string): boolean => !text.includes("%") || DECODABLE.test(text)

/**
 * The members whose key and value (the text before any `;`) decode: the W3C propagator skips the
 * others too, but by catching the URIError each throws, tens of microseconds apiece.
 */
const decodableMembers = (read: string): string => {
  if (!read.includes("%")) return read
  const members = read.split(",")
  const kept = members.filter((member) => {
    const semicolon = member.indexOf(";")
    return isDecodable(semicolon === -1 ? member : member.slice(0, semicolon))
  })
  return kept.length === members.length ? read : kept.join(",")
}

/** Baggage as the next hop gets it (within W3C's limits, the W3C propagator's parse), or undefined when nothing is left. */
export const passedBaggage = (raw: string | undefined): string | undefined => {
  if (raw === undefined) return undefined
  const read = decodableMembers(withinBaggageLimits(raw))
  if (read === "") return undefined
  const out: MutableHeaderRecord = {}
  const w3cBaggage = baggagePropagator()
  w3cBaggage.inject(w3cBaggage.extract(ROOT_CONTEXT, { baggage: read }, recordGetter), out, recordSetter)
  const value = out.baggage
  return typeof value === "string" && value !== "" ? value : undefined
}

/** The trace headers a request came with, as the request path keeps them. */
export interface IncomingTrace {
  readonly parent: TraceParent | undefined
  /** Normalized, and only with a valid parent (a tracestate belongs to its traceparent). */
  readonly traceState: string | undefined
  readonly baggage: string | undefined
}

const noTrace: IncomingTrace = { parent: undefined, traceState: undefined, baggage: undefined }

const incoming = (traceparent: string | undefined, tracestate: string | undefined, baggage: string | undefined): IncomingTrace => {
  const parent = parseTraceparent(traceparent)
  if (parent === undefined && baggage === undefined) return noTrace
  return { parent, traceState: parent === undefined ? undefined : passedTraceState(tracestate), baggage: passedBaggage(baggage) }
}

/** Several values of one header, as one (tracestate and baggage lists join with commas). */
const joined = (value: string | ReadonlyArray<string> | number | undefined): string | undefined =>
  value === undefined ? undefined : typeof value === "string" ? value : typeof value === "number" ? String(value) : value.join(",")

/** The trace headers of node's incoming headers (lower-case names); a repeated traceparent counts by its first value. */
export const incomingTraceOfRecord = (headers: HeaderRecord): IncomingTrace => {
  const traceparent = headers.traceparent
  const first = Array.isArray(traceparent) ? (traceparent as ReadonlyArray<string>)[0] : typeof traceparent === "string" ? traceparent : undefined
  const baggage = headers.baggage
  if (first === undefined && baggage === undefined) return noTrace
  return incoming(first, joined(headers.tracestate), joined(baggage))
}

/** The trace headers of header pairs (any case). */
export const incomingTraceOfPairs = (pairs: HeaderPairs): IncomingTrace => {
  let traceparent: string | undefined
  let tracestate: string | undefined
  let baggage: string | undefined
  // An index loop: destructuring each pair in a for-of costs an iterator per pair (once per request).
  for (let i = 0; i < pairs.length; i++) {
    const name = pairs[i]![0]
    const value = pairs[i]![1]
    if (name.length === 11 && name.toLowerCase() === "traceparent") traceparent ??= value
    else if (name.length === 10 && name.toLowerCase() === "tracestate") tracestate = tracestate === undefined ? value : `${tracestate},${value}`
    else if (name.length === 7 && name.toLowerCase() === "baggage") baggage = baggage === undefined ? value : `${baggage},${value}`
  }
  if (traceparent === undefined && baggage === undefined) return noTrace
  return incoming(traceparent, tracestate, baggage)
}

/**
 * Replaces the trace headers in `pairs` (any case, in place) with this hop's: its span's
 * traceparent, then the tracestate and baggage it passes on.
 */
export const replaceTraceHeaders = (pairs: Array<readonly [string, string]>, traceparent: string, trace: IncomingTrace): void => {
  let kept = 0
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]!
    const name = pair[0]
    const isTraceHeader = (name.length === 11 || name.length === 10 || name.length === 7) && propagationHeaders.includes(name.toLowerCase())
    if (!isTraceHeader) pairs[kept++] = pair
  }
  pairs.length = kept
  pairs.push(["traceparent", traceparent])
  if (trace.traceState !== undefined) pairs.push(["tracestate", trace.traceState])
  if (trace.baggage !== undefined) pairs.push(["baggage", trace.baggage])
}
