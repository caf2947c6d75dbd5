// Mesh compression (PROTOCOL.md §12.1): what it saves on the wire and what it costs in speed.
//
// 1. Echo through one mesh connection over loopback, the server in a child process (configured to
//    compress its answers), 8 requests in flight for a fixed time per case. Payloads: JSON-like
//    text and random bytes, at 1 KiB, 16 KiB, 64 KiB (one packet each way) and 1 MiB (streamed,
//    compressed chunk by chunk). Each payload runs uncompressed (`off`: the client offers no
//    codec) beside zstd and gzip, in the same run, in rotating order. Per case: requests/s,
//    payload MB/s (one way), socket bytes per request (both ways, counted on the client's
//    socket), `ratio` = those bytes / the same payload's bytes with `off`, and `speed` =
//    throughput / `off`'s throughput.
// 2. The cost of one unit in this process, zstd and gzip at 1, 16 and 64 KiB of JSON-like text:
//    compress + decompress with the sync API, one at a time with the async API (its latency), and
//    8 at once with the async API (its throughput on the thread pool). This is why the session
//    compresses synchronously: units are at most 64 KiB.
//
//   npm run -s bench -- compression            2 s per case, 3 rounds (~3 min)
//   npm run -s bench -- compression --quick    0.5 s per case, 1 round (~20 s)
// Flags: --duration S, --rounds N, --inflight N. The last stdout line is one JSON object.
import type * as net from "node:net"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import * as zlib from "node:zlib"
import { IipClient } from "../src/iip/client.ts"
import { IipServer, reply } from "../src/iip/server.ts"
import { type Codec, Compression, unpack } from "../src/protocol/compression.ts"
import { benchArgs, printSummary } from "./args.ts"
import { killChild, serveChild, spawnServer } from "./children.ts"

const HOST = "127.0.0.1"
const KiB = 1024
const SIZES = [1 * KiB, 16 * KiB, 64 * KiB, 1024 * KiB]
const KINDS = ["json", "random"] as const
const MODES = ["off", "zstd", "gzip"] as const
type Kind = (typeof KINDS)[number]
type Mode = (typeof MODES)[number]

/** Text that compresses as JSON does: repeated keys, varying values (about 10:1 with zstd). */
const jsonLike = (bytes: number): Buffer => {
  const parts: Array<string> = []
  let size = 0
  for (let i = 0; size < bytes; i++) {
    const item = JSON.stringify({ id: i, sku: `SKU-${(i * 7919) % 100_000}`, name: `item ${i}`, price: ((i * 37) % 10_000) / 100, stock: (i * 13) % 97, tags: ["a", "b", i % 3 === 0 ? "sale" : "new"] })
    parts.push(item)
    size += item.length + 1
  }
  return Buffer.from(`[${parts.join(",")}]`).subarray(0, bytes)
}

/** Bytes from a xorshift generator: incompressible. */
const randomBytes = (bytes: number): Buffer => {
  const out = Buffer.allocUnsafe(bytes + 4)
  let x = 0x2545f491
  for (let i = 0; i < bytes; i += 4) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out.writeUInt32LE(x >>> 0, i)
  }
  return out.subarray(0, bytes)
}

const payloadOf = (kind: Kind, size: number): Buffer => (kind === "json" ? jsonLike(size) : randomBytes(size))

const startServer = async (): Promise<number> => {
  const server = new IipServer({ host: HOST, port: 0, log: () => {}, compression: {} })
  server.handle("/echo", (request) => reply(request.context.stream ?? request.data))
  await server.listen()
  return server.address.port
}

const clientFor = (port: number, mode: Mode): IipClient =>
  new IipClient({ host: HOST, port, maxConnections: 1, log: () => {}, compression: mode === "off" ? false : { codecs: [mode] } })

interface Sample {
  readonly rps: number
  readonly wireBytesPerRequest: number
}

/** `inflight` loops of /echo calls for `ms`; counts completed calls and the client socket's bytes. */
const closedLoop = async (client: IipClient, payload: Buffer, inflight: number, ms: number): Promise<Sample> => {
  await client.call("/echo", payload, { timeoutMs: 30_000 })
  const session = client.meshSessions[0]
  if (session === undefined) throw new Error("no mesh connection")
  const socket = session.connection.socket as net.Socket
  const bytesBefore = socket.bytesRead + socket.bytesWritten
  let count = 0
  const started = performance.now()
  const end = started + ms
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (performance.now() < end) {
        const answer = await client.call("/echo", payload, { timeoutMs: 30_000 })
        if (answer.length !== payload.length) throw new Error(`echoed ${answer.length} bytes, sent ${payload.length}`)
        count++
      }
    })
  )
  const elapsed = performance.now() - started
  return { rps: count / (elapsed / 1000), wireBytesPerRequest: (socket.bytesRead + socket.bytesWritten - bytesBefore) / count }
}

const median = (values: ReadonlyArray<number>): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

/** Microseconds per call of `run`, over about `ms`. */
const timeSync = (run: () => void, ms: number): number => {
  for (let i = 0; i < 20; i++) run()
  let n = 0
  const started = performance.now()
  while (performance.now() - started < ms) {
    run()
    n++
  }
  return ((performance.now() - started) * 1000) / n
}

const timeAsync = async (run: () => Promise<unknown>, parallel: number, ms: number): Promise<number> => {
  for (let i = 0; i < 5; i++) await run()
  let n = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (performance.now() - started < ms) {
        await run()
        n++
      }
    })
  )
  return ((performance.now() - started) * 1000) / n
}

