// The mesh extensions of IIP (PROTOCOL.md part 2): what two iip-mesh peers agree on in their
// hello, the envelope at the head of every mesh message, metadata, typed errors and the bodies of
// the control messages. Everything is still ordinary IIP packets; this module only gives their
// data a shape. Pure.
import * as Data from "effect/Data"
import { ErrorCode } from "./constants.ts"
import { parseJsonObject } from "./systemMessages.ts"

export const MeshVersion = 1

export const MeshPath = {
  hello: "/sys/hello",
  ping: "/sys/ping",
  goAway: "/sys/goaway",
  cancel: "/sys/cancel",
  window: "/sys/window"
} as const

export const MeshFeatures = ["ping", "drain", "cancel", "deadline", "stream", "push", "reverse", "meta", "trailers"] as const
export type MeshFeature = (typeof MeshFeatures)[number]

/** Channel ids: the dialer opens 1..2^31-1, the acceptor 2^31+1..2^32-1; each side's control channel is the base. */
export const AcceptorChannelBase = 0x8000_0000
export const DialerControlChannel = 0
export const AcceptorControlChannel = AcceptorChannelBase
export const isAcceptorChannel = (id: number): boolean => id >= AcceptorChannelBase

export const MeshDefaults = {
  /** Largest metadata block of one message. */
  maxMetaBytes: 8 * 1024,
  /** Bytes a peer may send on one channel's stream before the receiver grants more. */
  streamWindow: 1024 * 1024,
  /** Body bytes per packet of a streamed message. */
  chunkBytes: 64 * 1024,
  /** Channels a peer may open on one connection. */
  maxChannels: 1024
} as const

export interface Hello {
  readonly version: number
  readonly node: string
  readonly features: ReadonlyArray<string>
  readonly maxMetaBytes: number
  readonly streamWindow: number
  readonly maxChannels: number
  /** Codecs for bodies (§12.1): the dialer's offer, or the one the acceptor picked; absent or empty: none. */
  readonly compression?: ReadonlyArray<string>
}

export const encodeHello = (hello: Hello, answer: boolean): Buffer =>
  Buffer.from(
    JSON.stringify({
      ...(answer ? { code: 0 } : {}),
      iipmesh: hello.version,
      node: hello.node,
      features: hello.features,
      maxMetaBytes: hello.maxMetaBytes,
      streamWindow: hello.streamWindow,
      maxChannels: hello.maxChannels,
      ...(hello.compression !== undefined && hello.compression.length > 0 ? { compression: hello.compression } : {})
    }),
    "utf8"
  )

const positiveInt = (value: unknown, max: number): number | undefined =>
  typeof value === "number" && Number.isInteger(value) && value > 0 && value <= max ? value : undefined

/** Reads a hello (or its answer); undefined when the bytes are not a mesh hello (a plain IIP error, say). */
export const decodeHello = (data: Uint8Array): Hello | undefined => {
  const r = parseJsonObject(data)
  if (r === undefined) return undefined
  const version = positiveInt(r.iipmesh, 0xffff)
  const maxMetaBytes = positiveInt(r.maxMetaBytes, 0xffff)
  const streamWindow = positiveInt(r.streamWindow, 0x7fff_ffff)
  const maxChannels = positiveInt(r.maxChannels, 0x7fff_ffff)
  if (version === undefined || maxMetaBytes === undefined || streamWindow === undefined || maxChannels === undefined) return undefined
  if (r.code !== undefined && r.code !== 0) return undefined
  const strings = (value: unknown) => (Array.isArray(value) ? value.filter((f): f is string => typeof f === "string") : [])
  const features = strings(r.features)
  const hello = { version, node: typeof r.node === "string" ? r.node : "", features, maxMetaBytes, streamWindow, maxChannels }
  return r.compression === undefined ? hello : { ...hello, compression: strings(r.compression) }
}

