// The mesh extensions of IIP (PROTOCOL.md part 2): what two iip-mesh peers agree on in their
// hello, the envelope at the head of every mesh message, metadata, typed errors and the bodies of
// the control messages. Everything is still ordinary IIP packets; this module only gives their
// data a shape. Pure.
import * as Data from "effect/Data"
import { ErrorCode } from "./constants.ts"
import { parseJsonObject } from "./systemMessages.ts"
import { MetaEntries } from "./metaEntries.ts"
import { utf8Length, writeUtf8 } from "./utf8.ts"

export const MeshVersion = 1

export const MeshPath = {
  hello: "/sys/hello",
  ping: "/sys/ping",
  goAway: "/sys/goaway",
  cancel: "/sys/cancel",
  window: "/sys/window",
  close: "/sys/close",
  refuse: "/sys/refuse",
  credit: "/sys/credit"
} as const

export const MeshFeatures = ["ping", "drain", "cancel", "deadline", "stream", "push", "reverse", "meta", "trailers", "close", "refuse", "conncredit"] as const
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
  /**
   * Requests this side holds from the peer on one connection (read, not yet answered) before it
   * stops reading from it (§8); the peer keeps no more than that outstanding (§10). Absent: no
   * limit stated, and the peer sends as it always did.
   */
  readonly maxRequests?: number
  /**
   * Bytes this side holds from the peer on one connection (bodies of requests not yet answered,
   * stream bytes not yet consumed) before it stops reading from it (§8). Where both hellos name
   * `conncredit` it is the peer's connection credit (§13): the peer never has more than that
   * outstanding, so this side never stops reading for it. Absent: no limit stated.
   */
  readonly maxBytes?: number
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
      ...(hello.maxRequests !== undefined ? { maxRequests: hello.maxRequests } : {}),
      ...(hello.maxBytes !== undefined ? { maxBytes: hello.maxBytes } : {}),
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
  // Optional, but a value that is there must be one: a peer cannot make this side send without a cap by garbling it.
  const maxRequests = r.maxRequests === undefined ? undefined : positiveInt(r.maxRequests, 0x7fff_ffff)
  if (r.maxRequests !== undefined && maxRequests === undefined) return undefined
  const maxBytes = r.maxBytes === undefined ? undefined : positiveInt(r.maxBytes, Number.MAX_SAFE_INTEGER)
  if (r.maxBytes !== undefined && maxBytes === undefined) return undefined
  const strings = (value: unknown) => (Array.isArray(value) ? value.filter((f): f is string => typeof f === "string") : [])
  const features = strings(r.features)
  const base = { version, node: typeof r.node === "string" ? r.node : "", features, maxMetaBytes, streamWindow, maxChannels }
  const budgeted = maxRequests === undefined ? base : { ...base, maxRequests }
  const hello = maxBytes === undefined ? budgeted : { ...budgeted, maxBytes }
  return r.compression === undefined ? hello : { ...hello, compression: strings(r.compression) }
}

/** This side's hello, from its options. */
export const localHello = (options: {
  readonly node?: string | undefined
  readonly maxMetaBytes?: number | undefined
  readonly maxChannels?: number | undefined
  /** This side's per-connection request budget; stated only when it is finite. */
  readonly maxRequests?: number | undefined
  /** This side's per-connection byte budget; stated only when it is finite. */
  readonly maxBytes?: number | undefined
  readonly compression?: ReadonlyArray<string> | undefined
  /** The stream window stated (default MeshDefaults.streamWindow). */
  readonly streamWindow?: number | undefined
}): Hello => ({
  version: MeshVersion,
  node: options.node ?? `iip-mesh-${process.pid}`,
  features: [...MeshFeatures],
  maxMetaBytes: Math.min(0xffff, options.maxMetaBytes ?? MeshDefaults.maxMetaBytes),
  streamWindow: options.streamWindow ?? MeshDefaults.streamWindow,
  maxChannels: options.maxChannels ?? MeshDefaults.maxChannels,
  ...(options.maxRequests !== undefined && Number.isFinite(options.maxRequests) ? { maxRequests: Math.min(0x7fff_ffff, Math.max(1, Math.floor(options.maxRequests))) } : {}),
  ...(options.maxBytes !== undefined && Number.isFinite(options.maxBytes) ? { maxBytes: Math.min(Number.MAX_SAFE_INTEGER, Math.max(1, Math.floor(options.maxBytes))) } : {}),
  compression: options.compression ?? []
})

