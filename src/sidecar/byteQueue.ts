// A byte queue between a source that pushes (an app's streamed answer, a socket of an upgraded
// connection) and the mesh session that pulls it as an AsyncIterable, with back-pressure: past a
// high-water mark the source is paused, and resumed once half of that is read. The app leg's
// answers (appExchange.ts, appH2Exchange.ts) and both byte pipes of an upgrade (upgradePipe.ts) use it.
// It may end with trailers, which the mesh session sends after the last byte (PROTOCOL.md §13).
// What it holds may count in a pool of its owner's (countIn: the outbound tunnels' unread bytes, the
// app legs' held answers), from its push until its reader lets it go or the queue is dropped; a reader
// that stops before the end drops what is left (nobody reads it). A chunk taken counts until the
// reader asks for the next one: the mesh's sender holds it until the caller's window lets all of it
// go (up to 64 KiB per stream whose caller grants nothing); counted only while queued, 3,000 unread
// answers of 100 KiB held ~64 KiB each at B past the budget meant to bound them. The mesh's sender
// tells it the stream's window (sendingOn), so that `abort` ends the stream at once, ahead of what is queued.
import type { Meta } from "../protocol/mesh.ts"
import type { RemoteError } from "../mux/meshChannels.ts"
import type { SendWindow, UnreadPool, WindowedBody, WithTrailers } from "../mux/streams.ts"

/** What the queue may do to its source. */
export interface PausableSource {
  readonly pause: () => void
  /** Resumes the source if it is paused (and nothing if not). */
  readonly resumeIfPaused: () => void
  /**
   * The reader waits with nothing queued: a source that sends only when asked is asked now (an
   * HTTP/1.1 caller owed its 100 Continue: http1Call.ts). Once per wait, not per chunk.
   */
  readonly wanted?: () => void
  /** Its reader let go of all it was given and nothing is queued: it waits for the source now. After a chunk, not per wait. */
  readonly allTaken?: () => void
  /** The queue holds nothing and never will again (its reader took the end, stopped, or it was dropped). Once. */
  readonly over?: () => void
}

export class PausingByteQueue implements AsyncIterable<Buffer>, WithTrailers, WindowedBody {
  private readonly highWater: number
  private readonly source: PausableSource
  private readonly onAbandoned: (refusal: RemoteError | undefined) => void
  private readonly chunks: Array<Buffer> = []
  private queued = 0
  /** Bytes of the chunk last given to the reader, held by it until it asks for the next one (counted in the pool, not in `queued`). */
  private lent = 0
  private ended = false
  private failure: Error | undefined = undefined
  private wake: (() => void) | undefined = undefined
  private trailing: Meta | undefined = undefined
  /** Why the reader stops before the end, where it says (refuse). */
  private refusal: RemoteError | undefined = undefined
  /** Where the bytes queued count too, until leavePool. */
  private pool: UnreadPool | undefined = undefined
  /** The mesh stream's window while the mesh's sender reads the queue (sendingOn). */
  private window: SendWindow | undefined = undefined
  /** `source.over` was told. */
  private told = false
  /** A reader began (the iterator was asked for). */
  private reading = false

  /** `onAbandoned`: the reader stopped before the end (it broke off or failed), with its refusal if it gave one. */
  constructor(highWater: number, source: PausableSource, onAbandoned: (refusal: RemoteError | undefined) => void) {
    this.highWater = highWater
    this.source = source
    this.onAbandoned = onAbandoned
  }

  /** Ended, failed or dropped: pushes are ignored from now on. */
  get isEnded(): boolean {
    return this.ended
  }

  /** Bytes queued now (pushed and not yet taken by the reader). */
  get queuedBytes(): number {
    return this.queued
  }

  /** Bytes held now: queued, and the chunk its reader took and has not let go of. */
  get heldBytes(): number {
    return this.queued + this.lent
  }

