// Bytes allocated per request in each sidecar (issue 14), load-independent: the app, sidecar B and
// sidecar A as in the sidecar bench (bench/sidecar: real processes, mTLS, the shipped flags),
// `--connections` keep-alive clients send the bench's request (POST /echo, 1 KiB) `--warmup-requests`
// times, then each sidecar's allocation probe (sidecar/allocProbe.mjs) samples every allocation over
// `--requests` more. Prints per sidecar: bytes per request, scavenges and mark-compacts per 1,000
// requests, and the top allocation sites in bytes per request. `--mode untraced` runs --tracing false.
// `--kind grpc` (issue 17): the gRPC bench's meshed path instead (grpc.ts's set-up: a grpc-js
// client on one channel -> A -> B -> grpc-js app over h2c), unary Echo calls of --message-bytes
// (default 1 KiB), `--connections` calls outstanding at a time on that channel, every answer checked.
// `--site-depth N` names each site with N - 1 of its callers (who reaches node's internals);
// `--keep-profiles DIR` keeps each sidecar's whole sampled profile there (alloc-<pid>.heapprofile).
// `--survivors` counts only what outlived a scavenge (promoted, or alive at the end): the bytes per
// request that fill the old generation and so set how often a sidecar stops for a full GC.
import type * as grpc from "@grpc/grpc-js"
import * as http from "node:http"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { benchArgs, printSummary } from "./args.ts"
import { killChild, spawnServer } from "./children.ts"
import { APP_FILE } from "./sidecar/app.ts"
import { writeBenchCredentials } from "./sidecar/credentials.ts"
import { type Meshed, type Options, parseArgs as parseSidecarArgs } from "./sidecar/options.ts"
import { makePayload, PATH, SERVICE_HOST } from "./sidecar/request.ts"
import { startSidecarPair } from "./sidecar/sidecars.ts"
import { meshedClient, spawnGrpcServer, startGrpcSidecars, unarySend } from "./grpc.ts"

const PROBE = `--import=${fileURLToPath(new URL("./sidecar/allocProbe.mjs", import.meta.url))}`

interface ProbeReport {
  readonly bytes: number
  readonly scavenges: number
  readonly markCompacts: number
  readonly sites: ReadonlyArray<readonly [string, number]>
}

