// The distinct key names of one Request, counted by the RPC server's pre-decode scans
// (jsonFrame.ts, msgpack.ts) as they pass each key, before anything is decoded. Decoding pays per
// new name, whatever object it is in: each is a new internalized string and a new hidden class
// (4,900 objects of 100 distinct keys each, within the values and per-object key bounds, held the
// event loop 1.2-2.0 s as JSON, 0.4-0.6 s as MessagePack). A scan calls `startKeyNames`, then per
// key `knownKeyEnd` (the same bytes as the key at its place in the object before) or else
// `addKeyName`: a set of 64-bit hashes of the keys' bytes in one open-addressing table for the
// process (a scan is synchronous and runs to its end, so none shares it with another), emptied for
// the next scan by a generation number, not a fill, and grown (kept) as a Request needs. Nothing
// is allocated per key. The hash is keyed by random tables made per process: a peer cannot
// aim names at one slot or make them collide. Two distinct names that do collide count as one; a
// hash is 64 bits, so that is never for more than a handful of names (nor learnt by probing which
// Requests are refused: 32 bits would be). Bytes name a key as sent: a JSON key spelled with an
// escape is not the same name as its plain spelling here, which can only refuse sooner.
import { randomFillSync } from "node:crypto"

// One random byte table per half of the hash: each step looks a byte of the state and the key's
// byte up in it, so what the state becomes depends on secret values throughout (a seeded
// multiply-xor hash has collisions that hold for any seed).
const tableA = randomFillSync(new Uint32Array(256))
const tableB = randomFillSync(new Uint32Array(256))
const [seedA, seedB] = randomFillSync(new Uint32Array(2))

/** The most distinct names a scan may count (the option's ceiling): the table then holds 2^21 slots, 24 MiB. */
export const maxKeyNamesBound = 2 ** 20

// The table: for each slot, the generation (scan) that filled it and the two halves of the hash.
// Slots of an older generation are empty. Grown by doubling when three quarters full.
const table = { slots: 1024, generationOf: new Uint32Array(1024), hashA: new Uint32Array(1024), hashB: new Uint32Array(1024) }
// The scan's generation (the tables' slots of any other are empty) and its distinct names so far.
let generation = 0
let names = 0

// Where the key at each place (its object's depth and the key's ordinal in it, folded into
// `predictSlots`) was last seen in this scan's bytes, and the generation that saw it. Records that
// share their keys in one order (most large Requests; JSON.parse takes the same shortcut) find
// their names here, compared byte for byte where they lie: a JSON scan reads no further to find
// where such a key ends. Hashing every key took a 4 MB JSON scan of records from 11 to 14-16 ms;
// found here, 10.4-11.5 ms against 9.8-10.8 before names were counted (MessagePack's scan, which
// skips strings without reading them, 5.4 -> 8.8 ms). Records whose keys come in orders of their
// own are hashed key by key (~25 ns a key).
const predictSlots = 4096
const predictGeneration = new Uint32Array(predictSlots)
const predictFrom = new Uint32Array(predictSlots)
const predictLength = new Uint32Array(predictSlots)

/** The place of the key `ordinal` (0: the first) of an object at `depth`. */
export const keySlot = (depth: number, ordinal: number): number => ((depth << 6) + ordinal) & (predictSlots - 1)

/**
 * Where the key at `from` ends when it names the key last seen at its place (`slot`) in this
 * scan, counted already; else -1. The bytes after are the caller's to check (the JSON scan: a
 * quote; the same bytes from the string's start leave that quote unescaped as they did there).
 */
export const knownKeyEnd = (bytes: Uint8Array, from: number, slot: number): number => {
  if (predictGeneration[slot] !== generation) return -1
  const length = predictLength[slot]!
  if (from + length > bytes.length || !same(bytes, predictFrom[slot]!, from, length)) return -1
  return from + length
}

/** Begins a scan: no names counted. */
export const startKeyNames = (): void => {
  // Past 2^32 - 1 scans, generations would repeat: the tables are emptied once.
  if (generation === 0xffff_ffff) {
    table.generationOf.fill(0)
    predictGeneration.fill(0)
    generation = 0
  }
  generation++
  names = 0
}

/** Whether the `length` bytes at `a` and at `b` are the same. */
const same = (bytes: Uint8Array, a: number, b: number, length: number): boolean => {
  for (let i = 0; i < length; i++) if (bytes[a + i] !== bytes[b + i]) return false
  return true
}

/**
 * Counts the name spelled by `bytes` from `from` to `to` (not included), a key not known at its
 * place (`slot`, knownKeyEnd): the distinct names of this scan so far.
 */
export const addKeyName = (bytes: Uint8Array, from: number, to: number, slot: number): number => {
  const length = to - from
  predictGeneration[slot] = generation
  predictFrom[slot] = from
  predictLength[slot] = length
  let a = seedA!
  let b = seedB!
  for (let i = from; i < to; i++) {
    const c = bytes[i]!
    a = (a >>> 8) ^ tableA[(a ^ c) & 0xff]!
    b = (b >>> 8) ^ tableB[(b ^ c) & 0xff]!
  }
  // The length too: a name and one with more bytes that bring the state back are not one.
  a = (a ^ (to - from)) >>> 0
  b >>>= 0
  const { generationOf, hashA, hashB } = table
  const mask = table.slots - 1
  let at = a & mask
  while (generationOf[at] === generation) {
    if (hashA[at] === a && hashB[at] === b) return names
    at = (at + 1) & mask
  }
  // Past the ceiling every key counts as new: the table grows no further.
  if (names >= maxKeyNamesBound) return ++names
  generationOf[at] = generation
  hashA[at] = a
  hashB[at] = b
  if (++names * 4 > table.slots * 3) grow()
  return names
}

const grow = (): void => {
  const { generationOf, hashA, hashB } = table
  const slots = table.slots * 2
  const mask = slots - 1
  Object.assign(table, { slots, generationOf: new Uint32Array(slots), hashA: new Uint32Array(slots), hashB: new Uint32Array(slots) })
  for (let from = 0; from < generationOf.length; from++) {
    if (generationOf[from] !== generation) continue
    let at = hashA[from]! & mask
    while (table.generationOf[at] === generation) at = (at + 1) & mask
    table.generationOf[at] = generation
    table.hashA[at] = hashA[from]!
    table.hashB[at] = hashB[from]!
  }
}

/** Counts a key that is no string (MessagePack allows any value): as a new name, whatever it is. */
export const addOtherKeyName = (): number => ++names
