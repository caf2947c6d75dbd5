// Per-endpoint balancing state: a latency estimate (an EWMA that decays by the time since the last
// sample, so a burst after a long quiet spell counts fully and a steady stream averages), the
// requests in flight, a failure penalty that fades with the same time constant, and the weight.
// Pure: time always comes in as `now` (ms), nothing here reads a clock or schedules anything.
//
//   cost = (ewma + penalty) * (pending + 1) / weight
//
// `load` is the same without the weight; a picker that already samples by weight (p2c) compares
// loads so the weight is not counted twice. A cold endpoint (no sample yet) reports the configured
// default latency, and its first sample replaces it outright.
//
// Weight changes go through `setWeight`, which bumps a module-wide epoch: pickers that cache
// something built from weights (prefix sums, rings, the reference's weighted list) rebuild when the
// epoch moves, so a cached structure is never stale and never rebuilt needlessly.

export interface EndpointStatsOptions {
  /** Initial weight (from discovery); a weight of 0 or less is never picked. Default 1. */
  readonly weight?: number
  /** EWMA time constant in ms: a sample dt ms after the previous one weighs 1 - exp(-dt/tau). Default 10,000. */
  readonly tauMs?: number
  /** What a cold endpoint (no sample yet) is assumed to take, in ms. Default 100. */
  readonly defaultLatencyMs?: number
  /** Added to the latency estimate per failure, fading with tau. Default 500. */
  readonly failurePenaltyMs?: number
}

/** What every picker needs of an endpoint. `EndpointStats` is the implementation. */
export interface Balanced {
  /** Stable identity (an address, `host:port`): consistent hash and ip hash key on it. */
  readonly id: string
  readonly weight: number
  readonly pending: number
  /** (latency + penalty) * (pending + 1), without the weight. */
  load(now: number): number
  /** load / weight; Infinity for a weight of 0 or less. */
  cost(now: number): number
}

let epoch = 0

/** Moves whenever any endpoint's weight changes; caches built from weights compare it. */
export const weightEpoch = (): number => epoch

export interface EndpointSnapshot {
  readonly id: string
  readonly weight: number
  readonly pending: number
  readonly latencyMs: number
  readonly penaltyMs: number
  readonly cold: boolean
  readonly samples: number
  readonly failures: number
  readonly cost: number
}

export class EndpointStats implements Balanced {
  readonly id: string
  private currentWeight: number
  private readonly tauMs: number
  private readonly failurePenaltyMs: number
  private ewma: number
  private lastSampleAt: number | undefined = undefined
  private penalty = 0
  private penaltyUpdatedAt = 0
  private inFlight = 0
  private sampleCount = 0
  private failureCount = 0

  constructor(id: string, options: EndpointStatsOptions = {}) {
    this.id = id
    this.currentWeight = options.weight ?? 1
    this.tauMs = options.tauMs ?? 10_000
    if (!(this.tauMs > 0)) throw new Error(`tauMs must be positive: ${this.tauMs}`)
    this.ewma = options.defaultLatencyMs ?? 100
    this.failurePenaltyMs = options.failurePenaltyMs ?? 500
  }

  get weight(): number {
    return this.currentWeight
  }

  /** A run-time override (admin API) or a new weight from discovery. */
  setWeight(weight: number): void {
    if (!Number.isFinite(weight)) throw new Error(`weight must be finite: ${weight}`)
    if (weight === this.currentWeight) return
    this.currentWeight = weight
    epoch++
  }

  get pending(): number {
    return this.inFlight
  }

  get cold(): boolean {
    return this.sampleCount === 0
  }

  get samples(): number {
    return this.sampleCount
  }

  get failures(): number {
    return this.failureCount
  }

  /** The latency estimate in ms (the default while cold). */
  get latencyMs(): number {
    return this.ewma
  }

  /** The failure penalty as of `now`, faded by exp(-dt/tau) since it was last changed. */
  penaltyMs(now: number): number {
    if (this.penalty === 0) return 0
    const dt = Math.max(0, now - this.penaltyUpdatedAt)
    return this.penalty * Math.exp(-dt / this.tauMs)
  }

  /** A request to this endpoint starts. */
  begin(_now: number): void {
    this.inFlight++
  }

  /**
   * A request ends after `latencyMs`. A success folds the latency into the EWMA; a failure leaves
   * the EWMA alone (a fast refusal must not make the endpoint look fast) and adds the penalty.
   */
  end(now: number, latencyMs: number, ok: boolean): void {
    if (this.inFlight > 0) this.inFlight--
    if (!ok) {
      this.failureCount++
      this.penalty = this.penaltyMs(now) + this.failurePenaltyMs
      this.penaltyUpdatedAt = now
      return
    }
    const sample = Math.max(0, latencyMs)
    if (this.lastSampleAt === undefined) {
      this.ewma = sample
    } else {
      const dt = Math.max(0, now - this.lastSampleAt)
      const w = Math.exp(-dt / this.tauMs)
      this.ewma = w * this.ewma + (1 - w) * sample
    }
    this.lastSampleAt = this.lastSampleAt === undefined ? now : Math.max(this.lastSampleAt, now)
    this.sampleCount++
  }

  load(now: number): number {
    return (this.ewma + this.penaltyMs(now)) * (this.inFlight + 1)
  }

  cost(now: number): number {
    return this.currentWeight > 0 ? this.load(now) / this.currentWeight : Number.POSITIVE_INFINITY
  }

  /** For the admin JSON: weight, latency estimate, pending count. */
  snapshot(now: number): EndpointSnapshot {
    return {
      id: this.id,
      weight: this.currentWeight,
      pending: this.inFlight,
      latencyMs: this.ewma,
      penaltyMs: this.penaltyMs(now),
      cold: this.cold,
      samples: this.sampleCount,
      failures: this.failureCount,
      cost: this.cost(now)
    }
  }
}
