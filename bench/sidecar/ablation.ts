// The sidecar bench's ablation table (report.ts prints it when a bare Node relay pair ran): the
// open loop's added latency path by path, one layer of the sidecar's at a time (bytes relayed by
// two Node processes, then HTTP parsed and pooled, then the sidecars with neither mTLS nor
// tracing, then with one, then both), each with what it adds over the layer below, its two hops' CPU per request at the fixed
// rate, and its added p99 against the nginx pair's, all from the same run.
import { median, ms, pad, round, signed, times, us } from "./format.ts"
import type { Mode } from "./options.ts"
import type { Results } from "./results.ts"

type Percentile = "p50" | "p90" | "p99"

/**
 * Each layer and the layers below it, each with what the step from it adds: the first below that
 * ran is the base of the layer's step.
 */
const LAYERS: ReadonlyArray<{ readonly mode: Mode; readonly below: ReadonlyArray<readonly [Mode, string]> }> = [
  { mode: "relay-bytes", below: [["direct", "two Node processes relaying bytes"]] },
  { mode: "relay-tls", below: [["relay-bytes", "+ the mesh's mTLS between the byte relays (node's TLS floor)"]] },
  { mode: "relay-http", below: [["relay-bytes", "+ HTTP/1.1: node:http server, keep-alive agent"]] },
  { mode: "mesh-plain", below: [["relay-http", "+ the sidecars: IIP on plain TCP, tracing off"], ["relay-bytes", "+ the sidecars: HTTP, IIP on plain TCP, tracing off"]] },
  { mode: "untraced", below: [["mesh-plain", "+ mTLS"], ["relay-http", "+ the sidecars: IIP over mTLS, tracing off"]] },
  { mode: "mtls-off", below: [["mesh-plain", "+ tracing"], ["relay-http", "+ the sidecars: IIP on plain TCP, tracing on"]] },
  { mode: "meshed", below: [["untraced", "+ tracing"], ["mtls-off", "+ mTLS"], ["relay-http", "+ the sidecars with their defaults (mTLS, tracing)"]] }
]

export interface Ablation {
  readonly lines: ReadonlyArray<string>
  readonly summary: Record<string, object>
}

export const ablation = (results: Results): Ablation => {
  const ran = (mode: Mode) => results.open.get(mode)!.length > 0
  if (!ran("relay-bytes") && !ran("relay-tls") && !ran("relay-http")) return { lines: [], summary: {} }
  const o = (mode: Mode, key: Percentile) => median(results.open.get(mode)!.map((s) => s[key]))
  const added = (key: Percentile, mode: Mode, base: Mode = "direct") => o(mode, key) - o(base, key)
  /** Both hops' CPU per request in the open loop, microseconds. */
  const hopsCpu = (mode: Mode) => median((results.perRequest.get(`open ${mode}`) ?? []).map((u) => u.a.cpu + u.b.cpu))
  const vsNginx = (mode: Mode) => (added("p99", "nginx") > 0 ? added("p99", mode) / added("p99", "nginx") : NaN)
  const rows = LAYERS.filter((layer) => ran(layer.mode)).map(({ mode, below }) => {
    const base = below.find(([under]) => ran(under))
    return { mode, below: base?.[0], step: base?.[1] ?? "(no layer below it ran)" }
  })
  const lines = [
    ``,
    `ablation at ${results.options.rate} req/s (open loop, same run): each layer over the one below it; CPU = both hops' us a request`,
    `${pad("", 12, true)} ${pad("added p50", 9)} ${pad("added p90", 9)} ${pad("added p99", 9)} ${pad("step p99", 9)} ${pad("CPU us", 7)} ${pad("p99 vs nginx", 12)}  step`
  ]
  for (const mode of ["nginx" as const].filter(ran)) {
    lines.push(`${pad(mode, 12, true)} ${pad(signed(added("p50", mode)), 9)} ${pad(signed(added("p90", mode)), 9)} ${pad(signed(added("p99", mode)), 9)} ${pad("", 9)} ${pad(us(hopsCpu(mode)), 7)} ${pad("1x", 12)}  (the C pair the targets name)`)
  }
  for (const { mode, below, step } of rows) {
    const stepShown = below === undefined ? "-" : signed(added("p99", mode, below))
    lines.push(
      `${pad(mode, 12, true)} ${pad(signed(added("p50", mode)), 9)} ${pad(signed(added("p90", mode)), 9)} ${pad(signed(added("p99", mode)), 9)} ${pad(stepShown, 9)} ` +
        `${pad(us(hopsCpu(mode)), 7)} ${pad(times(vsNginx(mode)), 12)}  ${step}${below === undefined || below === "direct" ? "" : ` (over ${below})`}`
    )
  }
  lines.push(`(a Node relay meets the 2 ms target here if relay-bytes' added p99 is <= 2 ms: ${ran("relay-bytes") ? `${ms(added("p99", "relay-bytes"))} ms` : "not run"})`)
  const summary = Object.fromEntries(
    rows.map(({ mode, below }) => [mode, {
      added_p50_ms: round(added("p50", mode), 4),
      added_p90_ms: round(added("p90", mode), 4),
      added_p99_ms: round(added("p99", mode), 4),
      step_p99_ms: below === undefined ? NaN : round(added("p99", mode, below), 4),
      below: below ?? null,
      cpu_us_per_request: round(hopsCpu(mode), 1),
      added_p99_vs_nginx: round(vsNginx(mode), 3)
    }])
  )
  return { lines, summary }
}