/**
 * What both sides use: the lower version and limits, the common features. `maxBytes` is the
 * peer's, kept only where both name `conncredit`: the connection credit this side sends within.
 */
export const agree = (mine: Hello, theirs: Hello): Hello => {
  const features = mine.features.filter((f) => theirs.features.includes(f))
  return {
    version: Math.min(mine.version, theirs.version),
    node: theirs.node,
    features,
    maxMetaBytes: Math.min(mine.maxMetaBytes, theirs.maxMetaBytes),
    streamWindow: theirs.streamWindow,
    // Each side's own limit holds whatever the other declared: a peer cannot raise it by asking.
    maxChannels: Math.min(mine.maxChannels, theirs.maxChannels),
    // Like streamWindow, the receiver's: how many requests this side may keep outstanding with the peer.
    ...(theirs.maxRequests !== undefined ? { maxRequests: theirs.maxRequests } : {}),
    ...(theirs.maxBytes !== undefined && features.includes("conncredit") ? { maxBytes: theirs.maxBytes } : {})
  }
}

/** The credit this side grants the peer (§13 `conncredit`): its own stated byte budget, where both hellos name the feature. */
export const grantedCredit = (mine: Hello, agreed: Hello): number | undefined =>
  agreed.features.includes("conncredit") ? mine.maxBytes : undefined

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
/**
 * The metadata of every empty block, shared: a MetaEntries as a non-empty block decodes to, so a
 * reader's instanceof does not depend on the message; frozen, so a set through a cast throws (a
 * TypeError) instead of changing it for every other message.
 */
export const emptyMeta: Meta = Object.freeze(new MetaEntries())

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

/** Decimal digits of a deadline in whole ms; 0 for none (0 or less). */
const deadlineDigits = (ms: number): number => {
  if (ms <= 0) return 0
  // Compares, not a division per digit: this runs twice per request that has a deadline.
  if (ms < 1e4) return ms < 10 ? 1 : ms < 100 ? 2 : ms < 1e3 ? 3 : 4
  if (ms < 1e8) return ms < 1e5 ? 5 : ms < 1e6 ? 6 : ms < 1e7 ? 7 : 8
  let digits = 9
  for (let rest = ms; rest >= 1e9; rest = Math.floor(rest / 10)) digits++
  return digits
}

/**
 * Encoded size of a metadata block; `deadlineMs` > 0 (whole ms, as clampDeadlineMs gives) is an
 * entry added in place of meta's own. Throws EnvelopeError over `maxMetaBytes`.
 */
export const metaByteLength = (meta: Meta, maxMetaBytes: number, deadlineMs = 0): number => {
  const digits = deadlineDigits(deadlineMs)
  let bytes = digits === 0 ? 0 : 3 + deadlineKeyBytes.length + digits
  // Apart: a call with only its deadline allocates no closure (and no context) for the entries.
  if (meta.size > 0) bytes += entriesByteLength(meta, digits !== 0)
  if (bytes > maxMetaBytes) throw new EnvelopeError({ message: `metadata of ${bytes} bytes exceeds the ${maxMetaBytes}-byte limit` })
  return bytes
}

/**
 * What the forEach callbacks below carry from entry to entry: one object each, reused, given as
 * forEach's `this`, so that the callbacks are functions made once, not closures (and contexts)
 * made per call: two per request at each sidecar (issue 14). Nothing they call runs them again.
 */
interface LengthWalk {
  bytes: number
  skipDeadline: boolean
}
const lengthWalk: LengthWalk = { bytes: 0, skipDeadline: false }

function addEntryLength(this: LengthWalk, value: string, key: string): void {
  if (this.skipDeadline && key === MetaKey.deadline) return
  const keyBytes = utf8Length(key)
  const valueBytes = utf8Length(value)
  if (keyBytes === 0 || keyBytes > 255) throw new EnvelopeError({ message: `metadata key ${JSON.stringify(key.slice(0, 40))} must be 1..255 bytes` })
  this.bytes += 3 + keyBytes + valueBytes
}

