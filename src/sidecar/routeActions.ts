// What a route does to the requests it matches, besides picking their subset (routes.ts): its own
// request timeout and retry settings (over the sidecar's), request header modifiers (end-to-end
// headers only: the header filter's rule, so a route can never write framing or hop-by-hop
// headers), fault injection (an abort with a status, a fixed delay, each for a percentage of
// the route's requests), and a mirror to another subset (mirror.ts). Checked with Schema here as part of a route, compiled once; outbound.ts
// applies them per request.
//
//   timeoutMs: 2000                     # the request's deadline, all tries (1 ms - 10 min)
//   retries: { attempts: 2, perTryTimeoutMs: 500 }   # tries, the first included (1-5)
//   requestHeaders:
//     set: { x-env: canary }            # replaces every value of the name
//     add: { x-tag: a }                 # one more value
//     remove: [x-debug]
//   fault:
//     abort: { status: 503, percent: 10 }
//     delay: { ms: 200, percent: 50 }
//   mirror: { subset: v2, percent: 100, maxInFlight: 16 }   # answers dropped; over the bound, skipped
//
// Percentages are counted, not drawn: a smooth weighted round-robin over hit/miss (as the split
// is), so 10 % is exactly 1 request in 10, spread out.
import * as Schema from "effect/Schema"
import { WeightedRoundRobin } from "../balancer/weightedRoundRobin.ts"
import { isSubsetLabel } from "../balancer/subsets.ts"
import { type HeaderPair, isEndToEndName, isFieldValue } from "./headerFilter.ts"
import { MirrorGate } from "./mirror.ts"

/** Tries a route may ask for, the first included. */
export const MAX_ROUTE_ATTEMPTS = 5
/** A route's timeouts and delays, at most (ms). */
export const MAX_ROUTE_TIMEOUT_MS = 600_000
export const MAX_FAULT_DELAY_MS = 60_000
/** Mirrors of one route in flight: by default, at most. */
export const DEFAULT_MIRROR_IN_FLIGHT = 16
export const MAX_MIRROR_IN_FLIGHT = 1024
/** Headers per modifier list, at most. */
const MAX_MODIFIED = 16

const Millis = (maximum: number) => Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum })))
const Percent = Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 100 })))

const nameProblem = (name: string): string | undefined =>
  name.length <= 256 && isEndToEndName(name) ? undefined : `Expected an end-to-end header name (a token; not hop-by-hop, framing or the mesh's own), got ${JSON.stringify(name.slice(0, 80))}`

const HeaderValues = Schema.Record(Schema.String, Schema.String).pipe(
  Schema.check(Schema.makeFilter((record: Readonly<Record<string, string>>) => {
    const names = Object.keys(record)
    if (names.length > MAX_MODIFIED) return `Expected at most ${MAX_MODIFIED} headers, got ${names.length}`
    for (const name of names) {
      const problem = nameProblem(name)
      if (problem !== undefined) return problem
      const value = record[name]!
      if (value.length > 1024 || !isFieldValue(value)) return `Expected a header value of at most 1024 characters without controls, for ${JSON.stringify(name)}`
    }
    return undefined
  }))
)

export const RouteActionFields = {
  timeoutMs: Schema.optionalKey(Millis(MAX_ROUTE_TIMEOUT_MS)),
  retries: Schema.optionalKey(Schema.Struct({
    attempts: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: MAX_ROUTE_ATTEMPTS }))),
    perTryTimeoutMs: Schema.optionalKey(Millis(MAX_ROUTE_TIMEOUT_MS))
  })),
  requestHeaders: Schema.optionalKey(Schema.Struct({
    set: Schema.optionalKey(HeaderValues),
    add: Schema.optionalKey(HeaderValues),
    remove: Schema.optionalKey(Schema.Array(Schema.String.pipe(Schema.check(Schema.makeFilter(nameProblem)))).pipe(Schema.check(Schema.isMaxLength(MAX_MODIFIED))))
  })),
  fault: Schema.optionalKey(Schema.Struct({
    abort: Schema.optionalKey(Schema.Struct({ status: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 400, maximum: 599 }))), percent: Percent })),
    delay: Schema.optionalKey(Schema.Struct({ ms: Millis(MAX_FAULT_DELAY_MS), percent: Percent }))
  })),
  mirror: Schema.optionalKey(Schema.Struct({
    subset: Schema.String.pipe(Schema.check(Schema.makeFilter((text: string) => (isSubsetLabel(text) ? undefined : `Expected a label (1-63 of A-Z a-z 0-9 . _ -), got ${JSON.stringify(text.slice(0, 80))}`)))),
    percent: Schema.optionalKey(Percent),
    maxInFlight: Schema.optionalKey(Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: MAX_MIRROR_IN_FLIGHT }))))
  }))
}

