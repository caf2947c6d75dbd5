// The core of discovery, between the sources and the Discovery service: `applyUpdate` folds
// one source's updates into what that source currently reports, in place (its state belongs to the
// Discovery service, and an update costs what it changes, not the size of the source's state: an mDNS
// flood announces thousands of services); `merged` joins the sources into one de-duplicated set per
// service; `diff` turns two merged sets into the fewest updates that lead from one to the other, which
// is what subscribers receive. No I/O, no clocks; only applyUpdate mutates, and only its state.
import { endpointKey, MaxEndpointsPerService, type DiscoveredEndpoint, type EndpointUpdate } from "./types.ts"

/** What one source currently reports: service -> endpoint key -> endpoint. A service with no endpoints is absent. */
export type SourceState = Map<string, Map<string, DiscoveredEndpoint>>

/** A source's state as the merge reads it. */
export type SourceView = ReadonlyMap<string, ReadonlyMap<string, DiscoveredEndpoint>>

/** An endpoint after merging: the fields of its highest-priority report, and every source that reported it. */
export interface MergedEndpoint extends DiscoveredEndpoint {
  /** The reporting sources, highest priority first; `source` is the first of them. */
  readonly sources: ReadonlyArray<string>
}

/** The merged view: service -> endpoint key -> endpoint. A service with no endpoints is absent. */
export type MergedState = ReadonlyMap<string, ReadonlyMap<string, MergedEndpoint>>

/**
 * Which report wins when several sources report the same host:port, most specific first: what an
 * operator wrote (static lists and files), then the Kubernetes API (authoritative in a cluster), then
 * DNS (derived from it), then mDNS (what peers say about themselves). The kind is the part of
 * `source` before the first ":"; unknown kinds come last; ties go to the source registered first.
 */
const sourcePriority: ReadonlyArray<string> = ["static", "kubernetes", "dns", "mdns"]

const rank = (source: string): number => {
  const index = sourcePriority.indexOf(source.split(":", 1)[0]!)
  return index === -1 ? sourcePriority.length : index
}

/**
 * Folds one of a source's updates into its `state`, in place; returns whether it changed anything.
 * A Reset keeps only endpoints of its own service; Add of a known key replaces it, Change of an
 * unknown key adds it. A service holds at most MaxEndpointsPerService endpoints: a Reset keeps the
 * first of them, an Add (or Change) of a new key beyond it changes nothing (see leftOutByCap).
 */
export const applyUpdate = (state: SourceState, update: EndpointUpdate): boolean => {
  switch (update._tag) {
    case "Reset": {
      const endpoints = new Map<string, DiscoveredEndpoint>()
      for (const endpoint of update.endpoints) {
        if (endpoint.service !== update.service) continue
        const key = endpointKey(endpoint)
        if (endpoints.size < MaxEndpointsPerService || endpoints.has(key)) endpoints.set(key, endpoint)
      }
      if (endpoints.size > 0) state.set(update.service, endpoints)
      else if (!state.delete(update.service)) return false
      return true
    }
    case "Add":
    case "Change": {
      const { endpoint } = update
      const current = state.get(endpoint.service)
      const key = endpointKey(endpoint)
      if (current === undefined) state.set(endpoint.service, new Map([[key, endpoint]]))
      else if (current.size < MaxEndpointsPerService || current.has(key)) current.set(key, endpoint)
      else return false
      return true
    }
    case "Remove": {
      const endpoints = state.get(update.service)
      if (endpoints === undefined || !endpoints.delete(update.key)) return false
      if (endpoints.size === 0) state.delete(update.service)
      return true
    }
  }
}

/** How many endpoints of `update` the cap left out of `after` (the state applyUpdate gave for it). */
export const leftOutByCap = (update: EndpointUpdate, after: SourceView): number => {
  switch (update._tag) {
    case "Reset": {
      const keys = new Set<string>()
      for (const endpoint of update.endpoints) if (endpoint.service === update.service) keys.add(endpointKey(endpoint))
      return keys.size - (after.get(update.service)?.size ?? 0)
    }
    case "Add":
    case "Change":
      return after.get(update.endpoint.service)?.has(endpointKey(update.endpoint)) === true ? 0 : 1
    case "Remove":
      return 0
  }
}

/**
 * One endpoint from all its reports (in registration order): the winner's fields (see
 * sourcePriority); zone, version, node and identity filled from the next report that has them when the winner
 * lacks them; features from the first report that lists any. `offHost` only when every report has it:
 * an address the operator or this host lists too (static, files, the local directory, which ranks
 * below the network sources, an mDNS answer from this host) is dialled as written, whatever a network
 * source says of it.
 */
