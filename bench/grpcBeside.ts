// Issue 17's control for the gRPC bench's tail (bench/grpc.ts): is the grpc-js app's extra stalling
// under the meshed load what sidecar B sends it, or the cores the sidecars take beside it? Two
// identical grpc-js apps (grpc.ts's server, each with the stall probe), at once at --rate calls/s
// (default 1,000) each, from two C generators (grpcCLoad.ts):
//   direct beside   generator 1 -> app 1, while
//   via B           generator 2 -> sidecar A -> sidecar B -> app 2 (grpc.ts's sidecars)
// both apps share the machine with the same processes at the same moments; only what reaches them
// differs. Then, per round, app 1 alone (direct, the sidecars idle), the bench's own direct path.
// Per row, medians over rounds of the p99, and over all its windows: the app's CPU and its main
// thread's wait for a core (/proc schedstat) per call, its GC pauses (and of them the full ones) and its event-loop stalls over
// 10 ms per 1,000 calls with how much of them was on CPU and GC. If app 1 beside stalls as app 2
// does, what B sends is not the cause.
//
//   npm run -s bench -- grpcBeside [--rounds 3] [--duration 3] [--rate 1000] [--app-node-flags F] [--app-log-dir D]
// (--app-node-flags and --app-log-dir as in the gRPC bench; the logs are app-1.log and app-2.log)
// The last stdout line is one JSON object.
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { benchArgs, printSummary } from "./args.ts"
import { type Child, killChild } from "./children.ts"
import { appRunOf, spawnGrpcServer, startGrpcSidecars } from "./grpc.ts"
import { METHODS } from "./grpcApp.ts"
import { startGrpcCLoad } from "./grpcCLoad.ts"
import { median, ms, pad, round, us } from "./sidecar/format.ts"
import { countStalls, type Window } from "./sidecar/hopStalls.ts"
import type { OpenSample } from "./sidecar/nodeLoad.ts"
import { DEFAULT_SIDECAR_MAIN, SHIPPED_ENV, SHIPPED_NODE_FLAGS, parseEnv } from "./sidecar/options.ts"
import { runQueueWaitOf, usageOf } from "./sidecar/procStats.ts"
import { HOST } from "./sidecar/request.ts"

const ROWS = ["direct beside", "via B", "direct alone"] as const
type Row = (typeof ROWS)[number]
const STALL_MS = 10
const MESSAGE_BYTES = 1024

