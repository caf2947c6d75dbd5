// DNS SRV source, at the start of the discovery flow: the endpoints of a Kubernetes headless Service
// (or any SRV name), looked up again and again and reported as a Reset of one service each time; the
// Discovery service merges them with the other sources. Node gives no TTL for SRV records, so the
// refresh follows the TTL of the targets' address records when there are any (in-cluster DNS gives
// both the same TTL), else a configured interval; always with ±20% jitter so sidecars spread out.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import { Resolver } from "node:dns/promises"
import { isIP } from "node:net"
import { isNotUnicastAddress } from "../iip/dialGuard.ts"
import { messageOf, stderrLog, type Log } from "../iip/log.ts"
import { clampWeight, endpointKey, MaxEndpointsPerService, type DiscoveredEndpoint, type DiscoverySource } from "./types.ts"

/** A lookup failed (timeout, refused, server failure): the last good set stays and the lookup is retried. */
export class DnsLookupFailed extends Data.TaggedError("DnsLookupFailed")<{
  readonly name: string
  readonly code: string
  readonly message: string
}> {}

export interface DnsSrvSourceOptions {
  /** The mesh service the endpoints belong to. */
  readonly service: string
  /** The full SRV name (no search domains apply), see headlessServiceName. */
  readonly name: string
  /** DNS servers as "ip" or "ip:port"; the system's by default. */
  readonly servers?: ReadonlyArray<string>
  /** The refresh when no TTL is known, and the longest one (default 30 s). */
  readonly refreshMs?: number
  /** The shortest refresh, whatever the TTL says (default 1 s). */
  readonly minRefreshMs?: number
  /** The first retry after a failed lookup; it doubles per failure up to refreshMs (default 1 s). */
  readonly retryMs?: number
  /** Per query and try (default 2 s). */
  readonly timeoutMs?: number
  /** How long one lookup asks for targets (default LookupDeadlineMs). */
  readonly lookupDeadlineMs?: number
  /** How long a target whose own lookup fails keeps the addresses it last had (default KeepFailedTargetMs). */
  readonly keepFailedTargetMs?: number
  /** Tries per query and server (default 2). */
  readonly tries?: number
  /** Receives "discovery.dns-failed"; stderr by default. */
  readonly log?: Log
}

/** The SRV name of a headless Service's named port: `_mesh._tcp.web.shop.svc.cluster.local`. */
export const headlessServiceName = (options: {
  readonly service: string
  readonly namespace: string
  readonly port?: string
  readonly protocol?: string
  readonly clusterDomain?: string
}): string =>
  `_${options.port ?? "mesh"}._${options.protocol ?? "tcp"}.${options.service}.${options.namespace}.svc.${options.clusterDomain ?? "cluster.local"}`

/** `ms` moved by up to ±20%; `random` returns [0, 1). */
export const jittered = (ms: number, random: () => number = Math.random): number => Math.round(ms * (0.8 + 0.4 * random()))

/** The delay before the next lookup (before jitter): the TTL within [minRefreshMs, refreshMs], or refreshMs. */
export const refreshDelayMs = (ttlSeconds: number | undefined, limits: { readonly refreshMs: number; readonly minRefreshMs: number }): number =>
  ttlSeconds === undefined ? limits.refreshMs : Math.min(limits.refreshMs, Math.max(limits.minRefreshMs, ttlSeconds * 1000))

/** The delay before retrying after `failures` failed lookups in a row (before jitter). */
export const retryDelayMs = (failures: number, limits: { readonly retryMs: number; readonly refreshMs: number }): number =>
  Math.min(limits.refreshMs, limits.retryMs * 2 ** Math.max(0, failures - 1))

/**
 * Targets whose addresses are looked up at once. Each lookup's answer may hold 64 KiB of records
 * (about 4,000 addresses over TCP), and a DNS server takes a burst of a thousand queries badly (the
 * loopback test server's socket dropped all past ~250, and the lookup failed): a few at a time, and
 * none once the endpoints fill MaxEndpointsPerService.
 */
export const MaxTargetLookupsInFlight = 16

