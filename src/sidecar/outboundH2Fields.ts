// The field lists of the outbound listener's h2c streams (outboundH2Call.ts) as src/h2 hands and
// takes them (flat name, value lists): a request's head read into the header object outbound.ts
// reads (as node:http2 made it: pseudo-headers kept, repeated fields joined, cookies joined with
// "; " as RFC 9113 §8.2.3 asks), and an answer's head or trailers made into a list the HPACK
// encoder takes: names lower case (RFC 9113 §8.2.2), values Latin-1 (the encoder writes one byte a
// character); and what goes in place of an answer's head or trailers past the caller's limit.
import { GrpcCode } from "./grpcStatus.ts"
import { MESH_ERROR_HEADER } from "./headerFilter.ts"

/** Why this side cut an answer whose head or trailers are past the caller's SETTINGS_MAX_HEADER_LIST_SIZE (OutboundResponse.cutReason). */
export const ANSWER_HEADERS_TOO_LARGE = "answer_headers_too_large"

export interface RequestHead {
  readonly headers: Record<string, string | Array<string> | undefined>
  readonly method: string
  readonly path: string
  /** The field section's size as RFC 9113 §6.5.2 counts it: each field's name, value and 32 octets. */
  readonly size: number
}

/** The request's fields (src/h2 checked its pseudo-headers) as the header object node:http2 made. */
export const requestHeaders = (fields: ReadonlyArray<string>): RequestHead => {
  // No prototype: a field named `constructor` or `__proto__` is a field like any other.
  const headers = Object.create(null) as Record<string, string | Array<string> | undefined>
  let size = 16 * fields.length
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!
    const value = fields[i + 1]!
    size += name.length + value.length
    const prior = headers[name]
    if (prior === undefined) headers[name] = name === "set-cookie" ? [value] : value
    else if (Array.isArray(prior)) prior.push(value)
    else headers[name] = name === "cookie" ? `${prior}; ${value}` : `${prior}, ${value}`
  }
  // :authority is the host (a Host naming another origin makes the request malformed: refused by targetOf, outboundTarget.ts).
  const authority = headers[":authority"]
  if (headers.host === undefined && typeof authority === "string") headers.host = authority
  return { headers, method: (headers[":method"] as string | undefined) ?? "", path: (headers[":path"] as string | undefined) ?? "", size }
}

/** An answer's head (`status` >= 0: `:status` first) or trailers (`status` -1) as a flat list for the encoder. */
export const answerFields = (status: number, pairs: ReadonlyArray<readonly [string, string]>): Array<string> => {
  const at = status >= 0 ? 2 : 0
  const fields = new Array<string>(at + 2 * pairs.length)
  if (status >= 0) {
    fields[0] = ":status"
    fields[1] = String(status)
  }
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]!
    fields[at + 2 * i] = lowerName(pair[0])
    fields[at + 2 * i + 1] = latin1(pair[1])
  }
  return fields
}

/** A name in lower case: one scan, no copy when it is (as the header filter hands them). */
const lowerName = (name: string): string => {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c >= 0x41 && c <= 0x5a) return name.toLowerCase()
  }
  return name
}

/**
 * A value the encoder can write: one with a character past Latin-1 (a far app's grpc-message or
 * metadata, read from IIP as UTF-8) goes as its UTF-8 bytes, each one character, which is what the
 * app sent on the wire; cut to one byte a character, its characters would be garbled.
 */
export const latin1 = (value: string): string => {
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) > 0xff) return Buffer.from(value, "utf8").toString("latin1")
  return value
}

/**
 * What goes in place of an answer's head (`head`) or trailers past the caller's
 * SETTINGS_MAX_HEADER_LIST_SIZE: to a gRPC caller RESOURCE_EXHAUSTED (8), trailers-only in place of
 * the head, else as the trailers: the status gRPC libraries give metadata past a limit (grpc-js reads
 * nghttp2's ENHANCE_YOUR_CALM so), telling the caller its own limit is what to raise; INTERNAL would
 * say a fault of the app's or the mesh's. To any other caller a 502 head in place of the head; no
 * trailers in place of trailers (undefined: the stream is reset).
 */
export const tooLargeFields = (grpc: boolean, head: boolean, limit: number): Array<string> | undefined => {
  const error = `outbound; reason=${ANSWER_HEADERS_TOO_LARGE}`
  if (!grpc) return head ? [":status", "502", "content-length", "0", MESH_ERROR_HEADER, error] : undefined
  const status = ["grpc-status", String(GrpcCode.resourceExhausted), "grpc-message", `the answer's ${head ? "head" : "trailers"} are past the caller's SETTINGS_MAX_HEADER_LIST_SIZE (${limit})`, MESH_ERROR_HEADER, error]
  return head ? [":status", "200", "content-type", "application/grpc", ...status] : status
}