/** This side's hello, from its options. */
export const localHello = (options: {
  readonly node?: string | undefined
  readonly maxMetaBytes?: number | undefined
  readonly maxChannels?: number | undefined
  readonly compression?: ReadonlyArray<string> | undefined
}): Hello => ({
  version: MeshVersion,
  node: options.node ?? `iip-mesh-${process.pid}`,
  features: [...MeshFeatures],
  maxMetaBytes: Math.min(0xffff, options.maxMetaBytes ?? MeshDefaults.maxMetaBytes),
  streamWindow: MeshDefaults.streamWindow,
  maxChannels: options.maxChannels ?? MeshDefaults.maxChannels,
  compression: options.compression ?? []
})

/** What both sides use: the lower version and limits, the common features. */
export const agree = (mine: Hello, theirs: Hello): Hello => ({
  version: Math.min(mine.version, theirs.version),
  node: theirs.node,
  features: mine.features.filter((f) => theirs.features.includes(f)),
  maxMetaBytes: Math.min(mine.maxMetaBytes, theirs.maxMetaBytes),
  streamWindow: theirs.streamWindow,
  // Each side's own limit holds whatever the other declared: a peer cannot raise it by asking.
  maxChannels: Math.min(mine.maxChannels, theirs.maxChannels)
})

// ---------------------------------------------------------------------------------------------
// Envelope: the first 8 bytes of the first packet of every mesh message.
//   0 u8 kind   1 u8 flags   2 u16 meta length M   4 u32 request id   8 M meta   8+M body

export const EnvelopeKind = { request: 1, response: 2, error: 3 } as const
/** Envelope flags: a one-way request (a push); the body in this packet is compressed with the agreed codec (§12.1). */
export const EnvelopeFlag = { oneway: 1, compressed: 2 } as const
/**
 * The first byte of a stream's continuation packet (§13): data, an error that ends the stream,
 * compressed data, metadata that ends the stream (trailers: only where both hellos name `trailers`).
 */
export const ChunkHeader = { data: 0, error: 1, compressed: 2, trailers: 3 } as const
export const EnvelopeBytes = 8

export type Meta = ReadonlyMap<string, string>
export const emptyMeta: Meta = new Map()

export interface Envelope {
  readonly kind: number
  readonly flags: number
  readonly requestId: number
  readonly meta: Meta
  /** Offset of the body in the data. */
  readonly bodyOffset: number
}

/** A mesh message whose envelope or metadata breaks the rules; it closes the connection. */
export class EnvelopeError extends Data.TaggedError("EnvelopeError")<{ readonly message: string }> {}

/** Encoded size of a metadata block (`deadline`: an entry added in place of meta's own); throws EnvelopeError over `maxMetaBytes`. */
export const metaByteLength = (meta: Meta, maxMetaBytes: number, deadline = ""): number => {
  let bytes = deadline === "" ? 0 : 3 + MetaKey.deadline.length + deadline.length
  // forEach, not for-of: no [key, value] array per entry (this runs twice per request).
  meta.forEach((value, key) => {
    if (deadline !== "" && key === MetaKey.deadline) return
    const keyBytes = Buffer.byteLength(key, "utf8")
    const valueBytes = Buffer.byteLength(value, "utf8")
    if (keyBytes === 0 || keyBytes > 255) throw new EnvelopeError({ message: `metadata key ${JSON.stringify(key.slice(0, 40))} must be 1..255 bytes` })
    bytes += 3 + keyBytes + valueBytes
  })
  if (bytes > maxMetaBytes) throw new EnvelopeError({ message: `metadata of ${bytes} bytes exceeds the ${maxMetaBytes}-byte limit` })
  return bytes
}

/** One metadata entry written at `offset`; returns the offset after it. */
const writeEntry = (out: Buffer, offset: number, key: string, value: string): number => {
  const keyBytes = out.write(key, offset + 1, "utf8")
  out[offset] = keyBytes
  offset += 1 + keyBytes
  const valueBytes = out.write(value, offset + 2, "utf8")
  out.writeUInt16BE(valueBytes, offset)
  return offset + 2 + valueBytes
}

/**
 * Builds the first packet's data: envelope, metadata and the first body bytes. `deadlineMs` > 0
 * is written as the deadline entry, in place of one `meta` may hold (a call's remaining time,
 * without copying its metadata into a new Map per request).
 */
