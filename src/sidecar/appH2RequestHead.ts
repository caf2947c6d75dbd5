// The head of a request to an HTTP/2 app (appH2.ts), from the peer's request as inbound.ts
// filtered it: the flat name, value list the sidecar's HTTP/2 (src/h2) encodes, with a gRPC call's `te` and
// `grpc-timeout` (the time left before the caller's deadline) the hop's own.
import type { IncomingStream } from "../mux/streams.ts"
import { grpcTimeoutValue } from "./grpcStatus.ts"

export interface AppH2Request {
  readonly method: string
  readonly path: string
  readonly authority: string
  /** Filtered (headerFilter.ts) plus the hop's own. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer | IncomingStream
  /** Time left before the caller's deadline, ms. */
  readonly timeLeftMs: number
  /** The metadata a message to the caller carries (RequestContext.maxMetaBytes): an answer's head or trailers past it cannot go back. */
  readonly maxMetaBytes: number
  /**
   * A plain IIP caller: its answer goes back as one message (plainAnswer.ts), head and trailers in
   * one metadata block, gathered at this side, so the deadline bounds all of it, as a gRPC call's,
   * not only its head.
   */
  readonly plain: boolean
  /** The caller reads trailers closing a stream (RequestContext.trailers): if not, an answer's trailers go back only beside its head, in one message. */
  readonly trailers: boolean
}

/** HTTP/1.1-only headers an HTTP/2 request must not carry (RFC 9113 §8.2.2); `te` passes only as `trailers`. */
const NOT_IN_H2 = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"])

/**
 * The characters nghttp2 takes in an :authority (nghttp2_check_authority: RFC 3986's host and port,
 * unreserved, sub-delims, ":", "[", "]", "%"; no userinfo, RFC 9113 §8.3.1). An HTTP/1.1 Host
 * may hold others (a space, "@", Latin-1), and B's checks take any field value.
 */
const AUTHORITY_CHARS = new Uint8Array(128)
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%") AUTHORITY_CHARS[c.charCodeAt(0)] = 1

/**
 * Why the app's HTTP/2 server would reset this request's stream as malformed (PROTOCOL_ERROR), or
 * undefined. Each such stream counts against B's session there: node's server ends the session
 * past 1,000 (maxSessionInvalidFrames), every stream on it with it, other callers' too
 * (h2c-app-authority.test.ts). The path is an origin-form target already: inbound.ts checks it,
 * and only paths under "/" come to the app's leg (sidecar.ts), never "*".
 */
export const h2HeadRefusal = (request: AppH2Request): string | undefined => {
  const authority = request.authority
  if (authority.length === 0) return "an HTTP/2 request's :authority cannot be empty"
  for (let i = 0; i < authority.length; i++) {
    const c = authority.charCodeAt(i)
    if (c >= 128 || AUTHORITY_CHARS[c] === 0) return `the authority ${JSON.stringify(authority.slice(0, 100))} is no HTTP/2 :authority (a host and port, no userinfo: RFC 9113 §8.3.1)`
  }
  return undefined
}

/**
 * The request's head as H2Connection.request takes it, with the least work: a flat name, value list (its
 * pseudo-headers, then the pairs; repeated names repeat), pseudo-headers never from pairs. A gRPC
 * call's `te` and `grpc-timeout` are the hop's own.
 */
export const rawHeadOf = (request: AppH2Request, grpc: boolean): Array<string> => {
  // Sized once for every pair (a few are left out: the length is cut to what was written), not grown push by push.
  const pairs = request.headers
  const raw = new Array<string>(8 + 2 * pairs.length + 4)
  raw[0] = ":method"
  raw[1] = request.method
  raw[2] = ":path"
  raw[3] = request.path
  raw[4] = ":authority"
  raw[5] = request.authority
  raw[6] = ":scheme"
  raw[7] = "http"
  let at = 8
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]!
    const name = pair[0]
    if (name.charCodeAt(0) === 0x3a || NOT_IN_H2.has(name) || (grpc && name === "grpc-timeout")) continue
    raw[at++] = name
    raw[at++] = pair[1]
  }
  if (grpc) {
    raw[at++] = "te"
    raw[at++] = "trailers"
    raw[at++] = "grpc-timeout"
    raw[at++] = grpcTimeoutValue(request.timeLeftMs)
  }
  raw.length = at
  return raw
}
