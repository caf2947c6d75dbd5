// CPU per call of plain IIP, mesh mode, and mesh mode over mutual TLS 1.3 (`mtls`: the mesh's
// suites and ALPN, client certificates, SPIFFE IDs checked both ways, as between sidecars), each
// measured alone: one child process per mode and round runs an IipServer and an IipClient over
// loopback (closed loop, N in flight, 1 KiB echo) and reports the process's CPU time and its read
// and write system calls per completed call. mtls - mesh is what TLS costs the IIP leg a call
// (both ends), at the batching N in flight gives. Beside
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
//   npm run -s bench -- callCpu --modes mesh,mtls --against ../wt-base   (a subset of the modes)
// Flags: --rounds N, --duration S, --warmup S (default 0.5), --inflight N (default 64), --against DIR,
//        --modes plain,mesh,mtls (default all three).
import { spawn } from "node:child_process"
import type { X509Certificate } from "node:crypto"
import * as path from "node:path"
import * as tls from "node:tls"
import { fileURLToPath } from "node:url"
import { benchArgs, printSummary } from "./args.ts"
import { usageOf } from "./sidecar/procStats.ts"
import { createIntermediateCa, createRootCa, generateKeyPair, issueLeaf } from "../src/identity/certificates.ts"
import { serviceSpiffeId, spiffeIdOfCertificate } from "../src/identity/spiffe.ts"

const PATH = "/echo_benchmark"
const MODES = ["plain", "mesh", "mtls"] as const
type Mode = (typeof MODES)[number]
const OWN_SRC = fileURLToPath(new URL("../src", import.meta.url))

interface Sample {
  readonly cpuUs: number
  readonly syscalls: number
}

const day = 86_400_000

/** PEM key, chain and trust bundle of `service` under a root and intermediate made for this child. */
const credentialsFor = async (services: ReadonlyArray<string>): Promise<Array<{ readonly key: string; readonly cert: string; readonly ca: string; readonly id: string }>> => {
  const root = await createRootCa({ commonName: "callCpu root", lifetimeMs: 2 * day })
  const intermediate = await createIntermediateCa(root, { commonName: "callCpu intermediate", lifetimeMs: day })
  return Promise.all(
    services.map(async (service) => {
      const id = serviceSpiffeId("iip-mesh.local", service)
      const pair = await generateKeyPair()
      const leaf = await issueLeaf(intermediate, { spiffeId: id, publicKey: pair.keys.publicKey, lifetimeMs: day })
      return { key: pair.privateKeyPem, cert: leaf + intermediate.certificatePem, ca: root.certificatePem, id }
    })
  )
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
  const [a, b] = mode === "mtls" ? await credentialsFor(["client", "echo"]) : []
  const idOf = (certificate: X509Certificate): string | undefined => spiffeIdOfCertificate(certificate)?.text
  const server = new IipServer({
    host: "127.0.0.1",
    port: 0,
    ...(b === undefined
      ? {}
      : { tls: { credentials: b, requireClientCertificate: true, identifyPeer: (certificate) => idOf(certificate) ?? { reason: "peer_identity", message: "no SPIFFE ID" } } })
  })
  server.handle(PATH, (request) => request.data)
  await server.listen()
  const context = a === undefined ? undefined : tls.createSecureContext({ ...a, minVersion: "TLSv1.3" })
  const client = new IipClient({
    host: "127.0.0.1",
    port: server.address.port,
    maxConnections: 1,
    maxChannelsPerConnection: 16,
    idleChannelsAhead: 1,
    mesh: mode !== "plain",
    ...(context === undefined
      ? {}
      : { tls: { secureContext: () => context, requireAlpn: true, checkPeer: (certificate) => (idOf(certificate) === b!.id ? undefined : { reason: "peer_identity", message: "not the echo service" }) } })
  })
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

/** Per mode run: median CPU, its range and syscalls; mesh/plain and mtls/mesh as medians of each round's ratio. */
const summarize = (build: Build, modes: ReadonlyArray<Mode>) => {
  const out: Record<string, number | Array<number>> = {}
  for (const mode of modes) {
    const cpu = build.samples[mode].map((s) => s.cpuUs)
    out[`${mode}_cpu_us`] = Number(median(cpu).toFixed(2))
    out[`${mode}_cpu_us_range`] = [Number(Math.min(...cpu).toFixed(2)), Number(Math.max(...cpu).toFixed(2))]
    out[`${mode}_syscalls_per_call`] = Number(median(build.samples[mode].map((s) => s.syscalls)).toFixed(4))
  }
  const ratio = (over: Mode, under: Mode) => {
    if (!modes.includes(over) || !modes.includes(under)) return
    out[`${over}_vs_${under}`] = Number(median(build.samples[over].map((s, round) => s.cpuUs / build.samples[under][round]!.cpuUs)).toFixed(3))
  }
  ratio("mesh", "plain")
  ratio("mtls", "mesh")
  return out
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { value, number } = benchArgs(args)
  const rounds = Math.round(number("--rounds", 5))
  const seconds = number("--duration", 1)
  const warmupSeconds = number("--warmup", 0.5)
  const inflight = Math.round(number("--inflight", 64))
  const against = value("--against")
  const modes = (value("--modes") ?? MODES.join(",")).split(",") as Array<Mode>
  const unknown = modes.find((mode) => !MODES.includes(mode))
  if (unknown !== undefined) throw new Error(`--modes: unknown mode ${unknown} (${MODES.join(", ")})`)
  const empty = (): Record<Mode, Array<Sample>> => ({ plain: [], mesh: [], mtls: [] })
  const builds: Array<Build> = [{ name: "this", src: OWN_SRC, samples: empty() }]
  if (against !== undefined) builds.push({ name: "against", src: path.resolve(against, "src"), samples: empty() })
  const runs = builds.flatMap((build) => modes.map((mode) => ({ build, mode })))
  for (let round = 0; round < rounds; round++) {
    // Alternating order, so no build and mode always runs first.
    for (const { build, mode } of round % 2 === 0 ? runs : [...runs].reverse()) {
      const sample = await child(mode, inflight, seconds, warmupSeconds, build.src)
      build.samples[mode].push(sample)
      process.stderr.write(`  round ${round + 1} ${build.name.padEnd(7)} ${mode.padEnd(5)} ${inflight} in flight 1024 B: CPU ${sample.cpuUs.toFixed(2)} us/call, ${sample.syscalls.toFixed(3)} syscalls/call\n`)
    }
  }
  const [own, base] = builds.map((build) => summarize(build, modes))
  const line = (name: string, s: ReturnType<typeof summarize>) =>
    `${name}: ${modes.map((mode) => `${mode} ${String(s[`${mode}_cpu_us`])} us`).join(", ")}${s.mesh_vs_plain === undefined ? "" : ` (mesh/plain ${String(s.mesh_vs_plain)})`}${s.mtls_vs_mesh === undefined ? "" : ` (mtls/mesh ${String(s.mtls_vs_mesh)})`}, syscalls/call ${modes.map((mode) => `${mode} ${String(s[`${mode}_syscalls_per_call`])}`).join(", ")}`
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
