// Streamed message bodies in mesh mode (PROTOCOL.md §12). An IncomingStream buffers what the
// peer sent on one channel, at most one window of it, and grants the peer more as the consumer
// reads; a StreamSender cuts an outgoing body into chunks and waits for the peer's grants and for
// the connection's writer, so a slow reader slows only its own channel. What an IncomingStream
// holds unread counts against its connection's budget (budget.ts).
//
// Two ways to read an IncomingStream. Its async iterator hands out chunks the consumer keeps as
// long as it likes (the slab a chunk was read into is then never reused: readSlabs.ts). `leased()`
// hands out each chunk as a lease on the memory it was read into: the consumer calls `release()`
// once done with the bytes (a relay: once its socket took them), the memory is read into again,
// and only then is the chunk's share of the window granted back to the sender, so what a stream's
// consumer holds unreleased is bounded by the window (the sender stalls, nothing more is read).
//
// The body of a tunnel (holdAsTunnel) counts its unread bytes in the server's tunnels' pool, never
// in the connection's budget: a chunk the pool (or its connection's share of it) has no room for
// ends the tunnel (TunnelOverloaded) instead, so stalled tunnels, however many, never make the
// server refuse ordinary requests.
//
// Where the connection grants its peer credit (meshCredit.ts, PROTOCOL.md §13 `conncredit`), every
// byte pushed goes back to it as it leaves the connection's budget (taken, dropped), or at once when
// it goes to the tunnels' pool or is dropped on arrival.
import * as Data from "effect/Data"
import { type Meta, MeshDefaults } from "../protocol/mesh.ts"
import type { InboundBudget } from "./budget.ts"
import { atEndOfRead } from "./connection.ts"
import type { StreamCredit } from "./meshCredit.ts"
import type { Slab } from "./readSlabs.ts"

export class StreamFailed extends Data.TaggedError("StreamFailed")<{ readonly message: string }> {}

/** A tunnel's chunk found no room in the server's tunnels' pool: the tunnel was ended (IncomingStream.holdAsTunnel). */
export class TunnelOverloaded extends Data.TaggedError("TunnelOverloaded")<{ readonly message: string }> {}

/**
 * A streamed body that may end with metadata (trailers, PROTOCOL.md §13): the sender reads
 * `trailers` once the body is exhausted and closes the stream with them. An IncomingStream is
 * one, so a relayed stream passes its sender's trailers on.
 */
export interface WithTrailers {
  readonly trailers: Meta | undefined
}

/**
 * A body that wants its stream's window while it is sent (meshStreamOut.ts): closing it ends the
 * stream with the closing error at once, where the sender may be waiting for the peer's grant.
 */
export interface WindowedBody {
  sendingOn(window: SendWindow): void
}

/** One chunk of a stream read with `leased()`: `bytes` stay valid until `release()` (once; later calls do nothing). */
export class LeasedChunk {
  readonly bytes: Buffer
  private slab: Slab | undefined
  private stream: IncomingStream | undefined

  constructor(bytes: Buffer, slab: Slab | undefined, stream: IncomingStream) {
    this.bytes = bytes
    this.slab = slab
    this.stream = stream
  }

  /** Done with it, though views of the bytes may still be held (a relay stopped part-way): the memory is never reused. */
  abandon(): void {
    this.slab?.taint()
    this.release()
  }

  release(): void {
    const stream = this.stream
    if (stream === undefined) return
    this.stream = undefined
    this.slab?.unref()
    this.slab = undefined
    stream.leaseReleased(this.bytes.length)
  }
}

/** A count of unread stream bytes across streams (IncomingStream.countUnreadIn). */
export interface UnreadPool {
  bytes: number
}

/**
 * A pool that also bounds what its streams are granted (the outbound sidecar's streamed answers,
 * PROTOCOL.md §13): its streams began with a window smaller than `window` (the one their
 * connection stated); counted in it, each is widened towards `window` only while its window is
 * what limits it (half of it came within two round trips of its connection, or its sender used all
 * it had; and its reader then waited for bytes), and narrowed back towards a chunk while half of it
 * takes over eight round trips (its sender leaves it unused), as long as the bytes its streams
 * hold unread or may still be sent (`committed`: their senders' credit) stay within
 * `grantsHeldAbove`. So a feed whose caller keeps up holds about its first window, not the full one
 * (every stream widened on its first read held the budget until the ones after ran a chunk at a
 * time). Past the bound, a stream is granted only once its reader has taken all it held, and then
 * a chunk at a time: a reader that keeps up is never left without bytes, and one that reads none
 * holds what its sender had when it began.
 */
