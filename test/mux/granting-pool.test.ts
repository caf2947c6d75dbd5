// IncomingStream.countUnreadIn with a GrantingPool (src/mux/streams.ts): the outbound sidecar's
// streamed answers begin with a one-chunk window and are widened to the full window as their reader
// takes them, while the pool holds no more than its bound; past it a stream is granted a chunk at a
// time, only once its reader has taken all it held. Grants are what the stream asks its connection
// to send (`/sys/window`), counted here as the sender would add them to its credit.
import { describe, expect, it } from "vitest"
import { type GrantingPool, IncomingStream } from "../../src/mux/streams.ts"

const chunk = 64 * 1024
const first = chunk
const full = 1024 * 1024

/** A pool bounded at `bound`, holding `held` bytes of other streams (unread, so committed too). */
const poolOf = (bound: number, held = 0): GrantingPool => ({ bytes: held, committed: held, window: full, grantsHeldAbove: bound })

/** A stream begun with the one-chunk window, its grants summed: `credit()` is what its sender may still send. */
const answer = (piece = chunk) => {
  let granted = 0
  let sent = 0
  const stream = new IncomingStream(first, (bytes) => (granted += bytes))
  return {
    stream,
    credit: () => first + granted - sent,
    /** The sender sends one piece of its credit. */
    sendOne: () => {
      const bytes = Math.min(piece, first + granted - sent)
      sent += bytes
      expect(stream.push(Buffer.alloc(bytes))).toBe(true)
    },
    /** The sender sends all its credit, in pieces of `piece` bytes. */
    send: () => {
      while (first + granted - sent > 0) {
        const bytes = Math.min(piece, first + granted - sent)
        sent += bytes
        expect(stream.push(Buffer.alloc(bytes))).toBe(true)
      }
    }
  }
}

/** Takes the chunks the stream holds now (a reader that keeps up); returns how many bytes. */
const readHeld = async (stream: IncomingStream): Promise<number> => {
  let bytes = 0
  const iterator = stream[Symbol.asyncIterator]()
  while (stream.unreadBytes > 0) bytes += ((await iterator.next()).value as Buffer).length
  return bytes
}

describe("IncomingStream in a GrantingPool", () => {
  it("under the bound a stream is widened to the full window as its reader takes the first chunk; one never read holds the first window", async () => {
    const pool = poolOf(8 * full)
    const read = answer()
    const stalled = answer()
    for (const a of [read, stalled]) {
      a.stream.countUnreadIn(pool)
      a.send()
    }
    expect(pool.bytes).toBe(2 * first)
    // The reader takes its chunk: granted the rest of the full window at once.
    expect(await readHeld(read.stream)).toBe(first)
    expect(read.credit()).toBe(full)
    // The one nobody reads: its sender has nothing more to send, the pool holds its first window.
    expect(stalled.credit()).toBe(0)
    expect(pool.bytes).toBe(first)
    read.send()
    expect(pool.bytes).toBe(first + full)
    expect(pool.committed).toBe(first + full)
  })

  it("the widening counts what its sender may still send: streams begun together are not all widened before their bytes arrive", async () => {
    // Room for two full windows: the first two readers are widened, the third gets a chunk.
    const pool = poolOf(2 * full + first)
    const answers = [answer(), answer(), answer()]
    for (const a of answers) {
      a.stream.countUnreadIn(pool)
      a.send()
    }
    for (const a of answers) await readHeld(a.stream)
    expect(answers.map((a) => a.credit())).toStrictEqual([full, full, chunk])
    expect(pool.committed).toBe(2 * full + chunk)
  })

  it("past the bound a reader that keeps up is granted a chunk each time it has taken all it held: served, never stalled", async () => {
    // The bound is spent by others (callers that read nothing): bytes the pool holds already.
    const pool = poolOf(full, 4 * full)
    const fast = answer()
    fast.stream.countUnreadIn(pool)
    let total = 0
    for (let round = 0; round < 20; round++) {
      fast.send()
      expect(fast.credit()).toBe(0)
      total += await readHeld(fast.stream)
      // All taken: a chunk granted, never nothing (the reader would wait for ever), never the full window.
      expect(fast.credit()).toBe(chunk)
    }
    expect(total).toBe(20 * chunk)
    expect(pool.bytes).toBe(4 * full)
    expect(pool.committed).toBe(4 * full + chunk)
  })

  it("past the bound a sender of small pieces is granted back to a chunk, never a chunk for each piece", async () => {
    const pool = poolOf(full, 4 * full)
    const a = answer(1024)
    a.stream.countUnreadIn(pool)
    const iterator = a.stream[Symbol.asyncIterator]()
    // The reader keeps up: each piece is taken as it comes, and what it may be sent stays a chunk.
    for (let piece = 0; piece < 200; piece++) {
      a.sendOne()
      await iterator.next()
      expect(a.credit() + a.stream.unreadBytes).toBeLessThanOrEqual(chunk)
    }
    expect(a.credit()).toBeGreaterThan(0)
    expect(pool.committed).toBeLessThanOrEqual(4 * full + chunk)
  })

  it("past the bound a reader behind is granted nothing while it holds bytes; back under it, the full window again", async () => {
    const pool = poolOf(2 * full)
    const slow = answer()
    slow.stream.countUnreadIn(pool)
    slow.send()
    await readHeld(slow.stream)
    slow.send()
    expect(pool.bytes).toBe(full)
    // Others fill the pool past its bound: the slow reader takes half of what it holds, and is granted nothing.
    pool.bytes += 2 * full
    pool.committed += 2 * full
    const iterator = slow.stream[Symbol.asyncIterator]()
    for (let taken = 0; taken < full / 2; taken += chunk) await iterator.next()
    expect(slow.credit()).toBe(0)
    // They go: its next take grants all it has taken.
    pool.bytes -= 2 * full
    pool.committed -= 2 * full
    await iterator.next()
    expect(slow.credit()).toBe(full / 2 + chunk)
  })

  it("leaving the pool takes back exactly what the stream added, and its grants are the plain window's again", async () => {
    const pool = poolOf(0)
    const a = answer()
    a.stream.countUnreadIn(pool)
    a.send()
    a.stream.leaveUnreadPool()
    expect(pool.bytes).toBe(0)
    expect(pool.committed).toBe(0)
    await readHeld(a.stream)
    // Out of the pool, nothing bounds it: what it took and the widening are granted.
    expect(a.credit()).toBe(full)
  })
})
