// The discovery service, the middle of the flow: sources (static lists, files, DNS SRV, mDNS, ...)
// are registered here and report updates; each source's state is folded on its own, the sources are
// merged per service (endpointSet.ts), and subscribers (the sidecar's endpoint registry, the admin
// view) receive the merged changes: a Reset when they subscribe, then Add, Remove and Change.
import { LogThrottle, messageOf, neverThrowing, stderrLog, type Log } from "../iip/log.ts"
import { applyUpdate, change, diff, leftOutByCap, merged, mergedEndpoint, type MergedEndpoint, type MergedState, type SourceState } from "./endpointSet.ts"
import { type DiscoveredEndpoint, endpointKey, MaxEndpointsPerService, type DiscoverySource, type EndpointUpdate } from "./types.ts"

export type DiscoveryListener = (update: EndpointUpdate<MergedEndpoint>) => void

/** The admin view: per service (sorted), its endpoints (sorted by address) and who reported them. */
export interface DiscoverySnapshot {
  readonly services: Record<string, ReadonlyArray<MergedEndpoint & { readonly address: string }>>
}

export interface DiscoveryOptions {
  /** Where a listener that throws is reported; stderr by default, and when this log throws itself. */
  readonly log?: Log
  /** The clock of the capped lines' throttle (monotonic ms). */
  readonly now?: () => number
}

/**
 * `discovery.endpoints-capped` lines per minute, over all sources: a source on the network (an mDNS
 * host announcing past the cap, then saying goodbye, again and again) can make one refused Add after
 * another, each of which was a line (6,000 for three rounds of 2,000). The next line admitted says
 * how many were not written; leftOut() tells how many are out now.
 */
const CappedLines = 10
const CappedWindowMs = 60_000

interface Registration {
  /** What the source reports now, updated in place (applyUpdate). */
  readonly state: SourceState
  /**
   * Endpoints the cap refused, by service and key (at most MaxEndpointsPerService a service): a
   * source reports an endpoint once, so one refused while the service was full is admitted, oldest
   * first, when a Remove makes room, unless the source removed it meanwhile.
   */
  readonly waiting: Map<string, Map<string, DiscoveredEndpoint>>
  stop: () => void
}

interface Subscription {
  readonly service: string
  readonly listener: DiscoveryListener
}

/**
 * Puts back into `now` the objects of `previous` for the endpoints a re-merge left as they were: a
 * Reset (a DNS answer, an EndpointSlice event) re-merges a whole service into new objects, and
 * subscribers that keep what they computed per object (the sidecar's feed and its registry's keys)
 * would otherwise recompute it for every endpoint on every Reset.
 */
const keepUnchanged = (service: string, previous: ReadonlyMap<string, MergedEndpoint>, now: Map<string, MergedEndpoint>): void => {
  for (const [key, endpoint] of now) {
    const kept = previous.get(key)
    if (kept !== undefined && change(service, key, kept, endpoint) === undefined) now.set(key, kept)
  }
}

/** "mdns", "static", ...: a source's name before its first ":" (static:file is static). */
const sourceKind = (source: string | undefined): string => (source ?? "unknown").split(":", 1)[0]!

const updateService = (update: EndpointUpdate): string =>
  update._tag === "Reset" || update._tag === "Remove" ? update.service : update.endpoint.service

export class Discovery {
  /** In registration order, which breaks ties between sources of the same priority. */
  private readonly registrations = new Set<Registration>()
  private readonly subscriptions = new Set<Subscription>()
  /** The merged endpoints per service, updated in place: an update costs what it changes. */
  private view = new Map<string, Map<string, MergedEndpoint>>()
  /**
   * Per endpoint key ("host:port"), how many services of `view` list it: lists() in O(1). A request
   * routed to another service (a canary backend) is counted under its target's name, not the one
   * that lists its endpoint, so the metrics ask about the address whatever the service.
   */
  private readonly listings = new Map<string, number>()
  private readonly log: Log
  /** The kinds of source that have had endpoints left out (a handful: static, kubernetes, dns, mdns, ...), whose gauge then reads 0 rather than vanish. */
  private readonly leftOutKinds = new Set<string>()
  private readonly cappedLines: LogThrottle

