// Streaming throughput: one large body through one IIP channel in mesh mode (chunks of 64 KiB,
// per-channel flow control) against a raw node:net socket copying the same bytes, in the same
// run. Two directions: `upload` (client -> server, the server answers with the byte count) and
// `echo` (the server streams every byte back as it arrives). Each server runs in a child process.
//
//   npm run -s bench -- stream            256 MiB per case, 3 rounds
//   npm run -s bench -- stream --quick    64 MiB per case, 1 round
//   npm run -s bench -- stream --mixed    head-of-line blocking: 1 KiB calls at a fixed rate with
//                                         and without a bulk upload on the same connection
//                                         (streamMixed.ts; --seconds S, default 3, 2 with --quick;
//                                         --rate N calls/s, default 500)
// After the table, per direction, what the IIP case cost each process (median of the rounds): CPU
// ms per MB moved and full (mark-compact) collections, the server's read over its /stalls route;
// then what the reads made of slabs (src/mux/readSlabs.ts) in each process, the server's over /slabs.
// The last stdout line is one JSON object: MB/s per system and case, iip/raw ratios and those costs.
import * as net from "node:net"
import { fileURLToPath } from "node:url"
import { IipClient } from "../src/iip/client.ts"
import { IipServer, reply } from "../src/iip/server.ts"
import { benchArgs, printSummary } from "./args.ts"
import { type Child, killChild, listenOn, serveChild, spawnServer } from "./children.ts"
import { type Stalls, StallMeter } from "./stalls.ts"
import { localSlabs, runMixed, serverSlabs, serverStalls, slabsLine } from "./streamMixed.ts"

const HOST = "127.0.0.1"
const CHUNK = 1024 * 1024
const KINDS = ["iip", "raw"] as const
type Kind = (typeof KINDS)[number]
type Direction = "upload" | "echo"

/** Raw protocol: 1 mode byte ("u" upload, "e" echo), an 8-byte length, then the bytes. */
const startRaw = (): Promise<number> => {
  const server = net.createServer({ noDelay: true }, (socket) => {
    let header: Buffer | undefined
    let remaining = 0
    let echo = false
    socket.on("data", (chunk: Buffer) => {
      if (header === undefined) {
        header = chunk.subarray(0, 9)
        echo = header[0] === 0x65
        remaining = Number(header.readBigUInt64BE(1))
        chunk = chunk.subarray(9)
      }
      remaining -= chunk.length
      if (echo && chunk.length > 0 && !socket.write(chunk)) {
        socket.pause()
        socket.once("drain", () => socket.resume())
      }
      if (remaining === 0 && !echo) socket.write("done")
    })
  })
  return listenOn(server, HOST)
}

const startIip = async (): Promise<number> => {
  const server = new IipServer({ host: HOST, port: 0, log: () => {} })
  server.handle("/upload", async (request) => {
    // Leased reads: each chunk's memory is read into again once released (readSlabs.ts).
    const stream = request.context.stream
    if (stream === undefined) return String(request.data.length)
    let bytes = 0
    for await (const chunk of stream.leased()) {
      bytes += chunk.bytes.length
      chunk.release()
    }
    return String(bytes)
  })
  server.handle("/echo", (request) => reply(request.context.stream ?? request.data))
  server.handle("/echo1k", (request) => request.data)
  // The mixed bench reads this server's stalls per phase; the meter starts at the first read, so the plain cases run without it.
  let stalls: StallMeter | undefined
  server.handle("/stalls", () => JSON.stringify((stalls ??= new StallMeter().start()).take()))
  server.handle("/slabs", () => JSON.stringify(localSlabs()))
  await server.listen()
  return server.address.port
}

async function* source(total: number): AsyncIterable<Uint8Array> {
  const chunk = Buffer.alloc(CHUNK, 0x5a)
  for (let sent = 0; sent < total; sent += CHUNK) yield chunk.subarray(0, Math.min(CHUNK, total - sent))
}

const runIip = async (port: number, direction: Direction, total: number): Promise<number> => {
  const client = new IipClient({ host: HOST, port, maxConnections: 1, log: () => {} })
  try {
    const started = performance.now()
    const answer = await client.stream(direction === "upload" ? "/upload" : "/echo", source(total))
    let received = 0
    if (answer.stream !== undefined) {
      for await (const chunk of answer.stream.leased()) {
        received += chunk.bytes.length
        chunk.release()
      }
    } else received = answer.data.length
    const elapsed = performance.now() - started
    const ok = direction === "upload" ? Buffer.from(answer.data).toString() === String(total) || received === total : received === total
    if (!ok) throw new Error(`iip ${direction}: got ${received} bytes back, expected ${total}`)
    return elapsed
  } finally {
    client.close()
  }
}