interface Tally {
  calls: number
  cpu: number
  wait: number
  readonly p99s: Array<number>
  readonly windows: Array<Window>
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { number, value } = benchArgs(args)
  const rounds = Math.min(10, Math.round(number("--rounds", 3)))
  const windowMs = Math.min(60_000, number("--duration", 3) * 1000)
  const rate = Math.min(20_000, number("--rate", 1000))
  const log = (line: string) => process.stderr.write(`${line}\n`)
  // The sidecars run from dist/, as in the gRPC bench.
  execFileSync(process.execPath, [fileURLToPath(new URL("../scripts/build.ts", import.meta.url))], { stdio: "inherit" })
  const [direct, meshed] = await Promise.all([startGrpcCLoad(MESSAGE_BYTES), startGrpcCLoad(MESSAGE_BYTES)])
  if (typeof direct === "string" || typeof meshed === "string") {
    for (const load of [direct, meshed]) if (typeof load !== "string") await load.close()
    throw new Error(`grpcBeside needs the C generator: ${String(typeof direct === "string" ? direct : meshed)}`)
  }
  const dir = mkdtempSync(join(tmpdir(), "iip-mesh-grpc-beside-"))
  const spawned: Array<() => Promise<void>> = []
  const apps: Array<Child> = []
  const tallies = new Map<Row, Tally>(ROWS.map((row) => [row, { calls: 0, cpu: 0, wait: 0, p99s: [], windows: [] }]))
  try {
    apps.push(await spawnGrpcServer(undefined, STALL_MS, appRunOf(value, "1")), await spawnGrpcServer(undefined, STALL_MS, appRunOf(value, "2")))
    const [app1, app2] = apps as [Child, Child]
    const options = { cpuProfDir: undefined, sidecarNodeFlags: SHIPPED_NODE_FLAGS.split(" "), sidecarEnv: { ...parseEnv(SHIPPED_ENV), BENCH_STALL_MS: String(STALL_MS) }, sidecarMain: DEFAULT_SIDECAR_MAIN, sidecarLogDir: undefined }
    const { a } = await startGrpcSidecars(app2.port, dir, options, spawned)
    await direct.target(0, HOST, app1.port, undefined, METHODS.echo.path, MESSAGE_BYTES)
    await meshed.target(0, HOST, a.outbound.port, "echo", METHODS.echo.path, MESSAGE_BYTES)
    log(`grpcBeside: ${rounds} round(s) of ${windowMs / 1000} s per row at ${rate} calls/s; app 1 (pid ${app1.process.pid}) direct, app 2 (pid ${app2.process.pid}) via A (pid ${a.pid}) and B`)
    // Primed, not measured.
    await Promise.all([direct.run(0, rate, 2000), meshed.run(0, rate, 2000)])
    /** One window of `row` on `app`: its calls, the app's CPU and wait for a core over it, when it ran. */
    const measure = async (row: Row, app: Child, run: () => Promise<OpenSample>) => {
      const pid = app.process.pid!
      const cpu = usageOf(pid).cpu
      const wait = runQueueWaitOf(pid)
      const start = performance.timeOrigin + performance.now()
      const sample = await run()
      const tally = tallies.get(row)!
      tally.calls += sample.sent
      tally.cpu += usageOf(pid).cpu - cpu
      tally.wait += runQueueWaitOf(pid) - wait
      tally.p99s.push(sample.p99)
      tally.windows.push([start, performance.timeOrigin + performance.now()])
      if (sample.errors > 0) log(`  ${row}: ${sample.errors} failed calls (first: ${sample.firstError})`)
    }
    const beside = () => Promise.all([measure("direct beside", app1, () => direct.run(0, rate, windowMs)), measure("via B", app2, () => meshed.run(0, rate, windowMs))])
    const alone = () => measure("direct alone", app1, () => direct.run(0, rate, windowMs))
    for (let r = 0; r < rounds; r++) {
      // Alternated, so that neither always follows the other.
      if (r % 2 === 0) await beside().then(alone)
      else await alone().then(beside)
      log(`  round ${r + 1}: p99 ${ROWS.map((row) => `${row} ${ms(tallies.get(row)!.p99s.at(-1)!)}`).join(", ")} ms`)
    }
    // The probes report a stall a few ms after it ends.
    await new Promise((resolve) => setTimeout(resolve, 300))
  } finally {
    await direct.close()
    await meshed.close()
    for (const stop of spawned.reverse()) await stop()
    for (const app of apps) await killChild(app.process)
    rmSync(dir, { recursive: true, force: true })
  }
  const [app1, app2] = apps as [Child, Child]
  const rowOf = (row: Row) => {
    const t = tallies.get(row)!
    const app = row === "via B" ? app2 : app1
    const perK = 1000 / t.calls
    const gcs = app.gcPauses.filter((pause) => t.windows.some(([from, to]) => pause.startMs >= from && pause.startMs < to))
    const stalls = countStalls(app.stalls, t.windows)
    return {
      p99: median(t.p99s),
      cpuUs: (t.cpu * 1e6) / t.calls,
      waitUs: (t.wait * 1e6) / t.calls,
      gcPerK: gcs.length * perK,
      gcMsPerK: gcs.reduce((sum, pause) => sum + pause.ms, 0) * perK,
      fullGcPerK: gcs.filter((pause) => pause.major).length * perK,
      fullGcMsPerK: gcs.reduce((sum, pause) => sum + (pause.major ? pause.ms : 0), 0) * perK,
      stallsPerK: stalls.count * perK,
      stallMsPerK: stalls.totalMs * perK,
      stallCpuMsPerK: stalls.cpuMs * perK,
      stallGcMsPerK: stalls.gcMs * perK
    }
  }
  const rows = ROWS.map((row) => [row, rowOf(row)] as const)
  const f1 = (value: number) => (Number.isFinite(value) ? value.toFixed(1) : "-")
  process.stdout.write(
    [
      "",
      `grpc-js app at ${rate} calls/s      p99 ms  CPU us/call  wait for a core us/call  GC /1k calls (ms)  of them full (ms)  stalls > ${STALL_MS} ms /1k calls: ms (on CPU, GC)`,
      ...rows.map(([row, r]) =>
        `  ${pad(row, 30, true)} ${pad(ms(r.p99), 7)} ${pad(us(r.cpuUs), 12)} ${pad(us(r.waitUs), 24)} ${pad(`${r.gcPerK.toFixed(2)} (${f1(r.gcMsPerK)})`, 18)} ${pad(`${r.fullGcPerK.toFixed(2)} (${f1(r.fullGcMsPerK)})`, 18)}  ${r.stallsPerK.toFixed(2)}: ${f1(r.stallMsPerK)} (${f1(r.stallCpuMsPerK)}, ${f1(r.stallGcMsPerK)})`
      ),
      ""
    ].join("\n")
  )
  printSummary({
    bench: "grpcBeside",
    rounds,
    rate,
    rows: Object.fromEntries(rows.map(([row, r]) => [row, Object.fromEntries(Object.entries(r).map(([key, value]) => [key, round(value, 2)]))]))
  })
}
