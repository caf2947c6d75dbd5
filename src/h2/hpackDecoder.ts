// HPACK decoding (RFC 7541) of one connection's inbound header blocks. The frame layer hands over a
// complete block (HEADERS + CONTINUATION joined, padding removed, its size already bounded); this
// returns the header list as node's raw-headers shape [name0, value0, name1, value1, ...] with values
// as latin1 strings (octet for octet, as node gives them). Every count and length from the wire is
// checked before use; the only allocations are the output array and the strings of literals.
// Pseudo-header order and HTTP semantics are left to the caller (headerCheck.ts has the checks).
import { huffmanDecode, huffmanDecodedBound } from "./huffman.ts"
import { ENTRY_OVERHEAD, HeaderListRejected, HpackError, STATIC_COUNT, staticNames, staticValues } from "./hpackTables.ts"

/** Buffer's own latin1 reader (node's `toString("latin1")` without its argument checks); untyped in @types/node. */
interface Latin1Buffer extends Buffer {
  latin1Slice(start: number, end: number): string
}

export interface HpackDecoderOptions {
  /**
   * The table size limit at the start: 4096 (the default, RFC 9113 6.5.2), as the peer's encoder
   * assumes until it has our SETTINGS. Also the most `setTableSizeLimit` may set later.
   */
  readonly maxTableSize?: number
  /** The SETTINGS_MAX_HEADER_LIST_SIZE we announce: name + value + 32 per field, summed (default 65536). */
  readonly maxHeaderListSize?: number
}

/** Octets allowed in a field name after an optional leading ':' (RFC 9113 8.2.1: lowercase tchar). */
const NAME_OCTET = new Uint8Array(256)
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") NAME_OCTET[c.charCodeAt(0)] = 1

/** Octets never allowed in a field value (RFC 9113 8.2.1): NUL, LF, CR. */
const VALUE_BANNED = new Uint8Array(256)
VALUE_BANNED[0] = VALUE_BANNED[0x0a] = VALUE_BANNED[0x0d] = 1

const isNameOk = (src: Uint8Array, start: number, end: number): boolean => {
  let i = start
  if (i < end && src[i] === 0x3a) i++
  if (i === end) return false
  for (; i < end; i++) if (NAME_OCTET[src[i]!] === 0) return false
  return true
}

const isValueOk = (src: Uint8Array, start: number, end: number): boolean => {
  if (start === end) return true
  const first = src[start]!
  const last = src[end - 1]!
  if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) return false
  for (let i = start; i < end; i++) if (VALUE_BANNED[src[i]!] === 1) return false
  return true
}

/** Where Huffman strings are decoded before they become strings; grown to the largest one seen. */
let huffmanOut = Buffer.allocUnsafe(4096) as Latin1Buffer

// Flags of a dynamic table entry that was malformed when inserted: a later reference to it is refused too.
const BAD_NAME = 1
const BAD_VALUE = 2

const DEFAULT_TABLE_SIZE = 4096
const MAX_TABLE_SIZE = 1 << 20

export class HpackDecoder {
  /** The table size limit in effect; size updates above it are errors. */
  private limit: number
  /** The most `limit` may be: the ring below is sized for it. */
  private readonly capacity: number
  /** The limit went below the table's size: the next block must start with a size update (RFC 7541 4.2). */
  private sizeUpdateDue = false
  private readonly maxHeaderListSize: number
  /** The table's current maximum size, as the peer's last size update set it. */
  private maxSize: number
  private size = 0
  // The dynamic table: a ring, newest entry at `head`, `count` entries; `bad` holds BAD_NAME/BAD_VALUE.
  private readonly names: Array<string>
  private readonly values: Array<string>
  private readonly bad: Uint8Array
  private readonly mask: number
  private head = 0
  private count = 0
  // Results of the readers below, which return a position (or -1 with `failure` set).
  private pos = 0
  private text = ""
  private malformed = false
  private failure = ""
  private broken: HpackError | undefined = undefined
  /**
   * Where a block's fields are collected, then copied out at their exact size: one array of the
   * right length instead of the growth steps of pushing into an empty one (about 400 B a request
   * head). It keeps the last block's strings alive until the next block overwrites them.
   */
  private readonly fields: Array<string> = []