/**
 * How long one lookup asks for targets (default). A server that never answers target queries would
 * otherwise hold a lookup for a timeout per MaxTargetLookupsInFlight targets (1,000 targets at 2 s x
 * 2 tries: over six minutes), the reported set unchanged all along; past it, the targets not asked
 * count as failed and keep their last addresses, and the ones in flight end by their own timeout.
 * A healthy server answers 1,000 targets, 16 at a time, in well under a second.
 */
export const LookupDeadlineMs = 10_000

/**
 * How long a target whose own lookup fails (SERVFAIL, a timeout, a refusal: not NXDOMAIN, which is
 * an answer) keeps the addresses its last good lookup gave it (default). Long enough to ride out a
 * DNS server's restart or a zone being reloaded; bounded, because a name that never resolves again
 * is a host gone in all but its SRV record, and the address it had may be another peer's by now
 * (Kubernetes hands pod IPs out again).
 */
export const KeepFailedTargetMs = 300_000

/** A target's addresses; ttl where the record gave one. */
export type TargetAddresses = ReadonlyArray<{ readonly address: string; readonly ttl?: number }>

/** A target's addresses as its last good lookup gave them, and when (performance.now()): a target failing since keeps them until KeepFailedTargetMs after. */
export interface KnownTarget {
  readonly addresses: TargetAddresses
  readonly resolvedAt: number
}

/** What one lookup found; ttlSeconds is the smallest TTL of the address records, if any were looked up. */
export interface SrvAnswer {
  readonly endpoints: ReadonlyArray<DiscoveredEndpoint>
  readonly ttlSeconds: number | undefined
  /** Set when the answer held more than MaxEndpointsPerService targets or endpoints (the rest left out). */
  readonly capped?: true
  /** The addresses of each target looked up (or kept, for a target that failed): the next lookup's `previous`. */
  readonly addresses: ReadonlyMap<string, KnownTarget>
  /** Targets whose own lookup failed, and the first failure's code: their last addresses were kept, if any. */
  readonly failedTargets?: { readonly count: number; readonly code: string; readonly message: string }
}

const codeOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string" ? error.code : "EUNKNOWN"

/** "This name has no such records": an answer, not a failure. */
const isEmptyAnswer = (error: unknown): boolean => codeOf(error) === "ENODATA" || codeOf(error) === "ENOTFOUND"

const orNone = async <A>(lookup: Promise<ReadonlyArray<A>>): Promise<ReadonlyArray<A>> => {
  try {
    return await lookup
  } catch (error) {
    if (isEmptyAnswer(error)) return []
    throw error
  }
}

/**
 * The addresses of an SRV target: itself when it is an IP, else its A records, else its AAAA
 * records; multicast and broadcast ones left out (as mDNS leaves them out: no peer is there, and
 * each would take a place in the service and a try before the dial guard refused it).
 */
const addressesOf = async (resolver: Resolver, target: string): Promise<TargetAddresses> => {
  if (isIP(target) !== 0) return isNotUnicastAddress(target) ? [] : [{ address: target }]
  const v4 = (await orNone(resolver.resolve4(target, { ttl: true }))).filter(({ address }) => !isNotUnicastAddress(address))
  return v4.length > 0 ? v4 : (await orNone(resolver.resolve6(target, { ttl: true }))).filter(({ address }) => !isNotUnicastAddress(address))
}

/**
 * One lookup of `name`: the SRV records, then their targets' addresses. No records (ENODATA,
 * ENOTFOUND) is an empty answer; a failed SRV query, or every target's lookup failing, is a
 * DnsLookupFailed. A target whose own lookup fails beside good ones keeps its addresses from
 * `previous` (the last answer's) for up to `keepFailedMs` after they were looked up, and is counted
 * in failedTargets: one broken name must not hide a service. The port comes from the SRV record, the weight too (into 1..MaxWeight: 0 counts as 1,
 * 65535 as MaxWeight); a target of "." (no service), a port of 0, multicast and broadcast addresses
 * and targets without addresses are left out; priorities are not used (Kubernetes gives every record priority 0). Targets are looked
 * up in the records' order, MaxTargetLookupsInFlight at a time, and no more once their endpoints
 * fill MaxEndpointsPerService: records times addresses could otherwise run to millions. No target is
 * asked once `signal` aborts (the source stopped: the resolver's cancel ends only the queries in
 * flight) or `deadlineMs` has passed; those not asked count as failed ones (ETIMEOUT).
 */
