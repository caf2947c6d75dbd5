// Issue 17's tail, the app's side: what the grpc-js app (bench/grpc.ts's server) allocates and keeps
// per unary call, by the request head it is sent. The gRPC bench's slowest meshed calls met the app's
// own GC pauses; the app is fed by the C generator (direct) and by sidecar B (meshed), whose heads
// differ. Per head, a fresh app with node's --trace-gc-nvp takes --calls calls (default 40,000) of
// 1 KiB from a node:http2 client in this process, --concurrency at a time (default 8), after 3,000
// not counted; its collections over the counted calls give KiB allocated, surviving a scavenge and
// promoted (moved to the old space, freed only by a full GC) per call, and scavenges, full GCs and
// pause ms per 1,000 calls (pauses on a busy machine include waits for a core). Heads:
//   c            what the C generator sends (grpcOpenLoop.c): content-type, te
//   b            what sidecar B sent the app at b952f8c (captured from node:http2's raw headers):
//                x-forwarded-for, -proto, -host, x-iip-mesh-client-id, a fresh traceparent per
//                call, and grpc-timeout (B writes the time left, 15 s by default, when the caller
//                sent none)
//   b-timeout    b without grpc-timeout; timeout: c with it (grpc-js arms a timer per call for it)
// The heads take turns, --rounds times (default 2). The counts are sums over the collections after
// the uncounted calls: the first one's bytes include some of them and those after the last are
// left out, so a figure is good to about one young generation (64 MiB by default) over the calls.
//
//   npm run -s bench -- grpcAppHeads [--calls 40000] [--concurrency 8] [--rounds 2] [--app-node-flags "--max-semi-space-size=2"]
// The last stdout line is one JSON object.
import { randomBytes } from "node:crypto"
import * as http2 from "node:http2"
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { benchArgs, printSummary } from "./args.ts"
import { killChild } from "./children.ts"
import { spawnGrpcServer } from "./grpc.ts"
import { METHODS } from "./grpcApp.ts"
import { grpcFrame } from "./grpcLean.ts"
import { nvpGcOf, nvpPerCall, type NvpPerCall } from "./sidecar/gcNvp.ts"
import { median, pad, round, sleep } from "./sidecar/format.ts"
import { HOST } from "./sidecar/request.ts"

const UNCOUNTED = 3000
const MESSAGE = grpcFrame(Buffer.alloc(1024, 0x63))
const meshPairs = (): Record<string, string> => ({
  "x-forwarded-for": "127.0.0.1",
  "x-forwarded-proto": "http",
  "x-forwarded-host": "echo",
  "x-iip-mesh-client-id": "spiffe://iip-mesh.local/svc/client",
  traceparent: `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`
})
const HEADS: Record<string, () => Record<string, string>> = {
  c: () => ({}),
  b: () => ({ ...meshPairs(), "grpc-timeout": "14962m" }),
  "b-timeout": meshPairs,
  timeout: () => ({ "grpc-timeout": "14962m" })
}