export interface GrantingPool extends UnreadPool {
  readonly window: number
  readonly grantsHeldAbove: number
  committed: number
  /** Its clock, in ms (performance.now; a test's own): a stream judges its window by the time half of it took. */
  readonly now: () => number
}

/** Where a stream reads its connection's round trip (MeshSession.lastRttMs: its keep-alive pings' last). */
export interface RoundTrip {
  readonly lastRttMs: number | undefined
}

/**
 * The round trip a stream in a GrantingPool is judged by, at least: a loopback ping reads ~0.1 ms,
 * under the event loop's own turns, by which a stream's grants and bytes are paced too.
 */
const LEAST_ROUND_TRIP_MS = 1

/**
 * A stream in a GrantingPool is narrowed only when half its window took this long too (and eight
 * round trips): a download through a busy sidecar (a GC, a turn of 80 other streams) took 10-30 ms
 * for half its window now and then, and was narrowed for it; a feed takes seconds.
 */
const NARROW_PAST_MS = 50

export class IncomingStream implements AsyncIterable<Buffer>, WithTrailers {
  private readonly chunks: Array<Buffer> = []
  /** The slab each chunk lies in (undefined: a buffer of its own), one reference each. */
  private readonly slabs: Array<Slab | undefined> = []
  /** Bytes handed out as leases and not released yet (their grant waits for the release). */
  private leasedOut = 0
  private trailing: Meta | undefined = undefined
  private buffered = 0
  private ended = false
  private failure: Error | undefined
  private wake: (() => void) | undefined
  /** Its reader waits on its own writer (drainedOrFailed): woken if the stream fails meanwhile. */
  private drainWake: (() => void) | undefined = undefined
  private consumed = 0
  /** Nobody will read on (its request was answered): chunks are dropped and granted back as they come. */
  private discarded = false
  /** The body of a tunnel (`holdAsTunnel`): its unread bytes go to the tunnels' pool, or it is ended. */
  private tunnel = false
  /** Of `buffered`, the bytes counted in the tunnels' pool (the rest are in the connection's budget). */
  private pooled = 0
  /** Told once when the tunnel is ended for want of room in the pool (holdAsTunnel). */
  private onOverload: ((error: TunnelOverloaded) => void) | undefined = undefined
  /** Why the tunnel was ended, once it was for want of room in the tunnels' pool. */
  private overload: TunnelOverloaded | undefined = undefined
  /** Where its unread bytes are also counted, once `countUnreadIn` was called (the outbound sidecar's tunnels). */
  private unreadPool: UnreadPool | undefined = undefined
  /** The pool that bounds its grants, once `countUnreadIn` was given one (GrantingPool), and what it counts in its `committed`. */
  private granting: GrantingPool | undefined = undefined
  private committed = 0
  /** Since its last grant (in a GrantingPool): its sender used all its credit; its reader waited with nothing held. */
  private senderWaited = false
  private readerWaited = false
  /** A chunk since its last grant found two round trips past it (push reads the clock no more until the next grant). */
  private pastTwoRoundTrips = false
  /** When it was last granted (or joined its GrantingPool), on the pool's clock, and how much. */
  private grantedAt = 0
  private lastGrant = 0
  /** Its connection's round trip, if it knows one (a GrantingPool's stream is judged against it). */
  private readonly roundTrip: RoundTrip | undefined
  /** Dropped bytes to grant back at the end of the read they came in (grantBack), and whether that is arranged. */
  private owed = 0
  private owedDue = false
  private payOwed: (() => void) | undefined = undefined
  /** What the sender may have unacknowledged (widened and narrowed by a GrantingPool's grants). */
  private window: number
  private readonly grant: (bytes: number) => void
  private readonly budget: InboundBudget | undefined
  /** The connection credit this side grants its peer, if it does (a stream's bytes count in it). */
  private readonly credit: StreamCredit | undefined

  constructor(window: number, grant: (bytes: number) => void, budget?: InboundBudget, credit?: StreamCredit, roundTrip?: RoundTrip) {
    this.window = window
    this.grant = grant
    this.budget = budget
    this.credit = credit
    this.roundTrip = roundTrip
  }

