// One service's balancer, what the sidecar asks for every outbound request: the endpoints from
// discovery (with run-time weight overrides from the admin API), each with its latency and pending
// stats (endpointStats.ts), passive health (outlierDetector.ts), the retry budget
// (retryBudget.ts), a per-endpoint concurrency limit, and the configured picker (pickers.ts).
//
// A pick leaves out ejected endpoints and those held out while they restart, refuse connections or
// stop answering (holdOuts.ts; all of them back in if every endpoint is out: better a failing
// endpoint than none), endpoints this request already tried, and endpoints at their concurrency
// limit; when only full ones are left the answer is `overloaded` (the sidecar sheds the request
// with 503 and retry-after) instead of queueing without bound. A pick returns a lease; ending it
// feeds the latency or the failure back into the stats and the outlier detector (a refused
// connection: neither, the endpoint is held out instead).
//
// The common case (nothing excluded, the picked endpoint below its limit) picks from a cached list
// of usable endpoints, rebuilt only when membership, weights, ejections or holds change.

import { amount, checkOptions, count, durationMs, type Limits } from "../iip/optionLimits.ts"
import { type Balanced, EndpointStats, type EndpointStatsOptions } from "./endpointStats.ts"
import { type HoldOutOptions, type HoldReason, HoldOuts, type RefusalHold } from "./holdOuts.ts"
import { type EjectionReason, OutlierDetector, type OutlierOptions } from "./outlierDetector.ts"
import {
  consistentHash,
  ipHash,
  leastPending,
  minPending,
  p2c,
  type PickContext,
  type Picker,
  type Random,
  random as randomPicker,
  roundRobin,
  smoothWeighted,
  uriParam
} from "./pickers.ts"
import { RetryBudget, type RetryBudgetOptions } from "./retryBudget.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/** The pickers by configuration name; the reference's methods under their Go names. */
export const pickerNames = [
  "p2c",
  "weighted-round-robin",
  "least-pending",
  "consistent-hash",
  "MethodRoundrobin",
  "MethodRandom",
  "MethodMinPending",
  "MethodIpHash",
  "MethodURIParam"
] as const
export type PickerName = (typeof pickerNames)[number]

export interface BalancedEndpoint {
  /** Stable identity, `host:port`. */
  readonly id: string
  /** The weight discovery gave it. */
  readonly weight: number
}

export interface ServiceBalancerOptions {
  /** Default p2c. */
  readonly picker?: PickerName
  /** MethodURIParam: the query parameter hashed. */
  readonly paramKey?: string
  /** Requests in flight per endpoint before it is skipped. Default 1000. */
  readonly maxPendingPerEndpoint?: number
  readonly stats?: EndpointStatsOptions
  readonly outlier?: OutlierOptions
  readonly holdOut?: HoldOutOptions
  readonly retryBudget?: RetryBudgetOptions
  /** Randomness for p2c and MethodRandom. Default Math.random. */
  readonly random?: Random
}

/** An endpoint with its balancing state. */
class Member<E extends BalancedEndpoint> extends EndpointStats {
  endpoint: E
  /** Dropped by discovery: its late results no longer count towards the set's health. */
  retired = false
  /** Tries whose connection could not be made (held out for them, not counted as failures). */
  refusals = 0

  constructor(endpoint: E, weight: number, options: EndpointStatsOptions) {
    super(endpoint.id, { ...options, weight })
    this.endpoint = endpoint
  }
}

/** Keeps the hidden class of MemberLease alive while idle (shapeAnchor.ts). */
const leaseShape = new ShapeAnchor<MemberLease<BalancedEndpoint>>()

/**
 * A pick's lease as one object per request (issue 14: it was an object literal closing over its
 * state, with two closures and their context, ~250 bytes a request at sidecar A).
 */
class MemberLease<E extends BalancedEndpoint> implements Lease<E> {
  readonly endpoint: E
  readonly expectedMs: number
  private readonly balancer: ServiceBalancer<E>
  private readonly member: Member<E>
  private over = false

  constructor(balancer: ServiceBalancer<E>, member: Member<E>, expectedMs: number) {
    leaseShape.newest = this
    this.endpoint = member.endpoint
    this.expectedMs = expectedMs
    this.balancer = balancer
    this.member = member
  }

  end(now: number, latencyMs: number, ok: boolean, unreachable = false, slow = false): EjectionReason | RefusalHold | undefined {
    if (this.over) return undefined
    this.over = true
    return this.balancer.ended(this.member, this.expectedMs, now, latencyMs, ok, unreachable, slow)
  }

  release(): void {
    if (this.over) return
    this.over = true
    this.member.release()
  }
}

