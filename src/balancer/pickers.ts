// The pickers: given the usable endpoints and a request's context, choose one. All are pure state
// machines over their arguments (time is `context.now`, randomness is an injected `() => number`
// in [0, 1)), so tests and the simulation in bench/balancer.ts are deterministic.
//
//   p2c             the default: power of two choices. Two endpoints are drawn with probability
//                   proportional to weight, and the one with the lower load (latency estimate plus
//                   failure penalty, times pending per weight + 1) wins; on a tie the first draw wins. So with
//                   equal latencies the shares are exactly the weights, and a slow or busy endpoint
//                   loses nearly every comparison it is drawn into. The first draw walks a
//                   golden-ratio sequence (u += 0.618... mod 1, from a random start) instead of
//                   fresh random numbers: still spread over the weights, but with no sampling noise,
//                   so the shares track the weights closely over any window. The second is random,
//                   and wins only when its load is lower by a margin (P2C_MARGIN), and only once
//                   both have a few samples (P2C_MIN_SAMPLES). A draw whose estimate is stale (no
//                   request for a second, none in flight: probeDue) takes the request whatever its
//                   load, so a starved endpoint shows within a second or so that it recovered.
//   smoothWeighted  nginx's smooth weighted round robin (weightedRoundRobin.ts), as a Picker.
//   leastPending    the fewest requests in flight per unit of weight; ties rotate.
//   consistentHash  a ring with virtual nodes in proportion to weight; the key (a header, query
//                   value or client address) comes from the caller as `context.key`.
//
// The Go reference's load-balance methods, by name (iip-protocol.md §8.1, §8.3). They run over the
// reference's weighted list, where weight W puts an endpoint W times, built round-robin across
// addresses while weights remain (`a#2,b#1` gives [a, b, a]):
//
//   roundRobin  a shared counter modulo the list length.
//   random      a uniform slot of the list.
//   minPending  start at the round-robin position; take it if it has 0 pending, otherwise scan the
//               whole list for the fewest pending (the first such slot). Pending here is the
//               endpoint's own count (the reference keeps one per slot over a shared pool).
//   ipHash      32-bit FNV-1 (not 1a) of `context.clientIp`, modulo the list length.
//   uriParam    FNV-1 of the query value named by `paramKey` in `context.uri` ("" when absent, as
//               Go's `Query().Get`), modulo the list length.
//
// Structures built from weights are cached per candidates array and rebuilt when the array, its
// length, or the weight epoch (endpointStats.ts) changes: treat a candidates array as a snapshot.

import { type Balanced, weightEpoch } from "./endpointStats.ts"
import { WeightedRoundRobin } from "./weightedRoundRobin.ts"

export { WeightedRoundRobin as SmoothWeightedRoundRobin } from "./weightedRoundRobin.ts"

export interface PickContext {
  /** The time in ms (only compared and subtracted: any monotonic origin). */
  readonly now: number
  /** consistentHash: the key (header value, query value or client address). */
  readonly key?: string | undefined
  /** ipHash: the client's address. */
  readonly clientIp?: string | undefined
  /** uriParam: the request URI (path and query). */
  readonly uri?: string | undefined
}

export interface Picker<E> {
  /** One of `candidates`, or undefined when none can be picked (empty, or all weights 0). */
  pick(candidates: ReadonlyArray<E>, context: PickContext): E | undefined
}

export type Random = () => number

/** A small seeded PRNG (mulberry32): [0, 1), the same sequence for the same seed. */
export const seededRandom = (seed: number): Random => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// ---------------------------------------------------------------------------------------------
// Hashes

const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193
const utf8 = new TextEncoder()

const isAscii = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false
  return true
}

/** 32-bit FNV-1 (multiply, then xor) over the UTF-8 bytes, as Go's hash/fnv New32. Unsigned. */
export const fnv1_32 = (s: string): number => {
  let h = FNV_OFFSET
  if (isAscii(s)) {
    for (let i = 0; i < s.length; i++) h = Math.imul(h, FNV_PRIME) ^ s.charCodeAt(i)
  } else {
    for (const byte of utf8.encode(s)) h = Math.imul(h, FNV_PRIME) ^ byte
  }
  return h >>> 0
}

