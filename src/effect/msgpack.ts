// MessagePack as an RpcSerialization (effect/rpc 4.1 ships JSON, NDJSON, JSON-RPC and
// SchemaBinary only), for the IIP RPC protocols (rpc.ts) or any transport that frames messages
// itself: `includesFraming` is false, each `decode` is handed exactly one whole message (one IIP
// frame) and `encode` gives one. Payloads go through the same Schema codecs as JSON
// (`Schema.toCodecJson`: a Date travels as its ISO string, a bigint as its digits, a Uint8Array as
// base64, a Schema class as its fields), so any RpcGroup that works over JSON works here unchanged,
// and the RPC server shares its per-RPC codecs with JSON's. MessagePack carries that shape more
// compactly than JSON text (numbers, short strings and the message envelope) and decodes without
// going through UTF-16 text.
// Plain MessagePack maps, no msgpackr record extension, so any MessagePack decoder can read it. A
// frame that is not plain MessagePack (no extensions, bounded nesting: a peer's frame is checked
// before msgpackr reads it) or not one message envelope (an object with a string `_tag`, or an
// array of them) throws, which the protocols turn into a defect for that exchange. The RPC server
// reads a peer's Requests with `decodeMsgPackRequests`, which also counts what they hold outside
// their payloads (headers above all) in that check, before any of it is built.
import * as Layer from "effect/Layer"
import { RpcSerialization } from "effect/rpc"
import { Packr, Unpackr } from "msgpackr"
import { addKeyName, addKeyShape, addOtherKeyName, keySlot, knownKeyEnd, openShape, shapedKeys, startKeyNames } from "./keyNames.ts"

export const msgPackContentType = "application/msgpack"

// Shared: packing and unpacking are synchronous and keep no state between messages. What is
// packed has been through a JSON codec, so it holds no `undefined` (msgpackr's own extension).
const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

/** How deep arrays and maps may nest in a frame: msgpackr reads them recursively (its stack overflows near 5,000). */
export const maxMessagePackDepth = 512

/**
 * The most header pairs a Request may carry (node:http's maxHeadersCount): the RPC server makes an
 * object of them before the handler runs, ~1.2 µs a pair (1.5 million in a 15 MB frame held the
 * event loop 1.8 s, on top of their decoding; ten times a payload of the same size in all).
 */
export const maxRequestHeaderPairs = 2000

/**
 * The most values (array items, map keys and values) a peer's Request may hold outside its
 * payload: its headers' pairs of two strings and its few other fields. Counted as the frame is
 * checked, so what the RPC server would refuse after decoding (too many headers, an id or an
 * unknown field that is a long list) is never built: 1.5 million pairs cost msgpackr 0.5 s.
 */
export const maxValuesOutsidePayload = 3 * maxRequestHeaderPairs + 64

const utf8 = new TextEncoder()
// The Request fields the frame checks find by name (this one and jsonFrame.ts's), as UTF-8 bytes.
export const payloadKey = utf8.encode("payload")
export const headersKey = utf8.encode("headers")
/** Whether the `length` bytes at `at` spell `key`. */
export const isKey = (bytes: Uint8Array, at: number, length: number, key: Uint8Array): boolean => {
  if (length !== key.length) return false
  for (let i = 0; i < length; i++) if (bytes[at + i] !== key[i]) return false
  return true
}

// The items (keys and values) of the container open at each depth (1: the outermost) if it is a
// map, 0 if an array, for the distinct names' count: one for all scans, as they are synchronous.
const mapItemsAt = new Uint32Array(maxMessagePackDepth + 1)

/** What a pre-decode scan of a frame bounds (this file's and jsonFrame.ts's; rpc.ts sets them from the server's options). */
export interface FrameCheck {
  /** Count a Request's header pairs and what it holds outside its payload (the message envelope as effect/rpc writes it). */
  readonly request: boolean
  /** The most values (array items, object or map keys and values) the frame may hold. */
  readonly maxValues: number
  /** The most keys any one object (map) of the frame may hold (default: no bound but `maxValues`). */
  readonly maxObjectKeys?: number
  /** The most distinct key names the frame (with `request`: its payloads) may hold (keyNames.ts; default: no bound but `maxValues`). */
  readonly maxDistinctKeys?: number
  /**
   * The most object shapes (distinct sequences of keys an object begins with, each a hidden class
   * of its own; keyNames.ts) the frame (with `request`: its payloads) may hold; default: no bound.
   */
  readonly maxObjectShapes?: number
}

/** A frame checked for plain MessagePack only, nothing counted. */
const plainOnly: FrameCheck = { request: false, maxValues: Infinity }

