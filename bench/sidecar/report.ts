// The sidecar bench's report: the tables (per path: latency added at the fixed rate, saturation,
// CPU and system calls per request, proxies' RSS), the sidecars against the nginx and haproxy pairs,
// issue 14's targets marked met / MISSED, mTLS's cost (meshed - mtls-off) against issue 15's, and
// the summary object printed as the last JSON line.
import { ablation } from "./ablation.ts"
import { addStalls, describeStalls, NO_STALLS, type StallCount } from "./hopStalls.ts"
import { mb, median, ms, pad, percent, round, signed, times, us } from "./format.ts"
import { type Meshed, type Mode, MODES, PROXIED, type Proxied } from "./options.ts"
import type { Usage } from "./procStats.ts"
import { PAYLOAD_BYTES } from "./request.ts"
import { type Proc, PROCS, type Results, type Rss } from "./results.ts"

type Percentile = "p50" | "p90" | "p99"

const stallSummary = (s: StallCount) => ({ count: s.count, longest_ms: round(s.longestMs, 1), total_ms: round(s.totalMs, 1), cpu_ms: round(s.cpuMs, 1), gc_ms: round(s.gcMs, 1), major_gc_ms: round(s.majorGcMs, 1) })

/** One hop's stalls over every round. */
const hopStalls = (rounds: ReadonlyArray<{ readonly a: StallCount; readonly b: StallCount }>, hop: "a" | "b"): StallCount =>
  rounds.reduce((sum, round) => addStalls(sum, round[hop]), NO_STALLS)

/** One of issue 14's targets, with the figure measured against it (NaN when its paths did not run). */
interface Target {
  readonly key: string
  readonly label: string
  readonly value: number
  readonly shown: string
  readonly limit: string
  readonly met: boolean
  /** False when the sample cannot judge the target (a path made latency lower than its base by more than the target). */
  readonly judged: boolean
}

