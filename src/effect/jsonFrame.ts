// The JSON counterpart of msgpack.ts's frame check, for the RPC server (rpc.ts): a peer's JSON
// Request frame is scanned once, byte by byte, before JSON.parse sees it. JSON.parse has no limit
// of its own: 16 MiB of nested brackets held the event loop 7.5 s (every other connection waited),
// a Schema.Any payload that deep died in the handler with a RangeError, and 900,000 header pairs
// were built (1 s) before the RPC server refused more than 2,000. The scan refuses what
// MessagePack's check refuses, with the same bounds and words, at the byte where it is found.
import { addJsonKeyShape, addKeyName, closeJsonShape, keySlot, knownKeyEnd, openJsonShape, startKeyNames } from "./keyNames.ts"
import { type FrameCheck, headersKey, isKey, maxMessagePackDepth, maxRequestHeaderPairs, maxValuesOutsidePayload, payloadKey } from "./msgpack.ts"

/** How deep arrays and objects may nest in a JSON Request frame: as in a MessagePack one. */
export const maxJsonDepth = maxMessagePackDepth


const quote = 0x22
const backslash = 0x5c
const comma = 0x2c
const colon = 0x3a
const openArray = 0x5b
const closeArray = 0x5d
const openObject = 0x7b
const closeObject = 0x7d

// What each byte is to the scan, by a table, and a number's bytes in one inner loop (a chain of
// comparisons per byte took 1.5 times as long over numbers): space, a separator (colon, comma), a
// closer, an opener or quote (`start`), else `other`, a byte of a number or a literal (or of what
// is not JSON, which JSON.parse refuses).
const other = 0
const space = 1
const separator = 2
const closer = 3
const start = 4
const kinds = new Uint8Array(256)
for (const c of [0x20, 0x0a, 0x0d, 0x09]) kinds[c] = space
for (const c of [comma, colon]) kinds[c] = separator
for (const c of [closeArray, closeObject]) kinds[c] = closer
for (const c of [quote, openArray, openObject]) kinds[c] = start

// Whether each open container is an object (1) or an array (0), the innermost last. One for all
// scans: a scan is synchronous and runs to its end, so none shares it with another.
const isObject = new Uint8Array(maxJsonDepth)
// The keys each open object has held so far, by its depth, as `isObject`.
const keysAt = new Uint32Array(maxJsonDepth)

/**
 * Where the string begun before `from` ends: its first quote that no backslash escapes (one after
 * an even run of them), else the end. The quotes are found natively (a loop over a string's every
 * byte doubled the scan's cost for a 1 KiB one); the backslashes before each are counted back, and
 * those runs never overlap, so the whole is linear.
 */
const closingQuote = (bytes: Uint8Array, from: number): number => {
  // Short strings (most keys and values) by hand: a native call costs more than their bytes.
  const near = Math.min(bytes.length, from + 32)
  let q = from
  while (q < near && bytes[q] !== quote && bytes[q] !== backslash) q++
  if (q < near && bytes[q] === quote) return q
  for (q = bytes.indexOf(quote, from); q !== -1; q = bytes.indexOf(quote, q + 1)) {
    let run = 0
    while (q - run - 1 >= from && bytes[q - run - 1] === backslash) run++
    if (run % 2 === 0) return q
  }
  return bytes.length
}

/**
 * Whether the key from `from` to `to` (not included) names an array index (a canonical integer
 * below 2^32 - 1), its digits plain or escaped (`\u0031` is "1"): JSON.parse makes it an element,
 * no property, so it adds no transition and is no named key of its object.
 */
const isArrayIndex = (bytes: Uint8Array, from: number, to: number): boolean => {
  let digits = 0
  let index = 0
  for (let i = from; i < to; digits++) {
    let c = bytes[i]!
    // A digit escaped is \u003 and the digit.
    if (c === backslash && to - i >= 6 && bytes[i + 1] === 0x75 && bytes[i + 2] === 0x30 && bytes[i + 3] === 0x30 && bytes[i + 4] === 0x33) {
      c = bytes[i + 5]!
      i += 6
    } else i++
    if (c < 0x30 || c > 0x39 || digits === 10 || (digits === 1 && index === 0)) return false
    index = index * 10 + c - 0x30
  }
  return digits > 0 && index < 0xffff_ffff
}

// Past any depth: no payload is open (a small integer, as the depths it is compared with).
const notInPayload = maxJsonDepth + 1

const noField = 0
const payloadField = 1
const headersField = 2

