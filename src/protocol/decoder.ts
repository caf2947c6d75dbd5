// Incremental IIP packet decoder (PROTOCOL.md §2.5). The connection reader feeds it every socket
// chunk as it arrives; it accepts any split of the byte stream, checks every length before it
// allocates, and hands whole packets to its sink synchronously. It never touches a socket.
import { Limits, Status } from "./constants.ts"
import { ProtocolError } from "./errors.ts"

export interface DecoderSink {
  /**
   * Called as soon as status, path and channel id are known, before the length is read, so the
   * receiver can reject an unknown channel or a status its state machine forbids without reading
   * (or allocating) the body, as the reference does.
   */
  readonly checkHeader: (status: number, channelId: number) => ProtocolError | undefined
  readonly onPacket: (status: number, path: string, channelId: number, data: Buffer) => void
  /**
   * A packet longer than `oversizeBytes` (see `limitPackets`), or one skipped (skipPacket): called
   * once its first `prefix` bytes are read; the rest is skipped as it arrives, never stored.
   * `length` is what it declared.
   */
  readonly onOversize?: (status: number, path: string, channelId: number, prefix: Buffer, length: number) => void
  /**
   * Asked when a packet's data runs past the socket chunk it starts in: true to have it handed to
   * `onPart` in the pieces it arrives in (views of the chunks, no copy, nothing held here) instead
   * of being assembled into one buffer.
   */
  readonly splits?: (status: number, channelId: number) => boolean
  readonly onPart?: (status: number, path: string, channelId: number, part: Buffer, first: boolean, last: boolean) => void
}

export interface DecoderLimits {
  readonly maxPathBytes: number
  readonly maxDataBytes: number
}

/** What `push` reports: keep going, the peer asked to close (status 8), or a broken rule. */
export type DecodeResult = undefined | "close" | ProtocolError

const STAGE_STATUS = 0
const STAGE_PATH = 1
const STAGE_FIXED = 2
const STAGE_DATA = 3
/** Skipping the rest of an oversize packet. */
const STAGE_SKIP = 4
/** Handing a packet's data to onPart as it arrives. */
const STAGE_PARTS = 5

/** Paths up to this long are remembered for reuse (pathOf). */
const PATH_CACHE_BYTES = 64

const describe = (status: number, path: string) => `packet (status ${status}, path ${JSON.stringify(path.slice(0, 80))})`

/** Bytes of a path scanned in JS before Buffer#indexOf takes over: for a short path the loop costs less than indexOf's call into C++. */
const SHORT_SCAN = 64

/** The first NUL in `chunk` from `offset`, or -1. */
const nulFrom = (chunk: Buffer, offset: number): number => {
  const stop = Math.min(chunk.length, offset + SHORT_SCAN)
  for (let i = offset; i < stop; i++) if (chunk[i] === 0) return i
  return stop === chunk.length ? -1 : chunk.indexOf(0, stop)
}

export class PacketDecoder {
  private stage = STAGE_STATUS
  private status = 0
  /** Path bytes gathered across chunks; only used when a path is split. */
  private pathParts: Array<Buffer> = []
  private pathPartsBytes = 0
  private path = ""
  /**
   * The last path decoded whole from one chunk, and its bytes: a connection carries the same few
   * paths over and over, and comparing a few bytes costs less than a new string per packet (the
   * same string also hashes once for the router and the writer's checks).
   */
  private lastPath = ""
  private readonly lastPathBytes = Buffer.alloc(PATH_CACHE_BYTES)
  private lastPathLength = -1
  private readonly fixed = Buffer.alloc(8)
  private fixedFill = 0
  private channelId = 0
  private data: Buffer | undefined = undefined
  private dataFill = 0
  private stopped = false
  /** Packets handed out so far (a counter the connection's timeouts watch for progress). */
  packets = 0
  /** Set through skipPacket by the sink's checkHeader: the packet being read is kept only up to `oversizePrefix` bytes. */
  private skipping = false
  /** Longer packets are kept only up to `oversizePrefix` bytes and handed to onOversize. */
  private oversizeBytes = Infinity
  private oversizePrefix = 0
  /** Of the current oversize packet: its declared length, and the bytes still to skip. */
  private oversizeLength = 0
  private skipLeft = 0
  /** Of a packet handed out in parts: the bytes still to come, and whether the next part is its first. */
  private partLeft = 0
  private partFirst = false
  private readonly sink: DecoderSink
  private readonly limits: DecoderLimits

  constructor(sink: DecoderSink, limits: Partial<DecoderLimits> = {}) {
    this.sink = sink
    this.limits = {
      maxPathBytes: limits.maxPathBytes ?? Limits.maxReceivePathBytes,
      maxDataBytes: limits.maxDataBytes ?? Limits.maxPacketData
    }
  }

  /** Stops decoding: later chunks are ignored (the connection is closing). */
  stop(): void {
    this.stopped = true
    this.data = undefined
    this.pathParts = []
  }

