// What A's budget for the answers streaming back to its callers (--outbound-max-held-answer-bytes,
// mux/streams.ts GrantingPool) costs a download when many long-lived answers are open: an HTTP/1.1
// app (child process), sidecar B in front of it and sidecar A calling B (processes of their own,
// mTLS off). Each round, for each build (alternated): a 64 MiB download through A alone, then
// --feeds event-stream-like answers opened through A (each sends --feed-burst bytes at once, 0 by
// default, then 1 KiB every 100 ms; their callers here read all of it: kept up), then the same
// download beside them. Rows: `main` (the build --main-build names, when given: its dist/cli/main.js),
// `off` (this build, dist/, with a budget of 64 GiB, the most it takes: never reached) and `budget`
// (this build as shipped, 64 MiB). Prints MiB/s per run, the medians, each row's median over main's
// (or over off's without --main-build), and the median of A's answers' windows while the download
// ran (its gauge read every 50 ms, less the feeds' before it: about the download's window; none on
// main, which states 1 MiB for every answer). The last stdout line is one JSON object. Build this
// checkout first (npm run -s build); a quiet machine, or alternated runs, for figures worth comparing.
//   npm run -s bench -- answerBudget [--rounds 3] [--feeds 80] [--feed-burst 0] [--main-build /path/to/dist/cli/main.js]
import * as http from "node:http"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import { benchArgs, printSummary } from "./args.ts"
import { killChild, listenOn, serveChild, spawnServer } from "./children.ts"
import { median } from "./sidecar/format.ts"
import { DEFAULT_SIDECAR_MAIN, SHIPPED_ENV, SHIPPED_NODE_FLAGS } from "./sidecar/options.ts"
import { HOST } from "./sidecar/request.ts"
import { startSidecar } from "./sidecar/sidecars.ts"

const MiB = 1024 * 1024
const DOWNLOAD = 64 * MiB
const block = Buffer.alloc(64 * 1024, 0x62)

/** `/big`: 64 MiB as fast as the socket takes it; `/feed?burst=N`: N bytes at once, then 1 KiB every 100 ms until the caller goes. */
const serveApp = async (): Promise<number> => {
  const server = http.createServer((req, res) => {
    const big = req.url === "/big"
    res.writeHead(200, { "content-type": big ? "application/octet-stream" : "text/event-stream", ...(big ? { "content-length": String(DOWNLOAD) } : {}) })
    let sent = 0
    const limit = big ? DOWNLOAD : Math.min(64 * MiB, Number(new URL(req.url ?? "/", "http://app").searchParams.get("burst")) || 0)
    const pump = () => {
      while (sent < limit && !res.destroyed) {
        const piece = Math.min(block.length, limit - sent)
        sent += piece
        if (!res.write(block.subarray(0, piece))) return void res.once("drain", pump)
      }
      if (big) return void res.end()
      const tick = setInterval(() => res.write(block.subarray(0, 1024)), 100)
      res.once("close", () => clearInterval(tick))
    }
    pump()
  })
  server.keepAliveTimeout = 120_000
  return listenOn(server, HOST)
}

/** GET `path` through A, reading all of it; resolves with the bytes and ms once it ends (`/feed`: never, see `feed`). */
const download = (port: number): Promise<{ bytes: number; ms: number }> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    const agent = new http.Agent({ keepAlive: false })
    http.get({ host: HOST, port, path: "/big", headers: { host: "app" }, agent }, (res) => {
      let bytes = 0
      res.on("data", (data: Buffer) => (bytes += data.length))
      res.on("end", () => (bytes === DOWNLOAD ? resolve({ bytes, ms: performance.now() - started }) : reject(new Error(`download ended at ${bytes} bytes, status ${res.statusCode}`))))
      res.on("error", reject)
    }).on("error", reject)
  })

/** An event-stream caller that reads everything; resolves once its burst and a first 1 KiB came (the feed then trickles). */
const feed = (port: number, burst: number, open: Array<http.ClientRequest>): Promise<void> =>
  new Promise((resolve, reject) => {
    const request = http.get({ host: HOST, port, path: `/feed?burst=${burst}`, headers: { host: "app", accept: "text/event-stream" }, agent: false }, (res) => {
      let bytes = 0
      res.on("data", (data: Buffer) => {
        bytes += data.length
        if (bytes > burst) resolve()
      })
      res.on("error", () => {})
    })
    request.on("error", reject)
    open.push(request)
  })

/** A's gauge of its answers' windows (held and still owed: iip_mesh_outbound_answer_window_bytes); NaN on a build without it. */
const windowBytes = async (admin: string): Promise<number> => {
  const body = await (await fetch(`http://${admin}/metrics`)).text()
  const line = body.split("\n").find((l) => l.startsWith("iip_mesh_outbound_answer_window_bytes "))
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(" ") + 1))
}

