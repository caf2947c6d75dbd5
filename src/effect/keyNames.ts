// The distinct key names and object shapes of one Request, counted by the RPC server's pre-decode
// scans (jsonFrame.ts, msgpack.ts) as they pass each key, before anything is decoded. Decoding pays
// per new name, whatever object it is in: each is a new internalized string and a new hidden class
// (4,900 objects of 100 distinct keys each, within the values and per-object key bounds, held the
// event loop 1.2-2.0 s as JSON, 0.4-0.6 s as MessagePack). It pays per new shape too: V8's hidden
// classes form a tree, one transition per key added from the empty object, so every distinct
// sequence of keys an object begins with is a class of its own, built once (shared names in
// orders of their own: 30,000 records of 16 names, shuffled, cost 50-124 ms against 20 in one
// order). A scan calls `startKeyNames`, then per key `knownKeyEnd` (the same bytes as the key at
// its place in the object before) or else `addKeyName`, and per MessagePack object `openShape` and
// per key `addKeyShape` (per JSON object `openJsonShape`, `addJsonKeyShape`, `closeJsonShape`). Each count is a set of 64-bit hashes in an open-addressing table for the process
// (a scan is synchronous and runs to its end, so none shares it with another), emptied for the
// next scan by a generation number, not a fill, and grown (kept) as a Request needs. Nothing is
// allocated per key. The hashes are keyed by random tables made per process: a peer cannot aim
// names or shapes at one slot or make them collide. Two that do collide count as one; a hash is 64
// bits, so that is never for more than a handful (nor learnt by probing which Requests are
// refused: 32 bits would be). Bytes name a key as sent: a JSON key spelled with an escape is not
// the same name as its plain spelling here, which can only refuse sooner.
import { randomFillSync } from "node:crypto"

// One random byte table per half of the hash: each step looks a byte of the state and the key's
// byte up in it, so what the state becomes depends on secret values throughout (a seeded
// multiply-xor hash has collisions that hold for any seed).
const tableA = randomFillSync(new Uint32Array(256))
const tableB = randomFillSync(new Uint32Array(256))
const [seedA, seedB] = randomFillSync(new Uint32Array(2))

/** The most distinct names (or shapes) a scan may count (the options' ceiling): a table then holds 2^21 slots, 24 MiB. */
export const maxKeyNamesBound = 2 ** 20

/**
 * The keys of a MessagePack object that can make hidden classes: V8 makes an object of more keys a
 * dictionary (kMaxNumberOfDescriptors: msgpackr's objects, built key by key, are fast to 1,020
 * keys), so a key past them adds no shape, only its cost per key (bounded by the object and values
 * bounds).
 */
export const shapedKeys = 1020

/**
 * The most named keys (not array indices) a JSON.parse object holds in fast mode: V8 builds it
 * from a map cached per count of named keys (kMapCacheSize, 128 of them), one of more is a
 * dictionary from the start.
 */
export const jsonShapedKeys = 127

// A set of hashes: for each slot, the generation (scan) that filled it and the two halves of the
// hash; slots of an older generation are empty. Grown by doubling when three quarters full. One for
// names, one for shapes.
interface HashSet {
  slots: number
  generationOf: Uint32Array
  hashA: Uint32Array
  hashB: Uint32Array
  /** The distinct hashes of this scan so far. */
  count: number
}
const hashSet = (): HashSet => ({ slots: 1024, generationOf: new Uint32Array(1024), hashA: new Uint32Array(1024), hashB: new Uint32Array(1024), count: 0 })
const names = hashSet()
const shapes = hashSet()
// The scan's generation: the sets' and the slots' below of any other are empty.
let generation = 0