  /**
   * From now on a packet whose data exceeds `bytes` is not stored whole: its first `prefix` bytes
   * go to the sink's onOversize, the rest is read and dropped (mesh mode: a body that should have
   * streamed is refused without holding it).
   */
  limitPackets(bytes: number, prefix: number): void {
    this.oversizeBytes = bytes
    this.oversizePrefix = Math.min(prefix, bytes)
  }

  /**
   * Called by the sink's checkHeader: this packet, whatever its length, is read only as far as
   * limitPackets' prefix and handed to onOversize, the rest skipped as it arrives (its receiver
   * refuses it without its body, so the body is never stored). One no longer than the prefix is
   * handed out whole as usual.
   */
  skipPacket(): void {
    this.skipping = true
  }

  /** True while a packet is read only as far as its prefix, the rest skipped (oversize, or skipPacket). */
  get skipsPacket(): boolean {
    return this.oversizeLength > 0 || this.stage === STAGE_SKIP
  }

  /** Bytes allocated for the packet being read (0 between packets, or while one is skipped). */
  get pendingBytes(): number {
    return this.data === undefined ? 0 : this.data.length
  }

  /** True while it keeps views of a pushed chunk for the next one (a path split across chunks). */
  get holdsViews(): boolean {
    return this.pathParts.length > 0
  }

  /** True when no packet is partly read (the stream ended on a packet boundary). */
  get idle(): boolean {
    return this.stage === STAGE_STATUS
  }

  /**
   * Where the path starting at `start` ends (its NUL) when it is the last path again, else -1: the
   * usual packet is found without Buffer#indexOf's call into the runtime. The last path holds no
   * NUL byte, so a match ends where indexOf would have found the NUL.
   */
  private lastPathEnd(chunk: Buffer, start: number, end: number): number {
    const length = this.lastPathLength
    const nul = start + length
    if (length <= 0 || nul >= end || chunk[nul] !== 0) return -1
    const known = this.lastPathBytes
    for (let i = 0; i < length; i++) if (chunk[start + i] !== known[i]) return -1
    return nul
  }

  /** The path in `chunk` from `start` to `end`: the last one again when its bytes are the same. */
  private pathOf(chunk: Buffer, start: number, end: number): string {
    const length = end - start
    const known = this.lastPathBytes
    if (length === this.lastPathLength) {
      let i = 0
      while (i < length && chunk[start + i] === known[i]) i++
      if (i === length) return this.lastPath
    }
    const path = chunk.toString("utf8", start, end)
    if (length <= PATH_CACHE_BYTES) {
      chunk.copy(known, 0, start, end)
      this.lastPathLength = length
      this.lastPath = path
    }
    return path
  }

