// Echo over loopback: IIP (one connection, the callback `send` API) against Node's HTTP/1.1
// keep-alive, Node's http2 (one session) and a minimal length-prefixed protocol on raw node:net
// (one socket: the practical ceiling), in the same run, same payloads, same concurrency.
//
// Each server runs in its own child process (this file with `--serve <kind>`; it prints its port
// as one stdout line), the clients run in this process. Closed loop: exactly N requests in flight,
// warm-up first, then a fixed measuring window; every echoed length is checked (a wrong one aborts).
// Cases: 1 and 64 in flight x 1,024 and 14,410-byte payloads. `iip` is plain IIP (what a Go peer
// speaks); `iip-mesh` the same client and server in mesh mode (envelope, metadata, per-request
// cancel and deadline) at 1 KiB; `iip-promise` the `call()` Promise API at 64 in flight, 1 KiB. Rounds run the systems in rotating order, each odd round the previous one's backwards; the table shows
// the median over rounds of req/s, p50 and p99 (each round's percentiles come from its recorded
// per-request latencies), and the CPU time client and server used per request in the window
// (this process's, plus the server child's from /proc: on a shared machine a steadier figure than
// req/s). The last stdout line is one JSON object (see `summary` below).
//
//   npm run -s bench -- echo            full: 1 s warm-up + 3 s per case, 4 rounds (~4.5 min; even,
//                                       so each pair of systems runs as often in either order)
//   npm run -s bench -- echo --quick    1 round, 0.3 s warm-up + 1 s per case (~25 s)
// Flags: --rounds N, --duration S, --warmup S, --only iip,raw,...  (systems to run),
//        --inflight 1,64 and --payload 1024,14410 (a subset of the cases),
//        --iip-channels N (maxChannelsPerConnection, default 16),
//        --cpu-prof-dir DIR (children run with --cpu-prof into DIR; profile the client with
//        `node --cpu-prof bench/run.ts echo ...`).
import * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { IipClient } from "../src/iip/client.ts"
import { type Child, killChild, listenOn, serveChild, spawnServer } from "./children.ts"
import { IipServer } from "../src/iip/server.ts"
import { benchArgs, printSummary } from "./args.ts"
import { NO_USAGE, type Usage, usageOf } from "./sidecar/procStats.ts"

const HOST = "127.0.0.1"
const IIP_PATH = "/echo_benchmark"
const SERVER_KINDS = ["iip", "http1", "http2", "raw"] as const
type ServerKind = (typeof SERVER_KINDS)[number]
type System = ServerKind | "iip-promise" | "iip-mesh"
const PAYLOADS: ReadonlyArray<number> = [1024, 14410]
const INFLIGHTS: ReadonlyArray<number> = [1, 64]

// ---------------------------------------------------------------------------------------------
// Minimal length-prefixed framing (4-byte big-endian length + payload), used by both raw sides.

/** Incremental frame reader: any split of the stream, a view when a frame is whole in a chunk. */
class FrameReader {
  private readonly head = Buffer.alloc(4)
  private headFill = 0
  private body: Buffer | undefined = undefined
  private bodyFill = 0
  private readonly onFrame: (payload: Buffer) => void

  constructor(onFrame: (payload: Buffer) => void) {
    this.onFrame = onFrame
  }

  push(chunk: Buffer): void {
    let offset = 0
    const end = chunk.length
    while (offset < end) {
      if (this.body === undefined) {
        let length: number
        if (this.headFill === 0 && end - offset >= 4) {
          length = chunk.readUInt32BE(offset)
          offset += 4
          if (end - offset >= length) {
            const payload = chunk.subarray(offset, offset + length)
            offset += length
            this.onFrame(payload)
            continue
          }
        } else {
          const take = Math.min(4 - this.headFill, end - offset)
          chunk.copy(this.head, this.headFill, offset, offset + take)
          this.headFill += take
          offset += take
          if (this.headFill < 4) return
          this.headFill = 0
          length = this.head.readUInt32BE(0)
          if (length === 0) {
            this.onFrame(Buffer.alloc(0))
            continue
          }
        }
        this.body = Buffer.allocUnsafe(length)
        this.bodyFill = 0
      }
      const body = this.body
      const take = Math.min(body.length - this.bodyFill, end - offset)
      chunk.copy(body, this.bodyFill, offset, offset + take)
      this.bodyFill += take
      offset += take
      if (this.bodyFill === body.length) {
        this.body = undefined
        this.onFrame(body)
      }
    }
  }
}