/** Encoded size of `meta`'s entries, its own deadline entry left out when `skipDeadline`; throws EnvelopeError on a bad key. */
const entriesByteLength = (meta: Meta, skipDeadline: boolean): number => {
  lengthWalk.bytes = 0
  lengthWalk.skipDeadline = skipDeadline
  // forEach, not for-of: no [key, value] array per entry.
  meta.forEach(addEntryLength, lengthWalk)
  return lengthWalk.bytes
}

/** One metadata entry written at `offset`; returns the offset after it. */
const writeEntry = (out: Buffer, offset: number, key: string, value: string): number => {
  const keyBytes = writeUtf8(out, key, offset + 1)
  out[offset] = keyBytes
  offset += 1 + keyBytes
  const valueBytes = writeUtf8(out, value, offset + 2)
  out.writeUInt16BE(valueBytes, offset)
  return offset + 2 + valueBytes
}

/** The deadline entry (key, then `ms` in decimal ASCII) written at `offset` without a string per request; returns the offset after it. */
const writeDeadline = (out: Buffer, offset: number, ms: number): number => {
  const digits = deadlineDigits(ms)
  const key = deadlineKeyBytes
  out[offset++] = key.length
  // Byte by byte: for 11 bytes a loop costs less than Buffer#copy's call into the runtime.
  for (let i = 0; i < key.length; i++) out[offset++] = key[i]!
  out[offset++] = digits >>> 8
  out[offset++] = digits & 0xff
  for (let i = digits - 1; i >= 0; i--) {
    const digit = ms % 10
    out[offset + i] = 48 + digit
    // Exact for whole numbers, without Math.floor's float division.
    ms = (ms - digit) / 10
  }
  return offset + digits
}

/** Encoded size of the metadata block of an envelope (see encodeEnvelopeHeadInto); throws EnvelopeError. */
export const envelopeMetaBytes = (meta: Meta, maxMetaBytes: number, deadlineMs: number): number =>
  meta.size === 0 && deadlineMs <= 0 ? 0 : metaByteLength(meta, maxMetaBytes, deadlineMs)

/**
 * Writes an envelope and its metadata block (`metaBytes` from envelopeMetaBytes) at `offset`;
 * returns where the body goes. `deadlineMs` > 0 (whole ms) is written as the deadline entry, in
 * place of one `meta` may hold (a call's remaining time, without copying its metadata into a new
 * Map per request). The writer calls it straight into its batch (no buffer per message).
 */
export const encodeEnvelopeHeadInto = (
  out: Buffer,
  offset: number,
  kind: number,
  flags: number,
  requestId: number,
  meta: Meta,
  metaBytes: number,
  deadlineMs: number
): number => {
  out[offset] = kind
  out[offset + 1] = flags
  out.writeUInt16BE(metaBytes, offset + 2)
  out.writeUInt32BE(requestId >>> 0, offset + 4)
  offset += EnvelopeBytes
  if (metaBytes === 0) return offset
  if (meta.size > 0) {
    writeWalk.out = out
    writeWalk.offset = offset
    writeWalk.deadlineMs = deadlineMs
    try {
      meta.forEach(writeMetaEntry, writeWalk)
    } finally {
      // The walk keeps no batch buffer alive after it.
      writeWalk.out = noBytes
    }
    offset = writeWalk.offset
  }
  if (deadlineMs > 0) offset = writeDeadline(out, offset, deadlineMs)
  return offset
}

/** encodeEnvelopeHeadInto's walk over the entries (as lengthWalk: no closure per call). */
interface WriteWalk {
  out: Buffer
  offset: number
  deadlineMs: number
}
const noBytes = Buffer.alloc(0)
const writeWalk: WriteWalk = { out: noBytes, offset: 0, deadlineMs: 0 }

function writeMetaEntry(this: WriteWalk, value: string, key: string): void {
  if (this.deadlineMs <= 0 || key !== MetaKey.deadline) this.offset = writeEntry(this.out, this.offset, key, value)
}

/** Builds the first packet's data in a buffer of its own: envelope, metadata and the first body bytes. */
export const encodeEnvelope = (
  kind: number,
  flags: number,
  requestId: number,
  meta: Meta,
  body: Uint8Array,
  maxMetaBytes: number,
  deadlineMs = 0
): Buffer => {
  const metaBytes = envelopeMetaBytes(meta, maxMetaBytes, deadlineMs)
  const out = Buffer.allocUnsafe(EnvelopeBytes + metaBytes + body.length)
  out.set(body, encodeEnvelopeHeadInto(out, 0, kind, flags, requestId, meta, metaBytes, deadlineMs))
  return out
}