  push(chunk: Buffer): DecodeResult {
    let offset = 0
    const end = chunk.length
    while (offset < end && !this.stopped) {
      switch (this.stage) {
        case STAGE_STATUS: {
          const status = chunk[offset++]!
          if (status === Status.Close) return this.finish("close")
          if (status > Status.Close) {
            return this.finish(new ProtocolError({ rule: "invalid-status", message: `invalid status value: ${status}` }))
          }
          this.status = status
          this.stage = STAGE_PATH
          this.skipping = false
          // Fast path: the whole header is in this chunk (the last path again, found without a search).
          const known = this.lastPathEnd(chunk, offset, end)
          const nul = known !== -1 ? known : nulFrom(chunk, offset)
          if (nul !== -1 && nul + 9 <= end) {
            const pathBytes = nul - offset
            if (pathBytes > this.limits.maxPathBytes) return this.finish(this.pathTooLong(pathBytes))
            if (pathBytes === 0) return this.finish(this.pathEmpty())
            this.path = known !== -1 ? this.lastPath : this.pathOf(chunk, offset, nul)
            this.channelId = chunk.readUInt32BE(nul + 1)
            const headerError = this.sink.checkHeader(status, this.channelId)
            if (headerError !== undefined) return this.finish(headerError)
            const length = chunk.readUInt32BE(nul + 5)
            const lengthError = this.checkLength(length)
            if (lengthError !== undefined) return this.finish(lengthError)
            offset = nul + 9
            if (length > this.oversizeBytes || (this.skipping && length > this.oversizePrefix)) this.startOversize(length)
            else if (end - offset >= length) {
              const data = chunk.subarray(offset, offset + length)
              offset += length
              this.stage = STAGE_STATUS
              this.packets++
              this.sink.onPacket(status, this.path, this.channelId, data)
            } else this.startData(length)
          }
          break
        }
        case STAGE_PATH: {
          const nul = chunk.indexOf(0, offset)
          const stop = nul === -1 ? end : nul
          const total = this.pathPartsBytes + (stop - offset)
          if (total > this.limits.maxPathBytes) return this.finish(this.pathTooLong(total))
          if (nul === -1) {
            this.pathParts.push(chunk.subarray(offset, end))
            this.pathPartsBytes = total
            offset = end
          } else {
            this.pathParts.push(chunk.subarray(offset, nul))
            if (total === 0) return this.finish(this.pathEmpty())
            this.path = Buffer.concat(this.pathParts, total).toString("utf8")
            this.pathParts = []
            this.pathPartsBytes = 0
            offset = nul + 1
            this.fixedFill = 0
            this.stage = STAGE_FIXED
          }
          break
        }
        case STAGE_FIXED: {
          const before = this.fixedFill
          const take = Math.min(8 - before, end - offset)
          chunk.copy(this.fixed, before, offset, offset + take)
          this.fixedFill += take
          offset += take
          if (before < 4 && this.fixedFill >= 4) {
            // The channel id is complete: judge it now, as the reference does, not after the length.
            this.channelId = this.fixed.readUInt32BE(0)
            const headerError = this.sink.checkHeader(this.status, this.channelId)
            if (headerError !== undefined) return this.finish(headerError)
          }
          if (this.fixedFill < 8) break
          const length = this.fixed.readUInt32BE(4)
          const lengthError = this.checkLength(length)
          if (lengthError !== undefined) return this.finish(lengthError)
          if (length > this.oversizeBytes || (this.skipping && length > this.oversizePrefix)) this.startOversize(length)
          else if (end - offset >= length) {
            // The body is wholly in this chunk: hand out a view, no copy.
            const data = chunk.subarray(offset, offset + length)
            offset += length
            this.stage = STAGE_STATUS
            this.packets++
            this.sink.onPacket(this.status, this.path, this.channelId, data)
          } else this.startData(length)
          break
        }
        case STAGE_DATA: {
          const data = this.data!
          const take = Math.min(data.length - this.dataFill, end - offset)
          chunk.copy(data, this.dataFill, offset, offset + take)
          this.dataFill += take
          offset += take
          if (this.dataFill === data.length) {
            this.data = undefined
            if (this.oversizeLength > 0) {
              this.stage = this.skipLeft === 0 ? STAGE_STATUS : STAGE_SKIP
              this.endOversize(data)
              break
            }
            this.stage = STAGE_STATUS
            this.packets++
            this.sink.onPacket(this.status, this.path, this.channelId, data)
          }
          break
        }
        case STAGE_PARTS: {
          const take = Math.min(this.partLeft, end - offset)
          const part = chunk.subarray(offset, offset + take)
          offset += take
          this.partLeft -= take
          const first = this.partFirst
          const last = this.partLeft === 0
          this.partFirst = false
          if (last) {
            this.stage = STAGE_STATUS
            this.packets++
          }
          this.sink.onPart!(this.status, this.path, this.channelId, part, first, last)
          break
        }
        case STAGE_SKIP: {
          const take = Math.min(this.skipLeft, end - offset)
          this.skipLeft -= take
          offset += take
          if (this.skipLeft === 0) this.stage = STAGE_STATUS
          break
        }
      }
    }
    return undefined
  }

  /** A packet whose data runs past this chunk (its length checked): assembled, or handed out in parts if the sink asks. */
  private startData(length: number): void {
    if (this.sink.splits?.(this.status, this.channelId) === true) {
      this.partLeft = length
      this.partFirst = true
      this.stage = STAGE_PARTS
      return
    }
    this.data = Buffer.allocUnsafe(length)
    this.dataFill = 0
    this.stage = STAGE_DATA
  }

  /** Reads the first bytes of an oversize packet, to skip the rest. */
  private startOversize(length: number): void {
    this.oversizeLength = length
    this.skipLeft = length - this.oversizePrefix
    this.data = Buffer.allocUnsafe(this.oversizePrefix)
    this.dataFill = 0
    this.stage = STAGE_DATA
  }

  /** Hands on an oversize packet's prefix as soon as it is read: its receiver refuses it while its rest is skipped. */
  private endOversize(prefix: Buffer): void {
    const length = this.oversizeLength
    this.oversizeLength = 0
    this.packets++
    this.sink.onOversize?.(this.status, this.path, this.channelId, prefix, length)
  }

  private finish(result: "close" | ProtocolError): DecodeResult {
    this.stopped = true
    this.data = undefined
    this.pathParts = []
    return result
  }

  private checkLength(length: number): ProtocolError | undefined {
    if (length === 0) {
      return new ProtocolError({
        rule: "length-zero",
        message: `${describe(this.status, this.path)} on channel ${this.channelId}: invalid data len: 0`
      })
    }
    if (length > this.limits.maxDataBytes) {
      return new ProtocolError({
        rule: "length-too-large",
        message: `${describe(this.status, this.path)} on channel ${this.channelId}: data len ${length} exceeds ${this.limits.maxDataBytes}`
      })
    }
    return undefined
  }

  private pathTooLong(bytes: number): ProtocolError {
    return new ProtocolError({
      rule: "path-too-long",
      message: `packet (status ${this.status}): no path terminator within ${this.limits.maxPathBytes} bytes (${bytes} read)`
    })
  }

  private pathEmpty(): ProtocolError {
    return new ProtocolError({ rule: "path-empty", message: `packet (status ${this.status}): empty path` })
  }
}