const ActionsSpec = Schema.Struct(RouteActionFields)
type ActionsSpec = typeof ActionsSpec.Type

/** A route's actions, compiled; a field absent leaves the sidecar's own behaviour. */
export interface RouteActions {
  readonly timeoutMs?: number
  readonly attempts?: number
  readonly perTryTimeoutMs?: number
  /** Applies the header modifiers to a request's end-to-end headers (names lower case), in place. */
  readonly modifyHeaders?: (headers: Array<HeaderPair>) => void
  /** The status to abort this request with, or undefined to let it through. */
  readonly abortStatus?: () => number | undefined
  /** How long to hold this request before sending it (0: not at all). */
  readonly delayMs?: () => number
  /** The subset to mirror this request to, or undefined for none; the gate bounds the mirrors in flight. */
  readonly mirrorSubset?: () => string | undefined
  readonly mirrorGate?: MirrorGate
}

/** `percent` of the calls answer true, counted: exactly that share over every 100, spread out. */
const counted = (percent: number): () => boolean => {
  const wrr = new WeightedRoundRobin([{ hit: true, weight: percent }, { hit: false, weight: 100 - percent }])
  return () => wrr.pick()!.hit
}

const headerModifier = (spec: NonNullable<ActionsSpec["requestHeaders"]>): (headers: Array<HeaderPair>) => void => {
  const set = Object.entries(spec.set ?? {}).map(([name, value]): HeaderPair => [name.toLowerCase(), value])
  const add = Object.entries(spec.add ?? {}).map(([name, value]): HeaderPair => [name.toLowerCase(), value])
  const gone = new Set([...(spec.remove ?? []).map((name) => name.toLowerCase()), ...set.map(([name]) => name)])
  return (headers) => {
    let kept = 0
    for (const pair of headers) if (!gone.has(pair[0])) headers[kept++] = pair
    headers.length = kept
    for (const [name, value] of set) headers.push([name, value])
    for (const [name, value] of add) headers.push([name, value])
  }
}

/** The compiled actions of a route, or undefined when it has none (a route that only splits costs nothing more). */
export const compileActions = (spec: ActionsSpec): RouteActions | undefined => {
  const { timeoutMs, retries, requestHeaders, fault, mirror } = spec
  if (timeoutMs === undefined && retries === undefined && requestHeaders === undefined && fault === undefined && mirror === undefined) return undefined
  const abort = fault?.abort
  const delay = fault?.delay
  const aborts = abort === undefined || abort.percent === 0 ? undefined : counted(abort.percent)
  const delays = delay === undefined || delay.percent === 0 ? undefined : counted(delay.percent)
  const mirrorPercent = mirror?.percent ?? 100
  const mirrors = mirror === undefined || mirrorPercent === 0 ? undefined : counted(mirrorPercent)
  return {
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(retries === undefined ? {} : { attempts: retries.attempts }),
    ...(retries?.perTryTimeoutMs === undefined ? {} : { perTryTimeoutMs: retries.perTryTimeoutMs }),
    ...(requestHeaders === undefined ? {} : { modifyHeaders: headerModifier(requestHeaders) }),
    ...(aborts === undefined ? {} : { abortStatus: () => (aborts() ? abort!.status : undefined) }),
    ...(delays === undefined ? {} : { delayMs: () => (delays() ? delay!.ms : 0) }),
    ...(mirrors === undefined ? {} : { mirrorSubset: () => (mirrors() ? mirror!.subset : undefined), mirrorGate: new MirrorGate(mirror!.maxInFlight ?? DEFAULT_MIRROR_IN_FLIGHT) })
  }
}