  constructor(options: DiscoveryOptions = {}) {
    // Called from sources' callbacks and in loops over subscribers: a log that throws must not cut them short.
    this.log = neverThrowing(options.log ?? stderrLog)
    this.cappedLines = new LogThrottle(CappedLines, CappedWindowMs, options.now)
  }

  /** Starts `source`; the returned function stops it and withdraws everything it reported. */
  register(source: DiscoverySource): () => void {
    const registration: Registration = { state: new Map(), waiting: new Map(), stop: () => {} }
    this.registrations.add(registration)
    try {
      registration.stop = source.start((update) => {
        if (this.registrations.has(registration)) this.apply(registration, update)
      })
    } catch (error) {
      this.withdraw(registration)
      throw error
    }
    return () => {
      if (!this.registrations.has(registration)) return
      this.withdraw(registration)
      registration.stop()
    }
  }

  /**
   * Calls `listener` with the changes of `service`, or of every service for "*". It first gets a
   * Reset with the current endpoints (for "*", one per service that has endpoints). Returns the
   * unsubscribe function.
   */
  subscribe(service: string, listener: DiscoveryListener): () => void {
    const subscription: Subscription = { service, listener }
    this.subscriptions.add(subscription)
    const services = service === "*" ? [...this.view.keys()] : [service]
    for (const name of services) this.deliver(subscription, { _tag: "Reset", service: name, endpoints: this.endpoints(name) })
    return () => {
      this.subscriptions.delete(subscription)
    }
  }

  /** The merged endpoints of `service` now. */
  endpoints(service: string): ReadonlyArray<MergedEndpoint> {
    return [...(this.view.get(service)?.values() ?? [])]
  }

  /** Whether some service has the endpoint of `key` ("host:port", endpointKey) now: the metrics free a series once none has (telemetry/endpointSeries.ts). */
  lists(key: string): boolean {
    return this.listings.has(key)
  }