/** Payloads at least this large are written by reference (writev) instead of being copied. */
const RAW_COPY_LIMIT = 8 * 1024

/**
 * Frames queued during a tick and written together (as the IIP writer batches): small ones copied
 * into one buffer, large ones by reference under cork (one writev), which measured 15-20% faster
 * than copying for 14 KB payloads, so the ceiling stays a ceiling.
 */
class FrameWriter {
  private queue: Array<Uint8Array> = []
  private bytes = 0
  private large = false
  private scheduled = false
  private readonly socket: net.Socket
  private readonly flushNow = () => this.flush()

  constructor(socket: net.Socket) {
    this.socket = socket
  }

  send(payload: Uint8Array): void {
    this.queue.push(payload)
    this.bytes += 4 + payload.length
    if (payload.length >= RAW_COPY_LIMIT) this.large = true
    if (!this.scheduled) {
      this.scheduled = true
      process.nextTick(this.flushNow)
    }
  }

  private flush(): void {
    this.scheduled = false
    const { queue, bytes, large } = this
    this.queue = []
    this.bytes = 0
    this.large = false
    if (this.socket.destroyed) return
    if (!large) {
      this.socket.write(this.copy(queue, 0, queue.length, bytes))
      return
    }
    this.socket.cork()
    let from = 0
    let copied = 0
    for (let i = 0; i <= queue.length; i++) {
      if (i < queue.length && queue[i]!.length < RAW_COPY_LIMIT) {
        copied += 4 + queue[i]!.length
        continue
      }
      if (i > from) this.socket.write(this.copy(queue, from, i, copied))
      if (i < queue.length) {
        const header = Buffer.allocUnsafe(4)
        header.writeUInt32BE(queue[i]!.length, 0)
        this.socket.write(header)
        this.socket.write(queue[i]!)
      }
      from = i + 1
      copied = 0
    }
    this.socket.uncork()
  }

  private copy(queue: ReadonlyArray<Uint8Array>, from: number, to: number, bytes: number): Buffer {
    const out = Buffer.allocUnsafe(bytes)
    let offset = 0
    for (let i = from; i < to; i++) {
      const payload = queue[i]!
      out.writeUInt32BE(payload.length, offset)
      out.set(payload, offset + 4)
      offset += 4 + payload.length
    }
    return out
  }
}

// ---------------------------------------------------------------------------------------------
// Servers (child process side).

const readBody = (stream: NodeJS.ReadableStream, done: (body: Buffer) => void): void => {
  const parts: Array<Buffer> = []
  let bytes = 0
  stream.on("data", (chunk: Buffer) => {
    parts.push(chunk)
    bytes += chunk.length
  })
  stream.on("end", () => done(parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes)))
}

const startServer = async (kind: ServerKind): Promise<number> => {
  switch (kind) {
    case "iip": {
      const server = new IipServer({ host: HOST, port: 0 })
      server.handle(IIP_PATH, (request) => request.data)
      await server.listen()
      return server.address.port
    }
    case "http1": {
      const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) =>
        readBody(req, (body) => {
          res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length })
          res.end(body)
        })
      )
      return listenOn(server, HOST)
    }
    case "http2": {
      // Large flow-control windows so 64 streams of 14 KB are not held back by the 64 KiB default.
      const server = http2.createServer({ settings: { initialWindowSize: 8 << 20 } })
      server.on("session", (session) => session.setLocalWindowSize(32 << 20))
      server.on("stream", (stream) =>
        readBody(stream, (body) => {
          stream.respond({ ":status": 200, "content-type": "application/octet-stream", "content-length": body.length })
          stream.end(body)
        })
      )
      return listenOn(server, HOST)
    }
    case "raw": {
      const server = net.createServer({ noDelay: true }, (socket) => {
        const writer = new FrameWriter(socket)
        const reader = new FrameReader((payload) => writer.send(payload))
        socket.on("data", (chunk: Buffer) => reader.push(chunk))
        socket.on("error", () => socket.destroy())
      })
      return listenOn(server, HOST)
    }
  }
}

const serve = async (kind: string): Promise<void> => {
  if (!(SERVER_KINDS as ReadonlyArray<string>).includes(kind)) throw new Error(`--serve: unknown kind ${kind}`)
  await serveChild(() => startServer(kind as ServerKind))
}

