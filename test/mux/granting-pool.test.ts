// IncomingStream.countUnreadIn with a GrantingPool (src/mux/streams.ts): the outbound sidecar's
// streamed answers begin with a one-chunk window, doubled each round trip while it is what limits
// them (half of it came within two round trips, or their sender used all it had; their reader then
// waited) up to the full window, and narrowed back to a chunk while their sender leaves it unused, while the pool holds no more than its bound;
// past it a stream is granted a chunk at a time, only once its reader has taken all it held. Grants are what the stream asks its connection
// to send (`/sys/window`), counted here as the sender would add them to its credit.
import { describe, expect, it } from "vitest"
import { type GrantingPool, IncomingStream } from "../../src/mux/streams.ts"

const chunk = 64 * 1024
const first = chunk
const full = 1024 * 1024

/** The pools' clock (ms): a round trip of `stream` moves it on by one (the least round trip a stream is judged by). */
const clock = { ms: 0 }

/** A pool bounded at `bound`, holding `held` bytes of other streams (unread, so committed too). */
const poolOf = (bound: number, held = 0): GrantingPool => ({ bytes: held, committed: held, window: full, grantsHeldAbove: bound, now: () => clock.ms })

/**
 * A stream begun with the one-chunk window, its grants summed: `credit()` is what its sender may
 * still send; `widest()` the widest window a grant gave it (its credit then, with what it sent that
 * was not taken yet: a stream's chunk is taken before the grant it makes).
 */
