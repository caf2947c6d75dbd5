// HTTP/2 frame reader (RFC 9113 sections 3.4, 4, 6): the connection layer feeds it every socket chunk
// as it arrives; it checks the client preface (server side), splits the byte stream into frames by
// their 9-byte header, validates each frame on its own (lengths, stream 0 rules, padding, header
// block continuity, setting values) and calls one handler method per frame with numbers and
// subarrays. Stream states, HPACK and flow-control accounting belong to the layer above.
//
// Buffers: a frame that lies whole in a chunk is handed on as a view of that chunk (no copy); so
// is every piece of a DATA frame that spans chunks (its payload arrives in several onData calls).
// Other frames that span chunks are assembled in a buffer of their declared length, allocated only
// after that length passed the SETTINGS_MAX_FRAME_SIZE check. The reader keeps no view of a chunk
// once `feed` returns (an open header block's fragments are copied then: only blocks of several
// frames, which are rare), so the views the handler gets are valid for as long as the caller keeps
// the chunk's memory unwritten: with Node's own reads (a fresh buffer each) for ever, with reused
// read slabs (src/mux/readSlabs.ts) until the handler gives them back. The reader never writes a
// buffer it handed on.
import {
  CLIENT_PREFACE,
  connectionError,
  DEFAULT_MAX_FRAME_SIZE,
  ErrorCode,
  Flag,
  FRAME_HEADER_BYTES,
  FrameType,
  type H2FrameError,
  MAX_WINDOW_SIZE,
  MAX_MAX_FRAME_SIZE,
  SettingId,
  streamError
} from "./frames.ts"

export interface FrameHandler {
  /**
   * DATA payload, padding stripped. A frame split across chunks comes in several calls; only the
   * last carries `endStream`. `flowLength` is what the call's part of the frame counts against
   * flow control (padding and the pad length byte included); over a frame's calls it sums to the
   * frame's length. `data` may be empty (a frame of padding only, or padding read in a later chunk).
   */
  onData(streamId: number, data: Buffer, flowLength: number, endStream: boolean): void
  /** A whole header block (HEADERS and its CONTINUATIONs joined, padding and priority removed). */
  onHeaders(streamId: number, block: Buffer, endStream: boolean): void
  onRstStream(streamId: number, errorCode: number): void
  /** One known setting of a SETTINGS frame, already checked; unknown ids are skipped. */
  onSetting(id: number, value: number): void
  /** The SETTINGS frame whose settings were just delivered is over: apply them, then ACK. */
  onSettingsEnd(): void
  onSettingsAck(): void
  /** `payload` is the frame's 8 opaque bytes. */
  onPing(payload: Buffer, ack: boolean): void
  onGoAway(lastStreamId: number, errorCode: number, debug: Buffer): void
  onWindowUpdate(streamId: number, increment: number): void
  /**
   * The peer broke a rule. After a connection error the reader ignores all further input; after
   * a stream error it goes on with the next frame.
   */
  onError(error: H2FrameError): void
}

export interface FrameReaderOptions {
  /** "server" reads the client preface first. Either role refuses PUSH_PROMISE (see below). */
  readonly role: "server" | "client"
  /** The SETTINGS_MAX_FRAME_SIZE this side announced (default 16,384). */
  readonly maxFrameSize?: number
  /** Budget for one header block as received, HEADERS and CONTINUATIONs together (default 64 KiB). */
  readonly maxHeaderBlockBytes?: number
  /** CONTINUATION frames allowed in one header block (default 8, as nghttp2; a 64 KiB block needs 4 at 16 KiB). */
  readonly maxContinuations?: number
}

const MODE_NONE = 0
/** Assembling a non-DATA frame that spans chunks. */
const MODE_BUFFER = 1
/** Passing through a DATA frame that spans chunks, piece by piece. */
const MODE_DATA = 2
/** Dropping the rest of a frame that is ignored or ended in a stream error. */
const MODE_SKIP = 3

