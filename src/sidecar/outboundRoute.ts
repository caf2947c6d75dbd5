// Outbound, a request's route: after its target (outboundTarget.ts) and before the balancer picks
// an endpoint, the subset a route or the sticky baggage member names (routes.ts, routing.ts), its
// rate limit, and its header modifiers. Used by outbound.ts and outboundUpgrade.ts.
import type { OutboundObservation } from "./observe.ts"
import type { OutboundRequest } from "./outboundCall.ts"
import type { OutboundOptions } from "./outboundOptions.ts"
import type { Target } from "./outboundTarget.ts"
import { limitOutbound } from "./rateLimits.ts"
import { type CompiledRoutes, noRoutes } from "./routes.ts"
import { addStickyMember, chooseSubset, type SubsetChoice } from "./routing.ts"

/** A request's route (routes.ts, routing.ts): the subset a route or the sticky baggage member names; undefined: the whole service, no route. */
export const chooseRoute = (options: OutboundOptions, req: OutboundRequest, method: string, target: Target): { readonly routes: CompiledRoutes; readonly choice: SubsetChoice | undefined } => {
  const routes = options.routes?.() ?? noRoutes
  return { routes, choice: chooseSubset(routes, options.registry, target.service, method, target.uri, req.headers) }
}

/**
 * Applies a request's route before the balancer picks an endpoint within it: throws the 429 when
 * the target (or the matched route) is over a rate limit (rateLimits.ts), before anything else;
 * then records the route on the span and applies its header modifiers and sticky member to
 * `headers`. The caller keeps the choice's counters first, so a refused request counts as the route's error.
 */
export const applyRoute = (
  options: OutboundOptions,
  observation: OutboundObservation,
  req: OutboundRequest,
  target: Target,
  { routes, choice }: ReturnType<typeof chooseRoute>,
  headers: Array<readonly [string, string]>
): void => {
  const limited = routes.limits === undefined ? undefined : limitOutbound(routes.limits, options.telemetry.metrics, target.service, choice?.route, req.headers, req.remoteAddress)
  if (limited !== undefined) throw limited
  if (choice === undefined) return
  observation.routed(choice.route, choice.service ?? target.service, choice.subset)
  choice.actions?.modifyHeaders?.(headers)
  if (choice.stick) addStickyMember(headers, choice.subset!)
}