export const lookupSrv = async (
  resolver: Resolver,
  service: string,
  name: string,
  options: {
    readonly previous?: ReadonlyMap<string, KnownTarget>
    readonly signal?: AbortSignal
    readonly deadlineMs?: number
    readonly keepFailedMs?: number
  } = {}
): Promise<Result.Result<SrvAnswer, DnsLookupFailed>> => {
  const previous = options.previous ?? new Map<string, KnownTarget>()
  const deadlineMs = options.deadlineMs ?? LookupDeadlineMs
  const keepFailedMs = options.keepFailedMs ?? KeepFailedTargetMs
  /** What a target that failed keeps: its last addresses, unless they are older than keepFailedMs. */
  const keptFor = (target: string): KnownTarget | undefined => {
    const kept = previous.get(target)
    return kept !== undefined && performance.now() - kept.resolvedAt <= keepFailedMs ? kept : undefined
  }
  const endAt = performance.now() + deadlineMs
  let records: ReadonlyArray<{ readonly name: string; readonly port: number; readonly weight: number }>
  try {
    records = (await orNone(resolver.resolveSrv(name))).filter((record) => record.port > 0)
  } catch (error) {
    return Result.fail(new DnsLookupFailed({ name, code: codeOf(error), message: messageOf(error) }))
  }
  const portsOf = new Map<string, Set<number>>()
  for (const record of records) {
    if (record.name === "" || record.name === ".") continue
    const ports = portsOf.get(record.name)
    if (ports === undefined) portsOf.set(record.name, new Set([record.port]))
    else ports.add(record.port)
  }
  const targets = [...portsOf.keys()]
  const addresses = new Map<string, KnownTarget>()
  // The endpoints the targets looked up so far make (a target's addresses times its ports): lookups stop at the cap.
  const keys = new Set<string>()
  let failed: { count: number; code: string; message: string } | undefined
  const take = (target: string, found: TargetAddresses, resolvedAt: number): void => {
    // What is kept for the next lookup is bounded too: past the cap an address makes no endpoint.
    addresses.set(target, { addresses: found.length > MaxEndpointsPerService ? found.slice(0, MaxEndpointsPerService) : found, resolvedAt })
    for (const { address } of found) {
      for (const port of portsOf.get(target)!) keys.add(endpointKey({ host: address, port }))
      if (keys.size >= MaxEndpointsPerService) break
    }
  }
  const asking = () => keys.size < MaxEndpointsPerService && options.signal?.aborted !== true && performance.now() < endAt
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < targets.length && asking()) {
      const target = targets[next++]!
      let found: KnownTarget
      try {
        found = { addresses: await addressesOf(resolver, target), resolvedAt: performance.now() }
      } catch (error) {
        if (failed === undefined) failed = { count: 1, code: codeOf(error), message: messageOf(error) }
        else failed.count += 1
        const kept = keptFor(target)
        if (kept === undefined) continue
        found = kept
      }
      take(target, found.addresses, found.resolvedAt)
    }
  }
  await Promise.all(Array.from({ length: Math.min(MaxTargetLookupsInFlight, targets.length) }, worker))
  // Targets never asked: the ones before them filled the cap, or the deadline (or stop) came first,
  // and then they are as failed ones, with their last addresses.
  let capped = next < targets.length && keys.size >= MaxEndpointsPerService
  if (next < targets.length && !capped) {
    const unasked = targets.length - next
    failed ??= { count: 0, code: "ETIMEOUT", message: `${unasked} targets not asked within the lookup's ${deadlineMs} ms` }
    failed.count += unasked
    for (const target of targets.slice(next)) {
      const kept = keptFor(target)
      if (kept !== undefined && keys.size < MaxEndpointsPerService) take(target, kept.addresses, kept.resolvedAt)
    }
  }
  if (failed !== undefined && failed.count === targets.length) return Result.fail(new DnsLookupFailed({ name, code: failed.code, message: failed.message }))
  let ttlSeconds: number | undefined
  for (const { addresses: entries } of addresses.values()) {
    for (const { ttl } of entries) if (ttl !== undefined && (ttlSeconds === undefined || ttl < ttlSeconds)) ttlSeconds = ttl
  }
  const endpoints = new Map<string, DiscoveredEndpoint>()
  collect: for (const record of records) {
    for (const { address } of addresses.get(record.name)?.addresses ?? []) {
      const endpoint: DiscoveredEndpoint = { service, host: address, port: record.port, weight: clampWeight(record.weight), features: [], source: "dns", offHost: true }
      const key = endpointKey(endpoint)
      if (endpoints.has(key)) continue
      if (endpoints.size >= MaxEndpointsPerService) {
        capped = true
        break collect
      }
      endpoints.set(key, endpoint)
    }
  }
  return Result.succeed({
    endpoints: [...endpoints.values()],
    ttlSeconds,
    addresses,
    ...(capped ? { capped: true as const } : {}),
    ...(failed === undefined ? {} : { failedTargets: failed })
  })
}