/** What a frame's header allows: the connection failed, read the payload, or skip it. */
const FAILED = 0
const READ = 1
const SKIP = 2

export class FrameReader {
  /** Frames read so far, ignored ones included: the connection layer's flood guards count with it. */
  frames = 0
  private failed = false
  private prefaceLeft: number
  private settingsSeen = false
  private readonly maxFrameSize: number
  private readonly maxHeaderBlockBytes: number
  private readonly maxContinuations: number

  private readonly head = Buffer.alloc(FRAME_HEADER_BYTES)
  private headHave = 0
  private type = 0
  private flags = 0
  private streamId = 0
  private length = 0

  private mode = MODE_NONE
  private payload: Buffer | undefined = undefined
  private have = 0
  /** Bytes of the current frame not yet read (MODE_DATA, MODE_SKIP). */
  private left = 0
  private padLeft = 0
  private needPadLength = false

  /** The stream whose header block is open (0: none), its fragments so far and their total size. */
  private blockStream = 0
  private blockParts: Array<Buffer> = []
  private blockBytes = 0
  private blockEndStream = false
  private blockContinuations = 0
  /** blockParts before this index are the reader's own copies, not views of a fed chunk. */
  private blockBorrowed = 0

  private readonly handler: FrameHandler
  private readonly isClient: boolean

  constructor(handler: FrameHandler, options: FrameReaderOptions) {
    this.handler = handler
    this.isClient = options.role === "client"
    this.prefaceLeft = options.role === "server" ? CLIENT_PREFACE.length : 0
    this.maxFrameSize = options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE
    this.maxHeaderBlockBytes = options.maxHeaderBlockBytes ?? 65_536
    this.maxContinuations = options.maxContinuations ?? 8
  }

  /** True once a connection error was reported: the connection must end (GOAWAY, then close). */
  get hasFailed(): boolean {
    return this.failed
  }

  /**
   * Ends reading for a connection error the layer above found in a handler call (flow control,
   * stream states, HPACK): the rest of the chunk being read and every later one are ignored, as
   * after the reader's own connection errors, so no frame is acted on after the GOAWAY is decided.
   */
  stop(): void {
    this.failed = true
    this.mode = MODE_NONE
    this.payload = undefined
    this.blockParts = []
    this.blockBorrowed = 0
  }

  /**
   * Reads `chunk`. Once it returns the reader holds no view of it (the fragments of a header block
   * still open are copied then), so the caller may read into the chunk's memory again as soon as
   * the handler gave back the views it was handed (src/mux/readSlabs.ts' ref/unref).
   */
  feed(chunk: Buffer): void {
    this.read(chunk)
    if (this.blockBorrowed < this.blockParts.length) this.ownBlockParts()
  }

  private read(chunk: Buffer): void {
    if (this.failed) return
    const end = chunk.length
    let pos = 0
    if (this.prefaceLeft > 0) pos = this.readPreface(chunk)
    while (pos < end && !this.failed) {
      if (this.mode !== MODE_NONE) {
        pos = this.continueFrame(chunk, pos)
        continue
      }
      if (this.headHave === 0 && end - pos >= FRAME_HEADER_BYTES) {
        this.readHeader(chunk, pos)
        pos += FRAME_HEADER_BYTES
      } else {
        const n = Math.min(FRAME_HEADER_BYTES - this.headHave, end - pos)
        chunk.copy(this.head, this.headHave, pos, pos + n)
        this.headHave += n
        pos += n
        if (this.headHave < FRAME_HEADER_BYTES) return
        this.headHave = 0
        this.readHeader(this.head, 0)
      }
      this.frames++
      const action = this.checkHeader()
      if (action === FAILED) return
      const length = this.length
      if (action === SKIP) {
        if (end - pos >= length) pos += length
        else this.begin(MODE_SKIP, length)
      } else if (end - pos >= length) {
        this.dispatch(chunk, pos, pos + length)
        pos += length
      } else if (this.type === FrameType.DATA) {
        this.begin(MODE_DATA, length)
        this.needPadLength = (this.flags & Flag.PADDED) !== 0
        this.padLeft = 0
      } else {
        this.begin(MODE_BUFFER, length)
        this.payload = Buffer.allocUnsafe(length)
        this.have = 0
      }
    }
  }

