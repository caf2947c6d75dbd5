// What our HTTP/2 connection layer (src/h2/h2Connection.ts) costs a relayed unary gRPC call, against
// node:http2 doing the same: a relay in this process (server role in, client role out, as the
// sidecar's gRPC legs will be) between a node:http2 caller and a node:http2 echo app, both in a child
// process so this process's CPU is the relay's alone. Rounds alternate ours / node's over the same
// two connections' worth of work; reports CPU µs per call of this process (best and median of
// rounds: on a shared machine the best round is the cost, the median shows the noise), and the
// scavenges of this process per 1,000 calls (a proxy for the bytes each call allocates).
//
//   npm run -s bench -- h2Conn [--calls 5000] [--rounds 7] [--concurrency 16] [--bytes 100]
import { spawn } from "node:child_process"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { constants as perfConstants, PerformanceObserver } from "node:perf_hooks"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { startRelay } from "../test/helpers/h2ConnLegs.ts"
import { grpcMessage } from "../test/support/grpcRaw.ts"
import { Cleanup } from "../test/support/iipRaw.ts"
import { benchArgs, printSummary } from "./args.ts"

const PATH = "/demo.Echo/Unary"

/** The child: an echo app on node:http2, and on each `run <port> <calls> <concurrency> <bytes>` line a caller. */
const child = async (): Promise<void> => {
  const app = http2.createServer()
  app.on("stream", (stream) => {
    stream.on("error", () => {})
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
    stream.pipe(stream)
  })
  await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
  process.stdout.write(`${(app.address() as net.AddressInfo).port}\n`)
  const sessions = new Map<number, http2.ClientHttp2Session>()
  for await (const line of createInterface({ input: process.stdin })) {
    const [, port, calls, concurrency, bytes] = line.split(" ").map(Number) as [number, number, number, number, number]
    let session = sessions.get(port)
    if (session === undefined) {
      session = http2.connect(`http://127.0.0.1:${port}`)
      sessions.set(port, session)
    }
    const body = grpcMessage(Buffer.alloc(bytes, 0x61))
    let started = 0
    const one = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": PATH, "content-type": "application/grpc", te: "trailers" })
        req.on("data", () => {})
        req.on("error", reject)
        req.on("close", () => resolve())
        req.end(body)
      })
    const worker = async (): Promise<void> => {
      while (started < calls) {
        started++
        await one()
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    process.stdout.write("done\n")
  }
  app.close()
  for (const session of sessions.values()) session.close()
}

/** The same relay on node:http2: each request goes on as a stream of one session to the app, heads and trailers as they are. */
const startNodeRelay = async (cleanup: Cleanup, target: number): Promise<number> => {
  const upstream = http2.connect(`http://127.0.0.1:${target}`)
  cleanup.add(() => upstream.close())
  const relay = http2.createServer()
  relay.on("stream", (inbound, headers) => {
    inbound.on("error", () => {})
    const { ":method": method, ":path": path, ":authority": _a, ":scheme": _s, ...rest } = headers
    const out = upstream.request({ ":method": method, ":path": path, ...rest })
    out.on("error", () => inbound.close(http2.constants.NGHTTP2_CANCEL))
    out.on("response", (head) => {
      const { ":status": status, ...fields } = head
      inbound.respond({ ":status": status, ...fields }, { waitForTrailers: true })
    })
    let trailers: http2.IncomingHttpHeaders = {}
    out.on("trailers", (t) => (trailers = t))
    inbound.on("wantTrailers", () => inbound.sendTrailers(trailers as http2.OutgoingHttpHeaders))
    inbound.pipe(out)
    out.pipe(inbound)
  })
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => relay.close(() => resolve())))
  return (relay.address() as net.AddressInfo).port
}

const cpuUs = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}
const median = (values: Array<number>): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { number } = benchArgs(args)
  const calls = number("--calls", 5000)
  const rounds = number("--rounds", 7)
  const concurrency = number("--concurrency", 16)
  const bytes = number("--bytes", 100)
  const cleanup = new Cleanup()
  const worker = spawn(process.execPath, [fileURLToPath(import.meta.url), "--h2conn-child"], { stdio: ["pipe", "pipe", "inherit"] })
  cleanup.add(() => worker.kill())
  const lines = createInterface({ input: worker.stdout })[Symbol.asyncIterator]()
  const next = async (): Promise<string> => (await lines.next()).value as string
  try {
    const app = Number(await next())
    const ours = (await startRelay(cleanup, app)).port
    const node = await startNodeRelay(cleanup, app)
    let scavenges = 0
    const gcs = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) if ((entry as unknown as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) scavenges++
    })
    gcs.observe({ entryTypes: ["gc"] })
    cleanup.add(() => gcs.disconnect())
    const scavengesPer1k: Record<"ours" | "node", Array<number>> = { ours: [], node: [] }
    const run = async (port: number, n: number, which?: "ours" | "node"): Promise<number> => {
      const before = cpuUs()
      const gcBefore = scavenges
      worker.stdin.write(`run ${port} ${n} ${concurrency} ${bytes}\n`)
      if ((await next()) !== "done") throw new Error("the caller failed")
      const us = (cpuUs() - before) / n
      // GC entries arrive a little later: counted as of the next round's start (close enough over thousands of calls).
      await new Promise<void>((resolve) => setImmediate(resolve))
      if (which !== undefined) scavengesPer1k[which].push(((scavenges - gcBefore) * 1000) / n)
      return us
    }
    // Warm both paths (JIT, connections) before measuring.
    await run(ours, calls)
    await run(node, calls)
    const results: Record<"ours" | "node", Array<number>> = { ours: [], node: [] }
    for (let r = 0; r < rounds; r++) {
      const order: Array<"ours" | "node"> = r % 2 === 0 ? ["ours", "node"] : ["node", "ours"]
      for (const which of order) results[which].push(await run(which === "ours" ? ours : node, calls, which))
    }
    const row = (which: "ours" | "node") => ({ best: Math.min(...results[which]), median: median(results[which]), scavenges_per_1k_calls: scavengesPer1k[which].reduce((a, b) => a + b, 0) / rounds })
    const summary = { calls, rounds, concurrency, bytes, ours_us_per_call: row("ours"), node_us_per_call: row("node") }
    process.stdout.write(`relay CPU µs per unary call (this process only; caller and app in a child)\n`)
    for (const [name, r] of [["ours (src/h2)", summary.ours_us_per_call], ["node:http2", summary.node_us_per_call]] as const)
      process.stdout.write(`  ${name.padEnd(14)}  best ${r.best.toFixed(1)}  median ${r.median.toFixed(1)}  scavenges/1k calls ${r.scavenges_per_1k_calls.toFixed(2)}\n`)
    printSummary(summary)
  } finally {
    worker.stdin.end()
    await cleanup.run()
  }
}

if (process.argv.includes("--h2conn-child")) await child()
