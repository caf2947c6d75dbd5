// Effect RPC over three transports, one RpcGroup: IIP mesh mode (src/effect/rpc.ts), effect/rpc's
// own socket protocol (TCP, one connection) and its HTTP protocol (HTTP/1.1 keep-alive through
// undici), all with NDJSON serialization. Each server runs in a child process (this file with
// `--serve <kind>`), the RpcClients run here. Closed loop: N fibers each call Echo with a 1 KiB
// string, warm-up first, then a fixed window; every answer's length is checked. Cases: 64 in
// flight (throughput) and 1 in flight (latency). Rounds rotate the order; the table shows the
// median over rounds of req/s, p50, p99 and the CPU time client and server used per request
// (and the server's share of it, to tell which side an optimisation moved).
// The target of issue 18: IIP >= the socket protocol's throughput.
//
//   npm run -s bench -- rpc            3 rounds, 1 s warm-up + 3 s per case (~1 min)
//   npm run -s bench -- rpc --quick    1 round, 0.3 s warm-up + 1 s per case (~10 s)
// Flags: --rounds N, --duration S, --warmup S, --only iip,socket,http, --inflight 64,1 (the cases
//        run, e.g. one of them only to profile it), --cpu-prof-dir DIR (server children run with --cpu-prof),
//        --interleave MS: the transports of a case take turns in slices of MS ms (each measured after
//        a settling gap) for --duration S each, instead of one after the other, so that what else runs
//        on the machine weighs on each the same (on a shared machine the ratio moved 0.8x-1.0x from
//        round to round when run one after the other).
import { NodeHttpClient, NodeHttpServer, NodeSocket, NodeSocketServer } from "@effect/platform-node"
import { Context, Effect, Fiber, Latch, Layer, Schema } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { Rpc, RpcClient, RpcGroup, RpcSerialization, RpcServer } from "effect/rpc"
import { SocketServer } from "effect/socket"
import * as http from "node:http"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { IipClient } from "../src/effect/client.ts"
import { layerClientProtocol, layerServerProtocol } from "../src/effect/rpc.ts"
import { IipServer } from "../src/effect/server.ts"
import { benchArgs, printSummary } from "./args.ts"
import { type Child, killChild, serveChild, spawnServer } from "./children.ts"
import { usageOf } from "./sidecar/procStats.ts"

const HOST = "127.0.0.1"
const KINDS = ["iip", "socket", "http"] as const
type Kind = (typeof KINDS)[number]
const INFLIGHTS = [64, 1] as const
const PAYLOAD = "x".repeat(1024)
const quiet = { log: () => {} }

class BenchRpcs extends RpcGroup.make(Rpc.make("Echo", { payload: { text: Schema.String }, success: Schema.String })) {}
const handlers = BenchRpcs.toLayer({ Echo: ({ text }) => Effect.succeed(text) })
const serialization = RpcSerialization.layerNdjson

// ---------------------------------------------------------------------------------------------
// Servers (child side)

const startServer = (kind: Kind): Effect.Effect<number, unknown, import("effect/Scope").Scope> =>
  Effect.gen(function*() {
    if (kind === "iip") {
      const server = yield* Layer.build(IipServer.layer({ host: HOST, port: 0, ...quiet }))
      yield* Layer.build(RpcServer.layer(BenchRpcs).pipe(Layer.provide([handlers, layerServerProtocol()]), Layer.provide([Layer.succeedContext(server), serialization])))
      return Context.get(server, IipServer).address.port
    }
    if (kind === "socket") {
      const server = yield* Layer.build(NodeSocketServer.layer({ host: HOST, port: 0 }))
      yield* Layer.build(
        RpcServer.layer(BenchRpcs).pipe(Layer.provide([handlers, RpcServer.layerProtocolSocketServer]), Layer.provide([Layer.succeedContext(server), serialization]))
      )
      const address = Context.get(server, SocketServer.SocketServer).address
      return "port" in address ? address.port : 0
    }
    const app = HttpRouter.serve(RpcServer.layerHttp({ group: BenchRpcs, path: "/rpc", protocol: "http" }).pipe(Layer.provide([handlers, serialization])), {
      disableLogger: true,
      disableListenLog: true
    }).pipe(Layer.provideMerge(NodeHttpServer.layer(http.createServer, { host: HOST, port: 0 })))
    const context = yield* Layer.build(app)
    const address = Context.get(context, HttpServer.HttpServer).address
    return "port" in address ? address.port : 0
  })

