// Routes: which subset of a target service takes a request (before the balancer picks an endpoint
// within it, src/sidecar/endpoints.ts). A routes document lists routes per target service; the
// first whose match accepts the request wins and splits the traffic over subsets by weight. The
// document comes from a file (routesFile.ts), checked here with Schema (every problem names the
// route and the field) and compiled once into matchers; the per-request decision is routing.ts.
//
//   routes:
//     - name: pricing-canary          # a label, unique
//       service: pricing              # the target service
//       matches:                      # any of them (none: every request)
//         - path: { prefix: /quote }  # exact, prefix or regex (at most 256 characters; regexSafety.ts refuses what backtracks without bound)
//           method: GET
//           headers: { x-canary: "yes" }      # exact values; names case-insensitive
//           query: { beta: "1" }              # query parameters, exact (decoded) values
//           baggage: { tester: alice }        # W3C baggage members, exact values
//       split:                        # weights 0-1000 (at least one above 0)
//         - { subset: v1, weight: 90 }
//         - { subset: v2, weight: 10 }
//         - { service: pricing-next, weight: 0 }   # another service (subset: one of its subsets)
//       sticky: baggage               # later hops follow the subset picked here (routing.ts)
//       timeoutMs: 2000               # and its actions: timeout, retries, requestHeaders, fault (routeActions.ts)
//   rateLimits:                       # token buckets (rateLimits.ts)
//     - { name: pricing-cap, service: pricing, perSecond: 100 }
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import type { IncomingHttpHeaders } from "node:http"
import { queryValue } from "../balancer/pickers.ts"
import { WeightedRoundRobin } from "../balancer/weightedRoundRobin.ts"
import { backtrackProblem, searchSource } from "./regexSafety.ts"
import { compileActions, RouteActionFields, type RouteActions } from "./routeActions.ts"
import { compileRateLimits, DEFAULT_RATE_LIMIT_KEYS, rateLimitProblems, RateLimitSpec, type RateLimits } from "./rateLimits.ts"
import { RouteCounters } from "./routeCounters.ts"
import { HEADER_NAME, Label, ServiceName } from "./routeFields.ts"

/** Routes in one document, at most. */
export const MAX_ROUTES = 256
/** Matches per route, conditions (headers, baggage members) per match, subsets per split: at most. */
const MAX_LIST = 16
/** A regular expression's source, at most (the path it runs on is at most 2048 bytes: outbound.ts). */
export const MAX_REGEX_LENGTH = 256

export class RoutesInvalid extends Data.TaggedError("RoutesInvalid")<{ readonly message: string; readonly problems: ReadonlyArray<string> }> {}

const Text = Schema.String.pipe(Schema.check(Schema.isMaxLength(1024)))

/** A record of at most MAX_LIST names (checked by `nameOk`) to exact values. */
const Conditions = (what: string, nameOk: (name: string) => boolean) =>
  Schema.Record(Schema.String, Text).pipe(
    Schema.check(Schema.makeFilter((record: Readonly<Record<string, string>>) => {
      const names = Object.keys(record)
      if (names.length > MAX_LIST) return `Expected at most ${MAX_LIST} ${what}, got ${names.length}`
      const bad = names.find((name) => !nameOk(name))
      return bad === undefined ? undefined : `Expected ${what} names to be tokens, got ${JSON.stringify(bad.slice(0, 80))}`
    }))
  )

const regexProblem = (source: string): string | undefined => {
  if (source.length > MAX_REGEX_LENGTH) return `Expected a regular expression of at most ${MAX_REGEX_LENGTH} characters, got ${source.length}`
  try {
    new RegExp(source)
    return backtrackProblem(searchSource(source))
  } catch (error) {
    return `Expected a regular expression: ${error instanceof Error ? error.message : String(error)}`
  }
}

const PathMatch = Schema.Struct({
  exact: Schema.optionalKey(Text),
  prefix: Schema.optionalKey(Text),
  regex: Schema.optionalKey(Schema.String.pipe(Schema.check(Schema.makeFilter(regexProblem))))
}).pipe(Schema.check(Schema.makeFilter((path: { readonly exact?: string; readonly prefix?: string; readonly regex?: string }) =>
  Object.keys(path).length === 1 ? undefined : "Expected exactly one of exact, prefix, regex"
)))

const Match = Schema.Struct({
  path: Schema.optionalKey(PathMatch),
  method: Schema.optionalKey(Schema.String.pipe(Schema.check(Schema.makeFilter((text: string) => (/^[A-Z]{1,16}$/.test(text) ? undefined : `Expected an HTTP method in capitals, got ${JSON.stringify(text.slice(0, 80))}`))))),
  headers: Schema.optionalKey(Conditions("headers", (name) => HEADER_NAME.test(name))),
  query: Schema.optionalKey(Conditions("query parameters", (name) => name.length > 0 && name.length <= 256)),
  baggage: Schema.optionalKey(Conditions("baggage members", (name) => HEADER_NAME.test(name)))
})

