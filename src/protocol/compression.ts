// Body compression in mesh mode (PROTOCOL.md §12.1): the codecs two iip-mesh peers agree on in
// their hellos, and the compression of one body or stream chunk with the agreed codec. The mesh
// session calls `pack` on each outgoing body (skipped below a size threshold, dropped when it
// does not shrink the body) and `unpack` on each body whose envelope or chunk header says it is
// compressed. By default a side reads compressed bodies but sends its own as they are: each
// attempt costs tens of microseconds even on 1 KiB, more than a whole mesh request, so
// compressing is the caller's choice. Sync zlib: a unit is at most one 64 KiB chunk
// (bench/compression.ts measures both).
import * as Data from "effect/Data"
import * as zlib from "node:zlib"

/** Codecs in this side's default order of preference. */
export const Codecs = ["zstd", "gzip"] as const
export type Codec = (typeof Codecs)[number]

export const isCodec = (name: string): name is Codec => (Codecs as ReadonlyArray<string>).includes(name)

export const CompressionDefaults = {
  /** Bodies and chunks smaller than this are sent as they are, without an attempt. */
  minBytes: 1024,
  /** A compressed form larger than this share of the original is not worth sending. */
  maxRatio: 0.9,
  /** Most bytes one compressed unit (body or chunk) may expand to: one stream chunk. */
  maxUnpackedBytes: 64 * 1024
} as const

/** The codec an acceptor picks: the first of its own list that the dialer offers (none: off). */
export const pickCodec = (acceptor: ReadonlyArray<string>, dialer: ReadonlyArray<string>): Codec | undefined => {
  for (const name of acceptor) if (isCodec(name) && dialer.includes(name)) return name
  return undefined
}

/** A body flagged as compressed that does not decompress (corrupt, too large, or no codec agreed). */
export class DecompressionFailed extends Data.TaggedError("DecompressionFailed")<{
  readonly message: string
  readonly codec: string
}> {}

// zstd's default level (3) with the frame checksum on, so a corrupted body fails instead of decoding
// to garbage; gzip at level 1, its fastest (it is only the fallback for a peer without zstd).
const zstdOptions = { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3, [zlib.constants.ZSTD_c_checksumFlag]: 1 } }
const gzipOptions = { level: 1 }
const unpackOptions = { maxOutputLength: CompressionDefaults.maxUnpackedBytes }

const compressWith = (codec: Codec, data: Uint8Array): Buffer =>
  codec === "zstd" ? zlib.zstdCompressSync(data, zstdOptions) : zlib.gzipSync(data, gzipOptions)

/** One side's compression once a codec is agreed: the codec, and the smallest body it compresses (Infinity: none, it only reads). */
export class Compression {
  readonly codec: Codec
  readonly minBytes: number

  constructor(codec: Codec, minBytes: number) {
    this.codec = codec
    this.minBytes = Math.max(1, minBytes)
  }

  /** The compressed form of `data` when it is large enough and shrinks enough, else undefined. */
  pack(data: Uint8Array): Buffer | undefined {
    if (data.length < this.minBytes) return undefined
    const packed = compressWith(this.codec, data)
    return packed.length <= data.length * CompressionDefaults.maxRatio ? packed : undefined
  }

  /** A packer for the chunks of one outgoing stream. */
  streamPacker(): StreamPacker {
    return new StreamPacker(this)
  }
}

/** Decompresses one unit of at most `maxUnpackedBytes` with the agreed codec; throws DecompressionFailed. */
export const unpack = (codec: Codec | undefined, data: Uint8Array): Buffer => {
  if (codec === undefined) throw new DecompressionFailed({ message: "body flagged as compressed, but no codec was agreed", codec: "none" })
  try {
    return codec === "zstd" ? zlib.zstdDecompressSync(data, unpackOptions) : zlib.gunzipSync(data, unpackOptions)
  } catch (error) {
    const reason = error instanceof RangeError ? `it expands past ${CompressionDefaults.maxUnpackedBytes} bytes` : (error as Error).message
    throw new DecompressionFailed({ message: `${codec} body cannot be decompressed: ${reason}`, codec })
  }
}

/**
 * Compresses the chunks of one stream, backing off after a chunk that did not shrink: the next
 * 1, 2, 4 ... 64 chunks go as they are before the next attempt, so an incompressible stream (a
 * video, an archive) costs a compression attempt only now and then.
 */
export class StreamPacker {
  private readonly compression: Compression
  private skip = 0
  private backoff = 1

  constructor(compression: Compression) {
    this.compression = compression
  }

  pack(chunk: Uint8Array): Buffer | undefined {
    if (chunk.length < this.compression.minBytes) return undefined
    if (this.skip > 0) {
      this.skip--
      return undefined
    }
    const packed = this.compression.pack(chunk)
    if (packed === undefined) {
      this.skip = this.backoff
      this.backoff = Math.min(64, this.backoff * 2)
    } else this.backoff = 1
    return packed
  }
}

/**
 * What a side compresses. Unset, it offers both codecs in its hello, so it reads what a peer
 * compresses, and sends its own bodies as they are; set, it also compresses its bodies from
 * `minBytes` on; `false` offers no codec, so nothing compressed crosses the connection.
 */
export interface CompressionOptions {
  /** Codecs in order of preference; default zstd, gzip. */
  readonly codecs?: ReadonlyArray<Codec>
  /** Smallest body or chunk worth an attempt; default 1 KiB. */
  readonly minBytes?: number
}

/** The codecs a side offers in its hello. */
export const offeredCodecs = (options: CompressionOptions | false | undefined): ReadonlyArray<Codec> =>
  options === false ? [] : (options?.codecs ?? Codecs)

/** A session's compression once `codec` is agreed (undefined: none); it only reads unless the options are set. */
export const compressionFor = (codec: Codec | undefined, options: CompressionOptions | false | undefined): Compression | undefined =>
  codec === undefined ? undefined : new Compression(codec, typeof options === "object" ? (options.minBytes ?? CompressionDefaults.minBytes) : Infinity)