  /** Its reader waits for a chunk now: one pushed is taken at once. */
  get readerWaiting(): boolean {
    return this.wake !== undefined
  }

  /** The bytes it holds (queued, and the chunk its reader holds) count in `pool` from now on, until leavePool (or a drop). */
  countIn(pool: UnreadPool): void {
    if (this.pool !== undefined) return
    this.pool = pool
    pool.bytes += this.queued + this.lent
  }

  leavePool(): void {
    if (this.pool === undefined) return
    this.pool.bytes -= this.queued + this.lent
    this.pool = undefined
  }

  push(chunk: Buffer): void {
    if (this.ended) return
    this.chunks.push(chunk)
    this.queued += chunk.length
    if (this.pool !== undefined) this.pool.bytes += chunk.length
    if (this.queued > this.highWater) this.source.pause()
    this.notify()
  }

  /** The source is done: the reader gets what is queued, then the end (and these trailers). */
  end(trailers?: Meta): void {
    if (this.ended) return
    this.trailing = trailers
    this.ended = true
    this.notify()
  }

  get trailers(): Meta | undefined {
    return this.trailing
  }

  /** The source broke: the reader gets what is queued, then `error` (no reader yet: what is queued is let go of, `error` kept for one that comes). */
  fail(error: Error): void {
    if (this.ended) return
    this.ended = true
    this.failure = error
    if (!this.reading) this.empty()
    this.notify()
  }

  /** Ends here, without failing: what is queued is dropped (the reader sees the end). */
  drop(): void {
    this.ended = true
    this.empty()
    this.notify()
  }

  /**
   * Fails now, ahead of what is queued, which is dropped: the reader gets `error` at once, also one
   * the mesh's sender holds waiting for the caller's window (its window is closed with it), also
   * after its source's end while bytes are queued. For an answer taken back from a reader that
   * stopped: what it would never read is given up now.
   */
  abort(error: Error): void {
    // Ended by its source but not all read (an answer the app ended, its reader stalled): aborted
    // too. Failed already, or over (its reader took the end, or stopped): nothing to do.
    if (this.failure !== undefined || this.told) return
    this.ended = true
    this.failure = error
    this.empty()
    this.window?.close(error)
    this.notify()
  }

  /** The mesh's sender reads the queue into `window` (meshStreamOut.ts). */
  sendingOn(window: SendWindow): void {
    this.window = window
  }

  /** What is queued is let go of (out of the pool), and the source told the queue is over. */
  private empty(): void {
    this.leavePool()
    this.chunks.length = 0
    this.queued = 0
    this.lent = 0
    this.overNow()
  }

  private overNow(): void {
    if (this.told) return
    this.told = true
    this.source.over?.()
  }

  /** The reader stops here for a reason of its own (plainAnswer.ts: the answer is past the budget), which `onAbandoned` gets. */
  refuse(refusal: RemoteError): void {
    this.refusal = refusal
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    this.reading = true
    let complete = false
    try {
      for (;;) {
        const chunk = this.chunks.shift()
        if (chunk !== undefined) {
          // Out of the queue (its back-pressure), not out of the pool: the reader holds it.
          this.queued -= chunk.length
          this.lent = chunk.length
          if (this.queued <= this.highWater / 2) this.source.resumeIfPaused()
          yield chunk
          // Asked for more: the reader let it go (the mesh's sender handed all of it to its writer).
          if (this.pool !== undefined) this.pool.bytes -= this.lent
          this.lent = 0
          if (this.queued === 0) this.source.allTaken?.()
          continue
        }
        if (this.failure !== undefined) throw this.failure
        if (this.ended) {
          complete = true
          this.overNow()
          return
        }
        this.source.wanted?.()
        await new Promise<void>((resolve) => (this.wake = resolve))
      }
    } finally {
      this.window = undefined
      if (!complete) {
        this.onAbandoned(this.refusal)
        // Nobody reads on: what is left is let go of now, not when the queue is collected.
        this.empty()
      }
    }
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}
