// Balancer bench, pure CPU (no sockets): what a pick costs, and what the picker does to tail latency.
//
// 1. Pick cost in ns/pick at 10, 100 and 1,000 endpoints (weights 1..10, varied latency estimates
//    and pending counts) for p2c (the default), smooth weighted round robin, least pending and the
//    consistent hash (keys from a pool of 4,096 strings, the hash included). Each case warms up,
//    then picks in a loop for a fixed time; the figure is elapsed / picks.
// 2. A discrete-event simulation, seeded: 10 endpoints of 4 workers each (FIFO queue in front),
//    exponential service times with a 10 ms mean, one endpoint 10x slower (100 ms). Poisson
//    arrivals at 70% of the total capacity (9 x 400 + 40 = 3,640 req/s, so 2,548 req/s). A
//    request's latency is its queueing plus its service time; completions feed the endpoint's EWMA
//    and pending count before the next arrival is routed. The same arrival and service streams go
//    to each picker: p2c, the reference's round robin and min pending, least pending, smooth WRR.
//    Round robin sends the slow endpoint 10% of the traffic, over six times what it can serve: its
//    queue grows for the whole run, so round robin's p99 grows with the simulated duration. So a
//    second, light scenario runs at 70% of what round robin itself can sustain (10 x 40 = 400
//    req/s, so 280 req/s), where its queues stay bounded: the tail there is the slow service time.
//
//   npm run -s bench -- balancer            full: 0.5 s per pick case, 300 s simulated
//   npm run -s bench -- balancer --quick    0.1 s per pick case, 60 s simulated (~5 s)
// Flags: --seconds S (simulated seconds), --pick-ms MS (time per pick case), --seed N.
import { performance } from "node:perf_hooks"
import { EndpointStats } from "../src/balancer/endpointStats.ts"
import { consistentHash, leastPending, minPending, p2c, type Picker, roundRobin, seededRandom, smoothWeighted } from "../src/balancer/pickers.ts"
import { benchArgs, printSummary } from "./args.ts"

type PickerName = "p2c" | "smooth-wrr" | "least-pending" | "consistent-hash"