/** A share of the split: a subset of the route's service, another service (all of it, or one of its subsets). */
const SplitEntry = Schema.Struct({
  subset: Schema.optionalKey(Label),
  service: Schema.optionalKey(ServiceName),
  weight: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 1000 })))
}).pipe(Schema.check(Schema.makeFilter((entry: { readonly subset?: string; readonly service?: string }) =>
  entry.subset !== undefined || entry.service !== undefined ? undefined : "Expected a subset, a service, or both"
)))

const Route = Schema.Struct({
  name: Label,
  service: ServiceName,
  matches: Schema.optionalKey(Schema.Array(Match).pipe(Schema.check(Schema.isMaxLength(MAX_LIST)))),
  split: Schema.Array(SplitEntry).pipe(
    Schema.check(Schema.isMinLength(1), Schema.isMaxLength(MAX_LIST)),
    Schema.check(Schema.makeFilter((split: ReadonlyArray<{ readonly weight: number }>) => (split.some((entry) => entry.weight > 0) ? undefined : "Expected at least one weight above 0")))
  ),
  sticky: Schema.optionalKey(Schema.Literal("baggage")),
  ...RouteActionFields
})

const RoutesDocument = Schema.Struct({
  routes: Schema.Array(Route).pipe(
    Schema.check(Schema.isMaxLength(MAX_ROUTES)),
    Schema.check(Schema.makeFilter((routes: ReadonlyArray<{ readonly name: string }>) => {
      const seen = new Set<string>()
      const twice = routes.find((route) => seen.size === seen.add(route.name).size)
      return twice === undefined ? undefined : `Expected route names to be unique, got ${JSON.stringify(twice.name)} twice`
    }))
  ),
  rateLimits: Schema.optionalKey(Schema.Array(RateLimitSpec).pipe(Schema.check(Schema.isMaxLength(MAX_ROUTES))))
}).pipe(Schema.check(Schema.makeFilter((document: { readonly routes: ReadonlyArray<{ readonly name: string; readonly service: string }>; readonly rateLimits?: ReadonlyArray<RateLimitSpec> }) =>
  document.rateLimits === undefined ? undefined : rateLimitProblems(document.rateLimits, document.routes)
)))

export type RoutesDocument = typeof RoutesDocument.Type
type RouteSpec = RoutesDocument["routes"][number]
type MatchSpec = NonNullable<RouteSpec["matches"]>[number]

const decodeDocument = Schema.decodeUnknownResult(RoutesDocument)
const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

/** Checks what a parser read (JSON.parse, yaml): the document, or every problem with the route and field it is in. */
export const parseRoutesDocument = (value: unknown): Result.Result<RoutesDocument, RoutesInvalid> => {
  const result = decodeDocument(value, { errors: "all", onExcessProperty: "error" })
  if (Result.isSuccess(result)) return Result.succeed(result.success)
  const problems = formatIssues(result.failure.issue).issues.map((issue) => {
    const path = (issue.path ?? []).map((p) => String(typeof p === "object" && p !== null && "key" in p ? p.key : p))
    // routes.3.split.0.weight -> routes[3] (its name, when it has one).split[0].weight
    const where = path.map((key, i) => (/^\d+$/.test(key) ? `[${key}]` : i === 0 ? key : `.${key}`)).join("")
    const list = path[0] === "routes" || path[0] === "rateLimits" ? path[0] : undefined
    const index = list !== undefined && /^\d+$/.test(path[1] ?? "") ? Number(path[1]) : undefined
    const name = index === undefined ? undefined : (value as Record<string, Array<{ name?: unknown }> | undefined>)[list!]?.[index]?.name
    const named = typeof name === "string" ? ` (${list === "routes" ? "route" : "rate limit"} ${JSON.stringify(name.slice(0, 63))})` : ""
    return `${where === "" ? "document" : where}${named}: ${issue.message}`
  })
  return Result.fail(new RoutesInvalid({ message: `not a valid routes file:\n  ${problems.join("\n  ")}`, problems }))
}

/** What a match looks at: the method, the URI and its path (no query), the headers, and the baggage members (read only when a match asks). */
export interface RouteRequest {
  readonly method: string
  readonly uri: string
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly baggage: () => ReadonlyMap<string, string>
}

type Matcher = (request: RouteRequest) => boolean

const pathMatcher = (path: NonNullable<MatchSpec["path"]>): (text: string) => boolean => {
  if (path.exact !== undefined) {
    const exact = path.exact
    return (text) => text === exact
  }
  if (path.prefix !== undefined) {
    const prefix = path.prefix
    return (text) => text.startsWith(prefix)
  }
  // Run as checked: without a leading repeated character, which a search does not need (regexSafety.ts).
  const regex = new RegExp(searchSource(path.regex!))
  return (text) => regex.test(text)
}

const matcherOf = (spec: MatchSpec): Matcher => {
  const path = spec.path === undefined ? undefined : pathMatcher(spec.path)
  const method = spec.method
  const headers = Object.entries(spec.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value] as const)
  const query = Object.entries(spec.query ?? {})
  const baggage = Object.entries(spec.baggage ?? {})
  return (request) => {
    if (method !== undefined && request.method !== method) return false
    if (path !== undefined && !path(request.path)) return false
    for (const [name, value] of headers) if (request.headers[name] !== value) return false
    for (const [name, value] of query) if (queryValue(request.uri, name) !== value) return false
    if (baggage.length === 0) return true
    const members = request.baggage()
    for (const [name, value] of baggage) if (members.get(name) !== value) return false
    return true
  }
}

