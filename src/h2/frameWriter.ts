// HTTP/2 frame writer (RFC 9113 sections 3.4, 4, 6): the connection layer appends a turn's frames
// here and flushes them once a turn with `writeTo` (one socket write, or one writev under cork).
// It frames what it is given and nothing more: flow control (flowWindow.ts), stream states and
// HPACK (a header block is opaque bytes here) are the callers'.
//
// Memory: frames are written into a slab that later turns keep filling; a flushed segment is a
// view of the slab, which the socket may hold until written, so a filled slab is never rewritten:
// a new one takes over. A slab starts at `slabBytes` (16 KiB); when one turn fills more than half
// of it, the next is twice as large, up to `maxSlabBytes` (256 KiB); past that a turn goes on in
// further slabs of that size (the flush is then a writev of several segments). Once a turn writes
// under a quarter of the first size, a large slab is dropped and the size returns to the first.
// DATA payloads and header block fragments of `copyBelow` bytes (4 KiB) or more are not copied:
// the payload itself goes into the write beside its frame header. bench/h2Frames.ts, one turn a
// write on loopback, CPU µs per turn copied / by reference, best (median) of 11 rounds on a busy
// machine: 2 KiB 14.96 (16.57) / 15.50 (16.42), 4 KiB 15.64 (17.12) / 15.92 (16.65), 8 KiB 16.41
// (19.24) / 16.77 (17.55), 16 KiB 20.79 (29.06) / 17.71 (18.48): even to 4 KiB, by reference
// from 8 KiB on; 4 KiB also keeps a copied payload under a quarter of the first slab.
import { CLIENT_PREFACE, DEFAULT_MAX_FRAME_SIZE, Flag, FRAME_HEADER_BYTES, FrameType } from "./frames.ts"

export interface FrameWriterOptions {
  readonly slabBytes?: number
  readonly maxSlabBytes?: number
  readonly copyBelow?: number
}

/** Where a turn's frames go: a net.Socket or a TLSSocket. */
export interface BatchSink {
  write(chunk: Buffer): boolean
  cork(): void
  uncork(): void
}

/** GOAWAY debug data longer than this is cut (it is for logs; RFC 9113 6.8 sets no limit). */
export const MAX_GOAWAY_DEBUG_BYTES = 256

export class FrameWriter {
  /** The peer's SETTINGS_MAX_FRAME_SIZE: DATA and header blocks are split at it. */
  peerMaxFrameSize = DEFAULT_MAX_FRAME_SIZE
  private readonly baseSlab: number
  private readonly maxSlab: number
  private readonly copyBelow: number
  private slabSize: number
  private slab: Buffer = EMPTY
  private start = 0
  private pos = 0
  private chunks: Array<Buffer> = []
  private turnBytes = 0
  /** DATA calls so far (the connection's PING budget spares a PING that follows some: h2Connection.ts onPing). */
  dataWrites = 0

  constructor(options: FrameWriterOptions = {}) {
    this.baseSlab = options.slabBytes ?? 16_384
    this.maxSlab = Math.max(this.baseSlab, options.maxSlabBytes ?? 262_144)
    // A copied payload must fit a slab with its frame header.
    this.copyBelow = Math.min(options.copyBelow ?? 4_096, this.baseSlab - FRAME_HEADER_BYTES - MAX_GOAWAY_DEBUG_BYTES)
    this.slabSize = this.baseSlab
  }

  /** Bytes appended since the last flush. */
  get pendingBytes(): number {
    return this.turnBytes + this.pos - this.start
  }

  /** The client connection preface's magic; a SETTINGS frame must follow it. */
  preface(): void {
    this.reserve(CLIENT_PREFACE.length)
    CLIENT_PREFACE.copy(this.slab, this.pos)
    this.pos += CLIENT_PREFACE.length
  }

  settings(entries: ReadonlyArray<readonly [id: number, value: number]>): void {
    this.reserve(FRAME_HEADER_BYTES + entries.length * 6)
    this.header(entries.length * 6, FrameType.SETTINGS, 0, 0)
    for (const [id, value] of entries) {
      this.slab.writeUInt16BE(id, this.pos)
      this.slab.writeUInt32BE(value >>> 0, this.pos + 2)
      this.pos += 6
    }
  }

  settingsAck(): void {
    this.reserve(FRAME_HEADER_BYTES)
    this.header(0, FrameType.SETTINGS, Flag.ACK, 0)
  }

  /** `payload`: the 8 opaque bytes (an ACK echoes the PING's); a shorter one is zero-filled. */
  ping(payload: Buffer, ack: boolean): void {
    this.reserve(FRAME_HEADER_BYTES + 8)
    this.header(8, FrameType.PING, ack ? Flag.ACK : 0, 0)
    const copied = payload.copy(this.slab, this.pos, 0, 8)
    this.slab.fill(0, this.pos + copied, this.pos + 8)
    this.pos += 8
  }

  windowUpdate(streamId: number, increment: number): void {
    this.reserve(FRAME_HEADER_BYTES + 4)
    this.header(4, FrameType.WINDOW_UPDATE, 0, streamId)
    this.slab.writeUInt32BE(increment & 0x7fffffff, this.pos)
    this.pos += 4
  }