const zstdAsync = promisify(zlib.zstdCompress)
const zstdAsyncDecompress = promisify(zlib.zstdDecompress)
const gzipAsync = promisify(zlib.gzip)
const gunzipAsync = promisify(zlib.gunzip)

interface UnitCost {
  readonly codec: Codec
  readonly size: number
  readonly sync_us: number
  readonly async_latency_us: number
  readonly async_8_parallel_us: number
}

const unitCosts = async (ms: number): Promise<Array<UnitCost>> => {
  const out: Array<UnitCost> = []
  for (const codec of ["zstd", "gzip"] as const) {
    for (const size of [1 * KiB, 16 * KiB, 64 * KiB]) {
      const data = jsonLike(size)
      const compression = new Compression(codec, 1)
      const packed = compression.pack(data)!
      const roundTrip = codec === "zstd"
        ? async () => zstdAsyncDecompress(await zstdAsync(data))
        : async () => gunzipAsync(await gzipAsync(data, { level: 1 }))
      out.push({
        codec,
        size,
        sync_us: timeSync(() => unpack(codec, compression.pack(data) ?? packed), ms),
        async_latency_us: await timeAsync(roundTrip, 1, ms),
        async_8_parallel_us: await timeAsync(roundTrip, 8, ms)
      })
    }
  }
  return out
}

const label = (size: number): string => (size >= 1024 * KiB ? `${size / 1024 / KiB} MiB` : `${size / KiB} KiB`)

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { quick, number } = benchArgs(args)
  const ms = number("--duration", quick ? 0.5 : 2) * 1000
  const rounds = Math.round(number("--rounds", quick ? 1 : 3))
  const inflight = Math.round(number("--inflight", 8))
  process.stderr.write(`compression bench: node ${process.version}, ${rounds} round(s), ${ms / 1000} s per case, ${inflight} in flight\n`)
  const child = await spawnServer(import.meta.url, "iip", undefined)
  const samples = new Map<string, Array<Sample>>()
  const key = (kind: Kind, size: number, mode: Mode) => `${kind}/${size}/${mode}`
  try {
    for (let round = 0; round < rounds; round++) {
      for (const kind of KINDS) {
        for (const size of SIZES) {
          const payload = payloadOf(kind, size)
          for (let i = 0; i < MODES.length; i++) {
            const mode = MODES[(i + round) % MODES.length]!
            const client = clientFor(child.port, mode)
            try {
              const sample = await closedLoop(client, payload, inflight, ms)
              const list = samples.get(key(kind, size, mode)) ?? []
              list.push(sample)
              samples.set(key(kind, size, mode), list)
              process.stderr.write(`  round ${round + 1} ${kind} ${label(size)} ${mode}: ${Math.round(sample.rps)} req/s, ${Math.round(sample.wireBytesPerRequest)} B/request\n`)
            } finally {
              client.close()
            }
          }
        }
      }
    }
  } finally {
    await killChild(child.process)
  }

  const cases = KINDS.flatMap((kind) =>
    SIZES.flatMap((size) => {
      const off = samples.get(key(kind, size, "off"))!
      const offRps = median(off.map((s) => s.rps))
      const offWire = median(off.map((s) => s.wireBytesPerRequest))
      return MODES.map((mode) => {
        const list = samples.get(key(kind, size, mode))!
        const rps = median(list.map((s) => s.rps))
        const wire = median(list.map((s) => s.wireBytesPerRequest))
        return { kind, size, mode, rps: Math.round(rps), mbps: Number(((rps * size) / 1e6).toFixed(1)), wire_bytes_per_request: Math.round(wire), ratio: Number((wire / offWire).toFixed(3)), speed_vs_off: Number((rps / offRps).toFixed(3)) }
      })
    })
  )
  const lines = ["payload  size     mode       req/s      MB/s   bytes/req   ratio   speed"]
  for (const c of cases) {
    lines.push(
      `${c.kind.padEnd(8)} ${label(c.size).padEnd(8)} ${c.mode.padEnd(6)} ${String(c.rps).padStart(9)} ${c.mbps.toFixed(1).padStart(9)} ${String(c.wire_bytes_per_request).padStart(11)} ${c.ratio.toFixed(3).padStart(7)} ${c.speed_vs_off.toFixed(2).padStart(6)}x`
    )
  }
  process.stdout.write(`${lines.join("\n")}\n\n`)

  const units = await unitCosts(quick ? 200 : 1000)
  const unitLines = ["codec  size      sync c+d us   async 1-at-a-time us   async 8 parallel us/op"]
  for (const u of units) {
    unitLines.push(`${u.codec.padEnd(6)} ${label(u.size).padEnd(8)} ${u.sync_us.toFixed(1).padStart(12)} ${u.async_latency_us.toFixed(1).padStart(22)} ${u.async_8_parallel_us.toFixed(1).padStart(23)}`)
  }
  process.stdout.write(`${unitLines.join("\n")}\n`)
  printSummary({
    bench: "compression",
    cases,
    unit_cost: units.map((u) => ({ ...u, sync_us: Number(u.sync_us.toFixed(1)), async_latency_us: Number(u.async_latency_us.toFixed(1)), async_8_parallel_us: Number(u.async_8_parallel_us.toFixed(1)) })),
    rounds,
    duration_s: ms / 1000,
    inflight,
    node: process.version,
    quick
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (!process.argv.includes("--serve")) throw new Error("usage: compression.ts --serve iip")
  void serveChild(startServer)
}