const deadlineKeyBytes = Buffer.from("deadline-ms", "latin1")

const isDeadlineKey = (view: Buffer, at: number, length: number): boolean => {
  if (length !== deadlineKeyBytes.length) return false
  for (let i = 0; i < length; i++) if (view[at + i] !== deadlineKeyBytes[i]) return false
  return true
}

/**
 * Short metadata strings decoded lately, by the entry's place in its block: keys, and values such
 * as `:status` 200 or `:method` POST. A peer sends the same ones message after message, so the
 * bytes are compared with the string decoded last at that place and it is reused when they match:
 * no call into C++ to decode a new string, and (in a Map) a key whose hash is already computed. Only
 * ASCII strings are kept (a match is then byte for byte the same string), up to RECENT_BYTES long.
 */
const RECENT_PLACES = 8
const RECENT_BYTES = 32
const recentKeys: Array<string> = new Array<string>(RECENT_PLACES).fill("")
const recentValues: Array<string> = new Array<string>(RECENT_PLACES).fill("")

/** `length` bytes of `view` from `at` as a string, reusing `recent[place]` when it is those bytes. */
const decodeRecent = (view: Buffer, at: number, length: number, recent: Array<string>, place: number): string => {
  if (place >= RECENT_PLACES || length > RECENT_BYTES) return view.toString("utf8", at, at + length)
  const last = recent[place]!
  if (last.length === length) {
    let same = true
    for (let i = 0; i < length; i++) {
      if (view[at + i] !== last.charCodeAt(i)) {
        same = false
        break
      }
    }
    if (same) return last
  }
  const text = view.toString("utf8", at, at + length)
  // As many characters as bytes: ASCII (an invalid byte decodes to U+FFFD, which no byte equals).
  if (text.length === length) recent[place] = text
  return text
}

/**
 * Metadata entries from `start` to `end` of `view` into `entries`; throws EnvelopeError when one is
 * malformed. An envelope's and a trailers chunk's alike (a message's few entries without a hash
 * table; every reader takes a Meta, and meshStreamOut relays a MetaEntries as it does a Map).
 */
