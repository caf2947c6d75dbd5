// Per-endpoint balancing state: a latency estimate (an EWMA weighted by the time since the last
// sample, so a burst after a long quiet spell counts fully, with a floor per sample so a fast
// stream of samples moves it too), the
// requests in flight, a failure penalty that fades within seconds, and the weight.
// Pure: time always comes in as `now` (ms), nothing here reads a clock or schedules anything.
//
//   load = (estimate + penalty) * (pending / weight + 1)
//   estimate = ewma * exp(-max(0, now - last sample - staleAfter) / tau)
//
// The estimate fades once no sample has come for `staleAfter` (like Finagle's peak EWMA, which
// fades at once). Without that, an endpoint that was slow once loses every comparison, so it never
// gets the sample that would show it recovered; with it, a starved endpoint looks cheaper as time
// passes, gets one request, and that sample (weighing fully, after the long gap) says whether it is
// still slow. The grace (1 s) keeps endpoints in steady use (a sample every few ms) on their plain EWMA,
// so equal latencies give shares equal to the weights: fading at once would favour whichever
// endpoint was sampled longest ago.
//
// A starved endpoint is probed: once it has gone `staleAfter` with no request started and none in
// flight, p2c gives it the next request it draws it for (probeDue). A request that started after
// such a gap is a fresh look: its sample replaces the estimate and clears the failure penalty, so an
// endpoint back from a stall or an outage wins its share again a second or two after it recovers
// (fading alone took 25-32 s from a stall's 4 s estimate). Under steady traffic no request starts
// after such a gap, and the EWMA below is unchanged. A probe that finds the endpoint no faster than
// its estimate doubles the gap before the next (up to 4 x staleAfter): one that is really slow
// costs a request every few seconds, not every second.
//
// A success sample counts for at most `sampleCapFactor` times the estimate its request started
// with (and at least `sampleCapFloorMs` above it): a stall's requests, answered seconds late, must
// not set the estimate to seconds (the requests in flight steer traffic off a stalled endpoint
// meanwhile). An endpoint that really got slower still climbs, by that factor per round of requests.
//
// Pending counts per unit of weight: an endpoint of weight 4 carrying four times the requests of
// one of weight 1 is equally loaded, so a picker that draws by weight (p2c) and compares loads
// keeps the shares at the weights when latencies are equal, and moves traffic only for a real
// difference in latency or queueing. A cold endpoint (no sample yet) reports `coldEstimateMs()`
// (the balancer passes its peers' mean, so a new endpoint gets traffic at once without being
// flooded: its pending count still rises), and its first sample replaces it outright.
//
// Weight changes go through `setWeight`, which bumps a module-wide epoch: pickers that cache
// something built from weights (prefix sums, rings, the reference's weighted list) rebuild when the
// epoch moves, so a cached structure is never stale and never rebuilt needlessly.

export interface EndpointStatsOptions {
  /** Initial weight (from discovery); a weight of 0 or less is never picked. Default 1. */
  readonly weight?: number
  /** EWMA time constant in ms: a sample dt ms after the previous one weighs 1 - exp(-dt/tau). Default 10,000. */
  readonly tauMs?: number
  /**
   * The least a success sample weighs, however close it follows the last: the first samples weigh
   * as a running mean (1/2, 1/3 ...) until they reach this floor. Default 0.05 (about the last 20
   * samples under heavy traffic, the last tau of time under light traffic); 0 weighs by time alone.
   */
  readonly minSampleWeight?: number
  /** How long without a sample before the estimate starts to fade, in ms. Default 1,000. */
  readonly staleAfterMs?: number
  /** What a cold endpoint (no sample yet) is assumed to take, in ms. Default 100. */
  readonly defaultLatencyMs?: number
  /** The estimate while cold, asked at each comparison. Default: `defaultLatencyMs`. */
  readonly coldEstimateMs?: () => number
  /** A success sample counts for at most this many times the estimate its request started with. Default 4. */
  readonly sampleCapFactor?: number
  /** ... and for at least this much above it, in ms (small estimates are noisy). Default 20. */
  readonly sampleCapFloorMs?: number
  /** Added to the latency estimate per failure, fading with tau. Default 500. */
  readonly failurePenaltyMs?: number
  /**
   * The penalty's fading time constant in ms. Default 2,000: long enough to steer traffic off an
   * endpoint that fails fast, short enough that one back from a restart wins requests again within
   * seconds (a longer outage is the outlier detector's to handle, and its return clears the penalty).
   */
  readonly penaltyTauMs?: number
}

/** What every picker needs of an endpoint. `EndpointStats` is the implementation. */
export interface Balanced {
  /** Stable identity (an address, `host:port`): consistent hash and ip hash key on it. */
  readonly id: string
  readonly weight: number
  readonly pending: number
  /** Latency samples so far: an estimate from very few is not trusted to steer traffic. */
  readonly samples: number
  /** (estimate + penalty) * (pending / weight + 1); Infinity for a weight of 0 or less. */
  load(now: number): number
  /** Nothing started or answered for a while and none in flight: its estimate is stale, worth a probe. */
  probeDue(now: number): boolean
}

let epoch = 0

/** A probe's sample below the estimate by this factor found the endpoint better: the next probe comes soon. */
const PROBE_BETTER = 1.5
/** The longest gap between probes of an endpoint that stays slow, in units of staleAfter. */
const MAX_PROBE_GAP = 4

/** Moves whenever any endpoint's weight changes; caches built from weights compare it. */
export const weightEpoch = (): number => epoch

