// The sidecar bench's ablation table (bench/sidecar/ablation.ts): absent unless a relay pair ran;
// each layer's added latency over direct, its step over the first layer below it that ran, both
// hops' CPU a request in the open loop, and its added p99 against the nginx pair's.
import { describe, expect, it } from "vitest"
import { ablation } from "../../bench/sidecar/ablation.ts"
import type { OpenSample } from "../../bench/sidecar/nodeLoad.ts"
import { type Mode, parseArgs } from "../../bench/sidecar/options.ts"
import { emptyResults, type Results, ZERO_USAGES } from "../../bench/sidecar/results.ts"

const sample = (p50: number, p99: number): OpenSample => ({
  sent: 1000,
  p50,
  p90: (p50 + p99) / 2,
  p99,
  max: p99,
  errors: 0,
  firstError: undefined,
  maxOutstanding: 1,
  latencies: new Float64Array(),
  calls: { dueMs: new Float64Array(), ms: new Float64Array() }
})

/** One round of `paths` (p50, p99, both hops' CPU us a request split evenly). */
const resultsOf = (paths: ReadonlyArray<[Mode, number, number, number]>): Results => {
  const results = emptyResults(parseArgs(["--quick"]))
  for (const [mode, p50, p99, cpu] of paths) {
    results.open.get(mode)!.push(sample(p50, p99))
    const half = { cpu: cpu / 2, mainCpu: 0, reads: 0, writes: 0 }
    results.perRequest.set(`open ${mode}`, [{ ...ZERO_USAGES, a: half, b: half }])
  }
  return results
}

describe("the sidecar bench's ablation table", () => {
  it("is left out when no relay pair ran", () => {
    expect(ablation(resultsOf([["direct", 1, 2, 0], ["meshed", 1.5, 6, 400], ["untraced", 1.4, 5, 380]]))).toEqual({ lines: [], summary: {} })
  })

  it("gives each layer's step over the first layer below it that ran, its hops' CPU and its p99 against nginx's", () => {
    const { lines, summary } = ablation(resultsOf([
      ["direct", 1, 2, 0],
      ["nginx", 1.2, 3, 120],
      ["relay-bytes", 1.3, 3.5, 180],
      ["relay-http", 1.4, 4.5, 500],
      ["untraced", 1.5, 5, 420],
      ["meshed", 1.6, 6, 480]
    ]))
    // mesh-plain did not run: untraced's step is over relay-http, and says it adds the sidecars, not mTLS alone.
    expect(summary).toEqual({
      "relay-bytes": { added_p50_ms: 0.3, added_p90_ms: 0.9, added_p99_ms: 1.5, step_p99_ms: 1.5, below: "direct", cpu_us_per_request: 180, added_p99_vs_nginx: 1.5 },
      "relay-http": { added_p50_ms: 0.4, added_p90_ms: 1.45, added_p99_ms: 2.5, step_p99_ms: 1, below: "relay-bytes", cpu_us_per_request: 500, added_p99_vs_nginx: 2.5 },
      untraced: { added_p50_ms: 0.5, added_p90_ms: 1.75, added_p99_ms: 3, step_p99_ms: 0.5, below: "relay-http", cpu_us_per_request: 420, added_p99_vs_nginx: 3 },
      meshed: { added_p50_ms: 0.6, added_p90_ms: 2.3, added_p99_ms: 4, step_p99_ms: 1, below: "untraced", cpu_us_per_request: 480, added_p99_vs_nginx: 4 }
    })
    expect(lines.find((line) => line.startsWith("untraced"))).toMatch(/^untraced\s+\+0\.500\s+\+1\.750\s+\+3\.000\s+\+0\.500\s+420\s+3\.00x\s+\+ the sidecars: IIP over mTLS, tracing off \(over relay-http\)$/)
    expect(lines.find((line) => line.startsWith("nginx"))).toMatch(/^nginx\s+\+0\.200\s+\+0\.600\s+\+1\.000\s+120\s+1x/)
    expect(lines.at(-1)).toBe("(a Node relay meets the 2 ms target here if relay-bytes' added p99 is <= 2 ms: 1.500 ms)")
  })
})
