// CPU per call of plain IIP and mesh mode, each measured alone: one child process per mode and
// round runs an IipServer and an IipClient over loopback (closed loop, N in flight, 1 KiB echo)
// and reports the process's CPU time per completed call. Beside `bench -- echo`, whose client and
// server processes serve every system in turn (code one mode made fast for its shapes runs the
// other's too), this isolates what one mode costs; two modes in one process cost the second more.
//
//   npm run -s bench -- callCpu                         5 rounds, 1 s per mode and round
// Flags: --rounds N, --duration S, --inflight N (default 64).
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { IipClient } from "../src/iip/client.ts"
import { IipServer } from "../src/iip/server.ts"
import { printSummary } from "./args.ts"

const PATH = "/echo_benchmark"
const MODES = ["plain", "mesh"] as const
type Mode = (typeof MODES)[number]

/** Child side: echo with `mode` for `seconds` after a 0.5 s warm-up; prints CPU µs per call. */
const measure = async (mode: Mode, inflight: number, seconds: number): Promise<void> => {
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
  const run = async (ms: number) => {
    count = 0
    stopping = false
    active = inflight
    const finished = new Promise<void>((resolve) => (stopped = resolve))
    for (let i = 0; i < inflight; i++) client.send(PATH, payload, options, done)
    const cpu = process.cpuUsage()
    await new Promise((resolve) => setTimeout(resolve, ms))
    const used = process.cpuUsage(cpu)
    const calls = count
    stopping = true
    await finished
    return { calls, cpuUs: (used.user + used.system) / calls }
  }
  await run(500)
  const result = await run(seconds * 1000)
  process.stdout.write(`${JSON.stringify({ mode, calls: result.calls, cpuUs: result.cpuUs })}\n`)
  client.close()
  process.exit(0)
}

const child = (mode: Mode, inflight: number, seconds: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), "--child", mode, String(inflight), String(seconds)], { stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    proc.stdout.on("data", (chunk: Buffer) => (out += chunk.toString("utf8")))
    proc.on("error", reject)
    proc.on("exit", (code) => (code === 0 ? resolve((JSON.parse(out.trim()) as { cpuUs: number }).cpuUs) : reject(new Error(`${mode} child exited with ${code}`))))
  })

const flag = (args: ReadonlyArray<string>, name: string, fallback: number): number => {
  const i = args.indexOf(name)
  const value = i === -1 ? fallback : Number(args[i + 1])
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}: a positive number, got ${args[i + 1]}`)
  return value
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const rounds = flag(args, "--rounds", 5)
  const seconds = flag(args, "--duration", 1)
  const inflight = flag(args, "--inflight", 64)
  const samples: Record<Mode, Array<number>> = { plain: [], mesh: [] }
  for (let round = 0; round < rounds; round++) {
    // Alternating order, so neither mode always runs first.
    for (const mode of round % 2 === 0 ? MODES : [...MODES].reverse()) {
      const cpuUs = await child(mode, inflight, seconds)
      samples[mode].push(cpuUs)
      process.stderr.write(`  round ${round + 1} ${mode.padEnd(5)} ${inflight} in flight 1024 B: CPU ${cpuUs.toFixed(2)} us/call\n`)
    }
  }
  const plain = median(samples.plain)
  const mesh = median(samples.mesh)
  process.stdout.write(`CPU per call, client and server in one process, median of ${rounds}: plain ${plain.toFixed(2)} us, mesh ${mesh.toFixed(2)} us (mesh/plain ${(mesh / plain).toFixed(2)})\n`)
  printSummary({ bench: "callCpu", inflight, rounds, plain_cpu_us: Number(plain.toFixed(2)), mesh_cpu_us: Number(mesh.toFixed(2)), mesh_vs_plain: Number((mesh / plain).toFixed(3)) })
}

const at = process.argv.indexOf("--child")
if (at !== -1) {
  const mode = process.argv[at + 1] as Mode
  if (!MODES.includes(mode)) throw new Error(`--child: unknown mode ${mode}`)
  void measure(mode, Number(process.argv[at + 2]), Number(process.argv[at + 3]))
}