const runRaw = (port: number, direction: Direction, total: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, noDelay: true })
    const started = performance.now()
    let received = 0
    socket.on("error", reject)
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length
      const done = direction === "upload" ? received >= 4 : received === total
      if (done) {
        socket.destroy()
        resolve(performance.now() - started)
      }
    })
    socket.once("connect", async () => {
      const header = Buffer.alloc(9)
      header[0] = direction === "upload" ? 0x75 : 0x65
      header.writeBigUInt64BE(BigInt(total), 1)
      socket.write(header)
      for await (const chunk of source(total)) {
        if (!socket.write(chunk)) await new Promise((r) => socket.once("drain", r))
      }
    })
  })

const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

const mainMixed = async (args: ReadonlyArray<string>): Promise<void> => {
  const { quick, number } = benchArgs(args)
  const seconds = number("--seconds", quick ? 2 : 3)
  const ratePerSecond = number("--rate", 500)
  const child = await spawnServer(import.meta.url, "iip", undefined)
  try {
    process.stderr.write(`stream bench --mixed: node ${process.version}, ${seconds} s per phase, ${ratePerSecond} calls/s\n`)
    const results = await runMixed(child.port, { seconds, ratePerSecond })
    printSummary({ bench: "stream-mixed", seconds, rate: ratePerSecond, ...results, node: process.version, quick })
  } finally {
    await killChild(child.process)
  }
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  if (args.includes("--mixed")) return mainMixed(args)
  const quick = args.includes("--quick")
  const total = (quick ? 64 : 256) * 1024 * 1024
  const rounds = quick ? 1 : 3
  const children = new Map<Kind, Child>()
  let control: IipClient | undefined
  const meter = new StallMeter()
  try {
    for (const kind of KINDS) children.set(kind, await spawnServer(import.meta.url, kind, undefined))
    const results: Record<string, number> = {}
    // What the IIP cases cost each process: CPU per MB moved and full collections (stalls.ts).
    control = new IipClient({ host: HOST, port: children.get("iip")!.port, maxConnections: 1, log: () => {} })
    meter.start()
    const costs: Array<{ readonly direction: Direction; readonly server: Stalls; readonly client: Stalls }> = []
    process.stderr.write(`stream bench: node ${process.version}, ${total / 1024 / 1024} MiB per case, ${rounds} round(s)\n`)
    console.log("system  direction      MB/s   vs raw")
    for (const direction of ["upload", "echo"] as const) {
      const rates = new Map<Kind, Array<number>>(KINDS.map((k) => [k, []]))
      for (let round = 0; round < rounds; round++) {
        for (const kind of KINDS) {
          const port = children.get(kind)!.port
          if (kind === "iip") {
            await serverStalls(control!)
            meter.take()
          }
          const ms = kind === "iip" ? await runIip(port, direction, total) : await runRaw(port, direction, total)
          rates.get(kind)!.push(total / 1e6 / (ms / 1000))
          if (kind === "iip") costs.push({ direction, server: await serverStalls(control!), client: meter.take() })
        }
      }
      const raw = median(rates.get("raw")!)
      for (const kind of KINDS) {
        const rate = median(rates.get(kind)!)
        results[`${kind}_${direction}_mbps`] = Math.round(rate)
        console.log(`${kind.padEnd(7)} ${direction.padEnd(9)} ${rate.toFixed(0).padStart(9)} ${(rate / raw).toFixed(2).padStart(7)}x`)
      }
      results[`iip_vs_raw_${direction}`] = Number((median(rates.get("iip")!) / raw).toFixed(3))
    }
    const mb = total / 1e6
    console.log("iip cost per round (median): CPU ms per MB, full (mark-compact) GCs and their ms, per process")
    console.log("direction  process  CPU ms/MB  major GCs  major ms")
    for (const direction of ["upload", "echo"] as const) {
      for (const side of ["server", "client"] as const) {
        const mine = costs.filter((c) => c.direction === direction).map((c) => c[side])
        const cpu = median(mine.map((s) => s.cpuMs / mb))
        const gcs = median(mine.map((s) => s.majorGcs))
        const gcMs = median(mine.map((s) => s.majorGcMs))
        console.log(`${direction.padEnd(10)} ${side.padEnd(8)} ${cpu.toFixed(3).padStart(9)} ${String(gcs).padStart(10)} ${gcMs.toFixed(1).padStart(9)}`)
        results[`iip_${direction}_${side}_cpu_ms_per_mb`] = Number(cpu.toFixed(3))
        results[`iip_${direction}_${side}_major_gcs`] = gcs
      }
    }
    console.log(slabsLine(await serverSlabs(control!), localSlabs()))
    console.log(JSON.stringify({ bench: "stream", bytes: total, rounds, ...results, node: process.version, quick }))
  } finally {
    control?.close()
    meter.stop()
    await Promise.all([...children.values()].map((child) => killChild(child.process)))
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--serve")
  const kind = process.argv[i + 1]
  if (i === -1 || (kind !== "iip" && kind !== "raw")) throw new Error("usage: stream.ts --serve iip|raw")
  void serveChild(kind === "iip" ? startIip : startRaw)
}
