// HPACK encoding (RFC 7541) of one connection's outbound header blocks, written into the caller's
// buffer for the frame layer to cut into HEADERS + CONTINUATION. A field that matches a static entry
// is one octet; other fields enter the peer's dynamic table (hpackEncoderTable.ts) the first time and
// are one index after, but for values that change every call (grpc-timeout, ...) and large ones,
// sent as literals without indexing. Strings go raw, not Huffman coded: the legs are loopback,
// where octets are cheap and CPU is not. Measured: npm run -s bench -- hpack.
import { EncoderTable } from "./hpackEncoderTable.ts"
import { ENTRY_OVERHEAD, STATIC_COUNT, staticIndexOfName, staticNames, staticValues } from "./hpackTables.ts"

/** Buffer's own latin1 writer (node's `write(s, o, "latin1")` without its argument checks); untyped in @types/node. */
interface Latin1Buffer extends Buffer {
  latin1Write(text: string, offset: number, length: number): number
}

export interface HpackEncoderOptions {
  /** The most of the peer's dynamic table we use (default 4096, the protocol's initial size); 0: none. */
  readonly maxTableSize?: number
}

/** The most octets one field takes beyond its name and value: a representation octet and two 5-octet lengths. */
const FIELD_OVERHEAD = 11
/** Two size updates at a block's start, 4 octets each at most (sizes below 2^21). */
const SIZE_UPDATES = 8
/** Below this length a string is copied by a loop: about as fast as a call into C++ (bench: ~20 ns a string either way). */
const SHORT_STRING = 24
/** The protocol's initial SETTINGS_HEADER_TABLE_SIZE (RFC 9113 6.5.2). */
const INITIAL_TABLE_SIZE = 4096
const MAX_TABLE_SIZE = 1 << 20

/** Fields whose values change from call to call: indexing them would only churn the table (date changes once a second: indexed). */
const NOT_INDEXED = new Set(["grpc-timeout", "content-length", "x-request-id"])
/**
 * Secrets: sent as never-indexed literals (6.2.3), kept out of every table on the way (a compression
 * table that holds a secret lets whoever can add fields and see the block's size guess it: 7.1).
 */
const NEVER_INDEXED = new Set(["authorization", "proxy-authorization", "cookie", "set-cookie"])

/** The most octets `encode` writes for these fields (the caller sizes its buffer with it). */
export const blockLengthBound = (fields: ReadonlyArray<string>): number => {
  let bound = SIZE_UPDATES
  for (let i = 0; i < fields.length; i++) bound += fields[i]!.length
  return bound + (fields.length >> 1) * FIELD_OVERHEAD
}

/** An integer with an N-bit prefix (RFC 7541 5.1); `first` holds the representation's high bits. */
const writeInteger = (out: Buffer, offset: number, value: number, prefixBits: number, first: number): number => {
  const max = (1 << prefixBits) - 1
  if (value < max) {
    out[offset] = first | value
    return offset + 1
  }
  out[offset++] = first | max
  value -= max
  while (value >= 0x80) {
    out[offset++] = (value & 0x7f) | 0x80
    value >>>= 7
  }
  out[offset] = value
  return offset + 1
}

/** A raw string literal (H = 0); the string's chars are octets (latin1), as node's header values are. */
const writeString = (out: Buffer, offset: number, text: string): number => {
  const length = text.length
  offset = writeInteger(out, offset, length, 7, 0)
  if (length < SHORT_STRING) {
    for (let i = 0; i < length; i++) out[offset + i] = text.charCodeAt(i)
    return offset + length
  }
  return offset + (out as Latin1Buffer).latin1Write(text, offset, length)
}

export class HpackEncoder {
  private readonly cap: number
  /** The table size in use: min(cap, the peer's SETTINGS_HEADER_TABLE_SIZE). */
  private tableSize: number
  /** The smallest size since the last block, to signal before the current one (RFC 7541 4.2), or -1. */
  private pendingMin: number
  private readonly table: EncoderTable

  constructor(options: HpackEncoderOptions = {}) {
    const cap = options.maxTableSize ?? INITIAL_TABLE_SIZE
    if (!Number.isInteger(cap) || cap < 0 || cap > MAX_TABLE_SIZE) throw new RangeError(`maxTableSize must be an integer in 0..${MAX_TABLE_SIZE}`)
    this.cap = cap
    this.tableSize = Math.min(cap, INITIAL_TABLE_SIZE)
    // Below the protocol's initial size, the first block says so (and a peer lowering its own later never needs it).
    this.pendingMin = this.tableSize < INITIAL_TABLE_SIZE ? this.tableSize : -1
    this.table = new EncoderTable(this.tableSize)
  }

  /** The peer's SETTINGS_HEADER_TABLE_SIZE, when its SETTINGS arrive: the next block starts with the size update it needs. */
  setPeerTableSize(size: number): void {
    const next = Math.min(size, this.cap)
    if (next === this.tableSize) return
    this.tableSize = next
    this.pendingMin = this.pendingMin < 0 ? next : Math.min(this.pendingMin, next)
  }

  /**
   * Writes the header block of `fields` ([name0, value0, ...]: an even count, names lowercase,
   * values latin1) into out from `offset`; returns the offset after it, or -1 if `out` has less
   * than `blockLengthBound(fields)` octets from `offset` (then nothing was written or recorded).
   * Every block encoded must reach the peer, in the order encoded: the peer's table follows them.
   */
  encode(fields: ReadonlyArray<string>, out: Buffer, offset: number): number {
    if (out.length - offset < blockLengthBound(fields)) return -1
    if (this.pendingMin >= 0) {
      offset = writeInteger(out, offset, this.pendingMin, 5, 0x20) // dynamic table size update (6.3)
      this.table.resize(this.pendingMin)
      if (this.pendingMin !== this.tableSize) {
        offset = writeInteger(out, offset, this.tableSize, 5, 0x20)
        this.table.resize(this.tableSize)
      }
      this.pendingMin = -1
    }
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i]!
      const value = fields[i + 1]!
      const first = staticIndexOfName.get(name) ?? 0
      if (first !== 0) {
        let index = first
        while (index <= STATIC_COUNT && staticNames[index] === name && staticValues[index] !== value) index++
        if (index <= STATIC_COUNT && staticNames[index] === name) {
          out[offset++] = 0x80 | index // indexed field, static (6.1)
          continue
        }
      }
      const dynamic = this.table.indexOf(name, value)
      if (dynamic !== 0) {
        offset = writeInteger(out, offset, dynamic, 7, 0x80) // indexed field, dynamic (6.1)
        continue
      }
      // An entry above a quarter of the table would flush the fields that do repeat.
      const never = NEVER_INDEXED.has(name)
      const indexing = !never && !NOT_INDEXED.has(name) && (name.length + value.length + ENTRY_OVERHEAD) * 4 <= this.tableSize
      // Literal with incremental indexing (6.2.1), without indexing (6.2.2) or never indexed (6.2.3); the name by its static index if it has one.
      offset = indexing ? writeInteger(out, offset, first, 6, 0x40) : writeInteger(out, offset, first, 4, never ? 0x10 : 0x00)
      if (first === 0) offset = writeString(out, offset, name)
      offset = writeString(out, offset, value)
      if (indexing) this.table.insert(name, value)
    }
    return offset
  }
}