const serve = (kind: string): Promise<void> => {
  if (!(KINDS as ReadonlyArray<string>).includes(kind)) throw new Error(`--serve: unknown kind ${kind}`)
  return serveChild(
    () =>
      new Promise((resolve, reject) => {
        Effect.runFork(
          startServer(kind as Kind).pipe(
            Effect.tap((port) => Effect.sync(() => resolve(port))),
            Effect.andThen(Effect.never),
            Effect.tapCause((cause) => Effect.sync(() => reject(new Error(String(cause))))),
            Effect.scoped
          )
        )
      })
  )
}

// ---------------------------------------------------------------------------------------------
// Clients (parent side)

const clientProtocol = (kind: Kind, port: number): Layer.Layer<RpcClient.Protocol, unknown> => {
  if (kind === "iip") return layerClientProtocol().pipe(Layer.provide([IipClient.layer({ host: HOST, port, requestTimeoutMs: 0, ...quiet }), serialization]))
  if (kind === "socket") return RpcClient.layerProtocolSocket().pipe(Layer.provide([NodeSocket.layerNet({ host: HOST, port }), serialization]))
  return RpcClient.layerProtocolHttp({ url: `http://${HOST}:${port}/rpc` }).pipe(Layer.provide([NodeHttpClient.layerUndici, serialization]))
}

interface Sample {
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly cpuUs: number
  /** The server process's share of cpuUs. */
  readonly serverUs: number
}

const percentile = (sorted: ReadonlyArray<number>, p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN

/** N fibers calling back to back: warm-up, then `measureMs` of recorded calls. */
const closedLoop = (call: Effect.Effect<string, unknown>, inflight: number, warmupMs: number, measureMs: number, serverPid: number) =>
  Effect.gen(function*() {
    let measuring = false
    let stop = false
    const latencies: Array<number> = []
    const worker = Effect.gen(function*() {
      while (!stop) {
        const started = performance.now()
        const answer = yield* call
        if (answer.length !== PAYLOAD.length) return yield* Effect.die(new Error(`echoed ${answer.length} chars, sent ${PAYLOAD.length}`))
        if (measuring) latencies.push(performance.now() - started)
      }
    })
    const fibers = yield* Effect.forEach(Array.from({ length: inflight }), () => Effect.forkChild(worker))
    yield* Effect.sleep(warmupMs)
    const clientBefore = process.cpuUsage()
    const serverBefore = usageOf(serverPid).cpu
    const started = performance.now()
    measuring = true
    yield* Effect.sleep(measureMs)
    measuring = false
    const elapsed = performance.now() - started
    const serverCpu = usageOf(serverPid).cpu - serverBefore
    const client = process.cpuUsage(clientBefore)
    const cpu = (client.user + client.system) / 1e6 + serverCpu
    stop = true
    yield* Fiber.joinAll(fibers)
    latencies.sort((a, b) => a - b)
    return { rps: latencies.length / (elapsed / 1000), p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), cpuUs: (cpu * 1e6) / latencies.length, serverUs: (serverCpu * 1e6) / latencies.length } satisfies Sample
  })

/**
 * The same closed loop for several transports at once, taking turns: each has `inflight` fibers
 * that run only while its latch is open; a turn opens one latch, waits `settleMs` (the previous
 * transport's calls finish, this one's fill the pipe), then measures for `sliceMs`. Turns go round
 * until each transport has been measured for `measureMs`.
 */