  snapshot(): DiscoverySnapshot {
    const services: Record<string, ReadonlyArray<MergedEndpoint & { readonly address: string }>> = {}
    for (const service of [...this.view.keys()].sort()) {
      services[service] = this.endpoints(service)
        .map((endpoint) => ({ address: endpointKey(endpoint), ...endpoint }))
        .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0))
    }
    return { services }
  }

  /**
   * Endpoints left out now by the cap per service, by the kind of source (summed over its sources
   * and services): those waiting to get in as others leave, at most MaxEndpointsPerService a
   * service and source (past that a source's further ones are not kept, so not counted). A gauge
   * an operator can alert on: a source re-listing the same endpoints, or flapping them, leaves out
   * as many as before, where a count of each refusal grew with the churn. Read at each scrape.
   */
  leftOut(): Map<string, number> {
    const out = new Map<string, number>()
    for (const kind of this.leftOutKinds) out.set(kind, 0)
    for (const registration of this.registrations) {
      // Endpoint by endpoint: one source may report under several names (static and static:file).
      for (const waiting of registration.waiting.values()) {
        for (const endpoint of waiting.values()) {
          const kind = sourceKind(endpoint.source)
          out.set(kind, (out.get(kind) ?? 0) + 1)
        }
      }
    }
    return out
  }

  /** Stops every source and drops every subscriber, without telling them. */
  close(): void {
    const registrations = [...this.registrations.values()]
    this.registrations.clear()
    this.subscriptions.clear()
    this.view = new Map()
    this.listings.clear()
    for (const registration of registrations) registration.stop()
  }

  private apply(registration: Registration, update: EndpointUpdate): void {
    const changed = applyUpdate(registration.state, update)
    const dropped = leftOutByCap(update, registration.state)
    if (dropped > 0) {
      const source = update._tag === "Reset" ? update.endpoints[0]?.source : update._tag === "Remove" ? undefined : update.endpoint.source
      const admitted = this.cappedLines.admit()
      if (admitted !== undefined) this.log("discovery.endpoints-capped", { service: updateService(update), source, limit: MaxEndpointsPerService, leftOut: dropped, ...admitted })
      this.leftOutKinds.add(sourceKind(source))
    }
    this.keepWaiting(registration, update)
    if (!changed) return
    // One endpoint changed: re-merge that one (a flood of single Adds stays linear); a Reset: the service.
    if (update._tag === "Reset") this.refresh(update.service)
    else this.refreshEndpoint(update._tag === "Remove" ? update.service : update.endpoint.service, update._tag === "Remove" ? update.key : endpointKey(update.endpoint))
    if (update._tag === "Remove") this.admitWaiting(registration, update.service)
  }

  /** Keeps `registration.waiting` to what the cap left out of the source's state and the source still reports. */
  private keepWaiting(registration: Registration, update: EndpointUpdate): void {
    const { state } = registration
    const service = updateService(update)
    let waiting = registration.waiting.get(service)
    if (update._tag === "Remove") waiting?.delete(update.key)
    else if (update._tag === "Reset") {
      waiting = undefined
      const kept = state.get(service)
      for (const endpoint of update.endpoints) {
        const key = endpointKey(endpoint)
        if (endpoint.service !== service || kept?.has(key) === true) continue
        waiting ??= new Map()
        if (waiting.size < MaxEndpointsPerService || waiting.has(key)) waiting.set(key, endpoint)
      }
    } else {
      const key = endpointKey(update.endpoint)
      if (state.get(service)?.has(key) === true) waiting?.delete(key)
      else if (waiting === undefined || waiting.size < MaxEndpointsPerService || waiting.has(key)) (waiting ??= new Map()).set(key, update.endpoint)
    }
    if (waiting === undefined || waiting.size === 0) registration.waiting.delete(service)
    else registration.waiting.set(service, waiting)
  }

  /** A Remove made room in `service`: the oldest waiting endpoints get in, as Adds. */
  private admitWaiting(registration: Registration, service: string): void {
    const waiting = registration.waiting.get(service)
    if (waiting === undefined) return
    for (const [key, endpoint] of waiting) {
      if ((registration.state.get(service)?.size ?? 0) >= MaxEndpointsPerService) return
      waiting.delete(key)
      this.apply(registration, { _tag: "Add", endpoint })
    }
  }

  /** Re-merges one endpoint and tells the service's subscribers if it changed. */
  private refreshEndpoint(service: string, key: string): void {
    const states = [...this.registrations.values()].map((registration) => registration.state)
    const current = this.view.get(service)
    const update = change(service, key, current?.get(key), mergedEndpoint(states, service, key))
    if (update === undefined) return
    if (update._tag === "Remove") {
      current?.delete(key)
      if (current?.size === 0) this.view.delete(service)
    } else if (current === undefined) this.view.set(service, new Map([[key, update.endpoint]]))
    else current.set(key, update.endpoint)
    this.listed(update)
    this.tell(service, [update])
  }

  private withdraw(registration: Registration): void {
    this.registrations.delete(registration)
    for (const service of registration.state.keys()) this.refresh(service)
  }

  /** Re-merges one service and tells its subscribers what changed. */
  private refresh(service: string): void {
    const states = [...this.registrations.values()].map((registration) => registration.state)
    const after = merged(states, [service])
    const previous = this.view.get(service)
    const before: MergedState = previous === undefined ? new Map() : new Map([[service, previous]])
    const updates = diff(before, after)
    if (updates.length === 0) return
    const now = after.get(service)
    if (now !== undefined && previous !== undefined) keepUnchanged(service, previous, now)
    if (now === undefined) this.view.delete(service)
    else this.view.set(service, now)
    for (const update of updates) this.listed(update)
    this.tell(service, updates)
  }

  /** `listings` follows a change of `view`: an Add lists its key once more, a Remove once less (a Change neither). */
  private listed(update: EndpointUpdate<MergedEndpoint>): void {
    if (update._tag === "Add") {
      const key = endpointKey(update.endpoint)
      this.listings.set(key, (this.listings.get(key) ?? 0) + 1)
    } else if (update._tag === "Remove") {
      const left = (this.listings.get(update.key) ?? 0) - 1
      if (left > 0) this.listings.set(update.key, left)
      else this.listings.delete(update.key)
    }
  }

  private tell(service: string, updates: ReadonlyArray<EndpointUpdate<MergedEndpoint>>): void {
    for (const subscription of [...this.subscriptions]) {
      if (subscription.service !== "*" && subscription.service !== service) continue
      for (const update of updates) {
        if (this.subscriptions.has(subscription)) this.deliver(subscription, update)
      }
    }
  }

  private deliver(subscription: Subscription, update: EndpointUpdate<MergedEndpoint>): void {
    try {
      subscription.listener(update)
    } catch (error) {
      this.log("discovery.listener-failed", { service: subscription.service, message: messageOf(error) })
    }
  }
}