export const encodeEnvelope = (
  kind: number,
  flags: number,
  requestId: number,
  meta: Meta,
  body: Uint8Array,
  maxMetaBytes: number,
  deadlineMs = 0
): Buffer => {
  const deadline = deadlineMs > 0 ? String(deadlineMs) : ""
  const metaBytes = meta.size === 0 && deadline === "" ? 0 : metaByteLength(meta, maxMetaBytes, deadline)
  const out = Buffer.allocUnsafe(EnvelopeBytes + metaBytes + body.length)
  out[0] = kind
  out[1] = flags
  out.writeUInt16BE(metaBytes, 2)
  out.writeUInt32BE(requestId >>> 0, 4)
  let offset = EnvelopeBytes
  meta.forEach((value, key) => {
    if (deadline === "" || key !== MetaKey.deadline) offset = writeEntry(out, offset, key, value)
  })
  if (deadline !== "") offset = writeEntry(out, offset, MetaKey.deadline, deadline)
  out.set(body, offset)
  return out
}

const deadlineKeyBytes = Buffer.from("deadline-ms", "latin1")

const isDeadlineKey = (view: Buffer, at: number, length: number): boolean => {
  if (length !== deadlineKeyBytes.length) return false
  for (let i = 0; i < length; i++) if (view[at + i] !== deadlineKeyBytes[i]) return false
  return true
}

/** Metadata entries from `start` to `end` of `view`; throws EnvelopeError when one is malformed. */
const decodeMetaEntries = (view: Buffer, start: number, end: number): Meta => {
  const entries = new Map<string, string>()
  let offset = start
  while (offset < end) {
    const keyBytes = view[offset]!
    if (keyBytes === 0 || offset + 1 + keyBytes + 2 > end) throw new EnvelopeError({ message: "malformed metadata entry" })
    // The one key nearly every request carries is not decoded into a new string each time.
    const key = isDeadlineKey(view, offset + 1, keyBytes) ? MetaKey.deadline : view.toString("utf8", offset + 1, offset + 1 + keyBytes)
    offset += 1 + keyBytes
    const valueBytes = view.readUInt16BE(offset)
    if (offset + 2 + valueBytes > end) throw new EnvelopeError({ message: "malformed metadata entry" })
    entries.set(key, view.toString("utf8", offset + 2, offset + 2 + valueBytes))
    offset += 2 + valueBytes
  }
  return entries
}

/** A stream's closing trailers chunk (§13): header byte `03`, u16 metadata length, the entries. Throws EnvelopeError over `maxMetaBytes`. */
export const encodeTrailersChunk = (meta: Meta, maxMetaBytes: number): Buffer => {
  const metaBytes = metaByteLength(meta, maxMetaBytes)
  const out = Buffer.allocUnsafe(3 + metaBytes)
  out[0] = ChunkHeader.trailers
  out.writeUInt16BE(metaBytes, 1)
  let offset = 3
  meta.forEach((value, key) => {
    offset = writeEntry(out, offset, key, value)
  })
  return out
}

/** The metadata of a trailers chunk (its header byte included); throws EnvelopeError when it is malformed or over `maxMetaBytes`. */
export const decodeTrailersChunk = (data: Buffer, maxMetaBytes: number): Meta => {
  if (data.length < 3) throw new EnvelopeError({ message: "trailers chunk shorter than its length" })
  const metaBytes = data.readUInt16BE(1)
  if (metaBytes > maxMetaBytes) throw new EnvelopeError({ message: `trailers of ${metaBytes} bytes exceed the ${maxMetaBytes}-byte limit` })
  if (3 + metaBytes !== data.length) throw new EnvelopeError({ message: `trailers length ${metaBytes} does not match the chunk` })
  return decodeMetaEntries(data, 3, data.length)
}