export interface Lease<E> {
  readonly endpoint: E
  /** The endpoint's latency estimate when it was picked: what this request is expected to take. */
  readonly expectedMs: number
  /**
   * Ends the request: `ok` false for a failure of the endpoint, `unreachable` when no connection to
   * it could be made (it goes out at once), `slow` when it was given up for taking too long (a
   * failure penalty, but no failure for the outlier detector: the endpoint may only be busy).
   * Returns an ejection it caused, or the hold a refusal put it in ("restarting" soon after a
   * go-away, else "refused"): held out, not failing.
   */
  end(now: number, latencyMs: number, ok: boolean, unreachable?: boolean, slow?: boolean): EjectionReason | RefusalHold | undefined
  /**
   * Ends the request saying nothing about the endpoint, for a request it never got: no latency
   * sample, no failure or penalty, no outlier record; only its in-flight count is given back. Once,
   * as end(): a lease already ended is left as it is. For outbound.ts forwardPlain (the caller's
   * body failed before it was sent) and outboundUpgrade.ts (an upgrade refused on this side, no
   * stream place left).
   */
  release(): void
}

export type PickResult<E> =
  | { readonly _tag: "Picked"; readonly lease: Lease<E> }
  /** Nothing to pick: no endpoints, or all already tried. */
  | { readonly _tag: "NoEndpoint" }
  /** Every endpoint left is at its concurrency limit. */
  | { readonly _tag: "Overloaded" }

export interface EndpointView {
  readonly address: string
  readonly weight: number
  /** The weight from discovery, when an override replaces it. */
  readonly discoveredWeight?: number
  readonly latencyMs: number
  readonly pending: number
  readonly samples: number
  readonly failures: number
  /** Tries whose connection could not be made: held out for them, not counted in `failures`. */
  readonly refusals: number
  readonly health: "healthy" | "ejected" | HoldReason
  /** forMs is null when a failed active check holds it out (until a check passes). */
  readonly ejection?: { readonly reason: string; readonly forMs: number | null }
  readonly ejections: number
  readonly errorRatePercent: number
}

const makePicker = <E extends Balanced>(name: PickerName, options: ServiceBalancerOptions): Picker<E> => {
  const random = options.random ?? Math.random
  switch (name) {
    case "p2c":
      return p2c({ random })
    case "weighted-round-robin":
      return smoothWeighted()
    case "least-pending":
      return leastPending()
    case "consistent-hash":
      return consistentHash()
    case "MethodRoundrobin":
      return roundRobin()
    case "MethodRandom":
      return randomPicker({ random })
    case "MethodMinPending":
      return minPending()
    case "MethodIpHash":
      return ipHash()
    case "MethodURIParam":
      return uriParam({ paramKey: options.paramKey ?? "" })
  }
}

/** What each numeric option takes (optionLimits.ts); 0 turns an outlier rule or the hold window off. */
const outlierLimits: Limits<OutlierOptions> = {
  consecutiveFailures: count(0),
  errorRatePercent: amount(0, 100),
  minRequests: count(1),
  windowMs: durationMs(1),
  baseEjectionMs: durationMs(1),
  maxEjectionMs: durationMs(1),
  maxEjectedPercent: amount(0, 100)
}
const holdOutLimits: Limits<HoldOutOptions> = { windowMs: durationMs(0) }
const retryBudgetLimits: Limits<RetryBudgetOptions> = { ratio: amount(0), minPerSecond: amount(0), windowMs: durationMs(1) }
// `weight` is the endpoint's, from discovery (0 or less: never picked), not a bound.
const statsLimits: Limits<Omit<EndpointStatsOptions, "weight">> = {
  tauMs: durationMs(1),
  minSampleWeight: amount(0, 1),
  staleAfterMs: durationMs(0),
  defaultLatencyMs: durationMs(0),
  sampleCapFactor: amount(1),
  sampleCapFloorMs: durationMs(0),
  failurePenaltyMs: durationMs(0),
  penaltyTauMs: durationMs(1)
}

/** Throws OptionInvalid (optionLimits.ts) for a numeric option out of range, named `ServiceBalancer option`. */
export const checkBalancerOptions = (options: ServiceBalancerOptions): void => {
  checkOptions("ServiceBalancer", { maxPendingPerEndpoint: count(1) }, options)
  checkOptions("ServiceBalancer outlier", outlierLimits, options.outlier)
  checkOptions("ServiceBalancer holdOut", holdOutLimits, options.holdOut)
  checkOptions("ServiceBalancer retryBudget", retryBudgetLimits, options.retryBudget)
  checkOptions("ServiceBalancer stats", statsLimits, options.stats)
}