// Where the key at each place (its object's depth and the key's ordinal in it, folded into
// `predictSlots`) was last seen in this scan's bytes, the hash of its name, and the generation that
// saw it. Records that share their keys in one order (most large Requests; JSON.parse takes the
// same shortcut) find their names here, compared byte for byte where they lie: a JSON scan reads no
// further to find where such a key ends. Hashing every key took a 4 MB JSON scan of records from 11
// to 14-16 ms; found here, 10.4-11.5 ms against 9.8-10.8 before names were counted (MessagePack's
// scan, which skips strings without reading them, 5.4 -> 8.8 ms). Records whose keys come in orders
// of their own are hashed key by key (~25 ns a key).
const predictSlots = 4096
const predictGeneration = new Uint32Array(predictSlots)
const predictFrom = new Uint32Array(predictSlots)
const predictLength = new Uint32Array(predictSlots)
const predictNameA = new Uint32Array(predictSlots)
const predictNameB = new Uint32Array(predictSlots)
// And the shape the key last took there: from which (`before`) to which (`after`), valid in the
// generation `shapeGeneration` names (a new name at the place leaves it invalid). A key known at
// its place whose object's shape so far is that `before` takes that `after`, counted already:
// records in one order are never hashed for their shapes either.
const shapeGeneration = new Uint32Array(predictSlots)
const beforeA = new Uint32Array(predictSlots)
const beforeB = new Uint32Array(predictSlots)
const afterA = new Uint32Array(predictSlots)
const afterB = new Uint32Array(predictSlots)

// The shape of the object open at each depth so far (the scans nest 512 deep at most, msgpack.ts).
const openA = new Uint32Array(1024)
const openB = new Uint32Array(1024)

// JSON.parse does not build an object key by key from one empty object's map as msgpackr does: it
// starts from the map cached for the object's count of named keys and follows (or makes) the
// transitions from there, so every count is a tree of its own. Objects of one order cut at each
// length 1..127 made ~8,000 maps an order while the prefixes counted 127: 61 orders (within the
// values bound, 7,700 prefixes) took JSON.parse 450 ms, as long as the 30,000 shuffled records
// the prefixes refuse. A JSON object's shapes are therefore counted when it closes, when its count
// is known: each prefix of its named keys under that count. The prefixes of the objects open are
// kept on a stack (127 at most each, 512 deep), with each one's named keys and whether it held an
// array index (an element: no transition, but V8 roots the object at a map of dictionary elements
// when they are sparse, so both roots are counted).
const chainA = new Uint32Array(jsonShapedKeys * 513)
const chainB = new Uint32Array(jsonShapedKeys * 513)
let chainTop = 0
const chainFrom = new Uint32Array(1024)
const namedAt = new Uint32Array(1024)
const indexAt = new Uint8Array(1024)
// The whole shape (and root) of the object last closed at each depth, in the generation named: a
// record closing as the one before it did (records in one order) was counted then.
const closedGeneration = new Uint32Array(1024)
const closedA = new Uint32Array(1024)
const closedB = new Uint32Array(1024)
const closedRoot = new Uint32Array(1024)

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

/** Begins a scan: no names or shapes counted. */
export const startKeyNames = (): void => {
  // Past 2^32 - 1 scans, generations would repeat: the tables are emptied once.
  if (generation === 0xffff_ffff) {
    names.generationOf.fill(0)
    shapes.generationOf.fill(0)
    predictGeneration.fill(0)
    shapeGeneration.fill(0)
    closedGeneration.fill(0)
    generation = 0
  }
  generation++
  names.count = 0
  shapes.count = 0
  chainTop = 0
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
  predictNameA[slot] = a
  predictNameB[slot] = b
  shapeGeneration[slot] = 0
  return insert(names, a, b)
}

/** Counts a key that is no string (MessagePack allows any value) at `slot`: as a new name, whatever it is, and a new shape. */
export const addOtherKeyName = (slot: number): number => {
  // No string is known at its place now; the count (this scan's own) names it apart from any other.
  predictGeneration[slot] = 0
  shapeGeneration[slot] = 0
  predictNameA[slot] = ++names.count
  predictNameB[slot] = 0xffff_ffff
  return names.count
}

/** The object opened at `depth` has no keys yet: the empty object's shape (not counted, always there). */
export const openShape = (depth: number): void => {
  openA[depth] = seedA!
  openB[depth] = seedB!
}

// What `mix` gives: no object allocated per call.
let mixedA = 0
let mixedB = 0
/** Hashes `x` and `y` (32 bits each), a byte at a time, through the state (a, b): keyed throughout, as a name is. */
const mix = (a: number, b: number, x: number, y: number): void => {
  for (let i = 0; i < 4; i++) {
    a = (a >>> 8) ^ tableA[(a ^ x) & 0xff]!
    b = (b >>> 8) ^ tableB[(b ^ y) & 0xff]!
    x >>>= 8
    y >>>= 8
  }
  mixedA = a >>> 0
  mixedB = b >>> 0
}

/**
 * Takes the object at `depth` past the key at `slot` (its name counted or known there): whether
 * that shape is new to the place (when not, it was counted when it was).
 */