  /** Copies the open header block's fragments read in this feed: they may be views of its chunk. */
  private ownBlockParts(): void {
    for (let i = this.blockBorrowed; i < this.blockParts.length; i++) this.blockParts[i] = Buffer.from(this.blockParts[i]!)
    this.blockBorrowed = this.blockParts.length
  }

  private readPreface(chunk: Buffer): number {
    const offset = CLIENT_PREFACE.length - this.prefaceLeft
    const n = Math.min(this.prefaceLeft, chunk.length)
    for (let i = 0; i < n; i++) {
      if (chunk[i] !== CLIENT_PREFACE[offset + i]) {
        this.fail(connectionError(ErrorCode.PROTOCOL_ERROR, "bad-preface", "the connection did not start with the HTTP/2 client preface"))
        return chunk.length
      }
    }
    this.prefaceLeft -= n
    return n
  }

  private readHeader(buf: Buffer, at: number): void {
    this.length = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!
    this.type = buf[at + 3]!
    this.flags = buf[at + 4]!
    // The reserved bit is ignored (RFC 9113 4.1).
    this.streamId = buf.readUInt32BE(at + 5) & 0x7fffffff
  }

  private begin(mode: number, left: number): void {
    this.mode = mode
    this.left = left
  }

  /** The rules a frame's header alone decides, checked before any payload byte is kept. */
  private checkHeader(): number {
    const { type, flags, streamId, length } = this
    if (length > this.maxFrameSize)
      return this.fail(connectionError(ErrorCode.FRAME_SIZE_ERROR, "frame-too-large", `a frame of ${length} bytes exceeds SETTINGS_MAX_FRAME_SIZE ${this.maxFrameSize}`))
    if (this.blockStream !== 0 && (type !== FrameType.CONTINUATION || streamId !== this.blockStream))
      return this.fail(protocol("interleaved-header-block", `frame type ${type} on stream ${streamId} inside the header block of stream ${this.blockStream}`))
    if (!this.settingsSeen) {
      if (type !== FrameType.SETTINGS || (flags & Flag.ACK) !== 0) return this.fail(protocol("preface-settings", `the peer's first frame is type ${type}, not SETTINGS`))
      this.settingsSeen = true
    }
    switch (type) {
      case FrameType.DATA:
        if (streamId === 0) return this.fail(protocol("stream-zero", "DATA on stream 0"))
        if ((flags & Flag.PADDED) !== 0 && length < 1) return this.fail(frameSize("short-frame", "padded DATA without a pad length"))
        return READ
      case FrameType.HEADERS: {
        if (streamId === 0) return this.fail(protocol("stream-zero", "HEADERS on stream 0"))
        const fixed = ((flags & Flag.PADDED) !== 0 ? 1 : 0) + ((flags & Flag.PRIORITY) !== 0 ? 5 : 0)
        if (length < fixed) return this.fail(frameSize("short-frame", `HEADERS of ${length} bytes cannot hold its ${fixed} bytes of pad length and priority`))
        return READ
      }
      case FrameType.PRIORITY:
        if (streamId === 0) return this.fail(protocol("stream-zero", "PRIORITY on stream 0"))
        if (length !== 5) return this.streamFail(streamError(streamId, ErrorCode.FRAME_SIZE_ERROR, "fixed-length", `PRIORITY of ${length} bytes, not 5`))
        return READ
      case FrameType.RST_STREAM:
        if (streamId === 0) return this.fail(protocol("stream-zero", "RST_STREAM on stream 0"))
        if (length !== 4) return this.fail(frameSize("fixed-length", `RST_STREAM of ${length} bytes, not 4`))
        return READ
      case FrameType.SETTINGS:
        if (streamId !== 0) return this.fail(protocol("stream-nonzero", `SETTINGS on stream ${streamId}`))
        if ((flags & Flag.ACK) !== 0 && length !== 0) return this.fail(frameSize("fixed-length", `SETTINGS ACK with ${length} bytes of payload`))
        if (length % 6 !== 0) return this.fail(frameSize("fixed-length", `SETTINGS of ${length} bytes, not a multiple of 6`))
        return READ
      case FrameType.PUSH_PROMISE:
        // A client never enables push (the writer's settings announce ENABLE_PUSH 0) and a server
        // never receives it (RFC 9113 8.4).
        return this.fail(protocol("push-promise", `PUSH_PROMISE on stream ${streamId}: push is disabled`))
      case FrameType.PING:
        if (streamId !== 0) return this.fail(protocol("stream-nonzero", `PING on stream ${streamId}`))
        if (length !== 8) return this.fail(frameSize("fixed-length", `PING of ${length} bytes, not 8`))
        return READ
      case FrameType.GOAWAY:
        if (streamId !== 0) return this.fail(protocol("stream-nonzero", `GOAWAY on stream ${streamId}`))
        if (length < 8) return this.fail(frameSize("fixed-length", `GOAWAY of ${length} bytes, under 8`))
        return READ
      case FrameType.WINDOW_UPDATE:
        if (length !== 4) return this.fail(frameSize("fixed-length", `WINDOW_UPDATE of ${length} bytes, not 4`))
        return READ
      case FrameType.CONTINUATION:
        if (streamId === 0) return this.fail(protocol("stream-zero", "CONTINUATION on stream 0"))
        if (this.blockStream === 0) return this.fail(protocol("continuation-without-headers", `CONTINUATION on stream ${streamId} with no header block open`))
        return READ
      default:
        // Unknown frame types are ignored (RFC 9113 4.1, 5.5).
        return SKIP
    }
  }

