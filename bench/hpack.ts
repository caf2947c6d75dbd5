// What our HPACK (src/h2) costs per header block, on blocks real peers send: a grpc-js client and
// server make unary calls (with a deadline, so grpc-timeout varies) through a TCP tap
// (test/helpers/h2Tap.ts) that keeps every header block: the request heads nghttp2 encoded in the
// client (dynamic table, Huffman), the response heads and trailers it encoded in the server.
//
// Per case, ns of CPU per block (this thread's; median and best over rounds, each round as many
// passes as fit in --duration), each pass one connection's blocks in order with a fresh decoder or
// encoder (the first block all literals, later ones mostly indexes, as on a live connection):
//   decode nghttp2 requests / answers   the captured blocks (answers: response heads and trailers)
//   decode our requests, static/dynamic the captured request lists as our encoder writes them,
//                                       without a dynamic table and with one (what indexing saves
//                                       a decoder; nghttp2's own decoding cannot be timed from here)
//   encode requests / answers, static/dynamic   our encoder writing the captured lists
// Then heap bytes per decoded block (heapUsed across one pass after a full GC; node's own HPACK is
// inside nghttp2 and exposes no call to time, so there is no reference figure), and the mean block
// octets of nghttp2's and ours (ours never Huffman-codes).
//
//   npm run -s bench -- hpack            200 calls captured, 1 s per case, 5 rounds (~50 s)
//   npm run -s bench -- hpack --quick    0.2 s per case, 3 rounds
// Flags: --calls N, --duration S, --rounds N. The last stdout line is one JSON object.
import * as grpc from "@grpc/grpc-js"
import { performance } from "node:perf_hooks"
import { HpackDecoder } from "../src/h2/hpackDecoder.ts"
import { HpackEncoder } from "../src/h2/hpackEncoder.ts"
import { grpcThroughTap } from "../test/helpers/h2Tap.ts"
import { Cleanup, collectGarbage } from "../test/support/iipRaw.ts"
import { benchArgs, printSummary } from "./args.ts"
import { median, pad } from "./sidecar/format.ts"

interface Capture {
  /** nghttp2's blocks, in order. */
  readonly requests: ReadonlyArray<Buffer>
  readonly answers: ReadonlyArray<Buffer>
  /** Their header lists (as our decoder gave them and node received them: hpack.peers.test.ts). */
  readonly requestLists: ReadonlyArray<ReadonlyArray<string>>
  readonly answerLists: ReadonlyArray<ReadonlyArray<string>>
}

/** Runs `calls` unary calls grpc-js to grpc-js through the tap and keeps their header blocks. */
const capture = async (calls: number): Promise<Capture> => {
  const cleanup = new Cleanup()
  try {
    const { tap, call } = await grpcThroughTap(cleanup)
    for (let i = 0; i < calls; i++) await call(Buffer.alloc(16), new grpc.Metadata())
    const lists = (decoded: ReadonlyArray<unknown>): ReadonlyArray<ReadonlyArray<string>> =>
      decoded.map((fields) => {
        if (!Array.isArray(fields)) throw new Error(`a captured block did not decode: ${String(fields)}`)
        return fields as ReadonlyArray<string>
      })
    return {
      requests: tap.decoded.blocksToServer.slice(),
      answers: tap.decoded.blocksToClient.slice(),
      requestLists: lists(tap.decoded.toServer),
      answerLists: lists(tap.decoded.toClient)
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
  const out = Buffer.alloc(64 * 1024)
  /** Encodes a connection's header lists in order with a fresh encoder; `keep` receives each block. */
  const encodeAll = (lists: ReadonlyArray<ReadonlyArray<string>>, maxTableSize: number, keep?: (block: Buffer) => void): void => {
    const encoder = new HpackEncoder({ maxTableSize })
    for (const fields of lists) {
      const end = encoder.encode(fields, out, 0)
      if (end < 0) throw new Error("no room")
      keep?.(Buffer.from(out.subarray(0, end)))
    }
  }
  const ours = (lists: ReadonlyArray<ReadonlyArray<string>>, maxTableSize: number): Array<Buffer> => {
    const blocks: Array<Buffer> = []
    encodeAll(lists, maxTableSize, (block) => blocks.push(block))
    return blocks
  }
  const staticRequests = ours(captured.requestLists, 0)
  const dynamicRequests = ours(captured.requestLists, 4096)
  const cases: ReadonlyArray<readonly [string, number, () => void]> = [
    ["decode nghttp2 requests", captured.requests.length, () => decodeAll(captured.requests)],
    ["decode nghttp2 answers", captured.answers.length, () => decodeAll(captured.answers)],
    ["decode our requests, static", staticRequests.length, () => decodeAll(staticRequests)],
    ["decode our requests, dynamic", dynamicRequests.length, () => decodeAll(dynamicRequests)],
    ["encode requests, static", captured.requestLists.length, () => encodeAll(captured.requestLists, 0)],
    ["encode requests, dynamic", captured.requestLists.length, () => encodeAll(captured.requestLists, 4096)],
    ["encode answers, static", captured.answerLists.length, () => encodeAll(captured.answerLists, 0)],
    ["encode answers, dynamic", captured.answerLists.length, () => encodeAll(captured.answerLists, 4096)]
  ]
  const samples = new Map<string, Array<number>>(cases.map(([name]) => [name, []]))
  for (const [, units, pass] of cases) timePasses(seconds / 2, units, pass) // warm-up
  for (let round = 0; round < rounds; round++) for (const [name, units, pass] of cases) samples.get(name)!.push(timePasses(seconds, units, pass))
  const ns = Object.fromEntries(cases.map(([name]) => [name, Math.round(median(samples.get(name)!))]))
  const best = Object.fromEntries(cases.map(([name]) => [name, Math.round(Math.min(...samples.get(name)!))]))
  const heap = {
    requests: Math.round(heapPerBlock(captured.requests)),
    answers: Math.round(heapPerBlock(captured.answers)),
    our_requests_static: Math.round(heapPerBlock(staticRequests)),
    our_requests_dynamic: Math.round(heapPerBlock(dynamicRequests))
  }
  const octets = (blocks: ReadonlyArray<Buffer>): number => Math.round(blocks.reduce((sum, block) => sum + block.length, 0) / blocks.length)
  const sizes = {
    requests: { nghttp2: octets(captured.requests), static: octets(staticRequests), dynamic: octets(dynamicRequests) },
    answers: { nghttp2: octets(captured.answers), static: octets(ours(captured.answerLists, 0)), dynamic: octets(ours(captured.answerLists, 4096)) }
  }
  process.stdout.write(`${calls} grpc-js unary calls captured; request head: ${captured.requestLists[0]!.length / 2} fields\n`)
  for (const [name] of cases) process.stdout.write(`${pad(name, 30, true)} ${pad(String(ns[name]), 6)} ns/block (best ${best[name]})\n`)
  process.stdout.write(`heap per decoded block, B: ${JSON.stringify(heap)}\n`)
  process.stdout.write(`mean block octets: ${JSON.stringify(sizes)}\n`)
  printSummary({ bench: "hpack", calls, seconds, rounds, ns_per_block: ns, best_ns_per_block: best, heap_bytes_per_block: heap, block_octets: sizes })
}
