// What object shapes cost the RPC server (src/effect/keyNames.ts through jsonFrame.ts and
// msgpack.ts), in one process, side by side: records of shared names in orders of their own (each
// order a new hidden class per key from where it parts from the others) decoded as the server did
// before the shapes bound (the pre-decode scan counting names only, then JSON.parse or msgpackr),
// against the same frame refused by the scan with the bound, and as many shuffled records as the
// bound lets through (what a client gets per frame now); and the scan's cost on ordinary frames
// with the bound and without it, alternated round by round.
//
//   npm run -s bench -- rpcShapes              9 rounds
//   npm run -s bench -- rpcShapes --rounds 15
// Flags: --rounds N (default 9), --quick (3 rounds).
import { Packr } from "msgpackr"
import { plainJsonProblem } from "../src/effect/jsonFrame.ts"
import { decodeMsgPackRequests, type FrameCheck, plainMessagePackProblem } from "../src/effect/msgpack.ts"
import { benchArgs, printSummary } from "./args.ts"

// The server's defaults (src/effect/rpc.ts), without and with the shapes bound.
const before: FrameCheck = { request: true, maxValues: 1_000_000, maxObjectKeys: 50_000, maxDistinctKeys: 55_000 }
const after: FrameCheck = { ...before, maxObjectShapes: 60_000 }
const packr = new Packr({ useRecords: false, variableMapSize: true })
const text = new TextDecoder()

