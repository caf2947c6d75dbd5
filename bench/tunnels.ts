// What idle WebSocket tunnels cost each sidecar: a `ws` echo app (child process), sidecar B in front
// of it and sidecar A calling B (`node <shipped flags> dist/cli/main.js sidecar ...`, processes of
// their own, mTLS off), and `ws` clients here opening --tunnels WebSockets through A, each sending
// one message and getting its echo, then left idle. Each sidecar's VmRSS (/proc) and V8 heap used
// (its admin /metrics, nodejs_heap_size_used_bytes) are read before and after, once both have been
// idle 3 s (their idle GC: memoryRelease.ts), and printed with the load average, per 1,000 tunnels.
// Then one plain GET through A to the same service, its status and time: do ordinary requests still
// go with the tunnels open? `--default-caps` leaves the sidecars' tunnel and channel caps as shipped
// (otherwise raised to fit --tunnels): upgrades refused or failed are counted, the first one's
// answer printed, instead of ending the run.
// `--sidecar-main other/dist/cli/main.js` runs another build (A/B pairs: alternate the two).
//   node bench/tunnels.ts [--tunnels 1000] [--default-caps] [--sidecar-main PATH]
import { readFileSync } from "node:fs"
import * as http from "node:http"
import { loadavg } from "node:os"
import WebSocket, { WebSocketServer } from "ws"
import { killChild, listenOn, serveChild, spawnServer } from "./children.ts"
import { DEFAULT_SIDECAR_MAIN, SHIPPED_ENV, SHIPPED_NODE_FLAGS } from "./sidecar/options.ts"
import { type Sidecar, startSidecar } from "./sidecar/sidecars.ts"
import { HOST } from "./sidecar/request.ts"

const MB = 1024 * 1024

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name)
  return i === -1 ? undefined : process.argv[i + 1]
}

const serveApp = async (): Promise<number> => {
  const server = http.createServer((_req, res) => res.end("plain"))
  new WebSocketServer({ server }).on("connection", (ws) => ws.on("message", (data, binary) => ws.send(data, { binary })))
  return listenOn(server, HOST)
}

const rssOf = (pid: number): number => {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"))
  return Number(line?.split(/\s+/)[1] ?? 0) * 1024
}

const heapOf = async (sidecar: Sidecar): Promise<number> => {
  const body = await (await fetch(`http://${sidecar.admin}/metrics`)).text()
  const line = body.split("\n").find((l) => l.startsWith("nodejs_heap_size_used_bytes "))
  return Number(line?.split(" ").at(-1) ?? 0)
}

const idle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const measure = async (sidecars: ReadonlyArray<Sidecar>) => {
  // Both sidecars idle long enough for their idle collection (memoryRelease.ts: after 2 s).
  await idle(3000)
  return Promise.all(sidecars.map(async (s) => ({ rss: rssOf(s.pid), heap: await heapOf(s) })))
}

/** A plain GET through A to the echo service: its status, mesh error and time. */
const plainGet = (entry: { host: string; port: number }): Promise<string> =>
  new Promise((resolve) => {
    const started = performance.now()
    const took = () => `${(performance.now() - started).toFixed(0)} ms`
    const request = http.get({ host: entry.host, port: entry.port, path: "/plain", headers: { host: "echo" }, timeout: 60_000 }, (res) => {
      res.resume()
      res.on("end", () => resolve(`${res.statusCode} ${String(res.headers["x-iip-mesh-error"] ?? "")} in ${took()}`))
    })
    request.on("timeout", () => request.destroy(new Error("no answer within 60 s")))
    request.on("error", (error) => resolve(`failed (${error.message}) in ${took()}`))
  })

const openTunnel = (entry: { host: string; port: number }): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${entry.host}:${entry.port}/ws`, { headers: { host: "echo" } })
    ws.once("error", reject)
    // Refused: the status and the mesh's error header say why.
    const started = performance.now()
    ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade answered ${res.statusCode} ${String(res.headers["x-iip-mesh-error"])} after ${(performance.now() - started).toFixed(0)} ms`)))
    ws.once("open", () => ws.send("hello"))
    ws.once("message", () => resolve(ws))
  })

