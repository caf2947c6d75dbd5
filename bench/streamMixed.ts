// `bench -- stream --mixed`: head-of-line blocking on one mesh connection. 1 KiB calls at a fixed
// rate (open loop: each sent on its tick whatever the others do) on a connection that also
// carries a bulk upload on another channel, against the same calls on an idle connection, and the
// upload's bandwidth against the same upload alone. Three phases of the same length, each on a
// fresh client of one connection to the stream bench's iip server child:
//   idle    calls only              -> their p50/p99
//   alone   the upload only         -> its MB/s
//   mixed   calls and upload        -> the calls' p50/p99 and the upload's MB/s
// Also printed: the hidden cost of per-channel scheduling, the most bulk chunks the client's writer
// held queued (in lanes) during the mixed phase and what a lane costs; and per phase what stopped
// each side's event loop (stalls.ts), to tell a p99 made of queueing from one made of stalls.
// And the read side's memory (src/mux/readSlabs.ts): slabs made and read into again, per process.
import { IipClient } from "../src/iip/client.ts"
import { freeSlabCount, slabBytes, slabCounts } from "../src/mux/readSlabs.ts"
import { type Stalls, StallMeter, stallsHeader, stallsRow } from "./stalls.ts"

const HOST = "127.0.0.1"
const KiB = 1024
const PIECE = 1024 * KiB

export interface MixedOptions {
  readonly seconds: number
  readonly ratePerSecond: number
}

interface Calls {
  readonly latencies: Array<number>
  readonly failed: number
}

const percentile = (values: ReadonlyArray<number>, q: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

const newClient = (port: number) => new IipClient({ host: HOST, port, maxConnections: 1, maxChannelsPerConnection: 8, idleChannelsAhead: 4, log: () => {} })

/** Opens the client's channels ahead (a mesh connection grows them on the next requests). */
const warm = async (client: IipClient): Promise<void> => {
  for (let i = 0; i < 50; i++) await client.call("/echo1k", Buffer.alloc(KiB), { timeoutMs: 5000 })
}

/** 1 KiB calls, one every 1/rate s, for `seconds`; resolves when the last has its answer. */
const fixedRateCalls = (client: IipClient, options: MixedOptions): Promise<Calls> =>
  new Promise((resolve) => {
    const latencies: Array<number> = []
    let failed = 0
    let sent = 0
    let settled = 0
    const total = Math.round(options.seconds * options.ratePerSecond)
    const body = Buffer.alloc(KiB, 0x61)
    const started = performance.now()
    const tick = () => {
      // Catch up to the schedule: a late tick sends what was due, so the rate holds.
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * options.ratePerSecond) + 1)
      for (; sent < due; sent++) {
        const at = performance.now()
        client.send("/echo1k", body, { timeoutMs: 30_000 }, (error, answer) => {
          if (error === undefined && answer!.length === KiB) latencies.push(performance.now() - at)
          else failed++
          if (++settled === total) resolve({ latencies, failed })
        })
      }
      if (sent < total) setTimeout(tick, 1)
    }
    tick()
  })

/** Uploads 1 MiB pieces until `stop()` holds; resolves with MB/s. */
const upload = async (client: IipClient, stop: () => boolean): Promise<number> => {
  const piece = Buffer.alloc(PIECE, 0x5a)
  let bytes = 0
  async function* source(): AsyncIterable<Uint8Array> {
    while (!stop()) {
      bytes += PIECE
      yield piece
    }
  }
  const started = performance.now()
  const answer = await client.stream("/upload", source(), { timeoutMs: 120_000 })
  const seconds = (performance.now() - started) / 1000
  if (Number(Buffer.from(answer.data).toString()) !== bytes) throw new Error(`upload: server counted ${Buffer.from(answer.data).toString()} bytes, sent ${bytes}`)
  return bytes / 1e6 / seconds
}

/** The server's stalls since it was last asked (the first ask starts its meter). */
export const serverStalls = async (client: IipClient): Promise<Stalls> => JSON.parse(Buffer.from(await client.call("/stalls", "", { timeoutMs: 5000 })).toString()) as Stalls

/** What a process's plain TCP reads made of slabs (src/mux/readSlabs.ts), since it started. */
export interface SlabUse {
  readonly made: number
  readonly reused: number
  readonly free: number
}

export const localSlabs = (): SlabUse => ({ made: slabCounts.made, reused: slabCounts.reused, free: freeSlabCount() })

/** The iip server child's slab use, over its /slabs route. */
export const serverSlabs = async (client: IipClient): Promise<SlabUse> => JSON.parse(Buffer.from(await client.call("/slabs", "", { timeoutMs: 5000 })).toString()) as SlabUse