/** Where a share of a split goes: a subset of the route's service, or another service (or a subset of it). */
export interface Backend {
  readonly subset?: string
  readonly service?: string
}

/** One route, compiled: its matchers and the smooth weighted round-robin over its split. */
export interface CompiledRoute {
  readonly name: string
  readonly service: string
  /** Where it came from: "file", or "HTTPRoute NAMESPACE/NAME" (kubernetesRoutes.ts). */
  readonly source: string
  readonly sticky: boolean
  readonly matches: (request: RouteRequest) => boolean
  /** The next share of the split: spread exactly in proportion to the weights, not at random. */
  readonly nextBackend: () => Backend
  /** What it does to its requests besides (routeActions.ts); undefined: nothing. */
  readonly actions: RouteActions | undefined
  /** The split as written. */
  readonly split: ReadonlyArray<Backend & { readonly weight: number }>
  /** What it did since it was loaded (routeCounters.ts). */
  readonly counters: RouteCounters
}

const compileRoute = (spec: RouteSpec, source: string): CompiledRoute => {
  const matchers = (spec.matches ?? []).map(matcherOf)
  const split = new WeightedRoundRobin(spec.split)
  return {
    name: spec.name,
    service: spec.service,
    source,
    sticky: spec.sticky === "baggage",
    matches: matchers.length === 0 ? () => true : (request) => matchers.some((match) => match(request)),
    nextBackend: () => split.pick()!,
    actions: compileActions(spec),
    split: spec.split,
    counters: new RouteCounters()
  }
}

/** The routes of a document per target service, in document order, and its rate limits; `source` describes them for the log. */
export interface CompiledRoutes {
  readonly byService: ReadonlyMap<string, ReadonlyArray<CompiledRoute>>
  /** Undefined when the document has none. */
  readonly limits: RateLimits | undefined
  readonly source: string
  /** What the sticky baggage member routed (routing.ts), since these routes were loaded. */
  readonly baggage: RouteCounters
}

export interface CompileOptions {
  /** Buckets per keyed rate limit at most (rateLimits.ts). */
  readonly rateLimitKeys?: number
  /** Where a route came from (default "file"). */
  readonly sourceOf?: (route: string) => string
}

export const compileRoutes = (document: RoutesDocument, options: CompileOptions = {}): CompiledRoutes => {
  const byService = new Map<string, Array<CompiledRoute>>()
  const sourceOf = options.sourceOf ?? (() => "file")
  for (const spec of document.routes) {
    const route = compileRoute(spec, sourceOf(spec.name))
    const list = byService.get(spec.service)
    if (list === undefined) byService.set(spec.service, [route])
    else list.push(route)
  }
  const count = document.routes.length
  const limitCount = document.rateLimits?.length ?? 0
  // Fields in the order of noRoutes and mergeRoutes: one object shape on the request path.
  return {
    byService,
    limits: compileRateLimits(document.rateLimits, options.rateLimitKeys ?? DEFAULT_RATE_LIMIT_KEYS),
    source: `${count} route${count === 1 ? "" : "s"} for ${byService.size} service${byService.size === 1 ? "" : "s"}${limitCount === 0 ? "" : `, ${limitCount} rate limit${limitCount === 1 ? "" : "s"}`}`,
    baggage: new RouteCounters()
  }
}

/** No routes: what a sidecar without any uses (its baggage counters are not shown: they are every such sidecar's). */
export const noRoutes: CompiledRoutes = { byService: new Map(), limits: undefined, source: "no routes", baggage: new RouteCounters() }

/** Two sets of routes in force together: per service the first's routes, then the second's; the first's rate limits. */
export const mergeRoutes = (first: CompiledRoutes, second: CompiledRoutes): CompiledRoutes => {
  const byService = new Map(first.byService)
  for (const [service, routes] of second.byService) byService.set(service, [...(byService.get(service) ?? []), ...routes])
  return { byService, limits: first.limits, source: `${first.source}; ${second.source}`, baggage: first.baggage }
}

/**
 * The routes in force from a file and from Kubernetes (either may be absent: undefined when both
 * are), merged again only when one of them changed: a request pays two calls and two comparisons.
 */
export const routesInForce = (file: (() => CompiledRoutes) | undefined, kubernetes: (() => CompiledRoutes) | undefined): (() => CompiledRoutes) | undefined => {
  if (file === undefined || kubernetes === undefined) return file ?? kubernetes
  let lastFile = file()
  let lastKubernetes = kubernetes()
  let merged = mergeRoutes(lastFile, lastKubernetes)
  return () => {
    const nowFile = file()
    const nowKubernetes = kubernetes()
    if (nowFile !== lastFile || nowKubernetes !== lastKubernetes) {
      lastFile = nowFile
      lastKubernetes = nowKubernetes
      merged = mergeRoutes(nowFile, nowKubernetes)
    }
    return merged
  }
}
