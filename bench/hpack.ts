// What our HPACK (src/h2) costs per header block, on blocks real peers send: a grpc-js client and
// server make unary calls (with a deadline, so grpc-timeout varies) through a TCP tap
// (test/helpers/h2Tap.ts) that keeps every header block: the request heads nghttp2 encoded in the
// client (dynamic table, Huffman), the response heads and trailers it encoded in the server.
//
// Per case, ns of CPU per block (this thread's; median and best over rounds, each round as many
// passes as fit in --duration):
//   decode requests     the captured request heads in order, a fresh decoder per pass (the first
//                       block is all literals, the rest mostly indexed, as on a live connection)
//   decode answers      the response heads and trailers in order, the same way
//   encode request      our encoder writing a decoded request head into a reused buffer
//   encode head/trailers  the same for a response head and for trailers
// and heap bytes per block for the decode passes (heapUsed across one pass after a full GC; node's
// own HPACK is inside nghttp2 and exposes no call to time, so there is no reference figure), and the
// block sizes: nghttp2's and ours for the same fields (ours sends no Huffman and no dynamic table).
//
//   npm run -s bench -- hpack            200 calls captured, 1 s per case, 5 rounds (~25 s)
//   npm run -s bench -- hpack --quick    0.2 s per case, 3 rounds
// Flags: --calls N, --duration S, --rounds N. The last stdout line is one JSON object.
import * as grpc from "@grpc/grpc-js"
import { performance } from "node:perf_hooks"
import { HpackDecoder } from "../src/h2/hpackDecoder.ts"
import { blockLengthBound, HpackEncoder } from "../src/h2/hpackEncoder.ts"
import { grpcThroughTap } from "../test/helpers/h2Tap.ts"
import { Cleanup, collectGarbage } from "../test/support/iipRaw.ts"
import { benchArgs, printSummary } from "./args.ts"
import { median, pad } from "./sidecar/format.ts"

interface Capture {
  readonly requests: ReadonlyArray<Buffer>
  readonly answers: ReadonlyArray<Buffer>
  readonly requestFields: ReadonlyArray<string>
  readonly headFields: ReadonlyArray<string>
  readonly trailerFields: ReadonlyArray<string>
}

/** Runs `calls` unary calls grpc-js to grpc-js through the tap and keeps their header blocks. */
const capture = async (calls: number): Promise<Capture> => {
  const cleanup = new Cleanup()
  try {
    const { tap, call } = await grpcThroughTap(cleanup)
    for (let i = 0; i < calls; i++) await call(Buffer.alloc(16), new grpc.Metadata())
    const last = (list: ReadonlyArray<unknown>, back: number): ReadonlyArray<string> => {
      const fields = list[list.length - back]
      if (!Array.isArray(fields)) throw new Error(`a captured block did not decode: ${String(fields)}`)
      return fields as ReadonlyArray<string>
    }
    return {
      requests: tap.decoded.blocksToServer.slice(),
      answers: tap.decoded.blocksToClient.slice(),
      requestFields: last(tap.decoded.toServer, 1),
      headFields: last(tap.decoded.toClient, 2),
      trailerFields: last(tap.decoded.toClient, 1)
    }
  } finally {
    await cleanup.run()
  }
}

const threadCpuUs = (): number => {
  const { user, system } = process.threadCpuUsage()
  return user + system
}

/**
 * ns of this thread's CPU per unit: `pass` does `units` units; as many passes as fit in `seconds`
 * of wall time. CPU time, not wall time: on a machine shared with other work, time spent
 * descheduled would count otherwise (wall-clock figures varied 3x between runs here).
 */
const timePasses = (seconds: number, units: number, pass: () => void): number => {
  let passes = 0
  const started = performance.now()
  const cpuStarted = threadCpuUs()
  while (performance.now() - started < seconds * 1000) {
    for (let i = 0; i < 16; i++) pass()
    passes += 16
  }
  return ((threadCpuUs() - cpuStarted) * 1e3) / (passes * units)
}

const decodeAll = (blocks: ReadonlyArray<Buffer>): void => {
  const decoder = new HpackDecoder()
  for (const block of blocks) if (!Array.isArray(decoder.decode(block))) throw new Error("a block did not decode")
}

/** Heap bytes per block of one decode pass, after a full GC (the median of 5 tries; a scavenge inside one would show as less). */
const heapPerBlock = (blocks: ReadonlyArray<Buffer>): number => {
  const tries: Array<number> = []
  for (let i = 0; i < 5; i++) {
    collectGarbage()
    const before = process.memoryUsage().heapUsed
    decodeAll(blocks)
    tries.push((process.memoryUsage().heapUsed - before) / blocks.length)
  }
  return median(tries)
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { quick, number } = benchArgs(args)
  const calls = number("--calls", 200)
  const seconds = number("--duration", quick ? 0.2 : 1)
  const rounds = number("--rounds", quick ? 3 : 5)
  const captured = await capture(calls)
  const out = Buffer.alloc(4096)
  const encoder = new HpackEncoder()
  const encodeCase = (fields: ReadonlyArray<string>) => () => {
    if (encoder.encode(fields, out, 0) < 0) throw new Error("no room")
  }
  const cases: ReadonlyArray<readonly [string, number, () => void]> = [
    ["decode requests", captured.requests.length, () => decodeAll(captured.requests)],
    ["decode answers", captured.answers.length, () => decodeAll(captured.answers)],
    ["encode request", 1, encodeCase(captured.requestFields)],
    ["encode head", 1, encodeCase(captured.headFields)],
    ["encode trailers", 1, encodeCase(captured.trailerFields)]
  ]
  const samples = new Map<string, Array<number>>(cases.map(([name]) => [name, []]))
  for (const [, units, pass] of cases) timePasses(seconds / 2, units, pass) // warm-up
  for (let round = 0; round < rounds; round++) for (const [name, units, pass] of cases) samples.get(name)!.push(timePasses(seconds, units, pass))
  const ns = Object.fromEntries(cases.map(([name]) => [name, Math.round(median(samples.get(name)!))]))
  const best = Object.fromEntries(cases.map(([name]) => [name, Math.round(Math.min(...samples.get(name)!))]))
  const heap = { requests: Math.round(heapPerBlock(captured.requests)), answers: Math.round(heapPerBlock(captured.answers)) }
  const ours = (fields: ReadonlyArray<string>): number => new HpackEncoder().encode(fields, Buffer.alloc(blockLengthBound(fields)), 0) - 1
  const sizes = {
    request: { nghttp2_first: captured.requests[0]!.length, nghttp2_later: captured.requests[captured.requests.length - 1]!.length, ours: ours(captured.requestFields) },
    head: { nghttp2_later: captured.answers[captured.answers.length - 2]!.length, ours: ours(captured.headFields) },
    trailers: { nghttp2_later: captured.answers[captured.answers.length - 1]!.length, ours: ours(captured.trailerFields) }
  }
  process.stdout.write(`${calls} grpc-js unary calls captured; request head: ${captured.requestFields.length / 2} fields\n`)
  for (const [name] of cases) process.stdout.write(`${pad(name, 18, true)} ${pad(String(ns[name]), 6)} ns/block (best ${best[name]})\n`)
  process.stdout.write(`heap per decoded block: requests ${heap.requests} B, answers ${heap.answers} B\n`)
  process.stdout.write(`block octets (nghttp2 first/later vs ours): ${JSON.stringify(sizes)}\n`)
  printSummary({ bench: "hpack", calls, seconds, rounds, ns_per_block: ns, best_ns_per_block: best, heap_bytes_per_block: heap, block_octets: sizes })
}