export const report = (results: Results): { readonly text: string; readonly summary: object } => {
  const { options } = results
  const ran = (mode: Mode) => results.open.get(mode)!.length > 0 || results.saturated.get(mode)!.length > 0
  const modes = MODES.filter(ran)
  const proxied = PROXIED.filter(ran)

  const o = (mode: Mode, key: Percentile) => median(results.open.get(mode)!.map((s) => s[key]))
  const s = (mode: Mode, key: "rps" | Percentile) => median(results.saturated.get(mode)!.map((x) => x[key]))
  /** Open-loop latency `mode` adds over `base`. */
  const added = (key: Percentile, mode: Mode, base: Mode = "direct") => o(mode, key) - o(base, key)
  const rpsRatio = (mode: Mode, base: Mode) => s(mode, "rps") / s(base, "rps")
  const usageFor = (key: string, p: Proc, k: keyof Usage) => median((results.perRequest.get(key) ?? []).map((u) => u[p][k]))
  /** Both proxies' CPU per request at saturation, microseconds. */
  const pairCpu = (mode: Proxied) => usageFor(`saturation ${mode}`, "a", "cpu") + usageFor(`saturation ${mode}`, "b", "cpu")
  /** The saturation warm-up round's figures (one run per path). */
  const warmupRps = (mode: Mode) => results.saturationWarmup.get(mode)?.rps ?? NaN
  const warmupPairCpu = (mode: Mode) => usageFor(`saturation-warmup ${mode}`, "a", "cpu") + usageFor(`saturation-warmup ${mode}`, "b", "cpu")
  // CPU per request of the whole picture (client + app, plus both proxies): on a box where CPU is
  // what runs out, the saturation ratio to expect; steadier than req/s on a shared one.
  const totalCpu = (mode: Mode) => PROCS.reduce((sum, p) => sum + (mode === "direct" && (p === "a" || p === "b") ? 0 : usageFor(`saturation ${mode}`, p, "cpu")), 0)
  const vcpu = (mode: Proxied, p: "a" | "b") => median(results.vcpuAtRate.get(mode)!.map((c) => c[p]))
  const rss = (mode: Proxied): Rss => results.rss.get(mode)!

  const lines: Array<string> = []
  const tool = results.saturationTool === "wrk" ? `wrk -t1 -c${options.inflight}` : `Node closed loop, ${options.inflight} in flight (wrk not installed)`
  lines.push(`open loop, ${options.rate} req/s (${results.openGenerator === "c" ? "C generator" : results.openGenerator === "node" ? "Node generator" : "not run"}), ${PAYLOAD_BYTES} B POST, median of ${options.rounds} round(s) of ${options.measureMs / 1000} s; added = path - direct`)
  lines.push(`${pad("", 10, true)} ${pad("p50 ms", 8)} ${pad("p90 ms", 8)} ${pad("p99 ms", 8)}   ${pad("added p50", 9)} ${pad("added p90", 9)} ${pad("added p99", 9)}`)
  for (const mode of modes) {
    const addedCells = mode === "direct" ? "" : `   ${pad(signed(added("p50", mode)), 9)} ${pad(signed(added("p90", mode)), 9)} ${pad(signed(added("p99", mode)), 9)}`
    lines.push(`${pad(mode, 10, true)} ${pad(ms(o(mode, "p50")), 8)} ${pad(ms(o(mode, "p90")), 8)} ${pad(ms(o(mode, "p99")), 8)}${addedCells}`)
  }
  lines.push(`${pad("tracing", 10, true)} ${pad(signed(added("p50", "meshed", "untraced")), 8)} ${pad(signed(added("p90", "meshed", "untraced")), 8)} ${pad(signed(added("p99", "meshed", "untraced")), 8)}   (meshed - untraced: what tracing adds)`)
  lines.push(`${pad("mTLS", 10, true)} ${pad(signed(added("p50", "meshed", "mtls-off")), 8)} ${pad(signed(added("p90", "meshed", "mtls-off")), 8)} ${pad(signed(added("p99", "meshed", "mtls-off")), 8)}   (meshed - mtls-off: what mutual TLS adds)`)
  lines.push(`slowest request per round, and the sidecars' event-loop stalls over 10 ms in their path's slices (all rounds; bench/sidecar/stallProbe.mjs)`)
  for (const mode of modes) {
    const slowest = results.open.get(mode)!.map((sample) => ms(sample.max)).join(", ")
    const stalls = results.openStalls.get(mode as Proxied)
    const stallCells = stalls === undefined ? "" : `; A ${describeStalls(hopStalls(stalls, "a"))}; B ${describeStalls(hopStalls(stalls, "b"))}`
    lines.push(`  ${pad(mode, 10, true)} slowest ${slowest} ms${stallCells}`)
  }
  lines.push(``)
  lines.push(`saturation, ${tool}, ${options.measureMs / 1000} s; proxies' CPU = A + B per request (utime + stime / requests)`)
  lines.push(`${pad("", 10, true)} ${pad("req/s", 8)} ${pad("vs direct", 9)} ${pad("p50 ms", 8)} ${pad("p99 ms", 8)} ${pad("proxies' CPU us/req", 20)} ${pad("all CPU vs direct", 18)}`)
  for (const mode of modes) {
    const cpu = mode === "direct" ? "" : us(pairCpu(mode))
    const byCpu = mode === "direct" ? "" : percent(totalCpu("direct") / totalCpu(mode))
    lines.push(
      `${pad(mode, 10, true)} ${pad(us(s(mode, "rps")), 8)} ${pad(mode === "direct" ? "" : percent(rpsRatio(mode, "direct")), 9)} ${pad(ms(s(mode, "p50")), 8)} ${pad(ms(s(mode, "p99")), 8)} ${pad(cpu, 20)} ${pad(byCpu, 18)}`
    )
  }
  lines.push(`(all CPU vs direct: client + app CPU per request direct, over the same with both proxies; the ratio a CPU-bound box would show)`)
  if (results.saturationWarmup.size > 0) {
    const warmups = modes.filter((mode) => results.saturationWarmup.has(mode)).map((mode) => `${mode} ${us(warmupRps(mode))} req/s${mode === "direct" ? "" : `, ${us(warmupPairCpu(mode))} us`}`)
    lines.push(`warm-up round before them (${options.saturationWarmupMs / 1000} s a path, not in the medians): ${warmups.join("; ")}`)
  }
  lines.push(``)
  const openClient = results.openGenerator === "c" ? "the C generator" : "the bench's Node process"
  lines.push(`per request: CPU us, read + write syscalls (client: ${results.saturationTool === "wrk" ? "wrk at saturation, " : ""}${openClient} in the open loop;`)
  lines.push(`syscr/syscw count read/write-family calls only: the recv/send that nginx and haproxy use show as 0)`)
  lines.push(`${pad("", 20, true)} ${pad("client", 13)} ${pad("app", 13)} ${pad("proxy A", 13)} ${pad("proxy B", 13)}`)
  const cell = (key: string, p: Proc) => pad(`${us(usageFor(key, p, "cpu"))} ${usageFor(key, p, "reads").toFixed(1)}+${usageFor(key, p, "writes").toFixed(1)}`, 13)
  for (const phase of ["open", "saturation"]) {
    for (const mode of modes) {
      const key = `${phase} ${mode}`
      if (!results.perRequest.has(key)) continue
      lines.push(`${pad(key, 20, true)} ${cell(key, "client")} ${cell(key, "app")} ${mode === "direct" ? "" : `${cell(key, "a")} ${cell(key, "b")}`}`)
    }
  }
  lines.push(``)
  lines.push(`proxy RSS MB           idle   peak  after 5 s  after 10 s   CPU at ${options.rate} req/s   anon: idle  after 10 s`)
  for (const mode of proxied) {
    const r = rss(mode)
    for (const [name, idle, peak, after5, after10, cpu, idleAnon, after10Anon] of [
      ["A", r.idleA, r.peakA, r.after5A, r.after10A, vcpu(mode, "a"), r.idleAnonA, r.after10AnonA],
      ["B", r.idleB, r.peakB, r.after5B, r.after10B, vcpu(mode, "b"), r.idleAnonB, r.after10AnonB]
    ] as const) {
      const cpuText = `${Number.isFinite(cpu) ? cpu.toFixed(2) : "-"} vCPU`
      lines.push(`${pad(`${mode} ${name}`, 20, true)} ${pad(mb(idle), 7)} ${pad(mb(peak), 6)} ${pad(mb(after5), 10)} ${pad(mb(after10), 11)}   ${pad(cpuText, 18, true)} ${pad(mb(idleAnon), 10)} ${pad(mb(after10Anon), 11)}`)
    }
  }
  lines.push(`(anon: the anonymous part of the RSS, the process's own heaps; the rest is mostly the node binary's file pages, shared between processes)`)

  // The sidecars against each C proxy pair.
  const cpuVs = (mode: Meshed, base: Proxied) => pairCpu(mode) / pairCpu(base)
  /** How many times the base pair's added p99 `mode` adds; undefined (NaN) when the base added nothing measurable. */
  const addedP99Vs = (mode: Meshed, base: Proxied) => (added("p99", base) > 0 ? added("p99", mode) / added("p99", base) : NaN)
  lines.push(``)
  for (const base of ["nginx", "haproxy"] as const) {
    if (!ran(base)) {
      lines.push(`sidecars vs ${base} pair: not run${results.skipped.has(base) ? ` (${results.skipped.get(base)})` : ""}`)
      continue
    }
    lines.push(
      `sidecars vs ${base} pair: CPU per request ${times(cpuVs("meshed", base))} (untraced ${times(cpuVs("untraced", base))}), ` +
        `saturation ${times(rpsRatio("meshed", base))} (untraced ${times(rpsRatio("untraced", base))}), ` +
        `added p99 ${times(addedP99Vs("meshed", base))} (untraced ${times(addedP99Vs("untraced", base))})`
    )
  }

  // Issue 14's targets, for the sidecars with their defaults (tracing on) unless said otherwise.
  const traced = rss("meshed")
  const idleWorst = Math.max(traced.idleA, traced.idleB)
  const peakWorst = Math.max(traced.peakA, traced.peakB)
  const after10Growth = Math.max(traced.after10A / traced.idleA - 1, traced.after10B / traced.idleB - 1)
  const target = (key: string, label: string, value: number, shown: string, limit: string, met: (value: number) => boolean, judged = true): Target => ({
    key,
    label,
    value,
    shown: Number.isFinite(value) ? shown : "n/a",
    limit,
    met: Number.isFinite(value) && met(value),
    judged
  })
  // A proxy cannot make requests faster: latency added below minus the target is the machine's
  // noise, larger than what the target measures, so that sample judges nothing (neither met nor MISSED).
  const addedJudged = (value: number, limit: number) => !(value < -limit)
  const targets: ReadonlyArray<Target> = [
    target("mesh_cpu_vs_nginx", "tracing on: sidecars' CPU per request vs nginx pair", cpuVs("meshed", "nginx"), times(cpuVs("meshed", "nginx")), "<= 2x (goal 1.5x)", (v) => v <= 2),
    target("added_p99_ms", `tracing on: added p99 at ${options.rate} req/s`, added("p99", "meshed"), `${ms(added("p99", "meshed"))} ms`, "<= 2 ms", (v) => v <= 2, addedJudged(added("p99", "meshed"), 2)),
    target("added_p99_vs_nginx", "tracing on: added p99 vs nginx pair's", addedP99Vs("meshed", "nginx"), times(addedP99Vs("meshed", "nginx")), "<= 2x", (v) => v <= 2),
    target("added_p50_ms", `tracing on: added p50 at ${options.rate} req/s`, added("p50", "meshed"), `${ms(added("p50", "meshed"))} ms`, "<= 0.5 ms", (v) => v <= 0.5, addedJudged(added("p50", "meshed"), 0.5)),
    target("mesh_vs_nginx_saturated", "tracing on: saturation vs nginx pair", rpsRatio("meshed", "nginx"), times(rpsRatio("meshed", "nginx")), ">= 0.75x", (v) => v >= 0.75),
    target("untraced_cpu_vs_nginx", "tracing off: sidecars' CPU per request vs nginx pair", cpuVs("untraced", "nginx"), times(cpuVs("untraced", "nginx")), "<= 1.5x", (v) => v <= 1.5),
    target("sidecar_rss_idle_mb", "RSS per sidecar, idle", idleWorst, `${mb(idleWorst)} MB`, "<= 64 MB (goal 50)", (v) => v <= 64),
    target("sidecar_rss_peak_mb", `RSS per sidecar, peak of the ${options.inflight}-connection burst`, peakWorst, `${mb(peakWorst)} MB`, "<= 100 MB", (v) => v <= 100),
    target("sidecar_rss_after10_growth", "RSS per sidecar 10 s after the burst, over idle", after10Growth, `+${percent(after10Growth)}`, "<= +10%", (v) => v <= 0.1)
  ]
  // Issue 15: mutual TLS's cost, the sidecars with their defaults (mTLS on) against --mtls off.
  const mtlsCpu = pairCpu("meshed") / pairCpu("mtls-off") - 1
  const mtlsP99 = added("p99", "meshed", "mtls-off")
  const handshakes = results.handshakes.get("meshed")
  const handshakeRate = handshakes === undefined ? NaN : handshakes.count / handshakes.seconds
  const mtlsTargets: ReadonlyArray<Target> = [
    target("mtls_cpu_overhead", "mTLS: sidecars' CPU per request at saturation over mtls-off", mtlsCpu, `${mtlsCpu >= 0 ? "+" : ""}${percent(mtlsCpu)}`, "<= +15%", (v) => v <= 0.15),
    target("mtls_added_p99_ms", `mTLS: p99 at ${options.rate} req/s over mtls-off`, mtlsP99, `${signed(mtlsP99)} ms`, "<= 0.3 ms", (v) => v <= 0.3, addedJudged(mtlsP99, 0.3))
  ]
  const verdict = (t: Target) => (!Number.isFinite(t.value) ? "n/a" : !t.judged ? "not judged (below minus the target: noise)" : t.met ? "met" : "MISSED")
  lines.push(``)
  lines.push(`issue 15 targets (meshed, mTLS on, against mtls-off in the same run)`)
  for (const t of mtlsTargets) lines.push(`  ${pad(t.label, 58, true)} ${pad(t.shown, 10)}  ${pad(t.limit, 20, true)} ${verdict(t)}`)
  lines.push(`  TLS handshakes A -> B: ${handshakes === undefined ? "-" : `${handshakes.count} in ${handshakes.seconds.toFixed(0)} s (${handshakeRate.toFixed(3)}/s): connections are reused`}`)
  lines.push(``)
  lines.push(`issue 14 targets (sidecars with their defaults; RSS: the worse of A and B)`)
  for (const t of targets) lines.push(`  ${pad(t.label, 58, true)} ${pad(t.shown, 10)}  ${pad(t.limit, 20, true)} ${verdict(t)}`)
  if (ran("nginx") && !(added("p99", "nginx") > 0)) lines.push(`  (nginx's added p99 was not above 0: too little to compare against; a longer --duration measures it)`)
  const layers = ablation(results)
  lines.push(...layers.lines)
  const text = `${lines.join("\n")}\n`

  const cpuSummary = (key: string) => Object.fromEntries(PROCS.map((p) => [p, Math.round(usageFor(key, p, "cpu"))]))
  const syscallSummary = (key: string) => Object.fromEntries(PROCS.map((p) => [p, round(usageFor(key, p, "reads") + usageFor(key, p, "writes"), 2)]))
  const errors = (mode: Mode) => results.open.get(mode)!.reduce((n, x) => n + x.errors, 0) + results.saturated.get(mode)!.reduce((n, x) => n + x.errors, 0)
  const rssSummary = (r: Rss, p: "A" | "B") => ({ idle: round(r[`idle${p}`], 1), peak: round(r[`peak${p}`], 1), after5: round(r[`after5${p}`], 1), after10: round(r[`after10${p}`], 1), idle_anon: round(r[`idleAnon${p}`], 1), after10_anon: round(r[`after10Anon${p}`], 1) })
  const untraced = rss("untraced")
  /** The C proxies' rows, e.g. nginx_added_p99_ms, nginx_cpu_us_per_request, mesh_vs_nginx_saturated. */
  const competitor = (base: "nginx" | "haproxy") => ({
    [`${base}_p50_ms`]: round(o(base, "p50"), 4),
    [`${base}_p90_ms`]: round(o(base, "p90"), 4),
    [`${base}_p99_ms`]: round(o(base, "p99"), 4),
    [`${base}_added_p50_ms`]: round(added("p50", base), 4),
    [`${base}_added_p90_ms`]: round(added("p90", base), 4),
    [`${base}_added_p99_ms`]: round(added("p99", base), 4),
    [`${base}_rps_saturated`]: Math.round(s(base, "rps")),
    [`${base}_vs_direct_saturated`]: round(rpsRatio(base, "direct"), 3),
    [`${base}_cpu_us_per_request`]: round(pairCpu(base), 1),
    [`${base}_a_rss_mb`]: rssSummary(rss(base), "A"),
    [`${base}_b_rss_mb`]: rssSummary(rss(base), "B"),
    [`mesh_vs_${base}_saturated`]: round(rpsRatio("meshed", base), 3),
    [`mesh_vs_${base}_cpu`]: round(cpuVs("meshed", base), 3),
    [`mesh_vs_${base}_added_p99`]: round(addedP99Vs("meshed", base), 3),
    [`untraced_vs_${base}_saturated`]: round(rpsRatio("untraced", base), 3),
    [`untraced_vs_${base}_cpu`]: round(cpuVs("untraced", base), 3)
  })
  const perPhase = (summarize: (key: string) => object) =>
    Object.fromEntries(["open", "saturation"].flatMap((phase) => MODES.map((mode) => [`${phase}_${mode}`, summarize(`${phase} ${mode}`)])))
  const summary = {
    bench: "sidecar",
    direct_p50_ms: round(o("direct", "p50"), 4),
    mesh_p50_ms: round(o("meshed", "p50"), 4),
    added_p50_ms: round(added("p50", "meshed"), 4),
    direct_p90_ms: round(o("direct", "p90"), 4),
    mesh_p90_ms: round(o("meshed", "p90"), 4),
    added_p90_ms: round(added("p90", "meshed"), 4),
    direct_p99_ms: round(o("direct", "p99"), 4),
    mesh_p99_ms: round(o("meshed", "p99"), 4),
    added_p99_ms: round(added("p99", "meshed"), 4),
    direct_rps_saturated: Math.round(s("direct", "rps")),
    mesh_rps_saturated: Math.round(s("meshed", "rps")),
    mesh_vs_direct_saturated: round(rpsRatio("meshed", "direct"), 3),
    mesh_vs_direct_by_cpu: round(totalCpu("direct") / totalCpu("meshed"), 3),
    mesh_cpu_us_per_request: round(pairCpu("meshed"), 1),
    // Tracing's cost: the same mesh with --tracing false, in the same run.
    untraced_p50_ms: round(o("untraced", "p50"), 4),
    untraced_p90_ms: round(o("untraced", "p90"), 4),
    untraced_p99_ms: round(o("untraced", "p99"), 4),
    untraced_added_p50_ms: round(added("p50", "untraced"), 4),
    untraced_added_p90_ms: round(added("p90", "untraced"), 4),
    untraced_added_p99_ms: round(added("p99", "untraced"), 4),
    tracing_added_p50_ms: round(added("p50", "meshed", "untraced"), 4),
    tracing_added_p90_ms: round(added("p90", "meshed", "untraced"), 4),
    tracing_added_p99_ms: round(added("p99", "meshed", "untraced"), 4),
    untraced_rps_saturated: Math.round(s("untraced", "rps")),
    untraced_vs_direct_saturated: round(rpsRatio("untraced", "direct"), 3),
    traced_vs_untraced_saturated: round(rpsRatio("meshed", "untraced"), 3),
    traced_vs_untraced_by_cpu: round(totalCpu("untraced") / totalCpu("meshed"), 3),
    untraced_cpu_us_per_request: round(pairCpu("untraced"), 1),
    tracing_sidecar_cpu_us_per_request: round(pairCpu("meshed") - pairCpu("untraced"), 1),
    // The C proxies, same run, same load.
    ...competitor("nginx"),
    ...competitor("haproxy"),
    sidecar_rss_idle_mb: round(idleWorst, 1),
    sidecar_rss_peak_mb: round(peakWorst, 1),
    sidecar_rss_after_mb: round(Math.max(traced.after5A, traced.after5B), 1),
    sidecar_rss_after10_mb: round(Math.max(traced.after10A, traced.after10B), 1),
    sidecar_a_rss_mb: rssSummary(traced, "A"),
    sidecar_b_rss_mb: rssSummary(traced, "B"),
    untraced_sidecar_a_rss_mb: rssSummary(untraced, "A"),
    untraced_sidecar_b_rss_mb: rssSummary(untraced, "B"),
    sidecar_a_vcpu_at_rate: round(vcpu("meshed", "a"), 3),
    sidecar_b_vcpu_at_rate: round(vcpu("meshed", "b"), 3),
    untraced_sidecar_a_vcpu_at_rate: round(vcpu("untraced", "a"), 3),
    untraced_sidecar_b_vcpu_at_rate: round(vcpu("untraced", "b"), 3),
    // mTLS's cost: the default (on) against --mtls off, in the same run.
    mtls_off_p99_ms: round(o("mtls-off", "p99"), 4),
    mtls_added_p99_ms: round(mtlsP99, 4),
    mtls_off_rps_saturated: Math.round(s("mtls-off", "rps")),
    mtls_off_cpu_us_per_request: round(pairCpu("mtls-off"), 1),
    mtls_cpu_overhead: round(mtlsCpu, 3),
    mtls_handshakes: handshakes?.count ?? null,
    mtls_handshakes_per_second: round(handshakeRate, 4),
    mtls_targets: Object.fromEntries(mtlsTargets.map((t) => [t.key, { value: round(t.value, 3), limit: t.limit, met: Number.isFinite(t.value) && t.judged ? t.met : null }])),
    targets: Object.fromEntries(targets.map((t) => [t.key, { value: round(t.value, 3), limit: t.limit, met: Number.isFinite(t.value) && t.judged ? t.met : null }])),
    open_max_ms: Object.fromEntries(modes.map((mode) => [mode, results.open.get(mode)!.map((sample) => round(sample.max, 2))])),
    ablation: layers.summary,
    sidecar_stalls_over_10ms: Object.fromEntries(
      [...results.openStalls].map(([mode, rounds]) => [mode, { a: stallSummary(hopStalls(rounds, "a")), b: stallSummary(hopStalls(rounds, "b")) }])
    ),
    cpu_us_per_request: perPhase(cpuSummary),
    syscalls_per_request: perPhase(syscallSummary),
    saturation_warmup_s: options.saturationWarmupMs / 1000,
    saturation_warmup: Object.fromEntries(
      modes.filter((mode) => results.saturationWarmup.has(mode)).map((mode) => [mode, { rps: Math.round(warmupRps(mode)), cpu_us_per_request: cpuSummary(`saturation-warmup ${mode}`) }])
    ),
    ...Object.fromEntries(MODES.map((mode) => [`errors_${mode}`, errors(mode)])),
    skipped: Object.fromEntries(results.skipped),
    saturation_tool: results.saturationTool,
    open_generator: results.openGenerator ?? null,
    rate: options.rate,
    inflight_saturated: options.inflight,
    payload: PAYLOAD_BYTES,
    rounds: options.rounds,
    measure_s: options.measureMs / 1000,
    warmup_s: options.warmupMs / 1000,
    node: process.version,
    quick: options.quick
  }
  return { text, summary }
}
