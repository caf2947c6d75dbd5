// HTTP/2 bytes written by hand for the h2 framing fuzz (test/sidecar/h2-framing-fuzz.test.ts): a
// frame encoder, an HPACK encoder that keeps its own dynamic table (literals with and without
// indexing, indexed fields, size updates, Huffman coding for the characters of the table below),
// and a frame reader for what comes back. No HTTP/2 library: node's own refuses to send most of
// what a fuzz must send, and one of ours would share the sidecar's view of the protocol.
import { h2Frame } from "../support/h2Raw.ts"

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1")
export const Type = { data: 0, headers: 1, priority: 2, rst: 3, settings: 4, ping: 6, goaway: 7, windowUpdate: 8, continuation: 9 } as const
export const Flag = { endStream: 1, ack: 1, endHeaders: 4, padded: 8, priority: 0x20 } as const
export const ErrorCode = { noError: 0, protocol: 1, internal: 2, flowControl: 3, streamClosed: 5, frameSize: 6, refusedStream: 7, cancel: 8, compression: 9, enhanceYourCalm: 11 } as const

/** One frame: its 9-byte head, then the payload (the raw h2 app's encoder, test/support/h2Raw.ts). */
export const frame = h2Frame

const u32 = (value: number): Buffer => {
  const out = Buffer.alloc(4)
  out.writeUInt32BE(value >>> 0, 0)
  return out
}

export const rst = (stream: number, code: number): Buffer => frame(Type.rst, 0, stream, u32(code))
export const windowUpdate = (stream: number, increment: number): Buffer => frame(Type.windowUpdate, 0, stream, u32(increment))
export const settings = (pairs: ReadonlyArray<readonly [number, number]> = []): Buffer =>
  frame(Type.settings, 0, 0, Buffer.concat(pairs.map(([id, value]) => Buffer.concat([Buffer.from([id >> 8, id & 0xff]), u32(value)]))))
export const settingsAck = (): Buffer => frame(Type.settings, Flag.ack, 0)
/**
 * A head's frames: HEADERS, then CONTINUATION frames of at most `split` bytes (0: none). At most 6
 * CONTINUATION frames: node's nghttp2 ends a connection with more than 8 (CVE-2024-27983's bound).
 */
export const headFrames = (id: number, block: Buffer, split: number, endStream: boolean): Array<Buffer> => {
  const es = endStream ? Flag.endStream : 0
  if (split <= 0 || block.length <= split) return [frame(Type.headers, es | Flag.endHeaders, id, block)]
  split = Math.max(split, Math.ceil(block.length / 7))
  const out: Array<Buffer> = []
  for (let at = 0; at < block.length; at += split) {
    const last = at + split >= block.length
    const piece = block.subarray(at, at + split)
    out.push(at === 0 ? frame(Type.headers, es, id, piece) : frame(Type.continuation, last ? Flag.endHeaders : 0, id, piece))
  }
  return out
}
/** PRIORITY naming `dependsOn` (itself: a stream error, RFC 9113 §5.3.1). */
export const priority = (stream: number, dependsOn: number): Buffer => frame(Type.priority, 0, stream, Buffer.concat([u32(dependsOn), Buffer.from([15])]))

/**
 * RFC 7541 Appendix B's codes for the characters the fuzz Huffman-codes (lower-case letters,
 * digits, '-', '.', '/', '_', ' '): [code, bits]. A wrong code shows at once as a field the app
 * reads other than sent.
 */
const HUFFMAN: Record<string, readonly [number, number]> = {
  "0": [0x0, 5], "1": [0x1, 5], "2": [0x2, 5], a: [0x3, 5], c: [0x4, 5], e: [0x5, 5], i: [0x6, 5], o: [0x7, 5], s: [0x8, 5], t: [0x9, 5],
  " ": [0x14, 6], "-": [0x16, 6], ".": [0x17, 6], "/": [0x18, 6], "3": [0x19, 6], "4": [0x1a, 6], "5": [0x1b, 6], "6": [0x1c, 6], "7": [0x1d, 6], "8": [0x1e, 6], "9": [0x1f, 6],
  _: [0x22, 6], b: [0x23, 6], d: [0x24, 6], f: [0x25, 6], g: [0x26, 6], h: [0x27, 6], l: [0x28, 6], m: [0x29, 6], n: [0x2a, 6], p: [0x2b, 6], r: [0x2c, 6], u: [0x2d, 6],
  j: [0x74, 7], k: [0x75, 7], q: [0x76, 7], v: [0x77, 7], w: [0x78, 7], x: [0x79, 7], y: [0x7a, 7], z: [0x7b, 7]
}

const huffman = (text: string): Buffer | undefined => {
  const out: Array<number> = []
  let acc = 0
  let bits = 0
  for (const ch of text) {
    const code = HUFFMAN[ch]
    if (code === undefined) return undefined
    acc = (acc << code[1]) | code[0]
    bits += code[1]
    while (bits >= 8) {
      bits -= 8
      out.push((acc >> bits) & 0xff)
      acc &= (1 << bits) - 1
    }
  }
  // Padded with the EOS code's most significant bits (all ones), less than 8 of them (RFC 7541 §5.2).
  if (bits > 0) out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) & 0xff)
  return Buffer.from(out)
}

