// Rate limits: local token buckets, listed in the routes document beside the routes (routes.ts
// checks and compiles them with it). An outbound limit caps this app's calls to a target service
// (all of them, or those one route matched); an inbound limit caps the calls into a service at its
// own sidecar (a document shared by every sidecar applies each inbound limit where its service
// is served). A limit with a `key` keeps one bucket per value: the caller (inbound: its verified
// identity, else its address, an IPv6 one's prefix, a /64 by default: sourceKeyOf, since an IPv6
// host can usually send from every address of its /64; outbound: the app connection's address)
// or a header's value. A
// request over any limit that applies is answered 429 with `retry-after` and
// `x-iip-mesh-error: <hop>; reason=rate_limited`, never reaches the balancer (outbound) or the app
// (inbound), and is counted (iip_mesh_rate_limited_total).
//
//   rateLimits:
//     - name: pricing-cap         # a label, unique
//       service: pricing
//       direction: outbound       # or inbound (default outbound)
//       route: pricing-canary     # outbound only: just the requests this route matched
//       perSecond: 100            # tokens added a second (0.001 - 1,000,000)
//       burst: 100                # the bucket's size (default: perSecond rounded up, at least 1)
//       key: { header: x-user }   # or "caller"; a missing header is one more value, ""
//
// The buckets of a keyed limit are bounded (the `rateLimitKeys` setting): a caller who invents
// values cannot grow memory. Past the bound, buckets that have refilled (as good as new) are
// dropped, at most once a second; when none has, new values share one overflow bucket, so they are
// limited together rather than let through. A reloaded document starts with full buckets.
import type { IncomingHttpHeaders } from "node:http"
import * as Schema from "effect/Schema"
import { type Failure, failure } from "../iip/server.ts"
import { sourceKeyOf } from "../iip/sourceKey.ts"
import { TokenBucket } from "../mux/tokenBucket.ts"
import type { Direction, MeshMetrics } from "../telemetry/metrics.ts"
import type { HeaderPair } from "./headerFilter.ts"
import { AppErrorCode, ProxyError } from "./proxyError.ts"
import { HEADER_NAME, Label, ServiceName } from "./routeFields.ts"

/** Buckets per keyed limit, by default (the `rateLimitKeys` setting, at most 100,000: a sweep walks them all). */
export const DEFAULT_RATE_LIMIT_KEYS = 1024
/** A key's value is cut to this many characters (memory per bucket stays bounded). */
const MAX_KEY_CHARS = 256
/** Refilled buckets are swept out at most this often (ms). */
const SWEEP_INTERVAL_MS = 1000

export const RateLimitSpec = Schema.Struct({
  name: Label,
  service: ServiceName,
  direction: Schema.optionalKey(Schema.Literals(["outbound", "inbound"])),
  route: Schema.optionalKey(Label),
  perSecond: Schema.Number.pipe(Schema.check(Schema.isBetween({ minimum: 0.001, maximum: 1_000_000 }))),
  burst: Schema.optionalKey(Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1_000_000 })))),
  key: Schema.optionalKey(Schema.Union([
    Schema.Literal("caller"),
    Schema.Struct({ header: Schema.String.pipe(Schema.check(Schema.makeFilter((name: string) => (HEADER_NAME.test(name) ? undefined : `Expected a header name (a token), got ${JSON.stringify(name.slice(0, 80))}`)))) })
  ]))
})
export type RateLimitSpec = typeof RateLimitSpec.Type

/** One bucket per key, at most `maxKeys` of them, and one overflow bucket the keys past that share. */
export class BucketTable {
  private readonly buckets = new Map<string, TokenBucket>()
  private readonly perSecond: number
  private readonly burst: number
  private readonly maxKeys: number
  private overflow: TokenBucket | undefined = undefined
  private lastSweep = Number.NEGATIVE_INFINITY

  constructor(perSecond: number, burst: number, maxKeys: number) {
    this.perSecond = perSecond
    this.burst = burst
    this.maxKeys = maxKeys
  }

  get size(): number {
    return this.buckets.size
  }