// ---------------------------------------------------------------------------------------------
// Clients (parent side). A driver sends one payload and reports the echoed length.

type Done = (error: unknown, length: number) => void

interface Driver {
  send(done: Done): void
  close(): void
}

const iipDriver = (port: number, payload: Buffer, channels: number, mesh: boolean): Driver => {
  const client = new IipClient({ host: HOST, port, maxConnections: 1, maxChannelsPerConnection: channels, idleChannelsAhead: 1, mesh })
  const options = { timeoutMs: 10_000 }
  return {
    send: (done) => client.send(IIP_PATH, payload, options, (error, data) => done(error, data === undefined ? -1 : data.length)),
    close: () => client.close()
  }
}

const iipPromiseDriver = (port: number, payload: Buffer, channels: number): Driver => {
  const client = new IipClient({ host: HOST, port, maxConnections: 1, maxChannelsPerConnection: channels, idleChannelsAhead: 1, mesh: false })
  return {
    send: (done) =>
      client.call(IIP_PATH, payload, { timeoutMs: 10_000 }).then(
        (data) => done(undefined, data.length),
        (error: unknown) => done(error, -1)
      ),
    close: () => client.close()
  }
}

const http1Driver = (port: number, payload: Buffer, inflight: number): Driver => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: inflight })
  const options: http.RequestOptions = {
    agent,
    host: HOST,
    port,
    method: "POST",
    path: "/echo",
    headers: { "content-type": "application/octet-stream", "content-length": payload.length }
  }
  return {
    send: (done) => {
      const req = http.request(options, (res) => {
        let bytes = 0
        res.on("data", (chunk: Buffer) => (bytes += chunk.length))
        res.on("end", () => done(res.statusCode === 200 ? undefined : new Error(`http1 status ${res.statusCode}`), bytes))
      })
      req.on("error", (error) => done(error, -1))
      req.end(payload)
    },
    close: () => agent.destroy()
  }
}

const http2Driver = (port: number, payload: Buffer): Driver => {
  const session = http2.connect(`http://${HOST}:${port}`, { settings: { initialWindowSize: 8 << 20 } })
  session.on("connect", () => session.setLocalWindowSize(32 << 20))
  session.on("error", () => {})
  const headers = { ":method": "POST", ":path": "/echo", "content-type": "application/octet-stream", "content-length": payload.length }
  return {
    send: (done) => {
      const stream = session.request(headers)
      let bytes = 0
      let status = 0
      stream.on("response", (h) => (status = Number(h[":status"])))
      stream.on("data", (chunk: Buffer) => (bytes += chunk.length))
      stream.on("end", () => done(status === 200 ? undefined : new Error(`http2 status ${status}`), bytes))
      stream.on("error", (error) => done(error, -1))
      stream.end(payload)
    },
    close: () => session.destroy()
  }
}

const rawDriver = (port: number, payload: Buffer): Driver => {
  const socket = net.connect({ host: HOST, port, noDelay: true })
  const writer = new FrameWriter(socket)
  const waiting: Array<Done> = []
  const reader = new FrameReader((frame) => waiting.shift()!(undefined, frame.length))
  socket.on("data", (chunk: Buffer) => reader.push(chunk))
  socket.on("error", (error) => {
    for (const done of waiting.splice(0)) done(error, -1)
  })
  return {
    send: (done) => {
      waiting.push(done)
      writer.send(payload)
    },
    close: () => socket.destroy()
  }
}

// ---------------------------------------------------------------------------------------------
// The closed loop.

interface Sample {
  readonly rps: number
  readonly p50: number
  readonly p99: number
  /** CPU µs of client and server per request completed in the window. */
  readonly cpuUs: number
  /**
   * Read and write system calls of client and server per request in the window: how many requests
   * a read or write carried. A round slow in CPU with more of them batched worse (the loaded
   * machine's scheduling); with as many, it ran slower code.
   */
  readonly syscalls: number
}