/** An integer with an N-bit prefix (RFC 7541 §5.1). */
export const hpackInt = (value: number, prefixBits: number, first: number): Array<number> => {
  const max = (1 << prefixBits) - 1
  if (value < max) return [first | value]
  const out = [first | max]
  let rest = value - max
  while (rest >= 128) {
    out.push((rest % 128) + 128)
    rest = Math.floor(rest / 128)
  }
  out.push(rest)
  return out
}

/** An HPACK string literal (RFC 7541 §5.2): Huffman-coded if asked and every character has a code here, else raw latin1. */
export const hpackString = (text: string, tryHuffman: boolean): Array<number> => {
  const coded = tryHuffman ? huffman(text) : undefined
  const raw = coded ?? Buffer.from(text, "latin1")
  return [...hpackInt(raw.length, 7, coded === undefined ? 0 : 0x80), ...raw]
}

/** How one field is written: a literal left out of the table, one added to it (then indexed when it comes again), Huffman-coded where it can be. */
export interface FieldCoding {
  readonly index: boolean
  readonly huffman: boolean
}

/** The static table's entries the fuzz writes by index (RFC 7541 Appendix A). */
const STATIC: ReadonlyArray<readonly [string, string, number]> = [
  [":method", "GET", 2], [":method", "POST", 3], [":path", "/", 4], [":scheme", "http", 6], [":scheme", "https", 7]
]

/** One connection's HPACK encoder: its dynamic table as the sidecar's decoder must keep it (RFC 7541 §4). */
export class HpackEncoder {
  private table: Array<readonly [string, string]> = []
  private size = 0
  private readonly max = 4096

  block(fields: ReadonlyArray<readonly [string, string]>, coding: (i: number) => FieldCoding): Buffer {
    const out: Array<number> = []
    fields.forEach(([name, value], i) => {
      const how = coding(i)
      const fixed = STATIC.find(([n, v]) => n === name && v === value)
      if (fixed !== undefined && how.index) return void out.push(...hpackInt(fixed[2], 7, 0x80))
      const at = this.table.findIndex(([n, v]) => n === name && v === value)
      if (at >= 0 && how.index) return void out.push(...hpackInt(62 + at, 7, 0x80))
      if (how.index) {
        out.push(0x40, ...hpackString(name, how.huffman), ...hpackString(value, how.huffman))
        this.add(name, value)
      } else out.push(0x00, ...hpackString(name, how.huffman), ...hpackString(value, how.huffman))
    })
    return Buffer.from(out)
  }

  private add(name: string, value: string): void {
    const entry = Buffer.byteLength(name, "latin1") + Buffer.byteLength(value, "latin1") + 32
    this.table.unshift([name, value])
    this.size += entry
    while (this.size > this.max) {
      const [n, v] = this.table.pop()!
      this.size -= Buffer.byteLength(n, "latin1") + Buffer.byteLength(v, "latin1") + 32
    }
  }
}

export interface Frame {
  readonly type: number
  readonly flags: number
  readonly stream: number
  readonly payload: Buffer
}

/** Reads frames from a connection's bytes (after no preface: a server's first frame is its SETTINGS). */
export class FrameReader {
  private buffer: Buffer = Buffer.alloc(0)
  push(data: Buffer, onFrame: (frame: Frame) => void): void {
    this.buffer = this.buffer.length === 0 ? data : Buffer.concat([this.buffer, data])
    while (this.buffer.length >= 9) {
      const length = this.buffer.readUIntBE(0, 3)
      if (this.buffer.length < 9 + length) break
      const b = this.buffer
      onFrame({ type: b[3]!, flags: b[4]!, stream: b.readUInt32BE(5) & 0x7fffffff, payload: Buffer.from(b.subarray(9, 9 + length)) })
      this.buffer = b.subarray(9 + length)
    }
  }
}

/**
 * The status of an answer's HEADERS when the sidecar's HPACK encoder wrote it as an index of the
 * static table (nghttp2 always does for these): 200, 204, 206, 304, 400, 404, 500; else "other"
 * (a status the fuzz's apps never send: the sidecar's own refusal). Only the first field is read.
 */
export const indexedStatus = (block: Buffer): number | "other" => {
  let at = 0
  // A dynamic table size update may come first (RFC 7541 §4.2).
  while (at < block.length && (block[at]! & 0xe0) === 0x20) {
    if ((block[at]! & 0x1f) !== 0x1f) at++
    else {
      at++
      while (at < block.length && (block[at]! & 0x80) !== 0) at++
      at++
    }
  }
  const byte = block[at]
  const statuses: Record<number, number> = { 0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500 }
  return byte === undefined ? "other" : statuses[byte] ?? "other"
}
