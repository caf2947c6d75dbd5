// The mesh's cost against the proxies a team would otherwise run, all in the same run with the same
// load generators and the same request (POST /echo, 1 KiB body echoed back by a Node app):
//   direct    client -> app
//   meshed    client -> sidecar A (outbound, Host: echo) -> IIP -> sidecar B (inbound) -> app, the
//             sidecars' defaults: tracing on (a client span at A, a server and an app span at B,
//             kept in each sidecar's trace store, W3C headers written at both hops; no OTEL_*
//             exporter is configured, so nothing leaves the process)
//             with mTLS on (their default with credentials: the bench writes fixed ones, see
//             sidecar/credentials.ts, and starts them with --tls-credentials-dir)
//   mtls-off  the same with both sidecars started with `--mtls off` (mTLS's cost is meshed -
//             mtls-off: CPU per request at saturation and added p99 at the fixed rate, against
//             issue 15's targets; and the handshakes per second the pairs made)
//   untraced  the same with both sidecars started with `--tracing false` (tracing's cost is
//             meshed - untraced)
//   nginx     client -> nginx -> nginx -> app (one process each, upstream keepalive, no access log)
//   haproxy   client -> haproxy -> haproxy -> app (nbthread 1, http-reuse always, no log)
//   mesh-plain the sidecars with `--mtls off --tracing false` (with the relays below, only when
//             --only names it)
//   relay-bytes, relay-tls, relay-http (only when --only names them: the default run leaves them out)
//             client -> Node relay -> Node relay -> app (sidecar/nodeRelays.ts: two processes run as
//             the sidecars are, same node flags and stall probe), relaying bytes (relay-tls: with
//             the mesh's mTLS between A and B, node's own TLS cost), or as a plain
//             node:http reverse proxy with a keep-alive agent: the sidecar's layers ablated, so what
//             each layer adds at the fixed rate reads off in one run (the report's ablation table):
//             npm run -s bench -- sidecar --phases open --only direct,nginx,relay-bytes,relay-tls,relay-http,mesh-plain,untraced,meshed
// (issue 14's targets: the sidecars against the nginx pair; printed with "met"/"MISSED").
// A missing nginx or haproxy is reported (`apt-get install nginx-light haproxy`) and its row left out.
//
// Processes: the echo app (bench/sidecar/app.ts), each path's two proxies (sidecars.ts: `node
// <sidecar main> sidecar ...`, its ready line giving the addresses; proxies.ts: nginx and haproxy
// from configs generated into a temp dir, on free ports), the open-loop generator (a C child, or
// the Node one here), the Node closed loop here for priming, and wrk as a child. Each path runs in
// turn, never two at once. Phases, rounds alternating the order of the paths (tables show the
// median over rounds):
//   0. priming: every path gets a short closed-loop run, not measured, its answers checked (a cold
//      sidecar is slow for its first few thousand requests, which at a fixed rate becomes a backlog).
//   1. open loop at --rate req/s (default 1,000), from --generator c (default: sidecar/openLoop.c,
//      a single-threaded epoll program compiled with the machine's cc on first use, driven by
//      cLoad.ts; it keeps the generator's GC pauses and timer lateness, and most of its CPU, out of
//      the tails; without cc the bench says so and falls back) or --generator node (nodeLoad.ts,
//      in this process; the header line says which ran, and each round its CPU per request):
//      requests go out on a fixed schedule whether or not earlier ones answered, latency runs
//      from the intended send time (queueing is not hidden); a warm-up, then the measuring window
//      of each path, both in slices of --slice s (default 0.25), the paths taking turns (every other turn with
//      neighbours swapped: A B C D, then B A D C), so that a burst of other work on the machine,
//      or a pause of this process, falls on every path alike and no path always follows the same
//      one; each path's slices pooled into its sample for the round; p50 / p90 / p99 and what each
//      path adds over direct. Slices are short so that no pair waiting for its turn is quiet for
//      the 2 s after which a sidecar runs its idle GC (memoryRelease.ts): a pair waits at most one
//      slice per path (1.5 s for six paths). With 1 s slices and four paths, that full collection
//      (30-130 ms on a loaded machine) ran mid-window; so it did when every other turn ran in
//      reverse, which left the path second in line (the traced pair) 2 s between its slices.
//      (`--slice` as long as `--duration`: one window per path, as before.)
//   2. saturation: `wrk -t1 -c64 --latency` (wrk.ts; a 1 s unmeasured run first), req/s and latency
//      from its report; without wrk, the Node closed loop with 64 in flight (says how to get wrk).
//      Before the measured rounds, a warm-up round of the same length for every path
//      (--saturation-warmup): wrk's request shape deoptimizes the sidecars' code the Node
//      generator warmed, which tiers up again only over the next ~10,000 calls, and production
//      sidecars run for days; its figures are printed, not counted in the medians.
//   3. memory: each proxy's VmRSS idle (after start, before any load), peak during its pair's
//      saturation runs (sampled every 100 ms), and 5 s and 10 s after the load ended (and, with
//      --memory-linger S, once more S s later, printed only); idle and from 10 s on, each proxy's
//      RSS by region is printed too (sidecar/rssParts.ts: the binary's code pages, other files,
//      malloc's main arena, V8's machine code, other anonymous memory).
// Each iip-mesh sidecar (and Node relay) also runs a stall probe (sidecar/stallProbe.mjs, loaded with --import): every
// stall of its event loop over 10 ms, with the main thread's CPU over it and the GC pauses in it;
// per round and path the bench prints its slowest request and each sidecar's stalls within the
// path's own slices (hopStalls.ts), and the report sums them: a p99 set by a stall shows which hop
// stopped and whether it worked (GC, a long task) or waited for a core.
// The probe also reports every GC pause, however short: per round the bench prints each sidecar's
// pauses within the path's slices (per 1,000 requests, median length) and how many of the path's
// slowest 1 % met one (gcTail.ts), since at 1,000 req/s a scavenge of a millisecond is as long as
// the p99 the mesh adds.
// Also reported, per request and process (load generator, app, each proxy) in each phase: CPU
// microseconds (utime + stime from /proc/<pid>/stat; for wrk, this process's reaped children's) and
// read + write system calls (syscr/syscw of /proc/<pid>/io), which say where the throughput goes on
// a shared machine better than req/s alone; and the proxies' share of a core at the fixed rate.
// Every answer of the open loop (C or Node) and of priming is checked (status 200, 1,024 bytes
// back); wrk's errors and non-2xx answers are counted; more than 1% of a run failing aborts the bench.
//
//   npm run -s bench -- sidecar            2 s warm-up + 10 s per window, 3 rounds (~8.5 min)
//   npm run -s bench -- sidecar --quick    1 s warm-up + 3 s per window, 1 round (~90 s)
// Flags: --rounds N, --duration S, --warmup S, --slice S, --rate R, --generator c|node (the open loop's),
//        --inflight N (saturation connections),
//        --saturation-warmup S (the saturation warm-up round per path; default --duration, 0 none),
//        --only direct,meshed,mtls-off,untraced,nginx,haproxy,relay-bytes,relay-tls,relay-http,mesh-plain (a subset; "added" and the ratios need direct, the
//        targets nginx), --phases open,saturation,memory (a subset, for investigating),
//        --sidecar-node-flags "..." (extra node flags for the sidecars, e.g.
//        "--max-semi-space-size=2", to try a setting without editing src),
//        --memory-linger S (the memory phase's extra reading S s after its 10 s one),
//        --sidecar-env "NAME=VALUE ..." (the sidecars' environment on top of the bench's; default
//        the shipped MALLOC_ARENA_MAX=2, "" for none),
//        --sidecar-main FILE (the script node runs as the sidecar; default src/cli/main.ts, see
//        options.ts's DEFAULT_SIDECAR_MAIN),
//        --cpu-prof-dir DIR (app and sidecars run with --cpu-prof into DIR; profile the load
//        generator with `node --cpu-prof bench/run.ts sidecar ...`),
//        --sidecar-log-dir DIR (each sidecar's stdout lines other than the bench's own, into
//        DIR/sidecar-<name>.log: node writes --trace-gc and --trace-gc-nvp to stdout, so
//        `--sidecar-node-flags "--max-semi-space-size=2 --trace-gc" --sidecar-log-dir /tmp/gc`
//        shows each sidecar's collections and why they ran; sidecar stderr goes to the bench's).
//        bench/sidecar/memProbe.mjs, loaded the same way (`--sidecar-node-flags "--max-semi-space-size=2
//        --import=./bench/sidecar/memProbe.mjs" --sidecar-log-dir DIR`), writes where each sidecar's
//        RSS sits once a second (file pages, malloc's arenas, V8 per space) into those logs.
// The last stdout line is one JSON object (report.ts).
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import { Data } from "effect"
import { printSummary } from "./args.ts"
import { type Child, killChild, spawnServer } from "./children.ts"
import { APP_FILE } from "./sidecar/app.ts"
import { mb, ms, pad, sleep, us } from "./sidecar/format.ts"
import { closedLoop, makeTarget, type Target } from "./sidecar/nodeLoad.ts"
import { type OpenGenerator, startGenerator } from "./sidecar/generator.ts"
import { isMeshed, isRelay, type Mode, parseArgs, PROXIED, type Proxied } from "./sidecar/options.ts"
import type { ProxyPair } from "./sidecar/pair.ts"
import { NO_USAGE, reapedChildrenCpu, rssAnonMb, rssMb, type Usage, usageDelta, usageOf } from "./sidecar/procStats.ts"
import { startProxyPair } from "./sidecar/proxies.ts"
import { startRelayPair } from "./sidecar/nodeRelays.ts"
import { formatRssParts, rssParts } from "./sidecar/rssParts.ts"
import { report } from "./sidecar/report.ts"
import { HOST, makePayload, PAYLOAD_BYTES, SERVICE_HOST } from "./sidecar/request.ts"
import { countStalls, describeStalls } from "./sidecar/hopStalls.ts"
import { describeGcTail, gcTail } from "./sidecar/gcTail.ts"
import { runInTurns } from "./sidecar/turns.ts"
import { addUsages, emptyResults, type Proc, type SaturationSample, type Usages, ZERO_USAGES } from "./sidecar/results.ts"
import { startSidecarPair } from "./sidecar/sidecars.ts"
import { writeBenchCredentials } from "./sidecar/credentials.ts"
import { findExecutable } from "./sidecar/which.ts"
import { runWrk, WRK_INSTALL_HINT, writeWrkScript } from "./sidecar/wrk.ts"