const headerBytes = (bytes: Uint8Array, at: number, size: 1 | 2 | 4): number =>
  size === 1 ? bytes[at]! : size === 2 ? (bytes[at]! << 8) | bytes[at + 1]! : bytes[at]! * 0x1000000 + ((bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!)

/**
 * Why `bytes` is not one plain MessagePack value as this side packs it, or undefined: checked
 * before msgpackr reads it, with a loop and no recursion. msgpackr's unpacker also builds what
 * its extensions say (structured-clone pointers, which let a few bytes decode to a cyclic value or
 * one shared millions of times over, records, Sets, RegExps, Errors, BigInts of any length, for
 * every Unpackr of the process), so a peer's frame may hold none: only `undefined` (fixext 1 of
 * type 0, what msgpackr packs it as) and timestamps (type -1 in its four sizes, what it packs a
 * Date as, which a Schema.Any value keeps: a few bytes make one Date). A length or count past the
 * frame's end, nesting past `maxMessagePackDepth` and bytes after the value are refused before
 * anything is allocated. With `check.request` (a peer's Requests, as the RPC server reads them), so
 * are more than `maxRequestHeaderPairs` headers, more than `maxValuesOutsidePayload` values outside
 * the messages' payloads; and more than `check.maxValues` values in all, any map of more than
 * `check.maxObjectKeys` keys, refused at its header (msgpackr makes such a map an object in dictionary
 * mode, ~0.7 µs a key against ~20 ns an array item), more than `check.maxDistinctKeys` distinct key
 * names (keyNames.ts: each a new string and hidden class, wherever it is; a key that is no string
 * counts as a new name) and more than `check.maxObjectShapes` object shapes (keyNames.ts: shared
 * names in orders of their own), in the messages' payloads with `request`.
 */
export const plainMessagePackProblem = (bytes: Uint8Array, check: FrameCheck = plainOnly): string | undefined => {
  const { request, maxValues } = check
  const maxMapKeys = check.maxObjectKeys ?? Infinity
  const maxDistinctKeys = check.maxDistinctKeys ?? Infinity
  const maxShapes = check.maxObjectShapes ?? Infinity
  const end = bytes.length
  const shapes = maxShapes !== Infinity
  // Shapes are counted from the names' hashes: both or either bound counts names.
  const names = maxDistinctKeys !== Infinity || shapes
  if (names) startKeyNames()
  // Values still to read at each open array or map, the innermost last.
  const open: Array<number> = []
  let left = 1
  let at = 0
  // With `request`: the messages' fields are read at depth `fieldsAt` (1: the frame is one
  // message, 2: a list of them), in a map (`inMessage`); the field whose value comes next, by its
  // key; the depth past which values lie in a payload (Infinity: not in one); values counted outside.
  const fieldsAt = (bytes[0]! >= 0x90 && bytes[0]! <= 0x9f) || bytes[0] === 0xdc || bytes[0] === 0xdd ? 2 : 1
  let inMessage = false
  let field: "payload" | "headers" | undefined
  let payloadFrom = Infinity
  let outside = 0
  let values = 0
  // The innermost open container's items if it is a map (its keys are counted as names), else 0.
  let mapItems = 0
  while (left > 0) {
    if (at >= end) return "ends inside a value"
    // A key of a message's field (a map's items alternate key, value: a key is read at an even count left).
    const atField = request && inMessage && open.length === fieldsAt
    const isFieldKey = atField && left % 2 === 0
    // With `request`, the names of the payloads only: outside them a Request holds few keys.
    const atKey = names && mapItems > 0 && (left & 1) === 0 && (!request || open.length >= payloadFrom)
    const token = bytes[at++]!
    left--
    let skip = 0
    let items = 0
    if (token <= 0x7f || token >= 0xe0 || token === 0xc0 || token === 0xc2 || token === 0xc3) skip = 0
    else if (token <= 0x8f) items = (token & 0x0f) * 2
    else if (token <= 0x9f) items = token & 0x0f
    else if (token <= 0xbf) skip = token & 0x1f
    else {
      // [size of the length that follows, or of the value; what it is].
      const size = token === 0xc4 || token === 0xd9 || token === 0xcc || token === 0xd0 ? 1
        : token === 0xc5 || token === 0xda || token === 0xdc || token === 0xde || token === 0xcd || token === 0xd1 ? 2
        : token === 0xc6 || token === 0xdb || token === 0xdd || token === 0xdf || token === 0xca || token === 0xce || token === 0xd2 ? 4
        : token === 0xcb || token === 0xcf || token === 0xd3 ? 8
        : 0
      if (token === 0xd4) {
        if (at + 2 > end) return "ends inside a value"
        if (bytes[at] !== 0 && bytes[at] !== 0xff) return `holds msgpackr extension type ${bytes[at]}, which rpc frames never carry`
        skip = 2
      } else if ((token === 0xd6 || token === 0xd7) && bytes[at] === 0xff) skip = token === 0xd6 ? 5 : 9
      else if (token === 0xc7 && bytes[at] === 12 && bytes[at + 1] === 0xff) skip = 14
      else if (size === 0) {
        return token === 0xc1 ? "holds the never-used byte 0xc1" : `holds a MessagePack extension (0x${token.toString(16)}), which rpc frames never carry`
      } else if (token >= 0xca && token <= 0xd3) skip = size
      else {
        if (at + size > end) return "ends inside a value"
        const length = headerBytes(bytes, at, size as 1 | 2 | 4)
        at += size
        if (token === 0xdc || token === 0xdd) items = length
        else if (token === 0xde || token === 0xdf) items = length * 2
        else skip = length
      }
    }
    if (skip > end - at) return "declares more bytes than it holds"
    if (atKey || isFieldKey) {
      // A string key's bytes are the `skip` just read past; any other key names no field of ours.
      const string = (token >= 0xa0 && token <= 0xbf) || token === 0xd9 || token === 0xda || token === 0xdb
      if (atKey) {
        // Its ordinal in its map: `left` counts from the map's items, this key read.
        const ordinal = (mapItems - left - 1) >>> 1
        const slot = keySlot(open.length, ordinal)
        const known = string && knownKeyEnd(bytes, at, slot) === at + skip
        if (!known && (string ? addKeyName(bytes, at, at + skip, slot) : addOtherKeyName(slot)) > maxDistinctKeys) return `holds a Request with more than ${maxDistinctKeys} distinct key names`
        if (shapes && ordinal < shapedKeys && addKeyShape(open.length, slot) > maxShapes) return `holds a Request with more than ${maxShapes} object shapes`
      }
      if (isFieldKey) field = string && isKey(bytes, at, skip, payloadKey) ? "payload" : string && isKey(bytes, at, skip, headersKey) ? "headers" : undefined
    }
    at += skip
    if (items > 0) {
      // Every item takes a byte at least.
      if (items > end - at) return "declares more items than it holds"
      if (open.length === maxMessagePackDepth) return `nests deeper than ${maxMessagePackDepth}`
      if (request && open.length < payloadFrom) {
        if (atField && field === "payload") payloadFrom = open.length + 1
        else {
          // Headers are a list of pairs: its count is theirs.
          const list = (token >= 0x90 && token <= 0x9f) || token === 0xdc || token === 0xdd
          if (atField && field === "headers" && list && items > maxRequestHeaderPairs) return `holds a Request with more than ${maxRequestHeaderPairs} headers`
          outside += items
          if (outside > maxValuesOutsidePayload) return `holds a Request with more than ${maxValuesOutsidePayload} values outside its payload`
        }
      }
      // In all, payloads included: decoding costs by the value as much as by the byte.
      values += items
      if (values > maxValues) return `holds a Request with more than ${maxValues} values`
      const map = token <= 0x8f || token === 0xde || token === 0xdf
      if (map && items / 2 > maxMapKeys) return `holds a Request with an object of more than ${maxMapKeys} keys`
      open.push(left)
      left = items
      mapItems = map ? items : 0
      mapItemsAt[open.length] = mapItems
      if (map && shapes) openShape(open.length)
      if (open.length === fieldsAt) inMessage = map
    }
    while (left === 0 && open.length > 0) {
      left = open.pop()!
      mapItems = mapItemsAt[open.length]!
    }
    if (open.length < payloadFrom) payloadFrom = Infinity
  }
  return at === end ? undefined : "holds bytes after its value"
}

const isEnvelope = (value: unknown): boolean =>
  typeof value === "object" && value !== null && typeof (value as { _tag?: unknown })._tag === "string"

const decodeChecked = (data: Uint8Array | string, check: FrameCheck): ReadonlyArray<unknown> => {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data
  const problem = plainMessagePackProblem(bytes, check)
  if (problem !== undefined) throw new Error(`a MessagePack rpc frame ${problem}`)
  const value: unknown = unpackr.unpack(bytes)
  if (Array.isArray(value)) {
    if (!value.every(isEnvelope)) throw new Error("a MessagePack rpc frame holds something other than rpc messages")
    return value
  }
  if (!isEnvelope(value)) throw new Error("a MessagePack rpc frame is not an rpc message")
  return [value]
}

const decode = (data: Uint8Array | string): ReadonlyArray<unknown> => decodeChecked(data, plainOnly)

/**
 * A frame of a peer's Requests, as the RPC server reads one: `decode`, their headers, all but
 * their payloads and what `check` counts bounded as it is checked.
 */
export const decodeMsgPackRequests = (data: Uint8Array, check: FrameCheck = { request: true, maxValues: Infinity }): ReadonlyArray<unknown> => decodeChecked(data, check)

const encode = (message: unknown): Uint8Array | undefined => {
  if (Array.isArray(message) && message.length === 0) return undefined
  return packr.pack(message)
}

const parser: RpcSerialization.Parser = { decode, encode }

/** MessagePack, one message per frame; the transport frames. */
export const msgPack: RpcSerialization.RpcSerialization["Service"] = RpcSerialization.RpcSerialization.of({
  contentType: msgPackContentType,
  includesFraming: false,
  codecFor: RpcSerialization.json.codecFor,
  makeUnsafe: () => parser
})

export const layerMsgPack: Layer.Layer<RpcSerialization.RpcSerialization> = Layer.succeed(RpcSerialization.RpcSerialization)(msgPack)
