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
// frame that is not one message envelope (an object with a string `_tag`, or an array of them)
// throws, which the protocols turn into a defect for that exchange.
import * as Layer from "effect/Layer"
import { RpcSerialization } from "effect/rpc"
import { Packr, Unpackr } from "msgpackr"

export const msgPackContentType = "application/msgpack"

// Shared: packing and unpacking are synchronous and keep no state between messages. What is
// packed has been through a JSON codec, so it holds no `undefined` (msgpackr's own extension).
const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

const isEnvelope = (value: unknown): boolean =>
  typeof value === "object" && value !== null && typeof (value as { _tag?: unknown })._tag === "string"

const decode = (data: Uint8Array | string): ReadonlyArray<unknown> => {
  const value: unknown = unpackr.unpack(typeof data === "string" ? Buffer.from(data, "utf8") : data)
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
