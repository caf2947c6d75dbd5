// What the admin server shows, as JSON: one sidecar's view of the mesh (`/mesh`: endpoints, and the
// routes in force with their counters), the effective
// configuration with what tracing exports to (`/config`; exporter headers are left out, they may
// hold credentials, and exporter URLs come without theirs: telemetry/tracing.ts; every secret
// setting, marked so or named like one, is "[redacted]"), and the dashboard's data (`/dashboard/data`): every sidecar the admin server
// reports on (one, or the whole demo mesh) with its traffic totals, and the recent traces.
import { secretSettings } from "../config/settings.ts"
import type { Sidecar } from "../sidecar/sidecar.ts"
import type { TraceSummary } from "../telemetry/traceStore.ts"

/**
 * The routes in force, in the order they are tried per service: where each came from, its split as
 * written and as observed, requests and errors since it was loaded; then what the sticky baggage
 * member routed, and the rate limits with the requests each refused. Undefined without routes.
 */
export const routesView = (sidecar: Sidecar) => {
  const routes = sidecar.routes()
  if (routes === undefined) return undefined
  return {
    source: routes.source,
    routes: [...routes.byService.values()].flat().map((route) => ({
      name: route.name,
      service: route.service,
      source: route.source,
      sticky: route.sticky,
      split: route.split.map((entry) => ({ backend: entry.service === undefined ? entry.subset! : entry.subset === undefined ? entry.service : `${entry.service}/${entry.subset}`, weight: entry.weight })),
      ...route.counters.view()
    })),
    baggage: routes.baggage.view(),
    rateLimits: routes.limits === undefined
      ? []
      : [...routes.limits.outbound.values(), ...routes.limits.inbound.values()].flat().map((limit) => ({
        name: limit.name,
        service: limit.service,
        direction: limit.direction,
        ...(limit.route === undefined ? {} : { route: limit.route }),
        perSecond: limit.perSecond,
        burst: limit.burst,
        key: limit.key._tag === "None" ? "none" : limit.key._tag === "Caller" ? "caller" : `header ${limit.key.name}`,
        refused: limit.refused
      }))
  }
}

export const meshView = (sidecar: Sidecar) => {
  const services = sidecar.registry.view()
  const routes = routesView(sidecar)
  return {
    service: sidecar.config.service,
    node: sidecar.config.node,
    inbound: `${sidecar.inbound.host}:${sidecar.inbound.port}`,
    loadBalancer: sidecar.config.loadBalancer,
    services: Object.fromEntries(services.map((view) => [view.service, view.endpoints])),
    retryBudgetAvailable: Object.fromEntries(services.map((view) => [view.service, view.retryBudgetAvailable])),
    ...(routes === undefined ? {} : { routes })
  }
}

/**
 * Keys whose values are secrets (tokens, keys, passwords, credentials, headers that may carry any of
 * them), besides the settings marked secret: a setting added later is covered by its name. `hashKey`
 * names what a hash is taken of, not a key.
 */
const SECRET_KEY = /token|secret|passw|credential|authorization|cookie|private|api[-_]?key|headers$|key(?:s|file|pem)?$/i
const NOT_SECRET = new Set(["hashKey"])

const isSecretKey = (key: string): boolean => secretSettings.has(key) || (SECRET_KEY.test(key) && !NOT_SECRET.has(key))

/** `value` with the value of every secret key (at any depth) replaced by "[redacted]"; unset (null) ones stay null. */
export const redactSecrets = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(redactSecrets)
  if (typeof value !== "object" || value === null) return value
  return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, isSecretKey(key) && inner !== null && inner !== undefined ? "[redacted]" : redactSecrets(inner)]))
}

export const configView = (sidecar: Sidecar) =>
  redactSecrets({
    ...sidecar.config,
    telemetry: {
      tracing: sidecar.telemetry.tracing.enabled,
      serviceName: sidecar.telemetry.tracing.serviceName,
      exporters: sidecar.telemetry.tracing.exporters,
      warnings: sidecar.telemetry.tracing.warnings
    }
  })

const sidecarTraffic = (sidecar: Sidecar) => {
  const summary = sidecar.telemetry.metrics.summary()
  const endpoints = new Map(sidecar.registry.view().map((view) => [view.service, view.endpoints]))
  const none = { requests: 0, errors: 0, durationSeconds: 0, inFlight: 0 }
  const inbound = summary.inbound.find((s) => s.service === sidecar.config.service) ?? none
  const targets = new Set([...endpoints.keys(), ...summary.outbound.map((s) => s.service)])
  const routes = routesView(sidecar)
  return {
    service: sidecar.config.service,
    node: sidecar.config.node,
    ready: sidecar.ready(),
    ...(routes === undefined ? {} : { routes }),
    inbound: { address: `${sidecar.inbound.host}:${sidecar.inbound.port}`, ...inbound },
    outbound: [...targets].sort().map((service) => ({
      ...(summary.outbound.find((s) => s.service === service) ?? { ...none, service }),
      endpoints: endpoints.get(service) ?? []
    }))
  }
}

export const dashboardData = (sidecars: ReadonlyArray<Sidecar>, traces: ReadonlyArray<TraceSummary>) => ({
  generatedAt: Date.now(),
  sidecars: sidecars.map(sidecarTraffic),
  traces
})
