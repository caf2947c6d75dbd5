// HPACK's static table (RFC 7541 Appendix A) and the errors of the HPACK layer, shared by the
// decoder (hpackDecoder.ts) and the encoder (hpackEncoder.ts).
import * as Data from "effect/Data"

/** Static table entries 1..61 as [name, value] (index 0 is unused: index 0 is an error on the wire). */
const STATIC: ReadonlyArray<readonly [string, string]> = [
  [":authority", ""], [":method", "GET"], [":method", "POST"], [":path", "/"], [":path", "/index.html"],
  [":scheme", "http"], [":scheme", "https"], [":status", "200"], [":status", "204"], [":status", "206"],
  [":status", "304"], [":status", "400"], [":status", "404"], [":status", "500"], ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"], ["accept-language", ""], ["accept-ranges", ""], ["accept", ""],
  ["access-control-allow-origin", ""], ["age", ""], ["allow", ""], ["authorization", ""], ["cache-control", ""],
  ["content-disposition", ""], ["content-encoding", ""], ["content-language", ""], ["content-length", ""],
  ["content-location", ""], ["content-range", ""], ["content-type", ""], ["cookie", ""], ["date", ""], ["etag", ""],
  ["expect", ""], ["expires", ""], ["from", ""], ["host", ""], ["if-match", ""], ["if-modified-since", ""],
  ["if-none-match", ""], ["if-range", ""], ["if-unmodified-since", ""], ["last-modified", ""], ["link", ""],
  ["location", ""], ["max-forwards", ""], ["proxy-authenticate", ""], ["proxy-authorization", ""], ["range", ""],
  ["referer", ""], ["refresh", ""], ["retry-after", ""], ["server", ""], ["set-cookie", ""],
  ["strict-transport-security", ""], ["transfer-encoding", ""], ["user-agent", ""], ["vary", ""], ["via", ""],
  ["www-authenticate", ""]
]

export const STATIC_COUNT = STATIC.length
/** Names and values by HPACK index (1..61); slot 0 is empty. */
export const staticNames: ReadonlyArray<string> = ["", ...STATIC.map(([name]) => name)]
export const staticValues: ReadonlyArray<string> = ["", ...STATIC.map(([, value]) => value)]

/** The first static index of each name: entries with the same name are adjacent (e.g. :status 8..14). */
export const staticIndexOfName: ReadonlyMap<string, number> = new Map(
  staticNames.map((name, index) => [name, index] as const).filter(([, index]) => index > 0).reverse()
)

/** Every entry of the dynamic table costs its octets plus 32 (RFC 7541 4.1); so does a field in a header list (RFC 9113 6.5.2). */
export const ENTRY_OVERHEAD = 32

/**
 * The peer's header block broke HPACK (RFC 7541): the connection must end with COMPRESSION_ERROR.
 * The decoder that returned it is unusable from then on (its table may be out of step with the peer's).
 */
export class HpackError extends Data.TaggedError("HpackError")<{
  /** Short and stable, for logs and tests: e.g. "index-out-of-range", "huffman-padding". */
  readonly reason: string
}> {}

/**
 * The block decoded and the table is in step with the peer, but the header list is refused: a field
 * is malformed (RFC 9113 8.2.1), the list is over our SETTINGS_MAX_HEADER_LIST_SIZE, or (headerCheck.ts)
 * its pseudo-headers or connection-specific fields break 8.2.2/8.3. A stream error (RST_STREAM
 * PROTOCOL_ERROR, or a 431 answer to a request too large): the decoder stays usable.
 */
export class HeaderListRejected extends Data.TaggedError("HeaderListRejected")<{
  /** From the decoder "header-list-too-large" or "malformed-field"; headerCheck.ts's are named there. */
  readonly reason: string
}> {}
