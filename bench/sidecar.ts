// The mesh's cost: an HTTP echo called directly (client -> app) against the same call through two
// sidecars (client -> sidecar A outbound, Host: echo -> IIP -> sidecar B inbound -> app), in the
// same run, 1 KiB POST bodies (anchors.md "Targets": added latency <= 0.5 ms p50 / 2 ms p99 at a
// fixed 1,000 req/s; >= 40% of direct throughput at saturation; sidecar <= 80 MB idle).
// And the cost of tracing, in the same run: a second pair of sidecars started with
// `--tracing false` (mode `untraced`) beside the default pair (mode `meshed`, tracing on: a client
// span at A, a server and an app span at B, each kept in the sidecar's trace store, W3C headers
// written at both hops; no OTEL_* exporter is configured, so nothing leaves the process). Tracing's
// added p50/p99 is meshed - untraced; its saturation ratio is meshed / untraced req/s.
//
// Processes: the echo app (this file with `--serve app`), sidecar B (service "echo", --app the
// echo app) and sidecar A (service "client", --endpoint echo=B's inbound), each started as
// `node src/cli/main.ts sidecar ...` (its ready line gives the addresses), and the same pair again
// with --tracing false; the load generator runs here. Each mode (direct, meshed, untraced) runs in
// turn, never two at once. Phases, rounds alternating the order of the modes (tables show the
// median over rounds):
//   0. priming: both paths get a short closed-loop run, not measured (a cold sidecar is slow for
//      its first few thousand requests, which at a fixed rate becomes a backlog).
//   1. open loop at --rate req/s (default 1,000): requests go out on a fixed schedule whether or
//      not earlier ones answered, latency runs from the intended send time (queueing is not
//      hidden); warm-up, then a measuring window; p50 / p90 / p99 and meshed - direct.
//   2. saturation: closed loop, 64 requests in flight (keep-alive agent, maxSockets 64): req/s.
//   3. memory: each sidecar's VmRSS idle (after start, before any load), peak during its pair's
//      saturation runs (sampled every 100 ms), and 5 s and 10 s after the load ended.
// Also reported, per request and process (load generator, app, each sidecar) in each phase: CPU
// microseconds (utime + stime from /proc/<pid>/stat; cpuUsage here) and read + write system calls
// (syscr/syscw of /proc/<pid>/io), which say where the throughput goes on a shared machine better
// than req/s alone (the saturation ratio is also given by CPU per request: client + app against
// client + app + both sidecars, what a box that runs out of CPU would show); and the sidecars'
// share of a core at the fixed rate.
// Every answer is checked (status 200, 1,024 bytes back); failures are counted and shown, and more
// than 1% of a run failing aborts the bench.
//
//   npm run -s bench -- sidecar            2 s warm-up + 10 s per window, 3 rounds (~3 min)
//   npm run -s bench -- sidecar --quick    1 s warm-up + 3 s per window, 1 round (~30 s)
// Flags: --rounds N, --duration S, --warmup S, --rate R, --inflight N (saturation concurrency),
//        --only direct,meshed,untraced (a subset), --phases open,saturation,memory (a subset, for investigating),
//        --sidecar-node-flags "..." (extra node flags for the sidecars, e.g.
//        "--max-semi-space-size=2", to try a setting without editing src),
//        --cpu-prof-dir DIR (app and sidecars run with --cpu-prof into DIR; profile the load
//        generator with `node --cpu-prof bench/run.ts sidecar ...`).
// The last stdout line is one JSON object (see `summary` below).
import { type ChildProcess, spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as http from "node:http"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { type Child, killChild, listenOn, serveChild, spawnServer } from "./children.ts"
import { benchArgs, printSummary } from "./args.ts"

const HOST = "127.0.0.1"
const PAYLOAD_BYTES = 1024
const MAIN = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url))
/**
 * Loaded into each sidecar before its main module: the sidecar stops (SIGTERM, its graceful path)
 * when its stdin closes, so killChild works on it and no sidecar outlives a bench killed hard.
 */
const EXIT_WITH_PARENT = `--import=data:text/javascript,process.stdin.on("end",()=>process.kill(process.pid,"SIGTERM")).resume()`

// ---------------------------------------------------------------------------------------------
// The echo app (child process side).

const startApp = (): Promise<number> => {
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const parts: Array<Buffer> = []
    let bytes = 0
    req.on("data", (chunk: Buffer) => {
      parts.push(chunk)
      bytes += chunk.length
    })
    req.on("end", () => {
      const body = parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes)
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length })
      res.end(body)
    })
  })
  return listenOn(server, HOST)
}

// ---------------------------------------------------------------------------------------------
// Sidecar processes.

interface SidecarProcess {
  readonly name: string
  readonly process: ChildProcess
  readonly pid: number
  readonly outbound: { readonly host: string; readonly port: number }
  readonly inbound: string
}