export class EndpointStats implements Balanced {
  readonly id: string
  private currentWeight: number
  private readonly tauMs: number
  private readonly staleAfterMs: number
  private readonly minSampleWeight: number
  private readonly failurePenaltyMs: number
  private readonly penaltyTauMs: number
  private ewma: number
  private readonly coldEstimateMs: (() => number) | undefined
  private lastSampleAt: number | undefined = undefined
  private lastStartAt = Number.NEGATIVE_INFINITY
  /** Time without a request before a probe: staleAfter, doubled by each probe that found no change. */
  private probeGapMs: number
  private readonly sampleCapFactor: number
  private readonly sampleCapFloorMs: number
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
    this.staleAfterMs = options.staleAfterMs ?? 1_000
    this.probeGapMs = this.staleAfterMs
    this.minSampleWeight = options.minSampleWeight ?? 0.05
    this.ewma = options.defaultLatencyMs ?? 100
    this.coldEstimateMs = options.coldEstimateMs
    this.failurePenaltyMs = options.failurePenaltyMs ?? 500
    this.penaltyTauMs = options.penaltyTauMs ?? 2_000
    this.sampleCapFactor = Math.max(1, options.sampleCapFactor ?? 4)
    this.sampleCapFloorMs = Math.max(0, options.sampleCapFloorMs ?? 20)
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

  /** The latency EWMA in ms as of the last sample (the default while cold). */
  get latencyMs(): number {
    return this.ewma
  }

  /** The EWMA, faded once it has gone `staleAfterMs` without a sample: what the pickers compare. */
  estimateMs(now: number): number {
    if (this.lastSampleAt === undefined) return this.coldEstimateMs === undefined ? this.ewma : this.coldEstimateMs()
    const stale = now - this.lastSampleAt - this.staleAfterMs
    return stale <= 0 ? this.ewma : this.ewma * Math.exp(-stale / this.tauMs)
  }

  /** The failure penalty as of `now`, faded by exp(-dt/penaltyTau) since it was last changed. */
  penaltyMs(now: number): number {
    if (this.penalty === 0) return 0
    const dt = Math.max(0, now - this.penaltyUpdatedAt)
    return this.penalty * Math.exp(-dt / this.penaltyTauMs)
  }

  /** A fresh start for an endpoint back from an ejection. */
  clearPenalty(): void {
    this.penalty = 0
  }

  /** A new process behind the same address: cold again (requests in flight still count). */
  restart(): void {
    this.penalty = 0
    this.lastSampleAt = undefined
    this.sampleCount = 0
    this.probeGapMs = this.staleAfterMs
  }

  /** A request to this endpoint starts. */
  begin(now: number): void {
    this.inFlight++
    if (now > this.lastStartAt) this.lastStartAt = now
  }

  probeDue(now: number): boolean {
    return this.inFlight === 0 && this.lastSampleAt !== undefined && now - Math.max(this.lastSampleAt, this.lastStartAt) >= this.probeGapMs
  }

  /** A request ends saying nothing about the endpoint (it was never reached): no sample, no penalty. */
  release(): void {
    if (this.inFlight > 0) this.inFlight--
  }

  /**
   * A request ends after `latencyMs`. A success folds the latency into the EWMA (capped, when
   * `startEstimateMs`, the estimate as the request started, is given); a failure leaves the EWMA
   * alone (a fast refusal must not make the endpoint look fast) and adds the penalty.
   */
  end(now: number, latencyMs: number, ok: boolean, startEstimateMs?: number): void {
    if (this.inFlight > 0) this.inFlight--
    if (!ok) {
      this.failureCount++
      this.penalty = this.penaltyMs(now) + this.failurePenaltyMs
      this.penaltyUpdatedAt = now
      return
    }
    let sample = Math.max(0, latencyMs)
    if (startEstimateMs !== undefined) {
      sample = Math.min(sample, Math.max(startEstimateMs * this.sampleCapFactor, startEstimateMs + this.sampleCapFloorMs))
    }
    if (this.lastSampleAt === undefined) {
      this.ewma = sample
    } else if (now - latencyMs - this.lastSampleAt >= this.staleAfterMs) {
      // A fresh look after a gap (a probe, or sparse traffic): it says what the endpoint is like now.
      const better = sample * PROBE_BETTER < this.estimateMs(now)
      this.probeGapMs = better ? this.staleAfterMs : Math.min(this.probeGapMs * 2, this.staleAfterMs * MAX_PROBE_GAP)
      this.ewma = sample
      this.penalty = 0
    } else {
      this.probeGapMs = this.staleAfterMs
      // By time, but never less than the running mean's share (1/2, 1/3 ...) down to the floor:
      // a burst of samples must move the estimate too (a caller's first requests, slowed by
      // connecting and warming up, would otherwise set it for the next 10 s).
      const dt = Math.max(0, now - this.lastSampleAt)
      const byTime = 1 - Math.exp(-dt / this.tauMs)
      const meanShare = this.minSampleWeight > 0 ? 1 / (this.sampleCount + 1) : 0
      const w = Math.max(byTime, this.minSampleWeight, meanShare)
      // Blended from the faded estimate: a starved endpoint's first new sample starts from where its
      // fading had brought it, not from the stale value that starved it.
      this.ewma = (1 - w) * this.estimateMs(now) + w * sample
    }
    this.lastSampleAt = this.lastSampleAt === undefined ? now : Math.max(this.lastSampleAt, now)
    this.sampleCount++
  }

  load(now: number): number {
    const w = this.currentWeight
    return w > 0 ? (this.estimateMs(now) + this.penaltyMs(now)) * (this.inFlight / w + 1) : Number.POSITIVE_INFINITY
  }
}
