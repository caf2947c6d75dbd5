// CPU per call of plain IIP and mesh mode, each measured alone: one child process per mode and
// round runs an IipServer and an IipClient over loopback (closed loop, N in flight, 1 KiB echo)
// and reports the process's CPU time and its read and write system calls per completed call. Beside
// `bench -- echo`, whose client and server processes serve every system in turn (code one mode made
// fast for its shapes runs the other's too), this isolates what one mode costs; two modes in one
// process cost the second more.
//
// `--against DIR` (another checkout, e.g. `git worktree add --detach DIR <base>` with node_modules
// linked) runs DIR's src/ in the same rounds, alternated with this checkout's: a change read against
// its base on the same machine at the same moments. The load moves CPU time a lot (blocks of one
// process differ 2x at load 15), the mesh/plain ratio of a round far less, and system calls per call
// (how many calls a read or write carries) say whether a slow round batched worse or ran slower code.
//
//   npm run -s bench -- callCpu                         5 rounds, 1 s per mode and round
//   npm run -s bench -- callCpu --against ../wt-base --rounds 12 --warmup 2
// Flags: --rounds N, --duration S, --warmup S (default 0.5), --inflight N (default 64), --against DIR.
import { spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { benchArgs, printSummary } from "./args.ts"
import { usageOf } from "./sidecar/procStats.ts"

const PATH = "/echo_benchmark"
const MODES = ["plain", "mesh"] as const
type Mode = (typeof MODES)[number]
const OWN_SRC = fileURLToPath(new URL("../src", import.meta.url))

interface Sample {
  readonly cpuUs: number
  readonly syscalls: number
}

/** Read and write system calls this process made so far (/proc/self/io, NaN where there is none). */
const syscallsSoFar = (): number => {
  const usage = usageOf(process.pid)
  return usage.reads + usage.writes
}

/** Child side: echo with `mode` and `src`'s client and server for `seconds` after a warm-up; prints a Sample. */
const measure = async (mode: Mode, inflight: number, seconds: number, warmupSeconds: number, src: string): Promise<void> => {
  const { IipClient } = (await import(path.join(src, "iip/client.ts"))) as typeof import("../src/iip/client.ts")
  const { IipServer } = (await import(path.join(src, "iip/server.ts"))) as typeof import("../src/iip/server.ts")
  const server = new IipServer({ host: "127.0.0.1", port: 0 })
  server.handle(PATH, (request) => request.data)
  await server.listen()
  const client = new IipClient({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, maxChannelsPerConnection: 16, idleChannelsAhead: 1, mesh: mode === "mesh" })
  const payload = Buffer.alloc(1024, 7)
  const options = { timeoutMs: 10_000 }
  let count = 0
  let stopping = false
  let active = 0
  let stopped: () => void = () => {}
  const done = (error: unknown, data: Buffer | undefined): void => {
    if (error !== undefined || data?.length !== payload.length) throw error ?? new Error(`echoed ${data?.length} bytes`)
    count++
    if (!stopping) return client.send(PATH, payload, options, done)
    if (--active === 0) stopped()
  }
  const run = async (ms: number): Promise<Sample> => {
    count = 0
    stopping = false
    active = inflight
    const finished = new Promise<void>((resolve) => (stopped = resolve))
    for (let i = 0; i < inflight; i++) client.send(PATH, payload, options, done)
    const cpu = process.cpuUsage()
    const syscalls = syscallsSoFar()
    await new Promise((resolve) => setTimeout(resolve, ms))
    const used = process.cpuUsage(cpu)
    const calls = count
    const made = syscallsSoFar() - syscalls
    stopping = true
    await finished
    return { cpuUs: (used.user + used.system) / calls, syscalls: made / calls }
  }
  await run(warmupSeconds * 1000)
  const result = await run(seconds * 1000)
  process.stdout.write(`${JSON.stringify(result)}\n`)
  client.close()
  process.exit(0)
}

const child = (mode: Mode, inflight: number, seconds: number, warmupSeconds: number, src: string): Promise<Sample> =>
  new Promise((resolve, reject) => {
    const args = [fileURLToPath(import.meta.url), "--child", mode, String(inflight), String(seconds), String(warmupSeconds), src]
    const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    proc.stdout.on("data", (chunk: Buffer) => (out += chunk.toString("utf8")))
    proc.on("error", reject)
    proc.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out.trim()) as Sample) : reject(new Error(`${mode} child (${src}) exited with ${code}`))))
  })

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** One checkout's samples: per mode, one a round. */
interface Build {
  readonly name: string
  readonly src: string
  readonly samples: Record<Mode, Array<Sample>>
}

