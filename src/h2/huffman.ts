// HPACK's Huffman code (RFC 7541 5.2, Appendix B), decoding only: the HPACK decoder (hpackDecoder.ts)
// runs it on string literals whose H bit is set. The code is canonical, so the 257 code lengths below
// determine it; the codes are generated from them at module load, and so is a state table that
// decodes four bits at a time. Our encoder sends raw literals (see hpackEncoder.ts for why).

/**
 * Code length in bits of each symbol 0..255, then EOS (256). Taken from golang/net
 * http2/hpack/tables.go `huffmanCodeLen` (which transcribes RFC 7541 Appendix B); EOS is 30 bits.
 */
const CODE_LENGTHS: ReadonlyArray<number> = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
  6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30
]

export const EOS = 256

/** The code of each symbol, right-aligned in its length (`huffmanLengths`): canonical order. */
export const huffmanCodes: Uint32Array = new Uint32Array(257)
export const huffmanLengths: Uint8Array = Uint8Array.from(CODE_LENGTHS)

{
  const order = Array.from({ length: 257 }, (_, symbol) => symbol).sort((a, b) => huffmanLengths[a]! - huffmanLengths[b]! || a - b)
  let code = 0
  let length = huffmanLengths[order[0]!]!
  for (const symbol of order) {
    code = code * 2 ** (huffmanLengths[symbol]! - length)
    length = huffmanLengths[symbol]!
    huffmanCodes[symbol] = code
    code++
  }
}

// The decoding automaton. Its states are the code tree's 256 internal nodes (0 = root); one entry per
// state and input nibble: the state after those four bits, whether a symbol was completed (at most
// one: no code is shorter than 5 bits) and which, whether EOS was met (an error: 5.2), and whether
// the bits since the last symbol may end the string (none, or fewer than 8 all ones: 5.2's padding).
const EMITS = 0x100
const FAILS = 0x200
const ACCEPTS = 0x400
const SYMBOL_SHIFT = 16

const transitions: Uint32Array = (() => {
  // Tree: internal node n has children child[2n] (bit 0) and child[2n+1] (bit 1); a child >= 0 is
  // an internal node, a child < 0 is the leaf of symbol ~child.
  const child = new Int32Array(512).fill(-0x10000)
  const depth = new Uint8Array(256)
  const allOnes = new Uint8Array(256)
  allOnes[0] = 1
  let nodes = 1
  for (let symbol = 0; symbol <= EOS; symbol++) {
    const length = huffmanLengths[symbol]!
    const code = huffmanCodes[symbol]!
    let node = 0
    for (let bit = length - 1; bit > 0; bit--) {
      const b = (code >>> bit) & 1
      let next = child[2 * node + b]!
      if (next === -0x10000) {
        next = nodes++
        child[2 * node + b] = next
        depth[next] = depth[node]! + 1
        allOnes[next] = allOnes[node]! & b
      }
      node = next
    }
    child[2 * node + (code & 1)] = ~symbol
  }
  const table = new Uint32Array(256 * 16)
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state
      let entry = 0
      for (let bit = 3; bit >= 0; bit--) {
        const next = child[2 * node + ((nibble >> bit) & 1)]!
        if (next >= 0) {
          node = next
          continue
        }
        const symbol = ~next
        if (symbol === EOS) entry |= FAILS
        else entry |= EMITS | (symbol << SYMBOL_SHIFT)
        node = 0
      }
      if (node === 0 || (allOnes[node] === 1 && depth[node]! < 8)) entry |= ACCEPTS
      table[state * 16 + nibble] = entry | node
    }
  }
  return table
})()

/**
 * Decodes the Huffman string src[start, end) into out from offset 0; returns the number of octets
 * written, or -1 if the string is invalid: it contains EOS, or ends in padding that is longer than
 * 7 bits or not all ones (RFC 7541 5.2). `out` must hold at least ⌊8·(end − start)/5⌋ octets.
 */
export const huffmanDecode = (src: Uint8Array, start: number, end: number, out: Uint8Array): number => {
  let state = 0
  let entry = ACCEPTS
  let written = 0
  for (let i = start; i < end; i++) {
    const byte = src[i]!
    entry = transitions[(state << 4) | (byte >> 4)]!
    if ((entry & FAILS) !== 0) return -1
    if ((entry & EMITS) !== 0) out[written++] = entry >>> SYMBOL_SHIFT
    state = entry & 0xff
    entry = transitions[(state << 4) | (byte & 15)]!
    if ((entry & FAILS) !== 0) return -1
    if ((entry & EMITS) !== 0) out[written++] = entry >>> SYMBOL_SHIFT
    state = entry & 0xff
  }
  return (entry & ACCEPTS) !== 0 ? written : -1
}

/** The most octets `length` Huffman-coded octets can decode to (the shortest code is 5 bits). */
export const huffmanDecodedBound = (length: number): number => Math.floor((length * 8) / 5)