/** Reads the envelope of a first packet; throws EnvelopeError when it is malformed. */
export const decodeEnvelope = (data: Uint8Array, maxMetaBytes: number): Envelope => {
  if (data.length < EnvelopeBytes) throw new EnvelopeError({ message: `mesh message of ${data.length} bytes is shorter than its envelope` })
  const view = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const kind = view[0]!
  if (kind < EnvelopeKind.request || kind > EnvelopeKind.error) throw new EnvelopeError({ message: `unknown envelope kind ${kind}` })
  const metaBytes = view.readUInt16BE(2)
  if (metaBytes > maxMetaBytes) throw new EnvelopeError({ message: `metadata of ${metaBytes} bytes exceeds the ${maxMetaBytes}-byte limit` })
  const bodyOffset = EnvelopeBytes + metaBytes
  if (bodyOffset > view.length) throw new EnvelopeError({ message: `metadata length ${metaBytes} runs past the message` })
  const meta = metaBytes === 0 ? emptyMeta : decodeMetaEntries(view, EnvelopeBytes, bodyOffset)
  return { kind, flags: view[1]!, requestId: view.readUInt32BE(4), meta, bodyOffset }
}

// ---------------------------------------------------------------------------------------------
// Typed errors: the body of an envelope of kind `error`.

export const MeshErrorCode = {
  notFound: "not_found",
  handlerFailed: "handler_failed",
  noResponse: "no_response",
  cancelled: "cancelled",
  deadlineExceeded: "deadline_exceeded",
  overloaded: "overloaded",
  draining: "draining",
  badRequest: "bad_request"
} as const

export interface MeshErrorBody {
  readonly code: string
  readonly message: string
  /** False when the handler never started: the request is safe to retry anywhere. */
  readonly processed: boolean
}

export const encodeErrorBody = (error: MeshErrorBody): Buffer =>
  Buffer.from(JSON.stringify({ code: error.code, message: error.message, processed: error.processed }), "utf8")

export const decodeErrorBody = (data: Uint8Array): MeshErrorBody => {
  const r = parseJsonObject(data)
  if (r === undefined) return { code: "unknown", message: "unreadable error body", processed: true }
  return {
    code: typeof r.code === "string" ? r.code : "unknown",
    message: typeof r.message === "string" ? r.message : "",
    processed: r.processed !== false
  }
}

/** The plain-IIP error code a mesh error maps to when it has to be shown to a plain peer. */
export const plainCodeOf = (code: string): number =>
  code === MeshErrorCode.notFound ? ErrorCode.handleError : code === MeshErrorCode.noResponse ? ErrorCode.handleNoResponse : ErrorCode.handlerFailed

// ---------------------------------------------------------------------------------------------
// Control bodies: cancel names (channel, request id); window grants bytes on a channel.

export const encodeChannelPair = (channelId: number, value: number): Buffer => {
  const out = Buffer.allocUnsafe(8)
  out.writeUInt32BE(channelId >>> 0, 0)
  out.writeUInt32BE(value >>> 0, 4)
  return out
}

export const decodeChannelPair = (data: Uint8Array): readonly [number, number] | undefined => {
  if (data.length !== 8) return undefined
  const view = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  return [view.readUInt32BE(0), view.readUInt32BE(4)]
}

/** Metadata keys the library itself reads. */
export const MetaKey = {
  /** Milliseconds the caller still waits, as decimal ASCII. */
  deadline: "deadline-ms"
} as const

/** The longest deadline a peer can ask for (24 h); timers take at most 2^31-1 ms. */
export const MaxDeadlineMs = 24 * 60 * 60 * 1000

/** A caller's timeout as a timer may use it: whole ms, at most MaxDeadlineMs (Infinity too); 0 (none) for NaN, 0 or less. */
export const clampDeadlineMs = (ms: number): number => (ms > 0 ? Math.min(Math.ceil(ms), MaxDeadlineMs) : 0)

/**
 * A `deadline-ms` value as a timer may use it: digits only (no sign, exponent, fraction or
 * `Infinity`), clamped to MaxDeadlineMs; 0 (none) when absent or malformed.
 */
export const parseDeadlineMs = (text: string | undefined): number => {
  if (text === undefined || text.length === 0 || text.length > 16) return 0
  // A loop over the digits rather than a regular expression and Number(): this runs per request.
  let ms = 0
  for (let i = 0; i < text.length; i++) {
    const digit = text.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) return 0
    ms = ms * 10 + digit
  }
  return Math.min(ms, MaxDeadlineMs)
}