  private continueFrame(chunk: Buffer, pos: number): number {
    const end = chunk.length
    if (this.mode === MODE_SKIP) {
      const n = Math.min(end - pos, this.left)
      this.left -= n
      if (this.left === 0) this.mode = MODE_NONE
      return pos + n
    }
    if (this.mode === MODE_BUFFER) {
      const payload = this.payload!
      const n = Math.min(end - pos, this.length - this.have)
      chunk.copy(payload, this.have, pos, pos + n)
      this.have += n
      if (this.have === this.length) {
        this.mode = MODE_NONE
        this.payload = undefined
        this.dispatch(payload, 0, payload.length)
      }
      return pos + n
    }
    // MODE_DATA: hand each arriving piece on at once.
    let flow = 0
    if (this.needPadLength) {
      const padLength = chunk[pos++]!
      this.needPadLength = false
      this.left--
      flow++
      if (padLength > this.left) {
        this.fail(protocol("padding", `DATA padding of ${padLength} bytes in a ${this.length}-byte frame`))
        return end
      }
      this.padLeft = padLength
    }
    const n = Math.min(end - pos, this.left - this.padLeft)
    const piece = chunk.subarray(pos, pos + n)
    pos += n
    this.left -= n
    flow += n
    if (this.left === this.padLeft) {
      const p = Math.min(end - pos, this.padLeft)
      pos += p
      this.left -= p
      this.padLeft -= p
      flow += p
    }
    // Padding is reported as it is read too (with no data), so flow control credits it promptly.
    if (this.left === 0) {
      this.mode = MODE_NONE
      this.handler.onData(this.streamId, piece, flow, (this.flags & Flag.END_STREAM) !== 0)
    } else if (flow > 0) this.handler.onData(this.streamId, piece, flow, false)
    return pos
  }