/** 32-bit FNV-1a (xor, then multiply) over the UTF-8 bytes. Unsigned. */
export const fnv1a_32 = (s: string): number => {
  let h = FNV_OFFSET
  if (isAscii(s)) {
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME)
  } else {
    for (const byte of utf8.encode(s)) h = Math.imul(h ^ byte, FNV_PRIME)
  }
  return h >>> 0
}

/** FNV-1a with murmur3's finalizer: well spread even for short, similar strings (ring points). */
const ringHash = (s: string): number => {
  let h = fnv1a_32(s)
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

// ---------------------------------------------------------------------------------------------
// Caching structures built from a candidates array's weights

const cached = <E, T>(build: (candidates: ReadonlyArray<E>) => T) => {
  type Entry = { readonly epoch: number; readonly length: number; readonly value: T }
  const cache = new WeakMap<ReadonlyArray<E>, Entry>()
  // The last array seen, checked before the WeakMap: most callers pass the same snapshot in a row.
  let lastArray: ReadonlyArray<E> | undefined = undefined
  let lastEntry: Entry | undefined = undefined
  return (candidates: ReadonlyArray<E>): T => {
    const epoch = weightEpoch()
    if (candidates === lastArray && lastEntry!.epoch === epoch && lastEntry!.length === candidates.length) return lastEntry!.value
    let entry = cache.get(candidates)
    if (entry === undefined || entry.epoch !== epoch || entry.length !== candidates.length) {
      entry = { epoch, length: candidates.length, value: build(candidates) }
      cache.set(candidates, entry)
    }
    lastArray = candidates
    lastEntry = entry
    return entry.value
  }
}

/** Binary search: the first index whose value is > x (prefix sums) — values ascending. */
const upperBound = (values: Float64Array | Uint32Array, x: number): number => {
  let lo = 0
  let hi = values.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (values[mid]! > x) hi = mid
    else lo = mid + 1
  }
  return lo
}

// ---------------------------------------------------------------------------------------------
// p2c

export interface P2cOptions {
  readonly random: Random
}

interface Prefix {
  /** Running totals of the positive weights; prefix[i] = sum of weights 0..i. */
  readonly sums: Float64Array
  readonly total: number
  /** Uniform weights: draw an index directly. */
  readonly uniform: boolean
}

const buildPrefix = <E extends Balanced>(candidates: ReadonlyArray<E>): Prefix => {
  const sums = new Float64Array(candidates.length)
  let total = 0
  let uniform = true
  const first = candidates[0]?.weight
  for (let i = 0; i < candidates.length; i++) {
    const w = candidates[i]!.weight
    if (w !== first) uniform = false
    total += w > 0 ? w : 0
    sums[i] = total
  }
  return { sums, total, uniform: uniform && first !== undefined && first > 0 }
}

const GOLDEN = (Math.sqrt(5) - 1) / 2

/**
 * The second draw takes the request only when its load is lower by this factor. Loads count whole
 * requests in flight, so at a few in flight per endpoint equal endpoints differ by 1.25-2x from one
 * moment to the next; a bare comparison lets that noise pull the shares off the weights (by up to
 * 30 % at five in flight). A real difference (a 10x slower or a stalled endpoint) clears the margin.
 */
const P2C_MARGIN = 1.5

/**
 * Samples both draws need before their loads decide: a first sample carries the connection's setup
 * and a cold JIT, and an endpoint that loses on it gets no samples to correct it (until its estimate
 * fades). Until then the first draw, made by weight, takes the request.
 */
const P2C_MIN_SAMPLES = 3