  take(key: string, now: number): number {
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxKeys) this.sweep(now)
      if (this.buckets.size < this.maxKeys) {
        bucket = new TokenBucket(this.perSecond, this.burst, now)
        this.buckets.set(key, bucket)
      } else bucket = this.overflow ??= new TokenBucket(this.perSecond, this.burst, now)
    }
    return bucket.take(now)
  }

  private sweep(now: number): void {
    if (now - this.lastSweep < SWEEP_INTERVAL_MS) return
    this.lastSweep = now
    for (const [key, bucket] of this.buckets) if (bucket.isFull(now)) this.buckets.delete(key)
  }
}

type KeyKind = { readonly _tag: "None" } | { readonly _tag: "Caller" } | { readonly _tag: "Header"; readonly name: string }

/** A limit, compiled: its buckets and what picks a request's bucket. */
export class CompiledLimit {
  readonly name: string
  readonly service: string
  readonly direction: Direction
  readonly route: string | undefined
  readonly key: KeyKind
  readonly perSecond: number
  readonly burst: number
  /** Requests it answered 429 since it was loaded (the admin's /mesh view). */
  refused = 0
  private readonly single: TokenBucket | undefined
  private readonly table: BucketTable | undefined

  constructor(spec: RateLimitSpec, maxKeys: number, now: number) {
    this.name = spec.name
    this.service = spec.service
    this.direction = spec.direction ?? "outbound"
    this.route = spec.route
    this.key = spec.key === undefined ? { _tag: "None" } : spec.key === "caller" ? { _tag: "Caller" } : { _tag: "Header", name: spec.key.header.toLowerCase() }
    const burst = spec.burst ?? Math.max(1, Math.ceil(spec.perSecond))
    this.perSecond = spec.perSecond
    this.burst = burst
    if (this.key._tag === "None") this.single = new TokenBucket(spec.perSecond, burst, now)
    else this.table = new BucketTable(spec.perSecond, burst, maxKeys)
  }

  /** 0 when the request may go; else ms until it may. `keyOf` is asked only by a keyed limit. */
  take(keyOf: (key: KeyKind) => string, now: number): number {
    if (this.single !== undefined) return this.single.take(now)
    const value = keyOf(this.key)
    return this.table!.take(value.length <= MAX_KEY_CHARS ? value : value.slice(0, MAX_KEY_CHARS), now)
  }
}

/** The limits of a document by direction and service, in document order. */
export interface RateLimits {
  readonly outbound: ReadonlyMap<string, ReadonlyArray<CompiledLimit>>
  readonly inbound: ReadonlyMap<string, ReadonlyArray<CompiledLimit>>
}

/** The compiled limits of a document; undefined when it has none (requests then pay one field read). */
export const compileRateLimits = (specs: ReadonlyArray<RateLimitSpec> | undefined, maxKeys: number, now = performance.now()): RateLimits | undefined => {
  if (specs === undefined || specs.length === 0) return undefined
  const outbound = new Map<string, Array<CompiledLimit>>()
  const inbound = new Map<string, Array<CompiledLimit>>()
  for (const spec of specs) {
    const limit = new CompiledLimit(spec, maxKeys, now)
    const byService = limit.direction === "outbound" ? outbound : inbound
    const list = byService.get(limit.service)
    if (list === undefined) byService.set(limit.service, [limit])
    else list.push(limit)
  }
  return { outbound, inbound }
}

/** Checks a document's cross references: an inbound limit names no route; an outbound one only a route of its service. */
export const rateLimitProblems = (limits: ReadonlyArray<RateLimitSpec>, routes: ReadonlyArray<{ readonly name: string; readonly service: string }>): string | undefined => {
  const seen = new Set<string>()
  for (const limit of limits) {
    if (seen.size === seen.add(limit.name).size) return `Expected rate limit names to be unique, got ${JSON.stringify(limit.name)} twice`
    if (limit.route === undefined) continue
    if (limit.direction === "inbound") return `rate limit ${JSON.stringify(limit.name)}: an inbound limit cannot name a route (routes are the caller's)`
    if (!routes.some((route) => route.name === limit.route && route.service === limit.service)) {
      return `rate limit ${JSON.stringify(limit.name)}: no route ${JSON.stringify(limit.route)} for service ${JSON.stringify(limit.service)}`
    }
  }
  return undefined
}