/**
 * Why `bytes` (one frame: a JSON value, or several, as NDJSON lines) may not go to JSON.parse, or
 * undefined. A loop over the bytes, no recursion, nothing allocated: strings are skipped to their
 * closing quote (not one a backslash escapes), so brackets in them count for nothing.
 * Refused: nesting past `maxJsonDepth`, more than `check.maxValues` values, an object of more than
 * `check.maxObjectKeys` keys (JSON.parse makes such an object a dictionary, ~0.7 µs a key against
 * ~20 ns an array item), more than `check.maxDistinctKeys` distinct key names (each a new
 * string and hidden class, wherever it is) and more than `check.maxObjectShapes` object shapes
 * (keyNames.ts: shared names in orders of their own), both with `check.request` in the messages'
 * payloads only, as what lies outside them is bounded by `maxValuesOutsidePayload`; with `check.request`,
 * a message's `headers` list past `maxRequestHeaderPairs` items and more than
 * `maxValuesOutsidePayload` values outside its `payload` (counted as MessagePack's check counts
 * them: each key and each value, the payload's own value included). A key spelled with an escape
 * names no field here: what is under it counts as outside the payload, so it can only be refused
 * sooner. Bytes that are not JSON are left for JSON.parse to refuse: the scan only has to be right
 * about what it would accept, and linear in anything.
 */
export const plainJsonProblem = (bytes: Uint8Array, check: FrameCheck): string | undefined => {
  const end = bytes.length
  const request = check.request
  let depth = 0
  // The next string is a key.
  let key = false
  // The messages' fields are at depth `fieldsAt` (1: a message, 2: a list of them); the field
  // whose value comes next; the depth from which values lie in a payload, and the depth of the
  // headers' items (0: not in them).
  let fieldsAt = 1
  let field = noField
  const maxValues = check.maxValues
  const maxObjectKeys = check.maxObjectKeys ?? Infinity
  const maxDistinctKeys = check.maxDistinctKeys ?? Infinity
  const maxShapes = check.maxObjectShapes ?? Infinity
  const shapes = maxShapes !== Infinity
  // Shapes are counted from the names' hashes: both or either bound counts names.
  const names = maxDistinctKeys !== Infinity || shapes
  if (names) startKeyNames()
  let payloadFrom = notInPayload
  let headersAt = 0
  let headers = 0
  let values = 0
  let outside = 0
  for (let at = 0; at < end; at++) {
    const c = bytes[at]!
    const kind = kinds[c]!
    // Space leaves `key` as it was: `, "headers"` is a key as `,"headers"` is (taken for a
    // value, its name was not read, and a list under it counted as the payload's).
    if (kind === space) continue
    if (kind === separator) {
      key = c === comma && depth > 0 && isObject[depth - 1] === 1
      continue
    }
    if (kind === closer) {
      if (shapes && depth > 0 && isObject[depth - 1] === 1 && closeJsonShape(depth) > maxShapes) return `holds a Request with more than ${maxShapes} object shapes`
      if (depth > 0) depth--
      if (depth < payloadFrom) payloadFrom = notInPayload
      if (depth < headersAt) headersAt = 0
      continue
    }
    // A key or a value begins here.
    if (depth > 0) {
      if (request && depth < payloadFrom) {
        if (depth === headersAt && ++headers > maxRequestHeaderPairs) return `holds a Request with more than ${maxRequestHeaderPairs} headers`
        if (++outside > maxValuesOutsidePayload) return `holds a Request with more than ${maxValuesOutsidePayload} values outside its payload`
      }
      if (++values > maxValues) return `holds a Request with more than ${maxValues} values`
      // A key: only a string may be one, anything else JSON.parse refuses.
      if (key && ++keysAt[depth - 1]! > maxObjectKeys) return `holds a Request with an object of more than ${maxObjectKeys} keys`
    }
    if (kind === other) {
      // A number or a literal (true, false, null): one value, to the next byte that is not its.
      while (at + 1 < end && kinds[bytes[at + 1]!] === other) at++
      continue
    }
    const inMessage = request && depth === fieldsAt && isObject[depth - 1] === 1
    if (c === quote) {
      const from = at + 1
      // With `request`, the names of the payloads only: outside them a Request holds few keys.
      if (key && names && (!request || depth >= payloadFrom)) {
        // A name known at its place ends where it did there, if a quote follows.
        const ordinal = keysAt[depth - 1]! - 1
        const slot = keySlot(depth, ordinal)
        at = knownKeyEnd(bytes, from, slot)
        if (at === -1 || bytes[at] !== quote) {
          at = closingQuote(bytes, from)
          if (addKeyName(bytes, from, at, slot) > maxDistinctKeys) return `holds a Request with more than ${maxDistinctKeys} distinct key names`
        }
        if (shapes) addJsonKeyShape(depth, slot, isArrayIndex(bytes, from, at))
      } else at = closingQuote(bytes, from)
      // A key with an escape matches neither name byte for byte.
      if (inMessage && key) field = isKey(bytes, from, at - from, payloadKey) ? payloadField : isKey(bytes, from, at - from, headersKey) ? headersField : noField
      continue
    }
    if (depth === maxJsonDepth) return `nests deeper than ${maxJsonDepth}`
    if (depth === 0) fieldsAt = c === openArray ? 2 : 1
    if (inMessage && !key) {
      if (field === payloadField) payloadFrom = depth + 1
      else if (field === headersField && c === openArray) {
        headersAt = depth + 1
        headers = 0
      }
    }
    keysAt[depth] = 0
    isObject[depth++] = c === openObject ? 1 : 0
    if (shapes && c === openObject) openJsonShape(depth)
    key = c === openObject
  }
  return undefined
}