  /**
   * Adds a chunk from the peer; false when the peer sent more than its window allows. A grant
   * meant for the previous stream on the channel may arrive after it ended and count for this
   * one, so up to twice the window is tolerated.
   */
  push(chunk: Buffer, slab?: Slab): boolean {
    // An empty chunk brings nothing and counts in no window, budget or credit: kept, each held an
    // object and its read slab, and a peer sending them without end grew the stream without bound.
    if (chunk.length === 0) return true
    // Refused before it counts anywhere: `buffered` is what discard and leaveUnreadPool take back.
    if (!this.discarded && !this.ended && this.buffered + chunk.length > 2 * this.window) return false
    const credit = this.credit
    credit?.received(chunk.length)
    if (this.discarded) {
      if (!this.ended) this.grantBack(chunk.length)
      credit?.released(chunk.length)
      return true
    }
    if (this.ended) {
      // Failed here (an unreadable chunk, its reader gone) while the sender goes on: granted back, as a discarded stream's, or the sender stalls for bytes nobody holds.
      if (this.failure !== undefined) this.grantBack(chunk.length)
      credit?.released(chunk.length)
      return true
    }
    if (this.tunnel && !this.budget!.chargeTunnel(chunk.length, this.window)) {
      this.endTunnel()
      // Dropped as a discarded stream's chunks are: granted back, so the sender can finish.
      if (!this.ended) this.grantBack(chunk.length)
      credit?.released(chunk.length)
      return true
    }
    this.buffered += chunk.length
    this.chunks.push(chunk)
    this.slabs.push(slab)
    slab?.ref()
    // In the tunnels' pool, not the connection's budget: its credit goes back at once.
    if (this.tunnel) {
      this.pooled += chunk.length
      credit?.released(chunk.length)
    } else this.budget?.charge(0, chunk.length)
    if (this.unreadPool !== undefined) this.unreadPool.bytes += chunk.length
    // Its sender has no credit left, or none but what the last grant gives it, which may still be on
    // its way within two round trips of it: the window limits it, if its reader keeps up. The clock
    // is read once a grant at most here: the first reading settles it (within: limited; past: it
    // stays past until the next grant), not one for every chunk.
    if (this.granting !== undefined && !this.senderWaited) {
      const credit = this.committed - this.buffered - this.leasedOut
      if (credit <= this.window / 4) this.senderWaited = true
      else if (credit - this.lastGrant <= this.window / 4 && !this.pastTwoRoundTrips) {
        if (this.granting.now() - this.grantedAt <= 2 * this.roundTripMs()) this.senderWaited = true
        else this.pastTwoRoundTrips = true
      }
    }
    this.notify()
    return true
  }

  /**
   * Drops what is buffered and whatever still comes, granting it back so the sender can finish:
   * the request this body belongs to was answered, and nobody will read it (a reader still
   * waiting sees the end).
   */
  discard(): void {
    if (this.discarded) return
    this.discarded = true
    const dropped = this.dropUnread()
    // Leases still out are granted now too: their release comes when it comes, the sender goes on.
    const back = dropped + this.consumed + this.leasedOut
    if (!this.ended && back > 0) this.grantBack(back)
    this.consumed = 0
    this.leasedOut = 0
    this.notify()
  }

  /**
   * Fails it and drops what it holds unread: its reader gave up (a caller cancelled its streamed
   * answer), so nobody takes those bytes; they go back to the connection's budget and credit at
   * once. A reader still iterating sees the failure; what still comes is dropped as it arrives.
   */
  abandon(error: Error): void {
    this.fail(error)
    this.dropUnread()
  }

  /**
   * Grants back bytes dropped unread: those of one read go in one grant, at its end (with the
   * read's other packets), not one per chunk, so a peer sending 1-byte chunks to a body nobody
   * reads is not sent a control packet per byte. Outside a read (a handler's answer dropped the
   * body), at once.
   */
  private grantBack(bytes: number): void {
    this.owed += bytes
    if (this.owedDue) return
    // Made the first time: most streams are read, never dropped.
    const pay = (this.payOwed ??= () => {
      const owed = this.owed
      this.owed = 0
      this.owedDue = false
      this.grant(owed)
    })
    if (atEndOfRead(pay)) this.owedDue = true
    else pay()
  }

  /** Drops the chunks held unread, giving their bytes back where they count; returns how many. */
  private dropUnread(): number {
    const dropped = this.buffered
    this.leaveUnreadPool()
    this.chunks.length = 0
    for (const slab of this.slabs) slab?.unref()
    this.slabs.length = 0
    this.buffered = 0
    if (this.pooled > 0) this.budget!.releaseTunnel(this.pooled)
    this.budget?.release(0, dropped - this.pooled)
    if (dropped > this.pooled) this.credit?.released(dropped - this.pooled)
    this.pooled = 0
    return dropped
  }