/** retry-after, whole seconds, at least 1. */
const retryAfterSeconds = (ms: number): number => Math.max(1, Math.min(86_400, Math.ceil(ms / 1000)))

const headerText = (value: string | ReadonlyArray<string> | undefined): string => (value === undefined ? "" : typeof value === "string" ? value : value.join(","))

/**
 * The outbound check, before the balancer: the 429 for a request to `service` (matched by `route`,
 * if any) over one of its limits, or undefined.
 */
export const limitOutbound = (
  limits: RateLimits,
  metrics: MeshMetrics,
  service: string,
  route: string | undefined,
  headers: IncomingHttpHeaders,
  clientAddress: string
): ProxyError | undefined => {
  const list = limits.outbound.get(service)
  if (list === undefined) return undefined
  const now = performance.now()
  for (const limit of list) {
    if (limit.route !== undefined && limit.route !== route) continue
    const waitMs = limit.take((key) => (key._tag === "Caller" ? clientAddress : key._tag === "Header" ? headerText(headers[key.name]) : ""), now)
    if (waitMs === 0) continue
    limit.refused++
    metrics.rateLimited("outbound", service, limit.name)
    return new ProxyError({ status: 429, reason: "rate_limited", hop: "outbound", message: `rate limit ${limit.name} of ${service} reached`, retryAfterSeconds: retryAfterSeconds(waitMs) })
  }
  return undefined
}

/** "host:port" or "[v6]:port": the host. */
const hostOf = (address: string): string => {
  const colon = address.lastIndexOf(":")
  return colon <= 0 ? address : address.slice(address.startsWith("[") ? 1 : 0, address.startsWith("[") ? colon - 1 : colon)
}

/** Finds a header's values among a request's pairs (names lower case). */
const pairText = (headers: ReadonlyArray<HeaderPair>, name: string): string => {
  let text: string | undefined
  for (const [key, value] of headers) if (key === name) text = text === undefined ? value : `${text},${value}`
  return text ?? ""
}

/**
 * The inbound check, for requests to this sidecar's own service: the refusal for one over its
 * limits (sent as processed, as the authorization's is, so the caller's sidecar neither retries it
 * elsewhere nor blames the endpoint), or undefined. The caller's sidecar answers 429 (proxyError.ts).
 * A caller without an identity counts by its source (sourceKeyOf, `ipv6SourcePrefix` bits of an
 * IPv6 address): the last peer's key is kept, since a peer sidecar's requests come in runs over
 * its few connections, and an IPv6 address's key is a few allocations to make.
 */
export const makeInboundLimiter = (limitsOf: () => RateLimits | undefined, metrics: MeshMetrics, service: string, ipv6SourcePrefix: number) => {
  let lastRemote = ""
  let lastSource = ""
  const sourceOf = (remoteAddress: string): string => {
    if (remoteAddress !== lastRemote) {
      lastSource = sourceKeyOf(hostOf(remoteAddress), ipv6SourcePrefix)
      lastRemote = remoteAddress
    }
    return lastSource
  }
  return (identity: string | undefined, remoteAddress: string, headers: ReadonlyArray<HeaderPair>): Failure | undefined => {
    const list = limitsOf()?.inbound.get(service)
    if (list === undefined) return undefined
    const now = performance.now()
    for (const limit of list) {
      const waitMs = limit.take((key) => (key._tag === "Caller" ? identity ?? sourceOf(remoteAddress) : key._tag === "Header" ? pairText(headers, key.name) : ""), now)
      if (waitMs === 0) continue
      limit.refused++
      metrics.rateLimited("inbound", service, limit.name)
      return failure(AppErrorCode.rateLimited, `rate limit ${limit.name} of ${service} reached; retry after ${retryAfterSeconds(waitMs)} s`, true)
    }
    return undefined
  }
}