const advance = (depth: number, slot: number): boolean => {
  const a = openA[depth]!
  const b = openB[depth]!
  if (shapeGeneration[slot] === generation && beforeA[slot] === a && beforeB[slot] === b) {
    openA[depth] = afterA[slot]!
    openB[depth] = afterB[slot]!
    return false
  }
  beforeA[slot] = a
  beforeB[slot] = b
  mix(a, b, predictNameA[slot]!, predictNameB[slot]!)
  afterA[slot] = openA[depth] = mixedA
  afterB[slot] = openB[depth] = mixedB
  shapeGeneration[slot] = generation
  return true
}

/**
 * Adds the key at `slot` (its name counted or known there) to the shape of the MessagePack object
 * at `depth`: the distinct shapes of this scan so far (every distinct sequence of keys an object
 * began with).
 */
export const addKeyShape = (depth: number, slot: number): number => advance(depth, slot) ? insert(shapes, openA[depth]!, openB[depth]!) : shapes.count

/** A JSON object opened at `depth`: no keys yet. */
export const openJsonShape = (depth: number): void => {
  openShape(depth)
  chainFrom[depth] = chainTop
  namedAt[depth] = 0
  indexAt[depth] = 0
}

/** Adds the key at `slot` to the JSON object at `depth`; `index`: the key is an array index (an element, not a property). */
export const addJsonKeyShape = (depth: number, slot: number, index: boolean): void => {
  if (index) indexAt[depth] = 1
  else if (++namedAt[depth]! <= jsonShapedKeys) {
    advance(depth, slot)
    chainA[chainTop] = openA[depth]!
    chainB[chainTop++] = openB[depth]!
  }
}

/** Closes the JSON object at `depth`: counts its shapes under its count of named keys, the distinct shapes of this scan so far. */
export const closeJsonShape = (depth: number): number => {
  const from = chainFrom[depth]!
  const named = namedAt[depth]!
  chainTop = from
  if (named === 0 || named > jsonShapedKeys) return shapes.count
  const a = chainA[from + named - 1]!
  const b = chainB[from + named - 1]!
  const roots = (named << 1) | indexAt[depth]!
  if (closedGeneration[depth] === generation && closedA[depth] === a && closedB[depth] === b && closedRoot[depth] === roots) return shapes.count
  closedGeneration[depth] = generation
  closedA[depth] = a
  closedB[depth] = b
  closedRoot[depth] = roots
  for (let root = 0; root <= indexAt[depth]!; root++) {
    // Its whole shape counted before (by an object of the same keys in the same order), so were its prefixes.
    const counted = shapes.count
    mix(a, b, (named << 1) | root, (named << 1) | root)
    if (insert(shapes, mixedA, mixedB) === counted) continue
    for (let i = from; i < from + named - 1; i++) {
      mix(chainA[i]!, chainB[i]!, (named << 1) | root, (named << 1) | root)
      insert(shapes, mixedA, mixedB)
    }
  }
  return shapes.count
}

/** Adds the hash (a, b) to `set` if it is not there: the set's count after. */
const insert = (set: HashSet, a: number, b: number): number => {
  const { generationOf, hashA, hashB } = set
  const mask = set.slots - 1
  let at = a & mask
  while (generationOf[at] === generation) {
    if (hashA[at] === a && hashB[at] === b) return set.count
    at = (at + 1) & mask
  }
  // Past the ceiling every hash counts as new: the table grows no further.
  if (set.count >= maxKeyNamesBound) return ++set.count
  generationOf[at] = generation
  hashA[at] = a
  hashB[at] = b
  if (++set.count * 4 > set.slots * 3) grow(set)
  return set.count
}

const grow = (set: HashSet): void => {
  const { generationOf, hashA, hashB } = set
  const slots = set.slots * 2
  const mask = slots - 1
  Object.assign(set, { slots, generationOf: new Uint32Array(slots), hashA: new Uint32Array(slots), hashB: new Uint32Array(slots) })
  for (let from = 0; from < generationOf.length; from++) {
    if (generationOf[from] !== generation) continue
    let at = hashA[from]! & mask
    while (set.generationOf[at] === generation) at = (at + 1) & mask
    set.generationOf[at] = generation
    set.hashA[at] = hashA[from]!
    set.hashB[at] = hashB[from]!
  }
}