const percentile = (sorted: Float64Array, q: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!

/**
 * Keeps `inflight` requests going for `warmupMs + measureMs`; counts and times the requests that
 * complete inside the measuring window, and the CPU seconds and system calls `usageNow` gives across it. Rejects on any
 * error or wrong length, or if it stalls.
 */
const closedLoop = (driver: Driver, inflight: number, expected: number, warmupMs: number, measureMs: number, usageNow: () => Usage): Promise<Sample> =>
  new Promise((resolve, reject) => {
    let latencies = new Float64Array(1 << 16)
    let count = 0
    let outstanding = 0
    let finished = false
    /** CPU and system calls at the first answer inside the window, and at the first after it. */
    let usageStart: Usage | undefined
    let usageEnd: Usage | undefined
    const start = performance.now()
    const measureStart = start + warmupMs
    const measureEnd = measureStart + measureMs
    const watchdog = setTimeout(() => finish(new Error(`stalled: ${outstanding} requests still outstanding 15 s after the window`)), warmupMs + measureMs + 15_000)

    const finish = (error: Error | undefined): void => {
      if (finished) return
      finished = true
      clearTimeout(watchdog)
      if (error !== undefined) return reject(error)
      const sorted = latencies.subarray(0, count).sort()
      const start = usageStart ?? NO_USAGE
      const end = usageEnd ?? NO_USAGE
      resolve({
        rps: count / (measureMs / 1000),
        p50: percentile(sorted, 0.5),
        p99: percentile(sorted, 0.99),
        cpuUs: ((end.cpu - start.cpu) * 1e6) / count,
        syscalls: (end.reads + end.writes - start.reads - start.writes) / count
      })
    }

    const issue = (): void => {
      const sentAt = performance.now()
      outstanding++
      try {
        driver.send(onDone)
      } catch (error) {
        outstanding--
        finish(error instanceof Error ? error : new Error(String(error)))
      }
      function onDone(error: unknown, length: number): void {
        outstanding--
        if (finished) return
        if (error !== undefined) return finish(error instanceof Error ? error : new Error(String(error)))
        if (length !== expected) return finish(new Error(`wrong answer: echoed ${length} bytes, sent ${expected}`))
        const now = performance.now()
        if (now >= measureStart && now < measureEnd) {
          if (count === 0) usageStart = usageNow()
          if (count === latencies.length) {
            const bigger = new Float64Array(latencies.length * 2)
            bigger.set(latencies)
            latencies = bigger
          }
          latencies[count++] = now - sentAt
        }
        if (now >= measureEnd && usageEnd === undefined) usageEnd = usageNow()
        if (now < measureEnd) issue()
        else if (outstanding === 0) finish(undefined)
      }
    }
    for (let i = 0; i < inflight; i++) issue()
  })

// ---------------------------------------------------------------------------------------------
// Orchestration.

interface Options {
  readonly quick: boolean
  readonly rounds: number
  readonly warmupMs: number
  readonly measureMs: number
  readonly systems: ReadonlyArray<System>
  readonly inflights: ReadonlyArray<number>
  readonly payloads: ReadonlyArray<number>
  readonly iipChannels: number
  readonly cpuProfDir: string | undefined
}

const parseArgs = (args: ReadonlyArray<string>): Options => {
  const { quick, value, number } = benchArgs(args)
  const all: ReadonlyArray<System> = ["iip", "http1", "http2", "raw", "iip-promise", "iip-mesh"]
  const only = value("--only")
  const systems = only === undefined ? all : all.filter((s) => only.split(",").includes(s))
  if (systems.length === 0) throw new Error(`--only: none of ${all.join(", ")}`)
  const subset = (flag: string, all: ReadonlyArray<number>): ReadonlyArray<number> => {
    const v = value(flag)
    const picked = v === undefined ? all : all.filter((n) => v.split(",").map(Number).includes(n))
    if (picked.length === 0) throw new Error(`${flag}: none of ${all.join(", ")}`)
    return picked
  }
  return {
    quick,
    rounds: Math.min(20, Math.round(number("--rounds", quick ? 1 : 4))),
    warmupMs: Math.min(30_000, number("--warmup", quick ? 0.3 : 1) * 1000),
    measureMs: Math.min(60_000, number("--duration", quick ? 1 : 3) * 1000),
    systems,
    inflights: subset("--inflight", INFLIGHTS),
    payloads: subset("--payload", PAYLOADS),
    iipChannels: Math.round(number("--iip-channels", 16)),
    cpuProfDir: value("--cpu-prof-dir")
  }
}

interface Case {
  readonly system: System
  readonly inflight: number
  readonly payload: number
}

interface Row extends Case {
  readonly rps: number
  readonly p50_ms: number
  readonly p99_ms: number
  readonly cpu_us: number
  readonly syscalls: number
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const makePayload = (size: number): Buffer => {
  const payload = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) payload[i] = (i * 31 + 7) & 0xff
  return payload
}

/** The server child a system talks to. */
const serverOf = (system: System): ServerKind => (system === "iip-promise" || system === "iip-mesh" ? "iip" : system)

const makeDriver = (c: Case, ports: ReadonlyMap<ServerKind, number>, payload: Buffer, options: Options): Driver => {
  const port = (kind: ServerKind) => ports.get(kind)!
  switch (c.system) {
    case "iip":
      return iipDriver(port("iip"), payload, options.iipChannels, false)
    case "iip-mesh":
      return iipDriver(port("iip"), payload, options.iipChannels, true)
    case "iip-promise":
      return iipPromiseDriver(port("iip"), payload, options.iipChannels)
    case "http1":
      return http1Driver(port("http1"), payload, c.inflight)
    case "http2":
      return http2Driver(port("http2"), payload)
    case "raw":
      return rawDriver(port("raw"), payload)
  }
}

const pad = (text: string, width: number, left = false): string => (left ? text.padEnd(width) : text.padStart(width))
const fmtRatio = (value: number): string => (Number.isFinite(value) ? `${value.toFixed(2)}x` : "-")
const round = (value: number, digits: number): number => (Number.isFinite(value) ? Number(value.toFixed(digits)) : NaN)

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const options = parseArgs(args)
  const kinds = SERVER_KINDS.filter((k) => options.systems.some((s) => s === k || (s.startsWith("iip-") && k === "iip")))
  const cases: Array<Case> = []
  for (const inflight of options.inflights) {
    for (const payload of options.payloads) {
      for (const system of options.systems) {
        if (system === "iip-promise" && !(inflight === 64 && payload === 1024)) continue
        if (system === "iip-mesh" && payload !== 1024) continue
        cases.push({ system, inflight, payload })
      }
    }
  }
  const samples = new Map<Case, Array<Sample>>(cases.map((c) => [c, []]))
  const children: Array<Child> = []
  const log = (line: string) => process.stderr.write(`${line}\n`)
  log(
    `echo bench: node ${process.version}, ${options.rounds} round(s), warm-up ${options.warmupMs / 1000} s + ${options.measureMs / 1000} s per case, ` +
      `${cases.length} cases, iip channels ${options.iipChannels}`
  )
  try {
    for (const kind of kinds) children.push(await spawnServer(import.meta.url, kind, options.cpuProfDir))
    const ports = new Map(kinds.map((kind, i) => [kind, children[i]!.port] as const))
    for (let round = 0; round < options.rounds; round++) {
      for (const inflight of options.inflights) {
        for (const size of options.payloads) {
          const group = cases.filter((c) => c.inflight === inflight && c.payload === size)
          const payload = makePayload(size)
          // Each odd round runs the order of the round before backwards, and each pair of rounds
          // starts one system further on. A plain rotation kept each system right after the same one
          // (iip after iip-mesh in all rounds but the first), and the later of two systems sharing
          // this client process and a server child runs on code the earlier one warmed (full run at
          // bca842c: mesh / plain 1.11x in the round mesh ran later, 0.85x and 0.87x in the two it
          // ran first). With an even number of rounds each pair runs as often in either order.
          const offset = Math.floor(round / 2)
          for (let i = 0; i < group.length; i++) {
            const c = group[(round % 2 === 0 ? i + offset : group.length - 1 - i + offset) % group.length]!
            const driver = makeDriver(c, ports, payload, options)
            const serverPid = children[kinds.indexOf(serverOf(c.system))]!.process.pid ?? 0
            // Own CPU from cpuUsage (µs), not /proc's 10 ms ticks; the server's from /proc.
            const usageNow = (): Usage => {
              const own = process.cpuUsage()
              const mine = usageOf(process.pid)
              const server = usageOf(serverPid)
              return { cpu: (own.user + own.system) / 1e6 + server.cpu, mainCpu: mine.mainCpu + server.mainCpu, reads: mine.reads + server.reads, writes: mine.writes + server.writes }
            }
            try {
              const sample = await closedLoop(driver, c.inflight, size, options.warmupMs, options.measureMs, usageNow)
              samples.get(c)!.push(sample)
              log(
                `  round ${round + 1} ${pad(c.system, 11, true)} ${pad(String(inflight), 2)} in flight ${pad(String(size), 5)} B: ` +
                  `${Math.round(sample.rps)} req/s, p50 ${sample.p50.toFixed(3)} ms, p99 ${sample.p99.toFixed(3)} ms, CPU ${sample.cpuUs.toFixed(1)} us/req, ${sample.syscalls.toFixed(3)} syscalls/req`
              )
            } catch (error) {
              throw new Error(`${c.system}, ${inflight} in flight, ${size} B: ${error instanceof Error ? error.message : String(error)}`)
            } finally {
              driver.close()
            }
            await new Promise((resolve) => setTimeout(resolve, 50))
          }
        }
      }
    }
  } finally {
    await Promise.all(children.map((child) => killChild(child.process)))
  }

  const rows: Array<Row> = cases.map((c) => {
    const s = samples.get(c)!
    return { ...c, rps: median(s.map((x) => x.rps)), p50_ms: median(s.map((x) => x.p50)), p99_ms: median(s.map((x) => x.p99)), cpu_us: median(s.map((x) => x.cpuUs)), syscalls: median(s.map((x) => x.syscalls)) }
  })
  const find = (system: System, inflight: number, payload: number): Row | undefined =>
    rows.find((r) => r.system === system && r.inflight === inflight && r.payload === payload)
  const rps = (system: System, inflight = 64, payload = 1024): number => find(system, inflight, payload)?.rps ?? NaN

  const header = `${pad("system", 12, true)} ${pad("in flight", 9)} ${pad("payload", 8)} ${pad("req/s", 9)} ${pad("p50 ms", 8)} ${pad("p99 ms", 8)} ${pad("vs http1", 9)} ${pad("vs raw", 7)} ${pad("CPU us/req", 10)}`
  const lines = [header, "-".repeat(header.length)]
  let lastGroup = ""
  for (const r of rows) {
    const group = `${r.inflight}/${r.payload}`
    if (lastGroup !== "" && group !== lastGroup) lines.push("")
    lastGroup = group
    lines.push(
      `${pad(r.system, 12, true)} ${pad(String(r.inflight), 9)} ${pad(String(r.payload), 8)} ${pad(String(Math.round(r.rps)), 9)} ` +
        `${pad(r.p50_ms.toFixed(3), 8)} ${pad(r.p99_ms.toFixed(3), 8)} ` +
        `${pad(fmtRatio(r.rps / rps("http1", r.inflight, r.payload)), 9)} ${pad(fmtRatio(r.rps / rps("raw", r.inflight, r.payload)), 7)} ` +
        pad(r.cpu_us.toFixed(1), 10)
    )
  }
  process.stdout.write(`${lines.join("\n")}\n`)

  const iip1 = find("iip", 1, 1024)
  const raw1 = find("raw", 1, 1024)
  const summary = {
    bench: "echo",
    iip_rps: Math.round(rps("iip")),
    http1_rps: Math.round(rps("http1")),
    http2_rps: Math.round(rps("http2")),
    raw_rps: Math.round(rps("raw")),
    iip_vs_http1: round(rps("iip") / rps("http1"), 3),
    iip_vs_http2: round(rps("iip") / rps("http2"), 3),
    iip_vs_raw: round(rps("iip") / rps("raw"), 3),
    iip_vs_raw_14k: round(rps("iip", 64, 14410) / rps("raw", 64, 14410), 3),
    iip_p50_vs_raw_p50: round((iip1?.p50_ms ?? NaN) / (raw1?.p50_ms ?? NaN), 3),
    cases: rows.map((r) => ({
      system: r.system,
      inflight: r.inflight,
      payload: r.payload,
      rps: Math.round(r.rps),
      p50_ms: round(r.p50_ms, 4),
      p99_ms: round(r.p99_ms, 4),
      cpu_us_per_request: round(r.cpu_us, 1),
      syscalls_per_request: round(r.syscalls, 3)
    })),
    rounds: options.rounds,
    measure_s: options.measureMs / 1000,
    iip_channels: options.iipChannels,
    node: process.version,
    quick: options.quick
  }
  printSummary(summary)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--serve")
  if (i !== -1) {
    serve(process.argv[i + 1] ?? "").catch((error: unknown) => {
      process.stderr.write(`echo server failed: ${error instanceof Error ? error.message : String(error)}\n`)
      process.exit(1)
    })
  } else {
    main(process.argv.slice(2)).catch((error: unknown) => {
      process.stderr.write(`echo bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
      process.exit(1)
    })
  }
}