/** One unary call with `pairs` beside the C generator's head; rejects unless the message comes back whole. */
const call = (session: http2.ClientHttp2Session, pairs: Record<string, string>): Promise<void> =>
  new Promise((resolve, reject) => {
    const stream = session.request({ ":method": "POST", ":path": METHODS.echo.path, ":authority": "echo", "content-type": "application/grpc", te: "trailers", ...pairs })
    let bytes = 0
    let status: string | undefined
    stream.on("data", (chunk: Buffer) => (bytes += chunk.length))
    stream.on("trailers", (trailers) => (status = String(trailers["grpc-status"])))
    stream.on("error", reject)
    stream.on("end", () => (bytes === MESSAGE.length && status === "0" ? resolve() : reject(new Error(`echo: ${bytes} bytes back, grpc-status ${status}`))))
    stream.end(MESSAGE)
  })

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { number, value } = benchArgs(args)
  const calls = Math.min(1_000_000, Math.round(number("--calls", 40_000)))
  const concurrency = Math.min(256, Math.round(number("--concurrency", 8)))
  const rounds = Math.min(10, Math.round(number("--rounds", 2)))
  const appFlags = (value("--app-node-flags") ?? "").split(" ").filter((flag) => flag !== "")
  const log = (line: string) => process.stderr.write(`${line}\n`)
  const dir = mkdtempSync(join(tmpdir(), "iip-mesh-grpc-app-heads-"))
  const results = new Map<string, Array<NvpPerCall>>(Object.keys(HEADS).map((head) => [head, []]))
  log(`grpcAppHeads: ${rounds} round(s), ${calls} calls per head, ${concurrency} at a time, app node flags ${appFlags.join(" ") || "none"}`)
  try {
    for (let r = 0; r < rounds; r++) {
      const order = Object.keys(HEADS)
      if (r % 2 === 1) order.reverse()
      for (const head of order) {
        const logPath = join(dir, `app-${head}-${r}.log`)
        const app = await spawnGrpcServer(undefined, undefined, { nodeFlags: ["--trace-gc-nvp", ...appFlags], logPath })
        const session = http2.connect(`http://${HOST}:${app.port}`)
        session.on("error", () => {})
        try {
          let next = 0
          const loop = async (until: number) => {
            while (next < until) {
              next++
              await call(session, HEADS[head]!())
            }
          }
          const run = (until: number) => Promise.all(Array.from({ length: concurrency }, () => loop(until)))
          await run(UNCOUNTED)
          // The uncounted calls' collections are in the log by now (a pipe and a write away).
          await sleep(100)
          const from = statSync(logPath).size
          await run(UNCOUNTED + calls)
          await sleep(100)
          const gcs = readFileSync(logPath).subarray(from).toString("utf8").split("\n").flatMap((line) => nvpGcOf(line) ?? [])
          results.get(head)!.push(nvpPerCall(gcs, calls))
        } finally {
          session.destroy()
          await killChild(app.process)
        }
        const last = results.get(head)!.at(-1)!
        log(`  round ${r + 1} ${pad(head, 10, true)} ${last.allocatedKiB.toFixed(1)} KiB allocated, ${last.promotedKiB.toFixed(2)} promoted a call; ${last.scavengesPerK.toFixed(2)} scavenges, ${last.fullPerK.toFixed(2)} full per 1,000`)
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  const medians = [...results].map(([head, samples]) => {
    const of = (key: keyof NvpPerCall) => median(samples.map((s) => s[key]))
    return [head, { allocatedKiB: of("allocatedKiB"), survivedKiB: of("survivedKiB"), promotedKiB: of("promotedKiB"), scavengesPerK: of("scavengesPerK"), fullPerK: of("fullPerK"), pauseMsPerK: of("pauseMsPerK") }] as const
  })
  process.stdout.write(
    [
      "",
      `grpc-js app, per unary call (median of ${rounds})   KiB allocated  survived  promoted   scavenges /1k  full GCs /1k  pause ms /1k`,
      ...medians.map(([head, m]) => `  ${pad(head, 44, true)} ${pad(m.allocatedKiB.toFixed(1), 13)} ${pad(m.survivedKiB.toFixed(2), 9)} ${pad(m.promotedKiB.toFixed(2), 9)} ${pad(m.scavengesPerK.toFixed(2), 15)} ${pad(m.fullPerK.toFixed(2), 13)} ${pad(m.pauseMsPerK.toFixed(1), 13)}`),
      ""
    ].join("\n")
  )
  printSummary({ bench: "grpcAppHeads", calls, concurrency, rounds, appNodeFlags: appFlags.join(" "), heads: Object.fromEntries(medians.map(([head, m]) => [head, Object.fromEntries(Object.entries(m).map(([k, v]) => [k, round(v, 2)]))])) })
}