/** Waits for `file` to appear (the probe writes it once it has acted on the signal), for at most 30 s. */
const fileAppears = async (file: string): Promise<void> => {
  const deadline = Date.now() + 30_000
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`the allocation probe did not write ${file} within 30 s`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** `count` calls of `one`, `concurrency` at a time. */
const sendAll = async (one: () => Promise<void>, count: number, concurrency: number): Promise<void> => {
  let left = count
  const loop = async () => {
    while (left > 0) {
      left--
      await one()
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop))
}

/** One POST /echo on a keep-alive connection of `agent`. */
const httpRequest = (agent: http.Agent, port: number): (() => Promise<void>) => {
  const payload = makePayload()
  return () =>
    new Promise<void>((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, agent, method: "POST", path: PATH, headers: { host: SERVICE_HOST, "content-length": payload.length } }, (res) => {
        if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`))
        res.on("end", resolve).resume()
      })
      req.on("error", reject)
      req.end(payload)
    })
}

/** One unary Echo call on `client`, its answer checked (grpc.ts's unarySend). */
const grpcCall = (client: grpc.Client, messageBytes: number): (() => Promise<void>) => {
  const send = unarySend(client, Buffer.alloc(messageBytes, 0x63))
  return () => new Promise<void>((resolve, reject) => send((error) => (error === undefined ? resolve() : reject(new Error(error)))))
}

/** The processes of one kind's path: the app, A and B, and the call the clients make. */
interface Path {
  readonly a: number
  readonly b: number
  readonly call: () => Promise<void>
  readonly close: () => void
}

const startPath = async (kind: "http" | "grpc", mode: Meshed, connections: number, messageBytes: number, dir: string, options: Options, spawned: Array<() => Promise<void>>): Promise<Path> => {
  if (kind === "grpc") {
    const app = await spawnGrpcServer(undefined)
    spawned.push(() => killChild(app.process))
    const { a, b } = await startGrpcSidecars(app.port, dir, options, spawned)
    const client = meshedClient(a)
    return { a: a.pid, b: b.pid, call: grpcCall(client, messageBytes), close: () => client.close() }
  }
  const app = await spawnServer(APP_FILE, "app", undefined)
  spawned.push(() => killChild(app.process))
  const credentials = (await writeBenchCredentials(dir, ["echo", "client"])) as Record<"echo" | "client", string>
  const pair = await startSidecarPair(mode, app.port, options, spawned, credentials)
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections })
  return { a: pair.a.pid, b: pair.b.pid, call: httpRequest(agent, pair.entry.port), close: () => agent.destroy() }
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { value, number } = benchArgs(args)
  const requests = Math.round(number("--requests", 50_000))
  const warmup = Math.round(number("--warmup-requests", 20_000))
  const connections = Math.min(64, Math.round(number("--connections", 8)))
  const mode = value("--mode") === "untraced" ? "untraced" : "meshed"
  const kind = value("--kind") === "grpc" ? "grpc" : "http"
  if (kind === "grpc" && mode !== "meshed") throw new Error("--kind grpc runs the meshed path only (grpc.ts's set-up)")
  const messageBytes = Math.min(4 * 1024 * 1024, Math.max(4, Math.round(number("--message-bytes", 1024))))
  const sidecarOptions = parseSidecarArgs(args)
  const keep = value("--keep-profiles")
  const dir = mkdtempSync(join(tmpdir(), "iip-alloc-"))
  const options = { ...sidecarOptions, sidecarNodeFlags: [...sidecarOptions.sidecarNodeFlags, PROBE], sidecarEnv: { ...sidecarOptions.sidecarEnv, ALLOC_PROBE_DIR: dir, ALLOC_PROBE_DEPTH: String(Math.round(number("--site-depth", 1))), ...(args.includes("--survivors") ? { ALLOC_PROBE_SURVIVORS: "1" } : {}), ...(keep === undefined ? {} : { ALLOC_PROBE_KEEP: keep }) } }
  const spawned: Array<() => Promise<void>> = []
  let path: Path | undefined
  try {
    path = await startPath(kind, mode, connections, messageBytes, dir, options, spawned)
    const sidecars = { a: path.a, b: path.b }
    await sendAll(path.call, warmup, connections)
    for (const pid of Object.values(sidecars)) process.kill(pid, "SIGUSR2")
    for (const pid of Object.values(sidecars)) await fileAppears(join(dir, `alloc-${pid}.started`))
    await sendAll(path.call, requests, connections)
    for (const pid of Object.values(sidecars)) process.kill(pid, "SIGUSR2")
    const summary: Record<string, unknown> = { kind, mode, requests, warmup, connections, ...(kind === "grpc" ? { messageBytes } : {}) }
    const unit = kind === "grpc" ? "call" : "request"
    for (const [name, pid] of Object.entries(sidecars)) {
      const file = join(dir, `alloc-${pid}.json`)
      await fileAppears(file)
      const report = JSON.parse(readFileSync(file, "utf8")) as ProbeReport
      const perRequest = report.bytes / requests
      process.stdout.write(
        `sidecar ${name}: ${perRequest.toFixed(0)} B/${unit}, ${((report.scavenges * 1000) / requests).toFixed(2)} scavenges and ${((report.markCompacts * 1000) / requests).toFixed(2)} mark-compacts per 1,000 ${unit}s\n`
      )
      for (const [site, bytes] of report.sites.slice(0, Math.round(number("--top", 25)))) process.stdout.write(`  ${(bytes / requests).toFixed(0).padStart(6)} B  ${site}\n`)
      summary[`${name}_bytes_per_request`] = Math.round(perRequest)
      summary[`${name}_scavenges_per_1000`] = (report.scavenges * 1000) / requests
    }
    printSummary(summary)
  } finally {
    path?.close()
    for (const stop of spawned.reverse()) await stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
