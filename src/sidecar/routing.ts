// The per-request half of routes (the document and its compilation are routes.ts): at target
// selection in outbound.ts, which subset of the target service takes the request, before the
// balancer picks an endpoint within it.
//
// A canary that follows the call chain rides on W3C baggage, which every sidecar passes on and
// OpenTelemetry-instrumented apps forward: a route with `sticky: baggage` adds the member
// `iip-mesh-subset=<subset>` when it picks a subset, and a request that carries that member goes to
// that subset of its target whenever the target has one, whether or not a route here says so (it
// wins over the routes). A member already there is never replaced: the first choice of the journey
// holds. The baggage header is read within W3C's bounds (8192 characters, 180 members).
import type { IncomingHttpHeaders } from "node:http"
import { isSubsetLabel } from "../balancer/subsets.ts"
import { MAX_BAGGAGE_CHARS, withinBaggageLimits } from "../telemetry/propagation.ts"
import type { RouteActions } from "./routeActions.ts"
import type { RouteCounters } from "./routeCounters.ts"
import type { CompiledRoutes, RouteRequest } from "./routes.ts"

/** The baggage member that carries a sticky subset down the call chain. */
export const STICKY_MEMBER = "iip-mesh-subset"

/**
 * The members of a baggage header (`key=value;property, ...`), percent-decoded values. Only its
 * first MAX_BAGGAGE_CHARS characters are read (a member cut there is left out) and only its first
 * MAX_BAGGAGE_MEMBERS members; malformed members are skipped; the first of a repeated key wins.
 */
export const baggageMembers = (header: string | undefined): ReadonlyMap<string, string> => {
  const members = new Map<string, string>()
  if (header === undefined) return members
  for (const part of withinBaggageLimits(header).split(",")) {
    const pair = part.split(";", 1)[0]!
    const eq = pair.indexOf("=")
    if (eq <= 0) continue
    const key = pair.slice(0, eq).trim()
    if (key === "" || members.has(key)) continue
    try {
      members.set(key, decodeURIComponent(pair.slice(eq + 1).trim()))
    } catch {
      // A value that is not valid percent-encoding is no value: the member is left out.
    }
  }
  return members
}

/**
 * The subset a request goes to, the route (or "baggage") that said so, whether to add the sticky
 * member, and the route's actions (none when the sticky member chose: a later hop follows the
 * journey's subset, not its own routes).
 */
export interface SubsetChoice {
  /** Undefined: the whole service. */
  readonly subset: string | undefined
  /** Another service than the target, when the route's split says so. */
  readonly service?: string
  readonly route: string
  readonly stick: boolean
  readonly actions?: RouteActions
  /** The route's counters (the request's end is counted there too: outbound.ts). */
  readonly counters: RouteCounters
}

/** The part of the endpoint registry a choice needs. */
export interface SubsetDirectory {
  hasSubset(service: string, subset: string): boolean
}

const pathOf = (uri: string): string => {
  const query = uri.indexOf("?")
  return query === -1 ? uri : uri.slice(0, query)
}

/**
 * Which subset of `service` takes this request: the sticky member's, when the request carries one
 * that `service` has; else the split of the first route of `service` whose match accepts the
 * request; else none (the whole service). A request without baggage to a service without routes
 * costs two lookups.
 */
export const chooseSubset = (
  routes: CompiledRoutes,
  directory: SubsetDirectory,
  service: string,
  method: string,
  uri: string,
  headers: IncomingHttpHeaders
): SubsetChoice | undefined => {
  const raw = headers.baggage
  const header = raw === undefined || typeof raw === "string" ? raw : raw.join(",")
  let members: ReadonlyMap<string, string> | undefined
  if (header !== undefined) {
    members = baggageMembers(header)
    const sticky = members.get(STICKY_MEMBER)
    if (sticky !== undefined && isSubsetLabel(sticky) && directory.hasSubset(service, sticky)) {
      routes.baggage.chose(sticky)
      return { subset: sticky, route: "baggage", stick: false, counters: routes.baggage }
    }
  }
  const list = routes.byService.get(service)
  if (list === undefined) return undefined
  const request: RouteRequest = { method, uri, path: pathOf(uri), headers, baggage: () => (members ??= baggageMembers(header)) }
  for (const route of list) {
    if (!route.matches(request)) continue
    const backend = route.nextBackend()
    route.counters.chose(backend.service === undefined ? backend.subset! : backend.subset === undefined ? backend.service : `${backend.service}/${backend.subset}`)
    const choice: SubsetChoice = {
      subset: backend.subset,
      ...(backend.service === undefined ? {} : { service: backend.service }),
      route: route.name,
      stick: backend.subset !== undefined && route.sticky && members?.has(STICKY_MEMBER) !== true,
      counters: route.counters
    }
    return route.actions === undefined ? choice : { ...choice, actions: route.actions }
  }
  return undefined
}

/**
 * Adds the sticky member for `subset` to the baggage among `headers` (in place), or a baggage
 * header with it alone. False when that would take the header past MAX_BAGGAGE_CHARS: the choice
 * then holds for this hop only.
 */
export const addStickyMember = (headers: Array<readonly [string, string]>, subset: string): boolean => {
  const member = `${STICKY_MEMBER}=${subset}`
  for (let i = headers.length - 1; i >= 0; i--) {
    const [name, value] = headers[i]!
    if (name.length !== 7 || name.toLowerCase() !== "baggage") continue
    if (value.length + 1 + member.length > MAX_BAGGAGE_CHARS) return false
    headers[i] = [name, value.trim() === "" ? member : `${value},${member}`]
    return true
  }
  headers.push(["baggage", member])
  return true
}
