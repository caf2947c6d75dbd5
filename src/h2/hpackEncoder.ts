// HPACK encoding (RFC 7541) of one connection's outbound header blocks, written into the caller's
// buffer for the frame layer to cut into HEADERS + CONTINUATION. Only the static table is used: a
// field that matches an entry is one octet, a known name is indexed and its value sent raw; nothing
// enters the peer's dynamic table, whose size we set to 0 in our first block (so a peer lowering
// SETTINGS_HEADER_TABLE_SIZE later never needs another size update). Strings go raw, not Huffman
// coded: the legs are loopback, where octets are cheap and CPU is not.
import { STATIC_COUNT, staticIndexOfName, staticNames, staticValues } from "./hpackTables.ts"

/** Buffer's own latin1 writer (node's `write(s, o, "latin1")` without its argument checks); untyped in @types/node. */
interface Latin1Buffer extends Buffer {
  latin1Write(text: string, offset: number, length: number): number
}

/** The most octets one field can take beyond its name and value: a representation octet and two 5-octet lengths. */
const FIELD_OVERHEAD = 11
/** Below this length a string is copied by a loop: cheaper than a call into C++. */
const SHORT_STRING = 24

/** The most octets `encode` writes for these fields (the caller sizes its buffer with it). */
export const blockLengthBound = (fields: ReadonlyArray<string>): number => {
  let bound = 1
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
  private sentSizeUpdate = false

  /**
   * Writes the header block of `fields` ([name0, value0, ...]: an even count, names lowercase, values latin1) into
   * out from `offset`; returns the offset after it, or -1 if `out` is too small (then nothing
   * counts as sent: call again with `blockLengthBound(fields)` octets of room).
   */
  encode(fields: ReadonlyArray<string>, out: Buffer, offset: number): number {
    if (!this.sentSizeUpdate) {
      if (offset >= out.length) return -1
      out[offset++] = 0x20 // dynamic table size update to 0 (6.3)
    }
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i]!
      const value = fields[i + 1]!
      if (offset + name.length + value.length + FIELD_OVERHEAD > out.length) return -1
      const first = staticIndexOfName.get(name)
      if (first === undefined) {
        out[offset++] = 0x00 // literal without indexing, new name (6.2.2)
        offset = writeString(out, offset, name)
        offset = writeString(out, offset, value)
        continue
      }
      let index = first
      while (index <= STATIC_COUNT && staticNames[index] === name && staticValues[index] !== value) index++
      if (index <= STATIC_COUNT && staticNames[index] === name) {
        out[offset++] = 0x80 | index // indexed field (6.1)
        continue
      }
      offset = writeInteger(out, offset, first, 4, 0x00) // literal without indexing, indexed name
      offset = writeString(out, offset, value)
    }
    this.sentSizeUpdate = true
    return offset
  }
}