/** Power of two choices over load, drawing by weight (see the top of this file). */
export const p2c = <E extends Balanced>(options: P2cOptions): Picker<E> => {
  const { random } = options
  const prefixOf = cached<E, Prefix>(buildPrefix)
  let sequence = random()
  const nextInSequence = (): number => {
    sequence += GOLDEN
    if (sequence >= 1) sequence -= 1
    return sequence
  }
  const drawAt = (prefix: Prefix, n: number, u: number): number =>
    prefix.uniform ? Math.min(n - 1, Math.floor(u * n)) : Math.min(n - 1, upperBound(prefix.sums, u * prefix.total))
  const draw = (prefix: Prefix, n: number): number => drawAt(prefix, n, random())
  return {
    pick(candidates, context) {
      const n = candidates.length
      if (n === 0) return undefined
      if (n === 1) return candidates[0]!.weight > 0 ? candidates[0] : undefined
      const prefix = prefixOf(candidates)
      if (prefix.total <= 0) return undefined
      const a = drawAt(prefix, n, nextInSequence())
      let b = draw(prefix, n)
      // Distinct second draw: a few redraws (by weight), then the next positive-weight slot.
      for (let tries = 0; b === a && tries < 4; tries++) b = draw(prefix, n)
      if (b === a) {
        for (let step = 1; step < n; step++) {
          const j = (a + step) % n
          if (candidates[j]!.weight > 0) {
            b = j
            break
          }
        }
        if (b === a) return candidates[a]
      }
      const ca = candidates[a]!
      const cb = candidates[b]!
      if (ca.samples < P2C_MIN_SAMPLES || cb.samples < P2C_MIN_SAMPLES) return ca
      // A starved endpoint's estimate says how it was, not how it is: one request finds out.
      if (ca.probeDue(context.now)) return ca
      if (cb.probeDue(context.now)) return cb
      return cb.load(context.now) * P2C_MARGIN < ca.load(context.now) ? cb : ca
    }
  }
}

// ---------------------------------------------------------------------------------------------
// smooth weighted round robin, least pending, consistent hash

/** Smooth weighted round robin as a Picker: one WeightedRoundRobin state per candidates array. */
export const smoothWeighted = <E extends { readonly weight: number }>(): Picker<E> => {
  const stateOf = cached<E, WeightedRoundRobin<E>>((candidates) => new WeightedRoundRobin(candidates))
  return {
    pick(candidates) {
      if (candidates.length === 0) return undefined
      return stateOf(candidates).pick()
    }
  }
}

/** The fewest in flight per unit of weight ((pending + 1) / weight); ties go round in turn. */
export const leastPending = <E extends { readonly weight: number; readonly pending: number }>(): Picker<E> => {
  let start = 0
  return {
    pick(candidates) {
      const n = candidates.length
      if (n === 0) return undefined
      const offset = start++ % n
      let best: E | undefined = undefined
      let bestScore = Number.POSITIVE_INFINITY
      // Starting at the rotating offset and wrapping round: ties go to the first met.
      for (let step = 0; step < n; step++) {
        const c = candidates[(offset + step) % n]!
        if (c.weight <= 0) continue
        const score = (c.pending + 1) / c.weight
        if (score < bestScore) {
          best = c
          bestScore = score
        }
      }
      return best
    }
  }
}

export interface ConsistentHashOptions {
  /** Virtual nodes for an endpoint of the average weight. Default 160. */
  readonly virtualNodes?: number
}

interface Ring {
  readonly points: Uint32Array
  readonly owners: Int32Array
}