const main = async () => {
  const count = Number(arg("--tunnels") ?? 1000)
  const sidecarMain = arg("--sidecar-main") ?? DEFAULT_SIDECAR_MAIN
  const spawned: Array<() => Promise<void>> = []
  const app = await spawnServer(import.meta.url, "app", undefined)
  spawned.push(() => killChild(app.process))
  try {
    const options = { cpuProfDir: undefined, sidecarNodeFlags: (arg("--sidecar-node-flags") ?? SHIPPED_NODE_FLAGS).split(" ").filter((flag) => flag !== ""), sidecarEnv: Object.fromEntries([SHIPPED_ENV.split("=") as [string, string]]), sidecarMain, sidecarLogDir: undefined }
    const common = ["--outbound", `${HOST}:0`, "--inbound", `${HOST}:0`, "--admin", `${HOST}:0`, "--admin-control", `${HOST}:0`, "--drain-timeout", "2s", "--mtls", "off"]
    const caps = process.argv.includes("--default-caps") ? [] : ["--max-tunnels", String(Math.max(4096, count + 16)), "--max-tunnels-per-peer", String(Math.max(1024, count + 16)), "--max-app-connections", String(Math.max(8192, count + 64))]
    const b = await startSidecar("b", ["--service", "echo", "--app", `${HOST}:${app.port}`, ...common, ...caps], options, spawned)
    const a = await startSidecar("a", ["--service", "client", "--endpoint", `echo=${b.inbound}`, ...common, ...caps], options, spawned)
    // One tunnel first: the mesh connection, its first stream and the code paths warm, outside the figures.
    const warm = await openTunnel(a.outbound)
    const before = await measure([a, b])
    const sockets: Array<WebSocket> = []
    const failed: Array<string> = []
    for (let i = 0; i < count; i += 50) {
      const batch = await Promise.allSettled(Array.from({ length: Math.min(50, count - i) }, () => openTunnel(a.outbound)))
      for (const one of batch) one.status === "fulfilled" ? sockets.push(one.value) : failed.push((one.reason as Error).message)
    }
    const after = await measure([a, b])
    const per = 1000 / count
    const line = (name: string, i: number) => `${name}: rss ${(before[i]!.rss / MB).toFixed(1)} -> ${(after[i]!.rss / MB).toFixed(1)} MB (+${(((after[i]!.rss - before[i]!.rss) * per) / MB).toFixed(1)} MB per 1,000), heap ${(before[i]!.heap / MB).toFixed(1)} -> ${(after[i]!.heap / MB).toFixed(1)} MB (+${(((after[i]!.heap - before[i]!.heap) * per) / MB).toFixed(1)} MB per 1,000)`
    console.log(JSON.stringify({ tunnels: count, sidecarMain, load: loadavg().map((l) => l.toFixed(2)).join(" ") }))
    console.log(line("A (outbound)", 0))
    console.log(line("B (inbound)", 1))
    console.log(`${sockets.length} tunnels open, ${failed.length} failed${failed.length === 0 ? "" : ` (first: ${failed[0]})`}; a plain GET through A now: ${await plainGet(a.outbound)}`)
    // `--sidecar-node-flags "--heapsnapshot-signal=SIGUSR2 ..."`: each sidecar writes a heap snapshot with the tunnels open (into its cwd).
    if (process.argv.includes("--snapshot")) {
      for (const s of [a, b]) process.kill(s.pid, "SIGUSR2")
      await idle(15_000)
    }
    for (const ws of [warm, ...sockets]) ws.terminate()
  } finally {
    for (const stop of spawned.reverse()) await stop()
  }
}

if (process.argv.includes("--serve")) void serveChild(serveApp)
else await main()