const splitHostPort = (address: string): { host: string; port: number } => {
  const colon = address.lastIndexOf(":")
  return { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) }
}

/** Starts `node src/cli/main.ts sidecar ...args` and waits for its ready line. */
const startSidecar = (name: string, args: ReadonlyArray<string>, options: Options, spawned: Array<ChildProcess>): Promise<SidecarProcess> =>
  new Promise((resolve, reject) => {
    const dir = options.cpuProfDir
    const prof = dir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=sidecar-${name}.cpuprofile`]
    const child = spawn(process.execPath, [...prof, ...options.sidecarNodeFlags, EXIT_WITH_PARENT, MAIN, "sidecar", ...args], { stdio: ["pipe", "pipe", "inherit"] })
    spawned.push(child)
    let out = ""
    let settled = false
    const timer = setTimeout(() => fail(new Error(`sidecar ${name} did not print its ready line within 20 s`)), 20_000)
    const fail = (error: Error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      reject(error)
    }
    child.on("error", fail)
    child.once("exit", (code, signal) => fail(new Error(`sidecar ${name} exited (${code ?? signal}) before it was ready; output: ${JSON.stringify(out.slice(0, 500))}`)))
    child.stdout!.setEncoding("utf8")
    child.stdout!.on("data", (text: string) => {
      if (settled) return // keep draining whatever else it prints
      out += text
      for (let nl = out.indexOf("\n"); nl !== -1; nl = out.indexOf("\n")) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        let ready: { event?: unknown; outbound?: unknown; inbound?: unknown } | undefined
        try {
          ready = JSON.parse(line) as typeof ready
        } catch {
          continue
        }
        if (ready?.event !== "sidecar-ready" || typeof ready.outbound !== "string" || typeof ready.inbound !== "string") continue
        settled = true
        clearTimeout(timer)
        resolve({ name, process: child, pid: child.pid!, outbound: splitHostPort(ready.outbound), inbound: ready.inbound })
        return
      }
    })
  })

// ---------------------------------------------------------------------------------------------
// /proc readings (Linux; NaN elsewhere).

const rssMb = (pid: number): number => {
  try {
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return match === null ? NaN : Number(match[1]) / 1024
  } catch {
    return NaN
  }
}

/** What a process has used so far: CPU seconds, and read and write system calls (sockets included). */
interface Usage {
  readonly cpu: number
  readonly reads: number
  readonly writes: number
}

/** User + system CPU (clock ticks of 1/100 s, as on every Linux we run on) and syscr/syscw of /proc/<pid>/io. */
const usageOf = (pid: number): Usage => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    const io = readFileSync(`/proc/${pid}/io`, "utf8")
    const count = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(io)?.[1] ?? NaN)
    return { cpu: (Number(fields[11]) + Number(fields[12])) / 100, reads: count("syscr"), writes: count("syscw") }
  } catch {
    return { cpu: NaN, reads: NaN, writes: NaN }
  }
}

// ---------------------------------------------------------------------------------------------
// Load generation (this process).

interface Target {
  readonly agent: http.Agent
  readonly options: http.RequestOptions
}

const makeTarget = (host: string, port: number, hostHeader: string | undefined, maxSockets: number): Target => {
  const agent = new http.Agent({ keepAlive: true, maxSockets })
  return {
    agent,
    options: {
      agent,
      host,
      port,
      method: "POST",
      path: "/echo",
      headers: {
        "content-type": "application/octet-stream",
        "content-length": PAYLOAD_BYTES,
        ...(hostHeader === undefined ? {} : { host: hostHeader })
      }
    }
  }
}

/** One request; `done` runs once, with an error message (wrong status or length, a socket error) or undefined. */
const send = (target: Target, payload: Buffer, callback: (error: string | undefined) => void): void => {
  let called = false
  const done = (error: string | undefined) => {
    if (called) return
    called = true
    callback(error)
  }
  const req = http.request(target.options, (res) => {
    let bytes = 0
    res.on("data", (chunk: Buffer) => (bytes += chunk.length))
    res.on("end", () => done(res.statusCode !== 200 ? `status ${res.statusCode}` : bytes !== PAYLOAD_BYTES ? `echoed ${bytes} bytes` : undefined))
    res.on("error", (error) => done(error.message))
  })
  req.on("error", (error) => done(error.message))
  req.end(payload)
}

const percentile = (sorted: Float64Array, q: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!

interface Errors {
  count: number
  first: string | undefined
}

const noteError = (errors: Errors, message: string): void => {
  errors.count++
  errors.first ??= message
}

interface OpenSample {
  readonly sent: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly errors: number
  readonly firstError: string | undefined
  readonly maxOutstanding: number
}

/**
 * Open loop: request i is due at start + i / rate and goes out as soon as the timer lets us, even
 * while earlier ones are unanswered; its latency runs from when it was due to its last byte. Only
 * requests due inside the measuring window count. Waits for every answer (at most 15 s).
 */
const openLoop = (target: Target, payload: Buffer, rate: number, warmupMs: number, measureMs: number): Promise<OpenSample> =>
  new Promise((resolve) => {
    const interval = 1000 / rate
    const total = Math.round(((warmupMs + measureMs) / 1000) * rate)
    const latencies = new Float64Array(total)
    const errors: Errors = { count: 0, first: undefined }
    let measured = 0
    let next = 0
    let outstanding = 0
    let maxOutstanding = 0
    let finished = false
    const start = performance.now() + 1
    const measureStart = start + warmupMs
    const finish = () => {
      if (finished) return
      finished = true
      clearTimeout(watchdog)
      const sorted = latencies.subarray(0, measured).sort()
      resolve({
        sent: total,
        p50: percentile(sorted, 0.5),
        p90: percentile(sorted, 0.9),
        p99: percentile(sorted, 0.99),
        max: sorted.length === 0 ? NaN : sorted[sorted.length - 1]!,
        errors: errors.count + outstanding,
        firstError: errors.first ?? (outstanding > 0 ? `${outstanding} requests unanswered 15 s after the last was due` : undefined),
        maxOutstanding
      })
    }
    const watchdog = setTimeout(finish, warmupMs + measureMs + 15_000)
    const issue = (due: number) => {
      outstanding++
      if (outstanding > maxOutstanding) maxOutstanding = outstanding
      send(target, payload, (error) => {
        outstanding--
        if (finished) return
        if (error !== undefined) noteError(errors, error)
        else if (due >= measureStart) latencies[measured++] = performance.now() - due
        if (next === total && outstanding === 0) finish()
      })
    }
    const tick = () => {
      const now = performance.now()
      while (next < total && start + next * interval <= now) issue(start + next++ * interval)
      if (next < total) setTimeout(tick, Math.max(0, start + next * interval - performance.now()))
    }
    setTimeout(tick, 1)
  })

interface ClosedSample {
  /** Answers received in the whole run, warm-up included (CPU per request divides by it). */
  readonly completed: number
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly errors: number
  readonly firstError: string | undefined
}

/** Closed loop: `inflight` requests always outstanding; counts those answered inside the measuring window. */
const closedLoop = (target: Target, payload: Buffer, inflight: number, warmupMs: number, measureMs: number): Promise<ClosedSample> =>
  new Promise((resolve) => {
    let latencies = new Float64Array(1 << 16)
    let count = 0
    let completed = 0
    let outstanding = 0
    let finished = false
    const errors: Errors = { count: 0, first: undefined }
    const start = performance.now()
    const measureStart = start + warmupMs
    const measureEnd = measureStart + measureMs
    const finish = () => {
      if (finished) return
      finished = true
      clearTimeout(watchdog)
      const sorted = latencies.subarray(0, count).sort()
      resolve({
        completed,
        rps: count / (measureMs / 1000),
        p50: percentile(sorted, 0.5),
        p99: percentile(sorted, 0.99),
        errors: errors.count + outstanding,
        firstError: errors.first ?? (outstanding > 0 ? `${outstanding} requests unanswered 15 s after the window` : undefined)
      })
    }
    const watchdog = setTimeout(finish, warmupMs + measureMs + 15_000)
    const issue = () => {
      const sentAt = performance.now()
      outstanding++
      send(target, payload, (error) => {
        outstanding--
        if (finished) return
        const now = performance.now()
        if (error === undefined) completed++
        if (error !== undefined) noteError(errors, error)
        else if (now >= measureStart && now < measureEnd) {
          if (count === latencies.length) {
            const bigger = new Float64Array(latencies.length * 2)
            bigger.set(latencies)
            latencies = bigger
          }
          latencies[count++] = now - sentAt
        }
        // A failing target fails fast: pause a little instead of spinning on errors.
        if (now < measureEnd) error === undefined ? issue() : setTimeout(issue, 10)
        else if (outstanding === 0) finish()
      })
    }
    for (let i = 0; i < inflight; i++) issue()
  })

// ---------------------------------------------------------------------------------------------
// Orchestration.

/** direct: client -> app; meshed: through two sidecars (tracing on, the default); untraced: two sidecars started with --tracing false. */
type Mode = "direct" | "meshed" | "untraced"
type Phase = "open" | "saturation" | "memory"
const MODES: ReadonlyArray<Mode> = ["direct", "meshed", "untraced"]
/** The modes that go through a pair of sidecars. */
type Meshed = Exclude<Mode, "direct">
const MESHED: ReadonlyArray<Meshed> = ["meshed", "untraced"]
const PHASES: ReadonlyArray<Phase> = ["open", "saturation", "memory"]

interface Options {
  readonly quick: boolean
  readonly rounds: number
  readonly warmupMs: number
  readonly measureMs: number
  readonly rate: number
  readonly inflight: number
  readonly modes: ReadonlyArray<Mode>
  readonly phases: ReadonlyArray<Phase>
  readonly cpuProfDir: string | undefined
  /** Extra node flags for the sidecar processes (e.g. `--max-semi-space-size=2`), to try settings without editing src. */
  readonly sidecarNodeFlags: ReadonlyArray<string>
}

const parseArgs = (args: ReadonlyArray<string>): Options => {
  const { quick, value, number } = benchArgs(args)
  const subset = <A extends string>(flag: string, all: ReadonlyArray<A>): ReadonlyArray<A> => {
    const v = value(flag)
    const picked = v === undefined ? all : all.filter((a) => v.split(",").includes(a))
    if (picked.length === 0) throw new Error(`${flag}: none of ${all.join(", ")}`)
    return picked
  }
  return {
    quick,
    rounds: Math.min(10, Math.round(number("--rounds", quick ? 1 : 3))),
    warmupMs: Math.min(30_000, number("--warmup", quick ? 1 : 2) * 1000),
    measureMs: Math.min(60_000, number("--duration", quick ? 3 : 10) * 1000),
    rate: Math.min(20_000, number("--rate", 1000)),
    inflight: Math.min(1024, Math.round(number("--inflight", 64))),
    modes: subset("--only", MODES),
    phases: subset("--phases", PHASES),
    cpuProfDir: value("--cpu-prof-dir"),
    sidecarNodeFlags: (value("--sidecar-node-flags") ?? "").split(" ").filter((flag) => flag !== "")
  }
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const pad = (text: string, width: number, left = false): string => (left ? text.padEnd(width) : text.padStart(width))
const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(3) : "-")
const mb = (value: number): string => (Number.isFinite(value) ? value.toFixed(1) : "-")
const us = (value: number): string => (Number.isFinite(value) ? String(Math.round(value)) : "-")
const round = (value: number, digits: number): number => (Number.isFinite(value) ? Number(value.toFixed(digits)) : NaN)

/** Every process in the picture: this load generator, the app, both sidecars. */
type Proc = "client" | "app" | "a" | "b"
const PROCS: ReadonlyArray<Proc> = ["client", "app", "a", "b"]
type Usages = Record<Proc, Usage>
/** VmRSS of one pair's sidecars, MB. */
interface Rss {
  idleA: number
  idleB: number
  peakA: number
  peakB: number
  after5A: number
  after5B: number
  after10A: number
  after10B: number
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const options = parseArgs(args)
  const log = (line: string) => process.stderr.write(`${line}\n`)
  const payload = Buffer.allocUnsafe(PAYLOAD_BYTES)
  for (let i = 0; i < PAYLOAD_BYTES; i++) payload[i] = (i * 31 + 7) & 0xff
  log(
    `sidecar bench: node ${process.version}, ${options.rounds} round(s), warm-up ${options.warmupMs / 1000} s + ${options.measureMs / 1000} s per window, ` +
      `open loop ${options.rate} req/s, saturation ${options.inflight} in flight, ${PAYLOAD_BYTES} B bodies`
  )

  // Every child, by pid, whatever happens: ended in `finally`, and on SIGINT/SIGTERM of the bench.
  const spawned: Array<ChildProcess> = []
  let app: Child | undefined
  // Callers first (sidecar A, then B, then the app), so no sidecar sees its peer vanish and redials.
  const stopAll = async () => {
    for (const child of [...spawned].reverse()) await killChild(child)
    if (app !== undefined) await killChild(app.process)
  }
  const onSignal = (signal: NodeJS.Signals) => {
    log(`sidecar bench: ${signal}, stopping the children`)
    void stopAll().then(() => process.exit(130))
  }
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)

  const open = new Map<Mode, Array<OpenSample>>(MODES.map((m) => [m, []]))
  const saturated = new Map<Mode, Array<ClosedSample>>(MODES.map((m) => [m, []]))
  /** Per request (CPU in microseconds), per phase and mode, one entry per round. */
  const perRequest = new Map<string, Array<Usages>>()
  /** Each pair's share of a core during its open-loop runs. */
  const vcpuAtRate = new Map<Meshed, Array<{ a: number; b: number }>>(MESHED.map((m) => [m, []]))
  const rss = new Map<Meshed, Rss>(MESHED.map((m) => [m, { idleA: NaN, idleB: NaN, peakA: NaN, peakB: NaN, after5A: NaN, after5B: NaN, after10A: NaN, after10B: NaN }]))
  try {
    app = await spawnServer(import.meta.url, "app", options.cpuProfDir)
    const appPid = app.process.pid!
    const common = ["--outbound", `${HOST}:0`, "--inbound", `${HOST}:0`, "--admin", `${HOST}:0`, "--drain-timeout", "2s"]
    /** B in front of the app, A calling B; `untraced` adds --tracing false to both (and its names get a `-untraced` suffix). */
    const startPair = async (mode: Meshed) => {
      const tracing = mode === "meshed" ? [] : ["--tracing", "false"]
      const suffix = mode === "meshed" ? "" : `-${mode}`
      const b = await startSidecar(`b${suffix}`, ["--service", "echo", "--app", `${HOST}:${app!.port}`, ...tracing, ...common], options, spawned)
      const a = await startSidecar(`a${suffix}`, ["--service", "client", "--endpoint", `echo=${b.inbound}`, ...tracing, ...common], options, spawned)
      log(`  ${mode}: sidecar B inbound ${b.inbound} (pid ${b.pid}), sidecar A outbound :${a.outbound.port} (pid ${a.pid})`)
      return { a, b }
    }
    const pairs = new Map<Meshed, { readonly a: SidecarProcess; readonly b: SidecarProcess }>()
    for (const mode of MESHED) if (options.modes.includes(mode)) pairs.set(mode, await startPair(mode))
    log(`  app :${app.port} (pid ${appPid})`)
    /** The pair a mode goes through (direct: none; its sidecar columns are left out of the report). */
    const pairOf = (mode: Mode) => (mode === "direct" ? undefined : pairs.get(mode))

    const readUsage = (mode: Mode): Usages => {
      const self = process.cpuUsage()
      const pair = pairOf(mode)
      const none = { cpu: NaN, reads: NaN, writes: NaN }
      return {
        client: { ...usageOf(process.pid), cpu: (self.user + self.system) / 1e6 },
        app: usageOf(appPid),
        a: pair === undefined ? none : usageOf(pair.a.pid),
        b: pair === undefined ? none : usageOf(pair.b.pid)
      }
    }
    const noteUsage = (key: string, mode: Mode, from: Usages, requests: number): Usages => {
      const to = readUsage(mode)
      const per = (p: Proc): Usage => ({
        cpu: ((to[p].cpu - from[p].cpu) * 1e6) / requests,
        reads: (to[p].reads - from[p].reads) / requests,
        writes: (to[p].writes - from[p].writes) / requests
      })
      perRequest.set(key, [...(perRequest.get(key) ?? []), { client: per("client"), app: per("app"), a: per("a"), b: per("b") }])
      return to
    }

    // Idle: started, nothing sent yet; a second to settle.
    await sleep(1000)
    for (const [mode, pair] of pairs) {
      const r = rss.get(mode)!
      r.idleA = rssMb(pair.a.pid)
      r.idleB = rssMb(pair.b.pid)
      log(`  idle RSS (${mode}): sidecar A ${mb(r.idleA)} MB, sidecar B ${mb(r.idleB)} MB`)
    }

    const targetOf = (mode: Mode, maxSockets: number): Target => {
      const pair = pairOf(mode)
      return pair === undefined ? makeTarget(HOST, app!.port, undefined, maxSockets) : makeTarget(pair.a.outbound.host, pair.a.outbound.port, "echo", maxSockets)
    }
    // Alternate which mode goes first, so neither always runs on a cold (or hot) machine.
    const orderOf = (round: number): ReadonlyArray<Mode> => (round % 2 === 0 ? options.modes : [...options.modes].reverse())
    const failOn = (what: string, errors: number, firstError: string | undefined, sent: number) => {
      if (errors > 0) log(`    ${what}: ${errors} failed requests (first: ${firstError})`)
      if (errors > sent * 0.01) throw new Error(`${what}: ${errors} of ${sent} requests failed (first: ${firstError})`)
    }

    // Priming: a cold sidecar (JIT, first connections, lazily loaded code) runs far slower for its
    // first few thousand requests; at a fixed rate that backlog would spill into the measuring
    // window, so both paths first get a short closed-loop run that is not measured.
    for (const mode of options.modes) {
      const target = targetOf(mode, 16)
      try {
        const primed = await closedLoop(target, payload, 16, 0, options.quick ? 2000 : 3000)
        log(`  primed ${mode}: ${primed.completed} requests`)
        failOn(`priming ${mode}`, primed.errors, primed.firstError, primed.completed)
      } finally {
        target.agent.destroy()
      }
    }

    // 1. Open loop at a fixed rate.
    if (options.phases.includes("open")) {
      for (let round = 0; round < options.rounds; round++) {
        for (const mode of orderOf(round)) {
          const target = targetOf(mode, 256)
          const usage = readUsage(mode)
          const wallStart = performance.now()
          try {
            const sample = await openLoop(target, payload, options.rate, options.warmupMs, options.measureMs)
            const after = noteUsage(`open ${mode}`, mode, usage, sample.sent)
            if (mode !== "direct") {
              const wall = (performance.now() - wallStart) / 1000
              vcpuAtRate.get(mode)!.push({ a: (after.a.cpu - usage.a.cpu) / wall, b: (after.b.cpu - usage.b.cpu) / wall })
            }
            open.get(mode)!.push(sample)
            log(
              `  round ${round + 1} open loop ${pad(mode, 6, true)} ${options.rate} req/s: p50 ${ms(sample.p50)} p90 ${ms(sample.p90)} p99 ${ms(sample.p99)} ` +
                `max ${ms(sample.max)} ms, ${sample.maxOutstanding} outstanding at most`
            )
            failOn(`open loop ${mode}`, sample.errors, sample.firstError, sample.sent)
          } finally {
            target.agent.destroy()
          }
          await sleep(200)
        }
      }
    }

    // 2. Saturation (closed loop), sampling the sidecars' RSS while the meshed runs go.
    if (options.phases.includes("saturation")) {
      for (let round = 0; round < options.rounds; round++) {
        for (const mode of orderOf(round)) {
          const target = targetOf(mode, options.inflight)
          const pair = pairOf(mode)
          const r = mode === "direct" ? undefined : rss.get(mode)
          const sampler = pair !== undefined && r !== undefined
            ? setInterval(() => {
              r.peakA = Math.max(Number.isFinite(r.peakA) ? r.peakA : 0, rssMb(pair.a.pid))
              r.peakB = Math.max(Number.isFinite(r.peakB) ? r.peakB : 0, rssMb(pair.b.pid))
            }, 100)
            : undefined
          const usage = readUsage(mode)
          try {
            const sample = await closedLoop(target, payload, options.inflight, Math.min(options.warmupMs, 1000), options.measureMs)
            noteUsage(`saturation ${mode}`, mode, usage, sample.completed)
            saturated.get(mode)!.push(sample)
            log(
              `  round ${round + 1} saturation ${pad(mode, 6, true)} ${options.inflight} in flight: ${Math.round(sample.rps)} req/s, ` +
                `p50 ${ms(sample.p50)} p99 ${ms(sample.p99)} ms`
            )
            failOn(`saturation ${mode}`, sample.errors, sample.firstError, sample.completed)
          } finally {
            if (sampler !== undefined) clearInterval(sampler)
            target.agent.destroy()
          }
          await sleep(200)
        }
      }
    }

    // 3. After the load: does the memory come back?
    if (options.phases.includes("memory")) {
      for (const [mode, r] of rss) if (pairs.has(mode)) log(`  peak RSS under saturation (${mode}): sidecar A ${mb(r.peakA)} MB, sidecar B ${mb(r.peakB)} MB`)
      log(`  waiting 10 s for it to settle`)
      await sleep(5000)
      for (const [mode, pair] of pairs) {
        rss.get(mode)!.after5A = rssMb(pair.a.pid)
        rss.get(mode)!.after5B = rssMb(pair.b.pid)
      }
      await sleep(5000)
      for (const [mode, pair] of pairs) {
        rss.get(mode)!.after10A = rssMb(pair.a.pid)
        rss.get(mode)!.after10B = rssMb(pair.b.pid)
      }
    }
  } finally {
    await stopAll()
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }

  // ---- Report.
  const o = (mode: Mode, key: "p50" | "p90" | "p99") => median(open.get(mode)!.map((s) => s[key]))
  const s = (mode: Mode, key: "rps" | "p50" | "p99") => median(saturated.get(mode)!.map((x) => x[key]))
  /** Open-loop latency `mode` adds over `base`. */
  const added = (key: "p50" | "p90" | "p99", mode: Mode = "meshed", base: Mode = "direct") => o(mode, key) - o(base, key)
  const rpsRatio = (mode: Mode, base: Mode) => s(mode, "rps") / s(base, "rps")
  const ratio = rpsRatio("meshed", "direct")
  const usageFor = (key: string, p: Proc, k: keyof Usage) => median((perRequest.get(key) ?? []).map((u) => u[p][k]))
  // CPU per request of the whole picture (client + app, plus both sidecars when meshed): on a box
  // where CPU is what runs out, the saturation ratio to expect; steadier than req/s on a shared one.
  const totalCpu = (mode: Mode) => PROCS.reduce((sum, p) => sum + (mode === "direct" && (p === "a" || p === "b") ? 0 : usageFor(`saturation ${mode}`, p, "cpu")), 0)
  const cpuRatio = totalCpu("direct") / totalCpu("meshed")
  /** Both sidecars' CPU per request at saturation. */
  const sidecarCpu = (mode: Meshed) => usageFor(`saturation ${mode}`, "a", "cpu") + usageFor(`saturation ${mode}`, "b", "cpu")
  const vcpu = (mode: Meshed, p: "a" | "b") => median(vcpuAtRate.get(mode)!.map((c) => c[p]))

  const percent = (value: number) => (Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : "-")
  const signed = (value: number) => (Number.isFinite(value) ? `${value >= 0 ? "+" : ""}${value.toFixed(3)}` : "-")
  const lines: Array<string> = []
  lines.push(`open loop, ${options.rate} req/s, ${PAYLOAD_BYTES} B, median of ${options.rounds} round(s) of ${options.measureMs / 1000} s`)
  lines.push(`${pad("", 10, true)} ${pad("p50 ms", 9)} ${pad("p90 ms", 9)} ${pad("p99 ms", 9)}`)
  for (const mode of MODES) lines.push(`${pad(mode, 10, true)} ${pad(ms(o(mode, "p50")), 9)} ${pad(ms(o(mode, "p90")), 9)} ${pad(ms(o(mode, "p99")), 9)}`)
  lines.push(`${pad("added", 10, true)} ${pad(ms(added("p50")), 9)} ${pad(ms(added("p90")), 9)} ${pad(ms(added("p99")), 9)}   (meshed - direct; target <= 0.5 / - / 2 ms)`)
  lines.push(`${pad("tracing", 10, true)} ${pad(signed(added("p50", "meshed", "untraced")), 9)} ${pad(signed(added("p90", "meshed", "untraced")), 9)} ${pad(signed(added("p99", "meshed", "untraced")), 9)}   (meshed - untraced: what tracing adds)`)
  lines.push(``)
  lines.push(`saturation, ${options.inflight} in flight, closed loop`)
  lines.push(`${pad("", 10, true)} ${pad("req/s", 9)} ${pad("p50 ms", 9)} ${pad("p99 ms", 9)}`)
  for (const mode of MODES) lines.push(`${pad(mode, 10, true)} ${pad(us(s(mode, "rps")), 9)} ${pad(ms(s(mode, "p50")), 9)} ${pad(ms(s(mode, "p99")), 9)}`)
  lines.push(`${pad("ratio", 10, true)} ${pad(percent(ratio), 9)}   (meshed / direct; target >= 40%; by CPU per request: ${percent(cpuRatio)})`)
  lines.push(`${pad("", 10, true)} ${pad(percent(rpsRatio("untraced", "direct")), 9)}   (untraced / direct; by CPU per request: ${percent(totalCpu("direct") / totalCpu("untraced"))})`)
  lines.push(
    `${pad("tracing", 10, true)} ${pad(percent(rpsRatio("meshed", "untraced")), 9)}   (meshed / untraced; by CPU per request: ${percent(totalCpu("untraced") / totalCpu("meshed"))}; ` +
      `sidecars' CPU per request ${us(sidecarCpu("untraced"))} -> ${us(sidecarCpu("meshed"))} us)`
  )
  lines.push(``)
  lines.push(`per request: CPU us, read + write syscalls`)
  lines.push(`${pad("", 20, true)} ${pad("client", 13)} ${pad("app", 13)} ${pad("sidecar A", 13)} ${pad("sidecar B", 13)}`)
  const cell = (key: string, p: Proc) =>
    pad(`${us(usageFor(key, p, "cpu"))} ${usageFor(key, p, "reads").toFixed(1)}+${usageFor(key, p, "writes").toFixed(1)}`, 13)
  for (const phase of ["open", "saturation"]) {
    for (const mode of MODES) {
      const key = `${phase} ${mode}`
      if (!perRequest.has(key)) continue
      lines.push(`${pad(key, 20, true)} ${cell(key, "client")} ${cell(key, "app")} ${mode === "direct" ? "" : `${cell(key, "a")} ${cell(key, "b")}`}`)
    }
  }
  lines.push(``)
  lines.push(`sidecar RSS MB            idle   peak  after 5 s  after 10 s   CPU at ${options.rate} req/s`)
  for (const mode of MESHED) {
    const r = rss.get(mode)!
    for (const [name, idle, peak, after5, after10, cpu] of [
      ["A", r.idleA, r.peakA, r.after5A, r.after10A, vcpu(mode, "a")],
      ["B", r.idleB, r.peakB, r.after5B, r.after10B, vcpu(mode, "b")]
    ] as const) {
      lines.push(
        `${pad(`sidecar ${name} (${mode})`, 22, true)} ${pad(mb(idle), 7)} ${pad(mb(peak), 6)} ${pad(mb(after5), 10)} ${pad(mb(after10), 11)}   ${Number.isFinite(cpu) ? cpu.toFixed(2) : "-"} vCPU`
      )
    }
  }
  lines.push(`(targets: idle <= 80 MB; after a burst back within 10% of idle)`)
  process.stdout.write(`${lines.join("\n")}\n`)

  const errors = (mode: Mode) => open.get(mode)!.reduce((n, x) => n + x.errors, 0) + saturated.get(mode)!.reduce((n, x) => n + x.errors, 0)
  const cpuSummary = (key: string) => Object.fromEntries(PROCS.map((p) => [p, Math.round(usageFor(key, p, "cpu"))]))
  const syscallSummary = (key: string) => Object.fromEntries(PROCS.map((p) => [p, round(usageFor(key, p, "reads") + usageFor(key, p, "writes"), 2)]))
  const traced = rss.get("meshed")!
  const untraced = rss.get("untraced")!
  const rssSummary = (r: Rss, p: "A" | "B") => ({ idle: round(r[`idle${p}`], 1), peak: round(r[`peak${p}`], 1), after5: round(r[`after5${p}`], 1), after10: round(r[`after10${p}`], 1) })
  const summary = {
    bench: "sidecar",
    direct_p50_ms: round(o("direct", "p50"), 4),
    mesh_p50_ms: round(o("meshed", "p50"), 4),
    added_p50_ms: round(added("p50"), 4),
    direct_p90_ms: round(o("direct", "p90"), 4),
    mesh_p90_ms: round(o("meshed", "p90"), 4),
    added_p90_ms: round(added("p90"), 4),
    direct_p99_ms: round(o("direct", "p99"), 4),
    mesh_p99_ms: round(o("meshed", "p99"), 4),
    added_p99_ms: round(added("p99"), 4),
    direct_rps_saturated: Math.round(s("direct", "rps")),
    mesh_rps_saturated: Math.round(s("meshed", "rps")),
    mesh_vs_direct_saturated: round(ratio, 3),
    mesh_vs_direct_by_cpu: round(cpuRatio, 3),
    // Tracing's cost: the same mesh with --tracing false, in the same run.
    untraced_p50_ms: round(o("untraced", "p50"), 4),
    untraced_p90_ms: round(o("untraced", "p90"), 4),
    untraced_p99_ms: round(o("untraced", "p99"), 4),
    untraced_added_p50_ms: round(added("p50", "untraced"), 4),
    untraced_added_p99_ms: round(added("p99", "untraced"), 4),
    tracing_added_p50_ms: round(added("p50", "meshed", "untraced"), 4),
    tracing_added_p90_ms: round(added("p90", "meshed", "untraced"), 4),
    tracing_added_p99_ms: round(added("p99", "meshed", "untraced"), 4),
    untraced_rps_saturated: Math.round(s("untraced", "rps")),
    untraced_vs_direct_saturated: round(rpsRatio("untraced", "direct"), 3),
    traced_vs_untraced_saturated: round(rpsRatio("meshed", "untraced"), 3),
    traced_vs_untraced_by_cpu: round(totalCpu("untraced") / totalCpu("meshed"), 3),
    tracing_sidecar_cpu_us_per_request: round(sidecarCpu("meshed") - sidecarCpu("untraced"), 1),
    sidecar_rss_idle_mb: round(Math.max(traced.idleA, traced.idleB), 1),
    sidecar_rss_peak_mb: round(Math.max(traced.peakA, traced.peakB), 1),
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
    cpu_us_per_request: {
      open_direct: cpuSummary("open direct"),
      open_meshed: cpuSummary("open meshed"),
      open_untraced: cpuSummary("open untraced"),
      saturation_direct: cpuSummary("saturation direct"),
      saturation_meshed: cpuSummary("saturation meshed"),
      saturation_untraced: cpuSummary("saturation untraced")
    },
    syscalls_per_request: {
      open_direct: syscallSummary("open direct"),
      open_meshed: syscallSummary("open meshed"),
      open_untraced: syscallSummary("open untraced"),
      saturation_direct: syscallSummary("saturation direct"),
      saturation_meshed: syscallSummary("saturation meshed"),
      saturation_untraced: syscallSummary("saturation untraced")
    },
    errors_direct: errors("direct"),
    errors_meshed: errors("meshed"),
    errors_untraced: errors("untraced"),
    rate: options.rate,
    inflight_saturated: options.inflight,
    payload: PAYLOAD_BYTES,
    rounds: options.rounds,
    measure_s: options.measureMs / 1000,
    warmup_s: options.warmupMs / 1000,
    node: process.version,
    quick: options.quick
  }
  printSummary(summary)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--serve")
  if (i !== -1) {
    const kind = process.argv[i + 1]
    ;(kind === "app" ? serveChild(startApp) : Promise.reject(new Error(`--serve: unknown kind ${kind}`))).catch((error: unknown) => {
      process.stderr.write(`sidecar bench app failed: ${error instanceof Error ? error.message : String(error)}\n`)
      process.exit(1)
    })
  } else {
    main(process.argv.slice(2)).catch((error: unknown) => {
      process.stderr.write(`sidecar bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
      process.exit(1)
    })
  }
}