const decodeMetaEntries = (view: Buffer, start: number, end: number, entries: MetaEntries): MetaEntries => {
  let offset = start
  let place = 0
  while (offset < end) {
    const keyBytes = view[offset]!
    if (keyBytes === 0 || offset + 1 + keyBytes + 2 > end) throw new EnvelopeError({ message: "malformed metadata entry" })
    // The one key nearly every request carries is not decoded into a new string each time.
    const key = isDeadlineKey(view, offset + 1, keyBytes) ? MetaKey.deadline : decodeRecent(view, offset + 1, keyBytes, recentKeys, place)
    offset += 1 + keyBytes
    const valueBytes = view.readUInt16BE(offset)
    if (offset + 2 + valueBytes > end) throw new EnvelopeError({ message: "malformed metadata entry" })
    entries.set(key, decodeRecent(view, offset + 2, valueBytes, recentValues, place))
    offset += 2 + valueBytes
    place++
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
  // No entries: the shared empty block, as an envelope's (a relay then sends a plain last packet).
  return metaBytes === 0 ? emptyMeta : decodeMetaEntries(data, 3, data.length, new MetaEntries())
}

/**
 * Checks the fixed part of a first packet's envelope and returns where its body starts (after the
 * metadata block); throws EnvelopeError when it is malformed. Kind, flags and request id are then
 * at their offsets (0, 1, 4).
 */
export const envelopeBodyOffset = (view: Buffer, maxMetaBytes: number): number => {
  if (view.length < EnvelopeBytes) throw new EnvelopeError({ message: `mesh message of ${view.length} bytes is shorter than its envelope` })
  const kind = view[0]!
  if (kind < EnvelopeKind.request || kind > EnvelopeKind.error) throw new EnvelopeError({ message: `unknown envelope kind ${kind}` })
  const metaBytes = view.readUInt16BE(2)
  if (metaBytes > maxMetaBytes) throw new EnvelopeError({ message: `metadata of ${metaBytes} bytes exceeds the ${maxMetaBytes}-byte limit` })
  const bodyOffset = EnvelopeBytes + metaBytes
  if (bodyOffset > view.length) throw new EnvelopeError({ message: `metadata length ${metaBytes} runs past the message` })
  return bodyOffset
}

/**
 * Checks every entry of the metadata block before `bodyOffset` and returns its deadline entry as
 * parseDeadlineMs reads it (the last one if repeated; 0: none or malformed), without decoding a
 * string or building a Map: a served request decodes its metadata only if something reads it.
 * Throws EnvelopeError when an entry is malformed.
 */
export const scanMeta = (view: Buffer, bodyOffset: number): number => {
  let deadline = 0
  let offset = EnvelopeBytes
  while (offset < bodyOffset) {
    const keyBytes = view[offset]!
    if (keyBytes === 0 || offset + 1 + keyBytes + 2 > bodyOffset) throw new EnvelopeError({ message: "malformed metadata entry" })
    const isDeadline = isDeadlineKey(view, offset + 1, keyBytes)
    offset += 1 + keyBytes
    const valueBytes = view.readUInt16BE(offset)
    if (offset + 2 + valueBytes > bodyOffset) throw new EnvelopeError({ message: "malformed metadata entry" })
    if (isDeadline) deadline = parseDeadlineBytes(view, offset + 2, offset + 2 + valueBytes)
    offset += 2 + valueBytes
  }
  return deadline
}

/** The metadata block before `bodyOffset` (a MetaEntries); throws EnvelopeError when an entry is malformed. */
export const decodeMeta = (view: Buffer, bodyOffset: number): Meta =>
  bodyOffset === EnvelopeBytes ? emptyMeta : decodeMetaEntries(view, EnvelopeBytes, bodyOffset, new MetaEntries())

/** Reads the envelope of a first packet; throws EnvelopeError when it is malformed. */
export const decodeEnvelope = (data: Uint8Array, maxMetaBytes: number): Envelope => {
  const view = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const bodyOffset = envelopeBodyOffset(view, maxMetaBytes)
  return { kind: view[0]!, flags: view[1]!, requestId: view.readUInt32BE(4), meta: decodeMeta(view, bodyOffset), bodyOffset }
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

/**
 * The body of `/sys/goaway` (§11 drain): `closing` says the sender closes this connection only,
 * it is not stopping: right after it, having answered every request it read (one-way; it reads
 * nothing more), or once it is drained (expecting an answer, as a drain).
 */
export const encodeGoAway = (reason: string, closing: boolean): Buffer =>
  Buffer.from(JSON.stringify(closing ? { reason, closing: true } : { reason }), "utf8")

/** Longest go-away body looked into: a reason is a line; a larger body is a plain go-away, not parsed. */
const maxGoAwayBodyBytes = 4096

/** Whether a go-away's body says `closing` (malformed or oversized: it does not). */
export const goAwaySaysClosing = (data: Uint8Array): boolean => data.length <= maxGoAwayBodyBytes && parseJsonObject(data)?.closing === true

/** The body of `/sys/close` (the channel the sender closes) and of `/sys/refuse` (the peer's channel it did not open), PROTOCOL.md §11. */
export const encodeChannelId = (channelId: number): Buffer => {
  const out = Buffer.allocUnsafe(4)
  out.writeUInt32BE(channelId >>> 0, 0)
  return out
}

export const decodeChannelId = (data: Uint8Array): number | undefined => {
  if (data.length !== 4) return undefined
  const view = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  return view.readUInt32BE(0)
}

/** The body of `/sys/credit` (§13 `conncredit`): the bytes of connection credit granted back, u32. */
export const encodeCredit = (bytes: number): Buffer => encodeChannelId(bytes)

export const decodeCredit = (data: Uint8Array): number | undefined => decodeChannelId(data)

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

/** parseDeadlineMs of the UTF-8 bytes from..to of `view` (a digit is one byte, so the same rules hold). */
const parseDeadlineBytes = (view: Buffer, from: number, to: number): number => {
  if (to === from || to - from > 16) return 0
  let ms = 0
  for (let i = from; i < to; i++) {
    const digit = view[i]! - 48
    if (digit < 0 || digit > 9) return 0
    ms = ms * 10 + digit
  }
  return Math.min(ms, MaxDeadlineMs)
}
