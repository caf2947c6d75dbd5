// The send side of an HTTP/2 connection (h2Connection.ts): header blocks HPACK-encoded into the
// FrameWriter's turn batch, DATA within the send windows the peer grants (flowWindow.ts), what the
// windows do not allow yet kept in order on the stream record and sent as WINDOW_UPDATEs arrive,
// then its END_STREAM or trailers; and the write budget that tells a leg to wait (`write` false,
// `onWritable` later). It writes frames; the connection decides what they mean for stream state.
import { SendWindows } from "./flowWindow.ts"
import { FrameWriter } from "./frameWriter.ts"
import { type H2Stream, StreamState } from "./h2Streams.ts"
import { blockLengthBound, HpackEncoder } from "./hpackEncoder.ts"

/** What the sender needs of its connection. */
export interface SendHost {
  /** Our END_STREAM on the stream went to the writer. */
  sentEnd(stream: H2Stream): void
  /** The stream's leg may write again. */
  writable(stream: H2Stream): void
  /** Frames are in the batch: write them at the end of the turn. */
  flushSoon(): void
  /** A stream queued past the connection's bound. */
  overflow(stream: H2Stream): void
  /** Bytes the socket holds unwritten. */
  socketBuffered(): number
}

/** Encoded header blocks at least this long are copied out of the scratch buffer (the writer keeps large payloads by reference). */
const COPY_BLOCK_FROM = 1024

export class H2Sender {
  readonly writer = new FrameWriter()
  readonly encoder = new HpackEncoder()
  readonly windows = new SendWindows<H2Stream>()
  /** Streams with DATA waiting for the send window. */
  private readonly blocked = new Set<H2Stream>()
  /** Streams whose `write` said false for the write budget: `writable` once the socket drains. */
  private readonly waitingDrain = new Set<H2Stream>()
  private scratch = Buffer.allocUnsafe(4096)
  private readonly host: SendHost
  private readonly writeBudgetBytes: number
  private readonly maxBufferedBytes: number

  constructor(host: SendHost, writeBudgetBytes: number, maxBufferedBytes: number) {
    this.host = host
    this.writeBudgetBytes = writeBudgetBytes
    this.maxBufferedBytes = maxBufferedBytes
  }

  /** A header block (a head, or trailers with END_STREAM). */
  head(stream: H2Stream, fields: ReadonlyArray<string>, endStream: boolean): void {
    const bound = blockLengthBound(fields)
    if (this.scratch.length < bound) this.scratch = Buffer.allocUnsafe(Math.max(bound, this.scratch.length * 2))
    const end = this.encoder.encode(fields, this.scratch, 0)
    const block = end >= COPY_BLOCK_FROM ? Buffer.from(this.scratch.subarray(0, end)) : this.scratch.subarray(0, end)
    this.writer.headers(stream.id, block, endStream)
    if (endStream) this.host.sentEnd(stream)
    this.host.flushSoon()
  }

  /** DATA now as far as the windows allow, the rest queued; false when the leg should wait for `writable`. */
  data(stream: H2Stream, chunk: Buffer, endStream: boolean): boolean {
    if (stream.out !== undefined || stream.state === StreamState.QUEUED) return this.enqueue(stream, chunk, endStream)
    const n = this.windows.allowance(stream, chunk.length)
    if (n === chunk.length) {
      this.writer.data(stream.id, chunk, endStream)
      this.windows.consume(stream, n)
      if (endStream) this.host.sentEnd(stream)
      this.host.flushSoon()
      return this.underBudget(stream)
    }
    if (n > 0) {
      this.writer.data(stream.id, chunk.subarray(0, n), false)
      this.windows.consume(stream, n)
      this.host.flushSoon()
    }
    return this.enqueue(stream, chunk.subarray(n), endStream)
  }

  /** Trailers, after any DATA still queued. */
  trailers(stream: H2Stream, fields: ReadonlyArray<string>): void {
    if (stream.out === undefined && stream.state !== StreamState.QUEUED) return this.head(stream, fields, true)
    stream.outTrailers = fields
    stream.out ??= []
  }

  /** The stream has its id now: it gets the peer's initial window, and what was queued goes as it allows. */
  opened(stream: H2Stream): void {
    this.windows.add(stream)
    if (stream.out === undefined) return
    this.blocked.add(stream)
    this.drain(stream)
  }

  /** The stream is over: nothing more goes out for it. */
  forget(stream: H2Stream): void {
    this.windows.remove(stream)
    this.blocked.delete(stream)
    this.waitingDrain.delete(stream)
    stream.out = undefined
    stream.outTrailers = undefined
  }

  clear(): void {
    this.blocked.clear()
    this.waitingDrain.clear()
  }

  /** Sends what the windows allow of the stream's waiting DATA, then its END_STREAM or trailers. */
  drain(stream: H2Stream): void {
    const out = stream.out
    if (out === undefined) return
    while (out.length > 0) {
      const chunk = out[0]!
      const n = this.windows.allowance(stream, chunk.length)
      if (n === 0 && chunk.length > 0) return this.host.flushSoon()
      const whole = n === chunk.length
      const last = whole && out.length === 1
      this.writer.data(stream.id, whole ? chunk : chunk.subarray(0, n), last && stream.outEnd && stream.outTrailers === undefined)
      this.windows.consume(stream, n)
      stream.outBytes -= n
      if (whole) out.shift()
      else out[0] = chunk.subarray(n)
    }
    stream.out = undefined
    this.blocked.delete(stream)
    const trailers = stream.outTrailers
    if (trailers !== undefined) {
      stream.outTrailers = undefined
      this.head(stream, trailers, true)
    } else if (stream.outEnd) this.host.sentEnd(stream)
    this.host.flushSoon()
    if (stream.wantsWritable && stream.state !== StreamState.CLOSED && this.underBudget(stream)) {
      stream.wantsWritable = false
      this.host.writable(stream)
    }
  }

  /** The connection window grew (or every stream's did): blocked streams go on, in the order they blocked. */
  drainAll(): void {
    for (const stream of this.blocked) {
      if (this.windows.connection <= 0) return
      this.drain(stream)
    }
  }

  /** The socket wrote what it held: streams that waited for the write budget may write again. */
  drained(): void {
    if (this.waitingDrain.size === 0) return
    const waiting = [...this.waitingDrain]
    this.waitingDrain.clear()
    for (const stream of waiting)
      if (stream.wantsWritable && stream.out === undefined && stream.state !== StreamState.CLOSED) {
        stream.wantsWritable = false
        this.host.writable(stream)
      }
  }

  private enqueue(stream: H2Stream, chunk: Buffer, endStream: boolean): boolean {
    if (stream.out === undefined) {
      stream.out = []
      if (stream.id !== 0) this.blocked.add(stream)
    }
    stream.out.push(chunk)
    stream.outBytes += chunk.length
    if (endStream) stream.outEnd = true
    stream.wantsWritable = true
    if (stream.outBytes + this.host.socketBuffered() > this.maxBufferedBytes) this.host.overflow(stream)
    return false
  }

  /** False (and `writable` once the socket drains) while our unwritten bytes are past the write budget. */
  private underBudget(stream: H2Stream): boolean {
    if (this.writer.pendingBytes + this.host.socketBuffered() <= this.writeBudgetBytes) return true
    stream.wantsWritable = true
    this.waitingDrain.add(stream)
    return false
  }
}
