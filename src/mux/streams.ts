// Streamed message bodies in mesh mode (PROTOCOL.md §12). An IncomingStream buffers what the
// peer sent on one channel, at most one window of it, and grants the peer more as the consumer
// reads; a StreamSender cuts an outgoing body into chunks and waits for the peer's grants and for
// the connection's writer, so a slow reader slows only its own channel. What an IncomingStream
// holds unread counts against its connection's budget (budget.ts).
import * as Data from "effect/Data"
import type { Meta } from "../protocol/mesh.ts"
import type { InboundBudget } from "./budget.ts"

export class StreamFailed extends Data.TaggedError("StreamFailed")<{ readonly message: string }> {}

/**
 * A streamed body that may end with metadata (trailers, PROTOCOL.md §13): the sender reads
 * `trailers` once the body is exhausted and closes the stream with them. An IncomingStream is
 * one, so a relayed stream passes its sender's trailers on.
 */
export interface WithTrailers {
  readonly trailers: Meta | undefined
}

export class IncomingStream implements AsyncIterable<Buffer>, WithTrailers {
  private readonly chunks: Array<Buffer> = []
  private trailing: Meta | undefined = undefined
  private buffered = 0
  private ended = false
  private failure: Error | undefined
  private wake: (() => void) | undefined
  private consumed = 0
  /** Nobody will read on (its request was answered): chunks are dropped and granted back as they come. */
  private discarded = false
  private readonly window: number
  private readonly grant: (bytes: number) => void
  private readonly budget: InboundBudget | undefined

  constructor(window: number, grant: (bytes: number) => void, budget?: InboundBudget) {
    this.window = window
    this.grant = grant
    this.budget = budget
  }

  /**
   * Adds a chunk from the peer; false when the peer sent more than its window allows. A grant
   * meant for the previous stream on the channel may arrive after it ended and count for this
   * one, so up to twice the window is tolerated.
   */
  push(chunk: Buffer): boolean {
    if (this.discarded) {
      if (!this.ended) this.grant(chunk.length)
      return true
    }
    if (this.ended) return true
    this.buffered += chunk.length
    if (this.buffered > 2 * this.window) return false
    this.chunks.push(chunk)
    this.budget?.charge(0, chunk.length)
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
    const dropped = this.buffered
    this.chunks.length = 0
    this.buffered = 0
    this.budget?.release(0, dropped)
    if (!this.ended && dropped + this.consumed > 0) this.grant(dropped + this.consumed)
    this.consumed = 0
    this.notify()
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
    this.notify()
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      if (this.discarded) return
      const chunk = this.chunks.shift()
      if (chunk !== undefined) {
        this.buffered -= chunk.length
        this.budget?.release(0, chunk.length)
        this.consumed += chunk.length
        // Grant in batches of half a window: fewer control packets, the pipe never runs dry.
        if (this.consumed >= this.window / 2 && !this.ended) {
          this.grant(this.consumed)
          this.consumed = 0
        }
        yield chunk
        continue
      }
      if (this.failure !== undefined) throw this.failure
      if (this.ended) return
      await new Promise<void>((resolve) => (this.wake = resolve))
    }
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

  close(error: Error): void {
    this.closedWith = error
    this.add(0)
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
