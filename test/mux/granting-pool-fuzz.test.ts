// Random pushes, reads (some waiting for bytes to come), leases, releases, cancels and leaves on
// streams in one GrantingPool; checks no stream a reader waits on is left without credit, what the
// streams may hold and be sent stays within the bound (and a chunk each past it), and the pool's
// counts return to 0 once every stream left.
import { describe, expect, it } from "vitest"
import { type GrantingPool, IncomingStream, type LeasedChunk } from "../../src/mux/streams.ts"

const chunk = 64 * 1024
const full = 1024 * 1024

const rng = (seed: number) => () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed / 0x7fffffff
}

describe("GrantingPool fuzz", () => {
  /** Seeds in which a stream was widened past its first window: the runs reach the widening at all. */
  let widenedSeeds = 0
  for (let seed = 1; seed <= 40; seed++) {
    it(`seed ${seed}`, async () => {
      const rand = rng(seed)
      // Its clock moves on by 0 to 5 ms a step: streams judged both limited by their window and not (the 1 ms round trip's scale).
      let clock = 0
      const pool: GrantingPool = { bytes: 0, committed: 0, window: full, grantsHeldAbove: 2 * full + Math.floor(rand() * 2 * full), now: () => clock }
      const streams = Array.from({ length: 6 }, () => {
        const s = { granted: 0, sent: 0, stream: undefined as unknown as IncomingStream, leases: [] as Array<LeasedChunk>, it: undefined as AsyncIterator<LeasedChunk> | undefined, waiting: false, gone: false, left: false }
        s.stream = new IncomingStream(chunk, (b) => (s.granted += b))
        return s
      })
      for (const s of streams) {
        s.stream.countUnreadIn(pool)
        s.it = s.stream.leased()[Symbol.asyncIterator]()
      }
      let widest = 0
      for (let step = 0; step < 3000; step++) {
        const s = streams[Math.floor(rand() * streams.length)]!
        clock += rand() < 0.9 ? rand() * 0.2 : rand() * 5
        const r = rand()
        const credit = chunk + s.granted - s.sent
        if (s.gone) continue
        if (r < 0.4 && credit > 0) {
          const n = Math.min(credit, 1 + Math.floor(rand() * chunk))
          s.sent += n
          expect(s.stream.push(Buffer.alloc(n))).toBe(true)
        } else if (r < 0.7 && !s.waiting) {
          // Nothing held: the reader waits for the next chunk (a reader that keeps up), taken when it comes.
          s.waiting = true
          s.it!.next().then(
            (next) => {
              s.waiting = false
              if (next.done !== true) s.leases.push(next.value)
            },
            () => (s.waiting = false)
          )
        } else if (r < 0.9 && s.leases.length > 0) {
          s.leases.shift()!.release()
        } else if (r < 0.905) {
          s.stream.discard()
          s.gone = true
        } else if (r < 0.91) {
          s.stream.abandon(new Error("cancelled"))
          s.gone = true
        } else if (r < 0.915) {
          s.stream.leaveUnreadPool()
          s.gone = true
        }
        // The reads woken by this step took their chunks.
        await new Promise<void>((resolve) => setImmediate(resolve))
        expect(pool.committed).toBeLessThanOrEqual(pool.grantsHeldAbove + streams.length * chunk)
        // Whole bytes: a fraction left in the pool would never come back to 0.
        expect(Number.isInteger(pool.committed)).toBe(true)
        // Liveness: a reader that took and released all it held is never left with nothing coming.
        if (!s.gone && s.stream.unreadBytes === 0 && s.leases.length === 0) expect(chunk + s.granted - s.sent, `seed ${seed} step ${step}`).toBeGreaterThan(0)
        expect(pool.bytes).toBeGreaterThanOrEqual(0)
        widest = Math.max(widest, credit)
      }
      if (widest > chunk) widenedSeeds++
      for (const s of streams) {
        for (const l of s.leases) l.release()
        s.stream.leaveUnreadPool()
      }
      expect(pool.bytes).toBe(0)
      expect(pool.committed).toBe(0)
    })
  }
  it("some runs widened a stream", () => {
    expect(widenedSeeds).toBeGreaterThan(0)
  })
})