const mergeReports = (reports: ReadonlyArray<DiscoveredEndpoint>): MergedEndpoint => {
  const ordered = reports.toSorted((a, b) => rank(a.source) - rank(b.source))
  const { offHost: _winnerOffHost, ...winner } = ordered[0]!
  const offHost = ordered.every((report) => report.offHost === true)
  const zone = ordered.find((report) => report.zone !== undefined)?.zone
  const version = ordered.find((report) => report.version !== undefined)?.version
  const node = ordered.find((report) => report.node !== undefined)?.node
  const identity = ordered.find((report) => report.identity !== undefined)?.identity
  const adminPort = ordered.find((report) => report.adminPort !== undefined)?.adminPort
  return {
    ...winner,
    ...(offHost ? { offHost } : {}),
    ...(identity === undefined ? {} : { identity }),
    ...(adminPort === undefined ? {} : { adminPort }),
    ...(zone === undefined ? {} : { zone }),
    ...(version === undefined ? {} : { version }),
    ...(node === undefined ? {} : { node }),
    features: ordered.find((report) => report.features.length > 0)?.features ?? [],
    sources: [...new Set(ordered.map((report) => report.source))]
  }
}

/**
 * The merged view of `services` (by default every service any source reports), from the sources'
 * states in registration order.
 */
export const merged = (stateBySource: Iterable<SourceView>, services?: Iterable<string>): Map<string, Map<string, MergedEndpoint>> => {
  const states = [...stateBySource]
  const names = services === undefined ? new Set(states.flatMap((state) => [...state.keys()])) : new Set(services)
  const result = new Map<string, Map<string, MergedEndpoint>>()
  for (const service of names) {
    const reports = new Map<string, Array<DiscoveredEndpoint>>()
    for (const state of states) {
      for (const [key, endpoint] of state.get(service) ?? []) {
        const list = reports.get(key)
        if (list === undefined) reports.set(key, [endpoint])
        else list.push(endpoint)
      }
    }
    if (reports.size > 0) result.set(service, new Map([...reports].map(([key, list]) => [key, mergeReports(list)])))
  }
  return result
}

/**
 * The merged endpoint `key` of `service` alone (what `merged` would hold for it), or undefined when
 * no source reports it: an update of one endpoint re-merges that endpoint, not the whole service.
 */
export const mergedEndpoint = (states: Iterable<SourceView>, service: string, key: string): MergedEndpoint | undefined => {
  const reports: Array<DiscoveredEndpoint> = []
  for (const state of states) {
    const endpoint = state.get(service)?.get(key)
    if (endpoint !== undefined) reports.push(endpoint)
  }
  return reports.length === 0 ? undefined : mergeReports(reports)
}

const sameList = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean =>
  a.length === b.length && a.every((item, i) => item === b[i])

/**
 * Whether a subscriber would see a difference between two merged endpoints with the same key. The
 * admin port counts: federation reads it from discovery's view, which keeps the old object when
 * this says the same.
 */
const sameEndpoint = (a: MergedEndpoint, b: MergedEndpoint): boolean =>
  a.weight === b.weight &&
  a.adminPort === b.adminPort &&
  a.zone === b.zone &&
  a.version === b.version &&
  a.node === b.node &&
  a.identity === b.identity &&
  a.security === b.security &&
  a.ca === b.ca &&
  a.offHost === b.offHost &&
  a.source === b.source &&
  sameList(a.features, b.features) &&
  sameList(a.sources, b.sources)

/** The update that turns endpoint `key` of `service` from `before` into `after` (undefined: absent), if any. */
export const change = (service: string, key: string, before: MergedEndpoint | undefined, after: MergedEndpoint | undefined): Exclude<EndpointUpdate<MergedEndpoint>, { readonly _tag: "Reset" }> | undefined => {
  if (after === undefined) return before === undefined ? undefined : { _tag: "Remove", service, key }
  if (before === undefined) return { _tag: "Add", endpoint: after }
  return sameEndpoint(before, after) ? undefined : { _tag: "Change", endpoint: after }
}

/** The Remove, Add and Change updates (in that order per service) that turn `before` into `after`. */
export const diff = (before: MergedState, after: MergedState): Array<EndpointUpdate<MergedEndpoint>> => {
  const updates: Array<EndpointUpdate<MergedEndpoint>> = []
  for (const service of new Set([...before.keys(), ...after.keys()])) {
    const old = before.get(service) ?? new Map<string, MergedEndpoint>()
    const now = after.get(service) ?? new Map<string, MergedEndpoint>()
    for (const key of old.keys()) if (!now.has(key)) updates.push({ _tag: "Remove", service, key })
    for (const [key, endpoint] of now) {
      const update = change(service, key, old.get(key), endpoint)
      if (update !== undefined) updates.push(update)
    }
  }
  return updates
}