  constructor(options: HpackDecoderOptions = {}) {
    const limit = options.maxTableSize ?? DEFAULT_TABLE_SIZE
    const listSize = options.maxHeaderListSize ?? 65536
    if (!Number.isInteger(limit) || limit < 0 || limit > MAX_TABLE_SIZE) throw new RangeError(`maxTableSize must be an integer in 0..${MAX_TABLE_SIZE}`)
    if (!Number.isInteger(listSize) || listSize < 1) throw new RangeError("maxHeaderListSize must be a positive integer")
    this.limit = limit
    this.capacity = limit
    this.maxSize = limit
    this.maxHeaderListSize = listSize
    // Every entry takes at least 32 octets, so the table never holds more than limit/32 of them.
    let slots = 1
    while (slots <= limit / ENTRY_OVERHEAD) slots *= 2
    this.names = new Array<string>(slots).fill("")
    this.values = new Array<string>(slots).fill("")
    this.bad = new Uint8Array(slots)
    this.mask = slots - 1
  }

  /**
   * Sets the table size limit to the SETTINGS_HEADER_TABLE_SIZE we announced, once the peer has
   * acknowledged it (RFC 9113 6.5.3). Below the table's current maximum, the peer's next block must
   * start with a size update that brings it within the limit, or it is an HpackError. At most the
   * constructor's `maxTableSize` (a RangeError otherwise: a caller's mistake, not the peer's).
   */
  setTableSizeLimit(size: number): void {
    if (!Number.isInteger(size) || size < 0 || size > this.capacity) throw new RangeError(`table size limit must be an integer in 0..${this.capacity}`)
    if (size < this.maxSize) this.sizeUpdateDue = true
    this.limit = size
  }

  /** The dynamic table's size in RFC 7541 4.1's terms (octets + 32 per entry). */
  get tableSize(): number {
    return this.size
  }

  /** The dynamic table, newest first, as [name, value, ...] (HPACK index 62 first). */
  tableEntries(): Array<string> {
    const out: Array<string> = []
    for (let i = 0; i < this.count; i++) {
      const slot = (this.head + i) & this.mask
      out.push(this.names[slot]!, this.values[slot]!)
    }
    return out
  }

  /**
   * Decodes one complete header block, block[start, end). Never throws. An `HpackError` means the
   * connection must end (COMPRESSION_ERROR): this decoder then returns that error for every later
   * block. A `HeaderListRejected` refuses this header list only (the table is in step; the stream
   * is reset or answered 431).
   */
  decode(block: Buffer, start = 0, end: number = block.length): Array<string> | HpackError | HeaderListRejected {
    if (this.broken !== undefined) return this.broken
    if (start < 0 || end > block.length || start > end) return this.fail("bad-range")
    const fields = this.fields
    let count = 0
    let listSize = 0
    let tooLarge = false
    let malformed = false
    let pos = start
    let sawField = false
    while (pos < end) {
      const byte = block[pos]!
      let name: string
      let value: string
      if (byte >= 0x80) {
        // Indexed field (6.1).
        const index = this.readInteger(block, pos, end, 7)
        if (index < 0) return this.fail(this.failure)
        pos = this.pos
        if (index === 0) return this.fail("index-zero")
        if (index <= STATIC_COUNT) {
          name = staticNames[index]!
          value = staticValues[index]!
        } else {
          const slot = this.slotOf(index)
          if (slot < 0) return this.fail("index-out-of-range")
          name = this.names[slot]!
          value = this.values[slot]!
          if (this.bad[slot] !== 0) malformed = true
        }
      } else if (byte >= 0x40 || byte < 0x20) {
        // Literal with incremental indexing (6.2.1, 6-bit index), without indexing or never indexed (6.2.2-3, 4-bit).
        const indexing = byte >= 0x40
        const nameIndex = this.readInteger(block, pos, end, indexing ? 6 : 4)
        if (nameIndex < 0) return this.fail(this.failure)
        pos = this.pos
        let nameBad = false
        if (nameIndex === 0) {
          pos = this.readString(block, pos, end, true)
          if (pos < 0) return this.fail(this.failure)
          name = this.text
          nameBad = this.malformed
        } else if (nameIndex <= STATIC_COUNT) {
          name = staticNames[nameIndex]!
        } else {
          const slot = this.slotOf(nameIndex)
          if (slot < 0) return this.fail("index-out-of-range")
          name = this.names[slot]!
          nameBad = (this.bad[slot]! & BAD_NAME) !== 0
        }
        pos = this.readString(block, pos, end, false)
        if (pos < 0) return this.fail(this.failure)
        value = this.text
        const bad = (nameBad ? BAD_NAME : 0) | (this.malformed ? BAD_VALUE : 0)
        if (bad !== 0) malformed = true
        if (indexing) this.insert(name, value, bad)
      } else {
        // Dynamic table size update (6.3): only before the block's first field, never above our limit.
        if (sawField) return this.fail("size-update-mid-block")
        const size = this.readInteger(block, pos, end, 5)
        if (size < 0) return this.fail(this.failure)
        pos = this.pos
        if (size > this.limit) return this.fail("size-update-above-limit")
        this.maxSize = size
        this.sizeUpdateDue = false
        this.evictTo(size)
        continue
      }
      if (!sawField) {
        if (this.sizeUpdateDue) return this.fail("size-update-missing")
        sawField = true
      }
      listSize += name.length + value.length + ENTRY_OVERHEAD
      if (listSize > this.maxHeaderListSize) tooLarge = true
      // Past the budget the block is still decoded (the table must stay in step) but not collected.
      if (!tooLarge) {
        fields[count++] = name
        fields[count++] = value
      }
    }
    if (tooLarge) return new HeaderListRejected({ reason: "header-list-too-large" })
    if (malformed) return new HeaderListRejected({ reason: "malformed-field" })
    return fields.slice(0, count)
  }