  rstStream(streamId: number, errorCode: number): void {
    this.reserve(FRAME_HEADER_BYTES + 4)
    this.header(4, FrameType.RST_STREAM, 0, streamId)
    this.slab.writeUInt32BE(errorCode >>> 0, this.pos)
    this.pos += 4
  }

  goAway(lastStreamId: number, errorCode: number, debug?: Buffer): void {
    const debugBytes = Math.min(debug?.length ?? 0, MAX_GOAWAY_DEBUG_BYTES)
    this.reserve(FRAME_HEADER_BYTES + 8 + debugBytes)
    this.header(8 + debugBytes, FrameType.GOAWAY, 0, 0)
    this.slab.writeUInt32BE(lastStreamId & 0x7fffffff, this.pos)
    this.slab.writeUInt32BE(errorCode >>> 0, this.pos + 4)
    if (debug !== undefined) debug.copy(this.slab, this.pos + 8, 0, debugBytes)
    this.pos += 8 + debugBytes
  }

  /**
   * An encoded header block: one HEADERS, then CONTINUATIONs if it exceeds the peer's frame size.
   * A block of `copyBelow` bytes or more is written by reference, like DATA (see `data`): an HPACK
   * encoder's reused output buffer must not be encoded into again before the socket wrote it.
   */
  headers(streamId: number, block: Buffer, endStream: boolean): void {
    const max = this.peerMaxFrameSize
    let end = Math.min(block.length, max)
    let flags = (endStream ? Flag.END_STREAM : 0) | (end === block.length ? Flag.END_HEADERS : 0)
    this.frame(FrameType.HEADERS, flags, streamId, block, 0, end)
    while (end < block.length) {
      const start = end
      end = Math.min(block.length, start + max)
      flags = end === block.length ? Flag.END_HEADERS : 0
      this.frame(FrameType.CONTINUATION, flags, streamId, block, start, end)
    }
  }

  /**
   * DATA split at the peer's frame size; END_STREAM on the last frame when asked. A payload of
   * `copyBelow` bytes or more is not copied: the caller must leave its bytes unwritten until the
   * socket has written them (the write's callback, not `take`), as with any socket.write.
   */
  data(streamId: number, payload: Buffer, endStream: boolean): void {
    this.dataWrites++
    const max = this.peerMaxFrameSize
    let start = 0
    do {
      const end = Math.min(payload.length, start + max)
      this.frame(FrameType.DATA, endStream && end === payload.length ? Flag.END_STREAM : 0, streamId, payload, start, end)
      start = end
    } while (start < payload.length)
  }

  /** The turn's bytes as buffers to write in order (undefined when nothing is pending). */
  take(): Array<Buffer> | undefined {
    this.closeSegment()
    if (this.chunks.length === 0) return undefined
    const chunks = this.chunks
    const bytes = this.turnBytes
    this.chunks = []
    this.turnBytes = 0
    if (bytes < this.baseSlab / 4 && this.slabSize > this.baseSlab) {
      // The burst is over: let the socket release the large slab, start small again.
      this.slabSize = this.baseSlab
      this.slab = EMPTY
      this.start = this.pos = 0
    }
    return chunks
  }

  /** Flushes the turn into `sink` in one write (several chunks under cork: one writev). */
  writeTo(sink: BatchSink): boolean {
    const chunks = this.take()
    if (chunks === undefined) return true
    if (chunks.length === 1) return sink.write(chunks[0]!)
    sink.cork()
    let ok = true
    for (const chunk of chunks) ok = sink.write(chunk)
    sink.uncork()
    return ok
  }

  private frame(type: number, flags: number, streamId: number, payload: Buffer, start: number, end: number): void {
    const length = end - start
    if (length >= this.copyBelow) {
      this.reserve(FRAME_HEADER_BYTES)
      this.header(length, type, flags, streamId)
      this.closeSegment()
      this.chunks.push(start === 0 && end === payload.length ? payload : payload.subarray(start, end))
      this.turnBytes += length
      return
    }
    this.reserve(FRAME_HEADER_BYTES + length)
    this.header(length, type, flags, streamId)
    payload.copy(this.slab, this.pos, start, end)
    this.pos += length
  }

  private header(length: number, type: number, flags: number, streamId: number): void {
    const b = this.slab
    const p = this.pos
    b[p] = length >>> 16
    b[p + 1] = (length >>> 8) & 0xff
    b[p + 2] = length & 0xff
    b[p + 3] = type
    b[p + 4] = flags
    b[p + 5] = (streamId >>> 24) & 0x7f
    b[p + 6] = (streamId >>> 16) & 0xff
    b[p + 7] = (streamId >>> 8) & 0xff
    b[p + 8] = streamId & 0xff
    this.pos = p + FRAME_HEADER_BYTES
  }

  /** Makes room for `bytes` contiguous bytes (never more than a first-size slab). */
  private reserve(bytes: number): void {
    if (this.pos + bytes <= this.slab.length) return
    const turn = this.pendingBytes
    this.closeSegment()
    if (turn > this.slabSize / 2) this.slabSize = Math.min(this.maxSlab, this.slabSize * 2)
    this.slab = Buffer.allocUnsafeSlow(this.slabSize)
    this.start = this.pos = 0
  }

  private closeSegment(): void {
    if (this.pos === this.start) return
    this.chunks.push(this.slab.subarray(this.start, this.pos))
    this.turnBytes += this.pos - this.start
    this.start = this.pos
  }
}

const EMPTY = Buffer.alloc(0)
