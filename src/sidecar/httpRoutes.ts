// Kubernetes Gateway API `HTTPRoute`s (gateway.networking.k8s.io/v1) attached to Services (the
// GAMMA pattern), translated into routes of our own document (routes.ts), which then checks them
// as it checks a file's. kubernetesRoutes.ts watches the objects; this is the pure translation.
//
// What is taken: parentRefs of kind Service (core group), each one the target service (through
// `meshNameOf`: the mesh service that --kubernetes maps to that Service, else its name). Per rule:
// its matches (path Exact, PathPrefix (whole segments, as the API says), RegularExpression;
// headers and query parameters Exact; method), its backendRefs as a weighted split, the filters
// RequestHeaderModifier and RequestMirror, and timeouts (request: the route's deadline;
// backendRequest: each try's). A backendRef names a Service: the parent itself is the whole
// service; `<parent>-<version>` is the subset `<version>` of it (a "version Service", as GAMMA
// splits are written); any other name is that other service. A rule without backendRefs answers
// 500 (as the API says). What cannot be taken (a regex header match, another filter, a mirror to
// another service) makes the whole object refused, with the reason: a partial translation
// would route differently from what its author wrote.
//
// Order: one of our routes per match, sorted by the API's precedence: an exact path, then the
// longest prefix, then a method, then the most header matches, then the most query matches; then
// the oldest object, then namespace/name; then rule and match order.
import { isSubsetLabel } from "../balancer/subsets.ts"

export const HTTPROUTE_GROUP = "gateway.networking.k8s.io"
export const HTTPROUTE_VERSION = "v1"
export const HTTPROUTE_PLURAL = "httproutes"

export const httpRoutesPath = (namespace: string): string => `/apis/${HTTPROUTE_GROUP}/${HTTPROUTE_VERSION}/namespaces/${encodeURIComponent(namespace)}/${HTTPROUTE_PLURAL}`

/** The parts of an HTTPRoute read here (what the API server sends has more: status, managedFields). */
export interface HttpRouteObject {
  readonly metadata?: { readonly name?: string; readonly namespace?: string; readonly creationTimestamp?: Date; readonly resourceVersion?: string }
  readonly spec?: {
    readonly parentRefs?: ReadonlyArray<Ref>
    readonly rules?: ReadonlyArray<Rule>
  }
}

interface Ref {
  readonly group?: string
  readonly kind?: string
  readonly name?: string
  readonly namespace?: string
  readonly port?: number
}

interface BackendRef extends Ref {
  readonly weight?: number
  readonly filters?: ReadonlyArray<unknown>
}

interface NameValue {
  readonly type?: string
  readonly name?: string
  readonly value?: string
}

interface Match {
  readonly path?: { readonly type?: string; readonly value?: string }
  readonly headers?: ReadonlyArray<NameValue>
  readonly queryParams?: ReadonlyArray<NameValue>
  readonly method?: string
}

interface Filter {
  readonly type?: string
  readonly requestHeaderModifier?: { readonly set?: ReadonlyArray<NameValue>; readonly add?: ReadonlyArray<NameValue>; readonly remove?: ReadonlyArray<string> }
  readonly requestMirror?: { readonly backendRef?: Ref; readonly percent?: number; readonly fraction?: { readonly numerator?: number; readonly denominator?: number } }
}

interface Rule {
  readonly matches?: ReadonlyArray<Match>
  readonly filters?: ReadonlyArray<Filter>
  readonly backendRefs?: ReadonlyArray<BackendRef>
  readonly timeouts?: { readonly request?: string; readonly backendRequest?: string }
}

/** One translated route, with what orders it among all of them. */
export interface TranslatedRoute {
  readonly spec: Record<string, unknown>
  readonly order: ReadonlyArray<number | string>
}

export type Translation =
  | { readonly _tag: "Routes"; readonly routes: ReadonlyArray<TranslatedRoute> }
  | { readonly _tag: "Refused"; readonly reason: string }
  /** No parentRef names a Service: the object is a Gateway's, not the mesh's. */
  | { readonly _tag: "NotMesh" }

class Untranslatable extends Error {}

const refuse = (reason: string): never => {
  throw new Untranslatable(reason)
}

const isCoreService = (ref: Ref): boolean => (ref.group === undefined || ref.group === "" || ref.group === "core") && ref.kind === "Service"

const isBackendService = (ref: Ref): boolean => (ref.group === undefined || ref.group === "" || ref.group === "core") && (ref.kind === undefined || ref.kind === "Service")

/** A Gateway API duration ("1h2m3s", "500ms") in ms; 0 ("0s") means none. */
export const gatewayDurationMs = (text: string): number => {
  if (!/^([0-9]{1,5}(h|m|s|ms)){1,4}$/.test(text)) return refuse(`timeout ${JSON.stringify(text.slice(0, 40))} is not a Gateway API duration`)
  let ms = 0
  for (const [, amount, unit] of text.matchAll(/([0-9]{1,5})(ms|h|m|s)/g)) ms += Number(amount) * (unit === "h" ? 3_600_000 : unit === "m" ? 60_000 : unit === "s" ? 1000 : 1)
  return ms
}