  private fail(reason: string): HpackError {
    this.broken = new HpackError({ reason })
    return this.broken
  }

  /** The ring slot of dynamic table entry `index` (62 = newest, 2.3.3), or -1 past the table. */
  private slotOf(index: number): number {
    const entry = index - STATIC_COUNT - 1
    return entry < this.count ? (this.head + entry) & this.mask : -1
  }

  /** An integer with an N-bit prefix (5.1) at block[pos]; at most 4 continuation octets (< 2^28 + 2^8, so never past 2^31). */
  private readInteger(block: Buffer, pos: number, end: number, prefixBits: number): number {
    const mask = (1 << prefixBits) - 1
    let value = block[pos]! & mask
    pos++
    if (value < mask) {
      this.pos = pos
      return value
    }
    for (let shift = 0; shift <= 21; shift += 7) {
      if (pos >= end) {
        this.failure = "integer-truncated"
        return -1
      }
      const octet = block[pos++]!
      value += (octet & 0x7f) << shift
      if (octet < 0x80) {
        this.pos = pos
        return value
      }
    }
    this.failure = "integer-too-long"
    return -1
  }

  /** A string literal (5.2) at block[pos] into `text`, checked as a name or a value (`malformed`); returns the position after it. */
  private readString(block: Buffer, pos: number, end: number, isName: boolean): number {
    const huffman = block[pos]! >= 0x80
    const length = this.readInteger(block, pos, end, 7)
    if (length < 0) return -1
    pos = this.pos
    if (length > end - pos) {
      this.failure = "string-past-block-end"
      return -1
    }
    let src = block as Latin1Buffer
    let from = pos
    let to = pos + length
    if (huffman) {
      const bound = huffmanDecodedBound(length)
      if (huffmanOut.length < bound) huffmanOut = Buffer.allocUnsafe(Math.max(bound, huffmanOut.length * 2)) as Latin1Buffer
      const decoded = huffmanDecode(block, from, to, huffmanOut)
      if (decoded < 0) {
        this.failure = "huffman-invalid"
        return -1
      }
      src = huffmanOut
      from = 0
      to = decoded
    }
    this.malformed = !(isName ? isNameOk(src, from, to) : isValueOk(src, from, to))
    this.text = from === to ? "" : src.latin1Slice(from, to)
    return pos + length
  }

  /** Adds an entry (4.4): evicts oldest entries to make room; one larger than the table empties it. */
  private insert(name: string, value: string, bad: number): void {
    const entrySize = name.length + value.length + ENTRY_OVERHEAD
    if (entrySize > this.maxSize) {
      this.evictTo(0)
      return
    }
    this.evictTo(this.maxSize - entrySize)
    this.head = (this.head - 1) & this.mask
    this.names[this.head] = name
    this.values[this.head] = value
    this.bad[this.head] = bad
    this.count++
    this.size += entrySize
  }

  private evictTo(size: number): void {
    while (this.size > size) {
      const slot = (this.head + this.count - 1) & this.mask
      this.size -= this.names[slot]!.length + this.values[slot]!.length + ENTRY_OVERHEAD
      this.names[slot] = ""
      this.values[slot] = ""
      this.count--
    }
  }
}