let seed = 0x5ba9e
/** mulberry32: the same frames every run. */
const random = (): number => {
  seed = (seed + 0x6d2b79f5) >>> 0
  let t = Math.imul(seed ^ (seed >>> 15), seed | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const shuffled = (names: ReadonlyArray<string>): Array<string> => {
  const out = [...names]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}
const request = (rows: ReadonlyArray<ReadonlyArray<string>>) => ({
  _tag: "Request", id: "1", tag: "Echo", headers: [], payload: { text: "x", rows: rows.map((keys, i) => Object.fromEntries(keys.map((k) => [k, i]))) }
})
const sixteen = Array.from({ length: 16 }, (_, i) => `field${i}`)
const eight = Array.from({ length: 8 }, (_, i) => `field${i}`)

interface Encoded {
  readonly json: Uint8Array
  readonly pack: Uint8Array
}
const encoded = (message: unknown): Encoded => ({ json: Buffer.from(JSON.stringify(message)), pack: packr.pack(message) })

/** The server's decode of a Request frame: the scan, then the parser when the scan passes. */
const decodeJson = (bytes: Uint8Array, check: FrameCheck): string | undefined => plainJsonProblem(bytes, check) ?? (JSON.parse(text.decode(bytes)), undefined)
const decodePack = (bytes: Uint8Array, check: FrameCheck): string | undefined => {
  try {
    decodeMsgPackRequests(bytes, check)
    return undefined
  } catch (error) {
    return String(error)
  }
}

const ms = (from: bigint): number => Number(process.hrtime.bigint() - from) / 1e6
// A copy sorted: the figures stay in round order, for the ratios.
const median = (xs: ReadonlyArray<number>): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const maxOf = (xs: ReadonlyArray<number>): number => Math.max(...xs)

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { quick, number } = benchArgs(args)
  const rounds = quick ? 3 : number("--rounds", 9)
  const summary: Record<string, number> = {}
  const row = (name: string, figures: Array<number>, unit: string) => {
    summary[name] = median(figures)
    process.stdout.write(`${name.padEnd(46)} median ${median(figures).toFixed(unit === "ms" ? 1 : 2).padStart(8)} ${unit}  max ${maxOf(figures).toFixed(unit === "ms" ? 1 : 2).padStart(8)} ${unit}\n`)
  }
  // Paired by round (the two ran side by side): the median of a/b, as the ratio the guide asks for.
  const ratio = (name: string, a: ReadonlyArray<number>, b: ReadonlyArray<number>) => {
    summary[name] = median(a.map((x, i) => x / b[i]!))
    process.stdout.write(`${name.padEnd(46)} ratio  ${summary[name]!.toFixed(2).padStart(8)}\n`)
  }
  // The attack: 30,000 records of 16 names, each shuffled anew every round (a client repeating it).
  const attack = {
    jsonDecoded: [] as Array<number>, jsonRefused: [] as Array<number>, packDecoded: [] as Array<number>, packRefused: [] as Array<number>,
    jsonOneOrder: [] as Array<number>, packOneOrder: [] as Array<number>, jsonAtBound: [] as Array<number>, packAtBound: [] as Array<number>
  }
  const oneOrder = encoded(request(Array.from({ length: 30_000 }, () => sixteen)))
  for (let round = 0; round < rounds + 1; round++) {
    const rows = Array.from({ length: 30_000 }, () => shuffled(sixteen))
    const frame = encoded(request(rows))
    // The first rows of the same, as many as make at most 60,000 shapes with the payload's two.
    const prefixes = new Set<string>()
    let fit = 0
    while (fit < rows.length) {
      const more = rows[fit]!.map((_, i) => rows[fit]!.slice(0, i + 1).join()).filter((p) => !prefixes.has(p))
      if (prefixes.size + more.length > 60_000 - 2) break
      for (const p of more) prefixes.add(p)
      fit++
    }
    const atBound = encoded(request(rows.slice(0, fit)))
    const timed = (decode: (bytes: Uint8Array, check: FrameCheck) => string | undefined, bytes: Uint8Array, check: FrameCheck, refused: boolean): number => {
      const start = process.hrtime.bigint()
      const problem = decode(bytes, check)
      const took = ms(start)
      if ((problem !== undefined) !== refused) throw new Error(`expected ${refused ? "a refusal" : "no refusal"}, got ${problem}`)
      return took
    }
    const figures = [
      timed(decodeJson, frame.json, before, false), timed(decodeJson, frame.json, after, true),
      timed(decodePack, frame.pack, before, false), timed(decodePack, frame.pack, after, true),
      timed(decodeJson, oneOrder.json, after, false), timed(decodePack, oneOrder.pack, after, false),
      timed(decodeJson, atBound.json, after, false), timed(decodePack, atBound.pack, after, false)
    ]
    // The first round warms up.
    if (round === 0) continue
    for (const [i, list] of Object.values(attack).entries()) list.push(figures[i]!)
  }
  row("shuffled 30,000 x 16, JSON, decoded (before)", attack.jsonDecoded, "ms")
  row("shuffled 30,000 x 16, JSON, refused (after)", attack.jsonRefused, "ms")
  row("shuffled 30,000 x 16, MessagePack, decoded", attack.packDecoded, "ms")
  row("shuffled 30,000 x 16, MessagePack, refused", attack.packRefused, "ms")
  ratio("shuffled, JSON, decoded / refused", attack.jsonDecoded, attack.jsonRefused)
  ratio("shuffled, MessagePack, decoded / refused", attack.packDecoded, attack.packRefused)
  row("one order 30,000 x 16, JSON, decoded (after)", attack.jsonOneOrder, "ms")
  row("one order 30,000 x 16, MessagePack, decoded", attack.packOneOrder, "ms")
  row("shuffled at the bound (60,000 shapes), JSON", attack.jsonAtBound, "ms")
  row("shuffled at the bound, MessagePack", attack.packAtBound, "ms")
  // The scan alone on ordinary frames, without the bound and with it, alternated.
  const small = encoded({ _tag: "Request", id: "1", tag: "Echo", headers: [["traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]], payload: { text: "hello, world", n: 42 } })
  const records = encoded(request(Array.from({ length: 25_000 }, () => eight)))
  const types = Array.from({ length: 40 }, (_, t) => ["_tag", ...Array.from({ length: 19 }, (_, f) => `t${t}f${f}`)])
  const union = encoded(request(Array.from({ length: 5000 }, (_, i) => types[i % 40]!)))
  for (const [name, frame, loops] of [["small Echo Request", small, 20_000], ["25,000 records of 8 keys, one order", records, 3], ["5,000 records of 40 types of 20 keys", union, 10]] as const) {
    for (const [encoding, bytes, scan] of [["JSON", frame.json, plainJsonProblem], ["MessagePack", frame.pack, plainMessagePackProblem]] as const) {
      const figures = { before: [] as Array<number>, after: [] as Array<number> }
      for (let round = 0; round < rounds + 1; round++) {
        for (const [which, check] of (round % 2 === 0 ? [["before", before], ["after", after]] : [["after", after], ["before", before]]) as ReadonlyArray<["before" | "after", FrameCheck]>) {
          const start = process.hrtime.bigint()
          for (let i = 0; i < loops; i++) if (scan(bytes, check) !== undefined) throw new Error(`${name} refused`)
          if (round > 0) figures[which].push((ms(start) * 1000) / loops)
        }
      }
      const unit = loops > 100 ? "µs" : "ms"
      const scale = unit === "µs" ? 1 : 1 / 1000
      row(`${name} (${bytes.length} B ${encoding}), no shapes`, figures.before.map((x) => x * scale), unit)
      row(`${name} (${bytes.length} B ${encoding}), shapes`, figures.after.map((x) => x * scale), unit)
      ratio(`${name}, ${encoding}, shapes / no shapes`, figures.after, figures.before)
    }
  }
  printSummary({ bench: "rpcShapes", rounds, ...summary })
}