  /**
   * Its request is a tunnel (a long-lived answer began, PROTOCOL.md §8): its unread bytes count in
   * the server's tunnels' pool from now on, instead of the connection's budget, so a far end that
   * stops reading neither pauses the connection nor spends the budget of ordinary requests. When
   * the pool, or its connection's share of it (InboundBudget.tunnelRoomFor), has no room for them
   * (now, or for a chunk later) the tunnel is ended: the stream is
   * discarded (its bytes go back, the sender is granted them), and `onOverload` is told, once, for
   * the request to be ended as a cancel ends one. What it holds is still bounded by the window.
   */
  holdAsTunnel(onOverload: (error: TunnelOverloaded) => void): void {
    if (this.tunnel || this.budget === undefined || this.discarded) return
    this.tunnel = true
    this.onOverload = onOverload
    const bytes = this.buffered
    if (bytes === 0) return
    if (!this.budget.chargeTunnel(bytes, this.window)) return this.endTunnel()
    this.budget.release(0, bytes)
    this.credit?.released(bytes)
    this.pooled = bytes
  }

  /**
   * The tunnels' pool has no room for what this tunnel holds: it is ended, not let spill into the
   * connection's budget. The tunnel ended is the one whose bytes would go past the pool: the one
   * adding bytes, whose far end is behind right now, found at once with no list of tunnels to
   * search. Bytes already in the pool stay, and no tunnel is cut for bytes others send; but while
   * stalled tunnels fill the pool, any tunnel that falls behind is ended too, until they go. One
   * connection's fill only its share: past it its own tunnels are ended, not other connections'.
   */
  private endTunnel(): void {
    const error = new TunnelOverloaded({ message: "the tunnels' pool (bytes upgraded connections hold that their far ends have not read), or its connection's share of it, has no room for this tunnel's bytes" })
    this.overload = error
    this.discard()
    const told = this.onOverload
    this.onOverload = undefined
    told?.(error)
  }

  /** Why the tunnel was ended, once it was for want of room in the tunnels' pool (holdAsTunnel); undefined otherwise. */
  get overloaded(): TunnelOverloaded | undefined {
    return this.overload
  }

  /**
   * Whether the server's tunnels' pool, and its connection's share of it, have room for a whole
   * window of this stream: what it would hold there as a tunnel whose far end stops reading. For
   * the handler to decide, before it takes a new tunnel, whether to refuse it (PROTOCOL.md §8);
   * true without a budget (nothing to spend), and while they hold nothing (neither is ever smaller
   * than a window: InboundBudget.tunnelRoomFor).
   */
  tunnelPoolHasRoom(): boolean {
    return this.budget === undefined || this.budget.tunnelRoomFor(this.window, this.window)
  }

  /**
   * Counts its unread bytes in `pool` too from now on, until `leaveUnreadPool` (or a discard):
   * what the owner of the pool holds unread across streams, for it to bound.
   */
  countUnreadIn(pool: UnreadPool | GrantingPool): void {
    if (this.unreadPool !== undefined || this.discarded) return
    this.unreadPool = pool
    pool.bytes += this.buffered
    if (!("grantsHeldAbove" in pool) || pool.window <= this.window) return
    // Committed now: what it holds and what its sender may still send (the window less what was taken).
    this.granting = pool
    this.committed = this.window - this.consumed
    pool.committed += this.committed
    this.senderWaited = this.committed - this.buffered - this.leasedOut <= this.window / 4
    this.readerWaited = false
    this.pastTwoRoundTrips = false
    this.grantedAt = pool.now()
    this.lastGrant = 0
  }

  /** Its unread bytes no longer count in the pool (its reader is gone: they go when the stream does). */
  leaveUnreadPool(): void {
    if (this.unreadPool === undefined) return
    this.unreadPool.bytes -= this.buffered
    this.unreadPool = undefined
    if (this.granting === undefined) return
    this.granting.committed -= this.committed
    this.granting = undefined
    this.committed = 0
  }

  /**
   * Widens its window to `window` at once, granting the difference (a stream whose connection
   * stated a smaller one than it is to have: the outbound sidecar's tunnels, bounded otherwise).
   */
  widen(window: number): void {
    if (window <= this.window || this.ended || this.discarded) return
    this.grant(window - this.window)
    this.window = window
  }

