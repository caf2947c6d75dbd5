// W3C trace context and baggage across the hops of a request: `traceparent`, `tracestate` and
// `baggage` read from the app's HTTP request (or from the header pairs a request carries across
// IIP) into an OpenTelemetry Context, and written from a Context into the headers of the next hop
// (the IIP envelope's header pairs, or the HTTP request to the local app). The W3C propagators of
// @opentelemetry/core, composed; nothing is registered globally.
//
//   const parent = extractContext(req.headers)                   // or extractContext(pairs)
//   const span = tracing.tracer.startSpan("GET", { kind: SpanKind.CLIENT }, parent)
//   injectContext(trace.setSpan(parent, span), pairs)             // replaces any old traceparent etc.
//
// Headers come either as a record with lower-case names (Node's IncomingHttpHeaders, or outgoing
// headers built with lower-case names) or as [name, value] pairs (the envelope's form; any case).
// An invalid `traceparent` is ignored: the context has no remote span, so a new trace starts.
// `injectContext` first removes the three headers, so the next hop never sees a stale value.
import { type Context, ROOT_CONTEXT, type TextMapGetter, type TextMapSetter } from "@opentelemetry/api"
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core"

export type HeaderRecord = Readonly<Record<string, string | ReadonlyArray<string> | number | undefined>>
export type MutableHeaderRecord = Record<string, string | ReadonlyArray<string> | number | undefined>
export type HeaderPairs = ReadonlyArray<readonly [string, string]>

/** The headers these helpers read and write. */
export const propagationHeaders: ReadonlyArray<string> = ["traceparent", "tracestate", "baggage"]

const propagator = new CompositePropagator({
  propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()]
})

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

const pairsSetter: TextMapSetter<Array<[string, string]>> = {
  set: (carrier, key, value) => {
    carrier.push([key, value])
  }
}

/** The trace context and baggage in `headers`, on top of `base` (default: the root context). */
export const extractContext = (headers: HeaderRecord | HeaderPairs, base: Context = ROOT_CONTEXT): Context =>
  isPairs(headers) ? propagator.extract(base, headers, pairsGetter) : propagator.extract(base, headers, recordGetter)

/**
 * Writes the span context and baggage of `context` into `headers` (in place), after removing any
 * traceparent, tracestate and baggage already there. A context without a valid span writes no
 * traceparent; one without baggage writes no baggage.
 */
export const injectContext = (context: Context, headers: MutableHeaderRecord | Array<[string, string]>): void => {
  if (Array.isArray(headers)) {
    let kept = 0
    for (const pair of headers) if (!propagationHeaders.includes(pair[0].toLowerCase())) headers[kept++] = pair
    headers.length = kept
    propagator.inject(context, headers, pairsSetter)
  } else {
    for (const name of propagationHeaders) delete headers[name]
    propagator.inject(context, headers, recordSetter)
  }
}

const isPairs = (headers: HeaderRecord | HeaderPairs): headers is HeaderPairs => Array.isArray(headers)