const escapeRegex = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** A PathPrefix matches whole segments: /foo is /foo and /foo/..., never /foobar. */
const pathOf = (path: Match["path"]): { readonly spec?: Record<string, string>; readonly rank: number; readonly length: number } => {
  const type = path?.type ?? "PathPrefix"
  const value = path?.value ?? "/"
  if (type === "Exact") return { spec: { exact: value }, rank: 3, length: value.length }
  if (type === "RegularExpression") return { spec: { regex: value }, rank: 1, length: value.length }
  if (type !== "PathPrefix") return refuse(`path match type ${JSON.stringify(String(type).slice(0, 40))} is not supported`)
  const trimmed = value.endsWith("/") ? value.slice(0, -1) : value
  if (trimmed === "") return { rank: 2, length: 1 }
  return { spec: { regex: `^${escapeRegex(trimmed)}(?:/|$)` }, rank: 2, length: value.length }
}

const exactPairs = (list: ReadonlyArray<NameValue> | undefined, what: string, lowerCase: boolean): Record<string, string> | undefined => {
  if (list === undefined || list.length === 0) return undefined
  // Without a prototype: `name in {}` holds for "constructor" or "toString", and `out.__proto__ =`
  // sets none; either way a condition the route's author wrote was dropped and the match took
  // every request.
  const out: Record<string, string> = Object.create(null)
  for (const entry of list) {
    if ((entry.type ?? "Exact") !== "Exact") refuse(`${what} match type ${JSON.stringify(String(entry.type).slice(0, 40))} is not supported (Exact only)`)
    const name = lowerCase ? String(entry.name ?? "").toLowerCase() : String(entry.name ?? "")
    // The API takes the first of a repeated name.
    if (!Object.hasOwn(out, name)) out[name] = String(entry.value ?? "")
  }
  return out
}

const headerList = (list: ReadonlyArray<NameValue> | undefined): Record<string, string> | undefined =>
  list === undefined || list.length === 0 ? undefined : Object.fromEntries(list.map((entry) => [String(entry.name ?? "").toLowerCase(), String(entry.value ?? "")]))

/** The percent of a mirror: `percent`, or `fraction` as a whole percent (at least 1 when above 0). */
const mirrorPercent = (mirror: NonNullable<Filter["requestMirror"]>): number => {
  if (mirror.percent !== undefined) return mirror.percent
  if (mirror.fraction === undefined) return 100
  const numerator = mirror.fraction.numerator ?? 0
  const denominator = mirror.fraction.denominator ?? 100
  if (denominator <= 0) return refuse("a mirror fraction's denominator must be above 0")
  const percent = (numerator * 100) / denominator
  return percent === 0 ? 0 : Math.max(1, Math.round(percent))
}

/** Gateway weights go up to 1,000,000 each; ours to 1000: scaled to shares of 1000 when they must be (none above 0 made 0). */
const scaledWeights = (weights: ReadonlyArray<number>): ReadonlyArray<number> => {
  if (Math.max(0, ...weights) <= 1000) return weights
  const sum = weights.reduce((a, w) => a + Math.max(0, w), 0)
  return weights.map((w) => (w <= 0 ? 0 : Math.max(1, Math.round((w * 1000) / sum))))
}

/** A label for our route: the object and the rule and match it came from, within 63 characters. */
const routeName = (namespace: string, name: string, rule: number, match: number): string => {
  const full = `${namespace}.${name}.${rule}.${match}`
  if (full.length <= 63) return full
  let hash = 0x811c9dc5
  for (let i = 0; i < full.length; i++) hash = Math.imul(hash ^ full.charCodeAt(i), 0x01000193) >>> 0
  return `${`${namespace}.${name}`.slice(0, 40).replace(/[^A-Za-z0-9]+$/, "")}.${hash.toString(16).padStart(8, "0")}.${rule}.${match}`
}

export interface TranslateOptions {
  /** The mesh service a Kubernetes Service (namespace, name) is (the --kubernetes mapping, else its name). */
  readonly meshNameOf: (namespace: string, name: string) => string
}