  /** The sender ended the stream, with its trailers if it sent any. */
  end(trailers?: Meta): void {
    if (!this.ended) this.trailing = trailers
    this.ended = true
    this.notify()
  }

  /** The metadata the sender closed the stream with; known once the stream ended. */
  get trailers(): Meta | undefined {
    return this.trailing
  }

  fail(error: Error): void {
    if (this.ended) return
    this.failure = error
    this.ended = true
    // Its reader waits for its caller to take bytes (a paused caller): what it holds goes now, not
    // once that caller reads or the answer idle timeout cuts it, and the reader learns the failure.
    const away = this.drainWake
    if (away !== undefined) {
      this.drainWake = undefined
      this.dropUnread()
      away()
    }
    this.notify()
  }

  /**
   * Waits for `drained` (its reader's own writer: the caller's socket, waited on between chunks),
   * or less: a failure of the stream meanwhile (a deadline, its connection lost) drops what it holds
   * unread at once and ends the wait, so the reader goes on to the failure (the iterators throw it).
   */
  drainedOrFailed(drained: Promise<void>): Promise<void> {
    if (this.ended) return drained
    return new Promise<void>((resolve) => {
      const done = () => {
        if (this.drainWake === done) this.drainWake = undefined
        resolve()
      }
      this.drainWake = done
      drained.then(done, done)
    })
  }

  /** Chunks the consumer keeps: each is its own to hold (its slab is never read into again). */
  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      if (this.discarded) return
      const chunk = this.chunks.shift()
      if (chunk !== undefined) {
        const slab = this.slabs.shift()
        slab?.taint()
        slab?.unref()
        this.taken(chunk.length)
        this.done(chunk.length)
        yield chunk
        continue
      }
      if (this.failure !== undefined) throw this.failure
      if (this.ended) return
      if (this.leasedOut === 0) this.readerWaited = true
      await new Promise<void>((resolve) => (this.wake = resolve))
    }
  }

  /**
   * Chunks as leases on the memory they were read into (see the top of this file): release each
   * once done with its bytes. Ends, fails and stops on discard as the async iterator does; a lease
   * still out when the stream is cancelled or fails stays valid until released.
   */
  async *leased(): AsyncIterable<LeasedChunk> {
    for (;;) {
      if (this.discarded) return
      const chunk = this.chunks.shift()
      if (chunk !== undefined) {
        const lease = new LeasedChunk(chunk, this.slabs.shift(), this)
        this.taken(chunk.length)
        this.leasedOut += chunk.length
        yield lease
        continue
      }
      if (this.failure !== undefined) throw this.failure
      if (this.ended) return
      if (this.leasedOut === 0) this.readerWaited = true
      await new Promise<void>((resolve) => (this.wake = resolve))
    }
  }

  /** Bytes held that the reader has not taken yet. */
  get unreadBytes(): number {
    return this.buffered
  }

  /**
   * The oldest chunk held unread (undefined: none). Chunks leave in order, so the same one found
   * twice means the reader took nothing in between (sidecar/tunnelStalls.ts), at no cost per chunk.
   */
  get oldestUnread(): Buffer | undefined {
    return this.chunks[0]
  }

  /** A chunk left the stream's buffer for its consumer. */
  private taken(bytes: number): void {
    // The connection's part goes back first: a paused connection resumes sooner.
    const fromPool = Math.max(0, bytes - (this.buffered - this.pooled))
    this.buffered -= bytes
    if (this.unreadPool !== undefined) this.unreadPool.bytes -= bytes
    if (fromPool > 0) {
      this.pooled -= fromPool
      this.budget!.releaseTunnel(fromPool)
    }
    this.budget?.release(0, bytes - fromPool)
    if (bytes > fromPool) this.credit?.released(bytes - fromPool)
  }

  /** A lease of `bytes` was released (LeasedChunk): its bytes count towards the next grant. */
  leaseReleased(bytes: number): void {
    // After a discard every lease out was granted already.
    if (this.discarded) return
    this.leasedOut -= bytes
    this.done(bytes)
  }

  /** The consumer is done with `bytes`: they count towards the next grant. */
  private done(bytes: number): void {
    this.consumed += bytes
    const pool = this.granting
    if (pool !== undefined) {
      this.committed -= bytes
      pool.committed -= bytes
    }
    // Grant in batches of half a window: fewer control packets, the pipe never runs dry.
    if (this.consumed < this.window / 2 || this.ended) return
    if (pool === undefined) {
      this.grant(this.consumed)
      this.consumed = 0
      return
    }
    // In a GrantingPool: the window it is granted back to. Its window limits it where its sender used
    // all its credit as seen here, or where half of it came within two round trips: what this side
    // sees of the sender's credit counts the grants still on their way, so a sender that waits on them
    // seems to have credit (that alone widened a download only now and then, its window swinging
    // 64-300 KiB). Limited, and its reader waited for bytes: doubled. Half a window taking over eight
    // round trips (the sender used under a sixteenth of what it may send a round trip: a feed, a
    // burst's end; and over NARROW_PAST_MS): narrowed by a quarter, down to a chunk, not to hold what it does not use. Else
    // kept (a reader behind is not widened, it would only hold more here). One clock read a grant.
    const now = pool.now()
    const since = now - this.grantedAt
    const roundTrip = this.roundTripMs()
    const limited = this.senderWaited || since <= 2 * roundTrip
    let next = limited
      ? this.readerWaited ? Math.min(pool.window, 2 * this.window) : this.window
      : since > 8 * roundTrip && since > NARROW_PAST_MS ? Math.max(MeshDefaults.chunkBytes, this.window - Math.floor(this.window / 4)) : this.window
    // What the pool's bound leaves this stream. Past it: granted only once the reader has taken all
    // it held, what lets its sender have a chunk (what it may still send, counted: a sender of small
    // pieces is not granted a chunk for each, which let it build up its whole window again).
    const room = pool.grantsHeldAbove - pool.committed + this.committed
    if (next > room) next = room >= this.window ? room : this.buffered === 0 && this.leasedOut === 0 ? MeshDefaults.chunkBytes : 0
    if (next <= this.committed) return
    this.lastGrant = next - this.committed
    this.grant(this.lastGrant)
    pool.committed += next - this.committed
    this.committed = next
    this.window = next
    this.consumed = 0
    this.senderWaited = false
    this.readerWaited = false
    this.pastTwoRoundTrips = false
    this.grantedAt = now
  }

  /** Its connection's round trip as a GrantingPool judges it (ms): the last ping's, LEAST_ROUND_TRIP_MS at least. */
  private roundTripMs(): number {
    return Math.max(LEAST_ROUND_TRIP_MS, this.roundTrip?.lastRttMs ?? 0)
  }

  /** The whole body, up to `maxBytes`. */
  async readAll(maxBytes: number): Promise<Buffer> {
    const parts: Array<Buffer> = []
    let total = 0
    for await (const chunk of this) {
      total += chunk.length
      if (total > maxBytes) throw new StreamFailed({ message: `streamed body exceeds ${maxBytes} bytes` })
      parts.push(chunk)
    }
    return Buffer.concat(parts, total)
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}

