// What one run of the sidecar bench gathers, per path (mode): open-loop and saturation samples (one
// per round), per-request CPU and system calls per process, the proxies' share of a core at the
// fixed rate and their RSS over the run. The orchestrator (bench/sidecar.ts) fills it in, report.ts
// reads it.
import type { GeneratorKind } from "./generator.ts"
import type { StallCount } from "./hopStalls.ts"
import type { OpenSample } from "./nodeLoad.ts"
import { type Mode, MODES, type Options, PROXIED, type Proxied } from "./options.ts"
import type { Usage } from "./procStats.ts"

/** One saturation run, from wrk or (where wrk is missing) the Node closed loop. */
export interface SaturationSample {
  /** Requests answered over the window CPU was read across (the divisor for CPU per request). */
  readonly requests: number
  readonly rps: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly errors: number
  readonly firstError: string | undefined
}

/** Every process in the picture: the load generator (this process, or wrk), the app, proxy A, proxy B. */
export type Proc = "client" | "app" | "a" | "b"
export const PROCS: ReadonlyArray<Proc> = ["client", "app", "a", "b"]
export type Usages = Record<Proc, Usage>
const ZERO: Usage = { cpu: 0, mainCpu: 0, reads: 0, writes: 0 }
export const ZERO_USAGES: Usages = { client: ZERO, app: ZERO, a: ZERO, b: ZERO }
const add = (x: Usage, y: Usage): Usage => ({ cpu: x.cpu + y.cpu, mainCpu: x.mainCpu + y.mainCpu, reads: x.reads + y.reads, writes: x.writes + y.writes })
export const addUsages = (x: Usages, y: Usages): Usages => ({ client: add(x.client, y.client), app: add(x.app, y.app), a: add(x.a, y.a), b: add(x.b, y.b) })

/** VmRSS of one pair's proxies, MB. */
export interface Rss {
  idleA: number
  idleB: number
  peakA: number
  peakB: number
  after5A: number
  after5B: number
  after10A: number
  after10B: number
  /** The anonymous part (rssAnonMb) at idle and 10 s after the burst: what the sidecar itself holds. */
  idleAnonA: number
  idleAnonB: number
  after10AnonA: number
  after10AnonB: number
}

export interface Results {
  readonly options: Options
  /** What drove the saturation phase. */
  saturationTool: "wrk" | "node"
  /** What drove the open loop (undefined: that phase did not run). */
  openGenerator: GeneratorKind | undefined
  /** Paths asked for but not run, with the reason (a proxy not installed). */
  readonly skipped: Map<Mode, string>
  readonly open: Map<Mode, Array<OpenSample>>
  readonly saturated: Map<Mode, Array<SaturationSample>>
  /** The saturation phase's warm-up round (--saturation-warmup): one run per path, not in the medians. */
  readonly saturationWarmup: Map<Mode, SaturationSample>
  /** Per request (CPU in microseconds), keyed "<phase> <mode>", one entry per round. */
  readonly perRequest: Map<string, Array<Usages>>
  /** Each pair's share of a core during its open-loop runs. */
  readonly vcpuAtRate: Map<Proxied, Array<{ a: number; b: number }>>
  readonly rss: Map<Proxied, Rss>
  /** iip-mesh pairs: TLS handshakes A made with B over the pair's life, and that life in seconds. */
  readonly handshakes: Map<Proxied, { readonly count: number; readonly seconds: number }>
  /** iip-mesh pairs: each hop's event-loop stalls over 10 ms in the pair's open-loop slices, one entry per round. */
  readonly openStalls: Map<Proxied, Array<{ readonly a: StallCount; readonly b: StallCount }>>
}

export const emptyResults = (options: Options): Results => ({
  options,
  saturationTool: "wrk",
  openGenerator: undefined,
  skipped: new Map(),
  open: new Map(MODES.map((m) => [m, []])),
  saturated: new Map(MODES.map((m) => [m, []])),
  saturationWarmup: new Map(),
  perRequest: new Map(),
  vcpuAtRate: new Map(PROXIED.map((m) => [m, []])),
  rss: new Map(PROXIED.map((m) => [m, { idleA: NaN, idleB: NaN, peakA: NaN, peakB: NaN, after5A: NaN, after5B: NaN, after10A: NaN, after10B: NaN, idleAnonA: NaN, idleAnonB: NaN, after10AnonA: NaN, after10AnonB: NaN }])),
  handshakes: new Map(),
  openStalls: new Map()
})
