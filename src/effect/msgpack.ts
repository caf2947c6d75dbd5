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
// array of them) throws, which the protocols turn into a defect for that exchange.
import * as Layer from "effect/Layer"
import { RpcSerialization } from "effect/rpc"
import { Packr, Unpackr } from "msgpackr"

export const msgPackContentType = "application/msgpack"

// Shared: packing and unpacking are synchronous and keep no state between messages. What is
// packed has been through a JSON codec, so it holds no `undefined` (msgpackr's own extension).
const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

/** How deep arrays and maps may nest in a frame: msgpackr reads them recursively (its stack overflows near 5,000). */
export const maxMessagePackDepth = 512

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
 * anything is allocated.
 */
export const plainMessagePackProblem = (bytes: Uint8Array): string | undefined => {
  const end = bytes.length
  // Values still to read at each open array or map, the innermost last.
  const open: Array<number> = []
  let left = 1
  let at = 0
  while (left > 0) {
    if (at >= end) return "ends inside a value"
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
    at += skip
    if (items > 0) {
      // Every item takes a byte at least.
      if (items > end - at) return "declares more items than it holds"
      if (open.length === maxMessagePackDepth) return `nests deeper than ${maxMessagePackDepth}`
      open.push(left)
      left = items
    }
    while (left === 0 && open.length > 0) left = open.pop()!
  }
  return at === end ? undefined : "holds bytes after its value"
}

const isEnvelope = (value: unknown): boolean =>
  typeof value === "object" && value !== null && typeof (value as { _tag?: unknown })._tag === "string"

const decode = (data: Uint8Array | string): ReadonlyArray<unknown> => {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data
  const problem = plainMessagePackProblem(bytes)
  if (problem !== undefined) throw new Error(`a MessagePack rpc frame ${problem}`)
  const value: unknown = unpackr.unpack(bytes)
  if (Array.isArray(value)) {
    if (!value.every(isEnvelope)) throw new Error("a MessagePack rpc frame holds something other than rpc messages")
    return value
  }
  if (!isEnvelope(value)) throw new Error("a MessagePack rpc frame is not an rpc message")
  return [value]
}

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