/** The read side's hidden cost: one slab per plain TCP connection that streamed, the free ones kept, and how often slabs were read into again. */
export const slabsLine = (server: SlabUse, client: SlabUse): string =>
  `read slabs (readSlabs.ts): one ${slabBytes / KiB} KiB slab read into per plain TCP connection that has carried a stream (none before), free ones kept up to --read-slab-pool-bytes (8 MiB) per process; since start the server made ${server.made} (${((server.made * slabBytes) / KiB / KiB).toFixed(1)} MiB, ${server.free} free now) and read into one again ${server.reused} times, the client made ${client.made} and reused ${client.reused}`

export const runMixed = async (port: number, options: MixedOptions): Promise<Record<string, number>> => {
  const meter = new StallMeter().start()
  const stalls: Array<{ readonly phase: string; readonly client: Stalls; readonly server: Stalls }> = []
  const phase = async <A>(name: string, run: (client: IipClient) => Promise<A>): Promise<A> => {
    const client = newClient(port)
    try {
      await warm(client)
      await serverStalls(client)
      meter.take()
      const result = await run(client)
      stalls.push({ phase: name, client: meter.take(), server: await serverStalls(client) })
      return result
    } finally {
      client.close()
    }
  }
  const idle = await phase("idle", (client) => fixedRateCalls(client, options))
  const aloneMbps = await phase("alone", (client) => {
    const until = performance.now() + options.seconds * 1000
    return upload(client, () => performance.now() >= until)
  })
  let maxQueuedChunks = 0
  const mixed = await phase("mixed", async (client) => {
    let done = false
    const writer = client.meshSessions[0]!.connection.writer
    const sampler = setInterval(() => (maxQueuedChunks = Math.max(maxQueuedChunks, writer.queuedChunks)), 5)
    try {
      const streamed = upload(client, () => done)
      const calls = await fixedRateCalls(client, options)
      done = true
      return { calls, mbps: await streamed }
    } finally {
      clearInterval(sampler)
    }
  })
  const idleP99 = percentile(idle.latencies, 0.99)
  const mixedP99 = percentile(mixed.calls.latencies, 0.99)
  console.log(`1 KiB calls at ${options.ratePerSecond}/s for ${options.seconds} s on one mesh connection; upload in 1 MiB pieces on another channel`)
  console.log("case                 calls  failed   p50 ms   p99 ms   upload MB/s")
  const row = (name: string, calls: Calls | undefined, mbps: number | undefined) =>
    console.log(
      `${name.padEnd(20)} ${String(calls?.latencies.length ?? "-").padStart(5)} ${String(calls?.failed ?? "-").padStart(7)} ${(calls === undefined ? "-" : percentile(calls.latencies, 0.5).toFixed(3)).padStart(8)} ${(calls === undefined ? "-" : percentile(calls.latencies, 0.99).toFixed(3)).padStart(8)} ${(mbps === undefined ? "-" : mbps.toFixed(0)).padStart(13)}`
    )
  row("calls, idle conn", idle, undefined)
  row("upload alone", undefined, aloneMbps)
  row("calls + upload", mixed.calls, mixed.mbps)
  console.log(`p99 with the upload / idle: ${(mixedP99 / idleP99).toFixed(2)}x (target <= 2x); upload bandwidth mixed / alone: ${(mixed.mbps / aloneMbps).toFixed(2)}x (target >= 0.8x)`)
  console.log("what stopped each event loop per phase (stalls.ts; the server is the child that reads the upload):")
  console.log(stallsHeader)
  for (const side of ["server", "client"] as const) for (const s of stalls) console.log(stallsRow(side, s.phase, s[side]))
  meter.stop()
  const control = newClient(port)
  try {
    console.log(slabsLine(await serverSlabs(control), localSlabs()))
  } finally {
    control.close()
  }
  console.log(`writer cost: at most ${maxQueuedChunks} chunks queued in lanes (by reference, ~${LANE_PACKET_BYTES} B of bookkeeping each), one lane object per channel with bulk waiting (~${LANE_BYTES} B), none for idle channels`)
  return {
    mixed_idle_p99_ms: Number(idleP99.toFixed(3)),
    mixed_busy_p99_ms: Number(mixedP99.toFixed(3)),
    mixed_p99_ratio: Number((mixedP99 / idleP99).toFixed(3)),
    mixed_alone_mbps: Math.round(aloneMbps),
    mixed_busy_mbps: Math.round(mixed.mbps),
    mixed_bandwidth_ratio: Number((mixed.mbps / aloneMbps).toFixed(3)),
    mixed_failed: idle.failed + mixed.calls.failed,
    mixed_max_queued_chunks: maxQueuedChunks,
    ...Object.fromEntries(
      stalls.flatMap((s) =>
        (["server", "client"] as const).flatMap((side) => [
          [`${s.phase}_${side}_loop_p99_ms`, s[side].loopP99Ms],
          [`${s.phase}_${side}_major_gcs`, s[side].majorGcs],
          [`${s.phase}_${side}_major_gc_ms`, s[side].majorGcMs]
        ])
      )
    )
  }
}

/** Rough heap cost of the writer's bookkeeping (V8 object with 5 fields; lane: object, array, map entry). */
const LANE_PACKET_BYTES = 56
const LANE_BYTES = 120
