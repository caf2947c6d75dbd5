// DNS SRV source, at the start of the discovery flow: the endpoints of a Kubernetes headless Service
// (or any SRV name), looked up again and again and reported as a Reset of one service each time; the
// Discovery service merges them with the other sources. Node gives no TTL for SRV records, so the
// refresh follows the TTL of the targets' address records when there are any (in-cluster DNS gives
// both the same TTL), else a configured interval; always with ±20% jitter so sidecars spread out.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import { Resolver } from "node:dns/promises"
import { isIP } from "node:net"
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

/** What one lookup found; ttlSeconds is the smallest TTL of the address records, if any were looked up. */
export interface SrvAnswer {
  readonly endpoints: ReadonlyArray<DiscoveredEndpoint>
  readonly ttlSeconds: number | undefined
  /** Set when the answer held more than MaxEndpointsPerService targets or endpoints (the rest left out). */
  readonly capped?: true
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

/** The addresses of an SRV target: itself when it is an IP, else its A records, else its AAAA records. */
const addressesOf = async (resolver: Resolver, target: string): Promise<ReadonlyArray<{ readonly address: string; readonly ttl?: number }>> => {
  if (isIP(target) !== 0) return [{ address: target }]
  const v4 = await orNone(resolver.resolve4(target, { ttl: true }))
  return v4.length > 0 ? v4 : orNone(resolver.resolve6(target, { ttl: true }))
}

/**
 * One lookup of `name`: the SRV records, then their targets' addresses. No records (ENODATA,
 * ENOTFOUND) is an empty answer; anything else is a DnsLookupFailed. The port comes from the
 * SRV record, the weight too (into 1..MaxWeight: 0 counts as 1, 65535 as MaxWeight); a target of "." (no service), a port of 0 and targets
 * without addresses are left out; priorities are not used (Kubernetes gives every record priority 0).
 * At most MaxEndpointsPerService targets are looked up and endpoints built: records times addresses
 * could otherwise run to millions from one TCP answer.
 */
export const lookupSrv = async (resolver: Resolver, service: string, name: string): Promise<Result.Result<SrvAnswer, DnsLookupFailed>> => {
  try {
    const records = (await orNone(resolver.resolveSrv(name))).filter((record) => record.port > 0)
    const allTargets = [...new Set(records.map((record) => record.name))].filter((target) => target !== "" && target !== ".")
    const targets = allTargets.slice(0, MaxEndpointsPerService)
    let capped = targets.length < allTargets.length
    const addresses = new Map(await Promise.all(targets.map(async (target) => [target, await addressesOf(resolver, target)] as const)))
    let ttlSeconds: number | undefined
    for (const entries of addresses.values()) {
      for (const { ttl } of entries) if (ttl !== undefined && (ttlSeconds === undefined || ttl < ttlSeconds)) ttlSeconds = ttl
    }
    const endpoints = new Map<string, DiscoveredEndpoint>()
    collect: for (const record of records) {
      for (const { address } of addresses.get(record.name) ?? []) {
        if (endpoints.size >= MaxEndpointsPerService) {
          capped = true
          break collect
        }
        const endpoint: DiscoveredEndpoint = { service, host: address, port: record.port, weight: clampWeight(record.weight), features: [], source: "dns" }
        if (!endpoints.has(endpointKey(endpoint))) endpoints.set(endpointKey(endpoint), endpoint)
      }
    }
    return Result.succeed({ endpoints: [...endpoints.values()], ttlSeconds, ...(capped ? { capped: true as const } : {}) })
  } catch (error) {
    return Result.fail(new DnsLookupFailed({ name, code: codeOf(error), message: messageOf(error) }))
  }
}

/**
 * The endpoints behind an SRV name, looked up at start and then after each refresh delay. An empty
 * answer reports no endpoints; a failed lookup keeps the last reported set and is retried with backoff.
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

    const run = async (): Promise<void> => {
      const result = await lookupSrv(resolver, service, name)
      if (stopped) return
      let delayMs: number
      if (Result.isSuccess(result)) {
        failures = 0
        if (result.success.capped === true) log("discovery.dns-capped", { service, name, limit: MaxEndpointsPerService })
        emit({ _tag: "Reset", service, endpoints: result.success.endpoints })
        delayMs = refreshDelayMs(result.success.ttlSeconds, limits)
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
      resolver.cancel()
    }
  }
})
