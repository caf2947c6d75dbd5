// Discovery (src/discovery/discovery.ts) feeds the sidecar's endpoint registry (endpoints.ts):
// every change to a service replaces its endpoint set there. The changes of one synchronous burst
// (an mDNS packet of many instances, a source's Reset, a source withdrawn) are applied once per
// service, in a microtask after the burst, before any other I/O is handled: a registry update costs
// the service's size once per burst, not once per endpoint of it.
import type { Discovery } from "../discovery/discovery.ts"
import { type Log, messageOf } from "../iip/log.ts"
import type { Endpoint, EndpointRegistry } from "./endpoints.ts"

/** Subscribes `registry` to every service of `discovery`; the returned function stops it (a burst not yet applied is dropped). */
export const feedRegistry = (discovery: Discovery, registry: EndpointRegistry, log: Log): (() => void) => {
  const pending = new Set<string>()
  let stopped = false
  const apply = (): void => {
    if (stopped) return
    // Taken before any is applied: whatever throws below, the next burst queues its own microtask.
    const services = [...pending]
    pending.clear()
    for (const service of services) {
      // A microtask has no caller to catch for it: a failure is logged, as discovery logs a listener's.
      try {
        registry.set(service, endpointsOf(discovery, service))
      } catch (error) {
        log("discovery.listener-failed", { service, message: messageOf(error) })
      }
    }
  }
  const unsubscribe = discovery.subscribe("*", (update) => {
    if (pending.size === 0) queueMicrotask(apply)
    pending.add(update._tag === "Reset" || update._tag === "Remove" ? update.service : update.endpoint.service)
  })
  return () => {
    stopped = true
    pending.clear()
    unsubscribe()
  }
}

/** A service's endpoints as discovery holds them now, in the registry's form: what a whole recomputation sets. */
export const endpointsOf = (discovery: Discovery, service: string): ReadonlyArray<Endpoint> =>
  discovery.endpoints(service).map((e) => ({
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
  }))
