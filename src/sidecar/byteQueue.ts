// A byte queue between a source that pushes (an app's streamed answer, a socket of an upgraded
// connection) and the mesh session that pulls it as an AsyncIterable, with back-pressure: past a
// high-water mark the source is paused, and resumed once half of that is read. The app leg's
// answers (appExchange.ts, appH2Exchange.ts) and both byte pipes of an upgrade (upgradePipe.ts) use it.
// It may end with trailers, which the mesh session sends after the last byte (PROTOCOL.md §13).
// What it holds may count in a pool of its owner's (countIn: the outbound tunnels' unread bytes).
import type { Meta } from "../protocol/mesh.ts"
import type { RemoteError } from "../mux/meshChannels.ts"
import type { UnreadPool, WithTrailers } from "../mux/streams.ts"

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
}

export class PausingByteQueue implements AsyncIterable<Buffer>, WithTrailers {
  private readonly highWater: number
  private readonly source: PausableSource
  private readonly onAbandoned: (refusal: RemoteError | undefined) => void
  private readonly chunks: Array<Buffer> = []
  private queued = 0
  private ended = false
  private failure: Error | undefined = undefined
  private wake: (() => void) | undefined = undefined
  private trailing: Meta | undefined = undefined
  /** Why the reader stops before the end, where it says (refuse). */
  private refusal: RemoteError | undefined = undefined
  /** Where the bytes queued count too, until leavePool. */
  private pool: UnreadPool | undefined = undefined

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

  /** The bytes queued count in `pool` from now on, until leavePool (or a drop). */
  countIn(pool: UnreadPool): void {
    if (this.pool !== undefined) return
    this.pool = pool
    pool.bytes += this.queued
  }

  leavePool(): void {
    if (this.pool === undefined) return
    this.pool.bytes -= this.queued
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

  /** The source broke: the reader gets what is queued, then `error`. */
  fail(error: Error): void {
    if (this.ended) return
    this.ended = true
    this.failure = error
    this.notify()
  }

  /** Ends here, without failing: what is queued is dropped (the reader sees the end). */
  drop(): void {
    this.leavePool()
    this.ended = true
    this.chunks.length = 0
    this.queued = 0
    this.notify()
  }

  /** The reader stops here for a reason of its own (plainAnswer.ts: the answer is past the budget), which `onAbandoned` gets. */
  refuse(refusal: RemoteError): void {
    this.refusal = refusal
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    let complete = false
    try {
      for (;;) {
        const chunk = this.chunks.shift()
        if (chunk !== undefined) {
          this.queued -= chunk.length
          if (this.pool !== undefined) this.pool.bytes -= chunk.length
          if (this.queued <= this.highWater / 2) this.source.resumeIfPaused()
          yield chunk
          continue
        }
        if (this.failure !== undefined) throw this.failure
        if (this.ended) {
          complete = true
          return
        }
        this.source.wanted?.()
        await new Promise<void>((resolve) => (this.wake = resolve))
      }
    } finally {
      if (!complete) this.onAbandoned(this.refusal)
    }
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}