/** `run`, with A's answers' windows read every 50 ms meanwhile, less `base`: the median of what they were (KiB). */
const sampled = async <A>(admin: string, base: number, run: Promise<A>): Promise<{ result: A; windowKiB: number }> => {
  const samples: Array<number> = []
  let done = false
  const poll = (async () => {
    while (!done) {
      samples.push((await windowBytes(admin)) - base)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })()
  try {
    return { result: await run, windowKiB: samples.length === 0 ? Number.NaN : median(samples) / 1024 }
  } finally {
    done = true
    await poll
  }
}

interface Row {
  readonly name: string
  readonly main: string
  readonly flags: ReadonlyArray<string>
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { value, number } = benchArgs(args)
  const rounds = Math.max(1, Math.round(number("--rounds", 3)))
  const feeds = Math.max(0, Math.round(number("--feeds", 80)))
  const burst = Math.max(0, Math.round(number("--feed-burst", 0)))
  const mainBuild = value("--main-build")
  const rows: ReadonlyArray<Row> = [
    ...(mainBuild === undefined ? [] : [{ name: "main", main: mainBuild, flags: [] }]),
    { name: "off", main: DEFAULT_SIDECAR_MAIN, flags: ["--outbound-max-held-answer-bytes", "64GiB"] },
    { name: "budget", main: DEFAULT_SIDECAR_MAIN, flags: [] }
  ]
  const results: Record<string, { alone: Array<number>; beside: Array<number>; aloneWindow: Array<number>; besideWindow: Array<number> }> = Object.fromEntries(rows.map((row) => [row.name, { alone: [], beside: [], aloneWindow: [], besideWindow: [] }]))
  const app = await spawnServer(import.meta.url, "app", undefined)
  try {
    for (let round = 0; round < rounds; round++) {
      // Alternated: each round starts with the next row, so no build always runs first.
      for (let i = 0; i < rows.length; i++) {
        const row = rows[(i + round) % rows.length]!
        const spawned: Array<() => Promise<void>> = []
        const open: Array<http.ClientRequest> = []
        try {
          const options = { cpuProfDir: undefined, sidecarNodeFlags: SHIPPED_NODE_FLAGS.split(" "), sidecarEnv: Object.fromEntries([SHIPPED_ENV.split("=") as [string, string]]), sidecarMain: row.main, sidecarLogDir: undefined }
          const common = ["--outbound", `${HOST}:0`, "--inbound", `${HOST}:0`, "--admin", `${HOST}:0`, "--admin-control", `${HOST}:0`, "--drain-timeout", "2s", "--mtls", "off"]
          const b = await startSidecar(`b-${row.name}`, ["--service", "app", "--app", `${HOST}:${app.port}`, ...common], options, spawned)
          const a = await startSidecar(`a-${row.name}`, ["--service", "client", "--endpoint", `app=${b.inbound}`, ...common, ...row.flags], options, spawned)
          const port = a.outbound.port
          // The connection and its code paths warm, outside the figures.
          await download(port)
          const { result: alone, windowKiB: aloneWindow } = await sampled(a.admin, 0, download(port))
          for (let f = 0; f < feeds; f += 20) await Promise.all(Array.from({ length: Math.min(20, feeds - f) }, () => feed(port, burst, open)))
          // The feeds past their bursts, trickling.
          await new Promise((resolve) => setTimeout(resolve, 1000))
          const { result: beside, windowKiB: besideWindow } = await sampled(a.admin, await windowBytes(a.admin), download(port))
          const rate = (run: { ms: number }) => DOWNLOAD / MiB / (run.ms / 1000)
          results[row.name]!.alone.push(rate(alone))
          results[row.name]!.beside.push(rate(beside))
          results[row.name]!.aloneWindow.push(aloneWindow)
          results[row.name]!.besideWindow.push(besideWindow)
          const kib = (v: number) => (Number.isNaN(v) ? "-" : v.toFixed(0))
          console.log(`round ${round + 1} ${row.name.padEnd(6)} alone ${rate(alone).toFixed(1).padStart(6)} MiB/s (window ${kib(aloneWindow)} KiB), beside ${feeds} feeds ${rate(beside).toFixed(1).padStart(6)} MiB/s (window ${kib(besideWindow)} KiB over the feeds') (load ${loadavg()[0]!.toFixed(2)})`)
        } finally {
          for (const request of open) request.destroy()
          for (const stop of spawned.reverse()) await stop()
        }
      }
    }
  } finally {
    await killChild(app.process)
  }
  const base = mainBuild === undefined ? "off" : "main"
  const summary: Record<string, unknown> = { rounds, feeds, burst, load: loadavg().map((l) => l.toFixed(2)).join(" ") }
  for (const row of rows) {
    const { alone, beside, aloneWindow, besideWindow } = results[row.name]!
    const ratio = (of: "alone" | "beside") => median(results[row.name]![of]) / median(results[base]![of])
    console.log(`${row.name.padEnd(6)} median alone ${median(alone).toFixed(1)} MiB/s (x${ratio("alone").toFixed(2)} of ${base}), beside ${feeds} feeds ${median(beside).toFixed(1)} MiB/s (x${ratio("beside").toFixed(2)})`)
    summary[row.name] = { alone: alone.map((v) => Number(v.toFixed(1))), beside: beside.map((v) => Number(v.toFixed(1))), aloneWindowKiB: aloneWindow.map((v) => Math.round(v)), besideWindowKiB: besideWindow.map((v) => Math.round(v)), aloneRatio: Number(ratio("alone").toFixed(2)), besideRatio: Number(ratio("beside").toFixed(2)) }
  }
  printSummary(summary)
}

// Run directly (`node bench/answerBudget.ts`, as spawnServer starts the app's process) rather than through bench/run.ts.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes("--serve")) void serveChild(serveApp)
  else await main(process.argv.slice(2))
}