export class ServiceBalancer<E extends BalancedEndpoint> {
  readonly retryBudget: RetryBudget
  private readonly picker: Picker<Member<E>>
  private readonly outliers: OutlierDetector
  private readonly holds: HoldOuts
  private readonly maxPending: number
  private members: Array<Member<E>> = []
  private readonly overrides = new Map<string, number>()
  /** The members neither ejected nor held out, and the versions it was built at (-1: rebuild). */
  private usable: Array<Member<E>> = []
  private usableVersion = -1
  private usableHoldVersion = -1
  /** Members out at the last rebuild: one back since then gets its penalty cleared. */
  private ejected = new Set<Member<E>>()
  /** What a cold member is assumed to take: its warm peers' mean estimate, refreshed every 100 ms. */
  private coldEstimate: number
  private coldEstimateAt = Number.NEGATIVE_INFINITY
  private readonly statsOptions: EndpointStatsOptions

  /** Throws OptionInvalid (src/iip/optionLimits.ts) for a numeric option out of range. */
  constructor(options: ServiceBalancerOptions = {}) {
    checkBalancerOptions(options)
    this.picker = makePicker(options.picker ?? "p2c", options)
    this.outliers = new OutlierDetector(options.outlier)
    this.holds = new HoldOuts(options.holdOut)
    this.retryBudget = new RetryBudget(options.retryBudget)
    this.maxPending = options.maxPendingPerEndpoint ?? 1000
    this.coldEstimate = options.stats?.defaultLatencyMs ?? 100
    this.statsOptions = { ...options.stats, coldEstimateMs: () => this.coldEstimate }
  }

  /**
   * Replaces the endpoints; those that stay keep their stats and health. With `now`, one dropped
   * and added again within the hold window may refuse connections for a while (it is restarting)
   * without counting as failing.
   */
  update(endpoints: ReadonlyArray<E>, now?: number): void {
    const previous = new Map(this.members.map((m) => [m.id, m]))
    this.members = endpoints.map((endpoint) => {
      const weight = this.overrides.get(endpoint.id) ?? endpoint.weight
      const member = previous.get(endpoint.id)
      previous.delete(endpoint.id)
      if (member === undefined) return new Member(endpoint, weight, this.statsOptions)
      member.endpoint = endpoint
      member.setWeight(weight)
      return member
    })
    for (const gone of previous.values()) {
      gone.retired = true
      if (now !== undefined) this.holds.left(gone.id, now)
    }
    // A new member's cold estimate must be its peers' mean from its first pick on.
    this.coldEstimateAt = Number.NEGATIVE_INFINITY
    this.outliers.retain(this.members.map((m) => m.id))
    this.holds.retain(this.members.map((m) => m.id), now)
    this.usableVersion = -1
  }

  /** `id` said go-away (a graceful stop): a refused connection soon after is a restart. */
  wentAway(id: string, now: number): void {
    if (this.has(id)) this.holds.left(id, now)
  }

  /** The connection to `id` stopped answering pings: not picked until it connects again. */
  unresponsive(id: string, now: number): void {
    if (this.has(id)) this.holds.unresponsive(id, now)
  }

  /**
   * A connection to `id` succeeded: a hold on it ends. Back from a restart it is a new process:
   * it starts cold (its peers' estimate, a few requests by weight alone), not with the old one's stats.
   */
  connected(id: string): void {
    if (this.holds.connected(id) !== "restarting") return
    this.members.find((m) => m.id === id)?.restart()
    this.coldEstimateAt = Number.NEGATIVE_INFINITY
  }

  /**
   * A background redial of `id`, held out when it was begun at `dialedAt`, failed (the registry
   * redials endpoints held out): still not reachable, so held out for another window; never a
   * failure. Held at the dial, not now: a dial can outlast the hold (a connect timeout longer than
   * the window), and its failure still says the endpoint is unreachable.
   */
  redialFailed(id: string, now: number, dialedAt: number = now): void {
    if (this.holds.isHeld(id, dialedAt)) this.holds.refused(id, now)
  }

  /** Why `id` is held out (restarting, refused or unresponsive) as of `now`; undefined when it is not. */
  heldFor(id: string, now: number): HoldReason | undefined {
    return this.holds.reasonOf(id, now)
  }

  get endpoints(): ReadonlyArray<E> {
    return this.members.map((m) => m.endpoint)
  }

  has(id: string): boolean {
    return this.members.some((m) => m.id === id)
  }

  /**
   * A run-time weight for `id` (the admin API), or undefined to return to discovery's. It outlives
   * the endpoint leaving discovery, so a flapping or restarting instance keeps what the operator set.
   */
  overrideWeight(id: string, weight: number | undefined): boolean {
    const member = this.members.find((m) => m.id === id)
    if (member === undefined) return false
    if (weight === undefined) this.overrides.delete(id)
    else this.overrides.set(id, weight)
    member.setWeight(weight ?? member.endpoint.weight)
    this.usableVersion = -1
    return true
  }