/** Same key, same endpoint; removing an endpoint moves only the keys it owned. */
export const consistentHash = <E extends { readonly id: string; readonly weight: number }>(options: ConsistentHashOptions = {}): Picker<E> => {
  const perAverage = options.virtualNodes ?? 160
  const ringOf = cached<E, Ring>((candidates) => {
    const positive = candidates.filter((c) => c.weight > 0)
    const mean = positive.reduce((sum, c) => sum + c.weight, 0) / Math.max(1, positive.length)
    const entries: Array<{ point: number; owner: number }> = []
    candidates.forEach((c, owner) => {
      if (c.weight <= 0) return
      const count = Math.max(1, Math.round((perAverage * c.weight) / mean))
      for (let v = 0; v < count; v++) entries.push({ point: ringHash(`${c.id}#${v}`), owner })
    })
    // Ties between points broken by id so the ring does not depend on the array order.
    entries.sort((x, y) => x.point - y.point || (candidates[x.owner]!.id < candidates[y.owner]!.id ? -1 : 1))
    return { points: Uint32Array.from(entries, (e) => e.point), owners: Int32Array.from(entries, (e) => e.owner) }
  })
  return {
    pick(candidates, context) {
      if (candidates.length === 0) return undefined
      const ring = ringOf(candidates)
      if (ring.points.length === 0) return undefined
      const h = ringHash(context.key ?? "")
      // The first point at or after h, wrapping round.
      let lo = 0
      let hi = ring.points.length
      while (lo < hi) {
        const mid = (lo + hi) >>> 1
        if (ring.points[mid]! < h) lo = mid + 1
        else hi = mid
      }
      return candidates[ring.owners[lo === ring.points.length ? 0 : lo]!]
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The reference's methods, over its weighted list

/**
 * The reference's weighted list (lbclient.go:583-600): round-robin across the endpoints while
 * weights remain, an endpoint of weight W appearing W times (weights truncated to integers).
 */
export const referenceList = <E extends { readonly weight: number }>(candidates: ReadonlyArray<E>): ReadonlyArray<E> => {
  const remaining = candidates.map((c) => Math.max(0, Math.floor(c.weight)))
  const list: Array<E> = []
  let left = remaining.reduce((sum, w) => sum + w, 0)
  while (left > 0) {
    for (let i = 0; i < candidates.length; i++) {
      if (remaining[i]! > 0) {
        list.push(candidates[i]!)
        remaining[i]!--
        left--
      }
    }
  }
  return list
}

const referencePicker = <E extends { readonly weight: number }>(
  choose: (list: ReadonlyArray<E>, context: PickContext) => E | undefined
): Picker<E> => {
  const listOf = cached<E, ReadonlyArray<E>>(referenceList)
  return {
    pick(candidates, context) {
      const list = listOf(candidates)
      return list.length === 0 ? undefined : choose(list, context)
    }
  }
}

/** MethodRoundrobin (0): a shared counter modulo the weighted list's length. */
export const roundRobin = <E extends { readonly weight: number }>(): Picker<E> => {
  let counter = 0
  return referencePicker((list) => list[counter++ % list.length])
}

/** MethodRandom (1): a uniform slot of the weighted list. */
export const random = <E extends { readonly weight: number }>(options: { readonly random: Random }): Picker<E> =>
  referencePicker((list) => list[Math.min(list.length - 1, Math.floor(options.random() * list.length))])

/** MethodMinPending (2, the reference's default): the round-robin slot if idle, else the fewest pending. */
export const minPending = <E extends { readonly weight: number; readonly pending: number }>(): Picker<E> => {
  let counter = 0
  return referencePicker((list) => {
    const start = list[counter++ % list.length]!
    if (start.pending === 0) return start
    let best = list[0]!
    for (let i = 1; i < list.length; i++) if (list[i]!.pending < best.pending) best = list[i]!
    return best
  })
}

/** MethodIpHash (3): FNV-1 32 of the client address modulo the weighted list's length. */
export const ipHash = <E extends { readonly weight: number }>(): Picker<E> =>
  referencePicker((list, context) => list[fnv1_32(context.clientIp ?? "") % list.length])

/** The value of query parameter `key` in a request URI, "" when absent (Go's `Query().Get`). */
export const queryValue = (uri: string, key: string): string => {
  const q = uri.indexOf("?")
  if (q === -1) return ""
  const hash = uri.indexOf("#", q)
  try {
    return new URLSearchParams(uri.slice(q + 1, hash === -1 ? undefined : hash)).get(key) ?? ""
  } catch {
    return ""
  }
}

/** MethodURIParam (4): FNV-1 32 of the query value `paramKey` modulo the weighted list's length. */
export const uriParam = <E extends { readonly weight: number }>(options: { readonly paramKey: string }): Picker<E> =>
  referencePicker((list, context) => list[fnv1_32(queryValue(context.uri ?? "", options.paramKey)) % list.length])

/** The reference's method names (`MethodRoundrobin` ... `MethodURIParam`), for configuration. */
export const referenceMethods = ["roundRobin", "random", "minPending", "ipHash", "uriParam"] as const
export type ReferenceMethod = (typeof referenceMethods)[number]