  /** A whole frame's payload is buf[start, end): the checks that need it, then the handler. */
  private dispatch(buf: Buffer, start: number, end: number): void {
    const { flags, streamId, handler } = this
    switch (this.type) {
      case FrameType.DATA: {
        let dataEnd = end
        if ((flags & Flag.PADDED) !== 0) {
          const padLength = buf[start]!
          if (padLength >= end - start) return void this.fail(protocol("padding", `DATA padding of ${padLength} bytes in a ${end - start}-byte frame`))
          start++
          dataEnd -= padLength
        }
        return handler.onData(streamId, buf.subarray(start, dataEnd), this.length, (flags & Flag.END_STREAM) !== 0)
      }
      case FrameType.HEADERS: {
        let fragmentEnd = end
        if ((flags & Flag.PADDED) !== 0) {
          const padLength = buf[start++]!
          const room = end - start - ((flags & Flag.PRIORITY) !== 0 ? 5 : 0)
          if (padLength > room) return void this.fail(protocol("padding", `HEADERS padding of ${padLength} bytes with ${room} bytes left`))
          fragmentEnd -= padLength
        }
        if ((flags & Flag.PRIORITY) !== 0) {
          // RFC 9113 5.3.1: a stream cannot depend on itself. Ended here as a connection error (5.4.1
          // allows it) so the header block, which the peer's HPACK state counts, needs no decoding.
          if ((buf.readUInt32BE(start) & 0x7fffffff) === streamId) return void this.fail(protocol("self-dependency", `HEADERS of stream ${streamId} depends on itself`))
          start += 5
        }
        const fragment = buf.subarray(start, fragmentEnd)
        if (fragment.length > this.maxHeaderBlockBytes) return void this.fail(blockTooLarge(fragment.length, this.maxHeaderBlockBytes))
        if ((flags & Flag.END_HEADERS) !== 0) return handler.onHeaders(streamId, fragment, (flags & Flag.END_STREAM) !== 0)
        this.blockStream = streamId
        this.blockParts.push(fragment)
        this.blockBytes = fragment.length
        this.blockEndStream = (flags & Flag.END_STREAM) !== 0
        this.blockContinuations = 0
        return
      }
      case FrameType.CONTINUATION: {
        // Empty CONTINUATIONs count too: a flood of them must end the connection, not spin it.
        if (++this.blockContinuations > this.maxContinuations)
          return void this.fail(connectionError(ErrorCode.ENHANCE_YOUR_CALM, "continuation-flood", `more than ${this.maxContinuations} CONTINUATION frames in one header block`))
        const bytes = this.blockBytes + (end - start)
        if (bytes > this.maxHeaderBlockBytes) return void this.fail(blockTooLarge(bytes, this.maxHeaderBlockBytes))
        this.blockParts.push(buf.subarray(start, end))
        this.blockBytes = bytes
        if ((flags & Flag.END_HEADERS) === 0) return
        const parts = this.blockParts
        // Always two parts or more here (the HEADERS fragment and this one).
        const block = Buffer.concat(parts, bytes)
        const endStream = this.blockEndStream
        this.blockStream = 0
        this.blockParts = []
        this.blockBorrowed = 0
        this.blockBytes = 0
        return handler.onHeaders(streamId, block, endStream)
      }
      case FrameType.PRIORITY:
        // Priority signals are deprecated (RFC 9113 5.3.2) and ignored once checked.
        if ((buf.readUInt32BE(start) & 0x7fffffff) === streamId)
          this.streamFail(streamError(streamId, ErrorCode.PROTOCOL_ERROR, "self-dependency", `PRIORITY of stream ${streamId} depends on itself`))
        return
      case FrameType.RST_STREAM:
        return handler.onRstStream(streamId, buf.readUInt32BE(start))
      case FrameType.SETTINGS:
        return this.settings(buf, start, end)
      case FrameType.PING:
        return handler.onPing(buf.subarray(start, end), (flags & Flag.ACK) !== 0)
      case FrameType.GOAWAY:
        return handler.onGoAway(buf.readUInt32BE(start) & 0x7fffffff, buf.readUInt32BE(start + 4), buf.subarray(start + 8, end))
      case FrameType.WINDOW_UPDATE: {
        const increment = buf.readUInt32BE(start) & 0x7fffffff
        if (increment !== 0) return handler.onWindowUpdate(streamId, increment)
        if (streamId === 0) return void this.fail(protocol("window-increment-zero", "WINDOW_UPDATE of 0 on the connection"))
        return void this.streamFail(streamError(streamId, ErrorCode.PROTOCOL_ERROR, "window-increment-zero", `WINDOW_UPDATE of 0 on stream ${streamId}`))
      }
    }
  }

