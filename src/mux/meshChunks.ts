// What a mesh-mode packet carries once its framing is read (PROTOCOL.md §12-§13), for a
// MeshSession on both its calling and serving sides (meshCalls.ts, meshServing.ts): a body or a
// stream chunk decompressed with the agreed codec, and a stream's trailers. What cannot be read comes back as
// a value or fails its stream, never throws: the framing is intact, the connection goes on.
import { type Compression, type DecompressionFailed, unpack } from "../protocol/compression.ts"
import { ChunkHeader, decodeTrailersChunk, type Meta } from "../protocol/mesh.ts"
import { isLastPacket } from "../protocol/status.ts"
import { type IncomingStream, StreamFailed } from "./streams.ts"

/** The body of a packet whose envelope or chunk header says compressed. */
export const unpackBody = (compression: Compression | undefined, bytes: Uint8Array): Buffer | DecompressionFailed => {
  try {
    return unpack(compression?.codec, bytes)
  } catch (error) {
    return error as DecompressionFailed
  }
}

/** The bytes of a stream's continuation packet, decompressed when its header says so. */
export const chunkOf = (compression: Compression | undefined, data: Buffer): Buffer | DecompressionFailed =>
  data[0] === ChunkHeader.compressed ? unpackBody(compression, data.subarray(1)) : data.subarray(1)

/**
 * The metadata of a trailers chunk, valid only on a stream's last packet. One that is malformed
 * or comes early fails its stream (the framing is intact: the connection goes on).
 */
export const trailersOf = (data: Buffer, status: number, stream: IncomingStream | undefined, maxMetaBytes: number): Meta | undefined => {
  if (!isLastPacket(status)) {
    stream?.fail(new StreamFailed({ message: "trailers before the end of a stream" }))
    return undefined
  }
  try {
    return decodeTrailersChunk(data, maxMetaBytes)
  } catch (error) {
    stream?.fail(new StreamFailed({ message: `unreadable trailers: ${(error as Error).message}` }))
    return undefined
  }
}