  /** One endpoint for a request, leaving out `tried` (ids this request already used). */
  pick(now: number, context: PickContext, tried?: ReadonlySet<string>): PickResult<E> {
    if (now - this.coldEstimateAt >= 100) this.refreshColdEstimate(now)
    const usable = this.usableAt(now)
    let member = this.picker.pick(usable, context)
    if (member === undefined || (tried !== undefined && tried.has(member.id)) || member.pending >= this.maxPending) {
      const open = usable.filter((m) => !(tried?.has(m.id) ?? false))
      if (open.length === 0) return { _tag: "NoEndpoint" }
      const below = open.filter((m) => m.pending < this.maxPending)
      if (below.length === 0) return { _tag: "Overloaded" }
      member = this.picker.pick(below, context)
      if (member === undefined) return { _tag: "NoEndpoint" }
    }
    return { _tag: "Picked", lease: this.lease(member, now) }
  }

  /** Whether a retry of a request that `tried` these would find an endpoint now (not picking one). */
  hasUntried(now: number, tried: ReadonlySet<string>): boolean {
    for (const m of this.usableAt(now)) if (!tried.has(m.id) && m.pending < this.maxPending && m.weight > 0) return true
    return false
  }

  /** An active health check's result for `id`. */
  probed(id: string, now: number, ok: boolean): void {
    if (!this.has(id)) return
    if (ok) this.outliers.probeSucceeded(id)
    else this.outliers.probeFailed(id, now, this.members.length)
  }

  /** For the admin JSON. */
  view(now: number): Array<EndpointView> {
    return this.members.map((m) => {
      const health = this.outliers.snapshot(m.id, now)
      return {
        address: m.id,
        weight: m.weight,
        ...(this.overrides.has(m.id) ? { discoveredWeight: m.endpoint.weight } : {}),
        latencyMs: Math.round(m.estimateMs(now) * 1000) / 1000,
        pending: m.pending,
        samples: m.samples,
        failures: m.failures,
        refusals: m.refusals,
        health: health.ejected ? "ejected" : (this.holds.reasonOf(m.id, now) ?? "healthy"),
        ...(health.ejected
          ? { ejection: { reason: health.reason ?? "unknown", forMs: Number.isFinite(health.ejectedForMs) ? health.ejectedForMs : null } }
          : {}),
        ejections: health.ejections,
        errorRatePercent: Math.round(health.errorRatePercent * 10) / 10
      }
    })
  }

  private lease(member: Member<E>, now: number): Lease<E> {
    // What the endpoint was expected to take: its sample is capped relative to it (endpointStats.ts).
    const expectedMs = member.estimateMs(now)
    member.begin(now)
    return new MemberLease(this, member, expectedMs)
  }

  /** A lease's end (MemberLease.end, once): the sample, the hold for an endpoint not reachable, the outlier record. */
  ended(member: Member<E>, expectedMs: number, at: number, latencyMs: number, ok: boolean, unreachable: boolean, slow: boolean): EjectionReason | RefusalHold | undefined {
    const held = unreachable && !member.retired ? this.holds.refused(member.id, at) : undefined
    if (held !== undefined) {
      member.refusals++
      member.release()
      return held
    }
    member.end(at, latencyMs, ok && !slow, expectedMs)
    if (member.retired || slow) return undefined
    const reason = this.outliers.record(member.id, at, ok, this.members.length)
    if (reason === undefined && unreachable && this.outliers.connectFailed(member.id, at, this.members.length)) return "connect_failed"
    return reason
  }

  private refreshColdEstimate(now: number): void {
    this.coldEstimateAt = now
    let sum = 0
    let warm = 0
    for (const m of this.members) {
      if (m.cold) continue
      sum += m.estimateMs(now)
      warm++
    }
    if (warm > 0) this.coldEstimate = sum / warm
  }

  private usableAt(now: number): ReadonlyArray<Member<E>> {
    const version = this.outliers.versionAt(now)
    const holdVersion = this.holds.versionAt(now)
    if (version !== this.usableVersion || holdVersion !== this.usableHoldVersion) {
      const ejected = new Set<Member<E>>()
      const usable: Array<Member<E>> = []
      for (const m of this.members) {
        if (this.outliers.isEjected(m.id, now)) ejected.add(m)
        else if (this.holds.isHeld(m.id, now)) continue
        else {
          if (this.ejected.has(m)) m.clearPenalty()
          usable.push(m)
        }
      }
      this.ejected = ejected
      this.usable = usable.length > 0 ? usable : this.members
      this.usableVersion = version
      this.usableHoldVersion = holdVersion
    }
    return this.usable
  }
}