const summarize = (build: Build) => {
  const of = (mode: Mode, pick: (s: Sample) => number) => median(build.samples[mode].map(pick))
  const ratios = build.samples.mesh.map((s, round) => s.cpuUs / build.samples.plain[round]!.cpuUs)
  const cpu = build.samples.mesh.map((s) => s.cpuUs)
  return {
    plain_cpu_us: Number(of("plain", (s) => s.cpuUs).toFixed(2)),
    mesh_cpu_us: Number(of("mesh", (s) => s.cpuUs).toFixed(2)),
    mesh_cpu_us_range: [Number(Math.min(...cpu).toFixed(2)), Number(Math.max(...cpu).toFixed(2))],
    mesh_vs_plain: Number(median(ratios).toFixed(3)),
    plain_syscalls_per_call: Number(of("plain", (s) => s.syscalls).toFixed(4)),
    mesh_syscalls_per_call: Number(of("mesh", (s) => s.syscalls).toFixed(4))
  }
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { value, number } = benchArgs(args)
  const rounds = Math.round(number("--rounds", 5))
  const seconds = number("--duration", 1)
  const warmupSeconds = number("--warmup", 0.5)
  const inflight = Math.round(number("--inflight", 64))
  const against = value("--against")
  const empty = (): Record<Mode, Array<Sample>> => ({ plain: [], mesh: [] })
  const builds: Array<Build> = [{ name: "this", src: OWN_SRC, samples: empty() }]
  if (against !== undefined) builds.push({ name: "against", src: path.resolve(against, "src"), samples: empty() })
  const runs = builds.flatMap((build) => MODES.map((mode) => ({ build, mode })))
  for (let round = 0; round < rounds; round++) {
    // Alternating order, so no build and mode always runs first.
    for (const { build, mode } of round % 2 === 0 ? runs : [...runs].reverse()) {
      const sample = await child(mode, inflight, seconds, warmupSeconds, build.src)
      build.samples[mode].push(sample)
      process.stderr.write(`  round ${round + 1} ${build.name.padEnd(7)} ${mode.padEnd(5)} ${inflight} in flight 1024 B: CPU ${sample.cpuUs.toFixed(2)} us/call, ${sample.syscalls.toFixed(3)} syscalls/call\n`)
    }
  }
  const [own, base] = builds.map(summarize)
  const line = (name: string, s: ReturnType<typeof summarize>) =>
    `${name}: plain ${s.plain_cpu_us.toFixed(2)} us, mesh ${s.mesh_cpu_us.toFixed(2)} us (mesh/plain ${s.mesh_vs_plain.toFixed(2)}), syscalls/call plain ${s.plain_syscalls_per_call}, mesh ${s.mesh_syscalls_per_call}`
  process.stdout.write(`CPU per call, client and server in one process, median of ${rounds}:\n  ${line("this", own!)}\n${base === undefined ? "" : `  ${line(`against ${against}`, base)}\n`}`)
  printSummary({ bench: "callCpu", inflight, rounds, ...own!, ...(base === undefined ? {} : { against: base }) })
}

const at = process.argv.indexOf("--child")
if (at !== -1) {
  const mode = process.argv[at + 1] as Mode
  if (!MODES.includes(mode)) throw new Error(`--child: unknown mode ${mode}`)
  const [inflight, seconds, warmupSeconds] = [2, 3, 4].map((i) => Number(process.argv[at + i]))
  void measure(mode, inflight!, seconds!, warmupSeconds!, process.argv[at + 5] ?? OWN_SRC)
}
