// The check of a golden view another process sent (a federation peer's /golden?scope=self, or an
// admin's /golden read by the CLI's stat and top): rebuilt field by field, bounded in series and name
// length, or refused. Its own module so the CLI can check answers without loading the federation.
import { GOLDEN_BUCKETS, type GoldenView, statsOf, type WindowAggregate, type WindowName, type Windows, type WindowStats } from "../telemetry/golden.ts"

/**
 * Series (services, edges and routes together) a peer's view may list: a sidecar's own holds its
 * served services' routes (goldenRoutes each, at most 1,000) and at most 1,000 edges. A larger
 * view is refused: 40,000 services fit in federationMaxBytes, and merged they made this admin hold
 * ~40 MB and spend ~11 s of its event loop (the data plane's too) on one /federation.
 */
const PEER_MAX_SERIES = 4096
/** Longest name a peer's view may hold: a Kubernetes service name with 15 subsets is ~1,100 characters. */
const PEER_MAX_NAME = 2048

/** A count a peer sends: a finite number, not negative. */
export const isCount = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value) && value >= 0

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value)

const WINDOW_NAMES: ReadonlyArray<WindowName> = ["10s", "1m", "10m"]

/** A peer's window as an aggregate this admin can merge, its stats computed here (not taken from the peer); undefined if it is not one. */
const aggregateOf = (value: unknown): (WindowAggregate & { readonly stats: WindowStats }) | undefined => {
  if (!isRecord(value) || !isCount(value.requests) || !isCount(value.errors) || !isCount(value.seconds)) return undefined
  const buckets = value.buckets
  if (!Array.isArray(buckets) || buckets.length > GOLDEN_BUCKETS.length + 1 || !buckets.every(isCount)) return undefined
  const aggregate = { requests: value.requests, errors: value.errors, seconds: value.seconds, buckets: buckets as Array<number> }
  return { ...aggregate, stats: statsOf(aggregate) }
}

const windowsOf = (value: unknown): Windows | undefined => {
  if (!isRecord(value)) return undefined
  const windows: Partial<Record<WindowName, WindowAggregate & { readonly stats: WindowStats }>> = {}
  for (const name of WINDOW_NAMES) {
    const aggregate = aggregateOf(value[name])
    if (aggregate === undefined) return undefined
    windows[name] = aggregate
  }
  return windows as Windows
}

/** The entries of one of a view's lists, each with its string `names` and its windows; undefined if any is not one. */
const entriesOf = <K extends string>(list: unknown, names: ReadonlyArray<K>): Array<Record<K, string> & { readonly windows: Windows }> | undefined => {
  if (!Array.isArray(list)) return undefined
  const entries: Array<Record<K, string> & { readonly windows: Windows }> = []
  for (const item of list) {
    if (!isRecord(item) || !names.every((name) => typeof item[name] === "string" && item[name].length <= PEER_MAX_NAME)) return undefined
    const windows = windowsOf(item.windows)
    if (windows === undefined) return undefined
    const entry = { windows } as Record<K, string> & { windows: Windows }
    for (const name of names) (entry as Record<K, string>)[name] = item[name] as string
    entries.push(entry)
  }
  return entries
}

/**
 * A peer's answer as a golden view, rebuilt from the fields a view has (each checked: strings,
 * finite counts, at most the buckets there are), or undefined: a peer is another host's process,
 * and what it sends is merged into what this admin serves (a list entry that is not an object made
 * the merge throw, and /federation a 500 for everyone). The CLI checks an admin's answer with it
 * too, with no cap on series: an admin's view merges many sidecars' (its byte cap bounds it).
 */
export const viewOf = (value: unknown, maxSeries = PEER_MAX_SERIES): GoldenView | undefined => {
  if (!isRecord(value) || !isCount(value.generatedAt)) return undefined
  const listed = [value.services, value.edges, value.routes].reduce((sum: number, list) => sum + (Array.isArray(list) ? list.length : 0), 0)
  if (listed > maxSeries) return undefined
  const services = entriesOf(value.services, ["service"])
  const edges = entriesOf(value.edges, ["caller", "callee"])
  const routes = entriesOf(value.routes, ["service", "route"])
  if (services === undefined || edges === undefined || routes === undefined) return undefined
  return { generatedAt: value.generatedAt, services, edges, routes }
}
