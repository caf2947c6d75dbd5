// A small seeded PRNG (mulberry32) for property-style tests: every run with the same seed draws the
// same values, so a failing seed can be replayed. No fast-check is installed in this project.

export interface Prng {
  /** Uniform float in [0, 1). */
  readonly next: () => number
  /** Uniform integer in [min, max] (inclusive). */
  readonly int: (min: number, max: number) => number
  /** One element of a non-empty array. */
  readonly pick: <A>(items: ReadonlyArray<A>) => A
  /** `n` random bytes. */
  readonly bytes: (n: number) => Buffer
}

export const prng = (seed: number): Prng => {
  let state = seed >>> 0
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (min: number, max: number): number => min + Math.floor(next() * (max - min + 1))
  const pick = <A>(items: ReadonlyArray<A>): A => items[int(0, items.length - 1)]!
  const bytes = (n: number): Buffer => {
    const out = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) out[i] = int(0, 255)
    return out
  }
  return { next, int, pick, bytes }
}

/** Cuts `buffer` at random places into consecutive chunks (views), none empty. */
export const randomSplit = (rng: Prng, buffer: Buffer, maxChunk: number): Array<Buffer> => {
  const chunks: Array<Buffer> = []
  let offset = 0
  while (offset < buffer.length) {
    const size = Math.min(rng.int(1, maxChunk), buffer.length - offset)
    chunks.push(buffer.subarray(offset, offset + size))
    offset += size
  }
  return chunks
}
