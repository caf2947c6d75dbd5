// Discovery (src/discovery/discovery.ts) feeds the sidecar's endpoint registry (endpoints.ts):
// every change to a service replaces its endpoint set there, which costs the service's size. So
// changes are coalesced: services changed are marked, and the marked ones are applied together, at
// most once per `intervalMs` (FeedIntervalMs). A change after a quiet interval is applied in a
// microtask after its synchronous burst (an mDNS packet of many instances, a source's Reset, a
// source withdrawn), before any other I/O is handled; changes that keep coming (a host on the LAN
// flapping one instance) are applied at the end of the interval, the last state winning. A flood of
// discovery input then costs the registry each changed service's size once per interval, whatever
// its rate, and a change (a goodbye too) reaches the registry at most `intervalMs` late.
import type { Discovery } from "../discovery/discovery.ts"
import type { MergedEndpoint } from "../discovery/endpointSet.ts"
import { type Log, messageOf, neverThrowing } from "../iip/log.ts"
import type { Endpoint, EndpointRegistry } from "./endpoints.ts"

/**
 * The shortest time between two applications to the registry. Well below the discovery sources'
 * own delays (mDNS drops a dead publisher in 1.5-3.5 s, DNS SRV and files poll each second), and long
 * enough that re-applying 1,000 endpoints each time costs a few % of a core.
 */
export const FeedIntervalMs = 50

/** A monotonic clock and a one-shot timer; `after` returns its cancel. Tests move time by hand. */
export interface FeedTimer {
  readonly now: () => number
  readonly after: (ms: number, run: () => void) => () => void
}

export const systemFeedTimer: FeedTimer = {
  now: () => performance.now(),
  after: (ms, run) => {
    const handle = setTimeout(run, ms)
    handle.unref()
    return () => clearTimeout(handle)
  }
}

export interface FeedOptions {
  readonly intervalMs?: number
  readonly timer?: FeedTimer
}

/** Subscribes `registry` to every service of `discovery`; the returned function stops it (changes not yet applied are dropped). */
export const feedRegistry = (discovery: Discovery, registry: EndpointRegistry, log: Log, options: FeedOptions = {}): (() => void) => {
  const intervalMs = options.intervalMs ?? FeedIntervalMs
  const timer = options.timer ?? systemFeedTimer
  // Each service is applied on its own: a failure, and a log that throws on its line, cost that service alone.
  const report = neverThrowing(log)
  // At most one name per service discovery holds or just dropped: bounded by discovery's own caps.
  const pending = new Set<string>()
  const forms = new WeakMap<MergedEndpoint, Endpoint>()
  let lastApplied = Number.NEGATIVE_INFINITY
  let scheduled = false
  let cancelTimer: (() => void) | undefined
  let stopped = false
  const apply = (): void => {
    scheduled = false
    cancelTimer = undefined
    if (stopped) return
    lastApplied = timer.now()
    // Taken before any is applied: whatever throws below, the next change schedules its own application.
    const services = [...pending]
    pending.clear()
    for (const service of services) {
      // A microtask or timer has no caller to catch for it: a failure is logged, as discovery logs a listener's.
      try {
        registry.set(service, registryForms(discovery, service, forms))
      } catch (error) {
        report("discovery.listener-failed", { service, message: messageOf(error) })
      }
    }
  }
  const unsubscribe = discovery.subscribe("*", (update) => {
    pending.add(update._tag === "Reset" || update._tag === "Remove" ? update.service : update.endpoint.service)
    if (scheduled) return
    scheduled = true
    // At most one interval: a clock stepped back (faked, injected) must not hold a change for the step.
    const wait = Math.min(intervalMs, lastApplied + intervalMs - timer.now())
    if (wait <= 0) queueMicrotask(apply)
    else cancelTimer = timer.after(wait, apply)
  })
  return () => {
    stopped = true
    cancelTimer?.()
    pending.clear()
    unsubscribe()
  }
}

/**
 * A service's endpoints as discovery holds them now, in the registry's form. Discovery keeps an
 * unchanged endpoint's object, and so does `forms`: the registry then finds the keys it computed
 * for it (endpoints.ts caches them per object) instead of recomputing 1,000 on every application.
 */
const registryForms = (discovery: Discovery, service: string, forms: WeakMap<MergedEndpoint, Endpoint>): ReadonlyArray<Endpoint> =>
  discovery.endpoints(service).map((merged) => {
    let form = forms.get(merged)
    if (form === undefined) {
      form = registryForm(service, merged)
      forms.set(merged, form)
    }
    return form
  })

/** One of discovery's endpoints of `service` in the registry's form. */
export const registryForm = (service: string, e: MergedEndpoint): Endpoint => ({
  service,
  host: e.host,
  port: e.port,
  weight: e.weight,
  source: e.sources.join(","),
  identity: e.identity,
  security: e.security,
  ca: e.ca,
  version: e.version,
  offHost: e.offHost
})