/** One HTTPRoute's routes (one per target service, rule and match), or why it cannot be taken. */
export const translateHttpRoute = (object: HttpRouteObject, options: TranslateOptions): Translation => {
  // Total: an object whose parts are not what the API defines (a null rule or match, rules that are
  // no list, a path value that is no string: the watch hands over what the server sent) is refused
  // with the reason, logged by the caller, and the other objects apply; it used to throw out of the
  // watch's change handler, and no change to any HTTPRoute applied until it was gone.
  try {
    const namespace = object.metadata?.namespace ?? "default"
    const name = object.metadata?.name ?? ""
    const parents = (object.spec?.parentRefs ?? []).filter(isCoreService)
    if (parents.length === 0) return { _tag: "NotMesh" }
    const created = object.metadata?.creationTimestamp === undefined ? 0 : new Date(object.metadata.creationTimestamp).getTime()
    const routes: Array<TranslatedRoute> = []
    const rules = object.spec?.rules ?? [{}]
    for (const parent of parents) {
      const parentNamespace = parent.namespace ?? namespace
      const parentName = parent.name ?? ""
      const service = options.meshNameOf(parentNamespace, parentName)
      const backendOf = (ref: Ref): Record<string, string> => {
        if (!isBackendService(ref)) return refuse(`backendRef ${JSON.stringify(ref.name ?? "")} is a ${ref.kind ?? ""}, not a Service`)
        const refNamespace = ref.namespace ?? namespace
        const refName = ref.name ?? ""
        if (refNamespace === parentNamespace && refName === parentName) return { service }
        const version = refName.startsWith(`${parentName}-`) ? refName.slice(parentName.length + 1) : undefined
        if (refNamespace === parentNamespace && version !== undefined && isSubsetLabel(version)) return { subset: version }
        return { service: options.meshNameOf(refNamespace, refName) }
      }
      rules.forEach((rule, r) => {
        const actions: Record<string, unknown> = {}
        for (const filter of rule.filters ?? []) {
          if (filter.type === "RequestHeaderModifier" && filter.requestHeaderModifier !== undefined) {
            const modifier = filter.requestHeaderModifier
            const set = headerList(modifier.set)
            const add = headerList(modifier.add)
            actions["requestHeaders"] = {
              ...(set === undefined ? {} : { set }),
              ...(add === undefined ? {} : { add }),
              ...(modifier.remove === undefined || modifier.remove.length === 0 ? {} : { remove: modifier.remove.map((h) => String(h).toLowerCase()) })
            }
          } else if (filter.type === "RequestMirror" && filter.requestMirror?.backendRef !== undefined) {
            const target = backendOf(filter.requestMirror.backendRef)
            if (target["subset"] === undefined) refuse(`a mirror to another service (${JSON.stringify(filter.requestMirror.backendRef.name ?? "")}) is not supported: mirror to a version Service of ${parentName}`)
            actions["mirror"] = { subset: target["subset"], percent: mirrorPercent(filter.requestMirror) }
          } else refuse(`filter ${JSON.stringify(String(filter.type ?? "").slice(0, 40))} is not supported`)
        }
        const request = rule.timeouts?.request === undefined ? 0 : gatewayDurationMs(rule.timeouts.request)
        const perTry = rule.timeouts?.backendRequest === undefined ? 0 : gatewayDurationMs(rule.timeouts.backendRequest)
        if (request > 0) actions["timeoutMs"] = request
        if (perTry > 0) actions["retries"] = { attempts: 3, perTryTimeoutMs: perTry }
        const refs = rule.backendRefs ?? []
        for (const ref of refs) if ((ref.filters ?? []).length > 0) refuse(`backendRef ${JSON.stringify(ref.name ?? "")}: per-backend filters are not supported`)
        const weights = scaledWeights(refs.map((ref) => ref.weight ?? 1))
        // No backendRefs: the API says such requests get a 500.
        const split = refs.length === 0 ? [{ service, weight: 1 }] : refs.map((ref, i) => ({ ...backendOf(ref), weight: weights[i]! }))
        if (refs.length === 0) actions["fault"] = { abort: { status: 500, percent: 100 } }
        const matches = rule.matches === undefined || rule.matches.length === 0 ? [{}] : rule.matches
        matches.forEach((match: Match, m) => {
          const path = pathOf(match.path)
          const headers = exactPairs(match.headers, "header", true)
          const query = exactPairs(match.queryParams, "query parameter", false)
          const spec = {
            ...(path.spec === undefined ? {} : { path: path.spec }),
            ...(match.method === undefined ? {} : { method: match.method }),
            ...(headers === undefined ? {} : { headers }),
            ...(query === undefined ? {} : { query })
          }
          routes.push({
            spec: {
              name: routeName(namespace, name, r, m),
              service,
              ...(Object.keys(spec).length === 0 ? {} : { matches: [spec] }),
              split,
              ...actions
            },
            // Ascending: so the API's "more specific first" is negated.
            order: [-path.rank, -path.length, match.method === undefined ? 1 : 0, -Object.keys(headers ?? {}).length, -Object.keys(query ?? {}).length, created, `${namespace}/${name}`, r, m]
          })
        })
      })
    }
    return { _tag: "Routes", routes }
  } catch (error) {
    if (error instanceof Untranslatable) return { _tag: "Refused", reason: error.message }
    return { _tag: "Refused", reason: `not an HTTPRoute as the API defines it (${error instanceof Error ? error.message : String(error)})` }
  }
}

/** Sorts translated routes by the API's precedence (see the top of this file). */
export const byPrecedence = (a: TranslatedRoute, b: TranslatedRoute): number => {
  for (let i = 0; i < a.order.length; i++) {
    const x = a.order[i]!
    const y = b.order[i]!
    if (x === y) continue
    return typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))
  }
  return 0
}