/** More than 1% of a run's requests failed: its figures would not mean what they say. */
export class TooManyFailures extends Data.TaggedError("TooManyFailures")<{ readonly message: string }> {}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const options = parseArgs(args)
  const log = (line: string) => process.stderr.write(`${line}\n`)
  /** Each proxy's RSS by region (rssParts.ts), read from outside. */
  const logRssParts = (pair: ProxyPair) => log(`    A ${formatRssParts(rssParts(pair.a.pid))} | B ${formatRssParts(rssParts(pair.b.pid))} MB`)
  // The sidecars run the compiled CLI: build it from the sources as they are now.
  execFileSync(process.execPath, [fileURLToPath(new URL("../scripts/build.ts", import.meta.url))], { stdio: "inherit" })
  log(`sidecars: ${Object.entries(options.sidecarEnv).map(([k, v]) => `${k}=${v} `).join("")}node ${options.sidecarNodeFlags.join(" ")} ${options.sidecarMain}`)
  const payload = makePayload()
  const wrk = findExecutable("wrk")
  // The open loop's generator, started once for the whole open phase (a C child is built first if need be).
  const { generator, note } = options.phases.includes("open") ? await startGenerator<Mode>(options.generator) : { generator: undefined, note: undefined }
  if (note !== undefined) log(`  ${note}`)
  const generatorName = generator === undefined ? "-" : generator.kind === "c" ? `C generator, pid ${generator.pid}` : "Node generator"
  log(
    `sidecar bench: node ${process.version}, ${options.rounds} round(s), warm-up ${options.warmupMs / 1000} s + ${options.measureMs / 1000} s per window, ` +
      `open loop ${options.rate} req/s (${generatorName}), saturation ${options.inflight} connections (${wrk === undefined ? "Node closed loop" : "wrk"}), ${PAYLOAD_BYTES} B bodies`
  )
  if (wrk === undefined) log(`  wrk not found: ${WRK_INSTALL_HINT} (saturation runs on the Node closed loop meanwhile)`)

  const results = emptyResults(options)
  results.saturationTool = wrk === undefined ? "node" : "wrk"
  results.openGenerator = generator?.kind
  const dir = mkdtempSync(join(tmpdir(), "iip-mesh-bench-"))
  // Every child's stop, whatever happens: run in `finally`, and on SIGINT/SIGTERM of the bench.
  const spawned: Array<() => Promise<void>> = []
  let app: Child | undefined
  // Callers first (the open loop's generator, proxy A, then B, then the app), so no sidecar sees
  // its peer vanish and redials.
  const stopAll = async () => {
    await generator?.close()
    for (const stop of [...spawned].reverse()) await stop()
    spawned.length = 0
    if (app !== undefined) await killChild(app.process)
    rmSync(dir, { recursive: true, force: true })
  }
  const onSignal = (signal: NodeJS.Signals) => {
    log(`sidecar bench: ${signal}, stopping the children`)
    void stopAll().then(() => process.exit(130))
  }
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)

  try {
    app = await spawnServer(APP_FILE, "app", options.cpuProfDir)
    const appPid = app.process.pid!
    const pairs = new Map<Proxied, ProxyPair>()
    const startedAt = new Map<Proxied, number>()
    const credentials = await writeBenchCredentials(dir, ["echo", "client"]) as Record<"echo" | "client", string>
    for (const mode of PROXIED) {
      if (!options.modes.includes(mode)) continue
      startedAt.set(mode, performance.now())
      const pair = isMeshed(mode)
        ? await startSidecarPair(mode, app.port, options, spawned, credentials)
        : isRelay(mode)
        ? await startRelayPair(mode, app.port, options, spawned, credentials)
        : await startProxyPair(mode, app.port, dir, spawned)
      if (typeof pair === "string") {
        log(`  ${pair}`)
        results.skipped.set(mode, pair)
        continue
      }
      pairs.set(mode, pair)
      log(`  ${mode}: A :${pair.entry.port} (pid ${pair.a.pid}) -> B (pid ${pair.b.pid}) -> app`)
    }
    log(`  app :${app.port} (pid ${appPid})`)
    /** The paths that run: direct, and each proxied path whose pair started. */
    const modes = options.modes.filter((mode) => mode === "direct" || pairs.has(mode))
    const pairOf = (mode: Mode) => (mode === "direct" ? undefined : pairs.get(mode))

    /** `generator`: the open loop's, whose process is then the client (the C child, or this one). */
    const readUsage = (mode: Mode, generator?: OpenGenerator<Mode>): Usages => {
      const self = process.cpuUsage()
      const pair = pairOf(mode)
      return {
        // This process and, once reaped, wrk (its CPU and, through /proc/self/io, its system calls).
        client: generator !== undefined && generator.pid !== process.pid ? usageOf(generator.pid) : { ...usageOf(process.pid), cpu: (self.user + self.system) / 1e6 + reapedChildrenCpu() },
        app: usageOf(appPid),
        a: pair === undefined ? NO_USAGE : usageOf(pair.a.pid),
        b: pair === undefined ? NO_USAGE : usageOf(pair.b.pid)
      }
    }
    /** What each process used since `from` (CPU seconds, system calls). */
    const usageSince = (mode: Mode, from: Usages, generator?: OpenGenerator<Mode>): Usages => {
      const to = readUsage(mode, generator)
      const delta = (p: Proc): Usage => usageDelta(to[p], from[p])
      return { client: delta("client"), app: delta("app"), a: delta("a"), b: delta("b") }
    }
    /** Records one round's use per request (CPU in microseconds). */
    const notePerRequest = (key: string, used: Usages, requests: number): void => {
      const per = (p: Proc): Usage => ({ cpu: (used[p].cpu * 1e6) / requests, mainCpu: (used[p].mainCpu * 1e6) / requests, reads: used[p].reads / requests, writes: used[p].writes / requests })
      results.perRequest.set(key, [...(results.perRequest.get(key) ?? []), { client: per("client"), app: per("app"), a: per("a"), b: per("b") }])
    }
    const noteUsage = (key: string, mode: Mode, from: Usages, requests: number): void => notePerRequest(key, usageSince(mode, from), requests)

    // Idle: started, nothing sent yet; a second to settle.
    await sleep(1000)
    for (const [mode, pair] of pairs) {
      const r = results.rss.get(mode)!
      r.idleA = rssMb(pair.a.pid)
      r.idleB = rssMb(pair.b.pid)
      r.idleAnonA = rssAnonMb(pair.a.pid)
      r.idleAnonB = rssAnonMb(pair.b.pid)
      log(`  idle RSS (${mode}): A ${mb(r.idleA)} MB, B ${mb(r.idleB)} MB`)
      logRssParts(pair)
    }

    const hostHeaderOf = (mode: Mode) => (mode === "direct" ? undefined : SERVICE_HOST)
    const entryOf = (mode: Mode) => pairOf(mode)?.entry ?? { host: HOST, port: app!.port }
    const targetOf = (mode: Mode, maxSockets: number): Target => {
      const entry = entryOf(mode)
      return makeTarget(entry.host, entry.port, hostHeaderOf(mode), maxSockets)
    }
    // Alternate which path goes first, so none always runs on a cold (or hot) machine.
    const orderOf = (round: number): ReadonlyArray<Mode> => (round % 2 === 0 ? modes : [...modes].reverse())
    const failOn = (what: string, errors: number, firstError: string | undefined, sent: number) => {
      if (errors > 0) log(`    ${what}: ${errors} failed requests (first: ${firstError})`)
      if (errors > sent * 0.01) throw new TooManyFailures({ message: `${what}: ${errors} of ${sent} requests failed (first: ${firstError})` })
    }

    // Priming: a cold sidecar (JIT, first connections, lazily loaded code) runs far slower for its
    // first few thousand requests; at a fixed rate that backlog would spill into the measuring
    // window, so every path first gets a short closed-loop run that is not measured (and that
    // checks every answer, so a misconfigured proxy fails here, not in wrk's counts).
    for (const mode of modes) {
      const target = targetOf(mode, 16)
      try {
        const primed = await closedLoop(target, payload, 16, 0, options.quick ? 2000 : 3000)
        log(`  primed ${mode}: ${primed.completed} requests`)
        failOn(`priming ${mode}`, primed.errors, primed.firstError, primed.completed)
      } finally {
        target.agent.destroy()
      }
    }

    // 1. Open loop at a fixed rate. The paths take turns slice by slice (--slice, 0.25 s), so a burst
    // of other work on this shared machine lands on every path alike instead of on whichever ran
    // its whole window then; each path's slices are pooled into one sample per round.
    if (generator !== undefined) {
      for (let round = 0; round < options.rounds; round++) {
        const order = orderOf(round)
        await generator.targets(new Map(order.map((mode) => [mode, { ...entryOf(mode), hostHeader: hostHeaderOf(mode) }])), 256)
        const spent = new Map<Mode, { usage: Usages; wall: number }>(order.map((mode) => [mode, { usage: ZERO_USAGES, wall: 0 }]))
        const { slicing, samples, windows } = await runInTurns(order, options, async (mode, sliceMs, measured) => {
          const usage = readUsage(mode, generator)
          const wallStart = performance.now()
          const sample = await generator.run(mode, options.rate, sliceMs)
          if (measured) {
            const s = spent.get(mode)!
            s.usage = addUsages(s.usage, usageSince(mode, usage, generator))
            s.wall += (performance.now() - wallStart) / 1000
          }
          failOn(`open loop${measured ? "" : " warm-up"} ${mode}`, sample.errors, sample.firstError, sample.sent)
          return sample
        })
        // The probes report a stall a few ms after it ends: let the last slice's arrive.
        await sleep(100)
        for (const mode of order) {
          const sample = samples.get(mode)!
          const { usage, wall } = spent.get(mode)!
          notePerRequest(`open ${mode}`, usage, sample.sent)
          if (mode !== "direct") results.vcpuAtRate.get(mode)!.push({ a: usage.a.cpu / wall, b: usage.b.cpu / wall })
          results.open.get(mode)!.push(sample)
          log(
            `  round ${round + 1} open loop ${pad(mode, 8, true)} ${options.rate} req/s: p50 ${ms(sample.p50)} p90 ${ms(sample.p90)} p99 ${ms(sample.p99)} ` +
              `max ${ms(sample.max)} ms, ${sample.maxOutstanding} outstanding at most (${slicing.slices} slices of ${slicing.sliceMs / 1000} s)`
          )
          const pair = pairOf(mode)
          if (mode !== "direct" && pair?.a.stalls !== undefined && pair.b.stalls !== undefined) {
            const stalls = { a: countStalls(pair.a.stalls, windows.get(mode)!), b: countStalls(pair.b.stalls, windows.get(mode)!) }
            results.openStalls.set(mode, [...(results.openStalls.get(mode) ?? []), stalls])
            log(`    ${mode} event loops in its slices: A ${describeStalls(stalls.a)}; B ${describeStalls(stalls.b)}`)
            if (pair.a.gcPauses !== undefined && pair.b.gcPauses !== undefined) {
              log(`    ${mode} ${describeGcTail(gcTail(sample.calls, windows.get(mode)!, [["A", pair.a.gcPauses], ["B", pair.b.gcPauses]]))}`)
            }
          }
        }
        // What the generator cost: its CPU over the measured slices of every path, per request.
        const sent = order.reduce((n, mode) => n + samples.get(mode)!.sent, 0)
        const generatorCpu = order.reduce((sum, mode) => sum + spent.get(mode)!.usage.client.cpu, 0)
        log(
          `  round ${round + 1} generator (${generatorName}): ${us((generatorCpu * 1e6) / sent)} us CPU per request over its measured slices` +
            (generator.kind === "node" ? " (this whole process: the loop and the bench's own work)" : "")
        )
      }
      // Its connections (and the C child) go before saturation, as each round's did before the next.
      await generator.close()
    }

    // 2. Saturation, sampling the proxies' RSS while their path runs (warm-up included).
    const scripts = new Map<Mode, string>()
    /** One saturation run of `mode`, `measureMs` long after wrk's 1 s unmeasured start; its CPU per request noted under `key`. */
    const saturate = async (mode: Mode, measureMs: number, key: string): Promise<SaturationSample> => {
      const warmupS = Math.min(options.warmupMs, 1000) / 1000
      if (wrk === undefined) {
        const target = targetOf(mode, options.inflight)
        const usage = readUsage(mode)
        try {
          const sample = await closedLoop(target, payload, options.inflight, warmupS * 1000, measureMs)
          noteUsage(key, mode, usage, sample.completed)
          return { ...sample, requests: sample.completed }
        } finally {
          target.agent.destroy()
        }
      }
      const entry = entryOf(mode)
      let script = scripts.get(mode)
      if (script === undefined) scripts.set(mode, (script = writeWrkScript(dir, `wrk-${mode}`, hostHeaderOf(mode))))
      const run = { binary: wrk, host: entry.host, port: entry.port, script, connections: options.inflight }
      await runWrk({ ...run, seconds: warmupS })
      const usage = readUsage(mode)
      const measured = await runWrk({ ...run, seconds: measureMs / 1000 })
      noteUsage(key, mode, usage, measured.requests)
      const errors = measured.socketErrors + measured.non2xx
      const firstError = errors === 0 ? undefined : `${measured.socketErrors} socket errors, ${measured.non2xx} non-2xx answers (wrk)`
      return { requests: measured.requests, rps: measured.rps, p50: measured.p50, p90: measured.p90, p99: measured.p99, errors, firstError }
    }
    /** One path's run in a round (`round` 0: the warm-up round), its proxies' peak RSS sampled, its line logged. */
    const saturationRun = async (mode: Mode, round: number): Promise<void> => {
      const pair = pairOf(mode)
      const r = mode === "direct" ? undefined : results.rss.get(mode)
      const sampler = pair !== undefined && r !== undefined
        ? setInterval(() => {
          r.peakA = Math.max(Number.isFinite(r.peakA) ? r.peakA : 0, rssMb(pair.a.pid))
          r.peakB = Math.max(Number.isFinite(r.peakB) ? r.peakB : 0, rssMb(pair.b.pid))
        }, 100)
        : undefined
      try {
        const warmup = round === 0
        const key = `${warmup ? "saturation-warmup" : "saturation"} ${mode}`
        const sample = await saturate(mode, warmup ? options.saturationWarmupMs : options.measureMs, key)
        if (warmup) results.saturationWarmup.set(mode, sample)
        else results.saturated.get(mode)!.push(sample)
        const cpu = results.perRequest.get(key)!.at(-1)!
        log(
          `  ${warmup ? "warm-up round" : `round ${round}`} saturation ${pad(mode, 8, true)} ${options.inflight} connections: ${Math.round(sample.rps)} req/s, ` +
            `p50 ${ms(sample.p50)} p99 ${ms(sample.p99)} ms, proxies' CPU ${mode === "direct" ? "-" : Math.round(cpu.a.cpu + cpu.b.cpu)} us/request`
        )
        failOn(`saturation ${warmup ? "warm-up " : ""}${mode}`, sample.errors, sample.firstError, sample.requests)
      } finally {
        if (sampler !== undefined) clearInterval(sampler)
      }
      await sleep(200)
    }
    if (options.phases.includes("saturation")) {
      // The warm-up round: a sidecar's first saturation run is partly cold (the load generator's
      // different request shape deoptimizes code the open loop warmed, and without Maglev code
      // tiers up again only after ~10,000 calls: see bench/HISTORY.md), so every path runs one round as
      // long as a measured one first, in round 1's order (each path the same time before its
      // round 1); printed, and kept out of the medians.
      if (options.saturationWarmupMs > 0) for (const mode of orderOf(0)) await saturationRun(mode, 0)
      for (let round = 0; round < options.rounds; round++) {
        for (const mode of orderOf(round)) await saturationRun(mode, round + 1)
      }
    }

    // 3. After the load: does the memory come back?
    if (options.phases.includes("memory")) {
      for (const [mode] of pairs) {
        const r = results.rss.get(mode)!
        log(`  peak RSS under saturation (${mode}): A ${mb(r.peakA)} MB, B ${mb(r.peakB)} MB`)
      }
      log(`  waiting 10 s for it to settle`)
      await sleep(5000)
      for (const [mode, pair] of pairs) {
        results.rss.get(mode)!.after5A = rssMb(pair.a.pid)
        results.rss.get(mode)!.after5B = rssMb(pair.b.pid)
      }
      await sleep(5000)
      for (const [mode, pair] of pairs) {
        results.rss.get(mode)!.after10A = rssMb(pair.a.pid)
        results.rss.get(mode)!.after10B = rssMb(pair.b.pid)
        results.rss.get(mode)!.after10AnonA = rssAnonMb(pair.a.pid)
        results.rss.get(mode)!.after10AnonB = rssAnonMb(pair.b.pid)
        log(`  RSS 10 s after the burst (${mode}), by region:`)
        logRssParts(pair)
      }
      // Whether what is left at 10 s goes later (V8's memory reducer, a later release): printed only.
      if (options.memoryLingerMs > 0) {
        await sleep(options.memoryLingerMs)
        const seconds = 10 + options.memoryLingerMs / 1000
        for (const [mode, pair] of pairs) {
          log(`  RSS ${seconds} s after the burst (${mode}): A ${mb(rssMb(pair.a.pid))} MB (anon ${mb(rssAnonMb(pair.a.pid))}), B ${mb(rssMb(pair.b.pid))} MB (anon ${mb(rssAnonMb(pair.b.pid))})`)
          logRssParts(pair)
        }
      }
    }
    // How often the pairs handshook: connection reuse should make it a handful over the whole run.
    for (const [mode, pair] of pairs) {
      if (pair.handshakes === undefined) continue
      results.handshakes.set(mode, { count: await pair.handshakes(), seconds: (performance.now() - startedAt.get(mode)!) / 1000 })
    }
  } finally {
    await stopAll()
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }

  const { text, summary } = report(results)
  process.stdout.write(text)
  printSummary(summary)
}