  /** Every value is checked before the first is delivered, so a bad frame applies nothing. */
  private settings(buf: Buffer, start: number, end: number): void {
    if ((this.flags & Flag.ACK) !== 0) return this.handler.onSettingsAck()
    for (let at = start; at < end; at += 6) {
      const id = buf.readUInt16BE(at)
      const value = buf.readUInt32BE(at + 2)
      const error = checkSetting(id, value)
      if (error !== undefined) return void this.fail(error)
      // RFC 9113 6.5.2: a server never enables push.
      if (this.isClient && id === SettingId.ENABLE_PUSH && value !== 0) return void this.fail(protocol("setting-value", "the server sent SETTINGS_ENABLE_PUSH 1"))
    }
    for (let at = start; at < end; at += 6) {
      const id = buf.readUInt16BE(at)
      if (isKnownSetting(id)) this.handler.onSetting(id, buf.readUInt32BE(at + 2))
    }
    this.handler.onSettingsEnd()
  }

  private fail(error: H2FrameError): typeof FAILED {
    this.stop()
    this.handler.onError(error)
    return FAILED
  }

  private streamFail(error: H2FrameError): typeof SKIP {
    this.handler.onError(error)
    return SKIP
  }
}

const protocol = (reason: string, message: string): H2FrameError => connectionError(ErrorCode.PROTOCOL_ERROR, reason, message)
const frameSize = (reason: string, message: string): H2FrameError => connectionError(ErrorCode.FRAME_SIZE_ERROR, reason, message)
const blockTooLarge = (bytes: number, budget: number): H2FrameError =>
  connectionError(ErrorCode.ENHANCE_YOUR_CALM, "header-block-too-large", `a header block of ${bytes} bytes or more exceeds the budget of ${budget}`)

/** The ids of SettingId (1 to 6, 8, 9); 7 was never assigned. */
const isKnownSetting = (id: number): boolean => (id >= SettingId.HEADER_TABLE_SIZE && id <= SettingId.MAX_HEADER_LIST_SIZE) || id === SettingId.ENABLE_CONNECT_PROTOCOL || id === SettingId.NO_RFC7540_PRIORITIES

/** RFC 9113 6.5.2 (and RFC 8441, RFC 9218 for ids 8 and 9): the values a setting may take. */
const checkSetting = (id: number, value: number): H2FrameError | undefined => {
  switch (id) {
    case SettingId.ENABLE_PUSH:
    case SettingId.ENABLE_CONNECT_PROTOCOL:
    case SettingId.NO_RFC7540_PRIORITIES:
      return value > 1 ? protocol("setting-value", `setting ${id} is ${value}, not 0 or 1`) : undefined
    case SettingId.INITIAL_WINDOW_SIZE:
      return value > MAX_WINDOW_SIZE
        ? connectionError(ErrorCode.FLOW_CONTROL_ERROR, "setting-value", `SETTINGS_INITIAL_WINDOW_SIZE ${value} exceeds 2^31-1`)
        : undefined
    case SettingId.MAX_FRAME_SIZE:
      return value < DEFAULT_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE ? protocol("setting-value", `SETTINGS_MAX_FRAME_SIZE ${value} outside 16384..16777215`) : undefined
    default:
      return undefined
  }
}