const answer = (piece = chunk) => {
  let granted = 0
  let grants = 0
  let sent = 0
  let widest = first
  const stream: IncomingStream = new IncomingStream(first, (bytes) => {
    granted += bytes
    grants++
    widest = Math.max(widest, first + granted - sent + stream.unreadBytes)
  })
  return {
    stream,
    credit: () => first + granted - sent,
    widest: () => widest,
    /** How many grants the stream made. */
    grants: () => grants,
    /** The sender sends one piece of its credit. */
    sendOne: () => {
      const bytes = Math.min(piece, first + granted - sent)
      sent += bytes
      expect(stream.push(Buffer.alloc(bytes))).toBe(true)
    },
    /** The sender sends all its credit (or `upTo` of it), in pieces of `piece` bytes. */
    send: (upTo = Number.POSITIVE_INFINITY) => {
      const end = Math.min(first + granted, sent + upTo)
      while (end - sent > 0) {
        const bytes = Math.min(piece, end - sent)
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

/** Every promise job queued so far has run: a reader looping on the stream took what it could. */
const settled = () => new Promise<void>((resolve) => setImmediate(resolve))

/** A reader that takes every chunk as it comes (a caller that keeps up), counting the bytes. */
const keepUp = (stream: IncomingStream) => {
  const state = { bytes: 0 }
  void (async () => {
    for await (const chunk of stream) state.bytes += chunk.length
  })()
  return state
}

/**
 * Its sender sends `total` bytes as its credit allows, its reader keeping up: the round trips it
 * took (a round: the sender sends all the credit it has, the reader takes it all and grants what it
 * grants; on a network each is a round trip), and the widest window its grants gave it.
 */
const stream = async (a: ReturnType<typeof answer>, total: number): Promise<{ rounds: number; most: number }> => {
  const reader = keepUp(a.stream)
  let sent = 0
  let rounds = 0
  let most = 0
  while (sent < total) {
    const bytes = Math.min(a.credit(), total - sent)
    if (bytes === 0) throw new Error(`no credit after ${sent} bytes: the reader holds ${a.stream.unreadBytes}`)
    a.send(bytes)
    sent += bytes
    rounds++
    clock.ms += 1
    await settled()
    most = Math.max(most, a.widest())
  }
  expect(reader.bytes).toBe(total)
  return { rounds, most }
}

describe("IncomingStream in a GrantingPool", () => {
  it("feeds whose callers kept up and then wait do not spend the bound: a download after them is widened to the full window", async () => {
    // Bound 8 MiB; 16 feeds each read 128 KiB and stay open (an SSE feed, a gRPC watch between events).
    const pool = poolOf(8 * full)
    for (let i = 0; i < 16; i++) {
      const feed = answer()
      feed.stream.countUnreadIn(pool)
      await stream(feed, 128 * 1024)
    }
    expect(pool.bytes).toBe(0)
    const feeds = pool.committed
    const download = answer()
    download.stream.countUnreadIn(pool)
    // Window-limited (its sender uses all it has, its reader waits): widened to the full window, an
    // 8 MiB download goes in a few more round trips than its 8 MiB; a chunk a round trip would be 128.
    const { rounds } = await stream(download, 8 * full)
    expect(rounds).toBeLessThanOrEqual(24)
    // Each feed holds what it may still be sent: about what it needed, not the full window (16 MiB would pass the bound).
    expect(feeds).toBeLessThanOrEqual(16 * 256 * 1024)
  })

  it("under the bound a stream its window limits is doubled each round trip up to the full window; one never read holds the first window", async () => {
    const pool = poolOf(8 * full)
    const read = answer()
    const stalled = answer()
    read.stream.countUnreadIn(pool)
    stalled.stream.countUnreadIn(pool)
    stalled.send()
    // Its sender has 1.5 times more each round trip (a grant goes at half the window), then 1 MiB:
    // 4 MiB in 10 (64 KiB each: 64).
    const { rounds, most } = await stream(read, 4 * full)
    expect(rounds).toBeLessThanOrEqual(10)
    expect(most).toBe(full)
    // The one nobody reads: its sender has nothing more to send, the pool holds its first window.
    expect(stalled.credit()).toBe(0)
    expect(pool.bytes).toBe(first)
  })

  it("a sender whose grants reach it a round trip late (on their way while it sends) is widened to the full window all the same", async () => {
    // What a sidecar sees of its sender's credit counts the grants still on their way: a sender that
    // sends all it may, each chunk taken as it comes, waits for grants made while its last chunks
    // came, and seems to have credit here ("it used all its credit" showed only now and then).
    const pool = poolOf(8 * full)
    const a = answer()
    a.stream.countUnreadIn(pool)
    const reader = keepUp(a.stream)
    const total = 8 * full
    let sent = 0
    let reached = 0
    let rounds = 0
    while (sent < total) {
      // A round trip: it sends what the grants that reached it allow, a chunk at a time, each taken
      // (and granted for, at half a window) before the next comes; grants made in it reach it at the next.
      const upTo = Math.min(first + reached, total)
      while (sent < upTo) {
        const bytes = Math.min(chunk, upTo - sent)
        a.send(bytes)
        sent += bytes
        await settled()
      }
      reached = a.credit() + sent - first
      rounds++
      clock.ms += 1
      if (rounds > 200) throw new Error(`${sent} bytes in 200 round trips`)
    }
    await settled()
    expect(reader.bytes).toBe(total)
    expect(a.widest()).toBe(full)
    // 8 MiB: a chunk a round trip would be 128.
    expect(rounds).toBeLessThanOrEqual(24)
  })

  it("a stream widened for a burst is narrowed back to a chunk while its sender leaves its window unused (a feed)", async () => {
    const pool = poolOf(8 * full)
    const a = answer(16 * 1024)
    a.stream.countUnreadIn(pool)
    expect((await stream(a, 4 * full)).most).toBe(full)
    // Now a piece every 100 ms, each taken as it comes: the sender never uses all it may send.
    for (let piece = 0; piece < 128; piece++) {
      a.sendOne()
      await settled()
      clock.ms += 100
    }
    expect(a.widest()).toBe(full)
    expect(pool.committed).toBeLessThanOrEqual(chunk)
  })

  it("widening stays within the bound: three downloads at once share it, each served every round trip", async () => {
    const pool = poolOf(2 * full + first)
    const answers = [answer(), answer(), answer()]
    const readers = answers.map((a) => {
      a.stream.countUnreadIn(pool)
      return keepUp(a.stream)
    })
    for (let round = 0; round < 24; round++) {
      const before = readers.map((r) => r.bytes)
      for (const a of answers) a.send()
      // What they may hold and still be sent, together: the bound (a stream past it holds a chunk at most).
      expect(pool.committed).toBeLessThanOrEqual(2 * full + first)
      await settled()
      readers.forEach((r, i) => expect(r.bytes, `stream ${i} round ${round}`).toBeGreaterThan(before[i]!))
    }
    // Three full windows do not fit: the round trips' bytes, together, stay within the bound.
    expect(readers.reduce((sum, r) => sum + r.bytes, 0)).toBeLessThanOrEqual(24 * (2 * full + first))
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

  it("a reader behind is not widened, and past the bound it is granted nothing while it holds bytes", async () => {
    const pool = poolOf(2 * full)
    const slow = answer(16 * 1024)
    slow.stream.countUnreadIn(pool)
    const iterator = slow.stream[Symbol.asyncIterator]()
    // The reader takes what is there and never waits for more: its sender waits, the window is kept.
    for (let round = 0; round < 8; round++) {
      slow.send()
      while (slow.stream.unreadBytes > 0) await iterator.next()
      expect(slow.credit() + slow.stream.unreadBytes).toBeLessThanOrEqual(first)
    }
    slow.send()
    // Others fill the pool past its bound: the slow reader takes half of what it holds, and is granted nothing.
    pool.bytes += 2 * full
    pool.committed += 2 * full
    for (let taken = 0; taken < first / 2; taken += 16 * 1024) await iterator.next()
    expect(slow.credit()).toBe(0)
    // They go: its next take grants all it has taken.
    pool.bytes -= 2 * full
    pool.committed -= 2 * full
    await iterator.next()
    expect(slow.credit()).toBe(first - 16 * 1024)
  })

  it("leaving the pool takes back exactly what the stream added; its grants then go on in the window it had", async () => {
    const pool = poolOf(8 * full)
    const a = answer()
    a.stream.countUnreadIn(pool)
    await stream(a, 2 * full)
    a.send()
    a.stream.leaveUnreadPool()
    expect(pool.bytes).toBe(0)
    expect(pool.committed).toBe(0)
    // Its reader takes what it held: granted back, never past the full window.
    await settled()
    expect(a.credit()).toBeGreaterThan(0)
    expect(a.credit()).toBeLessThanOrEqual(full)
  })

  it("reads its clock about once a grant, not once a chunk (a sender of 1 KiB pieces, a reader that keeps up)", async () => {
    let reads = 0
    const pool: GrantingPool = { ...poolOf(64 * full), now: () => (reads++, clock.ms) }
    const a = answer(1024)
    a.stream.countUnreadIn(pool)
    const iterator = a.stream[Symbol.asyncIterator]()
    for (let i = 0; i < 4000; i++) {
      // Under a third of the least round trip a piece: a few pieces within two round trips of a grant, most past them.
      clock.ms += 0.3
      a.sendOne()
      while (a.stream.unreadBytes > 0) await iterator.next()
    }
    expect(a.grants()).toBeGreaterThan(50)
    // At most one reading a grant in push, one at the grant itself (was one a piece past the grant: 2234 for 125 grants).
    expect(reads).toBeLessThanOrEqual(2 * a.grants() + 2)
  })
})
