// The IIP packet and its encoder (PROTOCOL.md §2). Pure functions over bytes, no I/O.
// The mux writer encodes many packets into one buffer with `encodePacketInto`, so one socket
// write carries a whole batch.
import { Limits, Status } from "./constants.ts"
import { PacketEncodeError } from "./errors.ts"
import { writeUtf8 } from "./utf8.ts"

export interface Packet {
  readonly status: number
  /** The path exactly as it was on the wire (UTF-8). */
  readonly path: string
  readonly channelId: number
  readonly data: Uint8Array
}

/** Byte length of a path, with a fast answer for ASCII (the common case). */
export const pathByteLength = (path: string): number => {
  for (let i = 0; i < path.length; i++) {
    if (path.charCodeAt(i) > 0x7f) return Buffer.byteLength(path, "utf8")
  }
  return path.length
}

/**
 * Checks everything the reference's CreateNetPacket checks, and a few things it forgets (NUL in
 * the path, channel id range). Returns the encoded size, or throws PacketEncodeError.
 */
export const checkPacket = (status: number, path: string, channelId: number, dataLength: number): number => {
  if (!Number.isInteger(status) || status < 0 || status > Status.Close) {
    throw new PacketEncodeError({ rule: "invalid-status", message: `cannot send status ${status}` })
  }
  const pathBytes = path === lastPath ? lastPathBytes : checkPath(status, path)
  if (!Number.isInteger(channelId) || channelId < 0 || channelId > Limits.maxChannelId) {
    throw new PacketEncodeError({ rule: "invalid-channel", message: `channel id ${channelId} is out of range` })
  }
  if (dataLength > Limits.maxPacketData) {
    throw new PacketEncodeError({
      rule: "data-too-long",
      message: `data of ${dataLength} bytes exceeds the ${Limits.maxPacketData}-byte packet limit`
    })
  }
  if (dataLength < Limits.minPacketData && status !== Status.Close) {
    throw new PacketEncodeError({ rule: "data-empty", message: "a packet needs at least one data byte" })
  }
  return Limits.packetOverhead + pathBytes + dataLength
}

/**
 * The last non-empty path that passed checkPath, and its byte length: a connection sends the same
 * few paths over and over, and comparing a string with itself is cheaper than scanning it twice.
 */
let lastPath: string | undefined = undefined
let lastPathBytes = 0

/** Checks a path (length, empty, NUL) and returns its byte length; throws PacketEncodeError. */
const checkPath = (status: number, path: string): number => {
  const pathBytes = pathByteLength(path)
  if (pathBytes > Limits.maxSendPathBytes) {
    throw new PacketEncodeError({
      rule: "path-too-long",
      message: `path of ${pathBytes} bytes exceeds the ${Limits.maxSendPathBytes}-byte limit`
    })
  }
  if (pathBytes === 0 && status !== Status.Close) {
    throw new PacketEncodeError({ rule: "path-empty", message: "a packet needs a non-empty path" })
  }
  if (path.includes("\0")) {
    throw new PacketEncodeError({ rule: "path-nul", message: "a path cannot contain NUL" })
  }
  if (pathBytes > 0) {
    lastPath = path
    lastPathBytes = pathBytes
  }
  return pathBytes
}

/**
 * Writes one packet at `offset` and returns the offset after it. The caller has called
 * checkPacket and sized `target` accordingly.
 */
export const encodePacketInto = (
  target: Buffer,
  offset: number,
  status: number,
  path: string,
  channelId: number,
  data: Uint8Array
): number => {
  offset = encodeHeaderInto(target, offset, status, path, channelId, data.length)
  target.set(data, offset)
  return offset + data.length
}

/** Writes everything of a packet but its data; returns the offset where the data goes. */
export const encodeHeaderInto = (
  target: Buffer,
  offset: number,
  status: number,
  path: string,
  channelId: number,
  dataLength: number
): number => {
  target[offset++] = status
  offset += writeUtf8(target, path, offset)
  target[offset++] = 0
  target.writeUInt32BE(channelId, offset)
  target.writeUInt32BE(dataLength, offset + 4)
  return offset + 8
}

/** Encodes one packet into a fresh buffer. */
export const encodePacket = (status: number, path: string, channelId: number, data: Uint8Array): Buffer => {
  const size = checkPacket(status, path, channelId, data.length)
  const out = Buffer.allocUnsafe(size)
  encodePacketInto(out, 0, status, path, channelId, data)
  return out
}