const makePicker = (name: PickerName | "round-robin" | "min-pending", seed: number): Picker<EndpointStats> => {
  switch (name) {
    case "p2c":
      return p2c({ random: seededRandom(seed) })
    case "smooth-wrr":
      return smoothWeighted()
    case "least-pending":
      return leastPending()
    case "consistent-hash":
      return consistentHash()
    case "round-robin":
      return roundRobin()
    case "min-pending":
      return minPending()
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Pick cost

const pickCost = (name: PickerName, n: number, budgetMs: number, seed: number): number => {
  const rnd = seededRandom(seed + n)
  const list = Array.from({ length: n }, (_, i) => {
    const e = new EndpointStats(`10.${(i >> 8) & 255}.${i & 255}.1:9090`, { weight: 1 + Math.floor(rnd() * 10) })
    e.end(0, 5 + rnd() * 20, true)
    const pending = Math.floor(rnd() * 4)
    for (let p = 0; p < pending; p++) e.begin(0)
    return e
  })
  const keys = Array.from({ length: 4096 }, (_, i) => `user-${i * 7919}`)
  const picker = makePicker(name, seed)
  let sink = 0
  const run = (picks: number, t: number): void => {
    for (let i = 0; i < picks; i++) {
      const e = picker.pick(list, { now: t + i, key: keys[i & 4095]! })
      if (e !== undefined) sink += e.weight
    }
  }
  run(20_000, 1_000) // warm-up (and the cached structures get built)
  const batch = 2_000
  let picks = 0
  const start = performance.now()
  let elapsed = 0
  while (elapsed < budgetMs) {
    run(batch, 2_000 + picks)
    picks += batch
    elapsed = performance.now() - start
  }
  if (sink < 0) console.log(sink)
  return (elapsed * 1e6) / picks
}

// ---------------------------------------------------------------------------------------------
// 2. Simulated latency

interface SimResult {
  readonly p50: number
  readonly p99: number
  readonly mean: number
  readonly slowShare: number
  readonly requests: number
}

/** A min-heap of completions by time. */
class Completions {
  private readonly times: Array<number> = []
  private readonly items: Array<{ readonly endpoint: number; readonly latency: number }> = []

  get size(): number {
    return this.times.length
  }

  peekTime(): number {
    return this.times[0]!
  }

  push(time: number, item: { readonly endpoint: number; readonly latency: number }): void {
    const { times, items } = this
    let i = times.length
    times.push(time)
    items.push(item)
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (times[parent]! <= time) break
      times[i] = times[parent]!
      items[i] = items[parent]!
      i = parent
    }
    times[i] = time
    items[i] = item
  }

  pop(): { readonly time: number; readonly endpoint: number; readonly latency: number } {
    const { times, items } = this
    const time = times[0]!
    const top = items[0]!
    const lastTime = times.pop()!
    const lastItem = items.pop()!
    const n = times.length
    if (n > 0) {
      let i = 0
      for (;;) {
        let child = 2 * i + 1
        if (child >= n) break
        if (child + 1 < n && times[child + 1]! < times[child]!) child++
        if (times[child]! >= lastTime) break
        times[i] = times[child]!
        items[i] = items[child]!
        i = child
      }
      times[i] = lastTime
      items[i] = lastItem
    }
    return { time, endpoint: top.endpoint, latency: top.latency }
  }
}

const ENDPOINTS = 10
const WORKERS = 4
const FAST_MS = 10
const SLOW_MS = 100
const LOAD = 0.7

/** Total capacity in requests per ms, and what round robin can sustain (10 x the slow one's). */
const CAPACITY_PER_MS = (ENDPOINTS - 1) * (WORKERS / FAST_MS) + WORKERS / SLOW_MS
const RR_CAPACITY_PER_MS = ENDPOINTS * (WORKERS / SLOW_MS)

type SimName = "p2c" | "round-robin" | "min-pending" | "least-pending" | "smooth-wrr"

const simulate = (name: SimName, ratePerMs: number, seconds: number, seed: number): SimResult => {
  const arrivals = seededRandom(seed)
  const service = seededRandom(seed + 1)
  const list = Array.from({ length: ENDPOINTS }, (_, i) => new EndpointStats(`10.0.0.${i + 1}:9090`, { defaultLatencyMs: FAST_MS }))
  const meanOf = (i: number) => (i === ENDPOINTS - 1 ? SLOW_MS : FAST_MS)
  const workers = list.map(() => new Float64Array(WORKERS))
  const picker = makePicker(name, seed + 2)
  const completions = new Completions()
  const latencies: Array<number> = []
  let slow = 0
  const end = seconds * 1_000
  for (let t = -Math.log(1 - arrivals()) / ratePerMs; t < end; t += -Math.log(1 - arrivals()) / ratePerMs) {
    while (completions.size > 0 && completions.peekTime() <= t) {
      const done = completions.pop()
      list[done.endpoint]!.end(done.time, done.latency, true)
    }
    const e = picker.pick(list, { now: t })!
    const index = list.indexOf(e)
    if (index === ENDPOINTS - 1) slow++
    e.begin(t)
    // FIFO with WORKERS servers: the request starts on the earliest free worker.
    const free = workers[index]!
    let w = 0
    for (let k = 1; k < WORKERS; k++) if (free[k]! < free[w]!) w = k
    const startAt = Math.max(t, free[w]!)
    const finish = startAt + -Math.log(1 - service()) * meanOf(index)
    free[w] = finish
    const latency = finish - t
    latencies.push(latency)
    completions.push(finish, { endpoint: index, latency })
  }
  const sorted = Float64Array.from(latencies).sort()
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
  return {
    p50: at(0.5),
    p99: at(0.99),
    mean: latencies.reduce((a, b) => a + b, 0) / latencies.length,
    slowShare: slow / latencies.length,
    requests: latencies.length
  }
}

// ---------------------------------------------------------------------------------------------

const pad = (s: string, n: number) => s.padStart(n)
const fmt = (x: number, digits = 1) => x.toFixed(digits)

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { quick, number } = benchArgs(args)
  const seconds = number("--seconds", quick ? 60 : 300)
  const pickMs = number("--pick-ms", quick ? 100 : 500)
  const seed = number("--seed", 20261123)
  const summary: Record<string, number> = {}

  const pickers: ReadonlyArray<PickerName> = ["p2c", "smooth-wrr", "least-pending", "consistent-hash"]
  const sizes = [10, 100, 1_000]
  process.stdout.write(`pick cost (ns/pick, ${pickMs} ms per case)\n`)
  process.stdout.write(`${"picker".padEnd(16)}${sizes.map((n) => pad(`${n}`, 10)).join("")}\n`)
  for (const name of pickers) {
    const row = sizes.map((n) => {
      const ns = pickCost(name, n, pickMs, seed)
      summary[`${name.replace(/-/g, "_").replace("smooth_wrr", "wrr")}_ns_per_pick_${n}`] = Math.round(ns * 10) / 10
      return pad(fmt(ns), 10)
    })
    process.stdout.write(`${name.padEnd(16)}${row.join("")}\n`)
  }

  const sims: ReadonlyArray<SimName> = ["p2c", "round-robin", "min-pending", "least-pending", "smooth-wrr"]
  const scenario = (label: string, ratePerMs: number): Record<string, SimResult> => {
    process.stdout.write(
      `\nsimulated latency, ${label}: ${ENDPOINTS} endpoints x ${WORKERS} workers, exp service ${FAST_MS} ms (one at ${SLOW_MS} ms), ` +
        `Poisson arrivals at ${fmt(ratePerMs * 1_000, 0)} req/s, ${seconds} s simulated\n`
    )
    process.stdout.write(`${"picker".padEnd(16)}${pad("requests", 10)}${pad("p50 ms", 11)}${pad("p99 ms", 11)}${pad("mean ms", 11)}${pad("slow share", 12)}\n`)
    const results: Record<string, SimResult> = {}
    for (const name of sims) {
      const r = simulate(name, ratePerMs, seconds, seed)
      results[name] = r
      process.stdout.write(
        `${name.padEnd(16)}${pad(`${r.requests}`, 10)}${pad(fmt(r.p50), 11)}${pad(fmt(r.p99), 11)}${pad(fmt(r.mean), 11)}${pad(`${fmt(r.slowShare * 100, 2)}%`, 12)}\n`
      )
    }
    return results
  }
  const ms = (x: number) => Math.round(x * 100) / 100
  const heavy = scenario(`${LOAD * 100}% of total capacity`, LOAD * CAPACITY_PER_MS)
  const light = scenario(`${LOAD * 100}% of round robin's capacity`, LOAD * RR_CAPACITY_PER_MS)
  Object.assign(summary, {
    sim_seconds: seconds,
    p2c_p50_ms: ms(heavy["p2c"]!.p50),
    p2c_p99_ms: ms(heavy["p2c"]!.p99),
    rr_p50_ms: ms(heavy["round-robin"]!.p50),
    rr_p99_ms: ms(heavy["round-robin"]!.p99),
    min_pending_p99_ms: ms(heavy["min-pending"]!.p99),
    least_pending_p99_ms: ms(heavy["least-pending"]!.p99),
    p2c_slow_share: Math.round(heavy["p2c"]!.slowShare * 10_000) / 10_000,
    p99_ratio: ms(heavy["round-robin"]!.p99 / heavy["p2c"]!.p99),
    light_p2c_p99_ms: ms(light["p2c"]!.p99),
    light_rr_p99_ms: ms(light["round-robin"]!.p99),
    light_p99_ratio: ms(light["round-robin"]!.p99 / light["p2c"]!.p99)
  })
  process.stdout.write("\n")
  printSummary(summary)
}