/** Credit for one channel's outgoing stream; `take` waits while the peer has granted nothing. */
export class SendWindow {
  private credit: number
  private waiters: Array<() => void> = []
  private closedWith: Error | undefined

  constructor(initial: number) {
    this.credit = initial
  }

  add(bytes: number): void {
    this.credit += bytes
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  /** `wake` runs on the next change (credit added, or the window closed). */
  onChange(wake: () => void): void {
    this.waiters.push(wake)
  }

  /** `wake`, given to onChange, is not to run any more (it was woken by something else). */
  offChange(wake: () => void): void {
    const index = this.waiters.indexOf(wake)
    if (index !== -1) this.waiters.splice(index, 1)
  }

  /** Closes it with `error`; closed already, it keeps its first reason (a tunnel ended `overloaded`, then cancelled, ended `overloaded`). */
  close(error: Error): void {
    if (this.closedWith !== undefined) return
    this.closedWith = error
    this.add(0)
  }

  /** What the window was closed with (the answer was interrupted, or the connection closed); undefined while open. */
  get closedError(): Error | undefined {
    return this.closedWith
  }

  /** Takes up to `want` bytes of credit if there is any (0 when there is none, or the window closed). */
  takeNow(want: number): number {
    if (this.closedWith !== undefined || this.credit <= 0) return 0
    const granted = Math.min(want, this.credit)
    this.credit -= granted
    return granted
  }

  /** Waits for credit, then takes up to `want` bytes of it. */
  async take(want: number): Promise<number> {
    for (;;) {
      if (this.closedWith !== undefined) throw this.closedWith
      if (this.credit > 0) {
        const granted = Math.min(want, this.credit)
        this.credit -= granted
        return granted
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve))
    }
  }
}
