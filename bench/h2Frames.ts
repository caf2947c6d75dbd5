// What the HTTP/2 frame layer (src/h2) costs a unary gRPC call on one app leg, in process: the
// reader fed a call's request frames as one chunk (HEADERS with a 120-byte block, DATA of a 5-byte
// gRPC prefix and a 100-byte message with END_STREAM) and the writer writing the answer's frames
// (HEADERS with a 30-byte block, DATA, trailers HEADERS with END_STREAM) and taking them as one
// turn's batch. Reports ns per call (median and best of rounds; the handler does nothing): on a
// shared machine the best round is the cost, the median shows the noise.
//
// Then where a DATA payload should stop being copied into the batch: one connection on loopback,
// one turn a write (HEADERS + DATA of --sizes bytes, flushed with writeTo), the payload copied into
// the batch (one write) or passed by reference (cork + two writes: one writev), alternated round by
// round; CPU µs per turn of this process (the server end reading is the same in both), best and
// median of rounds.
//
//   npm run -s bench -- h2Frames [--calls 50000] [--rounds 11] [--turns 10000] [--sizes 1024,2048,4096,8192,16384,65536]
import * as net from "node:net"
import { FrameReader, type FrameHandler } from "../src/h2/frameReader.ts"
import { FrameWriter } from "../src/h2/frameWriter.ts"
import { h2Frame as frame } from "../test/support/h2Raw.ts"
import { benchArgs, printSummary } from "./args.ts"

const cpuUs = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}
const median = (values: Array<number>): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
const best = (values: Array<number>): number => Math.min(...values)

let sink = 0
const handler: FrameHandler = {
  onData: (_s, data, flow) => void (sink += data.length + flow),
  onHeaders: (_s, block) => void (sink += block.length),
  onRstStream: () => {},
  onSetting: () => {},
  onSettingsEnd: () => {},
  onSettingsAck: () => {},
  onPing: () => {},
  onGoAway: () => {},
  onWindowUpdate: () => {},
  onError: (error) => {
    throw error
  }
}

/** ns per call for the reader: each call's request frames are one chunk on a new odd stream. */
const readerNs = (calls: number): number => {
  const reader = new FrameReader(handler, { role: "client" })
  reader.feed(frame(4, 0, 0, Buffer.alloc(0)))
  const message = Buffer.alloc(105, 1)
  const block = Buffer.alloc(120, 0x41)
  const chunks = Array.from({ length: 1024 }, (_, i) => Buffer.concat([frame(1, 4, 2 * i + 1, block), frame(0, 1, 2 * i + 1, message)]))
  const start = process.hrtime.bigint()
  for (let i = 0; i < calls; i++) reader.feed(chunks[i & 1023]!)
  return Number(process.hrtime.bigint() - start) / calls
}

/** ns per call for the writer: the answer's three frames, taken as one turn. */
const writerNs = (calls: number): number => {
  const writer = new FrameWriter()
  const message = Buffer.alloc(105, 1)
  const head = Buffer.alloc(30, 0x42)
  const trailers = Buffer.alloc(20, 0x43)
  const start = process.hrtime.bigint()
  for (let i = 0; i < calls; i++) {
    const id = 2 * (i & 0xffff) + 1
    writer.headers(id, head, false)
    writer.data(id, message, false)
    writer.headers(id, trailers, true)
    sink += writer.take()!.length
  }
  return Number(process.hrtime.bigint() - start) / calls
}

/** CPU µs per turn writing HEADERS + DATA of `bytes` over loopback, the payload copied or by reference. */
const perTurn = async (bytes: number, byReference: boolean, turns: number): Promise<number> => {
  const total = turns * (9 + 30 + 9 + bytes)
  let received = 0
  let allIn!: () => void
  const arrived = new Promise<void>((resolve) => (allIn = resolve))
  const server = net.createServer((socket) =>
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length
      if (received >= total) allIn()
    })
  )
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const client = await new Promise<net.Socket>((resolve, reject) => {
    const socket = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1", () => resolve(socket))
    socket.once("error", reject)
  })
  try {
    client.setNoDelay(true)
    const writer = new FrameWriter({ copyBelow: byReference ? 1 : Infinity, slabBytes: 262_144 })
    const head = Buffer.alloc(30, 0x42)
    const payload = Buffer.alloc(bytes, 0x61)
    const started = cpuUs()
    let sent = 0
    await new Promise<void>((resolve) => {
      const next = () => {
        if (sent === turns) return resolve()
        sent++
        writer.headers(1, head, false)
        writer.data(1, payload, false)
        if (writer.writeTo(client)) setImmediate(next)
        else client.once("drain", next)
      }
      next()
    })
    await arrived
    return (cpuUs() - started) / turns
  } finally {
    client.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { number, value } = benchArgs(args)
  const calls = number("--calls", 50_000)
  const rounds = number("--rounds", 11)
  const turns = number("--turns", 10_000)
  const sizes = (value("--sizes") ?? "1024,2048,4096,8192,16384,65536").split(",").map(Number)
  readerNs(calls)
  writerNs(calls)
  const reads: Array<number> = []
  const writes: Array<number> = []
  for (let r = 0; r < rounds; r++) {
    reads.push(readerNs(calls))
    writes.push(writerNs(calls))
  }
  process.stdout.write(
    `unary gRPC call frames (${rounds} rounds of ${calls}): reader best ${best(reads).toFixed(0)} / median ${median(reads).toFixed(0)} ns/call, ` +
      `writer best ${best(writes).toFixed(0)} / median ${median(writes).toFixed(0)} ns/call\n`
  )
  const copyUs: Record<string, [number, number]> = {}
  const referenceUs: Record<string, [number, number]> = {}
  await perTurn(1024, false, turns)
  for (const size of sizes) {
    const copied: Array<number> = []
    const referenced: Array<number> = []
    for (let r = 0; r < rounds; r++) {
      copied.push(await perTurn(size, false, turns))
      referenced.push(await perTurn(size, true, turns))
    }
    copyUs[size] = [best(copied), median(copied)]
    referenceUs[size] = [best(referenced), median(referenced)]
    process.stdout.write(
      `DATA ${String(size).padStart(6)} B: copied best ${best(copied).toFixed(2)} / median ${median(copied).toFixed(2)} µs/turn, ` +
        `by reference best ${best(referenced).toFixed(2)} / median ${median(referenced).toFixed(2)} µs/turn\n`
    )
  }
  printSummary({
    bench: "h2Frames",
    reader_ns_per_call: { best: best(reads), median: median(reads) },
    writer_ns_per_call: { best: best(writes), median: median(writes) },
    copy_us_per_turn_best_median: copyUs,
    reference_us_per_turn_best_median: referenceUs,
    sink: sink > 0
  })
}