export const interleavedLoop = (calls: ReadonlyArray<Effect.Effect<string, unknown>>, serverPids: ReadonlyArray<number>, inflight: number, warmupMs: number, measureMs: number, sliceMs: number) =>
  Effect.gen(function*() {
    const settleMs = Math.min(30, Math.max(5, sliceMs / 4))
    const latches = yield* Effect.forEach(calls, () => Latch.make(false))
    let active = -1
    let stop = false
    const latencies: Array<Array<number>> = calls.map(() => [])
    const totals = calls.map(() => ({ requests: 0, elapsed: 0, clientCpu: 0, serverCpu: 0 }))
    let measuring = false
    const fibers: Array<Fiber.Fiber<void, unknown>> = []
    for (let k = 0; k < calls.length; k++) {
      const call = calls[k]!
      const latch = latches[k]!
      const worker = Effect.gen(function*() {
        while (!stop) {
          yield* latch.await
          if (stop) return
          const started = performance.now()
          const answer = yield* call
          if (answer.length !== PAYLOAD.length) return yield* Effect.die(new Error(`echoed ${answer.length} chars, sent ${PAYLOAD.length}`))
          if (measuring && active === k) latencies[k]!.push(performance.now() - started)
        }
      })
      for (let i = 0; i < inflight; i++) fibers.push(yield* Effect.forkChild(worker))
    }
    const turn = (k: number, ms: number, measure: boolean) =>
      Effect.gen(function*() {
        active = k
        yield* latches[k]!.open
        yield* Effect.sleep(settleMs)
        const counted = latencies[k]!.length
        const clientBefore = process.cpuUsage()
        const serverBefore = usageOf(serverPids[k]!).cpu
        const started = performance.now()
        measuring = measure
        yield* Effect.sleep(ms)
        measuring = false
        const total = totals[k]!
        if (measure) {
          const client = process.cpuUsage(clientBefore)
          total.elapsed += performance.now() - started
          total.requests += latencies[k]!.length - counted
          total.clientCpu += (client.user + client.system) / 1e6
          total.serverCpu += usageOf(serverPids[k]!).cpu - serverBefore
        }
        yield* latches[k]!.close
      })
    for (let k = 0; k < calls.length; k++) yield* turn(k, warmupMs / calls.length, false)
    for (let t = 0; t * sliceMs < measureMs; t++) for (let k = 0; k < calls.length; k++) yield* turn(t % 2 === 0 ? k : calls.length - 1 - k, sliceMs, true)
    stop = true
    for (const latch of latches) yield* latch.open
    yield* Fiber.joinAll(fibers)
    return totals.map((total, k): Sample => {
      const sorted = latencies[k]!.sort((a, b) => a - b)
      return {
        rps: total.requests / (total.elapsed / 1000),
        p50: percentile(sorted, 0.5),
        p99: percentile(sorted, 0.99),
        cpuUs: ((total.clientCpu + total.serverCpu) * 1e6) / total.requests,
        serverUs: (total.serverCpu * 1e6) / total.requests
      }
    })
  })

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? NaN
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { quick, number, value } = benchArgs(args)
  const rounds = number("--rounds", quick ? 1 : 3)
  const measureMs = number("--duration", quick ? 1 : 3) * 1000
  const warmupMs = number("--warmup", quick ? 0.3 : 1) * 1000
  const only = value("--only")?.split(",")
  const kinds = KINDS.filter((kind) => only === undefined || only.includes(kind))
  const inflightOnly = value("--inflight")?.split(",").map(Number)
  const inflights = INFLIGHTS.filter((inflight) => inflightOnly === undefined || inflightOnly.includes(inflight))
  if (inflights.length === 0) throw new Error(`--inflight: none of ${INFLIGHTS.join(",")}`)
  const children: Array<[Kind, Child]> = []
  for (const kind of kinds) children.push([kind, await spawnServer(import.meta.url, kind, value("--cpu-prof-dir"))])
  const samples = new Map<string, Array<Sample>>()
  const record = (round: number, kind: Kind, inflight: number, sample: Sample) => {
    const key = `${kind}/${inflight}`
    samples.set(key, [...(samples.get(key) ?? []), sample])
    process.stderr.write(
      `  round ${round + 1} ${kind.padEnd(6)} ${String(inflight).padStart(2)} in flight: ${Math.round(sample.rps)} req/s, ` +
        `p50 ${sample.p50.toFixed(3)} ms, p99 ${sample.p99.toFixed(3)} ms, CPU ${sample.cpuUs.toFixed(1)} us/req (server ${sample.serverUs.toFixed(1)})\n`
    )
  }
  const interleave = value("--interleave") === undefined ? undefined : number("--interleave", 100)
  try {
    for (let round = 0; round < rounds && interleave !== undefined; round++) {
      for (const inflight of inflights) {
        const turns = children.map((_, k) => children[(k + round) % children.length]!)
        const roundSamples = await Effect.runPromise(
          Effect.gen(function*() {
            const calls = yield* Effect.forEach(turns, ([kind, child]) =>
              Effect.gen(function*() {
                const client = yield* RpcClient.make(BenchRpcs).pipe(Effect.provide(yield* Layer.build(clientProtocol(kind, child.port))))
                return client.Echo({ text: PAYLOAD })
              }))
            return yield* interleavedLoop(calls, turns.map(([, child]) => child.process.pid!), inflight, warmupMs, measureMs, interleave)
          }).pipe(Effect.scoped)
        )
        roundSamples.forEach((sample, k) => record(round, turns[k]![0], inflight, sample))
      }
    }
    for (let round = 0; round < rounds && interleave === undefined; round++) {
      for (let k = 0; k < kinds.length; k++) {
        const [kind, child] = children[(k + round) % children.length]!
        const serverPid = child.process.pid!
        for (const inflight of inflights) {
          const sample = await Effect.runPromise(
            Effect.gen(function*() {
              const client = yield* RpcClient.make(BenchRpcs).pipe(Effect.provide(yield* Layer.build(clientProtocol(kind, child.port))))
              return yield* closedLoop(client.Echo({ text: PAYLOAD }), inflight, warmupMs, measureMs, serverPid)
            }).pipe(Effect.scoped)
          )
          record(round, kind, inflight, sample)
        }
      }
    }
  } finally {
    for (const [, child] of children) await killChild(child.process)
  }
  const summary: Record<string, Record<string, number>> = {}
  process.stdout.write(`Effect RPC Echo (1 KiB, NDJSON), median of ${rounds} round(s)${interleave === undefined ? "" : `, transports interleaved in ${interleave} ms slices`}\n`)
  process.stdout.write(`${"transport".padEnd(10)} ${"in flight".padStart(9)} ${"req/s".padStart(8)} ${"p50 ms".padStart(8)} ${"p99 ms".padStart(8)} ${"CPU us/req".padStart(11)} ${"of it server".padStart(12)}\n`)
  for (const kind of kinds) {
    for (const inflight of inflights) {
      const list = samples.get(`${kind}/${inflight}`) ?? []
      const row = { rps: median(list.map((s) => s.rps)), p50: median(list.map((s) => s.p50)), p99: median(list.map((s) => s.p99)), cpuUs: median(list.map((s) => s.cpuUs)), serverUs: median(list.map((s) => s.serverUs)) }
      summary[`${kind}_${inflight}`] = row
      process.stdout.write(
        `${kind.padEnd(10)} ${String(inflight).padStart(9)} ${Math.round(row.rps).toString().padStart(8)} ${row.p50.toFixed(3).padStart(8)} ${row.p99.toFixed(3).padStart(8)} ${row.cpuUs.toFixed(1).padStart(11)} ${row.serverUs.toFixed(1).padStart(12)}\n`
      )
    }
  }
  const iipOverSocket = (summary["iip_64"]?.rps ?? NaN) / (summary["socket_64"]?.rps ?? NaN)
  process.stdout.write(`IIP / socket throughput at 64 in flight: ${iipOverSocket.toFixed(2)} (target >= 1)\n`)
  printSummary({ bench: "rpc", rounds, ...(interleave === undefined ? {} : { interleaveMs: interleave }), ...summary, iipOverSocket })
}

// A server child: this file run directly with `--serve <kind>`.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--serve")
  serve(i === -1 ? "" : (process.argv[i + 1] ?? "")).catch((error: unknown) => {
    process.stderr.write(`rpc server failed: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(1)
  })
}