/**
 * The endpoints behind an SRV name, looked up at start and then after each refresh delay. An empty
 * answer reports no endpoints; a failed lookup keeps the last reported set and is retried with backoff;
 * targets that failed beside good ones keep their last addresses (for keepFailedTargetMs) and are
 * retried with the same backoff.
 */
export const dnsSrvSource = (options: DnsSrvSourceOptions): DiscoverySource => ({
  start(emit) {
    const { service, name } = options
    const log = options.log ?? stderrLog
    const refreshMs = options.refreshMs ?? 30_000
    const limits = { refreshMs, minRefreshMs: options.minRefreshMs ?? 1_000, retryMs: options.retryMs ?? 1_000 }
    const resolver = new Resolver({ timeout: options.timeoutMs ?? 2_000, tries: options.tries ?? 2 })
    if (options.servers !== undefined) resolver.setServers([...options.servers])
    let stopped = false
    let failures = 0
    let timer: ReturnType<typeof setTimeout> | undefined
    // Stops the lookup in flight from asking for more targets: the resolver's cancel ends only the queries it has sent.
    const stop = new AbortController()
    const deadlineMs = options.lookupDeadlineMs ?? LookupDeadlineMs
    const keepFailedMs = options.keepFailedTargetMs ?? KeepFailedTargetMs
    /** Each target's addresses in the last answer: a target whose lookup fails next time keeps them. */
    let previous: ReadonlyMap<string, KnownTarget> = new Map()
    /** Whether the last answer was capped: logged when an answer becomes so, not on every lookup (a second apart at TTL 0). */
    let wasCapped = false
    /** Whether the last answer had failed targets: logged when targets start failing, whatever failed before (`failures` counts failed lookups too). */
    let targetsFailing = false

    const run = async (): Promise<void> => {
      const result = await lookupSrv(resolver, service, name, { previous, signal: stop.signal, deadlineMs, keepFailedMs })
      if (stopped) return
      let delayMs: number
      if (Result.isSuccess(result)) {
        const { capped, endpoints, ttlSeconds, failedTargets } = result.success
        previous = result.success.addresses
        if (capped === true && !wasCapped) log("discovery.dns-capped", { service, name, limit: MaxEndpointsPerService })
        wasCapped = capped === true
        emit({ _tag: "Reset", service, endpoints })
        delayMs = refreshDelayMs(ttlSeconds, limits)
        if (failedTargets === undefined) failures = 0
        else {
          // Reported with what the others gave; those targets are asked again sooner, backing off like a
          // failure. Logged when targets start failing: a name that never resolves would be a line per lookup.
          if (!targetsFailing) log("discovery.dns-target-failed", { service, name, failed: failedTargets.count, code: failedTargets.code, message: failedTargets.message })
          failures += 1
          delayMs = Math.min(delayMs, retryDelayMs(failures, limits))
        }
        targetsFailing = failedTargets !== undefined
      } else {
        failures += 1
        const { code, message } = result.failure
        log("discovery.dns-failed", { service, name, code, message, failures })
        delayMs = retryDelayMs(failures, limits)
      }
      timer = setTimeout(run, jittered(delayMs))
    }

    void run()
    return () => {
      stopped = true
      clearTimeout(timer)
      stop.abort()
      resolver.cancel()
    }
  }
})
